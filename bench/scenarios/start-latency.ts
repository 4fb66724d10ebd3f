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
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import { buildBwrapArgs } from '../../src/adapters/runtimes/sandbox/bwrap-args.ts';
import type { CgroupStats, SandboxCgroup } from '../../src/adapters/runtimes/sandbox/cgroups.ts';
import {
  hostHasMergedUsr,
  presentEtcFiles,
  resolveSandboxUser,
  type SandboxUser,
} from '../../src/adapters/runtimes/sandbox/host.ts';
import {
  GENERATED_ETC,
  INNER_GID,
  INNER_UID,
  sandboxEnv,
} from '../../src/adapters/runtimes/sandbox/runtime.ts';
import { buildSeccompProgram, hostSeccompArch } from '../../src/adapters/runtimes/sandbox/seccomp.ts';
import type { TaskOutput } from '../../src/app/ports.ts';
import { runAgent } from '../../src/app/run-agent.ts';
import type { CompiledAgent } from '../../src/domain/manifest/compiled.ts';
import { type LocalContext, openLocalContext } from '../../src/main.ts';
import { realtimeOffsetMs, wallNowMs } from '../lib/clock.ts';
import { cpuSnapshot, otherWork as otherWorkBetween } from '../lib/host-load.ts';
import { describeMachine, loadAverage1m, machineInfo } from '../lib/machine.ts';
import { commandOf, processTree } from '../lib/procs.ts';
import type { BenchOptions, Scenario, ScenarioReport, StartPoint, TargetCheck } from '../lib/scenario.ts';
import { formatMs, roundSummary, type Summary, summarize } from '../lib/stats.ts';
import { renderMarkdown, renderText, type Table } from '../lib/table.ts';
import { type CapturedSpawn, captureSpawn, Tracer, watchSpawns } from '../lib/trace.ts';

const ROOT = resolve(import.meta.dirname, '../..');
export const FIXTURES = join(ROOT, 'bench/fixtures/start-latency');
const CLI = join(ROOT, 'bin/aegis.mjs');
const CLI_AGENT = 'examples/hello-python/agent.yaml';
const TARGET_RATIO = 1.3;
/** Hold before releasing a blocked floor sandbox, long enough for bwrap to finish its setup (breakdown only). */
const SETTLE_MS = 30;
/** Average CPUs kept busy by other programs above which a run's numbers are flagged as inflated. */
const BUSY_CPUS = 0.1;

export type Language = 'python' | 'node';
const LANGUAGES: readonly Language[] = ['python', 'node'];

/** Named durations of one run, in ms. */
export type Metrics = Record<string, number>;

