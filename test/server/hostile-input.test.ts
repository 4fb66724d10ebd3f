/**
 * Hostile API input (issue 9 item 8), through a real `aegis server`: a YAML alias bomb in a bundle, execution input
 * nested 10,000 deep and a 900 KB name are each a 400 with a located error — never a 500, never the server's paths,
 * never the hostile value echoed back whole. Then a small seeded fuzz: malformed bodies, params and queries on every
 * route must never yield a 5xx.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { ROUTES } from '../../src/api/http/routes.ts';
import {
  killServers,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

/** No error answer may be longer than this (the largest hostile value below is 900 KB). */
const MAX_ERROR_BODY_BYTES = 16 * 1024;

function tarGz(entries: { name: string; body: string }[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const archive = pack();
    const chunks: Buffer[] = [];
    archive.on('data', (c) => chunks.push(c as Buffer));
    archive.on('end', () => resolve(gzipSync(Buffer.concat(chunks))));
    archive.on('error', reject);
    for (const entry of entries) archive.entry({ name: entry.name }, entry.body);
    archive.finalize();
  });
}

const MANIFEST = (name: string) =>
  `apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: ${name} }\nspec:\n  runtime: { language: python, entrypoint: main.py }\n`;

/** The classic "billion laughs": 9 levels of 9 aliases each — 9^9 strings if expanded. */
function aliasBomb(): string {
  let yaml = MANIFEST('bomb');
  yaml += 'x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n';
  for (let i = 1; i < 9; i++)
    yaml += `x${i}: &a${i} [${Array(9)
      .fill(`*a${i - 1}`)
      .join(', ')}]\n`;
  return yaml;
}

