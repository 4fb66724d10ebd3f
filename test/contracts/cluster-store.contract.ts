/**
 * What every `Store` must do as a cluster's shared queue (docs/adr/0101-cluster-claims-and-fencing.md): the node
 * registry (register, heartbeat, declare dead), claims (placement, runtime, priority, exclusivity), fences (a
 * write under a lost claim is refused and changes nothing), cancel requests and signals. Run by storeContract.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { ClaimRequest, ClusterTopic, Store } from '../../src/app/ports.ts';
import type { NodeRegistration } from '../../src/domain/cluster/node.ts';
import { isAegisError } from '../../src/domain/errors.ts';
import type { ExecutionRecord } from '../../src/domain/execution.ts';
import { pollUntil } from '../support/poll.ts';
import { record, type StoreUnderTest } from './execution-store.contract.ts';

const T0 = '2025-06-01T00:00:00.000Z';
const LEASE = 10_000;
const OWNER = { host: 'h', pid: 1, startTicks: 1 };

function at(seconds: number): string {
  return new Date(Date.parse(T0) + seconds * 1000).toISOString();
}

export function registration(id: string, overrides: Partial<NodeRegistration> = {}): NodeRegistration {
  return {
    id,
    kind: 'server',
    labels: {},
    runtimes: ['sandbox'],
    capacity: 4,
    host: `${id}.example`,
    version: '0.0.0',
    at: T0,
    leaseMs: LEASE,
    ...overrides,
  };
}

function queued(id: string, overrides: Partial<ExecutionRecord> = {}): ExecutionRecord {
  return record({ id, status: 'queued', createdAt: at(Number(id.replace(/\D/g, '')) || 0), ...overrides });
}

function claim(nodeId: string, epoch: number, overrides: Partial<ClaimRequest> = {}): ClaimRequest {
  return {
    nodeId,
    epoch,
    labels: {},
    runtimes: ['sandbox'],
    limit: 10,
    owner: OWNER,
    at: T0,
    leaseMs: LEASE,
    ...overrides,
  };
}

export function clusterStoreContract(name: string, open: () => Promise<StoreUnderTest<Store>>): void {
  describe(`ClusterStore contract: ${name}`, () => {
    let subject: StoreUnderTest<Store>;
    let store: Store;

    beforeEach(async () => {
      subject = await open();
      store = subject.store;
    });
    afterEach(async () => {
      await subject.cleanup();
    });

    it('registers a node at epoch 1, bumps the epoch on every re-registration, lists nodes by id', async () => {
      const a = await store.registerNode(registration('node-b', { labels: { region: 'eu' }, capacity: 2 }));
      assert.deepEqual(a, {
        id: 'node-b',
        kind: 'server',
        state: 'live',
        labels: { region: 'eu' },
        runtimes: ['sandbox'],
        capacity: 2,
        host: 'node-b.example',
        version: '0.0.0',
        startedAt: T0,
        heartbeatAt: T0,
        leaseExpiresAt: at(10),
        epoch: 1,
      });
      await store.registerNode(registration('node-a', { kind: 'edge' }));
      const again = await store.registerNode(registration('node-b', { host: 'renamed', at: at(5) }));
      assert.equal(again.epoch, 2);
      assert.equal(again.host, 'renamed');
      assert.deepEqual(
        (await store.listNodes()).map((n) => [n.id, n.kind, n.epoch]),
        [
          ['node-a', 'edge', 1],
          ['node-b', 'server', 2],
        ],
      );
    });

    it('renews a lease only at the current epoch; declares a node dead once, after its lease, bumping its epoch', async () => {
      const node = await store.registerNode(registration('n1'));
      assert.deepEqual(await store.heartbeatNode({ nodeId: 'n1', epoch: 1, at: at(5), leaseMs: LEASE }), {
        cancelRequested: [],
      });
      assert.equal((await store.listNodes())[0]?.leaseExpiresAt, at(15));
      assert.equal(await store.declareNodeDead('n1', node.epoch, at(14)), false, 'lease not over yet');
      const sweeps = await Promise.all([
        store.declareNodeDead('n1', node.epoch, at(16)),
        store.declareNodeDead('n1', node.epoch, at(16)),
      ]);
      assert.deepEqual(sweeps.sort(), [false, true], 'exactly one sweeper wins');
      const dead = (await store.listNodes())[0];
      assert.equal(dead?.state, 'dead');
      assert.equal(dead?.epoch, 2);
      assert.equal(
        await store.heartbeatNode({ nodeId: 'n1', epoch: 1, at: at(17), leaseMs: LEASE }),
        undefined,
      );
      assert.equal(await store.setNodeState('n1', 1, 'draining', at(17)), false);
      const back = await store.registerNode(registration('n1', { at: at(18) }));
      assert.equal(back.state, 'live');
      assert.equal(back.epoch, 3);
    });

    it('claims queued executions oldest first (priority before age), by runtime, placement and excluded agents', async () => {
      await store.registerNode(registration('n1', { labels: { region: 'eu', gpu: 'yes' } }));
      await store.createExecution(queued('e1'));
      await store.createExecution(queued('e2', { runtime: 'gvisor' }));
      await store.createExecution(queued('e3', { placement: { region: 'us' } }));
      await store.createExecution(queued('e4', { placement: { region: 'eu' } }));
      await store.createExecution(queued('e5', { agent: { name: 'busy', version: '1' } }));
      await store.createExecution(queued('e6', { priority: 1 }));
      await store.createExecution(record({ id: 'e7', status: 'running', createdAt: at(7) }));
      const labels = { region: 'eu', gpu: 'yes' };
      const claimed = await store.claimExecutions(
        claim('n1', 1, { labels, excludeAgents: ['busy'], limit: 2 }),
      );
      assert.deepEqual(
        claimed.map((c) => c.record.id),
        ['e6', 'e1'],
      );
      for (const c of claimed) {
        assert.deepEqual(c.fence, { nodeId: 'n1', epoch: 1, fence: 1 });
        assert.equal(c.record.node, 'n1');
        assert.deepEqual(c.record.owner, OWNER);
      }
      const rest = await store.claimExecutions(claim('n1', 1, { labels, excludeAgents: ['busy'] }));
      assert.deepEqual(
        rest.map((c) => c.record.id),
        ['e4'],
      );
      assert.equal((await store.getExecution('e4'))?.placement?.['region'], 'eu');
      assert.equal((await store.getExecution('e3'))?.node, undefined);
      assert.equal(
        await store.countQueued(),
        6,
        'claimed executions stay queued until their holder starts them',
      );
      assert.deepEqual(await store.claimExecutions(claim('n1', 2)), [], 'a stale epoch claims nothing');
    });

    it('a write under a lost claim is FENCED and changes nothing; the new holder writes', async () => {
      await store.registerNode(registration('n1'));
      await store.registerNode(registration('n2'));
      await store.createExecution(queued('e1'));
      const [mine] = await store.claimExecutions(claim('n1', 1));
      assert.ok(mine);
      await store.updateExecution('e1', { status: 'running', startedAt: at(1) }, mine.fence);
      // n1 stops heartbeating; n2 sweeps.
      await store.heartbeatNode({ nodeId: 'n2', epoch: 1, at: at(12), leaseMs: LEASE });
      assert.equal(await store.declareNodeDead('n1', 1, at(12)), true);
      const orphans = await store.listOrphanedExecutions();
      assert.deepEqual(
        orphans.map((o) => [o.record.id, o.record.status, o.fence]),
        [['e1', 'running', mine.fence]],
      );
      const owner2 = { host: 'h2', pid: 2, startTicks: 2 };
      const taken = await store.takeOverExecution(
        'e1',
        mine.fence,
        { nodeId: 'n2', epoch: 1, owner: owner2 },
        at(12),
        LEASE,
      );
      assert.deepEqual(taken?.fence, { nodeId: 'n2', epoch: 1, fence: 2 });
      assert.equal(
        await store.takeOverExecution(
          'e1',
          mine.fence,
          { nodeId: 'n2', epoch: 1, owner: owner2 },
          at(12),
          LEASE,
        ),
        undefined,
        'a second sweeper loses',
      );
      await assert.rejects(
        store.updateExecution('e1', { status: 'succeeded', output: { late: true } }, mine.fence),
        (error) =>
          isAegisError(error) && error.code === 'FENCED' && /node n2 holds it now/.test(error.message),
      );
      assert.equal((await store.getExecution('e1'))?.status, 'running');
      const final = await store.updateExecution(
        'e1',
        { status: 'failed', reason: 'node-lost: n1', finishedAt: at(12) },
        taken?.fence,
      );
      assert.equal(final.status, 'failed');
      assert.deepEqual(await store.listOrphanedExecutions(), []);
    });

    it('a node that re-registered fences its previous life out; its old claims are orphans', async () => {
      await store.registerNode(registration('n1'));
      await store.createExecution(queued('e1'));
      const [old] = await store.claimExecutions(claim('n1', 1));
      await store.registerNode(registration('n1', { host: 'new-hostname', at: at(3) }));
      await assert.rejects(store.updateExecution('e1', { status: 'running' }, old?.fence), {
        code: 'FENCED',
      });
      assert.deepEqual(
        (await store.listOrphanedExecutions()).map((o) => o.record.id),
        ['e1'],
      );
    });

    it('unclaim gives an execution back to the queue with its fence kept', async () => {
      await store.registerNode(registration('n1'));
      await store.createExecution(queued('e1'));
      const [first] = await store.claimExecutions(claim('n1', 1));
      const back = await store.updateExecution('e1', { status: 'queued', unclaim: true }, first?.fence);
      assert.equal(back.node, undefined);
      const [second] = await store.claimExecutions(claim('n1', 1));
      assert.equal(second?.fence.fence, 2);
      await assert.rejects(store.updateExecution('e1', { status: 'running' }, first?.fence), {
        code: 'FENCED',
      });
    });

    it('updates a queued execution only while nobody claimed it; cancel requests reach the holder', async () => {
      await store.registerNode(registration('n1'));
      await store.createExecution(queued('e1'));
      await store.createExecution(queued('e2'));
      const killed = await store.updateQueuedExecution('e1', { status: 'killed', reason: 'cancelled' });
      assert.equal(killed?.status, 'killed');
      assert.equal(await store.updateQueuedExecution('e1', { status: 'killed' }), undefined);
      const [held] = await store.claimExecutions(claim('n1', 1));
      assert.equal(held?.record.id, 'e2');
      assert.equal(
        await store.updateQueuedExecution('e2', { status: 'killed' }),
        undefined,
        'claimed meanwhile',
      );
      assert.equal(await store.requestCancel('e2'), true);
      assert.equal(await store.requestCancel('e1'), false, 'already ended');
      assert.deepEqual(await store.heartbeatNode({ nodeId: 'n1', epoch: 1, at: at(1), leaseMs: LEASE }), {
        cancelRequested: ['e2'],
      });
    });

    it('signals reach listeners (this node included)', async () => {
      const heard: string[] = [];
      const stop = store.onSignal((topic: ClusterTopic, id: string) => heard.push(`${topic}:${id}`));
      try {
        // The PostgreSQL listener connects asynchronously: signal until it hears.
        await pollUntil('a signal to arrive', async () => {
          await store.signal('queue', 'e9');
          return heard.includes('queue:e9');
        });
      } finally {
        stop();
      }
    });
  });
}
