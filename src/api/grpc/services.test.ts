import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import {
  type Client,
  Code,
  ConnectError,
  createClient,
  createContextValues,
  type Interceptor,
  type Transport,
} from '@connectrpc/connect';
import { fastifyConnectPlugin } from '@connectrpc/connect-fastify';
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from '@connectrpc/connect-node';
import fastify, { type FastifyInstance } from 'fastify';
import { systemClock } from '../../adapters/clock/system-clock.ts';
import { ExecutionEvents } from '../../app/execution-events.ts';
import { Executions } from '../../app/executions.ts';
import { FakeBundles } from '../../app/fakes/fake-bundles.ts';
import { FakeRuntime } from '../../app/fakes/fake-runtime.ts';
import { MemoryAuditLog } from '../../app/fakes/memory-audit-log.ts';
import { MemoryStore } from '../../app/fakes/memory-store.ts';
import type { Hasher } from '../../app/ports.ts';
import type { Scope } from '../../domain/auth/api-key.ts';
import { AegisError } from '../../domain/errors.ts';
import { MAX_EXECUTIONS_PAGE } from '../../domain/execution.ts';
import { compileManifest } from '../../domain/manifest/compiled.ts';
import { AgentManifest } from '../../domain/manifest/schema.ts';
import { type ApiContext, AuthGate } from '../context.ts';
import { AgentService } from './gen/aegis/v1/agents_pb.ts';
import { ExecutionService, type LogEvent } from './gen/aegis/v1/executions_pb.ts';
import { ERROR_DETAILS_HEADER, kTransport, registerGrpcServices, toConnectError } from './services.ts';

const sha256: Hasher = { sha256Hex: (text) => createHash('sha256').update(text).digest('hex') };

/** A deployable "bundle" (FakeBundles: the JSON of a compiled manifest). */
const bundleOf = (name: string, version: string) =>
  FakeBundles.encode(
    compileManifest(
      AgentManifest.parse({
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name, version },
        spec: { runtime: { language: 'python', entrypoint: 'main.py' } },
      }),
      `/srv/agents/${name}`,
    ),
  );

// ---------------------------------------------------------------------------------------------------------------
// Setup: one context, served by an h2c Fastify (gRPC) and an HTTP/1.1 Fastify (Connect, gRPC-Web).

const KEYS: Record<string, Scope[]> = { admin: ['admin'], reader: ['read'], runner: ['execute'] };
const keyText = (name: string) => `aegis_${name.padEnd(40, 'x')}`;

