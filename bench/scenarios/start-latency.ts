/**
 * Scenario `start-latency`: from "run this agent" to the first line of the agent's own code, for a trivial Python
 * and a trivial Node agent (bench/fixtures/start-latency/), side by side with the floor.
 *
 * Variants (all interleaved round-robin in a shuffled order per round, so drift on the host hits all alike):
 * - aegis:  the in-process library path, `runAgent(ctx, { agent })` with the real SandboxRuntime and the SQLite
 *           store in a temp AEGIS_HOME. Measured from the call to the agent's first-line timestamp, and to the
 *           returned record (whole round trip: records, cgroups, scratch dir, output, teardown).
 * - floor:  raw `bwrap` with the runtime's own flags (`buildBwrapArgs`, same env, mounts, tmpfs sizes, seccomp on
 *           fd 3, options handed over the way the runtime does: on argv or over `--args <fd>`) but without
 *           --info-fd/--block-fd and without cgroups, spawned from Node as the sandbox uid. Measured from the
 *           spawn() call to the agent's first-line timestamp, and to exit. Before measuring, the bwrap command line
 *           and seccomp program of a real aegis run are captured and compared with the floor's (flag parity).
 * - plain:  the interpreter spawned directly (same uid and env, no sandbox), spawn() → first line.
 * - bwrap /bin/true: the floor's flags around /bin/true, spawn() → exit.
 * - CLI:    `node bin/aegis.mjs --version` and `node bin/aegis.mjs run examples/hello-python/agent.yaml`, spawn → exit.
 *
 * With --breakdown, extra instrumented aegis runs timestamp every step of the library path (see SEGMENTS); the
 * floor also runs with the --info-fd/--block-fd handshake, released at once and after SETTLE_MS, to show how much
 * of bwrap's setup is still running when it reports the pid; and extra CLI rows separate Node's own start and
 * TypeScript stripping from AEGIS's.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import type { CgroupStats, SandboxCgroup } from '../../src/adapters/runtimes/sandbox/cgroups.ts';
import { resolveSandboxUser } from '../../src/adapters/runtimes/sandbox/host.ts';
import { sandboxEnv } from '../../src/adapters/runtimes/sandbox/runtime.ts';
import type { TaskOutput } from '../../src/app/ports.ts';
import type { CompiledAgent } from '../../src/domain/manifest/compiled.ts';
import { type LocalContext, openLocalContext } from '../../src/main.ts';
import { aegisRun, warmVariant, watchBwrap } from '../lib/aegis-run.ts';
import {
  checkExit,
  FIXTURES,
  firstLineOf,
  type Language,
  type Launch,
  type Metrics,
  parseLastLine,
  runChild,
  stdioFor,
  type Variant,
  writeAll,
} from '../lib/child.ts';
import { realtimeOffsetMs, wallNowMs } from '../lib/clock.ts';
import {
  BLOCK_FD,
  checkFloorParity,
  commandFor,
  FLOOR_EXECUTION_ID,
  type Floor,
  INFO_FD,
  makeFloor,
} from '../lib/floor.ts';
import { cpuSnapshot, otherWork as otherWorkBetween } from '../lib/host-load.ts';
import { describeMachine, loadAverage1m, machineInfo } from '../lib/machine.ts';
import { runRounds, seriesOf } from '../lib/rounds.ts';
import type { BenchOptions, Scenario, ScenarioReport, StartPoint, TargetCheck } from '../lib/scenario.ts';
import { formatMs, roundSummary, type Summary, summarize } from '../lib/stats.ts';
import { renderMarkdown, renderText, type Table } from '../lib/table.ts';
import { Tracer } from '../lib/trace.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const CLI = join(ROOT, 'bin/aegis.mjs');
const CLI_AGENT = 'examples/hello-python/agent.yaml';
const TARGET_RATIO = 1.3;
/** Hold before releasing a blocked floor sandbox, long enough for bwrap to finish its setup (breakdown only). */
const SETTLE_MS = 30;
/** Average CPUs kept busy by other programs above which a run's numbers are flagged as inflated. */
const BUSY_CPUS = 0.1;

const LANGUAGES: readonly Language[] = ['python', 'node'];

/**
 * The floor plus the runtime's --info-fd/--block-fd handshake (breakdown only): bwrap reports the sandbox init's
 * pid, then waits; the harness releases it `holdMs` after the pid arrived. With a long hold, bwrap has finished
 * its namespace and mount setup before the release, so release → first line is exec + interpreter start alone.
 */
