/**
 * Cortex recall latency: top-10 search p50/p99 through the SQLite vector store at 10k and 100k memories in one
 * scope (384-dimension vectors, the size of a MiniLM-class model), ANN (`searchMode: 'ann'`, the IVF index) against
 * exact scan on the same file, recall@10 of the ANN against the exact results, index build rate (puts/s, durable in
 * cortex.db: one transaction per 1000 with putMany, and one per put for the first 5k), the index build time on the
 * first search after a load, and memory held per 100k vectors (vectors + index).
 *
 * Data: clustered unit vectors (n/100 random centres, each point = centre + Gaussian noise of norm 0.8, normalised):
 * real embeddings cluster by topic; uniformly random vectors in 384-d have no near neighbours for any index to find.
 * Also the embed rate of the feature-hashing embedder. `--quick`: 10k only.
 *
 * Standalone: `node --expose-gc bench/scenarios/cortex.ts [--quick]`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HashEmbedder } from '../../src/adapters/cortex/hash-embedder.ts';
import { SqliteVectorStore } from '../../src/adapters/cortex/sqlite-vector-store.ts';
import type { VectorPut } from '../../src/app/ports.ts';
import { l2Normalise, type MemoryRecord } from '../../src/domain/cortex/memory.ts';
import type { BenchOptions, Scenario, ScenarioReport } from '../lib/scenario.ts';

const DIM = 384;
const QUERIES = 200;
const SINGLE_PUTS = 5_000;

export interface CortexModeResult {
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** The first search after a load: reads the scope into memory (and builds the index in ANN mode). */
  readonly coldLoadMs: number;
  readonly heapBytesPer100k: number;
}

export interface CortexSizeResult {
  readonly memories: number;
  /** putMany, 1000 per transaction. */
  readonly buildPerSec: number;
  /** One put (one transaction) each, over the first 5k. */
  readonly singlePutPerSec: number;
  readonly exact: CortexModeResult;
  readonly ann: CortexModeResult;
  /** Share of the exact top 10 the ANN returned, over all queries. */
  readonly recallAt10: number;
}

export interface CortexBenchResult {
  readonly dimension: number;
  readonly sizes: readonly CortexSizeResult[];
  readonly hashEmbedsPerSec: number;
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

/** Deterministic clustered unit vectors: the first `n` are memories, the rest queries from the same clusters. */
function clusteredVectors(n: number, queries: number, seed: number): Float32Array[] {
  const r = xorshift(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
  const centres: Float32Array[] = [];
  for (let c = 0; c < Math.max(1, Math.round(n / 100)); c++)
    centres.push(l2Normalise(Float32Array.from({ length: DIM }, gauss)));
  const noise = 0.8 / Math.sqrt(DIM);
  const out: Float32Array[] = [];
  for (let i = 0; i < n + queries; i++) {
    const c = centres[Math.floor(r() * centres.length)] as Float32Array;
    out.push(l2Normalise(Float32Array.from(c, (x) => x + noise * gauss())));
  }
  return out;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

function memory(i: number, scope: MemoryRecord['scope']): MemoryRecord {
  return {
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
}

async function runSize(n: number): Promise<CortexSizeResult> {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-bench-cortex-'));
  const path = join(dir, 'cortex.db');
  try {
    const scope = { agent: 'bench', namespace: 'default' };
    const all = clusteredVectors(n, QUERIES, 42);
    const writer = SqliteVectorStore.open(path, { searchMode: 'exact' });
    const single = Math.min(SINGLE_PUTS, n);
    let t0 = performance.now();
    for (let i = 0; i < single; i++) await writer.put(memory(i, scope), all[i] as Float32Array);
    const singlePutPerSec = Math.round(single / ((performance.now() - t0) / 1000));
    t0 = performance.now();
    for (let from = single; from < n; from += 1000) {
      const batch: VectorPut[] = [];
      for (let i = from; i < Math.min(n, from + 1000); i++)
        batch.push({ record: memory(i, scope), vector: all[i] as Float32Array });
      await writer.putMany(batch);
    }
    const buildPerSec = Math.round((n - single) / ((performance.now() - t0) / 1000));
    await writer.close();
    const queries = all.slice(n);
    const exact = await measure(path, 'exact', scope, queries, n);
    const ann = await measure(path, 'ann', scope, queries, n);
    let agree = 0;
    for (let q = 0; q < queries.length; q++) {
      const truth = new Set(exact.ids[q]);
      agree += (ann.ids[q] ?? []).filter((id) => truth.has(id)).length;
    }
    return {
      memories: n,
      buildPerSec,
      singlePutPerSec,
      exact: exact.result,
      ann: ann.result,
      recallAt10: agree / (queries.length * 10),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function measure(
  path: string,
  mode: 'exact' | 'ann',
  scope: MemoryRecord['scope'],
  queries: readonly Float32Array[],
  n: number,
): Promise<{ result: CortexModeResult; ids: string[][] }> {
  const store = SqliteVectorStore.open(path, { searchMode: mode });
  try {
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
    const ids: string[][] = [];
    for (const v of queries) {
      const t0 = performance.now();
      const hits = await query(v);
      times.push(performance.now() - t0);
      ids.push(hits.map((h) => h.record.id));
    }
    times.sort((a, b) => a - b);
    return {
      result: {
        p50Ms: percentile(times, 50),
        p99Ms: percentile(times, 99),
        coldLoadMs: Math.round(coldLoadMs),
        heapBytesPer100k: Math.round((held / n) * 100_000),
      },
      ids,
    };
  } finally {
    await store.close();
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
  const lines = [
    `cortex recall (SQLite store, ${r.dimension}-d clustered vectors, top-10; target ≤ 20 ms p50 at 100k):`,
  ];
  const mode = (name: string, m: CortexModeResult) =>
    `    ${name.padEnd(5)} p50 ${m.p50Ms.toFixed(1)} ms  p99 ${m.p99Ms.toFixed(1)} ms  first search after load ${m.coldLoadMs} ms` +
    `  memory ${(m.heapBytesPer100k / 1024 ** 2).toFixed(0)} MiB/100k`;
  for (const s of r.sizes) {
    lines.push(
      `  ${s.memories.toLocaleString('en')} memories: recall@10 of ann vs exact ${s.recallAt10.toFixed(3)}` +
        `  build ${s.buildPerSec.toLocaleString('en')}/s batched (putMany ×1000), ${s.singlePutPerSec.toLocaleString('en')}/s one put each`,
      mode('exact', s.exact),
      mode('ann', s.ann),
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
            measured: at100k ? `${at100k.ann.p50Ms.toFixed(1)} ms (ann)` : 'not measured (--quick)',
            met: at100k ? at100k.ann.p50Ms <= 20 : undefined,
            section: '#cortex',
          },
          {
            promise: 'Cortex recall@10 of the ANN index against exact search, 100k memories',
            goal: '≥ 0.95',
            measured: at100k ? at100k.recallAt10.toFixed(3) : 'not measured (--quick)',
            met: at100k ? at100k.recallAt10 >= 0.95 : undefined,
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
