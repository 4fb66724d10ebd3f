/**
 * Live sandboxes on a real server: a terminal over WebSocket (echo, `stty size` before and after a resize, no
 * capabilities in it, exit code, audited without bytes), `aegis sandbox shell` driven without a terminal, and an
 * exposed port (HTTP and a WebSocket echo served inside the sandbox) — and, playing the attacker, an unexposed
 * port, no key, another key's sandbox, a deleted sandbox, and the caller's key never reaching the sandbox.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import {
  BIN,
  cli,
  killServers,
  pollUntil,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

/** Served inside the sandbox on 127.0.0.1:PORT: GET → JSON {path, headers}; a WebSocket upgrade → echo. */
const SERVER_PY = `
import base64, hashlib, json, socket, struct, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.headers.get('upgrade', '').lower() == 'websocket':
            accept = base64.b64encode(hashlib.sha1((self.headers['sec-websocket-key'] + GUID).encode()).digest()).decode()
            self.send_response(101)
            self.send_header('Upgrade', 'websocket'); self.send_header('Connection', 'Upgrade')
            self.send_header('Sec-WebSocket-Accept', accept); self.end_headers(); self.wfile.flush()
            r = self.rfile
            while True:
                h = r.read(2)
                if len(h) < 2: return
                op, n = h[0] & 15, h[1] & 127
                if n == 126: n = struct.unpack('>H', r.read(2))[0]
                elif n == 127: n = struct.unpack('>Q', r.read(8))[0]
                mask = r.read(4)
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(r.read(n)))
                if op == 8: return
                out = bytes([0x80 | op]) + (bytes([len(data)]) if len(data) < 126 else bytes([126]) + struct.pack('>H', len(data)))
                self.wfile.write(out + data); self.wfile.flush()
        body = json.dumps({'path': self.path, 'headers': dict(self.headers)}).encode()
        self.send_response(200); self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(body))); self.end_headers(); self.wfile.write(body)
ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
`;

interface Reply {
  status: number;
  json: Record<string, unknown>;
  text: string;
}

async function call(
  url: string,
  key: string | null,
  method: string,
  path: string,
  body?: unknown,
): Promise<Reply> {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: {
      ...(key === null ? {} : { authorization: `Bearer ${key}` }),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {}
  return { status: response.status, json, text };
}

/** A terminal session: collects output, answers when `pattern` has appeared. */
function terminal(url: string, key: string, id: string, query: string) {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/sandboxes/${id}/pty?${query}`, {
    headers: { authorization: `Bearer ${key}` },
  });
  let output = '';
  let exit: Record<string, unknown> | undefined;
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  ws.on('message', (data, binary) => {
    if (binary) output += data.toString();
    else exit = JSON.parse(data.toString()) as Record<string, unknown>;
  });
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return {
    opened,
    closed,
    exit: () => exit,
    send: (text: string) => ws.send(Buffer.from(text), { binary: true }),
    resize: (cols: number, rows: number) => ws.send(JSON.stringify({ type: 'resize', cols, rows })),
    output: () => output,
    until: (pattern: RegExp) =>
      pollUntil(`terminal output ${pattern}`, async () => (pattern.test(output) ? output : undefined)),
  };
}

/** Status of a refused WebSocket handshake. */
function refusedUpgrade(url: string, path: string, key: string | null): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}${path}`, {
      headers: key === null ? {} : { authorization: `Bearer ${key}` },
    });
    ws.once('unexpected-response', (_request, response) => {
      resolve(response.statusCode ?? 0);
      response.resume();
      ws.terminate();
    });
    ws.once('open', () => reject(new Error(`${path} was accepted`)));
    ws.once('error', () => {});
  });
}

