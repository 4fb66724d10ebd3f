/**
 * Warm pools over fakes: executions take pre-spawned instances (never the same one twice), pools refill, scale to
 * zero when idle, drain on redeploy, replace instances that die, and stay within the node's sandbox capacity.
 * Time is a ManualClock: the idle timeout and the maintenance tick happen when the test advances it, never by
 * waiting.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Principal } from '../domain/auth/api-key.ts';
import { compileManifest } from '../domain/manifest/compiled.ts';
import { AgentManifest } from '../domain/manifest/schema.ts';
import { deployAgent } from './agents.ts';
import { ExecutionEvents } from './execution-events.ts';
import { Executions } from './executions.ts';
import { FakeBundles } from './fakes/fake-bundles.ts';
import { FakeRuntime } from './fakes/fake-runtime.ts';
import { ManualClock, settle } from './fakes/manual-clock.ts';
import { MemoryAuditLog } from './fakes/memory-audit-log.ts';
import { MemoryStore } from './fakes/memory-store.ts';
import type { ExecutionMetrics } from './ports.ts';
import { WarmPools } from './warm-pools.ts';

const admin: Principal = { id: 'key_admin', name: 'admin', scopes: ['admin'], rateLimit: null };

function agent(
  version: string,
  scaling: Record<string, unknown> = { warm: 2 },
  extra: Record<string, unknown> = {},
) {
  return compileManifest(
    AgentManifest.parse({
      apiVersion: 'aegis.dev/v1',
      kind: 'Agent',
      metadata: { name: 'pooled', version },
      spec: { runtime: { language: 'python', entrypoint: 'main.py' }, scaling, ...extra },
    }),
    `/bundles/pooled-${version}`,
  );
}

/** Lets the background work already started (spawns, retirements) finish, then checks — no time passes. */
async function settled(check: () => boolean, what: string) {
  await settle(10);
  assert.ok(check(), what);
}

function setup(options: { maxSandboxes?: number; idleMs?: number; maxConcurrent?: number } = {}) {
  const clock = new ManualClock();
  const runtime = new FakeRuntime(clock);
  const store = new MemoryStore();
  const audit = new MemoryAuditLog({ clock });
  const bundles = new FakeBundles();
  const events = new ExecutionEvents(clock);
  let n = 0;
  let executions: Executions | undefined;
  const pools = new WarmPools(
    {
      runtime,
      audit,
      clock,
      newId: () => `wp_${++n}`,
      busy: () => executions?.stats().running ?? 0,
    },
    {
      maxSandboxes: options.maxSandboxes ?? 10,
      maintenanceMs: 10,
      ...(options.idleMs === undefined ? {} : { idleTimeoutMsOverride: options.idleMs }),
    },
  );
  const metrics: ExecutionMetrics = {
    executionFinished: () => {},
    sandboxStarted: () => {},
    dequeued: () => {},
  };
  let e = 0;
  executions = new Executions(
    {
      runtime,
      store,
      bundles,
      audit,
      clock,
      ids: { executionId: () => `ex_${++e}` },
      identity: { current: () => ({ host: 't', pid: 1, startTicks: 1 }), isAlive: () => true },
      events,
      metrics,
      pools,
    },
    { maxConcurrent: options.maxConcurrent ?? 4, maxQueued: 100 },
  );
  const agentDeps = {
    store,
    bundles,
    audit,
    clock,
    onAgentChanged: (name: string) => {
      void (async () => {
        const summary = await store.getAgent(name);
        if (!summary) return;
        await pools.drainAgent(name, 'redeployed', summary.activeRevision);
        const bytes = await store.readBundle(summary.active.digest);
        pools.ensure(await bundles.open(summary.active.digest, bytes!), summary.activeRevision);
      })();
    },
  };
  return { clock, runtime, store, audit, pools, executions, agentDeps };
}

const warmIds = (runtime: FakeRuntime) =>
  [...runtime.states].filter(([, state]) => state === 'warm').map(([id]) => id);
const kinds = (audit: MemoryAuditLog, kind: string) => audit.entries.filter((entry) => entry.kind === kind);

