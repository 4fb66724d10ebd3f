import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dot, l2Normalise, type MemoryRecord } from '../../domain/cortex/memory.ts';
import { annSettings, TopK, VectorMatrix } from './vector-matrix.ts';

const DIM = 16;

function randomVector(r: () => number): Float32Array {
  return l2Normalise(Float32Array.from({ length: DIM }, () => r() * 2 - 1));
}

function rng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1_103_515_245 + 12_345) % 2_147_483_648;
    return s / 2_147_483_648;
  };
}

const rec = (id: string) => ({ id, expiresAt: null }) as MemoryRecord;

describe('VectorMatrix with its IVF index', () => {
  it('keeps every live row in exactly one list through removes, moves and replacements', () => {
    const r = rng(5);
    const m = new VectorMatrix(DIM);
    const live = new Map<string, Float32Array>();
    const put = (id: string) => {
      const v = randomVector(r);
      m.upsert(rec(id), v);
      live.set(id, v);
    };
    for (let i = 0; i < 2_000; i++) put(`m${i}`);
    // Probing every list and scoring every row: the index must then answer exactly like the scan.
    const all = annSettings({ minRows: 100, probeShare: 1 });
    const q = randomVector(r);
    m.search(q, undefined, 'z', new TopK(1), all);
    assert.ok(m.indexed);
    for (let i = 0; i < 700; i++) {
      const id = `m${Math.floor(r() * 2_000)}`;
      assert.equal(m.remove(id), live.delete(id));
    }
    for (let i = 2_000; i < 2_300; i++) put(`m${i}`);
    for (let i = 0; i < 100; i++) {
      const id = [...live.keys()][Math.floor(r() * live.size)] as string;
      put(id);
    }
    const top = new TopK(live.size + 10);
    assert.equal(m.search(q, undefined, 'z', top, all), 'ann');
    const hits = top.hits();
    assert.equal(hits.length, live.size, 'every live row once, no forgotten or duplicated row');
    assert.deepEqual(new Set(hits.map((h) => h.record.id)), new Set(live.keys()));
    for (const h of hits)
      assert.ok(Math.abs(h.similarity - dot(q, live.get(h.record.id) as Float32Array)) < 1e-5);
  });
});