function runBlocked(floor: Floor, launch: Launch, holdMs: number): Promise<Metrics> {
  return new Promise((resolveRun, reject) => {
    const startedAt = wallNowMs();
    const child = spawn('bwrap', launch.argv, {
      ...floor.spawnOptions,
      stdio: stdioFor([...Object.keys(launch.writes).map(Number), INFO_FD, BLOCK_FD]),
    });
    writeAll(child, launch.writes);
    const stdio = child.stdio as unknown as (Readable | Writable | null)[];
    const block = stdio[BLOCK_FD] as Writable;
    block.on('error', () => {});
    child.stdin!.on('error', () => {});
    child.stdin!.end();
    let infoAt = Number.NaN;
    let releasedAt = Number.NaN;
    let stdout = '';
    let stderr = '';
    const release = () => {
      releasedAt = wallNowMs();
      block.end('1');
    };
    const info = stdio[INFO_FD] as Readable;
    info.once('data', () => {
      infoAt = wallNowMs();
      if (holdMs === 0) release();
      else setTimeout(release, holdMs);
    });
    info.resume();
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code !== 0) {
        reject(new Error(`floor with --block-fd exited with ${code}: ${stderr.trim()}`));
        return;
      }
      const firstLine = firstLineOf(parseLastLine(stdout), 'floor with --block-fd');
      resolveRun({
        infoFd: infoAt - startedAt,
        releaseToFirstLine: firstLine - releasedAt,
        firstLine: firstLine - startedAt,
      });
    });
  });
}

/** Wraps the adapters of `ctx` so a traced run records every step (see SEGMENTS). */
function instrument(ctx: LocalContext, tracer: Tracer): { stats: { cpuThrottledPeriods: number[] } } {
  const stats = { cpuThrottledPeriods: [] as number[] };
  tracer.wrapMethod(ctx.store, 'createExecution', 'store.createExecution');
  tracer.wrapMethod(ctx.store, 'updateExecution', 'store.updateExecution');
  tracer.wrapMethod(ctx.store, 'appendLogs', 'store.appendLogs');
  tracer.wrapMethod(ctx.runtime, 'spawn', 'runtime.spawn');
  tracer.wrapMethod(ctx.runtime, 'execute', 'runtime.execute', (result) => {
    const output = result as TaskOutput;
    tracer.mark('release', output.releasedAtMs);
    tracer.mark('finished', output.finishedAtMs);
  });
  tracer.wrapMethod(ctx.sandbox.cgroups, 'create', 'cgroups.create', (cgroup) => {
    const group = cgroup as SandboxCgroup;
    tracer.wrapMethod(group, 'join', 'cgroup.join');
    tracer.wrapMethod(group, 'destroy', 'cgroup.destroy');
    tracer.wrapMethod(group, 'stats', 'cgroup.stats', (value) => {
      if (tracer.active) stats.cpuThrottledPeriods.push((value as CgroupStats).cpuThrottledPeriods);
    });
  });
  return { stats };
}

/** Consecutive steps of one traced aegis run: [from mark, to mark, what happens in between]. */
const SEGMENTS: readonly (readonly [string, string, string])[] = [
  ['call', 'store.createExecution#1:end', 'store: insert the execution row'],
  ['store.createExecution#1:end', 'runtime.spawn#1:start', 'runAgent → runtime.spawn()'],
  [
    'runtime.spawn#1:start',
    'cgroups.create#1:start',
    'spawn: checks, realpaths, scratch dir, state/input/output files',
  ],
  ['cgroups.create#1:start', 'cgroups.create#1:end', 'spawn: cgroup mkdirs + limit writes'],
  ['cgroups.create#1:end', 'spawn()#1:start', 'spawn: state.json rewrite, env, bwrap args'],
  ['spawn()#1:start', 'spawn()#1:end', 'child_process.spawn(bwrap): synchronous fork+exec'],
  ['spawn()#1:end', 'fd4-data#1', 'bwrap start → child-pid on --info-fd'],
  ['fd4-data#1', 'cgroup.join#1:start', 'event loop: info-fd data → cgroup join'],
  ['cgroup.join#1:start', 'cgroup.join#1:end', 'cgroup join: cgroup.procs writes'],
  ['cgroup.join#1:end', 'runtime.spawn#1:end', 'spawn() returns'],
  ['runtime.spawn#1:end', 'store.updateExecution#1:end', 'store: mark running'],
  ['store.updateExecution#1:end', 'release', 'execute: wire streams, write input, release --block-fd'],
  ['release', 'first-line', 'release → agent first line: seccomp, exec, interpreter start'],
];
const AFTER_SEGMENTS: readonly (readonly [string, string, string])[] = [
  ['first-line', 'exit#1', 'agent body + exit, bwrap exits'],
  ['exit#1', 'finished', 'stdout/stderr drained'],
  ['finished', 'runtime.execute#1:end', 'cgroup stats + destroy, scratch dir removed'],
  ['runtime.execute#1:end', 'result', 'store: log flush + final update'],
];

