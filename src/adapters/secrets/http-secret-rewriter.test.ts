import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { compileNetworkPolicy } from '../../domain/policy/network-rules.ts';
import { makePlaceholder, type PlaceholderEntry } from '../../domain/secrets/placeholder.ts';
import { compileSecretBindings, SecretRefs } from '../../domain/secrets/secret-ref.ts';
import { EgressProxy, type HttpRequestHead } from '../egress/proxy.ts';
import { HttpSecretRewriter, type SecretUse } from './http-secret-rewriter.ts';

const VALUE = 'sk-real-value-0123456789';
const OTHER_VALUE = 'other-real-value-abcdef';
const PLACEHOLDER = makePlaceholder('OPENAI_KEY', '0123456789abcdef0123456789abcdef');
const OTHER = makePlaceholder('OTHER_KEY', 'fedcba9876543210fedcba9876543210');

function setup(options: { allowCleartext?: boolean; maxBodyBytes?: number; value?: string } = {}) {
  const compiled = compileSecretBindings(
    SecretRefs.parse([
      { name: 'OPENAI_KEY', env: 'OPENAI_API_KEY', hosts: ['bound.test', '127.0.0.1'] },
      { name: 'OTHER_KEY', env: 'OTHER', hosts: ['other.test'] },
    ]),
  );
  if (!compiled.ok) assert.fail('bindings');
  const uses: SecretUse[] = [];
  const placeholders = new Map<string, PlaceholderEntry>([
    [PLACEHOLDER, { name: 'OPENAI_KEY', value: options.value ?? VALUE }],
    [OTHER, { name: 'OTHER_KEY', value: OTHER_VALUE }],
  ]);
  const rewriter = new HttpSecretRewriter({
    bindings: compiled.bindings,
    placeholders,
    onSecretUse: (use) => uses.push(use),
    ...(options.maxBodyBytes !== undefined ? { maxBodyBytes: options.maxBodyBytes } : {}),
    ...(options.allowCleartext ? { allowCleartext: () => true } : {}),
  });
  return { rewriter, uses };
}

function head(host: string, headers: [string, string][], path = '/v1/chat'): HttpRequestHead {
  return { method: 'POST', host, port: 80, path, headers: [['Host', host], ...headers] };
}

