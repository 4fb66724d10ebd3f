/**
 * Live sandboxes in a cluster (ADR 0101 amended by 0134), over the fake store and a ManualClock: a sandbox record
 * carries the node id + epoch that holds it; the node that declares another dead marks that node's sandboxes
 * `terminated` (node-lost); a node restarted under a new hostname reaps its previous life's sandboxes; a request for
 * a sandbox another live node holds is refused naming that node, not answered "no sandbox".
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Principal } from '../domain/auth/api-key.ts';
import { isAegisError } from '../domain/errors.ts';
import type { SandboxRecord } from '../domain/live-sandbox.ts';
import { ExecutionEvents } from './execution-events.ts';
import { Executions } from './executions.ts';
import { FakeBundles } from './fakes/fake-bundles.ts';
import { FakeRuntime } from './fakes/fake-runtime.ts';
import { ManualClock } from './fakes/manual-clock.ts';
import { MemoryAuditLog } from './fakes/memory-audit-log.ts';
import { MemoryStore } from './fakes/memory-store.ts';
import { LiveSandboxes } from './live-sandboxes.ts';
import type { LiveRuntime } from './ports.ts';

const admin: Principal = { id: 'key_admin', name: 'admin', scopes: ['admin'], rateLimit: null };
const LEASE_MS = 1000;

function cluster() {
  const clock = new ManualClock();
  const store = new MemoryStore();
  const bundles = new FakeBundles();
  const node = (nodeId: string, host = `${nodeId}.host`) => {
    const audit = new MemoryAuditLog({ clock });
    const identity = { current: () => ({ host, pid: 1, startTicks: 1 }), isAlive: () => true };
    // Declared before use by the closures below (the composition root wires them the same way).
    const refs: { sandboxes?: LiveSandboxes } = {};
    const executions = new Executions(
      {
        runtime: new FakeRuntime(clock),
        store,
        bundles,
        audit,
        clock,
        ids: { executionId: () => `ex_${nodeId}` },
        identity,
        events: new ExecutionEvents(clock),
        metrics: { executionFinished: () => {}, sandboxStarted: () => {}, dequeued: () => {} },
        node: { nodeId, labels: {} },
        onNodeDead: (dead) => refs.sandboxes!.nodeLost(dead),
      },
      { maxConcurrent: 1, maxQueued: 10, leaseMs: LEASE_MS, heartbeatMs: 1e9 },
    );
    const sandboxes = new LiveSandboxes(
      {
        // No sandbox is started in these tests: the runtime is never called.
        runtime: {} as LiveRuntime,
        runtimeName: 'sandbox',
        store,
        bundles,
        audit,
        clock,
        ids: { executionId: () => `sb_${nodeId}` },
        identity,
        node: { nodeId, epoch: () => executions.nodeState().epoch },
      },
      { maxSandboxes: 4 },
    );
    refs.sandboxes = sandboxes;
    return { audit, executions, sandboxes };
  };
  return { clock, store, bundles, node };
}

/** A stored sandbox record as the holding node writes it (running, held by `node` at `epoch`). */
function held(id: string, node: string, epoch: number, at: number): SandboxRecord {
  return {
    id,
    agent: { name: 'demo', revision: 1, version: '1.0.0' },
    runtime: 'sandbox',
    status: 'running',
    reason: null,
    createdAt: new Date(at).toISOString(),
    expiresAt: new Date(at + 3_600_000).toISOString(),
    idleTimeoutMs: null,
    metadata: {},
    owner: admin.id,
    usage: null,
    holder: { host: `${node}.host`, pid: 1, startTicks: 1, node, epoch },
  };
}

