/**
 * Two nodes (two `Executions`) sharing one store, over fakes and a ManualClock (ADR 0101): a node whose lease
 * expires is declared dead and its running execution ends `failed` (node-lost) by the sweeping node; the dead node's
 * late write is fenced out; a retryable agent's execution is queued again and run by the survivor; cancel works
 * through a node that does not run the execution.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LifecycleCrossCheck } from '../domain/audit/cluster.ts';
import type { Principal } from '../domain/auth/api-key.ts';
import { compileManifest } from '../domain/manifest/compiled.ts';
import { AgentManifest } from '../domain/manifest/schema.ts';
import { deployAgent } from './agents.ts';
import { ExecutionEvents } from './execution-events.ts';
import { Executions } from './executions.ts';
import { FakeBundles } from './fakes/fake-bundles.ts';
import { FakeRuntime } from './fakes/fake-runtime.ts';
import { ManualClock } from './fakes/manual-clock.ts';
import { MemoryAuditLog } from './fakes/memory-audit-log.ts';
import { MemoryStore } from './fakes/memory-store.ts';

const admin: Principal = { id: 'key_admin', name: 'admin', scopes: ['admin'], rateLimit: null };

async function until(check: () => boolean | Promise<boolean>, what: string) {
  const deadline = Date.now() + 5000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function cluster(agentSpec: Record<string, unknown> = {}) {
  const clock = new ManualClock();
  const store = new MemoryStore();
  const bundles = new FakeBundles();
  let n = 0;
  const node = (
    nodeId: string,
    wrap: (s: MemoryStore) => MemoryStore = (s) => s,
    timing: { readonly heartbeatMs?: number } = {},
  ) => {
    const runtime = new FakeRuntime(clock);
    const audit = new MemoryAuditLog({ clock });
    const events = new ExecutionEvents(clock);
    const executions = new Executions(
      {
        runtime,
        store: wrap(store),
        bundles,
        audit,
        clock,
        ids: { executionId: () => `ex_${nodeId}_${++n}` },
        identity: { current: () => ({ host: `${nodeId}.host`, pid: 1, startTicks: 1 }), isAlive: () => true },
        events,
        metrics: { executionFinished: () => {}, sandboxStarted: () => {}, dequeued: () => {} },
        node: { nodeId, labels: {} },
      },
      // Heartbeats only when a test calls heartbeat(): a node that is not called is a paused node.
      { maxConcurrent: 1, maxQueued: 10, leaseMs: 1000, heartbeatMs: timing.heartbeatMs ?? 1e9 },
    );
    return { runtime, audit, events, executions };
  };
  const deploy = () =>
    deployAgent(
      { store, bundles, audit: new MemoryAuditLog({ clock }), clock },
      admin,
      FakeBundles.encode(
        compileManifest(
          AgentManifest.parse({
            apiVersion: 'aegis.dev/v1',
            kind: 'Agent',
            metadata: { name: 'demo', version: '1.0.0' },
            spec: { runtime: { language: 'python', entrypoint: 'main.py' }, ...agentSpec },
          }),
          '/bundles/demo',
        ),
      ),
    );
  return { clock, store, node, deploy };
}

describe('a cluster of two nodes on one store', () => {
  it('declares a node whose lease expired dead: its execution fails node-lost, its late write is fenced out', async () => {
    const c = cluster();
    await c.deploy();
    const a = c.node('a');
    a.runtime.script = { hang: true };
    await a.executions.recover();
    const record = await a.executions.submit(admin, { agent: 'demo' });
    await until(async () => (await c.store.getExecution(record.id))?.status === 'running', 'a runs it');
    assert.equal((await c.store.getExecution(record.id))?.node, 'a');

    const b = c.node('b');
    await b.executions.recover();
    await c.clock.advance(1500); // a is paused: no heartbeat
    await b.executions.heartbeat();
    const lost = await c.store.getExecution(record.id);
    assert.equal(lost?.status, 'failed');
    assert.match(
      lost?.reason ?? '',
      /^node-lost: node a stopped heartbeating \(its lease expired\) while this execution ran/,
    );
    assert.equal(lost?.node, 'b', 'the sweeping node took it over');
    assert.deepEqual(
      (await b.audit.list(record.id)).map((entry) => [entry.kind, entry.data['status']]),
      [['execution.recovered', 'failed']],
    );
    const nodes = await c.store.listNodes();
    assert.deepEqual(
      nodes.map((node) => [node.id, node.state]),
      [
        ['a', 'dead'],
        ['b', 'live'],
      ],
    );

    // a wakes up: its heartbeat is refused, it aborts the run — whose final write is FENCED — and re-registers.
    await a.executions.heartbeat();
    await until(() => a.executions.stats().running === 0, 'a stops its run');
    const after = await c.store.getExecution(record.id);
    assert.equal(after?.status, 'failed', 'the late "killed" of the fenced-out node did not overwrite it');
    assert.match(after?.reason ?? '', /^node-lost/);
    assert.equal(a.executions.nodeState().epoch, 3, 'registered again under a new epoch');
    assert.equal((await c.store.listNodes())[0]?.state, 'live');
  });

  it('a fenced-out node writes execution.abandoned, not a second finish: verify --cluster finds no contradiction', async () => {
    const c = cluster();
    await c.deploy();
    const a = c.node('a');
    a.runtime.script = { hang: true };
    await a.executions.recover();
    const record = await a.executions.submit(admin, { agent: 'demo' });
    await until(async () => (await c.store.getExecution(record.id))?.status === 'running', 'a runs it');
    const started = (await a.audit.list(record.id)).find((e) => e.kind === 'execution.started');
    assert.equal(started?.data['fence'], 1, 'execution.started carries the claim fence');

    const b = c.node('b');
    await b.executions.recover();
    await c.clock.advance(1500); // a is paused past its lease
    await b.executions.heartbeat();
    assert.equal((await c.store.getExecution(record.id))?.status, 'failed');
    await a.executions.heartbeat(); // a wakes up fenced out and aborts its run
    await until(() => a.executions.stats().running === 0, 'a stops its run');

    const ofA = await a.audit.list(record.id);
    assert.deepEqual(
      ofA.filter((e) => e.kind === 'execution.finished'),
      [],
      'no terminal entry by the node that lost the claim',
    );
    const abandoned = ofA.find((e) => e.kind === 'execution.abandoned');
    assert.equal(abandoned?.data['reason'], 'fenced');
    assert.equal(abandoned?.data['fence'], 1);

    const check = new LifecycleCrossCheck();
    for (const [node, log] of [
      ['a', a.audit],
      ['b', b.audit],
    ] as const) {
      for (const entry of await log.list(record.id)) {
        check.add(
          node,
          { seq: entry.seq, ts: entry.ts, execution: entry.execution, kind: entry.kind },
          entry.data,
        );
      }
    }
    assert.deepEqual(check.finish(), []);
  });

  it('queues a retryable agent execution again (spec.scaling.retryOnNodeLoss) and the survivor runs it', async () => {
    const c = cluster({ scaling: { retryOnNodeLoss: true } });
    await c.deploy();
    const a = c.node('a');
    a.runtime.script = { hang: true };
    await a.executions.recover();
    const record = await a.executions.submit(admin, { agent: 'demo' });
    await until(async () => (await c.store.getExecution(record.id))?.status === 'running', 'a runs it');
    const b = c.node('b');
    b.runtime.script = { outcome: { status: 'succeeded', exitCode: 0 } };
    await b.executions.recover();
    await c.clock.advance(1500);
    await b.executions.heartbeat();
    await until(async () => (await c.store.getExecution(record.id))?.status === 'succeeded', 'b runs it');
    assert.equal((await c.store.getExecution(record.id))?.node, 'b');
    const [recovered] = await b.audit.list(record.id);
    assert.deepEqual([recovered?.kind, recovered?.data['status']], ['execution.recovered', 'queued']);
  });

  it("wakes followers on another node when log lines are stored (a 'logs' signal per batch)", async () => {
    const c = cluster();
    await c.deploy();
    const a = c.node('a');
    a.runtime.script = { hang: true, logs: [{ stream: 'stdout', text: 'hello from a' }] };
    await a.executions.recover();
    const record = await a.executions.submit(admin, { agent: 'demo' });
    await until(async () => (await c.store.getExecution(record.id))?.status === 'running', 'a runs it');
    const b = c.node('b');
    await b.executions.recover();
    const seen: string[] = [];
    b.events.subscribe(record.id, (event) => seen.push(event));
    await a.executions.cancel(admin, record.id); // the run ends: its last batch is stored
    await until(() => seen.includes('logs'), "b's followers to hear of the stored lines");
    assert.deepEqual(
      (await c.store.readLogs(record.id)).map((line) => line.text),
      ['hello from a'],
    );
  });

  it('recovery writes no execution.recovered for what another node created or settled (its chain may lag)', async () => {
    const c = cluster();
    await c.deploy();
    const a = c.node('a');
    a.runtime.script = { hang: true };
    await a.executions.recover();
    const running = await a.executions.submit(admin, { agent: 'demo' });
    await until(async () => (await c.store.getExecution(running.id))?.status === 'running', 'a runs it');
    const queued = await a.executions.submit(admin, { agent: 'demo' }); // a is full: nobody holds it
    const b = c.node('b');
    await b.executions.cancel(admin, queued.id); // b settles it: its execution.finished is in b's chain
    assert.equal((await c.store.getExecution(queued.id))?.status, 'killed');

    // c starts; its ledger (and, with replication lag, the cluster's) has none of a's or b's entries.
    const third = c.node('c');
    const result = await third.executions.recover();
    assert.deepEqual(result.reconciled, []);
    assert.deepEqual(
      third.audit.entries.filter((e) => e.kind === 'execution.recovered').map((e) => e.execution),
      [],
    );
  });

  it('names a restart in the node-lost reason: the holder registered again under a new epoch', async () => {
    const c = cluster();
    await c.deploy();
    const a = c.node('a');
    a.runtime.script = { hang: true };
    await a.executions.recover();
    const record = await a.executions.submit(admin, { agent: 'demo' });
    await until(async () => (await c.store.getExecution(record.id))?.status === 'running', 'a runs it');
    // a's process restarts (kill -9, a new pod with the same data): it registers again before sweeping — and b's
    // sweep gets to its execution first. No lease expired: the new epoch alone orphans it.
    await c.store.registerNode({
      id: 'a',
      kind: 'server',
      labels: {},
      runtimes: ['fake'],
      capacity: 1,
      host: 'a2.host',
      version: 'test',
      at: new Date(c.clock.now()).toISOString(),
      leaseMs: 1000,
    });
    const b = c.node('b');
    await b.executions.recover();
    const lost = await c.store.getExecution(record.id);
    assert.equal(lost?.status, 'failed');
    assert.match(
      lost?.reason ?? '',
      /^node-lost: node a restarted \(new epoch 2; it held this execution under epoch 1\) while this execution ran/,
    );
    assert.equal((await c.store.listNodes())[0]?.state, 'live', 'a restarted is not declared dead');
  });

  it('renews the lease on its own timer: a sweep slower than the lease does not get a live node declared dead', async () => {
    // Seen under load: the heartbeat renewed, then swept, then claimed, all behind one in-flight guard — a sweep
    // that took longer than the lease skipped the renewals and the others declared a live, working node dead.
    const c = cluster();
    await c.deploy();
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let slow = false;
    let sweeping = false;
    const a = c.node(
      'a',
      (store) =>
        new Proxy(store, {
          get(target, property) {
            if (property === 'listNodes') {
              return async () => {
                if (slow) {
                  sweeping = true;
                  await gate; // the sweep's first store call hangs (a loaded database)
                }
                return target.listNodes();
              };
            }
            const value = Reflect.get(target, property, target);
            return typeof value === 'function' ? value.bind(target) : value;
          },
        }),
      { heartbeatMs: 300 },
    );
    a.runtime.script = { hang: true };
    await a.executions.recover();
    const record = await a.executions.submit(admin, { agent: 'demo' });
    await until(async () => (await c.store.getExecution(record.id))?.status === 'running', 'a runs it');
    slow = true;
    for (let i = 0; i < 5; i++) await c.clock.advance(300); // 1500 ms: one and a half leases
    assert.ok(sweeping, "a's sweep is stuck");

    const b = c.node('b');
    await b.executions.recover();
    await b.executions.heartbeat();
    const nodes = await c.store.listNodes();
    assert.deepEqual(
      nodes.map((node) => [node.id, node.state]),
      [
        ['a', 'live'],
        ['b', 'live'],
      ],
      'a renewed its lease while its sweep hung',
    );
    assert.ok(
      Date.parse(nodes[0]?.leaseExpiresAt ?? '') > c.clock.now(),
      `a's lease (${nodes[0]?.leaseExpiresAt}) is in the future`,
    );
    const still = await c.store.getExecution(record.id);
    assert.equal(still?.status, 'running');
    assert.equal(still?.node, 'a');

    release();
    await a.executions.heartbeat();
    assert.equal(a.executions.nodeState().epoch, 1, 'never fenced out');
  });

  it('a node that stalled past its lease between claim and start does not start what another node took over', async () => {
    // Seen with 3 server processes on one loaded host: a node stalled (event loop, database) longer than its lease
    // after claiming; the others declared it dead, queued its claimed-not-started execution again, another node
    // claimed and started it — and the stalled node, waking up, spawned it too (a second start in its ledger; on a
    // shared host its teardown on FENCED removed the new holder's cgroup: the real run failed "not started").
    const c = cluster();
    await c.deploy();
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let stalled = false;
    let resumed = false;
    const a = c.node(
      'a',
      (store) =>
        new Proxy(store, {
          get(target, property) {
            if (property === 'claimExecutions') {
              return async (...args: Parameters<MemoryStore['claimExecutions']>) => {
                const claimed = await target.claimExecutions(...args);
                if (claimed.length > 0) {
                  stalled = true;
                  await gate; // a stalls here: claimed, not yet started
                  resumed = true;
                }
                return claimed;
              };
            }
            const value = Reflect.get(target, property, target);
            return typeof value === 'function' ? value.bind(target) : value;
          },
        }),
    );
    await a.executions.recover();
    const record = await a.executions.submit(admin, { agent: 'demo' });
    await until(() => stalled, 'a claims it and stalls');
    assert.equal((await c.store.getExecution(record.id))?.node, 'a');

    const b = c.node('b');
    b.runtime.script = { outcome: { status: 'succeeded', exitCode: 0 } };
    await b.executions.recover();
    await c.clock.advance(1500); // past a's lease: b declares it dead and queues the execution again
    await b.executions.heartbeat();
    await until(async () => (await c.store.getExecution(record.id))?.status === 'succeeded', 'b runs it');

    release();
    await until(() => resumed, 'a wakes up');
    await until(() => a.executions.stats().running === 0, 'a gives it up');
    assert.deepEqual(
      a.runtime.spawned.map((spec) => spec.executionId),
      [],
      'the stalled node spawned nothing for an execution it no longer holds',
    );
    assert.deepEqual(
      (await a.audit.list(record.id)).map((entry) => entry.kind),
      ['execution.created'],
      'no execution.started in the stalled node ledger',
    );
    const final = await c.store.getExecution(record.id);
    assert.equal(final?.status, 'succeeded');
    assert.equal(final?.node, 'b');
  });

  it('cancels through a node that does not run the execution', async () => {
    const c = cluster();
    await c.deploy();
    const a = c.node('a');
    a.runtime.script = { hang: true };
    await a.executions.recover();
    const record = await a.executions.submit(admin, { agent: 'demo' });
    await until(async () => (await c.store.getExecution(record.id))?.status === 'running', 'a runs it');
    const b = c.node('b');
    await b.executions.recover();
    const final = await b.executions.cancel(admin, record.id);
    assert.equal(final.status, 'killed');
    assert.match(final.reason ?? '', /another node/);
    // A queued one (nobody holds it) is killed by the cancelling node itself.
    const queued = await a.executions.submit(admin, { agent: 'demo' });
    await until(async () => (await c.store.getExecution(queued.id))?.status === 'running', 'a runs the next');
    await b.executions.cancel(admin, queued.id);
    assert.equal((await c.store.getExecution(queued.id))?.status, 'killed');
  });
});