describe('HttpSecretRewriter', () => {
  it('injects into headers and the query toward a bound host, and reports it', async () => {
    const { rewriter, uses } = setup({ allowCleartext: true });
    const out = await rewriter.rewriteHead(
      head('bound.test', [['Authorization', `Bearer ${PLACEHOLDER}`]], `/v1?key=${PLACEHOLDER}&x=1`),
    );
    assert.deepEqual(out.headers[1], ['Authorization', `Bearer ${VALUE}`]);
    assert.equal(out.path, `/v1?key=${encodeURIComponent(VALUE)}&x=1`);
    assert.deepEqual(uses, [
      { name: 'OPENAI_KEY', host: 'bound.test', port: 80, injected: true, where: 'header' },
      { name: 'OPENAI_KEY', host: 'bound.test', port: 80, injected: true, where: 'path' },
    ]);
  });

  it('forwards placeholders unchanged toward other hosts and reports the attempt', async () => {
    const { rewriter, uses } = setup({ allowCleartext: true });
    const input = head('evil.test', [
      ['Authorization', `Bearer ${PLACEHOLDER}`],
      ['X-Other', OTHER],
    ]);
    const out = await rewriter.rewriteHead(input);
    assert.deepEqual(out.headers, input.headers);
    assert.deepEqual(
      uses.map((use) => [use.name, use.injected, use.reason]),
      [
        ['OPENAI_KEY', false, 'unbound-host'],
        ['OTHER_KEY', false, 'unbound-host'],
      ],
    );
    // A secret bound elsewhere is not injected toward this bound host either.
    uses.length = 0;
    const mixed = await rewriter.rewriteHead(head('bound.test', [['X', `${PLACEHOLDER} ${OTHER}`]]));
    assert.equal(mixed.headers[1]![1], `${VALUE} ${OTHER}`);
    assert.deepEqual(
      uses.map((use) => [use.name, use.injected]),
      [
        ['OPENAI_KEY', true],
        ['OTHER_KEY', false],
      ],
    );
    assert.ok(!JSON.stringify(uses).includes(VALUE));
  });

  it('refuses to put a value on the wire in cleartext unless the destination is local or allowed', async () => {
    const { rewriter, uses } = setup();
    await assert.rejects(
      async () => rewriter.rewriteHead(head('bound.test', [['Authorization', PLACEHOLDER]])),
      (error: Error) => /unencrypted/.test(error.message) && !error.message.includes(VALUE),
    );
    assert.deepEqual(
      uses.map((use) => [use.name, use.injected, use.reason]),
      [['OPENAI_KEY', false, 'cleartext']],
    );
    const local = await rewriter.rewriteHead(head('127.0.0.1', [['Authorization', PLACEHOLDER]]));
    assert.equal(local.headers[1]![1], VALUE);
  });

  it('upgrades bound names to TLS (not local literals or unbound hosts) and injects into upgraded heads', async () => {
    const { rewriter, uses } = setup();
    assert.equal(rewriter.upgradesToTls({ host: 'bound.test', port: 443 }), true);
    assert.equal(rewriter.upgradesToTls({ host: '127.0.0.1', port: 443 }), false); // local: plain HTTP as before
    assert.equal(rewriter.upgradesToTls({ host: 'unbound.test', port: 443 }), false);
    assert.equal(
      setup({ allowCleartext: true }).rewriter.upgradesToTls({ host: 'bound.test', port: 443 }),
      false,
    );
    const upgraded = await rewriter.rewriteHead({
      ...head('bound.test', [['Authorization', PLACEHOLDER]]),
      port: 443,
      tls: true,
    });
    assert.equal(upgraded.headers[1]![1], VALUE);
    assert.deepEqual(
      uses.map((use) => [use.name, use.injected, use.port]),
      [['OPENAI_KEY', true, 443]],
    );
  });

  it('refuses a value with a line break in a header (no header injection), without quoting it', async () => {
    const { rewriter } = setup({ allowCleartext: true, value: 'abc\r\nX-Evil: 1' });
    await assert.rejects(
      async () => rewriter.rewriteHead(head('bound.test', [['Authorization', PLACEHOLDER]])),
      (error: Error) => /line break/.test(error.message) && !error.message.includes('X-Evil'),
    );
  });

  it('rewrites Content-Length bodies (JSON-escaped, form-encoded, raw) and recomputes Content-Length', () => {
    const { rewriter, uses } = setup({ allowCleartext: true, value: 'v"al\\ué' });
    const cases: [string, string, (value: string) => string][] = [
      [
        'application/json',
        `{"key":"${PLACEHOLDER}","other":"${OTHER}"}`,
        (v) => JSON.stringify(v).slice(1, -1),
      ],
      ['application/x-www-form-urlencoded', `key=${PLACEHOLDER}&other=${OTHER}`, encodeURIComponent],
      ['text/plain', `key=${PLACEHOLDER} other=${OTHER}`, (v) => v],
    ];
    for (const [type, text, encode] of cases) {
      const body = Buffer.from(text);
      const input = head('bound.test', [
        ['Content-Type', type],
        ['Content-Length', String(body.length)],
      ]);
      assert.equal(rewriter.wantsBody(input), true);
      const out = rewriter.rewriteBody(input, body);
      const expected = Buffer.from(text.replace(PLACEHOLDER, encode('v"al\\ué')));
      assert.deepEqual(out.body, expected, type);
      assert.equal(out.head.headers.find(([name]) => name === 'Content-Length')![1], String(expected.length));
      if (type === 'application/json') {
        assert.deepEqual(JSON.parse(out.body.toString()), { key: 'v"al\\ué', other: OTHER });
      }
    }
    assert.ok(uses.some((use) => use.where === 'body' && use.injected && use.name === 'OPENAI_KEY'));
    assert.ok(uses.some((use) => use.where === 'body' && !use.injected && use.name === 'OTHER_KEY'));
  });

  it('leaves oversized, compressed and chunked bodies alone but reports placeholders in them', () => {
    const { rewriter, uses } = setup({ allowCleartext: true, maxBodyBytes: 16 });
    const body = Buffer.from(`key=${PLACEHOLDER}`);
    const big = head('bound.test', [['Content-Length', String(body.length)]]);
    assert.equal(rewriter.wantsBody(big), false);
    assert.equal(rewriter.rewriteBody(big, body).body, body);
    const chunked = head('bound.test', [['Transfer-Encoding', 'chunked']]);
    assert.equal(rewriter.wantsBody(chunked), false);
    assert.deepEqual(
      uses.map((use) => [use.name, use.injected, use.reason]),
      [['OPENAI_KEY', false, 'body-not-rewritable']],
    );
  });
});