describe('live sandboxes owned by node id + epoch', () => {
  it('the node that declares another dead records its sandboxes terminated (node-lost), audited', async () => {
    const c = cluster();
    const a = c.node('a');
    const b = c.node('b');
    await a.executions.recover();
    await b.executions.recover();
    const epochA = a.executions.nodeState().epoch!;
    await c.store.putSandbox(held('sb_1', 'a', epochA, c.clock.now()));
    await c.store.putSandbox(held('sb_2', 'b', b.executions.nodeState().epoch!, c.clock.now()));

    await c.clock.advance(LEASE_MS + 500); // a is paused: no heartbeat
    await b.executions.heartbeat();

    const lost = await c.store.getSandbox('sb_1');
    assert.equal(lost?.status, 'terminated');
    assert.match(lost?.reason ?? '', /^node-lost: node a /);
    assert.equal(lost?.holder, null);
    assert.deepEqual(
      (await b.audit.list('sb_1')).map((entry) => [entry.kind, entry.data['reason']]),
      [['sandbox.terminated', lost?.reason]],
    );
    assert.equal((await c.store.getSandbox('sb_2'))?.status, 'running', "the sweeper's own stays");
  });

  it('a node restarted under a new hostname reaps the sandboxes of its previous life', async () => {
    const c = cluster();
    const first = c.node('a', 'pod-1');
    await first.executions.recover();
    await c.store.putSandbox(held('sb_old', 'a', first.executions.nodeState().epoch!, c.clock.now()));

    // Same node id and data, a new pod: host + pid say nothing about the old record; the epoch does.
    const second = c.node('a', 'pod-2');
    await second.executions.recover();
    assert.deepEqual(await second.sandboxes.recover(), ['sb_old']);
    const record = await c.store.getSandbox('sb_old');
    assert.equal(record?.status, 'terminated');
    assert.equal(record?.reason, 'orchestrator-restarted');
  });

  it("recovery leaves another live node's sandboxes alone and ends a dead node's", async () => {
    const c = cluster();
    const a = c.node('a');
    const b = c.node('b');
    await a.executions.recover();
    await b.executions.recover();
    await c.store.putSandbox(held('sb_b', 'b', b.executions.nodeState().epoch!, c.clock.now()));
    await c.store.putSandbox(held('sb_gone', 'c', 1, c.clock.now()));

    assert.deepEqual(await a.sandboxes.recover(), ['sb_gone']);
    assert.equal((await c.store.getSandbox('sb_b'))?.status, 'running');
    assert.match((await c.store.getSandbox('sb_gone'))?.reason ?? '', /^node-lost: node c /);
  });

  it('a request for a sandbox another live node holds names that node (CONFLICT), not "no sandbox"', async () => {
    const c = cluster();
    const a = c.node('a');
    const b = c.node('b');
    await a.executions.recover();
    await b.executions.recover();
    await c.store.putSandbox(held('sb_b', 'b', b.executions.nodeState().epoch!, c.clock.now()));

    const held409 = (error: unknown) =>
      isAegisError(error) &&
      error.code === 'CONFLICT' &&
      /held by node b/.test(error.message) &&
      (error.details as { node?: string } | undefined)?.node === 'b';
    await assert.rejects(a.sandboxes.exec(admin, 'sb_b', { cmd: ['true'] }), held409);
    await assert.rejects(a.sandboxes.kill(admin, 'sb_b'), held409);
    await assert.rejects(a.sandboxes.stat(admin, 'sb_b', '/workspace'), held409);
    // Reading the record works from any node.
    assert.equal((await a.sandboxes.get(admin, 'sb_b')).status, 'running');
    // Another key's sandbox still answers like a missing one (its existence is not disclosed).
    const other: Principal = { id: 'key_other', name: 'other', scopes: ['execute', 'read'], rateLimit: null };
    await assert.rejects(a.sandboxes.exec(other, 'sb_b', { cmd: ['true'] }), { code: 'NOT_FOUND' });
    // An unknown id is still NOT_FOUND.
    await assert.rejects(a.sandboxes.exec(admin, 'sb_none', { cmd: ['true'] }), { code: 'NOT_FOUND' });
  });
});
