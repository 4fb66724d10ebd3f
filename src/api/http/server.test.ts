/**
 * The REST API in process over the in-memory fakes (app.inject, no socket): paging at the maximum page size and how
 * bodies of the wrong media type are refused. End-to-end cases against a real server are in test/server/.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { systemClock } from '../../adapters/clock/system-clock.ts';
import { PrometheusMetrics } from '../../adapters/metrics/prometheus.ts';
import { ExecutionEvents } from '../../app/execution-events.ts';
import { Executions } from '../../app/executions.ts';
import { FakeBundles } from '../../app/fakes/fake-bundles.ts';
import { FakeRuntime } from '../../app/fakes/fake-runtime.ts';
import { MemoryAuditLog } from '../../app/fakes/memory-audit-log.ts';
import { MemoryStore } from '../../app/fakes/memory-store.ts';
import type { Hasher } from '../../app/ports.ts';
import { MAX_EXECUTIONS_PAGE } from '../../domain/execution.ts';
import { type ApiContext, AuthGate } from '../context.ts';
import { buildOpenApi } from './openapi.ts';
import { ROUTES } from './routes.ts';
import { buildHttpApi } from './server.ts';

const sha256: Hasher = { sha256Hex: (text) => createHash('sha256').update(text).digest('hex') };
const ADMIN_KEY = `aegis_${'admin'.padEnd(40, 'x')}`;

function setup() {
  const store = new MemoryStore();
  const audit = new MemoryAuditLog();
  const bundles = new FakeBundles();
  const clock = systemClock;
  const events = new ExecutionEvents(clock);
  let n = 0;
  const executions = new Executions(
    {
      runtime: new FakeRuntime(),
      store,
      bundles,
      audit,
      clock,
      ids: { executionId: () => `ex_${String(++n).padStart(4, '0')}` },
      identity: { current: () => ({ host: 'test', pid: 1, startTicks: 1 }), isAlive: () => true },
      events,
      metrics: { executionFinished() {}, sandboxStarted() {}, dequeued() {} },
    },
    { maxConcurrent: 4, maxQueued: 16 },
  );
  const ctx: ApiContext = {
    store,
    audit,
    clock,
    events,
    executions,
    agentDeps: { store, bundles, audit, clock },
    keyDeps: {
      store,
      hasher: sha256,
      clock,
      ids: { keyId: () => `key_${++n}` },
      random: { hex128: () => '0'.repeat(32) },
      audit,
    },
    gate: new AuthGate({ store, hasher: sha256, clock }, { perSecond: 1000, burst: 1000 }),
    ready: () => true,
  };
  return { ctx, store };
}

describe('REST API (in process)', () => {
  const { ctx, store } = setup();
  let app: FastifyInstance;
  const auth = { authorization: `Bearer ${ADMIN_KEY}` };

  before(async () => {
    await store.createKey({
      id: 'key_admin',
      name: 'admin',
      hash: sha256.sha256Hex(ADMIN_KEY),
      prefix: ADMIN_KEY.slice(0, 10),
      scopes: ['admin'],
      rateLimit: null,
      createdAt: new Date().toISOString(),
      revokedAt: null,
      lastUsedAt: null,
    });
    ({ app } = await buildHttpApi(ctx, {
      bundleLimitBytes: 1024 * 1024,
      metrics: new PrometheusMetrics({ defaultMetrics: false }),
      version: '0.0.0-test',
      log: () => {},
    }));
    await app.ready();
  });
  after(async () => {
    await app.close();
  });

  it(`pages ${2 * MAX_EXECUTIONS_PAGE} executions in two full pages of the maximum size, then says there are no more`, async () => {
    const total = 2 * MAX_EXECUTIONS_PAGE;
    for (let i = 0; i < total; i++) {
      await store.createExecution({
        id: `ex_${String(i).padStart(5, '0')}`,
        agent: { name: 'pager', version: '1.0.0' },
        runtime: 'sandbox',
        status: 'succeeded',
        exitCode: 0,
        reason: null,
        input: null,
        output: null,
        violations: [],
        createdAt: new Date(Date.UTC(2025, 0, 1) + i * 1000).toISOString(),
        startedAt: null,
        finishedAt: null,
        durationMs: null,
        owner: null,
      });
    }
    const seen = new Set<string>();
    let cursor: string | null = null;
    const sizes: number[] = [];
    do {
      const response: { statusCode: number; body: string; json(): unknown } = await app.inject({
        method: 'GET',
        url: `/v1/executions?agent=pager&limit=${MAX_EXECUTIONS_PAGE}${cursor ? `&cursor=${cursor}` : ''}`,
        headers: auth,
      });
      assert.equal(response.statusCode, 200, response.body);
      const page = response.json() as { executions: { id: string }[]; nextCursor: string | null };
      for (const execution of page.executions) seen.add(execution.id);
      sizes.push(page.executions.length);
      cursor = page.nextCursor;
    } while (cursor !== null && sizes.length < 5);
    assert.deepEqual(
      sizes,
      [MAX_EXECUTIONS_PAGE, MAX_EXECUTIONS_PAGE],
      'two full pages, the first with a cursor',
    );
    assert.equal(seen.size, total);
  });

  it('answers a body of the wrong Content-Type with 415 UNSUPPORTED_MEDIA_TYPE', async () => {
    const cases = [
      { url: '/v1/executions', type: 'text/plain', payload: '{"agent":"x"}' },
      { url: '/v1/executions', type: 'application/xml', payload: '<agent/>' },
      { url: '/v1/executions', type: 'application/gzip', payload: Buffer.from([0x1f, 0x8b]) },
      { url: '/v1/keys', type: 'application/octet-stream', payload: Buffer.from('{}') },
      { url: '/v1/agents', type: 'application/json', payload: '{}' },
    ];
    for (const { url, type, payload } of cases) {
      const response = await app.inject({
        method: 'POST',
        url,
        headers: { ...auth, 'content-type': type },
        payload,
      });
      assert.equal(response.statusCode, 415, `POST ${url} as ${type}: ${response.body}`);
      const body = response.json() as { error: { code: string; hint?: string } };
      assert.equal(body.error.code, 'UNSUPPORTED_MEDIA_TYPE');
    }
  });

  it('documents 413 and 415 for every route that takes a body', () => {
    const paths = buildOpenApi({ version: '0.0.0-test' })['paths'] as Record<
      string,
      Record<string, { operationId: string; responses: Record<string, unknown> }>
    >;
    const missing: string[] = [];
    for (const route of ROUTES) {
      if (route.body === undefined) continue;
      const operation = paths[route.path.replace(/:(\w+)/g, '{$1}')]?.[route.method.toLowerCase()];
      for (const status of ['413', '415']) {
        if (operation?.responses[status] === undefined) missing.push(`${route.operationId} ${status}`);
      }
    }
    assert.deepEqual(missing, []);
  });
});