describe('live sandboxes: terminal and ports', { concurrency: true }, () => {
  let server: ServerProcess;
  let key: string;
  const dirs = serverDirs();
  const agentDir = mkdtempSync(join(tmpdir(), 'aegis-pty-agent-'));

  before(async () => {
    writeFileSync(
      join(agentDir, 'agent.yaml'),
      'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: ports }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n  security:\n    network: { expose: [8000, 8001] }\n    resources: { disk: 64Mi, memory: 512Mi, pids: 128, timeout: 10m }\n',
    );
    writeFileSync(join(agentDir, 'main.sh'), 'echo unused\n');
    server = await startServerProcess({ dirs, args: ['--sandbox-domain', 'sandboxes.test'] });
    key = server.adminKey;
    const deployed = await cli(['deploy', join(agentDir, 'agent.yaml')], {
      ...server.env,
      AEGIS_SERVER: server.url,
      AEGIS_API_KEY: key,
    });
    assert.equal(deployed.code, 0, deployed.stderr);
  });
  after(async () => {
    await killServers();
    dirs.cleanup();
    rmSync(agentDir, { recursive: true, force: true });
  });

  async function create(as = key): Promise<string> {
    const created = await call(server.url, as, 'POST', '/v1/sandboxes', { agent: 'ports' });
    assert.equal(created.status, 201, created.text);
    return created.json['id'] as string;
  }

  async function auditOf(id: string): Promise<{ kind: string; data: Record<string, unknown> }[]> {
    const audit = await call(server.url, key, 'GET', `/v1/sandboxes/${id}/audit`);
    return audit.json['entries'] as { kind: string; data: Record<string, unknown> }[];
  }

  /** Starts SERVER_PY on `port` in the sandbox and waits until it answers through the proxy. */
  async function serve(id: string, port: number): Promise<void> {
    const upload = await fetch(`${server.url}/v1/sandboxes/${id}/files?path=/workspace/server.py`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/octet-stream' },
      body: SERVER_PY,
    });
    assert.equal(upload.status, 201, await upload.text());
    const started = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: ['python3', '/workspace/server.py', String(port)],
      background: true,
    });
    assert.equal(started.status, 201, started.text);
    let last = '';
    await pollUntil(`server on ${port}`, async () => {
      const reply = await call(server.url, key, 'GET', `/v1/sandboxes/${id}/ports/${port}/ready`);
      last = `${reply.status} ${reply.text}`;
      return reply.status === 200 ? true : undefined;
    }).catch(async (error: Error) => {
      const command = await call(server.url, key, 'GET', `/v1/sandboxes/${id}/commands`);
      throw new Error(
        `${error.message}; last answer: ${last.slice(0, 500)}; commands: ${command.text.slice(0, 500)}`,
      );
    });
  }

  it('a terminal: echo, stty size before and after a resize, no capabilities, exit code; audited without bytes', async () => {
    const id = await create();
    const t = terminal(server.url, key, id, 'cols=100&rows=30&cmd=/bin/sh');
    await t.opened;
    t.send('echo "hel""lo-pty"\n');
    await t.until(/hello-pty/);
    t.send('stty size\n');
    await t.until(/30 100/);
    t.resize(120, 40);
    // The resize travels beside the keystrokes (a control message, not terminal bytes), so a command typed right
    // after it may still see the old size — as after SIGWINCH on any terminal: ask until it has landed.
    await pollUntil('the resize to land', async () => {
      t.send('stty size; tty\n');
      await new Promise((resolve) => setTimeout(resolve, 200));
      return /40 120/.test(t.output()) ? true : undefined;
    });
    await t.until(/\/dev\/pts\/\d+/);
    t.send('grep -E "^Cap(Eff|Prm|Bnd)" /proc/self/status; id -u\n');
    const caps = await t.until(/CapBnd:\s+\w+[\s\S]*\n1000\r?\n/);
    assert.match(caps, /CapEff:\s+0000000000000000/);
    assert.match(caps, /CapPrm:\s+0000000000000000/);
    t.send('exit 3\n');
    const closed = await t.closed;
    assert.equal(closed.code, 1000);
    assert.deepEqual(t.exit(), { type: 'exit', exitCode: 3, signal: null });
    const entries = await pollUntil('the exec entry', async () => {
      const all = await auditOf(id);
      return all.some((e) => e.kind === 'sandbox.exec' && e.data['pty'] === true) ? all : undefined;
    });
    const exec = entries.find((e) => e.kind === 'sandbox.exec' && e.data['pty'] === true)!;
    assert.deepEqual(exec.data['argv'], ['/bin/sh']);
    assert.equal(exec.data['exitCode'], 3);
    assert.equal(typeof exec.data['durationMs'], 'number');
    assert.doesNotMatch(JSON.stringify(entries), /hello-pty|stty/);
    await call(server.url, key, 'DELETE', `/v1/sandboxes/${id}`);
  });

  it('aegis sandbox shell: runs a command on a terminal with piped stdin and exits with its code', async () => {
    const id = await create();
    const child = spawn(process.execPath, [BIN, 'sandbox', 'shell', id, '--', '/bin/sh'], {
      env: { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: key },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = new Promise<number | null>((resolve) => child.once('close', resolve));
    child.stdin.write('echo from-"shell"; tty\nexit 7\n');
    assert.equal(await code, 7, stderr);
    assert.match(stdout, /from-shell/);
    assert.match(stdout, /\/dev\/pts\/\d+/);
    await call(server.url, key, 'DELETE', `/v1/sandboxes/${id}`);
  });

  it('an exposed port: HTTP and a WebSocket echo served inside, the caller key stripped, each connection in the ledger', async () => {
    const id = await create();
    await serve(id, 8000);
    const got = await call(server.url, key, 'GET', `/v1/sandboxes/${id}/ports/8000/some/path?x=1`);
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json['path'], '/some/path?x=1');
    const headers = got.json['headers'] as Record<string, string>;
    const names = Object.keys(headers).map((h) => h.toLowerCase());
    assert.ok(!names.includes('authorization'), `the key reached the sandbox: ${JSON.stringify(headers)}`);
    assert.doesNotMatch(got.text, new RegExp(key));
    assert.equal(
      headers['X-Forwarded-Prefix'] ?? headers['x-forwarded-prefix'],
      `/v1/sandboxes/${id}/ports/8000`,
    );

    const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/v1/sandboxes/${id}/ports/8000/ws`, {
      headers: { authorization: `Bearer ${key}` },
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const echoed = new Promise<string>((resolve) => ws.once('message', (data) => resolve(data.toString())));
    ws.send('ping-through-the-port');
    assert.equal(await echoed, 'ping-through-the-port');
    ws.close();

    const entries = await pollUntil('port entries', async () => {
      const all = (await auditOf(id)).filter((e) => e.kind === 'sandbox.port');
      return all.some((e) => e.data['websocket'] === true) && all.some((e) => e.data['path'] === '/some/path')
        ? all
        : undefined;
    });
    const http = entries.find((e) => e.data['path'] === '/some/path')!;
    assert.equal(http.data['port'], 8000);
    assert.equal(http.data['method'], 'GET');
    assert.equal(http.data['status'], 200);
    assert.ok((http.data['bytesOut'] as number) > 0);
    const upgraded = entries.find((e) => e.data['websocket'] === true)!;
    assert.equal(upgraded.data['status'], 101);
    await call(server.url, key, 'DELETE', `/v1/sandboxes/${id}`);
  });

  it('host routing (--sandbox-domain): <port>-<id>.<domain> reaches the port at /, HTTP and WebSocket; still needs the key', async () => {
    const id = await create();
    await serve(id, 8000);
    const { port } = new URL(server.url);
    const host = `8000-${id.replace('sb_', 'sb-')}.sandboxes.test`;
    const get = (path: string, headers: Record<string, string>) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, path, headers: { host, ...headers } }, (res) => {
          let body = '';
          res.setEncoding('utf8').on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end();
      });
    const routed = await get('/at/root?y=2', { authorization: `Bearer ${key}` });
    assert.equal(routed.status, 200, routed.body);
    const seen = JSON.parse(routed.body) as { path: string; headers: Record<string, string> };
    assert.equal(seen.path, '/at/root?y=2');
    const names = Object.keys(seen.headers).map((h) => h.toLowerCase());
    assert.ok(!names.includes('x-forwarded-prefix'), 'served at the root: no prefix');
    assert.ok(!names.includes('authorization'));
    assert.equal((await get('/', {})).status, 401, 'no key, no port');
    // An exposed-port check still applies: 9000 is not exposed.
    const other = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port,
          path: '/',
          headers: { host: host.replace('8000-', '9000-'), authorization: `Bearer ${key}` },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.end();
    });
    assert.equal(other, 403);
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, {
      headers: { host, authorization: `Bearer ${key}` },
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const echoed = new Promise<string>((resolve) => ws.once('message', (data) => resolve(data.toString())));
    ws.send('by-host');
    assert.equal(await echoed, 'by-host');
    ws.close();
    await call(server.url, key, 'DELETE', `/v1/sandboxes/${id}`);
  });

  it('attack: an unexposed port, no key, another key, a deleted sandbox — all refused, the unexposed port audited', async () => {
    const makeKey = async (name: string) => {
      const created = await call(server.url, key, 'POST', '/v1/keys', { name, scopes: ['execute'] });
      assert.equal(created.status, 201, created.text);
      return created.json['key'] as string;
    };
    const alice = await makeKey('alice-ports');
    const mallory = await makeKey('mallory-ports');
    const id = await create(alice);
    await serve(id, 8001);
    // A server on a port the manifest does not expose: reachable inside, never through AEGIS.
    const inside = await call(server.url, alice, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: ['python3', '/workspace/server.py', '9000'],
      background: true,
    });
    assert.equal(inside.status, 201, inside.text);

    const unexposed = await call(server.url, alice, 'GET', `/v1/sandboxes/${id}/ports/9000/`);
    assert.equal(unexposed.status, 403, unexposed.text);
    assert.match(unexposed.text, /not exposed/);
    assert.equal(await refusedUpgrade(server.url, `/v1/sandboxes/${id}/ports/9000/ws`, alice), 403);
    const proxyPort = await call(server.url, alice, 'GET', `/v1/sandboxes/${id}/ports/3129/`);
    assert.equal(proxyPort.status, 403, proxyPort.text);

    const noKey = await call(server.url, null, 'GET', `/v1/sandboxes/${id}/ports/8001/`);
    assert.equal(noKey.status, 401, noKey.text);
    assert.equal(await refusedUpgrade(server.url, `/v1/sandboxes/${id}/ports/8001/ws`, null), 401);
    assert.equal(await refusedUpgrade(server.url, `/v1/sandboxes/${id}/pty`, null), 401);

    const other = await call(server.url, mallory, 'GET', `/v1/sandboxes/${id}/ports/8001/`);
    assert.equal(other.status, 404, other.text);
    assert.equal(await refusedUpgrade(server.url, `/v1/sandboxes/${id}/ports/8001/ws`, mallory), 404);
    assert.equal(await refusedUpgrade(server.url, `/v1/sandboxes/${id}/pty`, mallory), 404);

    const fine = await call(server.url, alice, 'GET', `/v1/sandboxes/${id}/ports/8001/`);
    assert.equal(fine.status, 200, fine.text);

    const refusals = (await auditOf(id)).filter((e) => e.kind === 'sandbox.port' && e.data['refused']);
    assert.ok(
      refusals.some((e) => e.data['port'] === 9000 && e.data['refused'] === 'not-exposed'),
      JSON.stringify(refusals),
    );

    assert.equal((await call(server.url, alice, 'DELETE', `/v1/sandboxes/${id}`)).status, 200);
    const gone = await call(server.url, alice, 'GET', `/v1/sandboxes/${id}/ports/8001/`);
    assert.equal(gone.status, 404, gone.text);
    assert.equal(await refusedUpgrade(server.url, `/v1/sandboxes/${id}/ports/8001/ws`, alice), 404);
  });
});
