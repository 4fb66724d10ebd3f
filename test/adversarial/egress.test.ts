/**
 * Adversarial: egress through the proxy. With `network.allow` rules the sandbox still has only `lo`; its one way
 * out is the egress proxy's listener on 127.0.0.1:3128 inside its namespace, served by the orchestrator. The host
 * runs an HTTP server and a TCP echo server (allowed by IP:port) and a listener on a port nobody allowed, and
 * asserts which of them were reached, what the agent was told, and what the ledger recorded.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import { updateNetworkPolicy } from '../../src/app/run-agent.ts';
import { isAegisError } from '../../src/domain/errors.ts';
import { compileNetworkPolicy } from '../../src/domain/policy/network-rules.ts';
import { adversarialRuntimes, Harness, sandboxOnly } from './harness.ts';

const UNROUTABLE = '192.0.2.1';

/** Python helpers the agents share: HTTP through the env proxies, a CONNECT tunnel, SOCKS5 by hand. */
const PY_NET = `
import http.client, time, urllib.error, urllib.request

def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return {"status": r.status, "body": r.read().decode()}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode(), "rule": e.headers.get("X-Aegis-Rule")}
    except Exception as e:
        return {"status": None, "error": f"{type(e).__name__}: {e}"}

def tunnel(port):
    c = http.client.HTTPConnection("127.0.0.1", 3128, timeout=5)
    c.set_tunnel("127.0.0.1", port)
    c.connect()
    c.sock.sendall(b"ping")
    data = c.sock.recv(100)
    c.close()
    return data.decode()

def socks(host, port):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
    try:
        s.sendall(b"\\x05\\x01\\x00")
        if s.recv(2) != b"\\x05\\x00":
            return {"reply": "no-auth refused"}
        name = host.encode()
        s.sendall(b"\\x05\\x01\\x00\\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
        rep = s.recv(10)
        if rep[1] != 0:
            return {"reply": rep[1]}
        s.sendall(b"ping")
        return {"reply": 0, "echo": s.recv(100).decode()}
    finally:
        s.close()

def direct(port):
    with socket.create_connection(("127.0.0.1", port), timeout=3):
        return True

def udp_send(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.sendto(b"aegis", (host, port))
`;

