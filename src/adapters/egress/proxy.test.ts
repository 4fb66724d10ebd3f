/**
 * The egress proxy against real sockets: origin servers on 127.0.0.1 / ::1 ephemeral ports, the proxy on a temp
 * unix socket, Node clients and curl. Resolvers are injected: names "resolve" to whatever a test needs, and the
 * proxy refuses every non-loopback answer before dialling, so nothing here ever leaves the host.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { compileNetworkPolicy, type NetworkPolicy } from '../../domain/policy/network-rules.ts';
import { makePlaceholder, type PlaceholderEntry } from '../../domain/secrets/placeholder.ts';
import { compileSecretBindings, SecretRefs } from '../../domain/secrets/secret-ref.ts';
import { HttpSecretRewriter, type SecretUse } from '../secrets/http-secret-rewriter.ts';
import { type EgressDecisionEvent, EgressProxy, type EgressProxyOptions, type Resolver } from './proxy.ts';

// ---------------------------------------------------------------------------------------------------------------
// Fixtures.

function policy(allow: string[], deny: string[] = []): NetworkPolicy {
  const compiled = compileNetworkPolicy({ allow, deny });
  if (!compiled.ok) assert.fail(compiled.problems.map((problem) => problem.message).join('; '));
  return compiled.policy;
}

async function waitFor<T>(probe: () => T | undefined, what: string, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: string;
}

/** An HTTP origin that records what it receives and answers with it as JSON. */
async function startOrigin(host = '127.0.0.1') {
  const seen: Seen[] = [];
  let connections = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      const record = {
        method: req.method!,
        url: req.url!,
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body,
      };
      seen.push(record);
      res.writeHead(200, {
        'Content-Type': 'application/json',
        'X-Origin': host,
        'X-Hop-Test': 'hop',
        Connection: 'close, X-Hop-Test',
      });
      res.end(JSON.stringify(record));
    });
  });
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    seen,
    connections: () => connections,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    server,
  };
}

/** A TCP echo server (for tunnels). */
async function startEcho() {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => connections,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A 127.0.0.1 port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const tmpRoot = mkdtempSync(join(tmpdir(), 'aegis-egress-'));
let counter = 0;

interface Harness {
  proxy: EgressProxy;
  socketPath: string;
  events: EgressDecisionEvent[];
  resolverCalls: string[];
  close: () => Promise<void>;
}

const openHarnesses = new Set<Harness>();

async function startProxy(
  allow: string[],
  options: Partial<EgressProxyOptions> & { deny?: string[]; names?: Record<string, string[]> } = {},
): Promise<Harness> {
  const socketPath = join(tmpRoot, `p${++counter}.sock`);
  const events: EgressDecisionEvent[] = [];
  const resolverCalls: string[] = [];
  const names = options.names ?? {};
  const resolve: Resolver = async (host) => {
    resolverCalls.push(host);
    const answer = names[host];
    if (!answer) throw Object.assign(new Error(`no such test name ${host}`), { code: 'ENOTFOUND' });
    return answer;
  };
  const proxy = new EgressProxy({
    execution: 'ex_test',
    socketPath,
    policy: policy(allow, options.deny),
    onDecision: (event) => events.push(event),
    resolve,
    ...options,
  });
  await proxy.listen();
  const harness: Harness = {
    proxy,
    socketPath,
    events,
    resolverCalls,
    close: async () => {
      openHarnesses.delete(harness);
      await proxy.close();
    },
  };
  openHarnesses.add(harness);
  return harness;
}

after(async () => {
  for (const harness of openHarnesses) await harness.close();
  rmSync(tmpRoot, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------------------
// Clients.

interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  reusedSocket: boolean;
}

/** A plain-HTTP request through the proxy's unix socket, in absolute-form. */
function proxyGet(
  socketPath: string,
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string; agent?: http.Agent } = {},
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      socketPath,
      path: url,
      method: options.method ?? 'GET',
      headers: options.headers,
      agent: options.agent ?? false,
    });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body, reusedSocket: req.reusedSocket }),
      );
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Opens a CONNECT tunnel through the proxy; resolves with the response status and the socket. */
function proxyConnect(
  socketPath: string,
  target: string,
): Promise<{ status: number; socket: net.Socket; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'CONNECT', path: target, agent: false });
    req.on('connect', (res, socket, head) => {
      if (res.statusCode === 200) resolve({ status: 200, socket, body: '' });
      // A refused CONNECT: Node hands over the socket with the body still in it.
      else
        void readAll(socket).then((rest) =>
          resolve({ status: res.statusCode!, socket, body: head.toString() + rest }),
        );
    });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, socket: res.socket as net.Socket, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Reads from a socket until `size` bytes have arrived (or it ends). */
function readBytes(socket: net.Socket, size: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (buffer.length >= size) finish();
    };
    const finish = () => {
      socket.off('data', onData);
      socket.off('end', finish);
      socket.off('error', reject);
      socket.pause();
      if (buffer.length > size) socket.unshift(buffer.subarray(size));
      resolve(buffer.subarray(0, size));
    };
    socket.on('data', onData);
    socket.once('end', finish);
    socket.once('error', reject);
    socket.resume();
  });
}

function readAll(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => (text += chunk));
    socket.on('close', () => resolve(text));
    socket.on('error', () => {});
    socket.resume();
  });
}

function connectUnix(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath, () => resolve(socket));
    socket.once('error', reject);
  });
}

type SocksAddress = { ipv4: string } | { domain: string } | { ipv6: Buffer };

/** SOCKS5 handshake; resolves with the reply code and the socket (ready to tunnel when the code is 0). */
async function socks5(
  socketPath: string,
  address: SocksAddress,
  port: number,
  command = 0x01,
): Promise<{ code: number; socket: net.Socket }> {
  const socket = await connectUnix(socketPath);
  socket.write(Buffer.from([0x05, 0x01, 0x00]));
  assert.deepEqual([...(await readBytes(socket, 2))], [0x05, 0x00]);
  let addressBytes: Buffer;
  if ('ipv4' in address) addressBytes = Buffer.from([0x01, ...address.ipv4.split('.').map(Number)]);
  else if ('domain' in address)
    addressBytes = Buffer.concat([Buffer.from([0x03, address.domain.length]), Buffer.from(address.domain)]);
  else addressBytes = Buffer.concat([Buffer.from([0x04]), address.ipv6]);
  const portBytes = Buffer.alloc(2);
  portBytes.writeUInt16BE(port);
  socket.write(Buffer.concat([Buffer.from([0x05, command, 0x00]), addressBytes, portBytes]));
  const replyBytes = await readBytes(socket, 10);
  assert.equal(replyBytes[0], 0x05);
  return { code: replyBytes[1]!, socket };
}

