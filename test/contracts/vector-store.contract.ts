/**
 * What every VectorStore must do: the in-memory fake, SQLite and PostgreSQL run this same suite
 * (src/app/fakes/memory-vector-store.test.ts, src/adapters/cortex/*-vector-store.test.ts). Each case gets a fresh,
 * empty store from `open` and cleans it up afterwards.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { VectorStore } from '../../src/app/ports.ts';
import { l2Normalise, type MemoryRecord, type MemoryScope } from '../../src/domain/cortex/memory.ts';
import { isAegisError } from '../../src/domain/errors.ts';

export interface VectorStoreUnderTest {
  readonly store: VectorStore;
  readonly cleanup: () => Promise<void>;
  /** Durable stores: closes the store and opens a new one over the same data. */
  readonly reopen?: () => Promise<VectorStore>;
}

const A: MemoryScope = { agent: 'alpha', namespace: 'default' };
const A2: MemoryScope = { agent: 'alpha', namespace: 'notes' };
const B: MemoryScope = { agent: 'beta', namespace: 'default' };
const NOW = '2025-06-01T00:00:00.000Z';
const EMB = 'test-emb/4';

export function vec(...xs: number[]): Float32Array {
  return l2Normalise(Float32Array.from(xs));
}

let seq = 0;
export function memory(overrides: Partial<MemoryRecord> = {}): MemoryRecord {
  seq++;
  return {
    id: `mem_${String(seq).padStart(6, '0')}`,
    scope: A,
    text: `memory ${seq}`,
    meta: {},
    embedderId: EMB,
    dimension: 4,
    createdAt: `2025-05-01T00:00:${String(seq % 60).padStart(2, '0')}.000Z`,
    expiresAt: null,
    executionId: null,
    outcome: null,
    source: 'api',
    ...overrides,
  };
}

