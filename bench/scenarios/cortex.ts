/**
 * Cortex recall latency: top-10 search p50/p99 through the SQLite vector store at 10k and 100k memories in one
 * scope (384-dimension vectors, the size of a MiniLM-class model), index build rate (puts/s, durable in cortex.db),
 * and memory held per 100k vectors. The store scans exactly, so recall@10 against exact search is 1.0 by
 * construction (checked here on a sample against a brute-force pass); an ANN index would trade that for speed.
 * Also the embed rate of the feature-hashing embedder. `--quick`: 10k only.
 *
 * Standalone: `node bench/scenarios/cortex.ts [--quick]`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HashEmbedder } from '../../src/adapters/cortex/hash-embedder.ts';
import { SqliteVectorStore } from '../../src/adapters/cortex/sqlite-vector-store.ts';
import { dot, l2Normalise, type MemoryRecord } from '../../src/domain/cortex/memory.ts';
import type { BenchOptions, Scenario, ScenarioReport } from '../lib/scenario.ts';

const DIM = 384;
const QUERIES = 200;

export interface CortexSizeResult {
  readonly memories: number;
  readonly buildPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** The first search after the build loads the scope into memory. */
  readonly coldLoadMs: number;
  readonly recallAt10: number;
  readonly heapBytesPer100k: number;
}

export interface CortexBenchResult {
  readonly dimension: number;
  readonly sizes: readonly CortexSizeResult[];
  readonly hashEmbedsPerSec: number;
}

/** Deterministic pseudo-random unit vectors (xorshift), so runs compare. */
function randomVectors(n: number, seed: number): Float32Array[] {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) / 0xffffffff) * 2 - 1;
  };
  const out: Float32Array[] = [];
  for (let i = 0; i < n; i++) {
    const v = new Float32Array(DIM);
    for (let j = 0; j < DIM; j++) v[j] = next();
    out.push(l2Normalise(v));
  }
  return out;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

async function runSize(n: number): Promise<CortexSizeResult> {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-bench-cortex-'));
  const store = SqliteVectorStore.open(join(dir, 'cortex.db'));
  try {
    const scope = { agent: 'bench', namespace: 'default' };
    const vectors = randomVectors(n, 42);
    const started = performance.now();
    for (let i = 0; i < n; i++) {
      const record: MemoryRecord = {
        id: `mem_${String(i).padStart(8, '0')}`,
        scope,
        text: `memory ${i}`,
        meta: { i },
        embedderId: 'bench/384',
        dimension: DIM,
        createdAt: new Date(1_700_000_000_000 + i).toISOString(),
        expiresAt: null,
        executionId: null,
        outcome: null,
        source: 'api',
      };
      await store.put(record, vectors[i] as Float32Array);
    }
    const buildMs = performance.now() - started;
    const queries = randomVectors(QUERIES, 7);
    const query = (v: Float32Array) =>
      store.search({
        scopes: [scope],
        vector: v,
        embedderId: 'bench/384',
        k: 10,
        now: '2030-01-01T00:00:00.000Z',
      });
    globalThis.gc?.();
    const heapBefore = process.memoryUsage();
    const coldStart = performance.now();
    await query(queries[0] as Float32Array);
    const coldLoadMs = performance.now() - coldStart;
    globalThis.gc?.();
    const heapAfter = process.memoryUsage();
    const held =
      heapAfter.heapUsed + heapAfter.arrayBuffers - (heapBefore.heapUsed + heapBefore.arrayBuffers);
    const times: number[] = [];
    let agree = 0;
    for (let q = 0; q < QUERIES; q++) {
      const v = queries[q] as Float32Array;
      const t0 = performance.now();
      const hits = await query(v);
      times.push(performance.now() - t0);
      if (q < 20) {
        // Brute force over the raw vectors: the ids of the true top 10.
        const truth = vectors
          .map((x, i) => ({ i, s: dot(v, x) }))
          .sort((a, b) => b.s - a.s)
          .slice(0, 10)
          .map((h) => `mem_${String(h.i).padStart(8, '0')}`);
        const got = new Set(hits.map((h) => h.record.id));
        agree += truth.filter((id) => got.has(id)).length;
      }
    }
    times.sort((a, b) => a - b);
    return {
      memories: n,
      buildPerSec: Math.round(n / (buildMs / 1000)),
      p50Ms: percentile(times, 50),
      p99Ms: percentile(times, 99),
      coldLoadMs: Math.round(coldLoadMs),
      recallAt10: agree / (20 * 10),
      heapBytesPer100k: Math.round((held / n) * 100_000),
    };
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runCortexBench(opts: {
  quick: boolean;
  log?: (line: string) => void;
}): Promise<CortexBenchResult> {
  const sizes: CortexSizeResult[] = [];
  for (const n of opts.quick ? [10_000] : [10_000, 100_000]) {
    opts.log?.(`cortex: ${n.toLocaleString('en')} memories`);
    sizes.push(await runSize(n));
  }
  const embedder = new HashEmbedder();
  const text = 'deploy of payments-api failed: the container image could not be pulled from the registry';
  const t0 = performance.now();
  for (let i = 0; i < 2000; i++) embedder.embedOne(`${text} ${i}`);
  const hashEmbedsPerSec = Math.round(2000 / ((performance.now() - t0) / 1000));
  return { dimension: DIM, sizes, hashEmbedsPerSec };
}

function cortexText(r: CortexBenchResult): string {
  const lines = [`cortex recall (SQLite store, exact scan, ${r.dimension}-d vectors, top-10):`];
  for (const s of r.sizes) {
    lines.push(
      `  ${s.memories.toLocaleString('en').padStart(7)} memories  p50 ${s.p50Ms.toFixed(1)} ms  p99 ${s.p99Ms.toFixed(1)} ms` +
        `  (target ≤ 20 ms at 100k)  recall@10 ${s.recallAt10.toFixed(2)} (exact)  build ${s.buildPerSec.toLocaleString('en')}/s` +
        `  load ${s.coldLoadMs} ms  memory ${(s.heapBytesPer100k / 1024 ** 2).toFixed(0)} MiB/100k`,
    );
  }
  lines.push(`  feature-hashing embedder: ${r.hashEmbedsPerSec.toLocaleString('en')} texts/s`);
  return `${lines.join('\n')}\n`;
}

/** `npm run bench -- cortex`. */
export const cortex: Scenario = {
  name: 'cortex',
  description:
    'Cortex memory: top-10 recall latency at 10k/100k memories, build rate, memory per 100k vectors',
  async run(options: BenchOptions): Promise<ScenarioReport> {
    const r = await runCortexBench({ quick: options.quick, log: options.log });
    const at100k = r.sizes.find((s) => s.memories === 100_000);
    return {
      text: cortexText(r),
      docs: [],
      raw: r,
      findings: {
        targets: [
          {
            promise: 'Cortex top-10 recall p50, 100k memories',
            goal: '≤ 20 ms',
            measured: at100k ? `${at100k.p50Ms.toFixed(1)} ms` : 'not measured (--quick)',
            met: at100k ? at100k.p50Ms <= 20 : undefined,
            section: '#cortex',
          },
        ],
      },
    };
  },
};

if (import.meta.main) {
  const r = await runCortexBench({
    quick: process.argv.includes('--quick'),
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(cortexText(r));
}