describe('HttpSecretRewriter through a real EgressProxy', () => {
  const root = mkdtempSync(join(tmpdir(), 'aegis-secret-proxy-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  it('the origin sees the value only when reached as the bound host', async () => {
    const seen: { host: string | undefined; authorization: string | undefined; url: string }[] = [];
    const origin = http.createServer((req, res) => {
      seen.push({ host: req.headers.host, authorization: req.headers.authorization, url: req.url! });
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
    const port = (origin.address() as net.AddressInfo).port;
    const compiledPolicy = compileNetworkPolicy({ allow: [`127.0.0.1:${port}`] });
    if (!compiledPolicy.ok) assert.fail('policy');
    const { rewriter, uses } = setup({ allowCleartext: true });
    const socketPath = join(root, 'proxy.sock');
    const proxy = new EgressProxy({
      execution: 'ex_secret',
      socketPath,
      policy: compiledPolicy.policy,
      onDecision: () => {},
      // Every test name resolves to the loopback origin; the IP allow rule unlocks exactly that address.
      resolve: async () => ['127.0.0.1'],
      rewriteHttpRequest: rewriter.rewriteHead,
    });
    await proxy.listen();
    const get = (host: string) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request({
          socketPath,
          path: `http://${host}:${port}/v1?k=${PLACEHOLDER}`,
          headers: { Authorization: `Bearer ${PLACEHOLDER}` },
          agent: false,
        });
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        });
        req.on('error', reject);
        req.end();
      });
    try {
      assert.equal(await get('bound.test'), 200);
      assert.equal(await get('evil.test'), 200);
      assert.equal(await get('other.test'), 200);
    } finally {
      await proxy.close();
      await new Promise<void>((resolve) => origin.close(() => resolve()));
    }
    assert.deepEqual(
      seen.map((request) => [request.host, request.authorization, request.url]),
      [
        [`bound.test:${port}`, `Bearer ${VALUE}`, `/v1?k=${encodeURIComponent(VALUE)}`],
        [`evil.test:${port}`, `Bearer ${PLACEHOLDER}`, `/v1?k=${PLACEHOLDER}`],
        [`other.test:${port}`, `Bearer ${PLACEHOLDER}`, `/v1?k=${PLACEHOLDER}`],
      ],
    );
    assert.deepEqual(
      uses.map((use) => `${use.name}@${use.host}:${use.where}:${use.injected}`),
      [
        'OPENAI_KEY@bound.test:header:true',
        'OPENAI_KEY@bound.test:path:true',
        'OPENAI_KEY@evil.test:header:false',
        'OPENAI_KEY@evil.test:path:false',
        'OPENAI_KEY@other.test:header:false',
        'OPENAI_KEY@other.test:path:false',
      ],
    );
  });

  it('bodyHook: form bodies up to the cap reach the bound origin rewritten; chunked and oversized ones stream', async () => {
    const seen: { length: string | undefined; body: string }[] = [];
    const origin = http.createServer((req, res) => {
      let body = '';
      req.setEncoding('latin1');
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        seen.push({ length: req.headers['content-length'], body });
        res.end('ok');
      });
    });
    await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
    const port = (origin.address() as net.AddressInfo).port;
    const compiledPolicy = compileNetworkPolicy({ allow: [`127.0.0.1:${port}`] });
    if (!compiledPolicy.ok) assert.fail('policy');
    const { rewriter, uses } = setup({ allowCleartext: true, maxBodyBytes: 200 });
    const socketPath = join(root, 'proxy-body.sock');
    const proxy = new EgressProxy({
      execution: 'ex_secret_body',
      socketPath,
      policy: compiledPolicy.policy,
      onDecision: () => {},
      resolve: async () => ['127.0.0.1'],
      rewriteHttpRequest: rewriter.rewriteHead,
      rewriteHttpBody: rewriter.bodyHook,
    });
    await proxy.listen();
    const post = (host: string, body: string, chunked = false) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request({
          socketPath,
          method: 'POST',
          path: `http://${host}:${port}/v1`,
          headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
          agent: false,
        });
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        });
        req.on('error', reject);
        if (chunked) {
          req.write(body.slice(0, 5));
          setImmediate(() => req.end(body.slice(5)));
        } else req.end(body);
      });
    const form = `a=1&key=${PLACEHOLDER}`;
    const big = `${form}&pad=${'x'.repeat(300)}`;
    try {
      assert.equal(await post('bound.test', form), 200);
      assert.equal(await post('evil.test', form), 200);
      assert.equal(await post('bound.test', form, true), 200);
      assert.equal(await post('bound.test', big), 200);
    } finally {
      await proxy.close();
      await new Promise<void>((resolve) => origin.close(() => resolve()));
    }
    const injected = `a=1&key=${encodeURIComponent(VALUE)}`;
    assert.deepEqual(seen, [
      { length: String(Buffer.byteLength(injected)), body: injected },
      { length: String(form.length), body: form },
      { length: undefined, body: form },
      { length: String(big.length), body: big },
    ]);
    // Chunked and oversized bodies are never seen by the rewriter, so nothing is reported for them.
    assert.deepEqual(
      uses.map((use) => `${use.name}@${use.host}:${use.where}:${use.injected}`),
      ['OPENAI_KEY@bound.test:body:true', 'OPENAI_KEY@evil.test:body:false'],
    );
  });
});
