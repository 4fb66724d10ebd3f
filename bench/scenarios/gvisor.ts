/**
 * Scenario `gvisor`: the gvisor runtime's start costs, side by side with raw runsc and the sandbox runtime, on the
 * trivial Python agent of start-latency (bench/fixtures/start-latency/python), interleaved round-robin:
 * - gvisor cold:   GvisorRuntime spawn + execute (runsc create/start of the idle init, runsc exec of the agent,
 *                  teardown) — call → result.
 * - gvisor warm:   execute only, on an instance spawned (Warm) outside the measurement — call → result.
 * - runsc do:      `runsc do python3 agent.py` (gVisor's own quick path: host root read-only, no AEGIS bundle,
 *                  no cgroup, no grants) — spawn → exit.
 * - sandbox cold:  SandboxRuntime spawn + execute of the same agent — call → result.
 * Runs are capped at 20 per variant (each costs ~0.5 s of a 2-core host); `--quick`: 5.
 * Skipped, saying why, when runsc or root is missing. Standalone: `node bench/scenarios/gvisor.ts [--quick]`.
 * Not in `npm run bench`'s list: the `peers` scenario measures the gvisor and docker runtimes through AEGIS
 * (runAgent, and bind + execute from Warm) beside runsc do, the Docker Engine API and the floor in the same rounds.
 * This stays as the runtime-only probe (no store, no ledger, no RuntimeRouter).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ProcIdentity } from '../../src/adapters/host/process-identity.ts';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import { GvisorRuntime } from '../../src/adapters/runtimes/gvisor/runtime.ts';
import { SandboxRuntime } from '../../src/adapters/runtimes/sandbox/runtime.ts';
import type { Runtime } from '../../src/app/ports.ts';
import type { CompiledAgent } from '../../src/domain/manifest/compiled.ts';
import type { BenchOptions, Scenario, ScenarioReport } from '../lib/scenario.ts';
import { formatMs, summarize } from '../lib/stats.ts';
import { renderText } from '../lib/table.ts';

const FIXTURE = resolve(import.meta.dirname, '../fixtures/start-latency/python');

function skipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  try {
    execFileSync('runsc', ['--version'], { stdio: 'ignore' });
    return undefined;
  } catch {
    return 'runsc is not installed (npm run setup -- --runtimes gvisor)';
  }
}

let seq = 0;
async function spawnAndRun(runtime: Runtime, agent: CompiledAgent): Promise<void> {
  const id = await runtime.spawn({ executionId: `ex_bench_gv${process.pid}x${seq++}`, agent });
  const out = await runtime.execute(id, { input: null, onLog: () => {} });
  if (out.status !== 'succeeded') throw new Error(`${runtime.name}: ${out.status} ${out.reason}`);
}

function runscDo(stateDir: string): Promise<void> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(
      'runsc',
      [
        '--root',
        stateDir,
        '--network=none',
        '--ignore-cgroups',
        'do',
        '--cwd',
        FIXTURE,
        '/usr/bin/python3',
        join(FIXTURE, 'agent.py'),
      ],
      { stdio: 'ignore' },
    );
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolveRun() : reject(new Error(`runsc do exited ${code}`))));
  });
}

export const gvisor: Scenario = {
  name: 'gvisor',
  description: 'gvisor runtime cold/warm start vs runsc do and the sandbox runtime (python, call → result)',
  async run(options: BenchOptions): Promise<ScenarioReport> {
    const skip = skipReason();
    if (skip) {
      options.log(`gvisor: skipped — ${skip}`);
      return { text: `gvisor: skipped — ${skip}`, docs: [], raw: { skipped: skip } };
    }
    const runs = Math.min(options.runs, options.quick ? 5 : 20);
    const scratch = mkdtempSync(join(tmpdir(), 'aegis-bench-gvisor-'));
    try {
      const identity = new ProcIdentity();
      const gv = new GvisorRuntime({ identity, scratchRoot: scratch });
      const sandbox = new SandboxRuntime({ identity, scratchRoot: scratch });
      const loaded = (await loadManifestFile(join(FIXTURE, 'agent.yaml'))).agent;
      const onGvisor: CompiledAgent = { ...loaded, isolation: 'gvisor' };
      const variants: Record<string, () => Promise<number>> = {
        'gvisor cold (spawn + execute)': async () => {
          const t0 = performance.now();
          await spawnAndRun(gv, onGvisor);
          return performance.now() - t0;
        },
        'gvisor warm (execute from Warm)': async () => {
          const id = await gv.spawn({ executionId: `ex_bench_gvw${process.pid}x${seq++}`, agent: onGvisor });
          const t0 = performance.now();
          const out = await gv.execute(id, { input: null, onLog: () => {} });
          if (out.status !== 'succeeded') throw new Error(`gvisor warm: ${out.status} ${out.reason}`);
          return performance.now() - t0;
        },
        'runsc do (raw)': async () => {
          const t0 = performance.now();
          await runscDo(join(scratch, 'runsc-do'));
          return performance.now() - t0;
        },
        'sandbox cold (spawn + execute)': async () => {
          const t0 = performance.now();
          await spawnAndRun(sandbox, loaded);
          return performance.now() - t0;
        },
      };
      const samples = new Map<string, number[]>(Object.keys(variants).map((name) => [name, []]));
      for (let round = 0; round < runs + options.warmup; round++) {
        for (const [name, measure] of Object.entries(variants)) {
          const ms = await measure();
          if (round >= options.warmup) samples.get(name)!.push(ms);
        }
      }
      const rows = [...samples].map(([name, values]) => {
        const s = summarize(values);
        return [name, String(s.n), formatMs(s.p50), formatMs(s.p95), formatMs(s.mean)];
      });
      const text = `gvisor (python agent, ms)\n${renderText({ headers: ['variant', 'n', 'p50', 'p95', 'mean'], rows })}`;
      options.log(text);
      return {
        text,
        docs: [],
        raw: Object.fromEntries([...samples].map(([name, values]) => [name, summarize(values)])),
      };
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  },
};

if (import.meta.main) {
  const quick = process.argv.includes('--quick');
  const report = await gvisor.run({
    quick,
    runs: quick ? 5 : 20,
    warmup: 1,
    cliRuns: 0,
    breakdown: false,
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`${report.text}\n`);
}