for (const [isolation, skip] of adversarialRuntimes()) {
  describe(`adversarial: egress through the proxy (${isolation})`, { concurrency: true, skip }, () => {
    let h: Harness;
    let httpServer: HttpServer;
    let echo: Server;
    let other: Server;
    let udp: UdpSocket;
    const requests: string[] = [];
    const reached = { echo: 0, other: 0, udp: 0 };
    let httpPort = 0;
    let echoPort = 0;
    let otherPort = 0;
    let udpPort = 0;

    before(async () => {
      h = new Harness({ isolation });
      httpServer = createHttpServer((req, res) => {
        requests.push(req.url ?? '');
        res.end(`hello ${req.url}`);
      });
      await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
      httpPort = (httpServer.address() as { port: number }).port;
      echo = createServer((socket) => {
        reached.echo++;
        socket.on('error', () => {});
        socket.pipe(socket);
      });
      await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
      echoPort = (echo.address() as { port: number }).port;
      other = createServer((socket) => {
        reached.other++;
        socket.destroy();
      });
      await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
      otherPort = (other.address() as { port: number }).port;
      udp = createSocket('udp4', () => reached.udp++);
      await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
      udpPort = udp.address().port;
    });
    after(async () => {
      httpServer.closeAllConnections();
      await Promise.all([
        new Promise((resolve) => httpServer.close(resolve)),
        new Promise((resolve) => echo.close(resolve)),
        new Promise((resolve) => other.close(resolve)),
        new Promise<void>((resolve) => udp.close(resolve)),
      ]);
      const verification = await h.ctx.audit.verify();
      assert.equal(verification.ok, true, JSON.stringify(verification));
      await h.close();
      assert.equal(reached.other, 0, 'the unlisted destination was reached');
      assert.equal(reached.udp, 0, 'a host UDP listener was reached');
    });

    // `localhost:<other>` is allowed by name only: it resolves to loopback, which no IP rule unlocks for that port.
    const allow = () => [`127.0.0.1:${httpPort}`, `127.0.0.1:${echoPort}`, `localhost:${otherPort}`];

    sandboxOnly(isolation)(
      "the agent's first instruction can use the network (curl as the whole command)",
      async () => {
        const result = await h.run({
          name: 'egress-first',
          command: ['curl', '-sS', '--max-time', '5', `http://127.0.0.1:${httpPort}/first`],
          network: { allow: allow() },
        });
        assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
        assert.ok(
          result.logs.some((l) => l.text === 'hello /first'),
          Harness.transcript(result),
        );
        assert.ok(requests.includes('/first'));
      },
    );

    it('python: allowed by IP:port works (HTTP, CONNECT, SOCKS5); everything else is refused, recorded, aggregated', async () => {
      const result = await h.run({
        name: 'egress-python',
        network: { allow: allow() },
        input: { httpPort, echoPort, otherPort, udpPort, unroutable: UNROUTABLE },
        code: `${PY_NET}
H, E, O = INPUT["httpPort"], INPUT["echoPort"], INPUT["otherPort"]
report({
    "env": {k: os.environ.get(k) for k in ["HTTP_PROXY", "https_proxy", "ALL_PROXY", "NO_PROXY", "NODE_USE_ENV_PROXY"]},
    "http": get(f"http://127.0.0.1:{H}/py"),
    "connect": attempt(tunnel, E),
    "socks": attempt(socks, "127.0.0.1", E),
    "unlisted": [get(f"http://127.0.0.1:{O}/"), get(f"http://127.0.0.1:{O}/again")],
    "unlistedSocks": attempt(socks, "127.0.0.1", O),
    "localhost": get(f"http://localhost:{O}/by-name"),
    "direct": attempt(direct, H),
    "dns": attempt(socket.getaddrinfo, "example.com", 443),
    "udpOut": attempt(udp_send, INPUT["unroutable"], 53),
    "udpHost": attempt(udp_send, "127.0.0.1", INPUT["udpPort"]),
})
`,
      });
      assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
      const r = result.report;
      const url = 'http://127.0.0.1:3128';
      assert.deepEqual(r['env'], {
        HTTP_PROXY: url,
        https_proxy: url,
        ALL_PROXY: 'socks5h://127.0.0.1:3128',
        NO_PROXY: '',
        NODE_USE_ENV_PROXY: '1',
      });
      assert.deepEqual(r['http'], { status: 200, body: 'hello /py' });
      assert.deepEqual(r['connect'], { ok: true, value: 'ping' });
      assert.deepEqual(r['socks'], { ok: true, value: { reply: 0, echo: 'ping' } });
      for (const refused of r['unlisted']) {
        assert.equal(refused.status, 403, JSON.stringify(refused));
        assert.equal(refused.rule, 'default-deny');
        assert.match(
          refused.body,
          new RegExp(`denied connect to 127\\.0\\.0\\.1:${otherPort} — not in allow-list`),
        );
      }
      assert.deepEqual(r['unlistedSocks'], { ok: true, value: { reply: 2 } }); // 0x02: not allowed by ruleset
      assert.equal(r['localhost'].status, 403, JSON.stringify(r['localhost']));
      assert.equal(r['localhost'].rule, 'special-address:loopback');
      assert.match(r['localhost'].body, /localhost resolved to loopback address (127\.0\.0\.1|::1)/);
      // Bypassing the proxy reaches only the sandbox's own lo.
      assert.equal(r['direct'].errno, 'ECONNREFUSED', JSON.stringify(r['direct']));
      assert.equal(r['dns'].errno, 'EAI', JSON.stringify(r['dns']));
      assert.equal(r['udpOut'].errno, 'ENETUNREACH', JSON.stringify(r['udpOut']));
      assert.equal(r['udpHost'].ok, true, 'UDP to 127.0.0.1 lands on the sandbox lo');
      assert.ok(requests.includes('/py') && !requests.includes('/by-name'), requests.join(' '));

      // Denied attempts: one violation per (destination, rule), counted.
      const network = result.record.violations.filter((v) => v.kind === 'network');
      assert.deepEqual(
        network.map((v) => ({ rule: v.rule, count: v.count })).sort((a, b) => a.rule.localeCompare(b.rule)),
        [
          { rule: 'default-deny', count: 3 },
          { rule: 'special-address:loopback', count: 1 },
        ],
      );
      assert.match(
        network.find((v) => v.rule === 'default-deny')!.message,
        new RegExp(`^network: denied connect to 127\\.0\\.0\\.1:${otherPort} — not in allow-list$`),
      );

      // Every attempt through the proxy is in the ledger.
      const entries = await h.ctx.audit.list(result.executionId);
      const kinds = entries.map((e) => e.kind);
      assert.ok(kinds.indexOf('policy.network') < kinds.indexOf('execution.started'), kinds.join(' '));
      const connects = entries.filter((e) => e.kind === 'network.connect').map((e) => e.data);
      const summary = connects
        .map((d) => `${d['protocol']} ${d['requested']} ${d['verdict']} ${d['rule']}`)
        .sort();
      assert.deepEqual(
        summary,
        [
          `connect 127.0.0.1:${echoPort} allow 127.0.0.1:${echoPort}`,
          `http 127.0.0.1:${httpPort} allow 127.0.0.1:${httpPort}`,
          `http 127.0.0.1:${otherPort} deny default-deny`,
          `http 127.0.0.1:${otherPort} deny default-deny`,
          `http localhost:${otherPort} deny special-address:loopback`,
          `socks5 127.0.0.1:${echoPort} allow 127.0.0.1:${echoPort}`,
          `socks5 127.0.0.1:${otherPort} deny default-deny`,
        ].sort(),
      );
      const tunnelled = connects.find((d) => d['protocol'] === 'connect')!;
      assert.equal(tunnelled['address'], '127.0.0.1');
      assert.equal(tunnelled['bytesUp'], 4);
      assert.equal(tunnelled['bytesDown'], 4);
      assert.deepEqual(Object.keys(tunnelled).sort(), [
        'address',
        'bytesDown',
        'bytesUp',
        'error',
        'host',
        'port',
        'protocol',
        'reason',
        'requested',
        'resolved',
        'rule',
        'verdict',
      ]);
    });

    sandboxOnly(isolation)(
      'node: fetch and http.get honour the env proxy (NODE_USE_ENV_PROXY=1)',
      async () => {
        const result = await h.run({
          name: 'egress-node',
          language: 'node',
          network: { allow: allow() },
          input: { httpPort, otherPort },
          code: `
import { readFileSync } from 'node:fs';
import http from 'node:http';
const input = JSON.parse(readFileSync(process.env.AEGIS_INPUT, 'utf8'));
const settle = (p) => p.then((value) => ({ ok: true, value }), (e) => ({ ok: false, error: String(e.cause ?? e) }));
const viaFetch = async (url) => { const r = await fetch(url); return { status: r.status, body: await r.text() }; };
const viaHttp = (url) => new Promise((resolve, reject) => {
  http.get(url, (res) => { let body = ''; res.setEncoding('utf8'); res.on('data', (d) => (body += d)); res.on('end', () => resolve({ status: res.statusCode, body })); }).on('error', reject);
});
console.log(JSON.stringify({
  fetch: await settle(viaFetch('http://127.0.0.1:' + input.httpPort + '/node-fetch')),
  http: await settle(viaHttp('http://127.0.0.1:' + input.httpPort + '/node-http')),
  refused: await settle(viaFetch('http://127.0.0.1:' + input.otherPort + '/')),
}));
`,
        });
        assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
        const r = result.report;
        assert.deepEqual(r['fetch'], { ok: true, value: { status: 200, body: 'hello /node-fetch' } });
        assert.deepEqual(r['http'], { ok: true, value: { status: 200, body: 'hello /node-http' } });
        // fetch tunnels even http:// through CONNECT, so a refusal surfaces as a failed request rather than a 403.
        assert.ok(
          r['refused'].value?.status === 403 || r['refused'].ok === false,
          JSON.stringify(r['refused']),
        );
      },
    );

    sandboxOnly(isolation)(
      'curl: http_proxy and SOCKS5 (socks5h) both go through the proxy; unlisted gets 403',
      async () => {
        const result = await h.run({
          name: 'egress-curl',
          language: 'bash',
          network: { allow: allow() },
          code: `set -u
a=$(curl -sS --max-time 5 http://127.0.0.1:${httpPort}/curl-http)
b=$(curl -sS --max-time 5 --proxy socks5h://127.0.0.1:3128 http://127.0.0.1:${httpPort}/curl-socks)
c=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:${otherPort}/)
curl -sS --max-time 5 --noproxy '*' http://127.0.0.1:${httpPort}/direct >/dev/null 2>&1; d=$?
printf '{"a":"%s","b":"%s","c":"%s","d":"%s"}\\n' "$a" "$b" "$c" "$d"
`,
        });
        assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
        const r = result.report;
        assert.equal(r['a'], 'hello /curl-http', Harness.transcript(result));
        assert.equal(r['b'], 'hello /curl-socks');
        assert.equal(r['c'], '403');
        assert.equal(r['d'], '7', 'curl without the proxy: connection refused on the sandbox lo');
        assert.ok(!requests.includes('/direct'));
      },
    );

    sandboxOnly(isolation)('fails closed: once the proxy is gone the sandbox has no network', async () => {
      let executionId = '';
      let cut: Promise<void> | undefined;
      const result = await h.run({
        name: 'egress-cut',
        network: { allow: allow() },
        input: { httpPort },
        onStarted: (id) => {
          executionId = id;
        },
        onLog: (_stream, text) => {
          if (text === 'phase1') cut = h.ctx.sandbox.egressProxyOf(executionId)!.close();
        },
        code: `${PY_NET}
H = INPUT["httpPort"]
first = get(f"http://127.0.0.1:{H}/before-cut")
print("phase1", flush=True)
deadline = time.time() + 10
after = None
while time.time() < deadline:
    # A request in flight when the proxy closes is cut (reset); the first failure means the cut happened.
    if get(f"http://127.0.0.1:{H}/during-cut")["status"] is None:
        after = get(f"http://127.0.0.1:{H}/after-cut")
        break
    time.sleep(0.02)
report({"first": first, "after": after, "socks": attempt(socks, "127.0.0.1", H)})
`,
      });
      assert.ok(cut, 'the test never cut the proxy');
      await cut;
      assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
      const r = result.report;
      assert.deepEqual(r['first'], { status: 200, body: 'hello /before-cut' });
      assert.match(r['after']?.error ?? '', /Connection refused/, JSON.stringify(r['after']));
      assert.equal(r['socks'].errno, 'ECONNREFUSED', JSON.stringify(r['socks']));
    });

    sandboxOnly(isolation)(
      'live policy change: a destination allowed mid-run becomes reachable, and the change is audited',
      async () => {
        let executionId = '';
        let change: Promise<void> | undefined;
        const result = await h.run({
          name: 'egress-live',
          network: { allow: [`127.0.0.1:${echoPort}`] },
          input: { httpPort },
          onStarted: (id) => {
            executionId = id;
          },
          onLog: (_stream, text) => {
            if (text !== 'phase1') return;
            const compiled = compileNetworkPolicy({ allow: [`127.0.0.1:${httpPort}`] });
            assert.ok(compiled.ok);
            change = updateNetworkPolicy(h.ctx, executionId, compiled.policy);
          },
          code: `${PY_NET}
H = INPUT["httpPort"]
before = get(f"http://127.0.0.1:{H}/live-before")
print("phase1", flush=True)
deadline = time.time() + 10
later = None
while time.time() < deadline:
    later = get(f"http://127.0.0.1:{H}/live-after")
    if later["status"] == 200:
        break
    time.sleep(0.02)
report({"before": before, "later": later})
`,
        });
        assert.ok(change, 'the test never changed the policy');
        await change;
        assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
        assert.equal(result.report['before'].status, 403, JSON.stringify(result.report));
        assert.deepEqual(result.report['later'], { status: 200, body: 'hello /live-after' });
        const policies = (await h.ctx.audit.list(result.executionId))
          .filter((e) => e.kind === 'policy.network')
          .map((e) => e.data['allow']);
        assert.deepEqual(policies, [[`127.0.0.1:${echoPort}`], [`127.0.0.1:${httpPort}`]]);
      },
    );

    sandboxOnly(isolation)('a malformed rule is a manifest error at file:line:col', async () => {
      const file = h.writeAgent({
        name: 'egress-bad',
        code: 'pass',
        network: { allow: ['https://api.example.com'] },
      });
      let caught: unknown;
      try {
        await loadManifestFile(file);
      } catch (error) {
        caught = error;
      }
      assert.ok(isAegisError(caught) && caught.code === 'MANIFEST_INVALID', String(caught));
      const problem = caught.problems.find((p) => p.path === 'spec.security.network.allow[0]');
      assert.ok(problem, JSON.stringify(caught.problems));
      assert.match(
        problem.message,
        /is a URL; write the host \(and port\) without "https:\/\/", e\.g\. api\.example\.com:443/,
      );
      assert.ok(typeof problem.line === 'number' && problem.line > 0, JSON.stringify(problem));
    });
  });
}
