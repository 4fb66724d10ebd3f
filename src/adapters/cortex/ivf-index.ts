/**
 * IVF-flat approximate nearest-neighbour index over the rows of a VectorMatrix (docs/adr/0129-cortex-ann-index.md).
 *
 * The vectors are split into ~√n lists by spherical k-means (cosine = dot product, vectors are unit-norm); a search
 * scores the query against every list centroid, then scans the nearest lists until a budget of rows has been
 * scored. The index holds row numbers, not vectors: the matrix keeps the only copy.
 *
 * Training is two-level so it stays cheap in plain TypeScript: k-means with ~n^¼ coarse centroids on a sample,
 * then each coarse cluster's sample split into its share of the leaf lists. A row is assigned by its nearest coarse
 * centroid and then its nearest leaf under it (≈ 2·n^¼ dot products instead of √n), both on build and on insert.
 * The index is trained once for a size and kept up to date incrementally (add/remove/renumber); the owner retrains
 * it when the row count has doubled or halved since (lists would otherwise grow long or drift).
 *
 * Pure computation, no I/O; deterministic for a given seed.
 */

export interface IvfTrainOptions {
  /** Seeds the sample and the initial centroids. @default 1 */
  readonly seed?: number;
  /** k-means iterations per level. @default 6 */
  readonly iterations?: number;
}

export class IvfIndex {
  readonly dimension: number;
  /** Rows when trained; the owner retrains when the size has moved far from it. */
  readonly trainedRows: number;
  /** coarse × dimension, unit-norm. */
  readonly #coarse: Float32Array;
  /** Leaf ids under each coarse centroid. */
  readonly #children: Int32Array[];
  /** leaves × dimension, unit-norm. */
  readonly #leaves: Float32Array;
  readonly #leafCount: number;
  /** Rows of each leaf list (the first `#lengths[l]` entries are live). */
  readonly #lists: Int32Array[];
  readonly #lengths: Int32Array;
  /** Per row: its leaf and its position in that leaf's list. */
  #rowLeaf: Int32Array;
  #rowPos: Int32Array;

  private constructor(
    dimension: number,
    trainedRows: number,
    coarse: Float32Array,
    children: Int32Array[],
    leaves: Float32Array,
  ) {
    this.dimension = dimension;
    this.trainedRows = trainedRows;
    this.#coarse = coarse;
    this.#children = children;
    this.#leaves = leaves;
    this.#leafCount = leaves.length / dimension;
    this.#lists = Array.from({ length: this.#leafCount }, () => new Int32Array(16));
    this.#lengths = new Int32Array(this.#leafCount);
    this.#rowLeaf = new Int32Array(Math.max(16, trainedRows));
    this.#rowPos = new Int32Array(Math.max(16, trainedRows));
  }

  /** Number of leaf lists. */
  get lists(): number {
    return this.#leafCount;
  }