// ---------------------------------------------------------------------------------------------------------------
// Reporting

interface Row {
  readonly label: string;
  readonly span: string;
  readonly key: string;
}

function rowsFor(language: Language): Row[] {
  return [
    {
      label: `${language} · aegis runAgent()`,
      span: 'call → first line',
      key: `aegis-${language}:firstLine`,
    },
    { label: `${language} · aegis runAgent()`, span: 'call → result', key: `aegis-${language}:result` },
    {
      label: `${language} · floor (raw bwrap)`,
      span: 'spawn → first line',
      key: `floor-${language}:firstLine`,
    },
    { label: `${language} · floor (raw bwrap)`, span: 'spawn → exit', key: `floor-${language}:exit` },
    { label: `${language} · plain spawn`, span: 'spawn → first line', key: `plain-${language}:firstLine` },
    {
      label: `${language} · aegis warm: bind + execute()`,
      span: 'claim → first line',
      key: `warm-${language}:firstLine`,
    },
    {
      label: `${language} · aegis warm: bind + execute()`,
      span: 'claim → result',
      key: `warm-${language}:result`,
    },
    {
      label: `${language} · aegis warm: runAgent() + pooled instance`,
      span: 'call → first line',
      key: `warm-run-${language}:firstLine`,
    },
    {
      label: `${language} · aegis warm: runAgent() + pooled instance`,
      span: 'call → result',
      key: `warm-run-${language}:result`,
    },
  ];
}

const CLI_ROWS: readonly Row[] = [
  { label: 'aegis --version', span: 'spawn → exit', key: 'cli-version:exit' },
  { label: `aegis run ${CLI_AGENT}`, span: 'spawn → exit', key: 'cli-run:exit' },
];
const CLI_BREAKDOWN_ROWS: readonly Row[] = [
  { label: 'node -e 0 (bare Node start)', span: 'spawn → exit', key: 'cli-node-bare:exit' },
  { label: 'node noop.ts (+ type stripping)', span: 'spawn → exit', key: 'cli-node-ts:exit' },
  { label: 'aegis --version, NODE_COMPILE_CACHE', span: 'spawn → exit', key: 'cli-version-cached:exit' },
  { label: `aegis run …, NODE_COMPILE_CACHE`, span: 'spawn → exit', key: 'cli-run-cached:exit' },
];

function summaryTable(rows: readonly Row[], summaries: ReadonlyMap<string, Summary>): Table {
  return {
    headers: ['variant', 'measured', 'n', 'p50 ms', 'p95 ms', 'p99 ms', 'mean ms', 'min ms', 'max ms'],
    align: ['left', 'left'],
    rows: rows
      .filter((row) => summaries.has(row.key))
      .map((row) => {
        const s = summaries.get(row.key)!;
        return [
          row.label,
          row.span,
          String(s.n),
          formatMs(s.p50),
          formatMs(s.p95),
          formatMs(s.p99),
          formatMs(s.mean),
          formatMs(s.min),
          formatMs(s.max),
        ];
      }),
  };
}

interface Ratio {
  readonly language: Language;
  readonly aegisP50: number;
  readonly floorP50: number;
  readonly ratio: number;
  readonly overheadP50: number;
  /** Median over rounds of (aegis − floor) within the same round: robust to host noise that drifts over a run. */
  readonly pairedOverheadP50: number;
  readonly ratioP95: number;
  readonly meetsTarget: boolean;
}

function ratioTable(ratios: readonly Ratio[]): Table {
  return {
    headers: [
      'language',
      'aegis p50',
      'floor p50',
      'Δ p50',
      'paired Δ p50',
      'ratio p50',
      'ratio p95',
      `target ≤ ${TARGET_RATIO}×`,
    ],
    rows: ratios.map((r) => [
      r.language,
      formatMs(r.aegisP50),
      formatMs(r.floorP50),
      formatMs(r.overheadP50),
      formatMs(r.pairedOverheadP50),
      `${r.ratio.toFixed(2)}×`,
      `${r.ratioP95.toFixed(2)}×`,
      r.meetsTarget ? 'met' : 'NOT met',
    ]),
  };
}

