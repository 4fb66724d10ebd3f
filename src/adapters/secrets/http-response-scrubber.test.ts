import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';
import { pollUntil } from '../../../test/support/poll.ts';
import { compileNetworkPolicy } from '../../domain/policy/network-rules.ts';
import { makePlaceholder, type PlaceholderEntry } from '../../domain/secrets/placeholder.ts';
import { type EgressDecisionEvent, EgressProxy } from '../egress/proxy.ts';
import { HttpSecretScrubber } from './http-response-scrubber.ts';
import type { SecretUse } from './http-secret-rewriter.ts';

const VALUE = 'sk-real-value-0123456789/+=';
const PLACEHOLDER = makePlaceholder('KEY', '0123456789abcdef0123456789abcdef');

/** The body of a raw HTTP/1.1 response, de-chunked when it is chunked. */
function bodyOf(response: string): string {
  const split = response.indexOf('\r\n\r\n');
  const head = response.slice(0, split);
  let rest = response.slice(split + 4);
  if (!/transfer-encoding: chunked/i.test(head)) return rest;
  let body = '';
  for (;;) {
    const line = rest.indexOf('\r\n');
    const size = Number.parseInt(rest.slice(0, line), 16);
    if (!(size > 0)) return body;
    body += rest.slice(line + 2, line + 2 + size);
    rest = rest.slice(line + 2 + size + 2);
  }
}

interface Seen {
  readonly acceptEncoding: string | undefined;
}

/** Raw response of one proxied request, read off the socket (so framing is visible). */
function rawRequest(socketPath: string, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    const chunks: Buffer[] = [];
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.on('error', reject);
    socket.write(head);
  });
}

describe('HttpSecretScrubber through a real EgressProxy', () => {
  const root = mkdtempSync(join(tmpdir(), 'aegis-scrub-'));
  const seen: Seen[] = [];
  const uses: SecretUse[] = [];
  const decisions: EgressDecisionEvent[] = [];
  let origin: http.Server;
  let proxy: EgressProxy;
  let port = 0;
  const socketPath = join(root, 'proxy.sock');

  before(async () => {
    origin = http.createServer((req, res) => {
      seen.push({ acceptEncoding: req.headers['accept-encoding'] });
      const body = Buffer.from(`token=${VALUE} hex=${Buffer.from(VALUE).toString('hex')}`);
      const route = req.url ?? '';
      if (route === '/plain') res.writeHead(200, { 'Content-Length': body.length, 'Content-MD5': 'x' });
      else if (route === '/gzip') {
        res.writeHead(200, { 'Content-Encoding': 'gzip' });
        res.end(zlib.gzipSync(body));
        return;
      } else if (route === '/corrupt') {
        res.writeHead(200, { 'Content-Encoding': 'gzip' });
        res.end(Buffer.concat([zlib.gzipSync(body).subarray(0, 12), Buffer.from(VALUE)]));
        return;
      } else if (route === '/unknown') res.writeHead(200, { 'Content-Encoding': 'x-secret-sauce' });
      else if (route === '/head') res.writeHead(200, { 'Content-Length': '12345', 'X-Echo': VALUE });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
    await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
    port = (origin.address() as net.AddressInfo).port;
    const policy = compileNetworkPolicy({ allow: [`127.0.0.1:${port}`] });
    if (!policy.ok) assert.fail('policy');
    proxy = new EgressProxy({
      execution: 'ex_scrub',
      socketPath,
      policy: policy.policy,
      onDecision: (event) => decisions.push(event),
      scrubHttpResponse: new HttpSecretScrubber({
        placeholders: new Map<string, PlaceholderEntry>([[PLACEHOLDER, { name: 'KEY', value: VALUE }]]),
        onSecretUse: (use) => uses.push(use),
      }),
    });
    await proxy.listen();
  });
  after(async () => {
    await proxy.close();
    origin.closeAllConnections();
    await new Promise<void>((resolve) => origin.close(() => resolve()));
    rmSync(root, { recursive: true, force: true });
  });

  const get = (path: string, method = 'GET', version = '1.1') =>
    rawRequest(
      socketPath,
      `${method} http://127.0.0.1:${port}${path} HTTP/${version}\r\nHost: 127.0.0.1:${port}\r\nAccept-Encoding: gzip, br\r\nConnection: close\r\n\r\n`,
    );
  const expectedBody = `token=${PLACEHOLDER} hex=${PLACEHOLDER}`;

  it('replaces the value with its placeholder and re-frames the body (chunked, no stale Content-Length)', async () => {
    const response = await get('/plain');
    assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
    assert.doesNotMatch(response, /content-length|content-md5/i);
    assert.match(response, /Transfer-Encoding: chunked/i);
    assert.equal(bodyOf(response), expectedBody);
    assert.equal(seen.at(-1)?.acceptEncoding, 'identity', 'asks upstream for an unencoded body');
    assert.deepEqual(uses.at(-1), {
      name: 'KEY',
      host: '127.0.0.1',
      port,
      injected: false,
      where: 'response',
      reason: 'reflected',
    });
  });

  it('an HTTP/1.0 client gets the body delimited by the close', async () => {
    const response = await get('/plain', 'GET', '1.0');
    assert.ok(response.endsWith(`\r\n\r\n${expectedBody}`), response);
  });

  it('decodes a gzip body the server sent anyway, and forwards it decoded', async () => {
    const response = await get('/gzip');
    assert.doesNotMatch(response, /content-encoding/i);
    assert.equal(bodyOf(response), expectedBody);
  });

  it('HEAD keeps its framing headers; header values are scrubbed', async () => {
    const response = await get('/head', 'HEAD');
    assert.match(response, /Content-Length: 12345/i);
    assert.match(response, new RegExp(`X-Echo: ${PLACEHOLDER}`, 'i'));
    assert.ok(!response.includes(VALUE));
  });

  it('refuses a body in a coding it cannot decode, with 502 and an audited error', async () => {
    const response = await get('/unknown');
    assert.match(response, /^HTTP\/1\.1 502 /);
    assert.match(response, /Content-Encoding "x-secret-sauce"/);
    assert.ok(!response.includes(VALUE));
    await pollUntil('the refusal event', () =>
      decisions.some((d) => d.error === 'unscrubbable-encoding: x-secret-sauce'),
    );
  });

  it('cuts a corrupt compressed body instead of forwarding its bytes', async () => {
    const response = await get('/corrupt');
    assert.ok(!response.includes(VALUE), response);
    await pollUntil('the decode error event', () =>
      decisions.some((d) => d.error?.startsWith('bad-encoding: gzip') === true),
    );
  });
});
