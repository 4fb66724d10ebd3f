/**
 * Scenario `api`: the server's execution round trip — `POST /v1/executions?wait=30s` → the finished execution — for
 * the trivial Python agent of start-latency (bench/fixtures/start-latency/python), side by side with the floor.
 *
 * - aegis: a real `aegis server` child process (SQLite in a temp AEGIS_HOME, bundles in a temp 0755 dir, no unix
 *          socket, `--max-concurrent <cores>`, a queue and rate limit out of the way), the agent deployed once, then
 *          executed by the TypeScript SDK (`AegisClient`, keep-alive) from this process.
 * - floor: raw `bwrap` with the runtime's own flags around the same program, spawned from this process as the
 *          sandbox uid (start-latency's floor; its flag parity is checked here too, with one in-process aegis run).
 *
 * Measured, variants interleaved in a shuffled order per round:
 * - latency, one at a time: aegis call → response (and → the agent's first line), floor spawn → exit;
 * - throughput, closed loops of 1 and N = 2 × cores clients: executions/s, aegis / floor;
 * - the server's CPU time per execution during the aegis throughput loops (/proc/<pid>/stat), beside the CPU this
 *   process spends per execution as the client (aegis) or as the spawner (floor).
 *
 * AEGIS_BENCH_SERVER_NODE_OPTIONS is handed to the server as NODE_OPTIONS (e.g. `--cpu-prof --cpu-prof-dir=/tmp/p`).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { AegisClient, type Execution } from '../../sdk/index.ts';
import { packAgentDir } from '../../src/adapters/bundle/pack.ts';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import { resolveSandboxUser } from '../../src/adapters/runtimes/sandbox/host.ts';
import { openLocalContext } from '../../src/main.ts';
import {
  checkExit,
  FIXTURES,
  firstLineOf,
  type Metrics,
  parseLastLine,
  runChild,
  type Variant,
} from '../lib/child.ts';
import { wallNowMs } from '../lib/clock.ts';
import { checkFloorParity, commandFor, makeFloor } from '../lib/floor.ts';
import { cpuSnapshot, hostCpuTicks, otherWork, processCpuMs } from '../lib/host-load.ts';
import { describeMachine, machineInfo } from '../lib/machine.ts';
import { type Absent, isAbsent, openSandboxRuntime, type SandboxRuntimePeer } from '../lib/peers.ts';
import { runRounds, seriesOf } from '../lib/rounds.ts';
import type { BenchOptions, Scenario, ScenarioReport, TargetCheck } from '../lib/scenario.ts';
import { formatMs, roundSummary, type Summary, summarize } from '../lib/stats.ts';
import { renderMarkdown, renderText, type Table } from '../lib/table.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const CLI_ENTRY = join(ROOT, 'src/cli/bin.ts');
const AGENT_DIR = join(FIXTURES, 'python');
const TARGET_RATE_RATIO = 0.9;
/** Sustained rate target against @anthropic-ai/sandbox-runtime's, same clients (issue 5). */
const TARGET_SRT_RATIO = 10;
/** The server process's own CPU per execution (issue 5). */
const TARGET_CPU_MS = 2;
/** Warm sandboxes per agent revision on the warm-pool server (`aegis server --warm`). */
const WARM_POOL = 2;
/** Throughput loops are split into this many chunks per variant, interleaved with the others' (quick: 2). */
const THROUGHPUT_ROUNDS = 5;
const STOP_GRACE_MS = 10_000;
const START_TIMEOUT_MS = 30_000;
/** Average CPUs kept busy by other programs above which a run's numbers are flagged as inflated. */
const BUSY_CPUS = 0.1;

// ---------------------------------------------------------------------------------------------------------------
// The server process

interface ServerProcess {
  readonly url: string;
  readonly pid: number;
  readonly adminKey: string;
  /** SIGTERM; SIGKILL (by pid) when it has not exited after STOP_GRACE_MS. Resolves once it exited. */
  stop(): Promise<void>;
}

