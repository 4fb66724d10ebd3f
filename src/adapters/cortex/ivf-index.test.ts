/**
 * The IVF index behind `searchMode: 'ann'`, through the SQLite store: recall@10 against the exact scan on a
 * generated set, scope isolation with the index (attacker-style), forget and re-put keep the index consistent, the
 * selective-filter fallback, and the rebuild after a reopen.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { VectorPut } from '../../app/ports.ts';
import { dot, type MemoryRecord, type MemoryScope } from '../../domain/cortex/memory.ts';
import { HashEmbedder } from './hash-embedder.ts';
import { SqliteVectorStore } from './sqlite-vector-store.ts';

const NOW = '2025-06-01T00:00:00.000Z';

function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 0x1_0000_0000;
  };
}

const SERVICES = 'payments checkout search billing auth ledger inventory shipping gateway reports'.split(' ');
const VERBS = 'deploy rollback migrate restart scale backup upgrade rotate index compact'.split(' ');
const FAULTS =
  'timeout oom-killed image-pull-backoff dns-failure disk-full tls-expired rate-limited deadlock crash-loop'.split(
    ' ',
  );
const WORDS =
  'cluster region node queue cache replica shard database token secret bucket pipeline cron worker proxy volume'.split(
    ' ',
  );

/** Varied operational texts, deterministic for a seed. */
function texts(n: number, seed: number): string[] {
  const r = xorshift(seed);
  const pick = (xs: readonly string[]) => xs[Math.floor(r() * xs.length)] as string;
  return Array.from(
    { length: n },
    (_, i) =>
      `${pick(VERBS)} of ${pick(SERVICES)}-${Math.floor(r() * 40)} ${pick(FAULTS)} on ${pick(WORDS)} ${pick(WORDS)} ` +
      `${pick(WORDS)} build ${Math.floor(r() * 500)} run ${i % 97}`,
  );
}

function record(
  id: string,
  scope: MemoryScope,
  dimension: number,
  extra: Partial<MemoryRecord> = {},
): MemoryRecord {
  return {
    id,
    scope,
    text: id,
    meta: {},
    embedderId: 'hash-v1/512',
    dimension,
    createdAt: '2025-05-01T00:00:00.000Z',
    expiresAt: null,
    executionId: null,
    outcome: null,
    source: 'api',
    ...extra,
  };
}

