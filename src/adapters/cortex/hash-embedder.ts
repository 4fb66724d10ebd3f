/**
 * Feature-hashing embedder: the always-available fallback (no model, no network, fully deterministic).
 *
 * Text is lower-cased and split into words (Unicode letters and digits); English stop words are dropped. Features
 * are the words (weight 1), adjacent word pairs (0.5) and the character trigrams of each word padded with `#`
 * (0.3 each, so `deploy` and `deployment` share most of their weight). Each feature is hashed (FNV-1a, 32 bit) to
 * one of `dimension` buckets with a sign from a second hash bit (signed hashing keeps collisions unbiased), and the
 * vector is L2-normalised. It matches shared words and word parts, not meaning: paraphrases with new words are what
 * a real model (minilm-embedder.ts) is for.
 */
import type { Embedder } from '../../app/ports.ts';
import { l2Normalise } from '../../domain/cortex/memory.ts';
import { AegisError } from '../../domain/errors.ts';

export interface HashEmbedderOptions {
  /** Buckets (vector length). @default 512 */
  readonly dimension?: number;
}

const STOP = new Set(
  (
    'a an and are as at be been but by did do does for from had has have he her his how i if in into is it its ' +
    'me my no not of on or our she so than that the their them then there these they this those to too was we ' +
    'were what when where which who why will with you your'
  ).split(' '),
);

const WORD_WEIGHT = 1;
const PAIR_WEIGHT = 0.5;
const TRIGRAM_WEIGHT = 0.3;

export class HashEmbedder implements Embedder {
  readonly id: string;
  readonly dimension: number;

  constructor(options: HashEmbedderOptions = {}) {
    const dimension = options.dimension ?? 512;
    if (!(Number.isInteger(dimension) && dimension >= 16 && dimension <= 65_536)) {
      throw new AegisError(
        'USAGE',
        `hash embedder dimension ${dimension} must be a whole number from 16 to 65536`,
      );
    }
    this.dimension = dimension;
    this.id = `hash-v1/${dimension}`;
  }

  async embed(texts: readonly string[]): Promise<Float32Array[]> {
    return texts.map((t) => this.embedOne(t));
  }

  /** Synchronous form (the bench embeds 100k texts). */
  embedOne(text: string): Float32Array {
    const v = new Float32Array(this.dimension);
    const words = tokenize(text);
    for (let i = 0; i < words.length; i++) {
      const w = words[i] as string;
      this.#add(v, `w:${w}`, WORD_WEIGHT);
      if (i + 1 < words.length) this.#add(v, `p:${w} ${words[i + 1]}`, PAIR_WEIGHT);
      const padded = `#${w}#`;
      for (let j = 0; j + 3 <= padded.length; j++)
        this.#add(v, `c:${padded.slice(j, j + 3)}`, TRIGRAM_WEIGHT);
    }
    return l2Normalise(v);
  }

  #add(v: Float32Array, feature: string, weight: number): void {
    const h = fnv1a(feature);
    const index = h % this.dimension;
    const sign = h >>> 31 === 1 ? -1 : 1;
    v[index] = (v[index] as number) + sign * weight;
  }
}

/** Lower-cased words of letters and digits, stop words removed. */
export function tokenize(text: string): string[] {
  const out: string[] = [];
  for (const m of text.toLowerCase().matchAll(/[\p{L}\p{N}]+/gu)) {
    if (!STOP.has(m[0])) out.push(m[0]);
  }
  return out;
}

/** FNV-1a over UTF-16 code units, 32-bit unsigned. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