function setup() {
  const store = new MemoryStore();
  const audit = new MemoryAuditLog();
  const runtime = new FakeRuntime();
  const bundles = new FakeBundles();
  const clock = systemClock;
  const events = new ExecutionEvents(clock);
  let n = 0;
  const executions = new Executions(
    {
      runtime,
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
  const random = { hex128: () => '0'.repeat(32) };
  const ctx: ApiContext = {
    store,
    audit,
    clock,
    events,
    executions,
    agentDeps: { store, bundles, audit, clock },
    keyDeps: { store, hasher: sha256, clock, ids: { keyId: () => `key_${++n}` }, random, audit },
    gate: new AuthGate({ store, hasher: sha256, clock }, { perSecond: 1000, burst: 1000 }),
    ready: () => true,
  };
  return { ctx, store, runtime, audit };
}

async function serve(ctx: ApiContext, http2: boolean, transport: 'tcp' | 'unix' = 'tcp') {
  const app: FastifyInstance = http2 ? (fastify({ http2: true }) as never) : fastify();
  await app.register(fastifyConnectPlugin, {
    routes: (router) => registerGrpcServices(router, ctx),
    contextValues: () => createContextValues().set(kTransport, transport),
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  assert.ok(address !== null && typeof address === 'object');
  return { app, baseUrl: `http://127.0.0.1:${address.port}` };
}

const bearer =
  (key: string | undefined): Interceptor =>
  (next) =>
  (request) => {
    if (key !== undefined) request.header.set('authorization', `Bearer ${key}`);
    return next(request);
  };

interface Clients {
  readonly agents: Client<typeof AgentService>;
  readonly executions: Client<typeof ExecutionService>;
}

/** Clients acting as `who` (a key name, or undefined for no Authorization header). */
type ClientsFor = (who: string | undefined) => Clients;

function clientsOver(make: (interceptors: Interceptor[]) => Transport): ClientsFor {
  return (who) => {
    const transport = make([bearer(who === undefined ? undefined : keyText(who))]);
    return {
      agents: createClient(AgentService, transport),
      executions: createClient(ExecutionService, transport),
    };
  };
}

async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ConnectError, `expected a ConnectError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected the call to fail');
}

function errorDetails(error: ConnectError): Record<string, unknown> {
  const text = error.metadata.get(ERROR_DETAILS_HEADER);
  assert.ok(text !== null, `no ${ERROR_DETAILS_HEADER} in the error's metadata`);
  return JSON.parse(text) as Record<string, unknown>;
}

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function collect(stream: AsyncIterable<LogEvent>): Promise<LogEvent[]> {
  const events: LogEvent[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

// ---------------------------------------------------------------------------------------------------------------

describe('gRPC services (Connect)', () => {
  const { ctx, store, runtime } = setup();
  let h2: Awaited<ReturnType<typeof serve>>;
  let h1: Awaited<ReturnType<typeof serve>>;
  let sessions: Http2SessionManager;
  let grpc: ClientsFor;
  let connect: ClientsFor;
  let grpcWeb: ClientsFor;

  before(async () => {
    for (const [name, scopes] of Object.entries(KEYS)) {
      await store.createKey({
        id: `key_${name}`,
        name,
        hash: sha256.sha256Hex(keyText(name)),
        prefix: keyText(name).slice(0, 10),
        scopes,
        rateLimit: null,
        createdAt: new Date().toISOString(),
        revokedAt: null,
        lastUsedAt: null,
      });
    }
    h2 = await serve(ctx, true);
    h1 = await serve(ctx, false);
    sessions = new Http2SessionManager(h2.baseUrl);
    grpc = clientsOver((interceptors) =>
      createGrpcTransport({ baseUrl: h2.baseUrl, sessionManager: sessions, interceptors }),
    );
    connect = clientsOver((interceptors) =>
      createConnectTransport({ baseUrl: h1.baseUrl, httpVersion: '1.1', interceptors }),
    );
    grpcWeb = clientsOver((interceptors) =>
      createGrpcWebTransport({ baseUrl: h1.baseUrl, httpVersion: '1.1', interceptors }),
    );
  });

  after(async () => {
    sessions.abort();
    await h2.app.close();
    await h1.app.close();
  });

  it('refuses calls without a key: Unauthenticated, with the hint in aegis-error-details', async () => {
    for (const clients of [grpc, connect, grpcWeb]) {
      const error = await rejection(clients(undefined).agents.listAgents({}));
      assert.equal(error.code, Code.Unauthenticated);
      assert.equal(error.rawMessage, 'this request needs an API key');
      const details = errorDetails(error);
      assert.equal(details['code'], 'UNAUTHENTICATED');
      assert.equal(details['retryable'], false);
      assert.match(String(details['hint']), /Authorization: Bearer aegis_…/);
    }
    const stream = grpc(undefined).executions.streamLogs({ executionId: 'ex_0001' });
    assert.equal((await rejection(collect(stream))).code, Code.Unauthenticated);
  });

  it('refuses unknown keys and operations outside the key’s scopes', async () => {
    assert.equal((await rejection(grpc('stranger').agents.listAgents({}))).code, Code.Unauthenticated);
    const denied = await rejection(grpc('reader').agents.deploy({ bundle: bundleOf('demo', '1.0.0') }));
    assert.equal(denied.code, Code.PermissionDenied);
    assert.match(denied.rawMessage, /needs the "deploy" scope/);
    assert.deepEqual(errorDetails(denied)['details'], { required: 'deploy', granted: ['read'] });
    const cannotRun = await rejection(connect('reader').executions.createExecution({ agent: 'demo' }));
    assert.equal(cannotRun.code, Code.PermissionDenied);
  });

  it('deploys, lists, inspects and rolls back agents', async () => {
    const first = await grpc('admin').agents.deploy({ bundle: bundleOf('demo', '1.0.0') });
    assert.equal(first.created, true);
    assert.equal(first.revision?.revision, 1);
    assert.equal(first.revision?.sizeBytes, BigInt(bundleOf('demo', '1.0.0').byteLength));
    assert.equal(first.revision?.deployedBy, 'key_admin');
    assert.equal(first.revision?.description, undefined);
    const again = await connect('admin').agents.deploy({ bundle: bundleOf('demo', '1.0.0') });
    assert.equal(again.created, false);
    const second = await grpc('admin').agents.deploy({ bundle: bundleOf('demo', '2.0.0') });
    assert.equal(second.agent?.activeRevision, 2);

    const list = await connect('reader').agents.listAgents({});
    assert.deepEqual(
      list.agents.map((a) => [a.name, a.activeRevision, a.active?.version]),
      [['demo', 2, '2.0.0']],
    );
    const detail = await grpc('reader').agents.getAgent({ name: 'demo' });
    assert.deepEqual(
      detail.revisions.map((r) => r.revision),
      [2, 1],
    );
    const revisions = await connect('reader').agents.listRevisions({ name: 'demo' });
    assert.equal(revisions.revisions.length, 2);

    const rolled = await grpc('admin').agents.rollback({ name: 'demo' });
    assert.equal(rolled.from, 2);
    assert.equal(rolled.agent?.activeRevision, 1);
    const forward = await connect('admin').agents.rollback({ name: 'demo', revision: 2 });
    assert.equal(forward.agent?.activeRevision, 2);
  });

  it('maps NOT_FOUND, USAGE and CONFLICT to NotFound, InvalidArgument and FailedPrecondition', async () => {
    for (const clients of [grpc, connect]) {
      const agent = await rejection(clients('reader').agents.getAgent({ name: 'nope' }));
      assert.equal(agent.code, Code.NotFound);
      assert.equal(agent.rawMessage, 'no agent named nope');
      assert.equal(errorDetails(agent)['code'], 'NOT_FOUND');
      assert.equal(
        (await rejection(clients('reader').executions.getExecution({ id: 'ex_nope' }))).code,
        Code.NotFound,
      );
      assert.equal(
        (await rejection(clients('runner').executions.createExecution({ agent: 'nope' }))).code,
        Code.NotFound,
      );
      const logs = clients('reader').executions.streamLogs({ executionId: 'ex_nope', follow: true });
      assert.equal((await rejection(collect(logs))).code, Code.NotFound);
    }
    const badInput = await rejection(
      grpc('runner').executions.createExecution({ agent: 'demo', inputJson: '{nope' }),
    );
    assert.equal(badInput.code, Code.InvalidArgument);
    assert.match(badInput.rawMessage, /^input_json: not JSON/);
    const badCursor = await rejection(connect('reader').executions.listExecutions({ cursor: 'garbage' }));
    assert.equal(badCursor.code, Code.InvalidArgument);
    assert.equal(badCursor.rawMessage, 'cursor: not a cursor returned by this API');
    const badStatus = await rejection(grpc('reader').executions.listExecutions({ status: 'done' }));
    assert.equal(badStatus.code, Code.InvalidArgument);
    const noName = await rejection(grpc('reader').agents.getAgent({}));
    assert.equal(noName.code, Code.InvalidArgument);
    const tooLong = await rejection(grpc('reader').executions.getExecution({ id: 'x', waitMs: 300_001 }));
    assert.equal(tooLong.code, Code.InvalidArgument);
  });

  it('creates an execution, waits for it, and streams its stored logs (no follow)', async () => {
    runtime.script = {
      logs: [
        { stream: 'stdout', text: 'hello' },
        { stream: 'stderr', text: 'working…' },
      ],
    };
    const done = await grpc('runner').executions.createExecution({
      agent: 'demo@1',
      inputJson: '{"n":1.5,"list":[null,"é"]}',
      waitMs: 5000,
    });
    assert.equal(done.status, 'succeeded');
    assert.deepEqual(done.agent, { ...done.agent, name: 'demo', version: '1.0.0', revision: 1 });
    assert.deepEqual(JSON.parse(done.inputJson), { n: 1.5, list: [null, 'é'] });
    assert.deepEqual(JSON.parse(done.outputJson), { echo: { n: 1.5, list: [null, 'é'] } });
    assert.equal(done.exitCode, 0);
    assert.equal(done.reason, undefined);

    const fetched = await connect('reader').executions.getExecution({ id: done.id });
    assert.equal(fetched.status, 'succeeded');
    assert.equal(fetched.createdAt, done.createdAt);

    for (const clients of [grpc, connect]) {
      const events = await collect(clients('reader').executions.streamLogs({ executionId: done.id }));
      assert.deepEqual(
        events.map((e) => (e.event.case === 'line' ? [e.event.value.seq, e.event.value.text] : e.event.case)),
        [[1n, 'hello'], [2n, 'working…'], 'end'],
      );
      const after = await collect(
        clients('reader').executions.streamLogs({ executionId: done.id, afterSeq: 1n }),
      );
      assert.equal(after.length, 2);
      assert.equal(after[0]?.event.case === 'line' && after[0].event.value.stream, 'stderr');
    }
  });

  it('follows a running execution’s logs until cancel ends it, then sends the end marker', async () => {
    runtime.script = { logs: [{ stream: 'stdout', text: 'started' }], hang: true };
    const created = await connect('runner').executions.createExecution({ agent: 'demo', inputJson: '' });
    assert.equal(JSON.parse(created.inputJson), null);
    const received: LogEvent[] = [];
    const following = (async () => {
      for await (const event of grpc('reader').executions.streamLogs({
        executionId: created.id,
        follow: true,
      })) {
        received.push(event);
      }
    })();
    await until('the first log line', () => (received.length > 0 ? true : undefined));
    assert.equal(received[0]?.event.case, 'line');
    assert.equal(received.length, 1, 'the stream stays open while the execution runs');

    const cancelled = await grpc('runner').executions.cancelExecution({ id: created.id });
    assert.equal(cancelled.status, 'killed');
    await following;
    const end = received.at(-1)?.event;
    assert.ok(end?.case === 'end', 'the stream ends with the end marker');
    assert.equal(end.value.status, 'killed');
    assert.match(end.value.reason ?? '', /cancelled by key_runner/);

    const again = await rejection(connect('runner').executions.cancelExecution({ id: created.id }));
    assert.equal(again.code, Code.FailedPrecondition);
    assert.deepEqual(errorDetails(again)['details'], { status: 'killed' });
    runtime.script = {};
  });

  it('lists executions a page at a time with REST’s cursors', async () => {
    const first = await grpc('reader').executions.listExecutions({ limit: 1, agent: 'demo' });
    assert.equal(first.executions.length, 1);
    assert.ok(first.nextCursor !== undefined);
    const all = await connect('reader').executions.listExecutions({});
    assert.equal(all.executions.length, 2);
    assert.equal(all.nextCursor, undefined);
    const killed = await grpc('reader').executions.listExecutions({ status: 'killed' });
    assert.deepEqual(
      killed.executions.map((e) => e.status),
      ['killed'],
    );
    const outOfRange = await rejection(grpc('reader').executions.listExecutions({ limit: 1001 }));
    assert.equal(outOfRange.code, Code.InvalidArgument);
  });

  it('refuses to delete an agent with running executions, then deletes it', async () => {
    runtime.script = { hang: true };
    const running = await grpc('runner').executions.createExecution({ agent: 'demo' });
    await until('the execution to run', async () =>
      (await store.getExecution(running.id))?.status === 'running' ? true : undefined,
    );
    const busy = await rejection(connect('admin').agents.deleteAgent({ name: 'demo' }));
    assert.equal(busy.code, Code.FailedPrecondition);
    await grpc('admin').executions.cancelExecution({ id: running.id });
    runtime.script = {};
    await grpc('admin').agents.deleteAgent({ name: 'demo' });
    assert.equal((await rejection(grpc('reader').agents.getAgent({ name: 'demo' }))).code, Code.NotFound);
  });
});

describe('gRPC over the unix socket transport', () => {
  it('trusts the caller without a key when the server marks the request as unix', async () => {
    const { ctx } = setup();
    const server = await serve(ctx, false, 'unix');
    try {
      const agents = createClient(
        AgentService,
        createConnectTransport({ baseUrl: server.baseUrl, httpVersion: '1.1' }),
      );
      const deployed = await agents.deploy({ bundle: bundleOf('local-agent', '0.1.0') });
      assert.equal(deployed.revision?.deployedBy, 'local');
    } finally {
      await server.app.close();
    }
  });
});

describe('toConnectError', () => {
  it('hides unknown errors behind a generic Internal and keeps the cause server-side', () => {
    const cause = new Error('password=hunter2 leaked in a driver message');
    const error = toConnectError(cause);
    assert.equal(error.code, Code.Internal);
    assert.doesNotMatch(error.message, /hunter2/);
    assert.equal(error.cause, cause);
    assert.equal(error.metadata.get(ERROR_DETAILS_HEADER), null);
  });

  it('keeps the header ASCII: non-ASCII characters are JSON escapes', () => {
    const error = toConnectError(
      new AegisError('RATE_LIMITED', 'slow down', {
        hint: 'wait… then retry',
        details: { retryAfterMs: 250 },
      }),
    );
    assert.equal(error.code, Code.ResourceExhausted);
    const text = error.metadata.get(ERROR_DETAILS_HEADER) ?? '';
    assert.match(text, /^[\x20-\x7e]*$/);
    assert.deepEqual(JSON.parse(text), {
      code: 'RATE_LIMITED',
      retryable: true,
      hint: 'wait… then retry',
      details: { retryAfterMs: 250 },
    });
  });

  it('passes ConnectErrors through unchanged', () => {
    const original = new ConnectError('already mapped', Code.Aborted);
    assert.equal(toConnectError(original), original);
  });
});

describe('gRPC ListExecutions at the maximum page size', () => {
  const { ctx, store } = setup();
  let h1: Awaited<ReturnType<typeof serve>>;

  before(async () => {
    await store.createKey({
      id: 'key_reader',
      name: 'reader',
      hash: sha256.sha256Hex(keyText('reader')),
      prefix: keyText('reader').slice(0, 10),
      scopes: ['read'],
      rateLimit: null,
      createdAt: new Date().toISOString(),
      revokedAt: null,
      lastUsedAt: null,
    });
    for (let i = 0; i < 2 * MAX_EXECUTIONS_PAGE; i++) {
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
    h1 = await serve(ctx, false);
  });
  after(async () => {
    await h1.app.close();
  });

  it('returns a cursor after a full page of the maximum size, and none after the last', async () => {
    const client = clientsOver((interceptors) =>
      createConnectTransport({ baseUrl: h1.baseUrl, httpVersion: '1.1', interceptors }),
    )('reader').executions;
    const first = await client.listExecutions({ limit: MAX_EXECUTIONS_PAGE });
    assert.equal(first.executions.length, MAX_EXECUTIONS_PAGE);
    assert.ok(first.nextCursor !== undefined, 'a full page of 1000 out of 2000 has a next page');
    const second = await client.listExecutions({ limit: MAX_EXECUTIONS_PAGE, cursor: first.nextCursor });
    assert.equal(second.executions.length, MAX_EXECUTIONS_PAGE);
    assert.equal(second.nextCursor, undefined);
    assert.equal(
      new Set([...first.executions, ...second.executions].map((e) => e.id)).size,
      2 * MAX_EXECUTIONS_PAGE,
    );
  });
});
