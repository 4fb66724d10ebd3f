/**
 * The in-memory copy of the vectors the SQLite store keeps per (scope, embedder): one packed Float32Array of the
 * vectors and the records beside them, and — once the matrix holds `ann.minRows` rows and the store searches in
 * `ann` mode — an IVF index over its rows (ivf-index.ts), kept up to date on every upsert and remove.
 *
 * Exact scan: one pass of dot products keeping the best k in a min-heap; filters and expiry are checked before the
 * dot product only when a filter is given or some row can expire. Cost: dimension × rows multiply-adds
 * (100k × 384 ≈ 38 M). ANN search: the nearest IVF lists until `probeShare` of the rows passed the filter and were
 * scored (at least `minCandidates`). Filter rule (docs/adr/0129-cortex-ann-index.md): the filter is applied to the probed candidates (post-filter
 * over an enlarged candidate set); when fewer than a quarter of the probed rows pass it (a selective filter), the
 * search falls back to the exact scan, which skips the dot product of every row the filter rejects.
 */
import type { VectorHit } from '../../app/ports.ts';
import {
  compareHits,
  type MemoryFilter,
  type MemoryRecord,
  matchesFilter,
} from '../../domain/cortex/memory.ts';
import { dotAt, IvfIndex } from './ivf-index.ts';

/** When a store searches with the IVF index. */
export interface AnnOptions {
  /** Matrices with fewer rows are scanned exactly (an exact scan of 10k × 384 takes a few ms). @default 10_000 */
  readonly minRows?: number;
  /** Share of the rows scored per search (the candidate budget; recall grows with it). @default 0.07 */
  readonly probeShare?: number;
  /** …and at least this many rows (small indexes need a larger share for the same recall). @default 3_000 */
  readonly minCandidates?: number;
}

export interface AnnSettings {
  readonly minRows: number;
  readonly probeShare: number;
  readonly minCandidates: number;
}

export function annSettings(options: AnnOptions = {}): AnnSettings {
  return {
    minRows: options.minRows ?? 10_000,
    probeShare: options.probeShare ?? 0.07,
    minCandidates: options.minCandidates ?? 3_000,
  };
}

/** How a search was answered, for tests and the bench. */
export type SearchPath = 'exact' | 'ann' | 'ann-fallback';

export class VectorMatrix {
  readonly dimension: number;
  #data: Float32Array;
  readonly #records: MemoryRecord[] = [];
  readonly #slots = new Map<string, number>();
  /** Rows with an `expiresAt`: while there are none, an unfiltered scan never looks at the records. */
  #expiring = 0;
  #index: IvfIndex | null = null;

  constructor(dimension: number, capacity = 64) {
    this.dimension = dimension;
    this.#data = new Float32Array(dimension * capacity);
  }

  get size(): number {
    return this.#records.length;
  }

  /** Bytes held by the vectors (capacity included) and the index. */
  get vectorBytes(): number {
    return this.#data.byteLength + (this.#index?.bytes ?? 0);
  }

  /** True once an IVF index has been built (by an `ann` search of a large enough matrix). */
  get indexed(): boolean {
    return this.#index !== null;
  }