export interface Variant {
  readonly id: string;
  run(): Promise<Metrics>;
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes

export interface ChildRun {
  readonly startedAt: number;
  readonly spawnReturnedAt: number;
  readonly exitedAt: number;
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** How to start bwrap: its argv, and the bytes to write into extra child fds (seccomp program, `--args` data). */
export interface Launch {
  readonly argv: readonly string[];
  readonly writes: Readonly<Record<number, Buffer>>;
}

/** stdio for a child: pipes for 0–2, for each fd in `pipes`, and 'ignore' in between. */
export function stdioFor(pipes: readonly number[]): ('pipe' | 'ignore')[] {
  const stdio: ('pipe' | 'ignore')[] = ['pipe', 'pipe', 'pipe'];
  for (let fd = 3; fd <= Math.max(2, ...pipes); fd++) stdio.push(pipes.includes(fd) ? 'pipe' : 'ignore');
  return stdio;
}

export function writeAll(child: ChildProcess, writes: Readonly<Record<number, Buffer>>): void {
  for (const [fd, data] of Object.entries(writes)) {
    const pipe = (child.stdio as unknown as (Readable | Writable | null)[])[Number(fd)] as Writable;
    pipe.on('error', () => {});
    pipe.end(data);
  }
}

/** Spawns, writes `writes` to the child's extra fds, closes stdin, waits for close. */
export function runChild(
  file: string,
  args: readonly string[],
  options: SpawnOptions,
  writes: Readonly<Record<number, Buffer>> = {},
): Promise<ChildRun> {
  return new Promise((resolveRun, reject) => {
    const startedAt = wallNowMs();
    const child = spawn(file, args, { ...options, stdio: stdioFor(Object.keys(writes).map(Number)) });
    const spawnReturnedAt = wallNowMs();
    let exitedAt = Number.NaN;
    let stdout = '';
    let stderr = '';
    child.once('error', reject);
    child.once('exit', () => {
      exitedAt = wallNowMs();
    });
    writeAll(child, writes);
    child.stdin!.on('error', () => {});
    child.stdin!.end();
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('close', (code) => resolveRun({ startedAt, spawnReturnedAt, exitedAt, code, stdout, stderr }));
  });
}

/** The first-line timestamp an agent printed as its (last) stdout line. */
export function firstLineOf(output: unknown, context: string): number {
  const value = (output as { firstLineMs?: unknown } | null)?.firstLineMs;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new Error(`${context}: no firstLineMs in the agent's output (${JSON.stringify(output)})`);
  }
  return value;
}

export function parseLastLine(stdout: string): unknown {
  const lines = stdout.split('\n').filter((line) => line.trim() !== '');
  try {
    return JSON.parse(lines[lines.length - 1] ?? 'null') as unknown;
  } catch {
    return null;
  }
}

export function checkExit(run: ChildRun, what: string): void {
  if (run.code !== 0) {
    throw new Error(`${what} exited with ${run.code}: ${(run.stderr || run.stdout).trim().slice(0, 2000)}`);
  }
}

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

// ---------------------------------------------------------------------------------------------------------------
// The floor: bwrap with the runtime's flags, minus info/block fds and cgroups

export const NODE_INSIDE = '/opt/aegis/bin/node';
const FLOOR_EXECUTION_ID = 'ex_benchfloor00000000000000';

/** The orchestrator's synthesised /etc files (same content and order as SandboxRuntime). */
function writeGeneratedEtc(dir: string): Record<string, string> {
  mkdirSync(dir, { mode: 0o755 });
  const out: Record<string, string> = {};
  for (const [target, content] of Object.entries(GENERATED_ETC)) {
    const file = join(dir, target.slice('/etc/'.length));
    writeFileSync(file, content, { mode: 0o644 });
    out[target] = file;
  }
  return out;
}

export interface Floor {
  /** bwrap options + `--` + command, from buildBwrapArgs on the floor's plan. */
  readonly argsFor: (
    agent: CompiledAgent,
    argv: readonly string[],
    binaries: Record<string, string>,
    fds?: { info: number; block: number },
  ) => string[];
  /**
   * How to hand `args` to bwrap: the way the runtime does (captured from a real run): on argv, or the options over
   * a pipe with `--args <fd>` and only `--` + command on argv. The seccomp program goes to fd 3 either way.
   */
  readonly launch: (args: readonly string[], argsFd: number | undefined) => Launch;
  readonly spawnOptions: SpawnOptions;
  readonly seccomp: Buffer;
}

const SECCOMP_FD = 3;
const INFO_FD = 4;
const BLOCK_FD = 5;

export function makeFloor(workDir: string, user: SandboxUser): Floor {
  const generatedEtc = writeGeneratedEtc(join(workDir, 'static'));
  const inputFile = join(workDir, 'input.json');
  const outputFile = join(workDir, 'output.json');
  writeFileSync(inputFile, 'null', { mode: 0o644 });
  writeFileSync(outputFile, '', { mode: 0o600 });
  if (user.dedicated) chownSync(outputFile, user.uid, user.gid);
  const mergedUsr = hostHasMergedUsr();
  const etcFiles = presentEtcFiles();
  const seccomp = buildSeccompProgram(hostSeccompArch());
  return {
    seccomp,
    launch: (args, argsFd) => {
      if (argsFd === undefined) return { argv: args, writes: { [SECCOMP_FD]: seccomp } };
      const separator = args.indexOf('--');
      const options = args.slice(0, separator);
      return {
        argv: ['--args', String(argsFd), ...args.slice(separator)],
        writes: {
          [SECCOMP_FD]: seccomp,
          [argsFd]: Buffer.from(options.map((arg) => `${arg}\0`).join(''), 'utf8'),
        },
      };
    },
    spawnOptions: {
      env: {},
      ...(user.dedicated && process.getuid?.() === 0 ? { uid: user.uid, gid: user.gid } : {}),
    },
    argsFor: (agent, argv, binaries, fds) =>
      buildBwrapArgs({
        innerUid: INNER_UID,
        innerGid: INNER_GID,
        hostname: 'aegis',
        env: sandboxEnv(agent, FLOOR_EXECUTION_ID),
        mergedUsr,
        etcFiles,
        generatedEtc,
        agentDir: realpathSync(agent.agentDir),
        inputFile,
        outputFile,
        binaries,
        mounts: [],
        diskBytes: agent.limits.diskBytes,
        argv,
        fds: { seccomp: SECCOMP_FD, ...fds },
      }),
  };
}

/** Interpreter argv inside the sandbox and binaries to bind, as SandboxRuntime.commandFor() resolves them. */
export function commandFor(language: Language, agent: CompiledAgent, nodeBinary: string) {
  const entry = agent.runtime.entrypoint!;
  return language === 'node'
    ? { argv: [NODE_INSIDE, entry], binaries: { [nodeBinary]: NODE_INSIDE }, host: [nodeBinary, entry] }
    : { argv: ['/usr/bin/python3', entry], binaries: {}, host: ['/usr/bin/python3', entry] };
}

/** The fd the runtime hands bwrap its options on (`--args <fd>`), or undefined when they are on argv. */
function argsTransportOf(argv: readonly string[]): number | undefined {
  const at = argv.indexOf('--args');
  return at === -1 || at > argv.indexOf('--') ? undefined : Number(argv[at + 1]);
}

/** The argv bwrap effectively parses: `--args <fd>` replaced by the NUL-separated options written to that fd. */
function effectiveArgv(captured: CapturedSpawn): string[] {
  const fd = argsTransportOf(captured.argv);
  if (fd === undefined) return [...captured.argv];
  const at = captured.argv.indexOf('--args');
  const options = (captured.pipes[fd]?.toString('utf8') ?? '')
    .split('\0')
    .filter((arg, i, all) => i < all.length - 1 || arg !== '');
  return [...captured.argv.slice(0, at), ...options, ...captured.argv.slice(at + 2)];
}

/**
 * Normalises a bwrap argv for comparison: per-execution values (execution id, scratch files, the generated /etc
 * sources) become placeholders and the info/block fds (absent from the floor by definition) are dropped.
 */
function normaliseBwrapArgv(argv: readonly string[]): string[] {
  const scratchTargets = new Set([
    '/run/aegis/input.json',
    '/run/aegis/output.json',
    '/etc/passwd',
    '/etc/group',
    '/etc/hosts',
    '/etc/nsswitch.conf',
  ]);
  const out: string[] = [];
  for (let i = 1; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (arg === '--info-fd' || arg === '--block-fd') {
      i += 1;
    } else if (arg === '--setenv' && argv[i + 1] === 'AEGIS_EXECUTION_ID') {
      out.push(arg, 'AEGIS_EXECUTION_ID', '<execution-id>');
      i += 2;
    } else if ((arg === '--bind' || arg === '--ro-bind') && scratchTargets.has(argv[i + 2] ?? '')) {
      out.push(arg, '<scratch>', argv[i + 2]!);
      i += 2;
    } else {
      out.push(arg);
    }
  }
  return out;
}

function diffArgv(aegis: readonly string[], floor: readonly string[]): string | undefined {
  for (let i = 0; i < Math.max(aegis.length, floor.length); i++) {
    if (aegis[i] !== floor[i]) {
      return `first difference at argument ${i}: aegis ${JSON.stringify(aegis.slice(i, i + 4))} vs floor ${JSON.stringify(floor.slice(i, i + 4))}`;
    }
  }
  return undefined;
}

/**
 * Runs `agent` once through aegis, captures the bwrap command line and seccomp program the runtime really uses, and
 * compares them with the floor's: the floor must be the runtime's options minus --info-fd/--block-fd, handed to
 * bwrap the same way. Returns the `--args` fd the runtime uses (undefined: options on argv); throws on a mismatch.
 */
export async function checkFloorParity(
  ctx: LocalContext,
  floor: Floor,
  agent: CompiledAgent,
  language: Language,
  nodeBinary: string,
): Promise<{ argsFd: number | undefined; parity: string }> {
  const { captured } = await captureSpawn('bwrap', () => aegisRun(ctx, agent));
  if (!captured) throw new Error(`no bwrap process observed during an aegis run (${language})`);
  const argsFd = argsTransportOf(captured.argv);
  const command = commandFor(language, agent, nodeBinary);
  const floorArgv = ['bwrap', ...floor.argsFor(agent, command.argv, command.binaries)];
  const problems: string[] = [];
  const difference = diffArgv(normaliseBwrapArgv(effectiveArgv(captured)), normaliseBwrapArgv(floorArgv));
  if (difference) problems.push(difference);
  if (!captured.pipes[SECCOMP_FD]?.equals(floor.seccomp)) {
    problems.push(`the seccomp program on fd ${SECCOMP_FD} differs from buildSeccompProgram()`);
  }
  if (argsFd === INFO_FD || argsFd === BLOCK_FD) {
    problems.push(`the runtime passes --args on fd ${argsFd}, which the breakdown's floor uses`);
  }
  if (problems.length > 0) {
    throw new Error(`the floor no longer matches the runtime (${language}): ${problems.join('; ')}`);
  }
  const parity =
    'identical apart from --info-fd/--block-fd and per-execution paths; same seccomp program; ' +
    (argsFd === undefined ? 'options on argv' : `options over --args ${argsFd}`);
  return { argsFd, parity };
}

// ---------------------------------------------------------------------------------------------------------------
// The aegis library path, plain and instrumented

export async function aegisRun(ctx: LocalContext, agent: CompiledAgent, tracer?: Tracer): Promise<Metrics> {
  tracer?.begin();
  const call = wallNowMs();
  tracer?.mark('call', call);
  const record = await runAgent(ctx, {
    agent,
    ...(tracer
      ? {
          onLog: (stream) => {
            if (stream === 'stdout') tracer.mark('line-seen');
          },
        }
      : {}),
  });
  const done = wallNowMs();
  tracer?.mark('result', done);
  if (record.status !== 'succeeded') {
    throw new Error(`aegis run of ${agent.name} ${record.status}: ${record.reason ?? ''} (${record.id})`);
  }
  const firstLine = firstLineOf(record.output, `aegis ${agent.name}`);
  const metrics: Metrics = { firstLine: firstLine - call, result: done - call };
  if (tracer) {
    tracer.mark('first-line', firstLine);
    for (const [name, at] of Object.entries(tracer.end())) metrics[`@${name}`] = at - call;
  }
  return metrics;
}

/** The bwrap processes the bench process saw started, newest last (see `watchSpawns`). */
export interface BwrapWatch {
  readonly pids: number[];
  readonly stop: () => void;
}

export function watchBwrap(): BwrapWatch {
  const pids: number[] = [];
  const stop = watchSpawns('bwrap', (child) => {
    pids.push(child.pid!);
    if (pids.length > 1000) pids.splice(0, pids.length - 1000);
  });
  return { pids, stop };
}

/** Whether an interpreter (anything but bwrap itself) already runs in the sandbox whose bwrap monitor is `pid`. */
export function interpreterStarted(pid: number | undefined): boolean {
  return pid !== undefined && processTree(pid).some((p) => commandOf(p) !== 'bwrap');
}

/**
 * A warm start, as a warm pool does it: `runtime.spawn({ prewarm: true })` ahead of time (not timed: after the
 * previous run, so it never overlaps another variant), then timed from the claim — `bind` + `execute()` (`mode`
 * `execute`), or `runAgent` with the pooled instance (`mode` `runAgent`: the store and ledger work of an execution
 * too) — to the agent's first line and to the result. `prewarmed` is 1 when an interpreter was already running in
 * the sandbox before the claim (0: the runtime ignored `prewarm`; the instance was Warm, bwrap blocked).
 */
export function warmVariant(
  ctx: LocalContext,
  agent: CompiledAgent,
  id: string,
  mode: 'execute' | 'runAgent',
  bwrap: BwrapWatch,
): Variant & { readonly close: () => Promise<void> } {
  const runtime = ctx.runtime;
  let ready: { instance: string; prewarmed: boolean } | undefined;
  const prepare = async () => {
    const instance = await runtime.spawn({
      executionId: `wp_${ctx.ids.executionId().slice(3)}`,
      agent,
      prewarm: true,
    });
    ready = { instance, prewarmed: interpreterStarted(bwrap.pids[bwrap.pids.length - 1]) };
  };
  return {
    id,
    run: async () => {
      if (ready === undefined) await prepare();
      const { instance, prewarmed } = ready!;
      ready = undefined;
      let metrics: Metrics;
      if (mode === 'execute') {
        const call = wallNowMs();
        runtime.bind!(instance, { executionId: ctx.ids.executionId() });
        const output = await runtime.execute(instance, { input: null, onLog: () => {} });
        const done = wallNowMs();
        if (output.status !== 'succeeded') {
          throw new Error(`warm ${agent.name} ${output.status}: ${output.reason ?? ''}`);
        }
        const firstLine = firstLineOf(output.output, `warm ${agent.name}`);
        metrics = {
          firstLine: firstLine - call,
          result: done - call,
          release: output.releasedAtMs - call,
          releaseToFirstLine: firstLine - output.releasedAtMs,
        };
      } else {
        const call = wallNowMs();
        const record = await runAgent(ctx, {
          agent,
          warm: (binding) => {
            runtime.bind!(instance, binding);
            return instance;
          },
        });
        const done = wallNowMs();
        if (record.status !== 'succeeded') {
          throw new Error(`warm runAgent ${agent.name} ${record.status}: ${record.reason ?? ''}`);
        }
        metrics = { firstLine: firstLineOf(record.output, `warm ${agent.name}`) - call, result: done - call };
      }
      metrics['prewarmed'] = prewarmed ? 1 : 0;
      await prepare(); // the next run's instance, outside the timed part
      return metrics;
    },
    close: async () => {
      if (ready !== undefined) await runtime.terminate(ready.instance);
      ready = undefined;
    },
  };
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
  tracer.wrapMethod(ctx.runtime.cgroups, 'create', 'cgroups.create', (cgroup) => {
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
// Rounds

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
