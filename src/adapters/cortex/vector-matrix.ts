/**
 * The exact-scan index the SQLite store keeps in memory: per (scope, embedder), one packed Float32Array of the
 * vectors and the records beside them. A search is one pass of dot products over the scopes asked for, keeping the
 * best k in a min-heap; filters are checked before the dot product, so a selective filter makes it cheaper.
 *
 * Cost: dimension × rows multiply-adds per search (100k × 384 ≈ 38 M); `npm run bench` measures it.
 */
import type { VectorHit } from '../../app/ports.ts';
import {
  compareHits,
  type MemoryFilter,
  type MemoryRecord,
  matchesFilter,
} from '../../domain/cortex/memory.ts';

export class VectorMatrix {
  readonly dimension: number;
  #data: Float32Array;
  readonly #records: MemoryRecord[] = [];
  readonly #slots = new Map<string, number>();

  constructor(dimension: number, capacity = 64) {
    this.dimension = dimension;
    this.#data = new Float32Array(dimension * capacity);
  }

  get size(): number {
    return this.#records.length;
  }

  /** Bytes held by the vectors (capacity included). */
  get vectorBytes(): number {
    return this.#data.byteLength;
  }

  upsert(record: MemoryRecord, vector: Float32Array): void {
    let slot = this.#slots.get(record.id);
    if (slot === undefined) {
      slot = this.#records.length;
      if ((slot + 1) * this.dimension > this.#data.length) {
        const grown = new Float32Array(Math.max(this.#data.length * 2, this.dimension * 64));
        grown.set(this.#data);
        this.#data = grown;
      }
      this.#records.push(record);
      this.#slots.set(record.id, slot);
    } else {
      this.#records[slot] = record;
    }
    this.#data.set(vector, slot * this.dimension);
  }

  remove(id: string): boolean {
    const slot = this.#slots.get(id);
    if (slot === undefined) return false;
    const last = this.#records.length - 1;
    if (slot !== last) {
      const moved = this.#records[last] as MemoryRecord;
      this.#records[slot] = moved;
      this.#slots.set(moved.id, slot);
      this.#data.copyWithin(slot * this.dimension, last * this.dimension, (last + 1) * this.dimension);
    }
    this.#records.pop();
    this.#slots.delete(id);
    return true;
  }

  get(id: string): MemoryRecord | undefined {
    const slot = this.#slots.get(id);
    return slot === undefined ? undefined : this.#records[slot];
  }

  vector(id: string): Float32Array | undefined {
    const slot = this.#slots.get(id);
    return slot === undefined
      ? undefined
      : this.#data.slice(slot * this.dimension, (slot + 1) * this.dimension);
  }

  /** Adds this matrix's matches to `top`. */
  scan(query: Float32Array, filter: MemoryFilter | undefined, now: string, top: TopK): void {
    const dim = this.dimension;
    const data = this.#data;
    const records = this.#records;
    for (let row = 0; row < records.length; row++) {
      const record = records[row] as MemoryRecord;
      if ((record.expiresAt !== null || filter !== undefined) && !matchesFilter(record, filter, now))
        continue;
      let sum = 0;
      const base = row * dim;
      for (let i = 0; i < dim; i++) sum += (query[i] as number) * (data[base + i] as number);
      top.offer(sum, record);
    }
  }
}

/** The best k (similarity, record) pairs seen: a min-heap on similarity. */
export class TopK {
  readonly #k: number;
  readonly #sims: number[] = [];
  readonly #records: MemoryRecord[] = [];

  constructor(k: number) {
    this.#k = k;
  }

  offer(similarity: number, record: MemoryRecord): void {
    const sims = this.#sims;
    if (sims.length < this.#k) {
      sims.push(similarity);
      this.#records.push(record);
      this.#up(sims.length - 1);
    } else if (this.#k > 0 && similarity > (sims[0] as number)) {
      sims[0] = similarity;
      this.#records[0] = record;
      this.#down(0);
    }
  }

  /** Best first (ties by id). */
  hits(): VectorHit[] {
    const out: VectorHit[] = this.#sims.map((s, i) => ({
      record: this.#records[i] as MemoryRecord,
      similarity: Math.min(1, Math.max(-1, s)),
    }));
    return out.sort(compareHits);
  }

  #up(i: number): void {
    const sims = this.#sims;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((sims[parent] as number) <= (sims[i] as number)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  #down(i: number): void {
    const sims = this.#sims;
    const n = sims.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && (sims[l] as number) < (sims[m] as number)) m = l;
      if (r < n && (sims[r] as number) < (sims[m] as number)) m = r;
      if (m === i) return;
      this.#swap(i, m);
      i = m;
    }
  }

  #swap(a: number, b: number): void {
    const sims = this.#sims;
    const recs = this.#records;
    const s = sims[a] as number;
    sims[a] = sims[b] as number;
    sims[b] = s;
    const r = recs[a] as MemoryRecord;
    recs[a] = recs[b] as MemoryRecord;
    recs[b] = r;
  }
}
