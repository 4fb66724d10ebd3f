/**
 * Summary statistics for benchmark samples (milliseconds). Percentiles interpolate linearly between the two
 * nearest ranks (the "R-7" / NumPy default definition), so p50 of an even-sized sample is the mean of the middle
 * two values.
 */

export interface Summary {
  readonly n: number;
  readonly mean: number;
  readonly min: number;
  readonly max: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly stdev: number;
}

/** `sorted` must be ascending and non-empty; `p` in [0, 100]. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new Error('percentile of an empty sample');
  const rank = (p / 100) * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  const lowValue = sorted[low]!;
  return lowValue + (sorted[high]! - lowValue) * (rank - low);
}

export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) throw new Error('summary of an empty sample');
  const sorted = [...samples].sort((a, b) => a - b);
  const mean = sorted.reduce((sum, value) => sum + value, 0) / sorted.length;
  const variance =
    sorted.length > 1 ? sorted.reduce((sum, value) => sum + (value - mean) ** 2, 0) / (sorted.length - 1) : 0;
  return {
    n: sorted.length,
    mean,
    min: sorted[0]!,
    max: sorted[sorted.length - 1]!,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    stdev: Math.sqrt(variance),
  };
}

/** Milliseconds with a precision that suits the magnitude: 0.42, 8.31, 61.2, 512. */
export function formatMs(ms: number): string {
  const abs = Math.abs(ms);
  if (abs >= 100) return ms.toFixed(0);
  if (abs >= 10) return ms.toFixed(1);
  return ms.toFixed(2);
}

/** Rounds every number in a summary for storage (µs precision is plenty for ms values). */
export function roundSummary(summary: Summary): Summary {
  const r = (value: number) => Math.round(value * 1000) / 1000;
  return {
    n: summary.n,
    mean: r(summary.mean),
    min: r(summary.min),
    max: r(summary.max),
    p50: r(summary.p50),
    p95: r(summary.p95),
    p99: r(summary.p99),
    stdev: r(summary.stdev),
  };
}
