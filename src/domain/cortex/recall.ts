/**
 * Recall scoring: score = similarity × recency × outcome weight, kept when score ≥ threshold.
 *
 * - similarity: cosine of query and memory vectors, negative values count as 0.
 * - recency: 2^(−age / halfLife) — a memory `halfLifeMs` old counts half, twice that a quarter; never below
 *   `recencyFloor`, so an old memory that matches very well can still come back.
 * - outcome weight: from the execution the memory came from; succeeded > unknown (null) > failed.
 *
 * Options follow the three steps: `RecallOptions` (public, documented defaults) → `recallDefaults()` → `RecallPolicy`.
 */
import { AegisError } from '../errors.ts';
import type { MemoryOutcome, MemoryRecord } from './memory.ts';

export interface RecallOptions {
  /** Age at which recency weighs one half. @default 30 days */
  readonly halfLifeMs?: number;
  /** Lowest recency weight. @default 0.1 */
  readonly recencyFloor?: number;
  /** Weight of a memory by outcome. @default { succeeded: 1, unknown: 0.85, failed: 0.6 } */
  readonly outcomeWeights?: {
    readonly succeeded?: number;
    readonly unknown?: number;
    readonly failed?: number;
  };
  /** Memories scoring below this are dropped. @default 0.2 */
  readonly threshold?: number;
}

export interface RecallPolicy {
  readonly halfLifeMs: number;
  readonly recencyFloor: number;
  readonly outcomeWeights: { readonly succeeded: number; readonly unknown: number; readonly failed: number };
  readonly threshold: number;
}

export const DEFAULT_HALF_LIFE_MS = 30 * 24 * 3600 * 1000;

export function recallPolicy(options: RecallOptions = {}): RecallPolicy {
  const weights = {
    succeeded: options.outcomeWeights?.succeeded ?? 1,
    unknown: options.outcomeWeights?.unknown ?? 0.85,
    failed: options.outcomeWeights?.failed ?? 0.6,
  };
  const policy: RecallPolicy = {
    halfLifeMs: options.halfLifeMs ?? DEFAULT_HALF_LIFE_MS,
    recencyFloor: options.recencyFloor ?? 0.1,
    outcomeWeights: weights,
    threshold: options.threshold ?? 0.2,
  };
  if (!(policy.halfLifeMs > 0)) bad('halfLifeMs', policy.halfLifeMs, 'a positive number of milliseconds');
  if (!(policy.recencyFloor >= 0 && policy.recencyFloor <= 1))
    bad('recencyFloor', policy.recencyFloor, 'in [0, 1]');
  for (const [name, w] of Object.entries(weights)) {
    if (!(w >= 0 && w <= 1)) bad(`outcomeWeights.${name}`, w, 'in [0, 1]');
  }
  if (!(weights.succeeded >= weights.unknown && weights.unknown >= weights.failed)) {
    bad('outcomeWeights', 0, 'ordered succeeded ≥ unknown ≥ failed');
  }
  checkThreshold(policy.threshold);
  return policy;
}

export function checkThreshold(threshold: number, where = 'threshold'): number {
  if (!(threshold >= 0 && threshold <= 1)) bad(where, threshold, 'a number in [0, 1]');
  return threshold;
}

function bad(field: string, value: number, want: string): never {
  throw new AegisError('USAGE', `recall option ${field} is ${value}; it must be ${want}`);
}

export interface RecallScore {
  readonly similarity: number;
  readonly recency: number;
  readonly outcomeWeight: number;
  readonly score: number;
}

export function recencyWeight(ageMs: number, policy: RecallPolicy): number {
  const age = Math.max(0, ageMs);
  return Math.max(policy.recencyFloor, 2 ** (-age / policy.halfLifeMs));
}

export function outcomeWeight(outcome: MemoryOutcome | null, policy: RecallPolicy): number {
  if (outcome === 'succeeded') return policy.outcomeWeights.succeeded;
  if (outcome === 'failed') return policy.outcomeWeights.failed;
  return policy.outcomeWeights.unknown;
}

export function scoreMemory(
  record: Pick<MemoryRecord, 'createdAt' | 'outcome'>,
  similarity: number,
  nowMs: number,
  policy: RecallPolicy,
): RecallScore {
  const sim = Math.max(0, Math.min(1, similarity));
  const recency = recencyWeight(nowMs - Date.parse(record.createdAt), policy);
  const weight = outcomeWeight(record.outcome, policy);
  return { similarity: sim, recency, outcomeWeight: weight, score: sim * recency * weight };
}

/**
 * Scores candidates, drops those under `threshold`, and returns the best `k`, highest score first (ties: newer
 * first, then id, so the order is stable).
 */
export function rankRecall<T extends { readonly record: MemoryRecord; readonly similarity: number }>(
  candidates: readonly T[],
  options: {
    readonly k: number;
    readonly threshold: number;
    readonly nowMs: number;
    readonly policy: RecallPolicy;
  },
): Array<T & RecallScore> {
  const scored = candidates.map((c) => ({
    ...c,
    ...scoreMemory(c.record, c.similarity, options.nowMs, options.policy),
  }));
  return scored
    .filter((c) => c.score >= options.threshold)
    .sort(
      (a, b) =>
        b.score - a.score ||
        (a.record.createdAt < b.record.createdAt ? 1 : a.record.createdAt > b.record.createdAt ? -1 : 0) ||
        (a.record.id < b.record.id ? -1 : a.record.id > b.record.id ? 1 : 0),
    )
    .slice(0, options.k);
}