describe('IVF index (SqliteVectorStore searchMode ann)', () => {
  const embedder = new HashEmbedder();
  const A: MemoryScope = { agent: 'alpha', namespace: 'default' };
  const B: MemoryScope = { agent: 'mallory', namespace: 'default' };
  let dir: string;
  let path: string;
  let ann: SqliteVectorStore;
  let exact: SqliteVectorStore;
  const N = 20_000;
  let vectors: Float32Array[];
  let queries: Float32Array[];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-cortex-ann-'));
    path = join(dir, 'cortex.db');
    ann = SqliteVectorStore.open(path, { searchMode: 'ann', ann: { minRows: 1_000 } });
    vectors = await embedder.embed(texts(N, 42));
    queries = await embedder.embed(texts(30, 7));
    const items: VectorPut[] = vectors.map((vector, i) => ({
      record: record(`mem_a${String(i).padStart(6, '0')}`, A, embedder.dimension, {
        outcome: i % 50 === 0 ? 'failed' : 'succeeded',
      }),
      vector,
    }));
    for (let i = 0; i < items.length; i += 2_000) await ann.putMany(items.slice(i, i + 2_000));
    exact = SqliteVectorStore.open(path, { searchMode: 'exact' });
  });

  after(async () => {
    await ann.close();
    await exact.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const query = (scopes: MemoryScope[], vector: Float32Array, extra: object = {}) => ({
    scopes,
    vector,
    embedderId: embedder.id,
    k: 10,
    now: NOW,
    ...extra,
  });

  it('finds ≥ 95% of the exact top 10 (recall@10) over 20k memories, through the index', async (t) => {
    // Templated texts tie often: a hit counts when it is as similar as the exact 10th (ties are interchangeable).
    let agree = 0;
    let sameIds = 0;
    for (const v of queries) {
      const truth = await exact.search(query([A], v));
      const tenth = (truth[9]?.similarity ?? 1) - 1e-6;
      const ids = new Set(truth.map((h) => h.record.id));
      const got = await ann.search(query([A], v));
      assert.deepEqual(ann.lastSearchPaths, ['ann']);
      assert.deepEqual(exact.lastSearchPaths, ['exact']);
      agree += got.filter((h) => h.similarity >= tenth).length;
      sameIds += got.filter((h) => ids.has(h.record.id)).length;
    }
    const recall = agree / (queries.length * 10);
    t.diagnostic(`recall@10 ${recall} (same ids ${sameIds / (queries.length * 10)})`);
    assert.ok(recall >= 0.95, `recall@10 ${recall}`);
  });

  it("never returns another scope's memories: an attacker's scope full of copies of the victim's vectors", async () => {
    // Mallory fills her own scope with exact copies of alpha's vectors (and more), so that in any shared index her
    // rows would sit in the very lists alpha's queries probe — and tie with or beat alpha's own.
    const copies: VectorPut[] = vectors.slice(0, 3_000).map((vector, i) => ({
      record: record(`mem_m${String(i).padStart(6, '0')}`, B, embedder.dimension),
      vector,
    }));
    await ann.putMany(copies);
    for (const v of [...queries.slice(0, 10), ...vectors.slice(0, 10)]) {
      const hits = await ann.search(query([A], v));
      assert.deepEqual(ann.lastSearchPaths, ['ann']);
      assert.equal(hits.length, 10);
      assert.ok(
        hits.every((h) => h.record.scope.agent === 'alpha' && h.record.id.startsWith('mem_a')),
        `leaked: ${hits.map((h) => h.record.id)}`,
      );
      const theirs = await ann.search(query([B], v));
      assert.ok(theirs.every((h) => h.record.id.startsWith('mem_m')));
    }
    // Her copy of alpha's first memory cannot be moved into alpha's scope either.
    await assert.rejects(ann.put(record('mem_a000000', B, embedder.dimension), vectors[0] as Float32Array));
  });

  it('forget takes a memory out of the index at once, and re-put moves it', async () => {
    const target = vectors[123] as Float32Array;
    const first = await ann.search(query([A], target, { k: 1 }));
    assert.equal(first[0]?.record.id, 'mem_a000123');
    assert.equal(await ann.forget(A, 'mem_a000123'), true);
    const after = await ann.search(query([A], target));
    assert.deepEqual(ann.lastSearchPaths, ['ann']);
    assert.ok(!after.some((h) => h.record.id === 'mem_a000123'));
    // Forget many (the matrix moves rows into the holes, the index renumbers them), then check every hit is live
    // and carries its own vector's similarity.
    const r = xorshift(9);
    const gone = new Set<string>(['mem_a000123']);
    for (let i = 0; i < 500; i++) {
      const id = `mem_a${String(Math.floor(r() * N)).padStart(6, '0')}`;
      await ann.forget(A, id);
      gone.add(id);
    }
    for (const v of queries.slice(0, 20)) {
      for (const h of await ann.search(query([A], v))) {
        assert.ok(!gone.has(h.record.id), `${h.record.id} was forgotten`);
        const i = Number(h.record.id.slice(5));
        assert.ok(Math.abs(h.similarity - dot(v, vectors[i] as Float32Array)) < 1e-5, h.record.id);
      }
    }
    // Re-put a forgotten memory with another memory's vector: it is found where its new vector is.
    await ann.put(record('mem_a000123', A, embedder.dimension), vectors[7] as Float32Array);
    const moved = await ann.search(query([A], vectors[7] as Float32Array, { k: 2 }));
    assert.deepEqual(moved.map((h) => h.record.id).sort(), ['mem_a000007', 'mem_a000123']);
  });

  it('post-filters a broad filter in the index and falls back to the exact scan for a selective one', async () => {
    const v = queries[3] as Float32Array;
    const broad = await ann.search(query([A], v, { filter: { outcome: 'succeeded' } }));
    assert.deepEqual(ann.lastSearchPaths, ['ann']);
    assert.ok(broad.every((h) => h.record.outcome === 'succeeded'));
    const selective = await ann.search(query([A], v, { filter: { outcome: 'failed' } }));
    assert.deepEqual(ann.lastSearchPaths, ['ann-fallback'], '2% of the rows pass: exact scan');
    const truth = await exact.search(query([A], v, { filter: { outcome: 'failed' } }));
    assert.deepEqual(
      selective.map((h) => h.record.id),
      truth.map((h) => h.record.id),
    );
    assert.equal(selective.length, 10);
  });

  it('rebuilds the index from the stored vectors after a reopen', async () => {
    await ann.close();
    ann = SqliteVectorStore.open(path, { searchMode: 'ann', ann: { minRows: 1_000 } });
    const v = vectors[77] as Float32Array;
    const hits = await ann.search(query([A], v, { k: 1 }));
    assert.deepEqual(ann.lastSearchPaths, ['ann']);
    assert.equal(hits[0]?.record.id, 'mem_a000077');
  });
});