export function vectorStoreContract(name: string, open: () => Promise<VectorStoreUnderTest>): void {
  describe(`VectorStore contract: ${name}`, () => {
    let subject: VectorStoreUnderTest;
    let store: VectorStore;
    beforeEach(async () => {
      subject = await open();
      store = subject.store;
    });
    afterEach(async () => {
      await subject.cleanup();
    });

    const search = (scopes: MemoryScope[], v: Float32Array, extra: Record<string, unknown> = {}) =>
      store.search({ scopes, vector: v, embedderId: EMB, k: 10, now: NOW, ...extra });

    it('round-trips every field and the vector', async () => {
      const full = memory({
        scope: A2,
        text: 'deploy failed: image pull backoff — naïve ✓',
        meta: { tags: ['a', 'b'], n: 3, nested: { ok: true, none: null } },
        expiresAt: '2030-01-01T00:00:00.000Z',
        executionId: 'ex_123',
        outcome: 'failed',
        source: 'execution',
      });
      const v = vec(0.1, 0.2, 0.3, 0.4);
      await store.put(full, v);
      assert.deepEqual(await store.get(A2, full.id), full);
      assert.deepEqual(await store.getVector(A2, full.id), v);
      assert.equal(await store.get(A, full.id), null, 'same id, other scope: not found');
      assert.equal(await store.getVector(B, full.id), null);
    });

    it('finds the nearest first, with cosine similarity', async () => {
      const near = memory();
      const mid = memory();
      const far = memory();
      await store.put(far, vec(0, 0, 0, 1));
      await store.put(near, vec(1, 0.05, 0, 0));
      await store.put(mid, vec(1, 1, 0, 0));
      const hits = await search([A], vec(1, 0, 0, 0));
      assert.deepEqual(
        hits.map((h) => h.record.id),
        [near.id, mid.id, far.id],
      );
      assert.ok(Math.abs((hits[0]?.similarity ?? 0) - 0.99875) < 1e-3);
      assert.ok(Math.abs(hits[2]?.similarity ?? 1) < 1e-6);
      assert.equal((await search([A], vec(1, 0, 0, 0), { k: 2 })).length, 2);
    });

    it("never returns another scope's memories, whatever the filter", async () => {
      const mine = memory({ scope: B, meta: { team: 'x' }, executionId: 'ex_b', outcome: 'succeeded' });
      const theirs = memory({ scope: A, meta: { team: 'x' }, executionId: 'ex_a', outcome: 'succeeded' });
      const otherNs = memory({ scope: A2, meta: { team: 'x' } });
      await store.put(theirs, vec(1, 0, 0, 0));
      await store.put(otherNs, vec(1, 0, 0, 0));
      await store.put(mine, vec(0, 1, 0, 0));
      for (const filter of [
        undefined,
        { meta: { team: 'x' } },
        { executionId: 'ex_a' },
        { outcome: 'succeeded' as const },
        { source: 'api' as const },
        { createdAfter: '2000-01-01T00:00:00.000Z' },
      ]) {
        const hits = await search([B], vec(1, 0, 0, 0), filter === undefined ? {} : { filter });
        assert.ok(
          hits.every((h) => h.record.scope.agent === 'beta'),
          `filter ${JSON.stringify(filter)} leaked: ${hits.map((h) => h.record.id)}`,
        );
      }
      assert.deepEqual(await search([], vec(1, 0, 0, 0)), [], 'no scopes, no results');
      const both = await search([A, A2], vec(1, 0, 0, 0));
      assert.deepEqual(new Set(both.map((h) => h.record.id)), new Set([theirs.id, otherNs.id]));
    });

    it('filters by meta, outcome, source, execution and time', async () => {
      const a = memory({
        meta: { lang: 'py', n: 1 },
        outcome: 'succeeded',
        source: 'execution',
        executionId: 'ex_1',
      });
      const b = memory({
        meta: { lang: 'js', n: 1 },
        outcome: 'failed',
        source: 'sdk',
        createdAt: '2025-05-20T00:00:00.000Z',
      });
      const c = memory({ meta: {}, outcome: null });
      for (const m of [a, b, c]) await store.put(m, vec(1, 0, 0, 0));
      const ids = async (filter: object) =>
        (await search([A], vec(1, 0, 0, 0), { filter })).map((h) => h.record.id).sort();
      assert.deepEqual(await ids({ meta: { lang: 'py' } }), [a.id]);
      assert.deepEqual(await ids({ meta: { n: 1 } }), [a.id, b.id].sort());
      assert.deepEqual(await ids({ meta: { n: '1' } }), [], 'JSON equality: "1" is not 1');
      assert.deepEqual(await ids({ meta: { missing: null } }), [], 'an absent key never matches');
      assert.deepEqual(await ids({ outcome: 'failed' }), [b.id]);
      assert.deepEqual(await ids({ outcome: null }), [c.id]);
      assert.deepEqual(await ids({ source: 'execution' }), [a.id]);
      assert.deepEqual(await ids({ executionId: 'ex_1' }), [a.id]);
      assert.deepEqual(await ids({ createdAfter: '2025-05-10T00:00:00.000Z' }), [b.id]);
    });

    it('compares only vectors of the embedder asked for', async () => {
      const old = memory({ embedderId: 'old/4' });
      const cur = memory();
      await store.put(old, vec(1, 0, 0, 0));
      await store.put(cur, vec(0, 1, 0, 0));
      assert.deepEqual(
        (await search([A], vec(1, 0, 0, 0))).map((h) => h.record.id),
        [cur.id],
      );
      assert.deepEqual(await store.embedders(A), [
        { embedderId: 'old/4', dimension: 4, count: 1 },
        { embedderId: EMB, dimension: 4, count: 1 },
      ]);
    });

    it('hides expired memories from search and list, and forgetExpired deletes them', async () => {
      const gone = memory({ expiresAt: '2025-05-31T00:00:00.000Z' });
      const kept = memory({ expiresAt: '2025-07-01T00:00:00.000Z' });
      await store.put(gone, vec(1, 0, 0, 0));
      await store.put(kept, vec(1, 0, 0, 0));
      assert.deepEqual(
        (await search([A], vec(1, 0, 0, 0))).map((h) => h.record.id),
        [kept.id],
      );
      assert.deepEqual(
        (await store.list(A, { now: NOW })).items.map((r) => r.id),
        [kept.id],
      );
      assert.equal(await store.count(A), 2);
      assert.equal(await store.forgetExpired(NOW), 1);
      assert.equal(await store.count(A), 1);
      assert.equal(await store.get(A, gone.id), null);
    });

    it('replaces a memory with the same id (re-embedding) but refuses to move it to another scope', async () => {
      const m = memory();
      await store.put(m, vec(1, 0, 0, 0));
      await store.put({ ...m, embedderId: 'new/4' }, vec(0, 1, 0, 0));
      assert.equal((await store.get(A, m.id))?.embedderId, 'new/4');
      assert.deepEqual(await store.getVector(A, m.id), vec(0, 1, 0, 0));
      assert.equal(await store.count(), 1);
      await assert.rejects(
        store.put({ ...m, scope: B }, vec(1, 0, 0, 0)),
        (e) => isAegisError(e) && e.code === 'CONFLICT',
      );
      assert.equal(await store.get(B, m.id), null);
      assert.equal((await store.get(A, m.id))?.embedderId, 'new/4');
    });

    it('putMany writes a batch, and nothing of it when one item is refused', async () => {
      const a = memory();
      const b = memory();
      await store.putMany([
        { record: a, vector: vec(1, 0, 0, 0) },
        { record: b, vector: vec(0, 1, 0, 0) },
      ]);
      assert.deepEqual(
        (await search([A], vec(1, 0, 0, 0), { k: 1 })).map((h) => h.record.id),
        [a.id],
      );
      const c = memory();
      const stolen = { ...a, scope: B };
      await assert.rejects(
        store.putMany([
          { record: c, vector: vec(0, 0, 1, 0) },
          { record: stolen, vector: vec(1, 0, 0, 0) },
        ]),
        (e) => isAegisError(e) && e.code === 'CONFLICT',
      );
      assert.equal(await store.get(A, c.id), null, 'the batch rolled back');
      assert.equal(await store.get(B, a.id), null);
      assert.equal(await store.count(), 2);
      assert.deepEqual(
        (await search([A], vec(0, 0, 1, 0))).map((h) => h.record.id).sort(),
        [a.id, b.id].sort(),
        'search does not see the rolled-back item',
      );
      await store.putMany([]);
    });

    it('refuses a vector whose length is not the record dimension', async () => {
      await assert.rejects(store.put(memory(), vec(1, 0, 0)), (e) => isAegisError(e));
      assert.equal(await store.count(), 0);
    });

    it('lists newest first in pages, with filters', async () => {
      const made: MemoryRecord[] = [];
      for (let i = 0; i < 7; i++) {
        const m = memory({ createdAt: `2025-05-0${i + 1}T00:00:00.000Z`, meta: { even: i % 2 === 0 } });
        made.push(m);
        await store.put(m, vec(1, i, 0, 0));
      }
      await store.put(memory({ scope: B }), vec(1, 0, 0, 0));
      const seen: string[] = [];
      let after: string | null = null;
      let pages = 0;
      do {
        const page = await store.list(A, { limit: 3, after, now: NOW });
        seen.push(...page.items.map((r) => r.id));
        after = page.next;
        pages++;
      } while (after !== null);
      assert.equal(pages, 3);
      assert.deepEqual(seen, made.map((m) => m.id).reverse());
      const evens = await store.list(A, { limit: 10, filter: { meta: { even: true } }, now: NOW });
      assert.deepEqual(
        evens.items.map((r) => r.id),
        [made[6], made[4], made[2], made[0]].map((m) => m?.id),
      );
      assert.equal(evens.next, null);
      await assert.rejects(
        store.list(A, { after: 'garbage', now: NOW }),
        (e) => isAegisError(e) && e.code === 'USAGE',
      );
    });

    it('forgets only within the scope given', async () => {
      const m = memory();
      await store.put(m, vec(1, 0, 0, 0));
      assert.equal(await store.forget(B, m.id), false);
      assert.equal(await store.forget(A2, m.id), false);
      assert.ok(await store.get(A, m.id));
      assert.equal(await store.forget(A, m.id), true);
      assert.equal(await store.forget(A, m.id), false);
      assert.deepEqual(await search([A], vec(1, 0, 0, 0)), []);
    });

    it('counts and lists scopes', async () => {
      await store.put(memory({ scope: A }), vec(1, 0, 0, 0));
      await store.put(memory({ scope: A }), vec(1, 0, 0, 0));
      await store.put(memory({ scope: B }), vec(1, 0, 0, 0));
      await store.put(memory({ scope: A2 }), vec(1, 0, 0, 0));
      assert.equal(await store.count(), 4);
      assert.equal(await store.count(A), 2);
      assert.equal(await store.count({ agent: 'nobody', namespace: 'default' }), 0);
      assert.deepEqual(await store.scopes(), [A, A2, B]);
    });

    it('keeps memories across a reopen', async (t) => {
      if (subject.reopen === undefined) {
        t.skip('not durable (in-memory)');
        return;
      }
      const m = memory({ meta: { k: 'v' } });
      await store.put(m, vec(0.5, 0.5, 0, 0));
      store = await subject.reopen();
      assert.deepEqual(await store.get(A, m.id), m);
      assert.deepEqual(
        (await search([A], vec(1, 1, 0, 0))).map((h) => h.record.id),
        [m.id],
      );
    });
  });
}