  upsert(record: MemoryRecord, vector: Float32Array): void {
    const dim = this.dimension;
    let slot = this.#slots.get(record.id);
    if (slot === undefined) {
      slot = this.#records.length;
      if ((slot + 1) * dim > this.#data.length) {
        const grown = new Float32Array(Math.max(this.#data.length * 2, dim * 64));
        grown.set(this.#data);
        this.#data = grown;
      }
      this.#records.push(record);
      this.#slots.set(record.id, slot);
    } else {
      if ((this.#records[slot] as MemoryRecord).expiresAt !== null) this.#expiring--;
      this.#records[slot] = record;
      this.#index?.remove(slot);
    }
    if (record.expiresAt !== null) this.#expiring++;
    this.#data.set(vector, slot * dim);
    this.#index?.add(slot, this.#data, slot * dim);
  }

  remove(id: string): boolean {
    const slot = this.#slots.get(id);
    if (slot === undefined) return false;
    if ((this.#records[slot] as MemoryRecord).expiresAt !== null) this.#expiring--;
    this.#index?.remove(slot);
    const last = this.#records.length - 1;
    if (slot !== last) {
      const moved = this.#records[last] as MemoryRecord;
      this.#records[slot] = moved;
      this.#slots.set(moved.id, slot);
      this.#data.copyWithin(slot * this.dimension, last * this.dimension, (last + 1) * this.dimension);
      this.#index?.renumber(last, slot);
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

  /**
   * Adds this matrix's best matches to `top`: exactly when `ann` is undefined or the matrix is small, else through
   * the IVF index (built or retrained here when missing, or when the size doubled or halved since it was trained).
   */
  search(
    query: Float32Array,
    filter: MemoryFilter | undefined,
    now: string,
    top: TopK,
    ann: AnnSettings | undefined,
  ): SearchPath {
    if (ann === undefined || this.size < ann.minRows) {
      this.#index = null;
      this.scan(query, filter, now, top);
      return 'exact';
    }
    const index = this.#indexFor();
    const dim = this.dimension;
    const data = this.#data;
    const records = this.#records;
    const check = filter !== undefined || this.#expiring > 0;
    const budget = Math.max(top.k * 10, ann.minCandidates, Math.ceil(this.size * ann.probeShare));
    // Candidates go to a heap of their own: a fallback must not see them twice.
    const local = new TopK(top.k);
    let floor = local.floor;
    const maxRows = check ? budget * 4 : budget;
    let scored = 0;
    let visited = 0;
    for (const leaf of index.nearestLists(query)) {
      const list = index.list(leaf);
      for (let i = 0; i < list.length; i++) {
        const row = list[i] as number;
        if (check && !matchesFilter(records[row] as MemoryRecord, filter, now)) continue;
        scored++;
        const s = dotAt(query, data, row * dim, dim);
        if (s > floor) {
          local.offer(s, records[row] as MemoryRecord);
          floor = local.floor;
        }
      }
      visited += list.length;
      if (scored >= budget || visited >= maxRows) break;
    }
    if (check && scored < budget && visited < this.size) {
      this.scan(query, filter, now, top);
      return 'ann-fallback';
    }
    local.drainInto(top);
    return 'ann';
  }

  /** Adds this matrix's matches to `top`, scanning every row. */
  scan(query: Float32Array, filter: MemoryFilter | undefined, now: string, top: TopK): void {
    const dim = this.dimension;
    const data = this.#data;
    const records = this.#records;
    const check = filter !== undefined || this.#expiring > 0;
    let floor = top.floor;
    for (let row = 0; row < records.length; row++) {
      if (check && !matchesFilter(records[row] as MemoryRecord, filter, now)) continue;
      const s = dotAt(query, data, row * dim, dim);
      if (s > floor) {
        top.offer(s, records[row] as MemoryRecord);
        floor = top.floor;
      }
    }
  }

  #indexFor(): IvfIndex {
    const n = this.size;
    const index = this.#index;
    if (index !== null && n <= index.trainedRows * 2 && n * 2 >= index.trainedRows) return index;
    const built = IvfIndex.train(this.#data, n, this.dimension);
    this.#permute(built.compact());
    this.#index = built;
    return built;
  }

  /** Stores row `order[i]` at row i (the IVF lists' order, so a probe reads each list contiguously). */
  #permute(order: Int32Array): void {
    const dim = this.dimension;
    const old = this.#data;
    const data = new Float32Array(old.length);
    const records = order.length === 0 ? [] : Array.from(order, (row) => this.#records[row] as MemoryRecord);
    for (let i = 0; i < order.length; i++) {
      const from = (order[i] as number) * dim;
      data.set(old.subarray(from, from + dim), i * dim);
      this.#slots.set((records[i] as MemoryRecord).id, i);
      this.#records[i] = records[i] as MemoryRecord;
    }
    this.#data = data;
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

  get k(): number {
    return this.#k;
  }

  /** A candidate must beat this to enter: the worst kept similarity once full, else -Infinity. */
  get floor(): number {
    return this.#sims.length < this.#k || this.#k === 0
      ? this.#k === 0
        ? Number.POSITIVE_INFINITY
        : Number.NEGATIVE_INFINITY
      : (this.#sims[0] as number);
  }

  /** Offers everything kept here to `other`. */
  drainInto(other: TopK): void {
    for (let i = 0; i < this.#sims.length; i++)
      other.offer(this.#sims[i] as number, this.#records[i] as MemoryRecord);
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