  /** Bytes held by centroids, lists and the row maps. */
  get bytes(): number {
    let lists = 0;
    for (const l of this.#lists) lists += l.byteLength;
    return (
      this.#coarse.byteLength +
      this.#leaves.byteLength +
      lists +
      this.#rowLeaf.byteLength +
      this.#rowPos.byteLength
    );
  }

  /** Trains on the first `rows` rows of `data` (rows × dimension) and adds all of them. */
  static train(data: Float32Array, rows: number, dimension: number, options: IvfTrainOptions = {}): IvfIndex {
    const random = xorshift(options.seed ?? 1);
    const iterations = options.iterations ?? 6;
    const leafTarget = Math.max(1, Math.round(Math.sqrt(rows)));
    const coarseCount = Math.max(1, Math.min(leafTarget, Math.round(Math.sqrt(leafTarget))));
    // ~24 sample rows per leaf is enough for k-means to place the centroids; more costs build time only.
    const sample = sampleRows(rows, Math.min(rows, leafTarget * 24), random);
    const coarse = kmeans(data, dimension, sample, coarseCount, iterations, random);
    const groups: number[][] = Array.from({ length: coarseCount }, () => []);
    for (const row of sample) groups[nearest(data, row * dimension, coarse, dimension)]?.push(row);
    const children: Int32Array[] = [];
    const leafParts: Float32Array[] = [];
    let leafId = 0;
    for (const group of groups) {
      const want = Math.max(1, Math.round((group.length / sample.length) * leafTarget));
      const count = Math.min(want, Math.max(1, group.length));
      const part =
        group.length === 0 ? new Float32Array(0) : kmeans(data, dimension, group, count, iterations, random);
      const n = part.length / dimension;
      children.push(Int32Array.from({ length: n }, (_, i) => leafId + i));
      leafParts.push(part);
      leafId += n;
    }
    const leaves = new Float32Array(leafId * dimension);
    let offset = 0;
    for (const part of leafParts) {
      leaves.set(part, offset);
      offset += part.length;
    }
    const index = new IvfIndex(dimension, rows, coarse, children, leaves);
    for (let row = 0; row < rows; row++) index.add(row, data, row * dimension);
    return index;
  }

  /** Adds `row`, whose vector starts at `data[offset]`. */
  add(row: number, data: Float32Array, offset: number): void {
    const leaf = this.#assign(data, offset);
    if (row >= this.#rowLeaf.length) {
      const size = Math.max(row + 1, this.#rowLeaf.length * 2);
      this.#rowLeaf = grow(this.#rowLeaf, size);
      this.#rowPos = grow(this.#rowPos, size);
    }
    let list = this.#lists[leaf] as Int32Array;
    const at = this.#lengths[leaf] as number;
    if (at === list.length) {
      list = grow(list, list.length * 2);
      this.#lists[leaf] = list;
    }
    list[at] = row;
    this.#lengths[leaf] = at + 1;
    this.#rowLeaf[row] = leaf;
    this.#rowPos[row] = at;
  }

  /** Removes `row` from its list. */
  remove(row: number): void {
    const leaf = this.#rowLeaf[row] as number;
    const pos = this.#rowPos[row] as number;
    const list = this.#lists[leaf] as Int32Array;
    const last = (this.#lengths[leaf] as number) - 1;
    const moved = list[last] as number;
    list[pos] = moved;
    this.#rowPos[moved] = pos;
    this.#lengths[leaf] = last;
  }

  /** The row numbered `from` is now numbered `to` (the matrix moved its last row into a hole). */
  renumber(from: number, to: number): void {
    const leaf = this.#rowLeaf[from] as number;
    const pos = this.#rowPos[from] as number;
    (this.#lists[leaf] as Int32Array)[pos] = to;
    this.#rowLeaf[to] = leaf;
    this.#rowPos[to] = pos;
  }

  /**
   * Renumbers the rows list by list (0, 1, 2… through list 0, then list 1, …) and returns the old row of each new
   * number, so the owner can store the vectors in that order: a probe then reads each list contiguously.
   */
  compact(): Int32Array {
    const order: number[] = [];
    let next = 0;
    for (let leaf = 0; leaf < this.#leafCount; leaf++) {
      const list = this.#lists[leaf] as Int32Array;
      const n = this.#lengths[leaf] as number;
      for (let i = 0; i < n; i++) {
        order.push(list[i] as number);
        list[i] = next;
        this.#rowLeaf[next] = leaf;
        this.#rowPos[next] = i;
        next++;
      }
    }
    return Int32Array.from(order);
  }

  /** Leaf ids, nearest to `query` first. */
  nearestLists(query: Float32Array): Int32Array {
    const dim = this.dimension;
    const leaves = this.#leaves;
    const count = this.#leafCount;
    const sims = new Float64Array(count);
    for (let l = 0; l < count; l++) sims[l] = dotAt(query, leaves, l * dim, dim);
    return Int32Array.from({ length: count }, (_, i) => i).sort(
      (a, b) => (sims[b] as number) - (sims[a] as number),
    );
  }

  /** The rows of list `leaf`: a view, valid until the next add/remove. */
  list(leaf: number): Int32Array {
    return (this.#lists[leaf] as Int32Array).subarray(0, this.#lengths[leaf] as number);
  }

  /** The nearest leaf under the two nearest coarse centroids (one misses rows near a coarse border). */
  #assign(data: Float32Array, offset: number): number {
    const dim = this.dimension;
    const coarse = this.#coarse;
    let c1 = 0;
    let c2 = -1;
    let s1 = Number.NEGATIVE_INFINITY;
    let s2 = Number.NEGATIVE_INFINITY;
    for (let c = 0; c < coarse.length / dim; c++) {
      const s = dotAt2(data, offset, coarse, c * dim, dim);
      if (s > s1) {
        c2 = c1;
        s2 = s1;
        c1 = c;
        s1 = s;
      } else if (s > s2) {
        c2 = c;
        s2 = s;
      }
    }
    let best = (this.#children[c1] as Int32Array)[0] as number;
    let bestSim = Number.NEGATIVE_INFINITY;
    for (const c of c2 < 0 || c2 === c1 ? [c1] : [c1, c2]) {
      for (const leaf of this.#children[c] as Int32Array) {
        const s = dotAt2(data, offset, this.#leaves, leaf * dim, dim);
        if (s > bestSim) {
          bestSim = s;
          best = leaf;
        }
      }
    }
    return best;
  }
}

/** Spherical k-means over `rows` of `data`: `k` unit-norm centroids (k × dim). */
function kmeans(
  data: Float32Array,
  dim: number,
  rows: readonly number[],
  k: number,
  iterations: number,
  random: () => number,
): Float32Array {
  const centroids = new Float32Array(k * dim);
  const picks = sampleRows(rows.length, k, random);
  for (let c = 0; c < k; c++) {
    const row = rows[picks[c] as number] as number;
    centroids.set(data.subarray(row * dim, row * dim + dim), c * dim);
  }
  const assigned = new Int32Array(rows.length);
  const sums = new Float64Array(k * dim);
  const counts = new Int32Array(k);
  for (let it = 0; it < iterations; it++) {
    sums.fill(0);
    counts.fill(0);
    for (let i = 0; i < rows.length; i++) {
      const off = (rows[i] as number) * dim;
      const c = nearest(data, off, centroids, dim);
      assigned[i] = c;
      counts[c] = (counts[c] as number) + 1;
      const base = c * dim;
      for (let d = 0; d < dim; d++) sums[base + d] = (sums[base + d] as number) + (data[off + d] as number);
    }
    for (let c = 0; c < k; c++) {
      const base = c * dim;
      if (counts[c] === 0) {
        // An empty cluster restarts at a random sample row.
        const row = rows[Math.floor(random() * rows.length)] as number;
        centroids.set(data.subarray(row * dim, row * dim + dim), base);
        continue;
      }
      let norm = 0;
      for (let d = 0; d < dim; d++) norm += (sums[base + d] as number) ** 2;
      const inv = norm > 0 ? 1 / Math.sqrt(norm) : 0;
      for (let d = 0; d < dim; d++) centroids[base + d] = (sums[base + d] as number) * inv;
    }
  }
  return centroids;
}

/** The centroid (of `centroids`, k × dim) with the largest dot product with the vector at `data[offset]`. */
function nearest(data: Float32Array, offset: number, centroids: Float32Array, dim: number): number {
  const k = centroids.length / dim;
  let best = 0;
  let bestSim = Number.NEGATIVE_INFINITY;
  for (let c = 0; c < k; c++) {
    const s = dotAt2(data, offset, centroids, c * dim, dim);
    if (s > bestSim) {
      bestSim = s;
      best = c;
    }
  }
  return best;
}

export function dotAt(q: Float32Array, data: Float32Array, base: number, dim: number): number {
  let s0 = 0;
  let s1 = 0;
  let i = 0;
  for (; i + 1 < dim; i += 2) {
    s0 += (q[i] as number) * (data[base + i] as number);
    s1 += (q[i + 1] as number) * (data[base + i + 1] as number);
  }
  if (i < dim) s0 += (q[i] as number) * (data[base + i] as number);
  return s0 + s1;
}

function dotAt2(a: Float32Array, aBase: number, b: Float32Array, bBase: number, dim: number): number {
  let s0 = 0;
  let s1 = 0;
  let i = 0;
  for (; i + 1 < dim; i += 2) {
    s0 += (a[aBase + i] as number) * (b[bBase + i] as number);
    s1 += (a[aBase + i + 1] as number) * (b[bBase + i + 1] as number);
  }
  if (i < dim) s0 += (a[aBase + i] as number) * (b[bBase + i] as number);
  return s0 + s1;
}

/** `count` distinct indices below `n` (all of them when count ≥ n), by a partial Fisher–Yates shuffle. */
function sampleRows(n: number, count: number, random: () => number): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  const take = Math.min(n, count);
  for (let i = 0; i < take; i++) {
    const j = i + Math.floor(random() * (n - i));
    const t = idx[i] as number;
    idx[i] = idx[j] as number;
    idx[j] = t;
  }
  return idx.slice(0, take);
}

function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 0x1_0000_0000;
  };
}

function grow(a: Int32Array, size: number): Int32Array {
  const b = new Int32Array(size);
  b.set(a.subarray(0, Math.min(a.length, size)));
  return b;
}