async function echoRoundTrip(socket: net.Socket, text: string): Promise<string> {
  socket.write(text);
  return (await readBytes(socket, Buffer.byteLength(text))).toString();
}

function closeSocket(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve();
    socket.once('close', () => resolve());
    socket.end();
  });
}

/** curl with a clean environment (no proxy variables from the host). */
function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'curl',
      ['-sS', '--max-time', '10', ...args],
      { env: { PATH: process.env.PATH ?? '' } },
      (error, stdout, stderr) =>
        resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

function hasCurl(): boolean {
  return ['/usr/bin/curl', '/bin/curl', '/usr/local/bin/curl'].some((path) => existsSync(path));
}

/** A TCP (127.0.0.1) → unix socket forwarder, as the sandbox-side one will be; curl's HTTP proxy is TCP only. */
async function startForwarder(socketPath: string) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    const upstream = net.connect({ path: socketPath, allowHalfOpen: true });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function lastEvent(harness: Harness, count = 1): Promise<EgressDecisionEvent> {
  return waitFor(
    () => (harness.events.length >= count ? harness.events[count - 1] : undefined),
    `event #${count}`,
  );
}

// ---------------------------------------------------------------------------------------------------------------

describe('EgressProxy: allowed loopback destination listed by IP:port', () => {
  let origin: Awaited<ReturnType<typeof startOrigin>>;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  before(async () => {
    origin = await startOrigin();
    echo = await startEcho();
  });
  after(async () => {
    await origin.close();
    await echo.close();
  });

  it('listens on a mode-0666 unix socket', async () => {
    const harness = await startProxy([]);
    assert.equal(statSync(harness.socketPath).mode & 0o777, 0o666);
    assert.ok(statSync(harness.socketPath).isSocket());
    await harness.close();
  });

  it('HTTP: forwards in origin-form, strips proxy headers, reports one allow event with bytes', async () => {
    const harness = await startProxy([`127.0.0.1:${origin.port}`]);
    const result = await proxyGet(harness.socketPath, `http://127.0.0.1:${origin.port}/hello?x=1#frag`, {
      method: 'POST',
      headers: {
        Host: 'ignored.example',
        'Proxy-Authorization': 'Basic c2VjcmV0',
        'Proxy-Connection': 'keep-alive',
        'X-Drop-Me': 'hop',
        Connection: 'X-Drop-Me',
        'X-Keep': 'yes',
      },
      body: 'payload',
    });
    assert.equal(result.status, 200);
    assert.equal(result.headers['x-hop-test'], undefined, 'hop-by-hop response headers are not forwarded');
    assert.equal(result.headers['x-origin'], '127.0.0.1');
    const seen = JSON.parse(result.body) as Seen;
    assert.equal(seen.method, 'POST');
    assert.equal(seen.url, '/hello?x=1');
    assert.equal(seen.body, 'payload');
    assert.equal(seen.headers.host, `127.0.0.1:${origin.port}`, 'Host is the checked authority');
    assert.equal(seen.headers['x-keep'], 'yes');
    for (const stripped of ['proxy-authorization', 'proxy-connection', 'x-drop-me']) {
      assert.equal(seen.headers[stripped], undefined, stripped);
    }
    assert.equal(seen.headers.connection, 'close', 'upstream connections are never reused');

    const event = await lastEvent(harness);
    const { startedAt, endedAt, bytesUp, bytesDown, ...rest } = event;
    assert.deepEqual(rest, {
      execution: 'ex_test',
      requested: `127.0.0.1:${origin.port}`,
      host: '127.0.0.1',
      resolved: ['127.0.0.1'],
      address: '127.0.0.1',
      port: origin.port,
      protocol: 'http',
      rule: `127.0.0.1:${origin.port}`,
      verdict: 'allow',
      reason: `matches allow rule 127.0.0.1:${origin.port} (which names this loopback address explicitly)`,
      message: `network: allowed connect to 127.0.0.1:${origin.port} — matches allow rule 127.0.0.1:${origin.port} (which names this loopback address explicitly)`,
    });
    assert.ok(bytesUp > 'payload'.length && bytesDown > result.body.length, `${bytesUp}/${bytesDown}`);
    assert.ok(Date.parse(endedAt) >= Date.parse(startedAt));
    assert.equal(harness.resolverCalls.length, 0, 'an IP literal is never resolved');
    await harness.close();
  });

  it('HTTP: a chunked request body arrives intact', async () => {
    const harness = await startProxy([`127.0.0.1:${origin.port}`]);
    const result = await new Promise<HttpResult>((resolve, reject) => {
      const req = http.request({
        socketPath: harness.socketPath,
        path: `http://127.0.0.1:${origin.port}/up`,
        method: 'PUT',
      });
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode!, headers: res.headers, body, reusedSocket: false }),
        );
      });
      req.on('error', reject);
      req.write('part one, ');
      setImmediate(() => req.end('part two'));
    });
    const seen = JSON.parse(result.body) as Seen;
    assert.equal(seen.headers['transfer-encoding'], 'chunked');
    assert.equal(seen.body, 'part one, part two');
    await harness.close();
  });

  it('CONNECT: a tunnel with no traffic is cut after the idle timeout', async () => {
    const harness = await startProxy([`127.0.0.1:${echo.port}`], { idleTimeoutMs: 200 });
    const { status, socket } = await proxyConnect(harness.socketPath, `127.0.0.1:${echo.port}`);
    assert.equal(status, 200);
    await readAll(socket);
    assert.equal((await lastEvent(harness)).error, 'idle-timeout');
    await harness.close();
  });

  it('CONNECT: tunnels bytes both ways and counts them exactly', async () => {
    const harness = await startProxy([`127.0.0.1:${echo.port}`]);
    const { status, socket } = await proxyConnect(harness.socketPath, `127.0.0.1:${echo.port}`);
    assert.equal(status, 200);
    assert.equal(await echoRoundTrip(socket, 'ping'), 'ping');
    assert.equal(await echoRoundTrip(socket, 'pong!'), 'pong!');
    await closeSocket(socket);
    const event = await lastEvent(harness);
    assert.equal(event.protocol, 'connect');
    assert.equal(event.verdict, 'allow');
    assert.equal(event.bytesUp, 9);
    assert.equal(event.bytesDown, 9);
    await harness.close();
  });

  it('SOCKS5: IPv4, domain and IPv4-mapped IPv6 address types all reach the checked address', async () => {
    const harness = await startProxy([`127.0.0.1:${echo.port}`], { names: { 'echo.test': ['127.0.0.1'] } });
    const mapped = Buffer.alloc(16);
    mapped.writeUInt16BE(0xffff, 10);
    Buffer.from([127, 0, 0, 1]).copy(mapped, 12);
    const addresses: SocksAddress[] = [{ ipv4: '127.0.0.1' }, { domain: 'echo.test' }, { ipv6: mapped }];
    for (const [index, address] of addresses.entries()) {
      const { code, socket } = await socks5(harness.socketPath, address, echo.port);
      assert.equal(code, 0x00, JSON.stringify(address));
      assert.equal(await echoRoundTrip(socket, `hi${index}`), `hi${index}`);
      await closeSocket(socket);
      const event = await lastEvent(harness, index + 1);
      assert.equal(event.protocol, 'socks5');
      assert.equal(event.verdict, 'allow');
      assert.equal(event.address, '127.0.0.1');
      assert.equal(event.bytesUp, 3);
      assert.equal(event.bytesDown, 3);
    }
    assert.equal(harness.events[1]!.host, 'echo.test');
    assert.deepEqual(harness.events[1]!.resolved, ['127.0.0.1']);
    assert.deepEqual(harness.resolverCalls, ['echo.test']);
    await harness.close();
  });

  it('keep-alive clients: each request is checked and gets its own upstream connection', async () => {
    const other = await startOrigin();
    const harness = await startProxy([`127.0.0.1:${origin.port}`, `127.0.0.1:${other.port}`]);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const first = await proxyGet(harness.socketPath, `http://127.0.0.1:${origin.port}/a`, { agent });
    const second = await proxyGet(harness.socketPath, `http://127.0.0.1:${other.port}/b`, { agent });
    agent.destroy();
    assert.equal(first.status, 200);
    assert.equal(second.status, 200);
    assert.ok(second.reusedSocket, 'the client connection to the proxy was kept alive');
    assert.equal((JSON.parse(second.body) as Seen).url, '/b');
    assert.equal(other.seen.length, 1, 'the second request went to the second host');
    await waitFor(() => harness.events.length === 2 || undefined, 'two events');
    assert.deepEqual(
      harness.events.map((event) => event.port),
      [origin.port, other.port],
    );
    await other.close();
    await harness.close();
  });

  it('IPv6 loopback via [::1]:port (HTTP and SOCKS5 IPv6 address type)', async (t) => {
    let v6: Awaited<ReturnType<typeof startOrigin>>;
    try {
      v6 = await startOrigin('::1');
    } catch (error) {
      t.skip(`IPv6 loopback (::1) is not available on this host: ${(error as Error).message}`);
      return;
    }
    const harness = await startProxy([`[::1]:${v6.port}`]);
    const result = await proxyGet(harness.socketPath, `http://[::1]:${v6.port}/six`);
    assert.equal(result.status, 200);
    assert.equal((JSON.parse(result.body) as Seen).headers.host, `[::1]:${v6.port}`);
    const loopback = Buffer.alloc(16);
    loopback[15] = 1;
    const { code, socket } = await socks5(harness.socketPath, { ipv6: loopback }, v6.port);
    assert.equal(code, 0x00);
    socket.destroy();
    const event = await lastEvent(harness);
    assert.equal(event.address, '::1');
    await harness.close();
    await v6.close();
  });
});