const WARM_TARGET_MS = 5;

interface WarmCheck {
  readonly language: Language;
  readonly warm: Summary;
  readonly viaRunAgent: Summary;
  readonly releaseToFirstLine: Summary;
  readonly release: Summary;
  readonly coldP50: number;
  readonly floorP50: number;
  /** Runs whose instance had its interpreter started before the claim. */
  readonly prewarmed: number;
  readonly meetsTarget: boolean;
}

function warmTable(checks: readonly WarmCheck[]): Table {
  return {
    headers: [
      'language',
      'warm p50',
      'warm p95',
      'warm p99',
      `target ≤ ${WARM_TARGET_MS} ms`,
      'of which claim → release',
      'release → first line',
      'runAgent + pooled p50',
      'cold p50',
      'floor p50',
      'warm / floor',
      'prewarmed runs',
    ],
    rows: checks.map((c) => [
      c.language,
      formatMs(c.warm.p50),
      formatMs(c.warm.p95),
      formatMs(c.warm.p99),
      c.meetsTarget ? 'met' : 'NOT met',
      formatMs(c.release.p50),
      formatMs(c.releaseToFirstLine.p50),
      formatMs(c.viaRunAgent.p50),
      formatMs(c.coldP50),
      formatMs(c.floorP50),
      `${(c.warm.p50 / c.floorP50).toFixed(2)}×`,
      `${c.prewarmed}/${c.warm.n}`,
    ]),
  };
}

interface SegmentStat {
  readonly step: string;
  readonly from: string;
  readonly to: string;
  readonly byLanguage: Record<string, { p50: number; mean: number } | undefined>;
}

function segmentStats(
  segments: readonly (readonly [string, string, string])[],
  runs: ReadonlyMap<string, readonly Metrics[]>,
): SegmentStat[] {
  return segments.map(([from, to, step]) => {
    const byLanguage: SegmentStat['byLanguage'] = {};
    for (const language of LANGUAGES) {
      // Per run, so a mark missing from one run can't pair another run's marks.
      const durations = (runs.get(`traced-${language}`) ?? [])
        .map((metrics) => (metrics[`@${to}`] ?? Number.NaN) - (metrics[`@${from}`] ?? Number.NaN))
        .filter(Number.isFinite);
      if (durations.length === 0) {
        byLanguage[language] = undefined;
        continue;
      }
      const s = summarize(durations);
      byLanguage[language] = { p50: s.p50, mean: s.mean };
    }
    return { step, from, to, byLanguage };
  });
}

function segmentTable(stats: readonly SegmentStat[], totalLabel: string, total: SegmentStat): Table {
  const cells = (s: SegmentStat) =>
    LANGUAGES.flatMap((language) => {
      const v = s.byLanguage[language];
      return v ? [formatMs(v.mean), formatMs(v.p50)] : ['–', '–'];
    });
  return {
    headers: ['step', 'python mean', 'python p50', 'node mean', 'node p50'],
    rows: [...stats.map((s) => [s.step, ...cells(s)]), [`= ${totalLabel}`, ...cells(total)]],
  };
}

function floorCompareTable(summaries: ReadonlyMap<string, Summary>): Table {
  const cell = (key: string) => {
    const s = summaries.get(key);
    return s ? [formatMs(s.mean), formatMs(s.p50)] : ['–', '–'];
  };
  return {
    headers: ['floor step', 'python mean', 'python p50', 'node mean', 'node p50'],
    rows: [
      [
        'child_process.spawn(bwrap): synchronous fork+exec',
        ...cell('floor-python:spawnSync'),
        ...cell('floor-node:spawnSync'),
      ],
      ['spawn → agent first line', ...cell('floor-python:firstLine'), ...cell('floor-node:firstLine')],
      ['bwrap /bin/true: spawn → exit (same flags)', ...cell('floor-true:exit'), ...cell('floor-true:exit')],
      [
        '+ --info/--block-fd, released at once: spawn → info-fd',
        ...cell('blocked0-python:infoFd'),
        ...cell('blocked0-node:infoFd'),
      ],
      [
        '+ --info/--block-fd, released at once: spawn → first line',
        ...cell('blocked0-python:firstLine'),
        ...cell('blocked0-node:firstLine'),
      ],
      [
        '+ --info/--block-fd, released at once: release → first line',
        ...cell('blocked0-python:releaseToFirstLine'),
        ...cell('blocked0-node:releaseToFirstLine'),
      ],
      [
        `+ --info/--block-fd, released ${SETTLE_MS} ms after info-fd: release → first line`,
        ...cell(`blocked${SETTLE_MS}-python:releaseToFirstLine`),
        ...cell(`blocked${SETTLE_MS}-node:releaseToFirstLine`),
      ],
      [
        'plain spawn → first line (no sandbox)',
        ...cell('plain-python:firstLine'),
        ...cell('plain-node:firstLine'),
      ],
    ],
  };
}