/** A tiny deterministic PRNG (mulberry32), so a failing fuzz case can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('hostile API input', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;

  before(async () => {
    dirs = serverDirs();
    // A high key rate: the fuzz sends a few hundred requests and must see parse errors, not 429s.
    server = await startServerProcess({ dirs, args: ['--rate', '100000/s,burst=100000'] });
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    dirs?.cleanup();
  });

  async function send(
    method: string,
    path: string,
    body?: string | Uint8Array,
    contentType = 'application/json',
  ): Promise<{ status: number; text: string }> {
    const response = await fetch(`${server.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${server.adminKey}`,
        ...(body === undefined ? {} : { 'content-type': contentType }),
      },
      ...(body === undefined ? {} : { body }),
    });
    return { status: response.status, text: await response.text() };
  }

  /** A 4xx with a bounded body that shows none of the server's directories. */
  function assertCleanRefusal(
    what: string,
    response: { status: number; text: string },
    status: number,
  ): void {
    assert.equal(response.status, status, `${what}: ${response.text.slice(0, 500)}`);
    assert.ok(
      response.text.length <= MAX_ERROR_BODY_BYTES,
      `${what}: the error is ${response.text.length} bytes: ${response.text.slice(0, 300)}…`,
    );
    const base = dirs.home.replace(/\/home$/, '');
    assert.ok(!response.text.includes(base), `${what}: the answer shows a server path: ${response.text}`);
  }

  it('a YAML alias bomb in agent.yaml is a located 400, not a 500 with the bundle path', async () => {
    const bundle = await tarGz([
      { name: 'agent.yaml', body: aliasBomb() },
      { name: 'main.py', body: 'print(1)\n' },
    ]);
    const response = await send('POST', '/v1/agents', bundle, 'application/gzip');
    assertCleanRefusal('alias bomb', response, 400);
    const error = JSON.parse(response.text).error;
    assert.equal(error.code, 'MANIFEST_INVALID');
    assert.deepEqual(
      { file: error.details.problems[0].file, line: error.details.problems[0].line },
      { file: 'agent.yaml', line: 7 }, // x1, the first alias
    );
    assert.match(error.details.problems[0].message, /alias/);
  });

  it('execution input nested 10,000 deep is a located 400', async () => {
    const deployed = await send(
      'POST',
      '/v1/agents',
      await tarGz([
        { name: 'agent.yaml', body: MANIFEST('deep') },
        { name: 'main.py', body: 'print(1)\n' },
      ]),
      'application/gzip',
    );
    assert.equal(deployed.status, 201, deployed.text);
    const deep = `${'['.repeat(10_000)}1${']'.repeat(10_000)}`;
    const response = await send('POST', '/v1/executions', `{"agent":"deep","input":${deep}}`);
    assertCleanRefusal('10k-deep input', response, 400);
    const error = JSON.parse(response.text).error;
    assert.equal(error.code, 'USAGE');
    assert.match(error.message, /nested more than 100 levels/);
    assert.match(error.details.problems[0].path, /^input\[0\]\[0\]/);
    // Nothing was created for it.
    const listed = JSON.parse((await send('GET', '/v1/executions?agent=deep')).text);
    assert.deepEqual(listed.executions, []);
    // The same nesting inside an object body is no 500 on other routes either.
    const keys = await send('POST', '/v1/keys', `{"name":"k","scopes":${deep}}`);
    assertCleanRefusal('10k-deep key body', keys, 400);
  });

  it('a 900 KB name is refused without being echoed back whole', async () => {
    const huge = 'a'.repeat(900 * 1024);
    for (const [what, method, path, body] of [
      ['execution agent', 'POST', '/v1/executions', JSON.stringify({ agent: huge })],
      ['key name', 'POST', '/v1/keys', JSON.stringify({ name: huge, scopes: ['read'] })],
      ['rollback body', 'POST', '/v1/agents/deep/rollback', JSON.stringify({ to: huge })],
    ] as const) {
      const response = await send(method, path, body);
      assertCleanRefusal(what, response, 400);
      assert.ok(!response.text.includes('a'.repeat(2000)), `${what}: echoed a long run of the value`);
    }
    // In the URL too (Node's header limit caps it at 16 KB; the answer is bounded below that).
    const longPath = await send('GET', `/v1/agents/${'b'.repeat(8000)}`);
    assert.ok([400, 404, 414, 431].includes(longPath.status), longPath.text.slice(0, 300));
    assert.ok(
      longPath.text.length <= 4096,
      `long path echoed: ${longPath.text.length} bytes: ${longPath.text.slice(0, 600)}`,
    );
  });

  it('fuzz: malformed bodies, params and queries on every route never yield a 5xx', async () => {
    const random = prng(0x5eed);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const garbage = (n: number) =>
      Array.from({ length: n }, () => String.fromCharCode(Math.floor(random() * 0x2fff))).join('');
    const deep = (n: number) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`;
    const bodies: (() => string | Uint8Array)[] = [
      () => '',
      () => '{',
      () => 'null',
      () => '[]',
      () => '"string"',
      () => '12e999999',
      () => '{"__proto__": {"admin": true}}',
      () => '{"constructor": {"prototype": {"x": 1}}}',
      () => JSON.stringify({ agent: garbage(50), input: garbage(20) }),
      () => JSON.stringify({ agent: 'deep', input: { x: '\u0000\ud800' }, wait: -1 }),
      () => JSON.stringify({ name: garbage(20), scopes: [garbage(5)], rate: garbage(10) }),
      () => JSON.stringify({ to: -1 }),
      () => JSON.stringify({ to: 1e308 }),
      () => deep(5000),
      () => `{"agent": "${'x'.repeat(200_000)}"}`,
      () => Buffer.from(Array.from({ length: 512 }, () => Math.floor(random() * 256))),
      () => gzipSync(Buffer.from(garbage(300))),
      () => garbage(200),
    ];
    const params = [
      'x',
      '..',
      '%2e%2e%2f',
      '%00',
      'a'.repeat(300),
      'deep',
      'exe_00000000000000000000',
      '%ff%fe',
    ];
    const queries = [
      '',
      '?limit=-1',
      '?limit=1e9',
      '?cursor=%00',
      '?wait=9999h',
      '?follow=maybe',
      '?status=??',
    ];
    const contentTypes = [
      'application/json',
      'application/gzip',
      'text/plain',
      'application/json; charset=latin1',
    ];
    const failures: string[] = [];
    let requests = 0;
    for (const route of ROUTES) {
      // DELETE /v1/keys/:id and /v1/agents/:name only ever get garbage ids (never the admin key's or a real agent).
      for (let round = 0; round < 18; round++) {
        const path = route.path.replace(/:(\w+)/g, () =>
          encodeURIComponent(pick(params)).replace(/%25/g, '%'),
        );
        const url = `${path}${pick(queries)}`;
        const body = route.method === 'POST' ? pick(bodies)() : undefined;
        const response = await send(route.method, url, body, pick(contentTypes));
        requests++;
        if (response.status >= 500)
          failures.push(`${route.method} ${url} → ${response.status} ${response.text}`);
        else if (response.status >= 400 && response.text.length > MAX_ERROR_BODY_BYTES) {
          failures.push(`${route.method} ${url} → ${response.text.length}-byte error`);
        }
      }
    }
    assert.ok(requests >= 200, `${requests} requests`);
    assert.deepEqual(failures, [], 'requests that got a 5xx or an unbounded error');
    assert.doesNotMatch(server.stderr(), /"msg":"request failed"/, 'an internal error was logged');
  });
});