describe('EgressProxy: refusals', () => {
  let origin: Awaited<ReturnType<typeof startOrigin>>;
  let unlisted: Awaited<ReturnType<typeof startOrigin>>;
  before(async () => {
    origin = await startOrigin();
    unlisted = await startOrigin();
  });
  after(async () => {
    await origin.close();
    await unlisted.close();
  });

  it('an unlisted port: HTTP 403 with a clear body, CONNECT 403, SOCKS5 0x02 — and nothing is dialled', async () => {
    const harness = await startProxy([`127.0.0.1:${origin.port}`]);
    const before = unlisted.connections();
    const message = `network: denied connect to 127.0.0.1:${unlisted.port} — not in allow-list`;

    const result = await proxyGet(harness.socketPath, `http://127.0.0.1:${unlisted.port}/`);
    assert.equal(result.status, 403);
    assert.equal(result.body, `${message}\n`);
    assert.equal(result.headers['x-aegis-rule'], 'default-deny');

    const connect = await proxyConnect(harness.socketPath, `127.0.0.1:${unlisted.port}`);
    assert.equal(connect.status, 403);
    assert.equal(connect.body, `${message}\n`);

    const { code, socket } = await socks5(harness.socketPath, { ipv4: '127.0.0.1' }, unlisted.port);
    assert.equal(code, 0x02);
    socket.destroy();

    await waitFor(() => harness.events.length === 3 || undefined, 'three events');
    for (const event of harness.events) {
      assert.equal(event.verdict, 'deny');
      assert.equal(event.rule, 'default-deny');
      assert.equal(event.message, message);
      assert.equal(event.address, null);
      assert.equal(event.bytesUp, 0);
      assert.equal(event.bytesDown, 0);
    }
    assert.deepEqual(
      harness.events.map((event) => event.protocol),
      ['http', 'connect', 'socks5'],
    );
    assert.equal(unlisted.connections(), before, 'the unlisted server was never contacted');
    await harness.close();
  });

  it('a hostname allowed by name that resolves to a private, metadata or loopback address is refused', async () => {
    const names = {
      'private.test': ['10.0.0.1'],
      'metadata.test': ['169.254.169.254'],
      'mapped.test': ['::ffff:169.254.169.254'],
      'loop.test': ['127.0.0.1'],
    };
    const harness = await startProxy(['*.test'], { names });
    const expected: [string, string, string][] = [
      ['private.test', 'special-address:private', 'private.test resolved to private address 10.0.0.1'],
      [
        'metadata.test',
        'special-address:metadata',
        'metadata.test resolved to metadata address 169.254.169.254',
      ],
      ['mapped.test', 'special-address:metadata', 'mapped.test resolved to metadata address 169.254.169.254'],
      ['loop.test', 'special-address:loopback', 'loop.test resolved to loopback address 127.0.0.1'],
    ];
    for (const [name, rule, reason] of expected) {
      const result = await proxyGet(harness.socketPath, `http://${name}:${origin.port}/`);
      assert.equal(result.status, 403, name);
      assert.equal(result.body, `network: denied connect to ${name}:${origin.port} — ${reason}\n`);
      assert.equal(result.headers['x-aegis-rule'], rule);
      const { code, socket } = await socks5(harness.socketPath, { domain: name }, origin.port);
      assert.equal(code, 0x02, name);
      socket.destroy();
    }
    await waitFor(() => harness.events.length === 8 || undefined, 'eight events');
    assert.ok(harness.events.every((event) => event.verdict === 'deny' && event.address === null));
    assert.equal(origin.seen.length, 0, 'loop.test never reached the origin on 127.0.0.1');
    await harness.close();
  });

  it('mixed answers [127.0.0.1, 10.0.0.1] with only 127.0.0.1/32 allowed are refused (rebinding-safe)', async () => {
    const harness = await startProxy([`127.0.0.1/32:${origin.port}`], {
      names: { 'mixed.test': ['127.0.0.1', '10.0.0.1'] },
    });
    const result = await proxyGet(harness.socketPath, `http://mixed.test:${origin.port}/`);
    assert.equal(result.status, 403);
    assert.match(result.body, /mixed\.test resolved to private address 10\.0\.0\.1/);
    const event = await lastEvent(harness);
    assert.equal(event.rule, 'special-address:private');
    assert.deepEqual(event.resolved, ['127.0.0.1', '10.0.0.1']);
    assert.equal(origin.seen.length, 0);
    await harness.close();
  });

  it('an explicit CIDR unlocks a loopback answer for a name', async () => {
    const harness = await startProxy([`127.0.0.0/8:${origin.port}`], {
      names: { 'svc.test': ['127.0.0.1'] },
    });
    const result = await proxyGet(harness.socketPath, `http://svc.test:${origin.port}/ok`);
    assert.equal(result.status, 200);
    assert.equal((JSON.parse(result.body) as Seen).headers.host, `svc.test:${origin.port}`);
    assert.equal((await lastEvent(harness)).rule, `127.0.0.0/8:${origin.port}`);
    await harness.close();
  });

  it('a name no rule could allow is refused without a DNS query (no exfiltration by lookup)', async () => {
    const harness = await startProxy(['api.example.test:443'], {
      names: { 'secret-data.attacker.test': ['127.0.0.1'] },
    });
    const result = await proxyGet(harness.socketPath, `http://secret-data.attacker.test:${origin.port}/`);
    assert.equal(result.status, 403);
    const { code, socket } = await socks5(harness.socketPath, { domain: 'secret-data.attacker.test' }, 443);
    assert.equal(code, 0x02);
    socket.destroy();
    assert.deepEqual(harness.resolverCalls, []);
    await harness.close();
  });

  it('deny rules win over allow rules', async () => {
    const harness = await startProxy(['*.test', '127.0.0.0/8'], {
      deny: ['*.blocked.test', `127.0.0.1:${unlisted.port}`],
      names: { 'a.blocked.test': ['127.0.0.1'] },
    });
    const byName = await proxyGet(harness.socketPath, `http://a.blocked.test:${origin.port}/`);
    assert.equal(byName.status, 403);
    assert.match(byName.body, /— matches deny rule \*\.blocked\.test\n$/);
    const byAddress = await proxyGet(harness.socketPath, `http://127.0.0.1:${unlisted.port}/`);
    assert.equal(byAddress.headers['x-aegis-rule'], `127.0.0.1:${unlisted.port}`);
    assert.deepEqual(harness.resolverCalls, [], 'a name denied by a hostname rule is not even resolved');
    await harness.close();
  });

  it('a name that does not resolve: HTTP 502, SOCKS5 0x04 host unreachable', async () => {
    const harness = await startProxy(['*.test']);
    const result = await proxyGet(harness.socketPath, 'http://nowhere.test/');
    assert.equal(result.status, 502);
    assert.match(result.body, /nowhere\.test did not resolve \(ENOTFOUND\)/);
    const { code, socket } = await socks5(harness.socketPath, { domain: 'nowhere.test' }, 80);
    assert.equal(code, 0x04);
    socket.destroy();
    assert.equal((await lastEvent(harness)).rule, 'unresolvable');
    await harness.close();
  });

  it('an allowed destination that refuses the connection: HTTP 502, CONNECT 502, SOCKS5 0x05, event has the error', async () => {
    const port = await closedPort();
    const harness = await startProxy([`127.0.0.1:${port}`]);
    const result = await proxyGet(harness.socketPath, `http://127.0.0.1:${port}/`);
    assert.equal(result.status, 502);
    assert.match(result.body, /failed: ECONNREFUSED/);
    const connect = await proxyConnect(harness.socketPath, `127.0.0.1:${port}`);
    assert.equal(connect.status, 502);
    const { code, socket } = await socks5(harness.socketPath, { ipv4: '127.0.0.1' }, port);
    assert.equal(code, 0x05);
    socket.destroy();
    await waitFor(() => harness.events.length === 3 || undefined, 'three events');
    for (const event of harness.events) {
      assert.equal(event.verdict, 'allow');
      assert.equal(event.error, 'ECONNREFUSED');
    }
    await harness.close();
  });

  it('SOCKS5 UDP ASSOCIATE and BIND are refused with 0x07; no-auth not offered gets 0xFF', async () => {
    const harness = await startProxy([`127.0.0.1:${origin.port}`]);
    const before = origin.connections();
    for (const command of [0x03, 0x02]) {
      const { code, socket } = await socks5(harness.socketPath, { ipv4: '127.0.0.1' }, origin.port, command);
      assert.equal(code, 0x07);
      socket.destroy();
    }
    const socket = await connectUnix(harness.socketPath);
    socket.write(Buffer.from([0x05, 0x01, 0x02]));
    assert.deepEqual([...(await readBytes(socket, 2))], [0x05, 0xff]);
    socket.destroy();
    await waitFor(() => harness.events.length === 3 || undefined, 'three events');
    assert.equal(harness.events[0]!.rule, 'unsupported');
    assert.equal(harness.events[0]!.reason, 'SOCKS5 UDP ASSOCIATE is not supported (only CONNECT)');
    assert.equal(harness.events[1]!.reason, 'SOCKS5 BIND is not supported (only CONNECT)');
    assert.equal(harness.events[2]!.rule, 'malformed');
    assert.equal(origin.connections(), before);
    await harness.close();
  });
});

