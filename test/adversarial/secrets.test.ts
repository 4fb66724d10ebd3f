/**
 * Adversarial: secrets. The agent gets a per-execution placeholder in its env, never the value; the egress proxy
 * swaps the placeholder for the value only in plain-HTTP requests toward the secret's bound host. The host runs two
 * HTTP servers that echo the request headers and body back: one bound to the secret, one only allowed by the network
 * policy. The bound server reflects the real value back; the proxy scrubs it from the response (ADR 0018), so the
 * agent reads, prints and returns only its placeholder — and the store, the ledger and the export never hold the
 * value. (test/adversarial/secrets-reflection.test.ts attacks the scrubbing itself.)
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { formatExportLine } from '../../src/domain/audit/export-format.ts';
import { pollUntil } from '../support/poll.ts';
import { adversarialRuntimes, Harness, sandboxOnly } from './harness.ts';

const VALUE = `sk-test-${randomBytes(16).toString('hex')}`;

const PY_SECRETS = `
import urllib.request

def call(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": "Bearer " + os.environ.get("API_TOKEN", "")})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return {"status": r.status, "body": json.loads(r.read().decode())}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode()}
    except Exception as e:
        return {"status": None, "error": f"{type(e).__name__}: {e}"}

def post(port, path):
    data = json.dumps({"key": os.environ.get("API_TOKEN", "")}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return {"status": r.status, "body": json.loads(r.read().decode())}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode()}
    except Exception as e:
        return {"status": None, "error": f"{type(e).__name__}: {e}"}

token = os.environ.get("API_TOKEN")
environ = read_text("/proc/self/environ")
files = {}
for path in ["/proc/self/environ", "/proc/1/environ", "/run/aegis/input.json"]:
    try:
        files[path] = read_text(path)
    except Exception as e:
        files[path] = f"error: {e}"
print("placeholder: " + str(token), flush=True)
bound = call(INPUT["bound"], "/bound")
unbound = call(INPUT["unbound"], "/unbound")
bound_post = post(INPUT["bound"], "/bound-body")
unbound_post = post(INPUT["unbound"], "/unbound-body")
# The bound server reflected the header: print what came back (the value the agent was never given).
reflected = (bound.get("body") or {}).get("authorization") if isinstance(bound.get("body"), dict) else None
print("reflected: " + str(reflected), flush=True)
print("stderr: " + str(reflected), file=sys.stderr, flush=True)
write_text("/tmp/stash.txt", str(reflected))
report({"token": token, "environ": environ, "files": files, "bound": bound, "unbound": unbound,
        "bound_post": bound_post, "unbound_post": unbound_post,
        "reflected": reflected, "stash": read_text("/tmp/stash.txt")})
`;

/** Echoes the request headers and body (as `body`); records GETs' Authorization in `seen`, POST bodies in `bodies`. */
function echoServer(seen: string[], bodies: string[]): HttpServer {
  return createHttpServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      if (req.method === 'POST') bodies.push(body);
      else seen.push(req.headers.authorization ?? '');
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ ...req.headers, body }));
    });
  });
}