async function startServerProcess(
  home: string,
  bundles: string,
  maxConcurrent: number,
  extraArgs: readonly string[] = [],
): Promise<ServerProcess> {
  const nodeOptions = process.env['AEGIS_BENCH_SERVER_NODE_OPTIONS'];
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    AEGIS_HOME: home,
    AEGIS_BUNDLE_DIR: bundles,
    AEGIS_DATABASE_URL: '',
    ...(nodeOptions ? { NODE_OPTIONS: nodeOptions } : {}),
  };
  const args = [
    ...['server', '--listen', '127.0.0.1:0', '--no-socket', '--max-concurrent', String(maxConcurrent)],
    ...['--max-queued', '10000', '--rate', '100000/s,burst=100000'],
    ...extraArgs,
  ];
  // Started on this Node directly (not through bin/aegis.mjs's re-exec), so the pid and signals are the server's.
  const child = spawn(process.execPath, [CLI_ENTRY, ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    log = (log + chunk).slice(-16_384);
  });
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<boolean>((done) => {
      timer = setTimeout(() => done(true), STOP_GRACE_MS);
    });
    if (await Promise.race([exited.then(() => false), late])) child.kill('SIGKILL');
    clearTimeout(timer);
    await exited;
  };
  try {
    const url = await listeningUrl(child, () => log);
    return {
      url,
      pid: child.pid!,
      adminKey: readFileSync(join(home, 'admin.key'), 'utf8').trim(),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

function listeningUrl(child: ChildProcess, log: () => string): Promise<string> {
  return new Promise((resolveUrl, reject) => {
    const timer = setTimeout(
      () => finish(new Error(`aegis server did not listen in ${START_TIMEOUT_MS / 1000} s:\n${log()}`)),
      START_TIMEOUT_MS,
    );
    const onData = () => {
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(log());
      if (match) finish(match[1]!);
    };
    const onExit = (code: number | null) => finish(new Error(`aegis server exited with ${code}:\n${log()}`));
    function finish(result: string | Error) {
      clearTimeout(timer);
      child.stderr!.off('data', onData);
      child.off('exit', onExit);
      if (typeof result === 'string') resolveUrl(result);
      else reject(result);
    }
    child.stderr!.on('data', onData);
    child.once('exit', onExit);
  });
}

/** Resident memory of a live process, MiB (it also sets what each fork of that process costs). */
function residentMiB(pid: number): number {
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return kib === undefined ? Number.NaN : Math.round(Number(kib) / 1024);
}

// ---------------------------------------------------------------------------------------------------------------
// Closed loops

/** One execution; resolves with its metrics (ms from the call; `exit`: until it ended). */
export type Execute = () => Promise<Metrics>;

/** `clients` workers, each starting the next execution when its last one ended, until `total` have run. */
export async function closedLoop(
  clients: number,
  total: number,
  execute: Execute,
): Promise<{ wallMs: number; executions: Metrics[] }> {
  const executions: Metrics[] = [];
  let started = 0;
  const worker = async () => {
    while (started < total) {
      started++;
      executions.push(await execute());
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(clients, total) }, worker));
  return { wallMs: performance.now() - t0, executions };
}

/** Who runs the executions of a throughput chunk. */
type System = 'aegis' | 'aegis-warm' | 'floor' | 'sandbox-runtime';

const SYSTEM_LABEL: Readonly<Record<System, string>> = {
  aegis: 'aegis API, cold',
  'aegis-warm': `aegis API, warm pool (--warm ${WARM_POOL})`,
  floor: 'floor (raw bwrap)',
  'sandbox-runtime': '@anthropic-ai/sandbox-runtime',
};

interface LoadSpec {
  readonly id: string;
  readonly system: System;
  readonly clients: number;
  /** Executions per round. */
  readonly perRound: number;
  readonly execute: Execute;
  /** The server whose CPU time is charged to this chunk (aegis systems); this process's is always read. */
  readonly serverPid: number | undefined;
}

/**
 * A throughput chunk as a round variant: runs `perRound` executions in a closed loop and reports wall time, the
 * CPU time the server and this process used meanwhile, and how busy the host's CPUs were. Each execution's own
 * metrics go to `executions`.
 */
function loadVariant(spec: LoadSpec, executions: Metrics[]): Variant {
  const serverCpu = () =>
    spec.serverPid === undefined ? { own: 0, children: 0 } : processCpuMs(spec.serverPid);
  return {
    id: spec.id,
    run: async () => {
      const server0 = serverCpu();
      const self0 = processCpuMs(process.pid);
      const host0 = hostCpuTicks();
      const loop = await closedLoop(spec.clients, spec.perRound, spec.execute);
      const host = hostCpuTicks();
      const self = processCpuMs(process.pid);
      const server = serverCpu();
      executions.push(...loop.executions);
      return {
        executions: spec.perRound,
        wallMs: loop.wallMs,
        serverMs: server.own - server0.own,
        serverChildrenMs: server.children - server0.children,
        benchMs: self.own - self0.own,
        benchChildrenMs: self.children - self0.children,
        hostBusyTicks: host.busy - host0.busy,
        hostTicks: host.total - host0.total,
      };
    },
  };
}

interface Throughput {
  readonly id: string;
  readonly system: System;
  readonly clients: number;
  readonly executions: number;
  readonly wallMs: number;
  readonly perSec: number;
  /** Per round, executions/s: the spread shows how steady the host was. */
  readonly perSecByRound: readonly number[];
  /** Per execution under this load, ms. */
  readonly latency: Summary;
  /** Mean of each breakdown step under this load, ms (aegis). */
  readonly steps: Readonly<Record<string, number>>;
  /** CPU ms per execution: the server's own and its reaped children's (bwrap), this process's likewise. */
  readonly cpuMsPerExecution: Readonly<
    Record<'server' | 'serverChildren' | 'bench' | 'benchChildren', number>
  >;
  /** Fraction of the host's CPU time that was busy (all programs) during the loops. */
  readonly hostBusy: number;
}

function throughputOf(spec: LoadSpec, runs: readonly Metrics[], executions: readonly Metrics[]): Throughput {
  const sum = (key: string) => runs.reduce((total, metrics) => total + (metrics[key] ?? 0), 0);
  const count = sum('executions');
  const wallMs = sum('wallMs');
  return {
    id: spec.id,
    system: spec.system,
    clients: spec.clients,
    executions: count,
    wallMs,
    perSec: count / (wallMs / 1000),
    perSecByRound: runs.map((metrics) => metrics['executions']! / (metrics['wallMs']! / 1000)),
    latency: summarize(executions.map((metrics) => metrics['exit']!)),
    steps: spec.system.startsWith('aegis') ? stepMeans(executions) : {},
    cpuMsPerExecution: {
      server: sum('serverMs') / count,
      serverChildren: sum('serverChildrenMs') / count,
      bench: sum('benchMs') / count,
      benchChildren: sum('benchChildrenMs') / count,
    },
    hostBusy: sum('hostBusyTicks') / sum('hostTicks'),
  };
}

/**
 * Where an API execution's time goes, from the timestamps the server puts in the record (whole milliseconds, its
 * clock) and the agent's first line, relative to the client's call: [from, to, what happens in between].
 */
const STEPS: readonly (readonly [string, string, string])[] = [
  ['call', 'created', 'request → accepted: HTTP, key check, agent lookup'],
  [
    'created',
    'started',
    'accepted → running: row insert, ledger, queue, revision load, sandbox spawn or pool claim, ledger flush',
  ],
  ['started', 'firstLine', 'running → agent first line: release (go), exec, interpreter start'],
  ['firstLine', 'finished', 'agent body + exit, bwrap exits, output drained'],
  [
    'finished',
    'exit',
    'finished → response: teardown, log flush, final update, wake the waiting request, reply',
  ],
];

/** Metrics of one API execution: call → response (`exit`), and the record's timestamps relative to the call. */
function apiMetrics(call: number, done: number, execution: Execution): Metrics {
  const at = (iso: string | null) => (iso === null ? Number.NaN : Date.parse(iso) - call);
  return {
    exit: done - call,
    created: at(execution.createdAt),
    started: at(execution.startedAt),
    firstLine: firstLineOf(execution.output, `execution ${execution.id}`) - call,
    finished: at(execution.finishedAt),
  };
}

function stepMeans(executions: readonly Metrics[]): Record<string, number> {
  const steps: Record<string, number> = {};
  for (const [from, to, what] of STEPS) {
    const at = (metrics: Metrics, key: string) => (key === 'call' ? 0 : (metrics[key] ?? Number.NaN));
    const durations = executions
      .map((metrics) => at(metrics, to) - at(metrics, from))
      .filter(Number.isFinite);
    steps[what] = durations.length > 0 ? summarize(durations).mean : Number.NaN;
  }
  return steps;
}

// ---------------------------------------------------------------------------------------------------------------
// Reporting

const LATENCY_ROWS: readonly { label: string; span: string; key: string }[] = [
  {
    label: 'api sync (1 client): POST /v1/executions?wait=30s',
    span: 'call → response',
    key: 'api-sync:exit',
  },
  {
    label: 'api sync (1 client): POST /v1/executions?wait=30s',
    span: 'call → first line',
    key: 'api-sync:firstLine',
  },
  {
    label: `api sync, warm pool (--warm ${WARM_POOL}, full at the call)`,
    span: 'call → response',
    key: 'api-warm:exit',
  },
  {
    label: `api sync, warm pool (--warm ${WARM_POOL}, full at the call)`,
    span: 'call → first line',
    key: 'api-warm:firstLine',
  },
  { label: 'floor, sequential (raw bwrap)', span: 'spawn → exit', key: 'floor-seq:exit' },
  { label: 'floor, sequential (raw bwrap)', span: 'spawn → first line', key: 'floor-seq:firstLine' },
];

function latencyTable(summaries: ReadonlyMap<string, Summary>): Table {
  return {
    headers: [
      'variant, one at a time, interleaved',
      'measured',
      'n',
      'p50 ms',
      'p95 ms',
      'p99 ms',
      'mean ms',
      'max ms',
    ],
    align: ['left', 'left'],
    rows: LATENCY_ROWS.filter(({ key }) => summaries.has(key)).map(({ label, span, key }) => {
      const s = summaries.get(key)!;
      return [label, span, String(s.n), ...[s.p50, s.p95, s.p99, s.mean, s.max].map(formatMs)];
    }),
  };
}

interface RateRatio {
  readonly clients: number;
  readonly aegis: Throughput;
  readonly warm: Throughput;
  readonly floor: Throughput;
  readonly srt: Throughput | undefined;
  readonly ratio: number;
  readonly warmRatio: number;
  readonly meetsTarget: boolean;
  readonly warmMeetsTarget: boolean;
}

function throughputTable(ratios: readonly RateRatio[]): Table {
  const busy = (t: Throughput | undefined) => (t ? `${Math.round(t.hostBusy * 100)} %` : '–');
  const rate = (t: Throughput | undefined) => (t ? t.perSec.toFixed(1) : 'absent');
  const times = (a: Throughput, b: Throughput | undefined) =>
    b ? `${(a.perSec / b.perSec).toFixed(1)}×` : '–';
  return {
    headers: [
      'clients',
      'aegis cold execs/s',
      'aegis warm execs/s',
      'floor execs/s',
      'cold / floor',
      'warm / floor',
      `target ≥ ${TARGET_RATE_RATIO}×`,
      'sandbox-runtime starts/s',
      'cold / srt',
      'warm / srt',
      `target ≥ ${TARGET_SRT_RATIO}×`,
      'host CPU busy: cold · warm · floor · srt',
    ],
    rows: ratios.map((r) => [
      String(r.clients),
      rate(r.aegis),
      rate(r.warm),
      rate(r.floor),
      `${r.ratio.toFixed(2)}×`,
      `${r.warmRatio.toFixed(2)}×`,
      `${r.meetsTarget ? 'met' : 'NOT met'} · ${r.warmMeetsTarget ? 'met' : 'NOT met'}`,
      rate(r.srt),
      times(r.aegis, r.srt),
      times(r.warm, r.srt),
      r.srt
        ? Math.max(r.aegis.perSec, r.warm.perSec) / r.srt.perSec >= TARGET_SRT_RATIO
          ? 'met'
          : 'NOT met'
        : '–',
      [r.aegis, r.warm, r.floor, r.srt].map(busy).join(' · '),
    ]),
  };
}

function spreadTable(ratios: readonly RateRatio[]): Table {
  const cells = (t: Throughput | undefined) =>
    t
      ? [
          `${formatMs(t.latency.p50)} / ${formatMs(t.latency.p99)}`,
          `${Math.min(...t.perSecByRound).toFixed(1)}–${Math.max(...t.perSecByRound).toFixed(1)}`,
        ]
      : ['–', '–'];
  const rows: string[][] = [];
  for (const r of ratios) {
    for (const t of [r.aegis, r.warm, r.floor, r.srt]) {
      if (t) rows.push([String(r.clients), SYSTEM_LABEL[t.system], String(t.executions), ...cells(t)]);
    }
  }
  return {
    headers: ['clients', 'system', 'executions', 'p50 / p99 ms, call → end', 'execs/s per round'],
    align: ['left', 'left'],
    rows,
  };
}

function stepsTable(
  oneAtATime: Readonly<Record<string, number>>,
  warmOneAtATime: Readonly<Record<string, number>>,
  ratios: readonly RateRatio[],
): Table {
  const columns = [oneAtATime, warmOneAtATime, ...ratios.flatMap((r) => [r.aegis.steps, r.warm.steps])];
  const under = (r: RateRatio) => (r.clients === 1 ? '1 client, back to back' : `${r.clients} clients`);
  return {
    headers: [
      'aegis API execution, mean ms',
      'cold, one at a time',
      'warm, one at a time',
      ...ratios.flatMap((r) => [`cold, ${under(r)}`, `warm, ${under(r)}`]),
    ],
    rows: STEPS.map(([, , what]) => [what, ...columns.map((steps) => formatMs(steps[what] ?? Number.NaN))]),
  };
}

function cpuTable(ratios: readonly RateRatio[]): Table {
  const row = (label: string, value: (r: RateRatio) => number | undefined) => [
    label,
    ...ratios.map((r) => {
      const v = value(r);
      return v === undefined ? '–' : formatMs(v);
    }),
  ];
  return {
    headers: [
      'CPU ms per execution, throughput loops',
      ...ratios.map((r) => (r.clients === 1 ? '1 client' : `${r.clients} clients`)),
    ],
    rows: [
      row(
        'aegis server process, cold (HTTP, store, ledger, runtime)',
        (r) => r.aegis.cpuMsPerExecution.server,
      ),
      row('↳ bwrap processes it reaped', (r) => r.aegis.cpuMsPerExecution.serverChildren),
      row(`aegis server process, warm pool (incl. refills)`, (r) => r.warm.cpuMsPerExecution.server),
      row('↳ bwrap processes it reaped', (r) => r.warm.cpuMsPerExecution.serverChildren),
      row('bench process as the API client (SDK), cold', (r) => r.aegis.cpuMsPerExecution.bench),
      row('bench process as the floor spawner', (r) => r.floor.cpuMsPerExecution.bench),
      row('↳ bwrap processes it reaped', (r) => r.floor.cpuMsPerExecution.benchChildren),
      row('bench process running sandbox-runtime (library, proxies)', (r) => r.srt?.cpuMsPerExecution.bench),
      row('↳ processes it reaped (sh, bwrap, socat…)', (r) => r.srt?.cpuMsPerExecution.benchChildren),
    ],
  };
}

// ---------------------------------------------------------------------------------------------------------------

/** Polls the agent's pool on a server until it holds `target` warm instances (or the deadline passes). */
async function poolFull(
  client: AegisClient,
  agent: string,
  target: number,
  deadlineMs = 15_000,
): Promise<boolean> {
  const until = performance.now() + deadlineMs;
  while (performance.now() < until) {
    const detail = await client.getAgent(agent);
    if ((detail.pools ?? []).some((pool) => pool.warm >= target)) return true;
    await new Promise((done) => setTimeout(done, 5));
  }
  return false;
}

async function run(options: BenchOptions): Promise<ScenarioReport> {
  const { log } = options;
  const machine = machineInfo();
  const cores = availableParallelism();
  const clients = 2 * cores;
  const user = resolveSandboxUser();
  if (process.getuid?.() === 0 && !user.dedicated) throw new Error('run as root needs a sandbox user');
  const workDir = mkdtempSync(join(tmpdir(), 'aegis-bench-api-'));
  // The sandbox uid must reach the bundle dir (agents are bound from there) and the floor's /etc and I/O files.
  chmodSync(workDir, 0o755);
  const homes = { cold: join(workDir, 'server-home'), warm: join(workDir, 'server-warm-home') };
  mkdirSync(homes.cold, { mode: 0o700 });
  mkdirSync(homes.warm, { mode: 0o700 });
  const servers: ServerProcess[] = [];
  let srt: SandboxRuntimePeer | Absent | undefined;
  try {
    // The floor, and its parity with the runtime's real command line (one in-process aegis run).
    const floor = makeFloor(workDir, user);
    const agent = (await loadManifestFile(join(AGENT_DIR, 'agent.yaml'))).agent;
    const nodeBinary = realpathSync(process.execPath);
    const local = openLocalContext({ home: join(workDir, 'parity-home') });
    let argsFd: number | undefined;
    try {
      ({ argsFd } = await checkFloorParity(local, floor, agent, 'python', nodeBinary));
    } finally {
      await local.close();
    }
    const command = commandFor('python', agent, nodeBinary);
    const launch = floor.launch(floor.argsFor(agent, command.argv, command.binaries), argsFd);
    const floorRun: Execute = async () => {
      const r = await runChild('bwrap', launch.argv, floor.spawnOptions, launch.writes);
      checkExit(r, 'floor python');
      const firstLine = firstLineOf(parseLastLine(r.stdout), 'floor python');
      return { exit: r.exitedAt - r.startedAt, firstLine: firstLine - r.startedAt };
    };
    log(`  flag parity checked; floor options ${argsFd === undefined ? 'on argv' : `over --args ${argsFd}`}`);

    // Two servers: cold starts, and a warm pool of WARM_POOL prewarmed sandboxes per revision.
    const [cold, warm] = await Promise.all([
      startServerProcess(homes.cold, join(workDir, 'bundles'), cores),
      startServerProcess(homes.warm, join(workDir, 'bundles-warm'), cores, ['--warm', String(WARM_POOL)]),
    ]);
    servers.push(cold, warm);
    const bundle = (await packAgentDir(AGENT_DIR)).bytes;
    const connect = async (server: ServerProcess) => {
      const client = new AegisClient({ server: server.url, apiKey: server.adminKey, retry: { attempts: 1 } });
      const deployed = await client.deploy(bundle);
      return { client, name: deployed.agent.name, revision: deployed.revision.revision };
    };
    const [coldApi, warmApi] = await Promise.all([connect(cold), connect(warm)]);
    const agentName = coldApi.name;
    const apiRunOn =
      (client: AegisClient): Execute =>
      async () => {
        const call = wallNowMs();
        const execution = await client.createExecution({ agent: agentName }, { wait: '30s' });
        const done = wallNowMs();
        if (execution.status !== 'succeeded') {
          throw new Error(`execution ${execution.id} ${execution.status}: ${execution.reason ?? ''}`);
        }
        return apiMetrics(call, done, execution);
      };
    const apiRun = apiRunOn(coldApi.client);
    const warmLoopRun = apiRunOn(warmApi.client);
    if (!(await poolFull(warmApi.client, agentName, WARM_POOL))) {
      throw new Error(`the warm server's pool of ${agentName} did not fill to ${WARM_POOL} within 15 s`);
    }
    // One at a time, the pool is full at every call: the refill (untimed) finishes before the next variant runs.
    const warmRun: Execute = async () => {
      const metrics = await warmLoopRun();
      if (!(await poolFull(warmApi.client, agentName, WARM_POOL)))
        throw new Error('the warm pool did not refill');
      return metrics;
    };
    log(
      `  aegis servers: cold pid ${cold.pid} at ${cold.url}, warm (--warm ${WARM_POOL}) pid ${warm.pid} at ${warm.url} (--max-concurrent ${cores}); ${agentName} deployed`,
    );

    srt = await openSandboxRuntime(realpathSync(AGENT_DIR));
    const srtPeer = isAbsent(srt) ? undefined : srt;
    if (isAbsent(srt)) log(`  absent: @anthropic-ai/sandbox-runtime — ${srt.absent}; ${srt.install}`);
    const srtRun: Execute | undefined = srtPeer
      ? async () => {
          const r = await srtPeer.run(`/usr/bin/python3 ${agent.runtime.entrypoint!}`);
          return {
            exit: r.exitedAt - r.startedAt,
            firstLine: firstLineOf(parseLastLine(r.stdout), 'sandbox-runtime') - r.startedAt,
          };
        }
      : undefined;

    const hostStart = cpuSnapshot();
    // 1. Latency, one execution at a time, interleaved with the floor.
    const latencyRuns = await runRounds(
      [
        { id: 'api-sync', run: apiRun },
        { id: 'api-warm', run: warmRun },
        { id: 'floor-seq', run: floorRun },
      ],
      options.warmup,
      options.runs,
      log,
      'latency',
    );
    const latencySeries = seriesOf(latencyRuns);
    const summaries = new Map([...latencySeries].map(([key, values]) => [key, summarize(values)]));

    // 2. Throughput: closed loops of 1 and N clients, in chunks interleaved round by round.
    const rounds = options.quick ? 2 : THROUGHPUT_ROUNDS;
    const systems: { system: System; execute: Execute; serverPid: number | undefined; share: number }[] = [
      { system: 'aegis', execute: apiRun, serverPid: cold.pid, share: 1 },
      { system: 'aegis-warm', execute: warmLoopRun, serverPid: warm.pid, share: 1 },
      { system: 'floor', execute: floorRun, serverPid: undefined, share: 1 },
      // ≈ 7 starts/s: a quarter of the others' executions gives it about the same wall time.
      ...(srtRun
        ? [{ system: 'sandbox-runtime' as const, execute: srtRun, serverPid: undefined, share: 0.25 }]
        : []),
    ];
    const specs: LoadSpec[] = [1, clients].flatMap((n) =>
      systems.map(({ system, execute, serverPid, share }) => ({
        id: `${system}-${n}`,
        system,
        clients: n,
        perRound: Math.max(n, Math.ceil((options.runs * n * share * (options.quick ? 0.5 : 1)) / rounds)),
        execute,
        serverPid,
      })),
    );
    const perExecution = new Map(specs.map((spec) => [spec.id, [] as Metrics[]]));
    const loadRuns = await runRounds(
      specs.map((spec) => loadVariant(spec, perExecution.get(spec.id)!)),
      0,
      rounds,
      log,
      'throughput',
    );
    const busy = otherWork(hostStart, cpuSnapshot());
    const serverRssMiB = { cold: residentMiB(cold.pid), warm: residentMiB(warm.pid) };
    const throughputs = specs.map((spec) =>
      throughputOf(spec, loadRuns.get(spec.id)!, perExecution.get(spec.id)!),
    );
    const find = (system: System, n: number) => throughputs.find((t) => t.id === `${system}-${n}`);
    const ratios: RateRatio[] = [1, clients].map((n) => {
      const aegis = find('aegis', n)!;
      const warmT = find('aegis-warm', n)!;
      const floorT = find('floor', n)!;
      const ratio = aegis.perSec / floorT.perSec;
      const warmRatio = warmT.perSec / floorT.perSec;
      return {
        clients: n,
        aegis,
        warm: warmT,
        floor: floorT,
        srt: find('sandbox-runtime', n),
        ratio,
        warmRatio,
        meetsTarget: ratio >= TARGET_RATE_RATIO,
        warmMeetsTarget: warmRatio >= TARGET_RATE_RATIO,
      };
    });
    const oneAtATime = stepMeans(latencyRuns.get('api-sync')!);
    const warmOneAtATime = stepMeans(latencyRuns.get('api-warm')!);

    const date = new Date().toISOString();
    const heading =
      `${options.runs} runs one at a time per variant after ${options.warmup} warm-up, interleaved; throughput: ` +
      `${ratios[0]!.aegis.executions} executions with 1 client and ${ratios[1]!.aegis.executions} with ${clients} ` +
      `clients per system (sandbox-runtime a quarter of that), in ${rounds} interleaved rounds; servers ` +
      `--max-concurrent ${cores}, ` +
      `${serverRssMiB.cold} MiB (cold) and ${serverRssMiB.warm} MiB (warm) resident after the run. ${date.slice(0, 10)}, ` +
      `${machine.hostname}: ${describeMachine(machine)}. Other work on the host: ${busy.cpus.toFixed(2)} CPUs on ` +
      'average.';
    const warnings: string[] = [];
    if (busy.cpus > BUSY_CPUS) {
      warnings.push(
        `WARNING: other programs used ${busy.cpus.toFixed(2)} CPUs on average on this ${machine.nproc}-CPU host ` +
          `(busiest: ${busy.top.map((p) => `${p.command} ${p.cpuSeconds} s`).join(', ')}); the numbers are ` +
          'inflated by it.',
      );
    }
    if (srt && isAbsent(srt)) {
      warnings.push(`sandbox-runtime absent: ${srt.absent}. Install: ${srt.install}.`);
    }
    const tables = [
      latencyTable(summaries),
      throughputTable(ratios),
      spreadTable(ratios),
      stepsTable(oneAtATime, warmOneAtATime, ratios),
      cpuTable(ratios),
    ];
    const render = (table: (t: Table) => string) => [
      ...tables.flatMap((t) => ['', table(t)]),
      ...warnings.flatMap((w) => ['', w]),
    ];
    const text = [`api — ${heading}`, ...render(renderText)].join('\n');
    const markdown = [`_${heading}_`, ...render(renderMarkdown)].join('\n');

    const n = ratios[ratios.length - 1]!;
    const both = (pick: (r: RateRatio) => number) => ratios.map((r) => `${pick(r).toFixed(2)}×`).join(' / ');
    const clientCounts = ratios.map((r) => r.clients).join(' / ');
    const targets: TargetCheck[] = [
      {
        promise: `Sustained rate, API cold vs raw bwrap (${clientCounts} clients)`,
        goal: `≥ ${TARGET_RATE_RATIO}×`,
        measured: `${both((r) => r.ratio)} (${ratios.map((r) => r.aegis.perSec.toFixed(1)).join(' / ')} execs/s)`,
        met: ratios.every((r) => r.meetsTarget),
        section: '#api-round-trip',
      },
      {
        promise: `Sustained rate, API warm pool vs raw bwrap (${clientCounts} clients)`,
        goal: `≥ ${TARGET_RATE_RATIO}×`,
        measured: `${both((r) => r.warmRatio)} (${ratios.map((r) => r.warm.perSec.toFixed(1)).join(' / ')} execs/s)`,
        met: ratios.every((r) => r.warmMeetsTarget),
        section: '#api-round-trip',
      },
      {
        promise: `Sustained rate vs sandbox-runtime (${n.clients} clients)`,
        goal: `≥ ${TARGET_SRT_RATIO}×`,
        measured: n.srt
          ? `cold ${(n.aegis.perSec / n.srt.perSec).toFixed(1)}×, warm ${(n.warm.perSec / n.srt.perSec).toFixed(1)}× (sandbox-runtime ${n.srt.perSec.toFixed(1)} starts/s)`
          : 'sandbox-runtime absent',
        met: n.srt ? Math.max(n.aegis.perSec, n.warm.perSec) / n.srt.perSec >= TARGET_SRT_RATIO : undefined,
        section: '#api-round-trip',
      },
      {
        promise: `Orchestrator CPU per execution (server process, ${n.clients} clients)`,
        goal: `≤ ${TARGET_CPU_MS} ms`,
        measured: `cold ${formatMs(n.aegis.cpuMsPerExecution.server)} ms, warm pool ${formatMs(n.warm.cpuMsPerExecution.server)} ms`,
        met: Math.min(n.aegis.cpuMsPerExecution.server, n.warm.cpuMsPerExecution.server) <= TARGET_CPU_MS,
        section: '#api-round-trip',
      },
    ];
    const raw = {
      date,
      options: { runs: options.runs, warmup: options.warmup, rounds, quick: options.quick },
      machine,
      server: {
        maxConcurrent: cores,
        maxQueued: 10_000,
        warmPool: WARM_POOL,
        database: 'sqlite',
        client: 'AegisClient (keep-alive)',
        rssMiB: serverRssMiB,
      },
      clients,
      targetRateRatio: TARGET_RATE_RATIO,
      sandboxRuntime: srtPeer ? { version: srtPeer.version, initializeMs: srtPeer.initializeMs } : srt,
      ratios: ratios.map((r) => ({
        clients: r.clients,
        ratio: r.ratio,
        warmRatio: r.warmRatio,
        meetsTarget: r.meetsTarget,
        warmMeetsTarget: r.warmMeetsTarget,
        vsSandboxRuntime: r.srt
          ? { cold: r.aegis.perSec / r.srt.perSec, warm: r.warm.perSec / r.srt.perSec }
          : null,
      })),
      throughput: throughputs.map((t) => ({ ...t, latency: roundSummary(t.latency) })),
      latency: Object.fromEntries([...summaries].map(([key, s]) => [key, roundSummary(s)])),
      steps: {
        oneAtATime,
        warmOneAtATime,
        ...Object.fromEntries(
          ratios.flatMap((r) => [
            [`clients${r.clients}`, r.aegis.steps],
            [`warmClients${r.clients}`, r.warm.steps],
          ]),
        ),
      },
      samples: Object.fromEntries(
        [...latencySeries].map(([key, values]) => [key, values.map((v) => Math.round(v * 1000) / 1000)]),
      ),
      otherWork: busy,
    };
    return { text, docs: [{ marker: 'api', markdown }], raw, findings: { targets } };
  } finally {
    if (srt && !isAbsent(srt)) await srt.close();
    await Promise.all(servers.map((server) => server.stop()));
    rmSync(workDir, { recursive: true, force: true });
  }
}

export const api: Scenario = {
  name: 'api',
  description:
    'server round trip POST /v1/executions?wait → result, cold and with a warm pool: latency, executions/s and server CPU at 1 and 2×cores clients vs raw bwrap and sandbox-runtime',
  run,
};