// ---------------------------------------------------------------------------------------------------------------

async function run(options: BenchOptions): Promise<ScenarioReport> {
  const { log } = options;
  const machine = machineInfo();
  const user = resolveSandboxUser();
  if (process.getuid?.() === 0 && !user.dedicated) throw new Error('run as root needs a sandbox user');
  const workDir = mkdtempSync(join(tmpdir(), 'aegis-bench-'));
  chmodSync(workDir, 0o711); // the sandbox uid must reach the floor's /etc and I/O files
  const offsetAtStart = realtimeOffsetMs();
  const loadAtStart = loadAverage1m();
  const contexts: LocalContext[] = [];
  const bwrap = watchBwrap();
  const warmVariants: { close: () => Promise<void> }[] = [];
  try {
    const open = (name: string) => {
      const ctx = openLocalContext({ home: join(workDir, name) });
      contexts.push(ctx);
      return ctx;
    };
    const ctx = open('home');
    const floor = makeFloor(workDir, user);
    const nodeBinary = realpathSync(process.execPath);
    const agents = {} as Record<Language, CompiledAgent>;
    for (const language of LANGUAGES) {
      agents[language] = (await loadManifestFile(join(FIXTURES, language, 'agent.yaml'))).agent;
    }

    // Flag parity: the floor must be the runtime's own command line minus info/block fds, handed to bwrap the same
    // way, with the same seccomp program.
    const parity: Record<string, string> = {};
    let argsFd: number | undefined;
    for (const language of LANGUAGES) {
      const checked = await checkFloorParity(ctx, floor, agents[language], language, nodeBinary);
      argsFd = checked.argsFd;
      parity[language] = checked.parity;
    }
    log(
      `  flag parity: floor = runtime's bwrap options minus --info-fd/--block-fd, ${argsFd === undefined ? 'on argv' : `over --args ${argsFd}`}, same seccomp (${LANGUAGES.join(', ')})`,
    );

    const variants: Variant[] = [];
    for (const language of LANGUAGES) {
      const agent = agents[language];
      const command = commandFor(language, agent, nodeBinary);
      const floorLaunch = floor.launch(floor.argsFor(agent, command.argv, command.binaries), argsFd);
      const agentDir = realpathSync(agent.agentDir);
      variants.push(
        { id: `aegis-${language}`, run: () => aegisRun(ctx, agent) },
        {
          id: `floor-${language}`,
          run: async () => {
            const r = await runChild('bwrap', floorLaunch.argv, floor.spawnOptions, floorLaunch.writes);
            checkExit(r, `floor ${language}`);
            const firstLine = firstLineOf(parseLastLine(r.stdout), `floor ${language}`);
            return {
              firstLine: firstLine - r.startedAt,
              exit: r.exitedAt - r.startedAt,
              spawnSync: r.spawnReturnedAt - r.startedAt,
            };
          },
        },
        {
          id: `plain-${language}`,
          run: async () => {
            const r = await runChild(command.host[0]!, command.host.slice(1), {
              ...floor.spawnOptions,
              cwd: agentDir,
              env: sandboxEnv(agent, FLOOR_EXECUTION_ID),
            });
            checkExit(r, `plain ${language}`);
            const firstLine = firstLineOf(parseLastLine(r.stdout), `plain ${language}`);
            return { firstLine: firstLine - r.startedAt, exit: r.exitedAt - r.startedAt };
          },
        },
      );
    }
    // Warm starts: an instance prewarmed ahead of time per variant, claimed in the round.
    for (const language of LANGUAGES) {
      const execute = warmVariant(ctx, agents[language], `warm-${language}`, 'execute', bwrap);
      const viaRunAgent = warmVariant(ctx, agents[language], `warm-run-${language}`, 'runAgent', bwrap);
      warmVariants.push(execute, viaRunAgent);
      variants.push(execute, viaRunAgent);
    }
    const trueLaunch = floor.launch(floor.argsFor(agents.python, ['/bin/true'], {}), argsFd);
    variants.push({
      id: 'floor-true',
      run: async () => {
        const r = await runChild('bwrap', trueLaunch.argv, floor.spawnOptions, trueLaunch.writes);
        checkExit(r, 'bwrap /bin/true');
        return { exit: r.exitedAt - r.startedAt };
      },
    });

    let throttled: number[] = [];
    let unwatch: (() => void) | undefined;
    if (options.breakdown) {
      const tracer = new Tracer();
      const traced = open('home-traced');
      throttled = instrument(traced, tracer).stats.cpuThrottledPeriods;
      unwatch = tracer.watchChildren('bwrap', [4]);
      for (const language of LANGUAGES) {
        variants.push({ id: `traced-${language}`, run: () => aegisRun(traced, agents[language], tracer) });
        const command = commandFor(language, agents[language], nodeBinary);
        const blocked = floor.launch(
          floor.argsFor(agents[language], command.argv, command.binaries, { info: INFO_FD, block: BLOCK_FD }),
          argsFd,
        );
        variants.push(
          { id: `blocked0-${language}`, run: () => runBlocked(floor, blocked, 0) },
          { id: `blocked${SETTLE_MS}-${language}`, run: () => runBlocked(floor, blocked, SETTLE_MS) },
        );
      }
    }

    log(
      `  ${variants.length} sandbox variants × (${options.warmup} warm-up + ${options.runs} measured) rounds, shuffled order`,
    );
    const sandboxStart = cpuSnapshot();
    const runs = await runRounds(variants, options.warmup, options.runs, log, 'sandboxes');
    const sandboxEnd = cpuSnapshot();
    unwatch?.();

    // CLI process starts: a few, each is a whole Node start.
    const cliHome = join(workDir, 'cli-home');
    const cacheDir = join(workDir, 'compile-cache');
    const cliEnv = { ...process.env, AEGIS_HOME: cliHome };
    const cliVariant = (id: string, args: string[], env: NodeJS.ProcessEnv): Variant => ({
      id,
      run: async () => {
        const r = await runChild(process.execPath, args, { cwd: ROOT, env });
        checkExit(r, `${id} (node ${args.join(' ')})`);
        return { exit: r.exitedAt - r.startedAt };
      },
    });
    const cliVariants: Variant[] = [
      cliVariant('cli-version', [CLI, '--version'], cliEnv),
      cliVariant('cli-run', [CLI, 'run', CLI_AGENT], cliEnv),
    ];
    if (options.breakdown) {
      const cached = { ...cliEnv, NODE_COMPILE_CACHE: cacheDir };
      cliVariants.push(
        cliVariant('cli-node-bare', ['-e', '0'], cliEnv),
        cliVariant('cli-node-ts', [join(FIXTURES, 'noop.ts')], cliEnv),
        cliVariant('cli-version-cached', [CLI, '--version'], cached),
        cliVariant('cli-run-cached', [CLI, 'run', CLI_AGENT], cached),
      );
    }
    const cliSeries = await runRounds(cliVariants, 2, options.cliRuns, log, 'CLI');
    for (const [id, list] of cliSeries) runs.set(id, list);
    const series = seriesOf(runs);
    const cliEnd = cpuSnapshot();
    const busy = {
      sandboxes: otherWorkBetween(sandboxStart, sandboxEnd),
      cli: otherWorkBetween(sandboxEnd, cliEnd),
    };
    const otherWork = { sandboxes: busy.sandboxes.cpus, cli: busy.cli.cpus };
    const driftMs = realtimeOffsetMs() - offsetAtStart;
    const loadAtEnd = loadAverage1m();

    // ---- numbers
    const summaries = new Map<string, Summary>();
    for (const [key, values] of series) if (!key.includes(':@')) summaries.set(key, summarize(values));
    const ratios: Ratio[] = LANGUAGES.map((language) => {
      const aegis = summaries.get(`aegis-${language}:firstLine`)!;
      const floorSummary = summaries.get(`floor-${language}:firstLine`)!;
      const ratio = aegis.p50 / floorSummary.p50;
      const floorRuns = runs.get(`floor-${language}`)!;
      const paired = runs
        .get(`aegis-${language}`)!
        .map((metrics, i) => metrics['firstLine']! - floorRuns[i]!['firstLine']!);
      return {
        language,
        aegisP50: aegis.p50,
        floorP50: floorSummary.p50,
        ratio,
        overheadP50: aegis.p50 - floorSummary.p50,
        pairedOverheadP50: summarize(paired).p50,
        ratioP95: aegis.p95 / floorSummary.p95,
        meetsTarget: ratio <= TARGET_RATIO,
      };
    });
    const warmChecks: WarmCheck[] = LANGUAGES.map((language) => {
      const warm = summaries.get(`warm-${language}:firstLine`)!;
      const prewarmed = (runs.get(`warm-${language}`) ?? []).filter((m) => m['prewarmed'] === 1).length;
      return {
        language,
        warm,
        viaRunAgent: summaries.get(`warm-run-${language}:firstLine`)!,
        release: summaries.get(`warm-${language}:release`)!,
        releaseToFirstLine: summaries.get(`warm-${language}:releaseToFirstLine`)!,
        coldP50: summaries.get(`aegis-${language}:firstLine`)!.p50,
        floorP50: summaries.get(`floor-${language}:firstLine`)!.p50,
        prewarmed,
        meetsTarget: warm.p50 <= WARM_TARGET_MS,
      };
    });
    const sandboxTable = summaryTable(
      [
        ...LANGUAGES.flatMap(rowsFor),
        { label: 'bwrap /bin/true (floor flags)', span: 'spawn → exit', key: 'floor-true:exit' },
      ],
      summaries,
    );
    const cliTable = summaryTable([...CLI_ROWS, ...(options.breakdown ? CLI_BREAKDOWN_ROWS : [])], summaries);

    const date = new Date().toISOString();
    const heading =
      `${options.runs} measured runs per variant after ${options.warmup} warm-up, interleaved; CLI ${options.cliRuns} runs. ` +
      `${date.slice(0, 10)}, ${machine.hostname}: ${describeMachine(machine)}. ` +
      `Other work on the host: ${otherWork.sandboxes.toFixed(2)} CPUs on average during the sandbox rounds, ` +
      `${otherWork.cli.toFixed(2)} during the CLI rounds.`;
    const warnings: string[] = [];
    for (const check of warmChecks) {
      if (check.prewarmed < check.warm.n) {
        warnings.push(
          `WARNING: ${check.warm.n - check.prewarmed} of ${check.warm.n} warm ${check.language} runs found no interpreter running before the claim: the runtime ignored \`prewarm\` (the instance was Warm, bwrap blocked), so those are not prewarmed starts.`,
        );
      }
    }
    if (Math.abs(driftMs) > 0.5) {
      warnings.push(
        `WARNING: the realtime clock drifted ${driftMs.toFixed(2)} ms against the harness clock during the run; first-line numbers carry that error.`,
      );
    }
    if (Math.max(otherWork.sandboxes, otherWork.cli) > BUSY_CPUS) {
      warnings.push(
        `WARNING: other programs used ${otherWork.sandboxes.toFixed(2)} / ${otherWork.cli.toFixed(2)} CPUs on average (sandbox / CLI rounds) on this ${machine.nproc}-CPU host; the numbers are inflated by it. Busiest: ${[
          ...busy.sandboxes.top,
          ...busy.cli.top,
        ]
          .slice(0, 5)
          .map((p) => `${p.command} ${p.cpuSeconds} s`)
          .join(', ')}.`,
      );
    }
    const driftNote = warnings.length > 0 ? `\n${warnings.join('\n\n')}` : '';
    const textParts = [
      `start-latency — ${heading}`,
      '',
      renderText(sandboxTable),
      '',
      renderText(ratioTable(ratios)),
      '',
      renderText(warmTable(warmChecks)),
      '',
      renderText(cliTable),
    ];
    const markdownParts = [
      `_${heading}_`,
      '',
      renderMarkdown(sandboxTable),
      '',
      renderMarkdown(ratioTable(ratios)),
      '',
      renderMarkdown(warmTable(warmChecks)),
      '',
      renderMarkdown(cliTable),
    ];
    if (driftNote) {
      textParts.push(driftNote);
      markdownParts.push(driftNote);
    }
    const docs = [{ marker: 'start-latency', markdown: markdownParts.join('\n') }];

    let breakdown: unknown;
    if (options.breakdown) {
      const before = segmentStats(SEGMENTS, runs);
      const after = segmentStats(AFTER_SEGMENTS, runs);
      const toFirst = segmentStats([['call', 'first-line', '']], runs)[0]!;
      const toResult = segmentStats([['call', 'result', '']], runs)[0]!;
      const destroy = segmentStats(
        [['cgroup.destroy#1:start', 'cgroup.destroy#1:end', 'of which: cgroup destroy']],
        runs,
      );
      const beforeTable = segmentTable(before, 'call → agent first line (traced)', toFirst);
      const afterTable = segmentTable([...after, ...destroy], 'call → result (traced)', toResult);
      const floorTable = floorCompareTable(summaries);
      const throttleNote = `CPU-throttled periods per traced run (cgroup cpu.stat nr_throttled): max ${throttled.length ? Math.max(...throttled) : 0}, runs with any ${throttled.filter((n) => n > 0).length}/${throttled.length}.`;
      textParts.push(
        '',
        'breakdown — traced aegis runs (separate from the rows above), ms:',
        renderText(beforeTable),
        '',
        renderText(afterTable),
        '',
        renderText(floorTable),
        '',
        throttleNote,
      );
      docs.push({
        marker: 'start-latency-breakdown',
        markdown: [
          `_Traced runs (${options.runs} per language, ${date.slice(0, 10)}, ${machine.hostname}); wrapping adds a few µs per step._`,
          '',
          renderMarkdown(beforeTable),
          '',
          renderMarkdown(afterTable),
          '',
          renderMarkdown(floorTable),
          '',
          throttleNote,
        ].join('\n'),
      });
      breakdown = {
        segments: before.map(({ step, from, to, byLanguage }) => ({ step, from, to, byLanguage })),
        after,
        totals: { callToFirstLine: toFirst.byLanguage, callToResult: toResult.byLanguage },
        cpuThrottledPeriods: throttled,
      };
    }

    const raw = {
      date,
      options: {
        runs: options.runs,
        warmup: options.warmup,
        cliRuns: options.cliRuns,
        breakdown: options.breakdown,
      },
      machine,
      targetRatio: TARGET_RATIO,
      ratios,
      flagParity: parity,
      clockDriftMs: driftMs,
      loadAverage1m: { start: loadAtStart, end: loadAtEnd },
      otherWork: busy,
      summaries: Object.fromEntries([...summaries].map(([key, s]) => [key, roundSummary(s)])),
      samples: Object.fromEntries(
        [...series].map(([key, values]) => [key, values.map((v) => Math.round(v * 1000) / 1000)]),
      ),
      breakdown,
    };
    const targets: TargetCheck[] = [
      ...ratios.map((r) => ({
        promise: `Cold start p50 (runAgent → first line), ${r.language}`,
        goal: `≤ ${TARGET_RATIO}× raw bwrap`,
        measured: `${r.ratio.toFixed(2)}× (${formatMs(r.aegisP50)} vs ${formatMs(r.floorP50)} ms)`,
        met: r.meetsTarget,
        section: '#start-latency',
      })),
      ...warmChecks.map((c) => ({
        promise: `Warm start p50 (claim → first line), ${c.language}`,
        goal: `≤ ${WARM_TARGET_MS} ms`,
        measured: `${formatMs(c.warm.p50)} ms (p99 ${formatMs(c.warm.p99)})${c.prewarmed < c.warm.n ? `; prewarmed ${c.prewarmed}/${c.warm.n}` : ''}`,
        met: c.meetsTarget,
        section: '#start-latency',
      })),
    ];
    const point = (system: string, language: Language, key: string, span: string): StartPoint => {
      const s = summaries.get(key)!;
      return { system, program: language, span, n: s.n, p50: s.p50, p99: s.p99 };
    };
    const starts: StartPoint[] = LANGUAGES.flatMap((language) => [
      point('floor (raw bwrap)', language, `floor-${language}:firstLine`, 'spawn → first line'),
      point('aegis cold', language, `aegis-${language}:firstLine`, 'runAgent → first line'),
      point('aegis warm', language, `warm-${language}:firstLine`, 'claim → first line'),
    ]);
    return {
      text: textParts.join('\n'),
      docs,
      raw: { ...raw, warm: warmChecks },
      findings: { targets, starts },
    };
  } finally {
    for (const variant of warmVariants) await variant.close().catch(() => {});
    bwrap.stop();
    for (const ctx of contexts) await ctx.store.close();
    rmSync(workDir, { recursive: true, force: true });
  }
}

export const startLatency: Scenario = {
  name: 'start-latency',
  description:
    'call → first line of a trivial Python/Node agent: aegis vs raw bwrap vs plain spawn; CLI start',
  run,
};
