/**
 * What every swarm store (bus + locks, docs/adr/0144-swarm-bus-and-locks.md) must do: per-topic seqs in order and
 * isolated by swarm; locks granted to one holder at a time, tokens that only grow, FIFO waiters, expired leases
 * taken over, stale tokens refused. Run on the fake, SQLite and PostgreSQL.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { ExecutionStore, RetentionStore } from '../../src/app/ports.ts';
import type { AcquireRequest, SwarmStore } from '../../src/app/swarm-locks.ts';
import { record } from './execution-store.contract.ts';

export interface SwarmStoreUnderTest {
  readonly store: SwarmStore;
  /** The execution store the swarm tables live beside (SQL stores): retention prunes a swarm's messages with it. */
  readonly executions?: Pick<ExecutionStore, 'createExecution'> & Pick<RetentionStore, 'pruneExecutions'>;
  close(): Promise<void>;
}

const T0 = Date.parse('2025-06-01T00:00:00.000Z');
const at = (seconds: number) => new Date(T0 + seconds * 1000).toISOString();

function message(swarm: string, topic: string, n: number) {
  const body = JSON.stringify({ n });
  return { swarm, topic, sender: 'ex_1', body, sizeBytes: body.length, digest: `d${n}`, publishedAt: at(n) };
}

function ask(holder: string, overrides: Partial<AcquireRequest> = {}): AcquireRequest {
  return {
    scope: 'swarm:root',
    name: 'db',
    holder,
    node: 'node-1',
    waiter: `${holder}#1`,
    at: at(0),
    ttlMs: 10_000,
    waiterUntil: at(3),
    ...overrides,
  };
}