describe('EgressProxy: malformed requests get 400 and a decision', () => {
  async function raw(socketPath: string, bytes: string | Buffer): Promise<string> {
    const socket = await connectUnix(socketPath);
    const text = readAll(socket);
    socket.write(bytes);
    return text;
  }

  const cases: [string, string | Buffer, RegExp, RegExp][] = [
    ['garbage', 'HELLO THERE\r\n\r\n', /^HTTP\/1\.1 400 /, /malformed: not an HTTP request \(HPE_/],
    [
      'origin-form',
      'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
      /^HTTP\/1\.1 400 /,
      /origin-form; this is a forward proxy/,
    ],
    [
      'https absolute-form',
      'GET https://x.test/ HTTP/1.1\r\nHost: x\r\n\r\n',
      /^HTTP\/1\.1 400 /,
      /use CONNECT/,
    ],
    ['userinfo', 'GET http://u:p@x.test/ HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400 /, /credentials/],
    ['bad host', 'GET http://0x7f.1/ HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400 /, /not a dotted quad/],
    ['CONNECT without port', 'CONNECT x.test HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400 /, /has no port/],
    ['CONNECT port 0', 'CONNECT x.test:0 HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400 /, /invalid port "0"/],
    [
      'oversized head',
      `GET http://x.test/ HTTP/1.1\r\nX-Big: ${'a'.repeat(70 * 1024)}\r\n\r\n`,
      /^HTTP\/1\.1 431 /,
      /request head exceeds 65536 bytes/,
    ],
    [
      'SOCKS5 bad address type',
      Buffer.from([5, 1, 0, 5, 1, 0, 9, 0, 0]),
      /^\x05\x00\x05\x08/,
      /address type 9/,
    ],
    ['SOCKS4', Buffer.from([4, 1, 0, 80, 127, 0, 0, 1, 0]), /^\x00\x5b/, /SOCKS4 is not supported/],
  ];
  for (const [name, bytes, response, reason] of cases) {
    it(name, async () => {
      const harness = await startProxy(['*.test']);
      const text = await raw(harness.socketPath, bytes);
      assert.match(text, response);
      const event = await lastEvent(harness);
      assert.equal(event.verdict, 'deny');
      assert.match(event.rule, /^(malformed|unsupported)$/);
      assert.match(event.reason, reason);
      assert.deepEqual(harness.resolverCalls, []);
      assert.doesNotMatch(event.message, /:\d+:\d+ /, 'the port is not repeated');
      await harness.close();
    });
  }

  it('Upgrade requests are refused with 501', async () => {
    const harness = await startProxy(['*.test']);
    const text = await raw(
      harness.socketPath,
      'GET http://x.test/ HTTP/1.1\r\nHost: x.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    );
    assert.match(text, /^HTTP\/1\.1 501 /);
    assert.equal((await lastEvent(harness)).rule, 'unsupported');
    await harness.close();
  });

  it('a client that never finishes its request head is cut after the handshake timeout', async () => {
    const harness = await startProxy(['*.test'], { handshakeTimeoutMs: 300 });
    const socks = await connectUnix(harness.socketPath);
    const socksClosed = readAll(socks);
    socks.write(Buffer.from([5, 1, 0, 5, 1]));
    await socksClosed;
    const event = await lastEvent(harness);
    assert.equal(event.rule, 'malformed');
    assert.match(event.reason, /no complete SOCKS5 request within 300 ms/);

    const slow = await connectUnix(harness.socketPath);
    const slowText = readAll(slow);
    slow.write('GET http://x.test/ HTTP/1.1\r\nX-Slow: ');
    assert.match(await slowText, /^HTTP\/1\.1 408 [\s\S]*no complete request head within 300 ms/);
    assert.equal((await lastEvent(harness, 2)).rule, 'malformed');
    await harness.close();
  });
});

describe('EgressProxy: lifecycle, live policy, limits, hooks', () => {
  let origin: Awaited<ReturnType<typeof startOrigin>>;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  before(async () => {
    origin = await startOrigin();
    echo = await startEcho();
  });
  after(async () => {
    await origin.close();
    await echo.close();
  });

  it('setPolicy applies to new connections; open tunnels keep their decision', async () => {
    const harness = await startProxy([]);
    assert.equal((await proxyGet(harness.socketPath, `http://127.0.0.1:${origin.port}/`)).status, 403);

    harness.proxy.setPolicy(policy([`127.0.0.1:${origin.port}`, `127.0.0.1:${echo.port}`]));
    assert.equal((await proxyGet(harness.socketPath, `http://127.0.0.1:${origin.port}/`)).status, 200);
    const { code, socket } = await socks5(harness.socketPath, { ipv4: '127.0.0.1' }, echo.port);
    assert.equal(code, 0);

    harness.proxy.setPolicy(policy([]));
    assert.equal(await echoRoundTrip(socket, 'still'), 'still', 'the open tunnel is not re-judged');
    assert.equal((await proxyGet(harness.socketPath, `http://127.0.0.1:${origin.port}/`)).status, 403);
    await closeSocket(socket);
    await harness.close();
  });

  it('close() cuts open tunnels, reports them, and unlinks the socket', async () => {
    const harness = await startProxy([`127.0.0.1:${echo.port}`]);
    const tunnel = await proxyConnect(harness.socketPath, `127.0.0.1:${echo.port}`);
    assert.equal(tunnel.status, 200);
    assert.equal(await echoRoundTrip(tunnel.socket, 'abc'), 'abc');
    const cut = new Promise<void>((resolve) => tunnel.socket.once('close', () => resolve()));
    tunnel.socket.on('error', () => {});
    await harness.close();
    await cut;
    assert.equal(existsSync(harness.socketPath), false);
    assert.equal(harness.events.length, 1, 'the open tunnel was reported when it was cut');
    assert.equal(harness.events[0]!.error, 'proxy-closed');
    assert.equal(harness.events[0]!.bytesUp, 3);
    await assert.rejects(connectUnix(harness.socketPath), /ENOENT|ECONNREFUSED/);
    await harness.proxy.close(); // idempotent
  });

  it('refuses connections beyond maxConnections with 503', async () => {
    const harness = await startProxy([`127.0.0.1:${echo.port}`], { maxConnections: 2 });
    const first = await socks5(harness.socketPath, { ipv4: '127.0.0.1' }, echo.port);
    const second = await socks5(harness.socketPath, { ipv4: '127.0.0.1' }, echo.port);
    assert.equal(first.code, 0);
    assert.equal(second.code, 0);
    await waitFor(() => harness.proxy.connections === 2 || undefined, 'two connections');
    const third = await proxyGet(harness.socketPath, `http://127.0.0.1:${echo.port}/`);
    assert.equal(third.status, 503);
    assert.match(third.body, /too many concurrent connections through the egress proxy \(limit 2\)/);
    assert.equal((await lastEvent(harness)).rule, 'connection-limit');
    first.socket.destroy();
    second.socket.destroy();
    await harness.close();
  });

  it('listen() on a path that is taken fails with a clear error', async () => {
    const harness = await startProxy([]);
    const clash = new EgressProxy({
      execution: 'ex_clash',
      socketPath: harness.socketPath,
      policy: policy([]),
      onDecision: () => {},
    });
    await assert.rejects(clash.listen(), /egress proxy cannot listen on .*EADDRINUSE/);
    await harness.close();
  });

  it('a hook failure or an unsendable head is a 5xx for that request, not a crash', async () => {
    let mode: 'throw' | 'bad-header' = 'throw';
    const harness = await startProxy([`127.0.0.1:${origin.port}`], {
      rewriteHttpRequest: (head) => {
        if (mode === 'throw') throw new Error('secret store unavailable');
        return { ...head, headers: [...head.headers, ['X-Bad', 'line\r\nInjected: 1']] };
      },
    });
    const thrown = await proxyGet(harness.socketPath, `http://127.0.0.1:${origin.port}/`);
    assert.equal(thrown.status, 502);
    assert.match(thrown.body, /secret store unavailable/);
    mode = 'bad-header';
    const bad = await proxyGet(harness.socketPath, `http://127.0.0.1:${origin.port}/`);
    assert.equal(bad.status, 500);
    await waitFor(() => harness.events.length === 2 || undefined, 'two events');
    assert.match(harness.events[1]!.error ?? '', /^internal: .*X-Bad/);
    assert.equal(origin.seen.filter((seen) => seen.headers.injected !== undefined).length, 0);
    assert.equal(
      (await proxyGet(harness.socketPath, `http://127.0.0.1:${origin.port}/`)).status,
      500,
      'still serving',
    );
    await harness.close();
  });

  it('the secrets hook sees allowed plain-HTTP heads only, and what it returns is sent', async () => {
    const heads: string[] = [];
    const harness = await startProxy([`127.0.0.1:${origin.port}`], {
      rewriteHttpRequest: (head) => {
        heads.push(`${head.method} ${head.host}:${head.port}${head.path}`);
        return {
          ...head,
          headers: head.headers.map(([name, value]) =>
            name.toLowerCase() === 'authorization'
              ? [name, value.replace('PLACEHOLDER', 'real-value')]
              : [name, value],
          ),
        };
      },
    });
    const result = await proxyGet(harness.socketPath, `http://127.0.0.1:${origin.port}/api`, {
      headers: { Authorization: 'Bearer PLACEHOLDER' },
    });
    assert.equal((JSON.parse(result.body) as Seen).headers.authorization, 'Bearer real-value');
    assert.equal((await proxyGet(harness.socketPath, `http://127.0.0.1:${echo.port}/`)).status, 403);
    assert.deepEqual(heads, [`GET 127.0.0.1:${origin.port}/api`]);
    await harness.close();
  });

  it('the body hook: Content-Length bodies are buffered and replaced (length recomputed); chunked ones stream', async () => {
    const wanted: string[] = [];
    let rewrites = 0;
    let mode: 'rewrite' | 'decline' | 'throw' = 'rewrite';
    const harness = await startProxy([`127.0.0.1:${origin.port}`], {
      rewriteHttpRequest: (head) => ({ ...head, headers: [...head.headers, ['X-Head-Hook', 'ran']] }),
      rewriteHttpBody: {
        wants: (head) => {
          wanted.push(head.headers.find(([name]) => name === 'X-Head-Hook')?.[1] ?? 'head hook missing');
          return mode !== 'decline';
        },
        rewrite: async (head, body) => {
          rewrites++;
          if (mode === 'throw') throw new Error('body hook failed');
          // Returns the head untouched (stale Content-Length): the proxy sets it from the body it sends.
          return {
            head,
            body: Buffer.from(body.toString('latin1').replace('PLACEHOLDER', 'real-value-longer')),
          };
        },
      },
    });
    const url = `http://127.0.0.1:${origin.port}/body`;
    const post = (body: string) =>
      proxyGet(harness.socketPath, url, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body });

    const rewritten = JSON.parse((await post('key=PLACEHOLDER')).body) as Seen;
    assert.equal(rewritten.body, 'key=real-value-longer');
    assert.equal(rewritten.headers['content-length'], String('key=real-value-longer'.length));
    assert.equal(rewritten.rawHeaders.filter((name) => name.toLowerCase() === 'content-length').length, 1);
    assert.deepEqual(wanted, ['ran'], 'asked after the head hook, with its head');
    assert.equal(rewrites, 1);

    mode = 'decline';
    const declined = JSON.parse((await post('key=PLACEHOLDER')).body) as Seen;
    assert.equal(declined.body, 'key=PLACEHOLDER');
    assert.equal(declined.headers['content-length'], '15');
    assert.equal(rewrites, 1, 'a declined body is never handed over');

    // Byte counts are what went on the wire: the same request, 6 bytes longer (same Content-Length digit count).
    await waitFor(() => harness.events.length === 2 || undefined, 'two events');
    assert.equal(harness.events[0]!.bytesUp - harness.events[1]!.bytesUp, 6);

    mode = 'rewrite';
    const chunked = await new Promise<Seen>((resolve, reject) => {
      const req = http.request({ socketPath: harness.socketPath, path: url, method: 'PUT' });
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => resolve(JSON.parse(body) as Seen));
      });
      req.on('error', reject);
      req.write('key=PLACE');
      setImmediate(() => req.end('HOLDER'));
    });
    assert.equal(chunked.headers['transfer-encoding'], 'chunked');
    assert.equal(chunked.body, 'key=PLACEHOLDER', 'a chunked body streams unchanged');
    assert.equal(wanted.length, 2, 'the hook is not even asked about a chunked body');
    assert.equal(rewrites, 1);

    const empty = JSON.parse((await proxyGet(harness.socketPath, url)).body) as Seen;
    assert.equal(empty.body, '');
    assert.equal(wanted.length, 2, 'nor about a request without a body');

    mode = 'throw';
    const refused = await post('key=PLACEHOLDER');
    assert.equal(refused.status, 502);
    assert.match(refused.body, /body hook failed/);
    await waitFor(() => harness.events.length === 5 || undefined, 'five events');
    assert.match(harness.events[4]!.error ?? '', /^rewrite-failed: body hook failed/);
    assert.equal(origin.seen.filter((seen) => seen.url === '/body').length, 4, 'the refused body never left');
    await harness.close();
  });
});

// ---------------------------------------------------------------------------------------------------------------
// TLS upgrade for bound hosts (the secrets hook's HTTPS path).

const OPENSSL = ['/usr/bin/openssl', '/usr/local/bin/openssl', '/bin/openssl'].find((path) =>
  existsSync(path),
);

/** A self-signed certificate for `name` made with the openssl CLI (also used as its own trust anchor). */
async function selfSigned(dir: string, name: string): Promise<{ key: string; cert: string }> {
  const keyPath = join(dir, `${name}.key`);
  const certPath = join(dir, `${name}.crt`);
  await new Promise<void>((resolve, reject) =>
    execFile(
      OPENSSL!,
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        keyPath,
        '-out',
        certPath,
        '-days',
        '1',
        '-subj',
        `/CN=${name}`,
        '-addext',
        `subjectAltName=DNS:${name}`,
      ],
      (error) => (error ? reject(error) : resolve()),
    ),
  );
  return { key: readFileSync(keyPath, 'utf8'), cert: readFileSync(certPath, 'utf8') };
}

/** An HTTPS origin on 127.0.0.1 that records the requests it receives. */
async function startTlsOrigin(credentials: { key: string; cert: string }) {
  const seen: Seen[] = [];
  const server = https.createServer(credentials, (req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      const record = {
        method: req.method!,
        url: req.url!,
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body,
      };
      seen.push(record);
      res.writeHead(200, { 'Content-Type': 'application/json', 'X-Over': 'tls' });
      res.end(JSON.stringify(record));
    });
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    seen,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('EgressProxy: TLS upgrade for hosts bound to a secret', {
  skip: OPENSSL ? false : 'no openssl CLI',
}, () => {
  const VALUE = 'sk-real-value-tls-0123456789';
  const PLACEHOLDER = makePlaceholder('API_KEY', '0123456789abcdef0123456789abcdef');
  const certDir = mkdtempSync(join(tmpdir(), 'aegis-tls-'));
  let good: Awaited<ReturnType<typeof startTlsOrigin>>;
  let wrongName: Awaited<ReturnType<typeof startTlsOrigin>>;
  let plain: Awaited<ReturnType<typeof startOrigin>>;
  let ca: string[];

  before(async () => {
    const api = await selfSigned(certDir, 'api.test');
    const other = await selfSigned(certDir, 'other.test');
    ca = [api.cert, other.cert]; // both trusted: the wrong-name server fails on the name alone
    good = await startTlsOrigin(api);
    wrongName = await startTlsOrigin(other);
    plain = await startOrigin();
  });
  after(async () => {
    await good?.close();
    await wrongName?.close();
    await plain?.close();
    rmSync(certDir, { recursive: true, force: true });
  });

  function secretsProxy(extraAllow: string[] = []) {
    const compiled = compileSecretBindings(
      SecretRefs.parse([{ name: 'API_KEY', env: 'API_KEY', hosts: ['api.test', 'wrong.test'] }]),
    );
    if (!compiled.ok) assert.fail('bindings');
    const uses: SecretUse[] = [];
    const rewriter = new HttpSecretRewriter({
      bindings: compiled.bindings,
      placeholders: new Map<string, PlaceholderEntry>([[PLACEHOLDER, { name: 'API_KEY', value: VALUE }]]),
      onSecretUse: (use) => uses.push(use),
    });
    return {
      uses,
      start: () =>
        startProxy(
          [
            `127.0.0.1/32:${good.port}`,
            `127.0.0.1/32:${wrongName.port}`,
            `127.0.0.1/32:${plain.port}`,
            ...extraAllow,
          ],
          {
            names: { 'api.test': ['127.0.0.1'], 'wrong.test': ['127.0.0.1'], 'plain.test': ['127.0.0.1'] },
            rewriteHttpRequest: rewriter.rewriteHead,
            rewriteHttpBody: rewriter.bodyHook,
            upgradeHttpToTls: rewriter.upgradesToTls,
            tlsCa: ca,
          },
        ),
    };
  }

  it('an http:// request to a bound name is injected and sent over verified TLS', async () => {
    const { uses, start } = secretsProxy();
    const harness = await start();
    const body = JSON.stringify({ key: PLACEHOLDER });
    const result = await proxyGet(harness.socketPath, `http://api.test:${good.port}/v1/x?k=${PLACEHOLDER}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${PLACEHOLDER}`, 'Content-Type': 'application/json' },
      body,
    });
    assert.equal(result.status, 200, result.body);
    assert.equal(result.headers['x-over'], 'tls');
    assert.equal(good.seen.length, 1);
    const seen = good.seen[0]!;
    assert.equal(seen.headers.authorization, `Bearer ${VALUE}`);
    assert.equal(seen.url, `/v1/x?k=${VALUE}`);
    assert.deepEqual(JSON.parse(seen.body), { key: VALUE });
    assert.equal(seen.headers.host, `api.test:${good.port}`);
    assert.ok(uses.length > 0 && uses.every((use) => use.injected && use.port === good.port));
    const event = await lastEvent(harness);
    assert.equal(event.verdict, 'allow');
    assert.equal(event.port, good.port);
    assert.equal(event.error, undefined);
    await harness.close();
  });

  it('a certificate that does not match the name: 502, error tls: …, and the server never sees a request', async () => {
    const { start } = secretsProxy();
    const harness = await start();
    const result = await proxyGet(harness.socketPath, `http://wrong.test:${wrongName.port}/v1/x`, {
      headers: { Authorization: `Bearer ${PLACEHOLDER}` },
    });
    assert.equal(result.status, 502);
    assert.match(result.body, /TLS to wrong\.test:\d+ .*failed, nothing was sent/);
    assert.ok(!result.body.includes(VALUE));
    const event = await lastEvent(harness);
    assert.match(event.error ?? '', /^tls: /);
    assert.equal(wrongName.seen.length, 0);
    await harness.close();
  });

  it('unbound plain-HTTP requests are not upgraded (and carry no value)', async () => {
    const { uses, start } = secretsProxy();
    const harness = await start();
    const result = await proxyGet(harness.socketPath, `http://plain.test:${plain.port}/`, {
      headers: { Authorization: `Bearer ${PLACEHOLDER}` },
    });
    assert.equal(result.status, 200, result.body);
    assert.equal((JSON.parse(result.body) as Seen).headers.authorization, `Bearer ${PLACEHOLDER}`);
    assert.deepEqual(
      uses.map((use) => [use.injected, use.reason]),
      [[false, 'unbound-host']],
    );
    assert.equal((await lastEvent(harness)).port, plain.port);
    await harness.close();
  });

  it('the default port 80 is upgraded to 443, and the policy is evaluated against host:443', async () => {
    const asked: string[] = [];
    const harness = await startProxy([`127.0.0.1/32:80`], {
      names: { 'api.test': ['127.0.0.1'] },
      upgradeHttpToTls: ({ host, port }) => {
        asked.push(`${host}:${port}`);
        return true;
      },
    });
    const result = await proxyGet(harness.socketPath, 'http://api.test/v1/x');
    assert.equal(result.status, 403);
    assert.deepEqual(asked, ['api.test:443']);
    const event = await lastEvent(harness);
    assert.equal(event.verdict, 'deny');
    assert.equal(event.port, 443);
    await harness.close();
  });
});

