/**
 * The server's use-cases over fakes: deploy/rollback/delete, the durable bounded queue, cancel, recovery after a
 * crash, drain, and following logs.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Principal } from '../domain/auth/api-key.ts';
import type { AegisError } from '../domain/errors.ts';
import type { ExecutionRecord } from '../domain/execution.ts';
import { compileManifest } from '../domain/manifest/compiled.ts';
import { AgentManifest } from '../domain/manifest/schema.ts';
import { deleteAgent, deployAgent, rollbackAgent } from './agents.ts';
import { ExecutionEvents } from './execution-events.ts';
import { Executions } from './executions.ts';
import { FakeBundles } from './fakes/fake-bundles.ts';
import { FakeRuntime } from './fakes/fake-runtime.ts';
import { ManualClock } from './fakes/manual-clock.ts';
import { MemoryAuditLog } from './fakes/memory-audit-log.ts';
import { MemoryStore } from './fakes/memory-store.ts';
import { followLogs } from './follow-logs.ts';
import type { ExecutionMetrics, ProcessIdentity } from './ports.ts';

const admin: Principal = { id: 'key_admin', name: 'admin', scopes: ['admin'], rateLimit: null };
const deployer: Principal = { id: 'key_deploy', name: 'ci', scopes: ['deploy'], rateLimit: null };
const runner: Principal = { id: 'key_exec', name: 'app', scopes: ['execute'], rateLimit: null };
const reader: Principal = { id: 'key_read', name: 'dash', scopes: ['read'], rateLimit: null };

function agentNamed(name: string, version = '1.0.0', extra: Record<string, unknown> = {}) {
  return compileManifest(
    AgentManifest.parse({
      apiVersion: 'aegis.dev/v1',
      kind: 'Agent',
      metadata: { name, version },
      spec: { runtime: { language: 'python', entrypoint: 'main.py' }, ...extra },
    }),
    `/bundles/${name}-${version}`,
  );
}

async function until(check: () => boolean | Promise<boolean>, what: string) {
  const deadline = Date.now() + 5000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function setup(options: { maxConcurrent?: number; maxQueued?: number; identity?: ProcessIdentity } = {}) {
  const clock = new ManualClock();
  const runtime = new FakeRuntime(clock);
  const store = new MemoryStore();
  const audit = new MemoryAuditLog({ clock });
  const bundles = new FakeBundles();
  const events = new ExecutionEvents(clock);
  const finished: string[] = [];
  const metrics: ExecutionMetrics = {
    executionFinished: (status) => finished.push(status),
    sandboxStarted: () => {},
    dequeued: () => {},
  };
  let n = 0;
  const identity: ProcessIdentity = options.identity ?? {
    current: () => ({ host: 'test', pid: 1, startTicks: 1 }),
    isAlive: () => true,
  };
  const deps = {
    runtime,
    store,
    bundles,
    audit,
    clock,
    ids: { executionId: () => `ex_${String(++n).padStart(4, '0')}` },
    identity,
    events,
    metrics,
  };
  const executions = new Executions(deps, {
    maxConcurrent: options.maxConcurrent ?? 2,
    maxQueued: options.maxQueued ?? 10,
  });
  const agentDeps = { store, bundles, audit, clock };
  return { runtime, store, audit, bundles, events, clock, executions, agentDeps, finished, deps };
}

async function deployed(s: ReturnType<typeof setup>, name = 'demo', version = '1.0.0') {
  return deployAgent(s.agentDeps, deployer, FakeBundles.encode(agentNamed(name, version)));
}

describe('deploying agents', () => {
  it('numbers revisions, ignores a re-deploy of the active bundle, rolls back and audits each change', async () => {
    const s = setup();
    const first = await deployed(s, 'demo', '1.0.0');
    assert.equal(first.revision.revision, 1);
    assert.equal(first.created, true);
    const again = await deployed(s, 'demo', '1.0.0');
    assert.equal(again.created, false);
    assert.equal(again.revision.revision, 1);
    const second = await deployed(s, 'demo', '1.1.0');
    assert.equal(second.revision.revision, 2);
    assert.equal(second.agent.activeRevision, 2);
    const back = await rollbackAgent(s.agentDeps, deployer, 'demo');
    assert.equal(back.agent.activeRevision, 1);
    assert.equal(back.from, 2);
    await assert.rejects(rollbackAgent(s.agentDeps, deployer, 'demo'), { code: 'CONFLICT' });
    assert.deepEqual(
      s.audit.entries.map((e) => e.kind),
      ['agent.deployed', 'agent.deployed', 'agent.activated'],
    );
    assert.equal(s.audit.entries[0]!.data['by'], 'key_deploy');
  });

  it('needs the deploy scope, and admin for secrets or host paths outside the bundle', async () => {
    const s = setup();
    await assert.rejects(deployAgent(s.agentDeps, runner, FakeBundles.encode(agentNamed('demo'))), {
      code: 'PERMISSION_DENIED',
    });
    const withSecret = agentNamed('secretive', '1.0.0', {
      secrets: [{ name: 'OPENAI_KEY', env: 'OPENAI_API_KEY', hosts: ['api.openai.com'] }],
    });
    await assert.rejects(
      deployAgent(s.agentDeps, deployer, FakeBundles.encode(withSecret)),
      (error: AegisError) => {
        assert.equal(error.code, 'POLICY_DENIED');
        assert.match(error.message, /spec\.secrets.*OPENAI_KEY.*admin/);
        return true;
      },
    );
    assert.equal((await deployAgent(s.agentDeps, admin, FakeBundles.encode(withSecret))).created, true);
    const hostPath = agentNamed('reader', '1.0.0', { security: { filesystem: { read: ['/srv/data'] } } });
    await assert.rejects(deployAgent(s.agentDeps, deployer, FakeBundles.encode(hostPath)), {
      code: 'POLICY_DENIED',
    });
    assert.equal(s.bundles.forgotten.length, 2, 'refused bundles are not kept unpacked');
  });

  it('refuses to delete an agent while one of its executions runs', async () => {
    const s = setup();
    await deployed(s);
    s.runtime.script = { hang: true };
    const record = await s.executions.submit(runner, { agent: 'demo' });
    await until(async () => (await s.store.getExecution(record.id))?.status === 'running', 'running');
    await assert.rejects(deleteAgent(s.agentDeps, deployer, 'demo'), { code: 'CONFLICT' });
    await s.executions.cancel(runner, record.id);
    await deleteAgent(s.agentDeps, deployer, 'demo');
    assert.equal(await s.store.getAgent('demo'), undefined);
    assert.equal((await s.store.getExecution(record.id))?.status, 'killed', 'history stays');
  });
});

describe('executions', () => {
  it('stores an accepted execution as queued before answering, then runs it to the end', async () => {
    const s = setup();
    await deployed(s);
    s.runtime.script = { logs: [{ stream: 'stdout', text: 'hello' }], outcome: { output: { ok: true } } };
    const record = await s.executions.submit(runner, { agent: 'demo@1', input: { n: 1 } });
    assert.equal(record.status, 'queued');
    assert.deepEqual(record.agent, { name: 'demo', version: '1.0.0', revision: 1 });
    const final = await s.executions.wait(reader, record.id, 5000);
    assert.equal(final.status, 'succeeded');
    assert.deepEqual(final.input, { n: 1 });
    const created = s.audit.entries.find((e) => e.kind === 'execution.created' && e.execution === record.id);
    assert.equal(created?.data['requestedBy'], 'key_exec');
    assert.equal(created?.data['revision'], 1);
    assert.deepEqual(s.finished, ['succeeded']);
  });

  it('refuses over the queue bound with QUEUE_FULL and stores nothing for the refused request', async () => {
    const s = setup({ maxConcurrent: 1, maxQueued: 1 });
    await deployed(s);
    s.runtime.script = { hang: true };
    const running = await s.executions.submit(runner, { agent: 'demo' });
    await until(
      () => s.executions.stats().running === 1 && s.executions.stats().queued === 0,
      'a slot taken',
    );
    const waiting = await s.executions.submit(runner, { agent: 'demo' });
    await assert.rejects(s.executions.submit(runner, { agent: 'demo' }), (error: AegisError) => {
      assert.equal(error.code, 'QUEUE_FULL');
      assert.match(error.message, /nothing was created/);
      return true;
    });
    assert.equal((await s.store.listExecutions()).length, 2);
    // Cancelling the queued one frees the bound; the running one keeps its slot.
    const cancelled = await s.executions.cancel(runner, waiting.id);
    assert.equal(cancelled.status, 'killed');
    assert.match(cancelled.reason ?? '', /cancelled by key_exec before it started/);
    const killed = await s.executions.cancel(runner, running.id);
    assert.equal(killed.status, 'killed');
    assert.equal(killed.reason, 'cancelled by key_exec');
    await assert.rejects(s.executions.cancel(runner, running.id), { code: 'CONFLICT' });
    assert.deepEqual(
      s.audit.entries.filter((e) => e.kind === 'execution.cancelled').map((e) => e.data['status']),
      ['queued', 'running'],
    );
  });

  it('checks scopes: read keys may look, not run or cancel', async () => {
    const s = setup();
    await deployed(s);
    await assert.rejects(s.executions.submit(reader, { agent: 'demo' }), { code: 'PERMISSION_DENIED' });
    await assert.rejects(s.executions.submit(runner, { agent: 'nope' }), { code: 'NOT_FOUND' });
    await assert.rejects(s.executions.submit(runner, { agent: 'demo@7' }), { code: 'NOT_FOUND' });
    await assert.rejects(s.executions.submit(runner, { agent: 'Bad Name' }), { code: 'USAGE' });
  });

  it('recovers after a crash: running ones fail as orchestrator-restarted, queued ones (the shared queue) run', async () => {
    const dead = { host: 'test', pid: 99, startTicks: 5 };
    const s = setup({
      identity: {
        current: () => ({ host: 'test', pid: 1, startTicks: 1 }),
        isAlive: (owner) => owner.pid !== 99,
      },
    });
    const { revision } = await deployed(s);
    const base: ExecutionRecord = {
      id: '',
      agent: { name: 'demo', version: '1.0.0', revision: revision.revision },
      runtime: 'fake',
      status: 'queued',
      exitCode: null,
      reason: null,
      input: null,
      output: null,
      violations: [],
      createdAt: '2026-01-01T00:00:00.000Z',
      startedAt: null,
      finishedAt: null,
      durationMs: null,
      owner: dead,
    };
    await s.store.createExecution({ ...base, id: 'ex_running', status: 'running' });
    await s.store.createExecution({ ...base, id: 'ex_queued', createdAt: '2026-01-01T00:00:01.000Z' });
    await s.store.createExecution({
      ...base,
      id: 'ex_someone_elses',
      owner: { host: 'test', pid: 7, startTicks: 7 },
    });
    const result = await s.executions.recover();
    // Queued executions are the cluster's shared queue: nobody needs to requeue them, any node claims them.
    assert.deepEqual(result, {
      requeued: [],
      failed: ['ex_running'],
      reconciled: ['ex_queued'],
    });
    // Neither had ledger entries (stored directly, as a crash before the group commit leaves them): recovery
    // records what it found, so the store and the ledger agree again.
    assert.deepEqual(
      (await s.audit.list('ex_running')).map((e) => [e.kind, e.data['status'], e.data['missing']]),
      [['execution.recovered', 'failed', ['created', 'finished']]],
    );
    assert.deepEqual(
      (await s.audit.list('ex_queued')).map((e) => [e.kind, e.data['missing']]),
      [['execution.recovered', ['created']]],
    );
    const failed = await s.store.getExecution('ex_running');
    assert.equal(failed?.status, 'failed');
    assert.match(failed?.reason ?? '', /^orchestrator-restarted/);
    assert.equal((await s.executions.wait(reader, 'ex_queued', 5000)).status, 'succeeded');
    assert.equal(
      (await s.executions.wait(reader, 'ex_someone_elses', 5000)).status,
      'succeeded',
      "a queued execution is any node's to run, whoever accepted it",
    );
  });

  it('drains: refuses new work, lets running ones finish, leaves queued ones queued', async () => {
    const s = setup({ maxConcurrent: 1 });
    await deployed(s);
    s.runtime.script = { hang: true };
    const running = await s.executions.submit(runner, { agent: 'demo' });
    const queued = await s.executions.submit(runner, { agent: 'demo' });
    await until(() => s.executions.stats().running === 1, 'running');
    const draining = s.executions.drain(50);
    await s.clock.advance(49);
    assert.equal(s.executions.stats().running, 1, 'running ones get the whole deadline');
    await s.clock.advance(1);
    const drained = await draining;
    assert.deepEqual(drained, { finished: 0, cancelled: 1, leftQueued: 1 });
    assert.match((await s.store.getExecution(running.id))?.reason ?? '', /^orchestrator-shutdown/);
    assert.equal((await s.store.getExecution(queued.id))?.status, 'queued');
    await assert.rejects(s.executions.submit(runner, { agent: 'demo' }), { code: 'UNAVAILABLE' });
  });

  it('follows logs: stored lines, then lines as they come, then the end; resumes after a seq', async () => {
    const s = setup();
    await deployed(s);
    s.runtime.script = {
      logs: [
        { stream: 'stdout', text: 'one' },
        { stream: 'stderr', text: 'two' },
      ],
    };
    const record = await s.executions.submit(runner, { agent: 'demo' });
    const seen: string[] = [];
    for await (const item of followLogs(s, record.id, { follow: true })) {
      seen.push(item.type === 'line' ? `${item.line.seq}:${item.line.text}` : `end:${item.execution.status}`);
    }
    assert.deepEqual(seen, ['1:one', '2:two', 'end:succeeded']);
    const resumed: string[] = [];
    for await (const item of followLogs(s, record.id, { follow: true, afterSeq: 1 })) {
      resumed.push(item.type === 'line' ? item.line.text : 'end');
    }
    assert.deepEqual(resumed, ['two', 'end']);
    await assert.rejects(
      async () => {
        for await (const _ of followLogs(s, 'ex_nope', { follow: false })) {
          // nothing
        }
      },
      { code: 'NOT_FOUND' },
    );
  });
});