export function swarmStoreContract(name: string, open: () => Promise<SwarmStoreUnderTest>): void {
  describe(`SwarmStore contract: ${name}`, () => {
    let subject: SwarmStoreUnderTest;
    beforeEach(async () => {
      subject = await open();
    });
    afterEach(async () => {
      await subject.close();
    });

    it('numbers messages per topic in order and reads after a cursor', async () => {
      const { store } = subject;
      const seqs = [];
      for (let n = 1; n <= 5; n++) seqs.push((await store.appendMessage(message('s1', 'a', n))).seq);
      assert.deepEqual(seqs, [1, 2, 3, 4, 5]);
      assert.equal(
        (await store.appendMessage(message('s1', 'b', 9))).seq,
        1,
        'another topic has its own seqs',
      );
      const after2 = await store.readMessages('s1', 'a', 2, 100);
      assert.deepEqual(
        after2.map((m) => [m.seq, JSON.parse(m.body).n]),
        [
          [3, 3],
          [4, 4],
          [5, 5],
        ],
      );
      assert.equal(after2[0]?.digest, 'd3');
      assert.equal(after2[0]?.sender, 'ex_1');
      assert.deepEqual(
        (await store.readMessages('s1', 'a', 0, 2)).map((m) => m.seq),
        [1, 2],
      );
      assert.deepEqual(await store.readMessages('s2', 'a', 0, 100), [], "another swarm's topic is empty");
    });

    it('shows a swarm: its last messages over all topics, oldest first; its locks by name', async () => {
      const { store } = subject;
      await store.appendMessage(message('s1', 'b', 1));
      await store.appendMessage(message('s1', 'a', 2));
      await store.appendMessage(message('s2', 'a', 3));
      await store.appendMessage(message('s1', 'a', 4));
      const recent = await store.recentMessages('s1', 2);
      assert.deepEqual(
        recent.map((m) => [m.topic, m.seq]),
        [
          ['a', 1],
          ['a', 2],
        ],
      );
      assert.equal((await store.recentMessages('s1', 10)).length, 3);
      assert.deepEqual(await store.recentMessages('nobody', 10), []);
      await store.acquireLock(ask('ex_a', { name: 'z' }));
      await store.acquireLock(ask('ex_b', { name: 'y', waiter: 'ex_b#1' }));
      await store.releaseLock('swarm:root', 'y', 1, 'ex_b');
      await store.acquireLock(ask('ex_c', { scope: 'swarm:other', waiter: 'ex_c#1' }));
      assert.deepEqual(await store.listLocks('swarm:root'), [
        { name: 'y', token: 1, holder: null, node: null, expiresAt: null },
        { name: 'z', token: 1, holder: 'ex_a', node: 'node-1', expiresAt: at(10) },
      ]);
    });

    it("prunes a swarm's messages with its executions, once none of them is left; keeps its lock tokens", async (t) => {
      const { store, executions } = subject;
      if (executions === undefined) return t.skip('the fake keeps executions elsewhere (MemoryStore)');
      const done = (id: string, finishedAt: string, rootId?: string) =>
        record({
          id,
          status: 'succeeded',
          createdAt: at(0),
          finishedAt,
          ...(rootId ? { rootId, parentId: rootId } : {}),
        });
      await executions.createExecution(done('old', at(10)));
      await executions.createExecution(done('old-child', at(11), 'old'));
      await executions.createExecution(done('young', at(10)));
      await executions.createExecution(done('young-child', at(500), 'young'));
      for (const swarm of ['old', 'young']) await store.appendMessage(message(swarm, 't', 1));
      await store.acquireLock(ask('old-child', { scope: 'swarm:old' }));
      await store.releaseLock('swarm:old', 'db', 1, 'old-child');
      const pruned = await executions.pruneExecutions({ before: at(100), limit: 10, dryRun: false });
      assert.equal(pruned.executions, 3);
      assert.deepEqual(await store.recentMessages('old', 10), []);
      // A descendant of `young` is still kept: its swarm's messages stay.
      assert.equal((await store.recentMessages('young', 10)).length, 1);
      assert.equal((await store.lockState('swarm:old', 'db'))?.token, 1);
      // A new message on a pruned topic starts a fresh count (the topic's counter went with it).
      assert.equal((await store.appendMessage(message('old', 't', 2))).seq, 1);
    });

    it('gives concurrent publishers distinct, gap-free seqs', async () => {
      const { store } = subject;
      const stored = await Promise.all(
        Array.from({ length: 20 }, (_, n) => store.appendMessage(message('s1', 'c', n))),
      );
      assert.deepEqual(
        stored.map((m) => m.seq).sort((a, b) => a - b),
        Array.from({ length: 20 }, (_, n) => n + 1),
      );
    });

    it('grants a lock to one holder; tokens grow; release lets the next in', async () => {
      const { store } = subject;
      const a = await store.acquireLock(ask('ex_a'));
      assert.equal(a.acquired, true);
      assert.ok(a.acquired && a.lease.token === 1 && a.lease.holder === 'ex_a');
      const b = await store.acquireLock(ask('ex_b', { at: at(1), waiterUntil: at(4) }));
      assert.equal(b.acquired, false);
      assert.ok(!b.acquired && b.heldUntil === at(10));
      assert.equal(await store.releaseLock('swarm:root', 'db', 1, 'ex_b'), false, 'not the holder');
      assert.equal(await store.releaseLock('swarm:root', 'db', 7, 'ex_a'), false, 'wrong token');
      assert.equal(await store.releaseLock('swarm:root', 'db', 1, 'ex_a'), true);
      const b2 = await store.acquireLock(ask('ex_b', { at: at(2), waiterUntil: at(5) }));
      assert.ok(b2.acquired && b2.lease.token === 2 && b2.expired === undefined);
      assert.deepEqual(await store.lockState('swarm:root', 'db'), {
        token: 2,
        holder: 'ex_b',
        expiresAt: at(12),
      });
      assert.equal(await store.lockState('swarm:other', 'db'), undefined, 'scopes are separate locks');
    });

    it('serves waiters first in, first out; a waiter that stopped asking loses its place', async () => {
      const { store } = subject;
      assert.ok((await store.acquireLock(ask('ex_a'))).acquired);
      assert.equal((await store.acquireLock(ask('ex_b', { at: at(1), waiterUntil: at(4) }))).acquired, false);
      assert.equal((await store.acquireLock(ask('ex_c', { at: at(1), waiterUntil: at(4) }))).acquired, false);
      assert.ok(await store.releaseLock('swarm:root', 'db', 1, 'ex_a'));
      assert.equal(
        (await store.acquireLock(ask('ex_c', { at: at(2), waiterUntil: at(5) }))).acquired,
        false,
        'ex_b is first',
      );
      const b = await store.acquireLock(ask('ex_b', { at: at(2), waiterUntil: at(5) }));
      assert.ok(b.acquired && b.lease.token === 2);
      assert.ok(await store.releaseLock('swarm:root', 'db', 2, 'ex_b'));
      // ex_d queued, then stopped asking (crashed): at 9 its place (kept until 6) is gone, ex_c goes first.
      assert.equal((await store.acquireLock(ask('ex_z', { at: at(3), waiterUntil: at(6) }))).acquired, false);
      await store.leaveLockQueue('swarm:root', 'db', 'ex_c#1');
      assert.equal((await store.acquireLock(ask('ex_d', { at: at(3), waiterUntil: at(6) }))).acquired, false);
      const d = await store.acquireLock(ask('ex_d', { at: at(9), waiterUntil: at(12) }));
      assert.ok(d.acquired, 'ex_z stopped asking: its place was dropped');
    });

    it('takes over an expired lease with a larger token; the old holder can neither renew nor release', async () => {
      const { store } = subject;
      assert.ok((await store.acquireLock(ask('ex_a', { ttlMs: 5000 }))).acquired);
      assert.equal((await store.acquireLock(ask('ex_b', { at: at(4), waiterUntil: at(7) }))).acquired, false);
      const b = await store.acquireLock(ask('ex_b', { at: at(6), waiterUntil: at(9) }));
      assert.ok(b.acquired);
      assert.equal(b.lease.token, 2);
      assert.deepEqual(b.expired, { holder: 'ex_a', token: 1 });
      assert.equal(await store.renewLock('swarm:root', 'db', 1, 'ex_a', at(6), 5000), undefined);
      assert.equal(await store.releaseLock('swarm:root', 'db', 1, 'ex_a'), false);
      const renewed = await store.renewLock('swarm:root', 'db', 2, 'ex_b', at(7), 5000);
      assert.equal(renewed?.expiresAt, at(12));
    });

    it('releases every lease of an ended holder', async () => {
      const { store } = subject;
      assert.ok((await store.acquireLock(ask('ex_a'))).acquired);
      assert.ok((await store.acquireLock(ask('ex_a', { name: 'other', waiter: 'ex_a#2' }))).acquired);
      assert.ok((await store.acquireLock(ask('ex_b', { name: 'third', waiter: 'ex_b#1' }))).acquired);
      const released = await store.releaseLocksOf('ex_a');
      assert.deepEqual(released.map((l) => l.name).sort(), ['db', 'other']);
      assert.equal((await store.lockState('swarm:root', 'db'))?.holder, null);
      assert.equal((await store.lockState('swarm:root', 'third'))?.holder, 'ex_b');
      assert.equal((await store.lockState('swarm:root', 'db'))?.token, 1, 'the token survives a release');
    });

    it('never grants one lock to two concurrent acquirers', async () => {
      const { store } = subject;
      const outcomes = await Promise.all(
        Array.from({ length: 10 }, (_, n) =>
          store.acquireLock(ask(`ex_${n}`, { waiter: `w${n}`, name: 'race' })),
        ),
      );
      assert.equal(outcomes.filter((o) => o.acquired).length, 1);
    });
  });
}
