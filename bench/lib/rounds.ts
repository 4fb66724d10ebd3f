import type { Metrics, Variant } from './child.ts';

/** Deterministic shuffle (mulberry32), so a run's variant order is reproducible. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  let state = seed >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Runs every variant once per round, in a shuffled order; returns each variant's measured runs, in round order. */
export async function runRounds(
  variants: readonly Variant[],
  warmup: number,
  rounds: number,
  log: (line: string) => void,
  what: string,
): Promise<Map<string, Metrics[]>> {
  const runs = new Map<string, Metrics[]>(variants.map((variant) => [variant.id, []]));
  const started = performance.now();
  for (let round = 0; round < warmup + rounds; round++) {
    for (const variant of shuffled(variants, round + 1)) {
      const metrics = await variant.run();
      if (round >= warmup) runs.get(variant.id)!.push(metrics);
    }
    const done = round + 1 - warmup;
    if (round + 1 === warmup) log(`  ${what}: ${warmup} warm-up round(s) done`);
    else if (done > 0 && (done % 10 === 0 || done === rounds)) {
      log(`  ${what}: ${done}/${rounds} rounds (${((performance.now() - started) / 1000).toFixed(1)} s)`);
    }
  }
  return runs;
}

/** `<variant>:<metric>` → samples, for every metric of every variant. */
export function seriesOf(runs: ReadonlyMap<string, readonly Metrics[]>): Map<string, number[]> {
  const series = new Map<string, number[]>();
  for (const [variant, list] of runs) {
    for (const metrics of list) {
      for (const [metric, value] of Object.entries(metrics)) {
        const key = `${variant}:${metric}`;
        if (!series.has(key)) series.set(key, []);
        series.get(key)!.push(value);
      }
    }
  }
  return series;
}
