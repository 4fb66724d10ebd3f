/**
 * The floor: raw bubblewrap with the runtime's own flags (`buildBwrapArgs`, same env, mounts, tmpfs sizes, seccomp on
 * fd 3) minus --info-fd/--block-fd and cgroups — and the parity check that it still matches what the runtime runs.
 */
import type { SpawnOptions } from 'node:child_process';
import { chownSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildBwrapArgs } from '../../src/adapters/runtimes/sandbox/bwrap-args.ts';
import {
  hostHasMergedUsr,
  presentEtcFiles,
  type SandboxUser,
} from '../../src/adapters/runtimes/sandbox/host.ts';
import {
  GENERATED_ETC,
  INNER_GID,
  INNER_UID,
  sandboxEnv,
} from '../../src/adapters/runtimes/sandbox/runtime.ts';
import { buildSeccompProgram, hostSeccompArch } from '../../src/adapters/runtimes/sandbox/seccomp.ts';
import type { CompiledAgent } from '../../src/domain/manifest/compiled.ts';
import type { LocalContext } from '../../src/main.ts';
import { aegisRun } from './aegis-run.ts';
import type { Language, Launch } from './child.ts';
import { type CapturedSpawn, captureSpawn } from './trace.ts';

export const NODE_INSIDE = '/opt/aegis/bin/node';
export const FLOOR_EXECUTION_ID = 'ex_benchfloor00000000000000';

/**
 * The orchestrator's synthesised /etc files, as SandboxRuntime hands them over: copied into the sandbox's root with
 * bwrap `--file <fd> <target>` (not bind-mounted, ADR 0015), one fd each from GENERATED_FD_BASE on, in the same order.
 */
export const GENERATED_FD_BASE = 7;
const GENERATED_FILES: readonly (readonly [string, Buffer, number])[] = Object.entries(GENERATED_ETC).map(
  ([target, content], i) => [target, Buffer.from(content, 'utf8'), GENERATED_FD_BASE + i] as const,
);

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

export const SECCOMP_FD = 3;
export const INFO_FD = 4;
export const BLOCK_FD = 5;

export function makeFloor(workDir: string, user: SandboxUser): Floor {
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
      const files = Object.fromEntries(GENERATED_FILES.map(([, content, fd]) => [fd, content]));
      if (argsFd === undefined) return { argv: args, writes: { [SECCOMP_FD]: seccomp, ...files } };
      const separator = args.indexOf('--');
      const options = args.slice(0, separator);
      return {
        argv: ['--args', String(argsFd), ...args.slice(separator)],
        writes: {
          [SECCOMP_FD]: seccomp,
          ...files,
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
        generatedEtc: {},
        files: Object.fromEntries(GENERATED_FILES.map(([target, , fd]) => [target, { fd, mode: 0o644 }])),
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
 * Normalises a bwrap argv for comparison: per-execution values (execution id, scratch files) and where a bind's
 * source comes from (`--bind-fd <fd>`, the runtime's race-free way, vs the floor's `--bind <path>` of the same
 * object) become placeholders, as do `--file` fd numbers; the info/block fds (absent from the floor) are dropped.
 */
function normaliseBwrapArgv(argv: readonly string[]): string[] {
  const scratchTargets = new Set(['/run/aegis/input.json', '/run/aegis/output.json']);
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
      out.push(arg, '<source>', argv[i + 2]!);
      i += 2;
    } else if (arg === '--file') {
      out.push(arg, '<fd>', argv[i + 2]!);
      i += 2;
    } else if (arg === '--bind-fd' || arg === '--ro-bind-fd') {
      // The runtime binds what it opened and checked (race-free grants, issue 9); the floor binds the same path.
      out.push(arg === '--bind-fd' ? '--bind' : '--ro-bind', '<source>', argv[i + 2]!);
      i += 2;
    } else if ((arg === '--bind' || arg === '--ro-bind') && argv[i + 2] === '/agent') {
      out.push(arg, '<source>', '/agent');
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
  if (argsFd === INFO_FD || argsFd === BLOCK_FD || (argsFd !== undefined && argsFd >= GENERATED_FD_BASE)) {
    problems.push(`the runtime passes --args on fd ${argsFd}, which the floor uses for something else`);
  }
  // The fd numbers may differ from the floor's (normalised away above): compare what each --file carries.
  const options = effectiveArgv(captured);
  for (const [target, content] of GENERATED_FILES) {
    const i = options.findIndex((arg, j) => arg === '--file' && options[j + 2] === target);
    const given = i === -1 ? undefined : captured.pipes[Number(options[i + 1])];
    if (!given?.equals(content))
      problems.push(`${target}: the runtime's --file content differs from the floor's`);
  }
  if (problems.length > 0) {
    throw new Error(`the floor no longer matches the runtime (${language}): ${problems.join('; ')}`);
  }
  const parity =
    'identical apart from --info-fd/--block-fd and per-execution paths; same seccomp program; ' +
    (argsFd === undefined ? 'options on argv' : `options over --args ${argsFd}`);
  return { argsFd, parity };
}