for (const [isolation, skip] of adversarialRuntimes()) {
  describe(`adversarial: secrets (${isolation})`, { concurrency: false, skip }, () => {
    let h: Harness;
    let bound: HttpServer;
    let unbound: HttpServer;
    const boundSeen: string[] = [];
    const unboundSeen: string[] = [];
    const boundBodies: string[] = [];
    const unboundBodies: string[] = [];
    let boundPort = 0;
    let unboundPort = 0;

    before(async () => {
      h = new Harness({ isolation });
      await h.ctx.secrets.set('TOKEN', VALUE);
      bound = echoServer(boundSeen, boundBodies);
      unbound = echoServer(unboundSeen, unboundBodies);
      await new Promise<void>((resolve) => bound.listen(0, '127.0.0.1', resolve));
      await new Promise<void>((resolve) => unbound.listen(0, '127.0.0.1', resolve));
      boundPort = (bound.address() as { port: number }).port;
      unboundPort = (unbound.address() as { port: number }).port;
    });
    after(async () => {
      bound.closeAllConnections();
      unbound.closeAllConnections();
      await Promise.all([
        new Promise((resolve) => bound.close(resolve)),
        new Promise((resolve) => unbound.close(resolve)),
      ]);
      await h.close();
    });

    it('injects the value only toward the bound host; the sandbox, logs, output and ledger never hold it', async () => {
      const result = await h.run({
        name: 'secret-user',
        code: PY_SECRETS,
        secrets: [{ name: 'TOKEN', env: 'API_TOKEN', hosts: [`127.0.0.1:${boundPort}`] }],
        network: { allow: [`127.0.0.1:${boundPort}`, `127.0.0.1:${unboundPort}`] },
        input: { bound: boundPort, unbound: unboundPort },
      });
      const transcript = Harness.transcript(result);
      assert.equal(result.record.status, 'succeeded', transcript);
      const { report } = result;

      // Inside: a placeholder, nothing else.
      assert.match(report.token, /^aegis-secret:TOKEN:[0-9a-f]{32}$/, transcript);
      const placeholder = report.token as string;
      assert.ok(report.environ.includes(`API_TOKEN=${placeholder}`), 'placeholder in /proc/self/environ');
      // Had the value been anywhere the agent read before its requests, the redactor would have marked it there.
      assert.ok(!JSON.stringify([report.environ, report.files, report.token]).includes('REDACTED'));

      // The bound server got the value; the other one only the placeholder.
      assert.deepEqual(boundSeen, [`Bearer ${VALUE}`]);
      assert.deepEqual(unboundSeen, [`Bearer ${placeholder}`]);
      assert.equal(report.bound.status, 200, transcript);
      assert.equal(report.unbound.status, 200, transcript);
      assert.equal(report.unbound.body.authorization, `Bearer ${placeholder}`);

      // Bodies (Content-Length, plain HTTP): the bound server got the value in the JSON, the other the placeholder.
      assert.equal(report.bound_post.status, 200, transcript);
      assert.equal(report.unbound_post.status, 200, transcript);
      assert.deepEqual(
        boundBodies.map((body) => JSON.parse(body)),
        [{ key: VALUE }],
      );
      assert.deepEqual(
        unboundBodies.map((body) => JSON.parse(body)),
        [{ key: placeholder }],
      );
      assert.equal(report.bound_post.body['content-length'], String(Buffer.byteLength(boundBodies[0]!)));
      assert.equal(
        report.bound_post.body.body,
        `{"key": "${placeholder}"}`,
        'the reflected body comes back with the placeholder',
      );
      assert.equal(report.unbound_post.body.body, `{"key": "${placeholder}"}`);

      // The reflection reached the sandbox as the placeholder: that is all the agent could print or stash.
      assert.equal(report.reflected, `Bearer ${placeholder}`);
      assert.equal(report.stash, `Bearer ${placeholder}`);
      assert.ok(
        result.logs.some((l) => l.stream === 'stdout' && l.text === `reflected: Bearer ${placeholder}`),
        transcript,
      );
      assert.ok(result.logs.some((l) => l.stream === 'stderr' && l.text === `stderr: Bearer ${placeholder}`));
      assert.ok(result.logs.some((l) => l.text === `placeholder: ${placeholder}`));
      assert.ok(!JSON.stringify(result.record).includes(VALUE), 'value in the execution record');
      assert.ok(!transcript.includes(VALUE), 'value in the live log lines');
      const stored = await h.ctx.store.readLogs(result.executionId);
      assert.ok(stored.length > 0);
      assert.ok(!JSON.stringify(stored).includes(VALUE), 'value in the stored log lines');

      // Ledger: per site, one injection toward the bound host, its reflection scrubbed from the response, one
      // placeholder sent elsewhere — never the value.
      const entries = await h.ctx.audit.list(result.executionId);
      const uses = entries.filter((e) => e.kind === 'secret.use').map((e) => e.data);
      const reflected = {
        name: 'TOKEN',
        host: '127.0.0.1',
        port: boundPort,
        injected: false,
        where: 'response',
        reason: 'reflected',
      };
      assert.deepEqual(uses, [
        { name: 'TOKEN', host: '127.0.0.1', port: boundPort, injected: true, where: 'header', reason: null },
        reflected,
        {
          name: 'TOKEN',
          host: '127.0.0.1',
          port: unboundPort,
          injected: false,
          where: 'header',
          reason: 'unbound-host',
        },
        { name: 'TOKEN', host: '127.0.0.1', port: boundPort, injected: true, where: 'body', reason: null },
        reflected,
        {
          name: 'TOKEN',
          host: '127.0.0.1',
          port: unboundPort,
          injected: false,
          where: 'body',
          reason: 'unbound-host',
        },
      ]);
      assert.ok(!JSON.stringify(entries).includes(VALUE), 'value in the ledger');

      // The bytes on disk and the export.
      await h.ctx.audit.flush();
      // An export holds what a signed head covers; the ledger signs one within ~1 s of the last append.
      const exported = await pollUntil('a signed head covering the secret.use entries', async () => {
        let text = '';
        for await (const record of h.ctx.audit.export()) text += `${formatExportLine(record)}\n`;
        return text.includes('secret.use') ? text : undefined;
      });
      assert.ok(!exported.includes(VALUE), 'value in the audit export');
      for (const file of readdirSync(h.home)) {
        if (!/\.(db|db-wal|db-shm|json)$/.test(file)) continue;
        const bytes = readFileSync(join(h.home, file));
        assert.equal(bytes.includes(VALUE), false, `value in ${file}`);
        assert.equal(bytes.includes(Buffer.from(VALUE).toString('base64')), false, `base64 value in ${file}`);
      }
    });

    sandboxOnly(isolation)(
      'a missing secret fails the run before anything starts, naming `aegis secret set`',
      async () => {
        const { error, record } = await h.refuse({
          name: 'secret-missing',
          code: 'report({})',
          secrets: [{ name: 'NOT_SET', env: 'NOT_SET_KEY', hosts: ['127.0.0.1'] }],
          network: { allow: ['127.0.0.1'] },
        });
        assert.equal(error.code, 'NOT_FOUND');
        assert.match(error.message, /aegis secret set NOT_SET/);
        assert.equal(record.status, 'failed');
        assert.match(record.reason ?? '', /not started: .*aegis secret set NOT_SET/);
      },
    );

    sandboxOnly(isolation)('an agent with secrets but no network still gets placeholders', async () => {
      const result = await h.run({
        name: 'secret-offline',
        code: 'report({"token": os.environ.get("API_TOKEN"), "environ": read_text("/proc/self/environ")})',
        secrets: [{ name: 'TOKEN', env: 'API_TOKEN', hosts: ['api.example.com'] }],
      });
      assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
      assert.match(result.report.token, /^aegis-secret:TOKEN:[0-9a-f]{32}$/);
      assert.ok(!result.report.environ.includes(VALUE));
    });
  });
}