describe('warm pools', () => {
  it('fill on deploy; executions run in pre-spawned instances, each used once; the pool refills', async () => {
    const s = setup();
    await deployAgent(s.agentDeps, admin, FakeBundles.encode(agent('1.0.0')));
    await settled(() => warmIds(s.runtime).length === 2, 'two warm instances');
    assert.ok(s.runtime.spawned.every((spec) => spec.prewarm === true && spec.executionId.startsWith('wp_')));
    const before = new Set(warmIds(s.runtime));
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const record = await s.executions.submit(admin, { agent: 'pooled' });
      ids.push(record.id);
      assert.equal((await s.executions.wait(admin, record.id, 5000)).status, 'succeeded');
      await settled(() => warmIds(s.runtime).length === 2, 'refilled');
    }
    assert.equal(new Set(s.runtime.executed).size, s.runtime.executed.length, 'no instance is ever reused');
    assert.ok(
      before.has(s.runtime.executed[0]!),
      'the first execution ran in an instance spawned before it existed',
    );
    for (const id of ids) {
      const started = s.audit.entries.find(
        (entry) => entry.kind === 'execution.started' && entry.execution === id,
      );
      assert.equal(started?.data['warm'], true);
    }
    assert.ok(s.runtime.executed.every((id) => s.runtime.status(id) === 'terminated'));
    assert.equal(s.runtime.bindings.get(s.runtime.executed[0]!)?.executionId, ids[0]);
    await s.pools.close();
  });

  it('scales to zero after the idle timeout and wakes on the next execution (which starts cold)', async () => {
    const s = setup({ idleMs: 60 });
    await deployAgent(s.agentDeps, admin, FakeBundles.encode(agent('1.0.0')));
    await settled(() => warmIds(s.runtime).length === 2, 'warm');
    await s.clock.advance(50);
    assert.equal(warmIds(s.runtime).length, 2, 'still warm before the idle timeout');
    await s.clock.advance(10);
    assert.equal(warmIds(s.runtime).length, 0, 'scaled to zero at the idle timeout');
    assert.deepEqual(
      kinds(s.audit, 'instance.retired').map((entry) => entry.data['reason']),
      ['idle', 'idle'],
    );
    assert.equal(s.pools.view('pooled')[0]?.state, 'cold');
    const record = await s.executions.submit(admin, { agent: 'pooled' });
    await s.executions.wait(admin, record.id, 5000);
    const started = s.audit.entries.find(
      (entry) => entry.kind === 'execution.started' && entry.execution === record.id,
    );
    assert.equal(started?.data['warm'], undefined, 'cold start');
    await settled(() => warmIds(s.runtime).length === 2, 'woken and refilled');
    await s.pools.close();
  });

  it('drains the old revision on redeploy and on shutdown', async () => {
    const s = setup();
    await deployAgent(s.agentDeps, admin, FakeBundles.encode(agent('1.0.0')));
    await settled(() => warmIds(s.runtime).length === 2, 'rev 1 warm');
    const rev1 = warmIds(s.runtime);
    await deployAgent(s.agentDeps, admin, FakeBundles.encode(agent('1.1.0')));
    await settled(() => rev1.every((id) => s.runtime.status(id) === 'terminated'), 'rev 1 drained');
    await settled(() => warmIds(s.runtime).length === 2, 'rev 2 warm');
    assert.deepEqual(
      s.pools.view('pooled').map((pool) => pool.revision),
      [2],
    );
    assert.equal(
      kinds(s.audit, 'instance.retired').filter((entry) => entry.data['reason'] === 'redeployed').length,
      2,
    );
    await s.pools.close();
    assert.equal(warmIds(s.runtime).length, 0);
    assert.equal(kinds(s.audit, 'instance.retired').filter((e) => e.data['reason'] === 'shutdown').length, 2);
  });

  it('replaces a warm instance that dies, and audits it', async () => {
    const s = setup();
    await deployAgent(s.agentDeps, admin, FakeBundles.encode(agent('1.0.0')));
    await settled(() => warmIds(s.runtime).length === 2, 'warm');
    const victim = warmIds(s.runtime)[0]!;
    s.runtime.die(victim);
    await s.clock.advance(10); // one maintenance tick
    await settled(
      () =>
        kinds(s.audit, 'instance.retired').some(
          (e) => e.data['instance'] === victim && e.data['reason'] === 'died',
        ),
      'death noticed',
    );
    await settled(() => warmIds(s.runtime).length === 2, 'replaced');
    assert.ok(!warmIds(s.runtime).includes(victim));
    await s.pools.close();
  });

  it('stays within the node capacity and makes room for a cold start', async () => {
    const s = setup({ maxSandboxes: 2 });
    await deployAgent(s.agentDeps, admin, FakeBundles.encode(agent('1.0.0', { warm: 5 })));
    await settled(() => warmIds(s.runtime).length === 2, 'capacity reached');
    await s.clock.advance(50); // five maintenance ticks, each trying to refill
    assert.equal(warmIds(s.runtime).length, 2, 'never more than maxSandboxes');
    await s.pools.makeRoom();
    assert.equal(warmIds(s.runtime).length, 1);
    await s.pools.close();
  });

  it('never pools agents with secrets, and honours spec.scaling.maxConcurrent', async () => {
    const s = setup();
    const secretive = agent(
      '1.0.0',
      { warm: 3, maxConcurrent: 1 },
      {
        secrets: [{ name: 'TOKEN', env: 'TOKEN', hosts: ['api.example.com'] }],
      },
    );
    assert.equal(s.pools.targetFor(secretive), 0);
    s.pools.ensure(secretive, 1);
    assert.equal(s.runtime.spawned.length, 0);

    await deployAgent(s.agentDeps, admin, FakeBundles.encode(agent('2.0.0', { warm: 0, maxConcurrent: 1 })));
    s.runtime.script = { hang: true };
    const first = await s.executions.submit(admin, { agent: 'pooled' });
    const second = await s.executions.submit(admin, { agent: 'pooled' });
    await settled(() => s.executions.stats().running === 1, 'one running');
    await s.clock.advance(30);
    assert.equal(s.executions.stats().running, 1, 'the second waits for the agent limit');
    assert.equal(s.executions.stats().queued, 1);
    await s.executions.cancel(admin, first.id);
    await settled(
      () => s.executions.stats().running === 1 && s.executions.stats().queued === 0,
      'second started',
    );
    await s.executions.cancel(admin, second.id);
    await s.pools.close();
  });
});