describe('EgressProxy with curl', {
  skip: hasCurl() ? false : 'curl is not installed (apt-get install curl)',
}, () => {
  let origin: Awaited<ReturnType<typeof startOrigin>>;
  let harness: Harness;
  let forwarder: Awaited<ReturnType<typeof startForwarder>>;
  let unlistedPort: number;
  before(async () => {
    origin = await startOrigin();
    unlistedPort = await closedPort();
    harness = await startProxy([`127.0.0.1:${origin.port}`], { names: { 'ten.test': ['10.0.0.1'] } });
    forwarder = await startForwarder(harness.socketPath);
  });
  after(async () => {
    await forwarder.close();
    await harness.close();
    await origin.close();
  });

  it('HTTP proxy (-x http://…): allowed, and 403 with the reason for an unlisted port', async () => {
    const proxy = `http://127.0.0.1:${forwarder.port}`;
    const ok = await curl(['-x', proxy, `http://127.0.0.1:${origin.port}/curl`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((JSON.parse(ok.stdout) as Seen).url, '/curl');
    const denied = await curl(['-x', proxy, '-w', '%{http_code}', `http://127.0.0.1:${unlistedPort}/`]);
    assert.equal(
      denied.stdout,
      `network: denied connect to 127.0.0.1:${unlistedPort} — not in allow-list\n403`,
    );
  });

  it('CONNECT (-p): allowed, refused for an unlisted port', async () => {
    const proxy = `http://127.0.0.1:${forwarder.port}`;
    const ok = await curl(['-p', '-x', proxy, `http://127.0.0.1:${origin.port}/tunnel`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((JSON.parse(ok.stdout) as Seen).url, '/tunnel');
    const denied = await curl(['-p', '-x', proxy, `http://127.0.0.1:${unlistedPort}/`]);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /403/);
  });

  it('serve(): a TCP listener handed to the proxy works without any forwarder', async () => {
    const served = await startProxy([`127.0.0.1:${origin.port}`]);
    const listener = net.createServer({ allowHalfOpen: true });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    served.proxy.serve(listener);
    const port = (listener.address() as net.AddressInfo).port;
    const viaHttp = await curl(['-x', `http://127.0.0.1:${port}`, `http://127.0.0.1:${origin.port}/served`]);
    assert.equal(viaHttp.code, 0, viaHttp.stderr);
    const viaSocks = await curl([
      '-x',
      `socks5h://127.0.0.1:${port}`,
      `http://127.0.0.1:${origin.port}/served`,
    ]);
    assert.equal(viaSocks.code, 0, viaSocks.stderr);
    await waitFor(() => served.events.length === 2 || undefined, 'two events');
    assert.deepEqual(
      served.events.map((event) => `${event.protocol} ${event.verdict}`),
      ['http allow', 'socks5 allow'],
    );
    await served.close();
    assert.equal(listener.listening, false, 'close() closes served listeners');
  });

  it('SOCKS5 straight to the unix socket (socks5h://localhost/path)', async () => {
    const proxy = `socks5h://localhost${harness.socketPath}`;
    const ok = await curl(['-x', proxy, `http://127.0.0.1:${origin.port}/socks`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((JSON.parse(ok.stdout) as Seen).url, '/socks');
    const denied = await curl(['-x', proxy, `http://ten.test:${origin.port}/`]);
    assert.equal(denied.code, 97);
    assert.match(denied.stderr, /not allowed by ruleset|SOCKS5 connection to ten\.test\. \(2\)/);
    const unlisted = await curl(['-x', proxy, `http://127.0.0.1:${unlistedPort}/`]);
    assert.equal(unlisted.code, 97);
  });
});
