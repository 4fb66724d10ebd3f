/**
 * `sandbox` runtime: bubblewrap namespaces + seccomp + cgroups, run as an unprivileged uid.
 *
 * spawn():   resolves and checks every mount, creates the cgroup and scratch files, starts bwrap blocked on
 *            --block-fd, reads the sandbox init's pid from --info-fd and moves it into the cgroup. The instance is
 *            now Warm: namespaces and mounts exist, limits apply, the agent has not run one instruction.
 *            With `network.allow` rules it then opens the egress proxy's listener on 127.0.0.1:3128 *inside* the
 *            sandbox's network namespace (netns-listener.ts) and serves it from this process, before the agent runs.
 * execute(): writes the input, releases the block fd, streams stdout/stderr line by line, enforces the wall-clock
 *            timeout (SIGKILL to the sandbox's pid-namespace init kills the whole tree), classifies the outcome
 *            from the exit status and cgroup counters, collects the output, destroys the instance.
 * prewarm:   (`InstanceSpec.prewarm`, prewarm.ts, docs/adr/0012-warm-instances.md) spawn releases the block fd
 *            itself: the sandbox's command is a shim that starts the interpreter and waits on a "go" socket; spawn
 *            returns once it is ready. execute() writes the input, then go (the execution id), and the shim runs
 *            the entrypoint in the already started interpreter.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  closeSync,
  constants,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  statfsSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { extname, join } from 'node:path';
import type { Duplex, Readable, Writable } from 'node:stream';
import type {
  InstanceBinding,
  InstanceId,
  InstanceSpec,
  InstanceState,
  NetworkDecisionEvent,
  ProcessIdentity,
  Runtime,
  TaskInput,
  TaskOutput,
} from '../../../app/ports.ts';
import { AegisError } from '../../../domain/errors.ts';
import type { LimitName, TerminalStatus, Violation } from '../../../domain/execution.ts';
import { checkMountSource } from '../../../domain/filesystem-policy.ts';
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';
import { isWithin } from '../../../domain/paths.ts';
import type { NetworkPolicy } from '../../../domain/policy/network-rules.ts';
import { formatBytes } from '../../../domain/units.ts';
import { listenInNetns, NETNS_HELPER_ID, NETNS_LISTENER_SCRIPT } from '../../egress/netns-listener.ts';
import { EgressProxy } from '../../egress/proxy.ts';
import { HttpSecretScrubber } from '../../secrets/http-response-scrubber.ts';
import { HttpSecretRewriter } from '../../secrets/http-secret-rewriter.ts';
import { type BwrapMount, buildBwrapArgs } from './bwrap-args.ts';
import {
  CgroupDriver,
  type CgroupLayout,
  detectCgroupLayout,
  removeCgroupPaths,
  type SandboxCgroup,
} from './cgroups.ts';
import {
  hostHasMergedUsr,
  presentEtcFiles,
  reachable,
  resolveSandboxUser,
  type SandboxUser,
} from './host.ts';
import { changedWhileChecked, openMountSource, userMay } from './mount-source.ts';
import { goMessage, planPrewarm, SHIM_DIR_INSIDE, shimSources } from './prewarm.ts';
import { buildSeccompProgram, hostSeccompArch } from './seccomp.ts';

/** Where the agent finds things inside. */
export const INNER_UID = 1000;
export const INNER_GID = 1000;
const NODE_INSIDE = '/opt/aegis/bin/node';
const INNER_PATH = '/opt/aegis/bin:/usr/local/bin:/usr/bin:/bin';
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
const MAX_LINE_BYTES = 64 * 1024;
const MAX_LOG_BYTES = 32 * 1024 * 1024;
const SPAWN_DEADLINE_MS = 10_000;
/** Where the egress proxy listens inside every sandbox that has egress (on the sandbox's own lo). */
export const PROXY_PORT = 3128;
const PROXY_URL = `http://127.0.0.1:${PROXY_PORT}`;
/**
 * Environment that points HTTP clients at the egress proxy (curl reads the lowercase names, most others the
 * uppercase). NO_PROXY is empty: every destination — 127.0.0.1 included — is the proxy's to decide, because an
 * allow rule such as `127.0.0.1:8080` names the *host's* loopback; the sandbox's own lo is not reachable from the
 * host anyway. An agent that runs a server on its own lo and calls it may set NO_PROXY in spec.env.
 */
export const PROXY_ENV: Readonly<Record<string, string>> = {
  HTTP_PROXY: PROXY_URL,
  HTTPS_PROXY: PROXY_URL,
  http_proxy: PROXY_URL,
  https_proxy: PROXY_URL,
  ALL_PROXY: `socks5h://127.0.0.1:${PROXY_PORT}`,
  all_proxy: `socks5h://127.0.0.1:${PROXY_PORT}`,
  NODE_USE_ENV_PROXY: '1',
};
/** statfs f_type of tmpfs (linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;
/** Where output files go when the scratch root is not tmpfs. */
const SHM_ROOT = '/dev/shm';

export interface SandboxRuntimeOptions {
  /** Scratch root for per-execution files and the orchestrator's static /etc files. @default /run/aegis (root) */
  readonly scratchRoot?: string;
  /** Host paths never mountable in addition to the built-in list (the orchestrator's data dir). */
  readonly protectedPaths?: readonly string[];
  /** cgroup sub-path for sandbox groups. @default "aegis" */
  readonly cgroupParent?: string;
  readonly identity: ProcessIdentity;
  /** Path to the bwrap binary. @default "bwrap" (PATH) */
  readonly bwrapPath?: string;
  /** Node binary agents with `language: node` run on. @default the orchestrator's own (process.execPath) */
  readonly nodeBinary?: string;
  readonly cgroupLayout?: CgroupLayout;
  /** Path to nsenter (util-linux), which opens the egress proxy's socket in the sandbox's netns. @default "nsenter" */
  readonly nsenterPath?: string;
}

interface Instance {
  readonly id: InstanceId;
  /** The execution served and where its egress decisions go: the spawn's, or the binding's (pooled instances). */
  readonly route: Route;
  /** Set by `bind` (once). */
  bound: boolean;
  readonly agent: CompiledAgent;
  state: InstanceState;
  /** execute() took it (it destroys the instance when the run ends). */
  executed: boolean;
  readonly dir: string;
  readonly proc: ChildProcess;
  /** Write end of bwrap's --block-fd: one byte releases the agent. Already released when prewarmed. */
  readonly release: Writable;
  /** Prewarmed: the orchestrator's end of the go socket; writing the go message starts the agent. */
  readonly go: Duplex | undefined;
  /** What state.json says (bind rewrites its executionId). */
  readonly scratchState: ScratchState;
  /** Set by `bind`: the state.json naming the bound execution, written by execute() once the go message is out. */
  boundState: ScratchState | undefined;
  readonly childPid: number;
  readonly cgroup: SandboxCgroup;
  readonly inputFile: string;
  readonly outputFile: string;
  /** Directory holding outputFile when it is not the scratch dir (see outputDirFor). */
  readonly outputDir: string | undefined;
  /** Lines bwrap printed before execute() attached (setup errors). */
  readonly early: { stream: 'stdout' | 'stderr'; text: string }[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The egress proxy serving the listener in the sandbox's netns; undefined when it has no egress at all. */
  readonly proxy: EgressProxy | undefined;
  killedBy: 'timeout' | 'abort' | 'terminate' | undefined;
}

interface Route {
  executionId: string;
  onNetworkDecision: InstanceSpec['onNetworkDecision'];
}

interface ScratchState {
  /** The execution served (a pool id such as `wp_…` until a pooled instance is bound). */
  readonly executionId: string;
  /** The id the instance was spawned under (names the scratch dir and cgroups), when bound since. */
  readonly spawnedAs?: string;
  readonly owner: { host: string; pid: number; startTicks: number };
  readonly cgroupPaths: readonly string[];
  /** Output dir outside the scratch dir, if any (removed with it). */
  readonly outputDir?: string;
  readonly createdAt: string;
}

function defaultScratchRoot(): string {
  if (process.getuid?.() === 0) return '/run/aegis';
  const runtimeDir = process.env['XDG_RUNTIME_DIR'];
  return runtimeDir ? join(runtimeDir, 'aegis') : `/tmp/aegis-${process.getuid?.() ?? 'user'}`;
}

function onTmpfs(path: string): boolean {
  try {
    return statfsSync(path).type === TMPFS_MAGIC;
  } catch {
    return false;
  }
}

/**
 * output.json is the one host file the agent writes (bound read-write). On tmpfs its pages are shmem charged to the
 * sandbox's memory cgroup, so the memory limit bounds it; on a disk-backed scratch root (here /run is ext4) the
 * pages are written back and reclaimed, and an agent could fill the host's disk through it. So it always lives on
 * tmpfs: in the scratch dir when that is tmpfs, else in a fresh private dir under /dev/shm. Returns that extra dir.
 */
function outputDirFor(scratchDir: string): string | undefined {
  if (onTmpfs(scratchDir)) return undefined;
  if (!onTmpfs(SHM_ROOT)) {
    throw new AegisError(
      'LIMIT_UNENFORCEABLE',
      `neither the scratch dir ${scratchDir} nor ${SHM_ROOT} is a tmpfs: the size of the agent's output file could not be bounded`,
      { hint: 'point AEGIS_SCRATCH_DIR at a tmpfs (e.g. a directory under /run or /dev/shm)' },
    );
  }
  const dir = mkdtempSync(join(SHM_ROOT, 'aegis-output-'));
  chmodSync(dir, 0o711);
  return dir;
}

function signalNameOf(code: number): string | undefined {
  const names: Record<number, string> = {
    6: 'SIGABRT',
    9: 'SIGKILL',
    11: 'SIGSEGV',
    15: 'SIGTERM',
    25: 'SIGXFSZ',
  };
  return names[code - 128];
}

/** The synthesised /etc files every sandbox sees (no host accounts leak in). Shared with the bench's floor. */
export const GENERATED_ETC: Readonly<Record<string, string>> = {
  '/etc/passwd': `root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nagent:x:${INNER_UID}:${INNER_GID}:AEGIS agent:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
  '/etc/group': `root:x:0:\nagent:x:${INNER_GID}:\nnogroup:x:65534:\n`,
  '/etc/hosts': '127.0.0.1\tlocalhost aegis\n::1\tlocalhost ip6-localhost\n',
  '/etc/nsswitch.conf': 'passwd: files\ngroup: files\nhosts: files\n',
};

/**
 * The agent's whole environment: AEGIS's variables, spec.env, secret placeholders (never values) and, with egress,
 * the proxy variables. Order matters to the bench's flag-parity check, which uses this same function.
 */
export function sandboxEnv(
  agent: CompiledAgent,
  executionId: string,
  options: { readonly egress: boolean; readonly secretEnv: Readonly<Record<string, string>> } = {
    egress: false,
    secretEnv: {},
  },
): Record<string, string> {
  const { egress, secretEnv } = options;
  return {
    PATH: INNER_PATH,
    HOME: '/workspace',
    TMPDIR: '/tmp',
    LANG: 'C.UTF-8',
    PYTHONUNBUFFERED: '1',
    PYTHONDONTWRITEBYTECODE: '1',
    ...(egress ? { NO_PROXY: '', no_proxy: '' } : {}),
    ...agent.env,
    // Placeholders only: the values stay in this process and reach the wire through the proxy's rewriter.
    ...secretEnv,
    ...(egress ? PROXY_ENV : {}),
    AEGIS_EXECUTION_ID: executionId,
    AEGIS_AGENT_NAME: agent.name,
    AEGIS_AGENT_VERSION: agent.version,
    AEGIS_INPUT: '/run/aegis/input.json',
    AEGIS_OUTPUT: '/run/aegis/output.json',
  };
}

export class SandboxRuntime implements Runtime {
  readonly name = 'sandbox';
  readonly scratchRoot: string;
  readonly user: SandboxUser;
  readonly cgroups: CgroupDriver;
  private readonly options: SandboxRuntimeOptions;
  private readonly instances = new Map<InstanceId, Instance>();
  private readonly seccomp: Buffer;
  private readonly mergedUsr = hostHasMergedUsr();
  private readonly etcFiles = presentEtcFiles();
  private staticEtc: Record<string, string> | undefined;

  constructor(options: SandboxRuntimeOptions) {
    this.options = options;
    this.scratchRoot = options.scratchRoot ?? defaultScratchRoot();
    this.user = resolveSandboxUser();
    this.cgroups = new CgroupDriver(options.cgroupLayout ?? detectCgroupLayout(), {
      parent: options.cgroupParent ?? 'aegis',
    });
    this.seccomp = buildSeccompProgram(hostSeccompArch());
  }

  /** `failed` also for a Warm instance whose bwrap exited or was killed before `execute` (a pool replaces it). */
  status(id: InstanceId): InstanceState | undefined {
    const instance = this.instances.get(id);
    if (instance?.state === 'warm' && exitedAlready(instance.proc)) instance.state = 'failed';
    return instance?.state;
  }

  /** Static /etc files shared by every sandbox (written once per orchestrator start). */
  private ensureStaticEtc(): Record<string, string> {
    if (this.staticEtc) return this.staticEtc;
    const dir = join(this.scratchRoot, 'static');
    mkdirSync(dir, { recursive: true, mode: 0o711 });
    const out: Record<string, string> = {};
    for (const [target, content] of Object.entries(GENERATED_ETC)) {
      const file = join(dir, target.replace(/^\/etc\//, ''));
      writeFileSync(file, content, { mode: 0o644 });
      out[target] = file;
    }
    this.staticEtc = out;
    return out;
  }

  private shimFiles: Record<string, string> | undefined;
  private seccompFile: string | undefined;

  /**
   * The seccomp program as a file in the static dir (root-only), named by its digest so orchestrators of other
   * versions sharing the scratch root never replace each other's. Each spawn opens it and hands bwrap the
   * descriptor (its own file offset), which costs less than a pipe per sandbox that this process writes.
   */
  private ensureSeccompFile(): string {
    if (this.seccompFile) return this.seccompFile;
    const digest = createHash('sha256').update(this.seccomp).digest('hex').slice(0, 32);
    const file = join(this.scratchRoot, 'static', `seccomp-${digest}.bpf`);
    let current: Buffer | undefined;
    try {
      current = readFileSync(file);
    } catch {
      current = undefined;
    }
    if (current === undefined || !current.equals(this.seccomp)) {
      const partial = `${file}.${process.pid}.tmp`;
      writeFileSync(partial, this.seccomp, { mode: 0o600 });
      renameSync(partial, file);
    }
    this.seccompFile = file;
    return file;
  }

  /**
   * The prewarm shims in the static dir (bound read-only inside): shim name → host file. Checked once per runtime;
   * replaced by rename, never rewritten in place: another orchestrator's sandboxes may be reading the current one.
   */
  private ensureShims(): Record<string, string> {
    if (this.shimFiles) return this.shimFiles;
    const dir = join(this.scratchRoot, 'static');
    mkdirSync(dir, { recursive: true, mode: 0o711 });
    const out: Record<string, string> = {};
    for (const [name, content] of Object.entries(shimSources())) {
      const file = join(dir, name);
      let current: string | undefined;
      try {
        current = readFileSync(file, 'utf8');
      } catch {
        current = undefined;
      }
      if (current !== content) {
        const partial = `${file}.${process.pid}.tmp`;
        writeFileSync(partial, content, { mode: 0o644 });
        renameSync(partial, file);
      }
      out[name] = file;
    }
    this.shimFiles = out;
    return out;
  }

  /** Makes the scratch root exist with safe modes (root-owned, searchable but not listable by sandboxes). */
  private scratchRootReady = false;

  /** Once per runtime (spawn's hot path re-checks only if the root vanished — see makeInstanceDir). */
  private ensureScratchRoot(): void {
    if (this.scratchRootReady) return;
    mkdirSync(join(this.scratchRoot, 'sandboxes'), { recursive: true, mode: 0o711 });
    if (this.user.dedicated) {
      chmodSync(this.scratchRoot, 0o711);
      chmodSync(join(this.scratchRoot, 'sandboxes'), 0o711);
    }
    this.scratchRootReady = true;
  }

  /** The per-execution dir; recreates the scratch root if something removed it while we were running. */
  private makeInstanceDir(dir: string): void {
    try {
      mkdirSync(dir, { mode: 0o711 });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      this.scratchRootReady = false;
      this.staticEtc = undefined; // rewritten at the same paths, so callers' maps stay valid
      this.shimFiles = undefined;
      this.seccompFile = undefined;
      this.ensureScratchRoot();
      this.ensureStaticEtc();
      this.ensureShims();
      mkdirSync(dir, { mode: 0o711 });
    }
  }

  private readonly reachableCopies = new Map<string, string>();

  /**
   * `source` itself when `user` can reach it, else a copy in the root-owned static dir (mode 0711, searchable by
   * everyone): bubblewrap binds as the sandbox uid and the egress helper runs as uid 65534, and neither can traverse
   * a checkout under /root or /home (mode 700). Copied once per content version (size + mtime), atomically.
   */
  private reachableCopy(source: string, label: string, user: SandboxUser): string {
    const key = `${user.uid}:${source}`;
    const known = this.reachableCopies.get(key);
    if (known !== undefined) return known;
    let path = source;
    if (!reachable(source, user, 'read').ok) {
      this.ensureScratchRoot();
      this.ensureStaticEtc();
      const st = statSync(source);
      // The extension stays last: Node decides a script's module type by it.
      path = join(
        this.scratchRoot,
        'static',
        `${label}-${st.size}-${Math.trunc(st.mtimeMs)}${extname(source)}`,
      );
      if (!existsSync(path)) {
        const partial = `${path}.${process.pid}.tmp`;
        cpSync(source, partial);
        chmodSync(partial, 0o755);
        renameSync(partial, path);
      }
      const reach = reachable(path, user, 'read');
      if (!reach.ok) {
        throw new AegisError('RUNTIME_UNAVAILABLE', `${user.name} cannot read ${label}: ${reach.reason}`, {
          hint: `install AEGIS in a directory readable by ${user.name}, or set AEGIS_NODE_BINARY`,
        });
      }
    }
    this.reachableCopies.set(key, path);
    return path;
  }

  /** The Node binary agents run on, as the sandbox uid can bind it. */
  private nodeBinaryForSandbox(nodeBinary: string): string {
    return this.reachableCopy(nodeBinary, 'node', this.user);
  }

  /** The Node binary and script of the egress helper, as uid 65534 can run them. */
  private netnsHelper(): { nodeBinary: string; script: string } {
    const nobody: SandboxUser = {
      name: 'uid 65534',
      uid: NETNS_HELPER_ID,
      gid: NETNS_HELPER_ID,
      dedicated: true,
    };
    return {
      nodeBinary: this.reachableCopy(realpathSync(process.execPath), 'node', nobody),
      script: this.reachableCopy(NETNS_LISTENER_SCRIPT, 'netns-listener', nobody),
    };
  }

  /** Interpreter argv for the agent, and interpreter binaries to bind. */
  private commandFor(agent: CompiledAgent): { argv: string[]; binaries: Record<string, string> } {
    const { language, entrypoint, command } = agent.runtime;
    const binaries: Record<string, string> = {};
    const nodeBinary = realpathSync(this.options.nodeBinary ?? process.execPath);
    const needsNode = language === 'node' || (command !== undefined && command[0] === 'node');
    if (needsNode) binaries[this.nodeBinaryForSandbox(nodeBinary)] = NODE_INSIDE;
    if (command !== undefined) return { argv: [...command], binaries };
    const interpreters: Record<string, string> = {
      python: '/usr/bin/python3',
      node: NODE_INSIDE,
      bash: '/usr/bin/bash',
    };
    const interpreter = interpreters[language ?? 'bash']!;
    if (language !== 'node' && !existsSync(interpreter)) {
      throw new AegisError('RUNTIME_UNAVAILABLE', `${interpreter} is not installed on this host`, {
        hint: `install it (Debian: apt-get install ${language === 'python' ? 'python3' : 'bash'})`,
      });
    }
    if (entrypoint !== undefined && !existsSync(join(agent.agentDir, entrypoint))) {
      throw new AegisError(
        'MANIFEST_INVALID',
        `entrypoint ${entrypoint} does not exist in ${agent.agentDir}`,
        {
          problems: [
            { path: 'spec.runtime.entrypoint', message: `no file ${join(agent.agentDir, entrypoint)}` },
          ],
        },
      );
    }
    return { argv: [interpreter, entrypoint!], binaries };
  }

  /** Paths never mountable on this runtime besides ALWAYS_FORBIDDEN: the configured ones and the scratch root. */
  private protectedPaths(): string[] {
    return [...(this.options.protectedPaths ?? []), this.scratchRoot];
  }

  /**
   * Opens every grant race-free (mount-source.ts) and checks the *opened* object: not a protected path (grants
   * inside the agent's own directory `ownDir` are exempt from protected paths that merely contain that directory),
   * not on a kernel filesystem, reachable, readable (and writable) by the sandbox uid. Descriptors go to `held`;
   * the caller closes them once bubblewrap has them. When the agent directory was copied (`ownCopy`: the sandbox
   * uid cannot reach it), a read grant inside it is bound from the copy; a write grant inside it is refused.
   */
  private resolveMounts(
    agent: CompiledAgent,
    ownDir: string,
    ownCopy: string | undefined,
    held: number[],
  ): BwrapMount[] {
    const mounts: BwrapMount[] = [];
    const protectedPaths = this.protectedPaths();
    for (const mount of agent.mounts) {
      const what = mount.manifestPath;
      const real = realpathOrRefuse(
        mount.source,
        what,
        () =>
          new AegisError('MANIFEST_INVALID', `${what}: host path ${mount.source} does not exist`, {
            problems: [{ path: what, message: `host path ${mount.source} does not exist` }],
            hint: 'create it first, or remove the entry',
          }),
      );
      const insideOwnDir = isWithin(real, ownDir);
      const refuseProtected = (path: string) => {
        const verdict = checkMountSource(path, protectedPaths, ownDir);
        if (!verdict.forbidden) return;
        const via = path === mount.source ? '' : ` (resolves to ${path})`;
        throw new AegisError(
          'POLICY_DENIED',
          `${what}: ${mount.source}${via} may never be mounted into a sandbox — it is or contains the protected path ${verdict.protectedPath}`,
          {
            problems: [{ path: what, message: `protected host path ${verdict.protectedPath}` }],
            hint: "grant a dedicated directory that holds only what the agent needs (or put the data inside the agent's own directory)",
          },
        );
      };
      refuseProtected(real);
      if (insideOwnDir && ownCopy !== undefined && mount.writable) {
        throw new AegisError(
          'RUNTIME_UNAVAILABLE',
          `${what}: ${real} lies in the agent directory, which the sandbox gets as a read-only copy (the sandbox user ${this.user.name} cannot reach it, or it lies in a protected path), so it cannot be granted writable`,
          {
            hint: 'grant a dedicated directory outside the agent directory (and outside /root and /home) for what the agent writes',
          },
        );
      }
      const source = insideOwnDir && ownCopy !== undefined ? join(ownCopy, real.slice(ownDir.length)) : real;
      const opened = openMountSource(source, {
        user: this.user,
        what,
        ...(insideOwnDir && ownCopy === undefined ? { searchFrom: ownDir } : {}),
      });
      held.push(opened.fd);
      // The descriptor resolves to the walked path (checked by the walk), so this is the opened object's own path.
      if (opened.path === real) refuseProtected(opened.path);
      const access = mount.writable ? 'write' : 'read';
      if (!userMay(opened.stat, this.user, access)) {
        throw new AegisError(
          'RUNTIME_UNAVAILABLE',
          `${what}: the sandbox user ${this.user.name} (uid ${this.user.uid}) cannot ${access} ${real}: it is mode ${(opened.stat.mode & 0o777).toString(8)}, owner uid ${opened.stat.uid}`,
          {
            hint: mount.writable
              ? `give it to the sandbox user: chown ${this.user.uid} ${real} (or chmod o+rwx)`
              : `make it readable: chmod o+r${opened.stat.isDirectory() ? 'x' : ''} ${real}`,
          },
        );
      }
      mounts.push({ source: { fd: opened.fd }, target: mount.target, writable: mount.writable });
    }
    return mounts;
  }

  /** The agent directory's real path: its own directory, never a protected path to itself (checkMountSource). */
  private ownDirOf(agent: CompiledAgent): string {
    const what = 'the agent directory';
    const real = realpathOrRefuse(
      agent.agentDir,
      what,
      () =>
        new AegisError('MANIFEST_INVALID', `${what} ${agent.agentDir} does not exist`, {
          hint: 'run the agent from its agent.yaml again',
        }),
    );
    const verdict = checkMountSource(real, this.protectedPaths(), real);
    if (verdict.forbidden) {
      throw new AegisError(
        'POLICY_DENIED',
        `${what} ${real} is or contains the protected path ${verdict.protectedPath}; it would be visible at /agent`,
        { hint: 'keep each agent in a directory of its own that holds only the agent' },
      );
    }
    return real;
  }

  /**
   * The agent directory, opened race-free and bound by descriptor. When the sandbox uid cannot read it (mode
   * 0700, say), a private read-only copy in the scratch dir is bound instead — copied from the opened descriptor,
   * so it is a copy of the directory that was checked.
   */
  private agentDirFor(ownDir: string, dir: string, held: number[]): { fd: number; copy?: string } {
    const what = 'the agent directory';
    const opened = openMountSource(ownDir, { user: this.user, what, searchFrom: ownDir });
    held.push(opened.fd);
    if (!opened.stat.isDirectory()) throw changedWhileChecked(what, ownDir, 'it is no longer a directory');
    // bubblewrap resolves the descriptor to the object's current path and binds that as the sandbox uid (then
    // verifies the result is the object): the uid must reach the path itself, not only read the directory. An agent
    // directory inside a protected path (a clone under /home/alice) is copied too, so that its host path — a user
    // name, say — does not show in the agent's mountinfo (ADR 0015).
    const insideProtected = checkMountSource(ownDir, this.protectedPaths()).forbidden;
    if (!insideProtected && reachable(ownDir, this.user, 'read').ok) return { fd: opened.fd };
    const copy = join(dir, 'agent');
    // The trailing slash makes cp follow the magic link itself (and only it: symlinks inside stay symlinks).
    cpSync(`/proc/self/fd/${opened.fd}/`, copy, {
      recursive: true,
      verbatimSymlinks: true,
      filter: (src) => !src.includes('/.git/'),
    });
    chmodSync(copy, 0o755);
    const copied = openMountSource(copy, { user: this.user, what });
    held.push(copied.fd);
    return { fd: copied.fd, copy };
  }

  /** A file this runtime just made in its own root-owned scratch (input/output), opened for bubblewrap. */
  private scratchFile(path: string, held: number[]): { fd: number } {
    const opened = openMountSource(path, { user: this.user, what: 'the scratch dir' });
    held.push(opened.fd);
    return { fd: opened.fd };
  }

  async spawn(spec: InstanceSpec): Promise<InstanceId> {
    const { agent } = spec;
    if (agent.isolation !== 'sandbox') {
      throw new AegisError('RUNTIME_UNAVAILABLE', `isolation "${agent.isolation}" is not available yet`, {
        hint: 'use isolation: sandbox',
      });
    }
    // Egress only through the proxy, and the proxy only when something is allowed: without allow rules the
    // namespace's lo is all there is (starting the proxy costs a Node start, ~0.1 s — see ADR 0007).
    const egress = agent.network.allow.length > 0;
    this.cgroups.assertUsable();
    const cold = this.commandFor(agent);
    const binaries = { ...cold.binaries };
    let argv = cold.argv;
    // Prewarmed: the shim (Python/Node) or the exec wrapper (anything else) is the sandbox's command.
    const prewarm = spec.prewarm ? planPrewarm(agent.runtime, cold.argv) : undefined;
    if (prewarm) {
      argv = [...prewarm.argv];
      if (prewarm.shim) this.ensureScratchRoot();
    }
    // Descriptors of everything bound by fd; closed once bubblewrap has its copies (or the spawn failed).
    const held: number[] = [];
    try {
      return await this.spawnHolding(spec, { egress, binaries, argv, prewarm }, held);
    } finally {
      for (const fd of held) closeSync(fd);
    }
  }

  private async spawnHolding(
    spec: InstanceSpec,
    plan: {
      egress: boolean;
      binaries: Record<string, string>;
      argv: string[];
      prewarm: ReturnType<typeof planPrewarm> | undefined;
    },
    held: number[],
  ): Promise<InstanceId> {
    const { agent, executionId } = spec;
    const { egress, binaries, argv, prewarm } = plan;
    const ownDir = this.ownDirOf(agent);
    this.ensureScratchRoot();
    const generatedEtc = this.ensureStaticEtc();
    // The synthesised /etc files and the prewarm shim are copied into the sandbox's root (not bound): no host
    // path of theirs appears in the agent's mountinfo. Host file → [target inside, mode].
    const copied: [string, string, number][] = Object.entries(generatedEtc).map(([target, file]) => [
      file,
      target,
      0o644,
    ]);
    if (prewarm?.shim) {
      copied.push([this.ensureShims()[prewarm.shim]!, `${SHIM_DIR_INSIDE}/${prewarm.shim}`, 0o644]);
    }

    const id: InstanceId = `sbx_${executionId}`;
    const dir = join(this.scratchRoot, 'sandboxes', executionId);
    this.makeInstanceDir(dir);
    let outputDir: string | undefined;
    let scratchState: ScratchState | undefined;
    let cgroup: SandboxCgroup | undefined;
    let proc: ChildProcess | undefined;
    let proxy: EgressProxy | undefined;
    try {
      outputDir = outputDirFor(dir);
      // Written once, before anything it names exists: the output dir (just made) and every cgroup dir create() may
      // make. A crash from here on leaves a state.json from which the reaper removes all of it.
      scratchState = {
        executionId,
        owner: this.options.identity.current(),
        cgroupPaths: this.cgroups.plannedPaths(executionId),
        ...(outputDir ? { outputDir } : {}),
        createdAt: new Date().toISOString(),
      };
      writeScratchState(dir, scratchState);
      const inputFile = join(dir, 'input.json');
      const outputFile = join(outputDir ?? dir, 'output.json');
      writeFileSync(inputFile, '', { mode: 0o644 });
      writeFileSync(outputFile, '', { mode: 0o600 });
      if (this.user.dedicated) chownSync(outputFile, this.user.uid, this.user.gid);
      const agentDir = this.agentDirFor(ownDir, dir, held);
      const mounts = this.resolveMounts(agent, ownDir, agentDir.copy, held);

      cgroup = this.cgroups.create(executionId, agent.limits);

      // Child fd numbers of the descriptors bound by fd: after stdio, the control pipes and the go socket.
      const fdSlots = new Map<number, number>();
      const firstSlot = prewarm ? prewarm.goFd + 1 : 7;
      const slot = (source: { fd: number }): { fd: number } => {
        const childFd = firstSlot + fdSlots.size;
        fdSlots.set(childFd, source.fd);
        return { fd: childFd };
      };
      const env = sandboxEnv(agent, executionId, { egress, secretEnv: spec.secrets?.env ?? {} });
      const args = buildBwrapArgs({
        innerUid: INNER_UID,
        innerGid: INNER_GID,
        hostname: 'aegis',
        env,
        mergedUsr: this.mergedUsr,
        etcFiles: this.etcFiles,
        generatedEtc: {},
        files: Object.fromEntries(
          copied.map(([file, target, mode]) => {
            const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
            held.push(fd);
            return [target, { ...slot({ fd }), mode }];
          }),
        ),
        agentDir: slot(agentDir),
        inputFile: slot(this.scratchFile(inputFile, held)),
        outputFile: slot(this.scratchFile(outputFile, held)),
        binaries,
        mounts: mounts.map((mount) =>
          typeof mount.source === 'string' ? mount : { ...mount, source: slot(mount.source) },
        ),
        diskBytes: agent.limits.diskBytes,
        argv,
        fds: { seccomp: 3, info: 4, block: 5 },
      });
      // The arguments travel over a pipe (--args), not argv: argv is world-readable in /proc/<pid>/cmdline, and
      // it carries spec.env values and host paths.
      // bwrap reads only options from --args; the command stays on argv (the interpreter and entrypoint).
      const separator = args.indexOf('--');
      const options = args.slice(0, separator);
      // 0-2 stdio, 3 seccomp, 4 info, 5 block, 6 args; prewarmed: the go socket at prewarm.goFd (bwrap passes it
      // on to the sandbox's command; the shim closes it before the agent's code runs).
      // The seccomp program comes from the static file (a descriptor of its own; closed here once bwrap has it).
      const seccompFd = openSync(this.ensureSeccompFile(), 'r');
      const stdio: ('pipe' | 'ignore' | number)[] = [
        'pipe',
        'pipe',
        'pipe',
        seccompFd,
        'pipe',
        'pipe',
        'pipe',
      ];
      if (prewarm) {
        while (stdio.length < prewarm.goFd) stdio.push('ignore');
        stdio.push('pipe');
      }
      // The descriptors of what is bound by fd, at the child fd numbers the arguments name (bwrap closes each
      // once it is mounted: none reaches the agent).
      for (const [childFd, fd] of fdSlots) {
        while (stdio.length < childFd) stdio.push('ignore');
        stdio[childFd] = fd;
      }
      let child: ChildProcess;
      try {
        child = spawn(this.options.bwrapPath ?? 'bwrap', ['--args', '6', ...args.slice(separator)], {
          stdio,
          env: {},
          ...(this.user.dedicated && process.getuid?.() === 0
            ? { uid: this.user.uid, gid: this.user.gid }
            : {}),
        });
      } finally {
        closeSync(seccompFd);
      }
      proc = child;
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
        child.on('close', (code, signal) => resolve({ code, signal }));
      });
      // A Warm instance whose bwrap exits (killed, OOM while idle, …) is failed: status() reports it, execute()
      // refuses it. (Hot instances are classified by execute().)
      child.on('exit', () => {
        const instance = this.instances.get(id);
        if (instance?.state === 'warm') instance.state = 'failed';
      });
      const spawnError = new Promise<never>((_, reject) => {
        child.once('error', (error) =>
          reject(
            new AegisError('RUNTIME_UNAVAILABLE', `cannot start bubblewrap: ${error.message}`, {
              cause: error,
              hint: 'install it (Debian: apt-get install bubblewrap); `aegis doctor` checks the host',
            }),
          ),
        );
      });
      spawnError.catch(() => {});
      const early: Instance['early'] = [];
      const stderrBuffer: string[] = [];
      child.stderr!.on('data', (chunk: Buffer) => stderrBuffer.push(chunk.toString('utf8')));
      const argsPipe = (child.stdio as unknown as (Readable | Writable)[])[6] as Writable;
      argsPipe.on('error', () => {});
      argsPipe.end(Buffer.from(options.map((arg) => `${arg}\0`).join(''), 'utf8'));
      const release = (child.stdio as unknown as (Readable | Writable)[])[5] as Writable;
      release.on('error', () => {});
      const go = prewarm ? ((child.stdio as unknown[])[prewarm.goFd] as Duplex) : undefined;
      go?.on('error', () => {});
      const setupFailed = (what = 'bubblewrap failed to set up the sandbox') =>
        exited.then(() => {
          const said = stderrBuffer.join('').trim();
          if (BWRAP_MOUNT_RACE.test(said)) throw mountRaceDetected(said);
          throw new AegisError(
            'RUNTIME_UNAVAILABLE',
            `${what}: ${stderrBuffer.join('').trim() || '(nothing on stderr)'}`,
            {
              hint: '`aegis doctor` checks user namespaces, bubblewrap and cgroups on this host',
            },
          );
        });

      const childPid = await Promise.race([
        readInfoPid(child.stdio[4] as Readable),
        spawnError,
        setupFailed(),
        delay(SPAWN_DEADLINE_MS).then(() => {
          throw new AegisError(
            'RUNTIME_UNAVAILABLE',
            `bubblewrap did not report its sandbox within ${SPAWN_DEADLINE_MS} ms`,
          );
        }),
      ]);
      // The agent has not run yet (bwrap waits on --block-fd): limits apply from its first instruction.
      try {
        cgroup.join(childPid);
      } catch (error) {
        // The sandbox's init is gone already: bubblewrap failed while setting it up — say why, from its stderr.
        if (!/ESRCH/.test(String((error as Error).message))) throw error;
        await Promise.race([setupFailed(), delay(SPAWN_DEADLINE_MS)]);
        throw error;
      }
      if (!prewarm) this.holdStderr(child, stderrBuffer, early);

      const route: Route = {
        executionId,
        onNetworkDecision: spec.onNetworkDecision,
      };
      if (egress) {
        // Before the release: the agent's first instruction can already connect (no start-up race).
        const secrets = spec.secrets;
        proxy = new EgressProxy({
          execution: executionId,
          policy: agent.network.policy,
          // Through `route`: bind() re-points a pooled instance at its execution (the event's own `execution`
          // stamp is restamped with it too).
          onDecision: (event) => {
            const restamped: NetworkDecisionEvent & { execution: string } = {
              ...event,
              execution: route.executionId,
            };
            route.onNetworkDecision?.(restamped);
          },
          // Plain-HTTP requests only (CONNECT/SOCKS streams are opaque): placeholders → values toward bound hosts.
          // Requests toward a bound host:port are upgraded to TLS upstream (port 80 → 443, certificate verified for
          // the host); other hops get values only when they are loopback/private IP literals (the cleartext guard).
          // Content-Length bodies (up to the rewriter's cap) are buffered and rewritten too; other bodies stream.
          ...(secrets
            ? (() => {
                const rewriter = new HttpSecretRewriter({
                  bindings: agent.secrets,
                  placeholders: secrets.placeholders,
                  onSecretUse: (use) => secrets.onSecretUse(use),
                });
                return {
                  rewriteHttpRequest: rewriter.rewriteHead,
                  rewriteHttpBody: rewriter.bodyHook,
                  upgradeHttpToTls: rewriter.upgradesToTls,
                  // Every plain-HTTP response, from any host: a value reflected by upstream comes back as its
                  // placeholder (ADR 0018).
                  scrubHttpResponse: new HttpSecretScrubber({
                    placeholders: secrets.placeholders,
                    onSecretUse: (use) => secrets.onSecretUse(use),
                  }),
                };
              })()
            : {}),
        });
        const servers = await listenInNetns({
          pid: childPid,
          port: PROXY_PORT,
          ...this.netnsHelper(),
          ...(this.options.nsenterPath ? { nsenterPath: this.options.nsenterPath } : {}),
          timeoutMs: SPAWN_DEADLINE_MS,
        });
        for (const server of servers) proxy.serve(server);
      }

      if (prewarm && go) {
        // Limits and egress are in place: let the shim start the interpreter now, and wait until it waits for go.
        release.end('1');
        await Promise.race([
          readReady(go),
          setupFailed(`the prewarmed ${prewarm.kind} instance exited before it was ready`),
          delay(SPAWN_DEADLINE_MS).then(() => {
            throw new AegisError(
              'RUNTIME_UNAVAILABLE',
              `the prewarmed ${prewarm.kind} instance did not become ready within ${SPAWN_DEADLINE_MS} ms`,
            );
          }),
        ]);
        go.resume(); // nothing more is expected from the sandbox on this socket
        this.holdStderr(child, stderrBuffer, early);
      }

      const instance: Instance = {
        id,
        route,
        bound: false,
        agent,
        state: 'warm',
        executed: false,
        dir,
        proc: child,
        release,
        go,
        scratchState: scratchState!,
        boundState: undefined,
        childPid,
        cgroup,
        inputFile,
        outputFile,
        outputDir,
        early,
        exited,
        proxy,
        killedBy: undefined,
      };
      this.instances.set(id, instance);
      if (exitedAlready(child)) instance.state = 'failed';
      return id;
    } catch (error) {
      if (proc && proc.exitCode === null) proc.kill('SIGKILL');
      await proxy?.close().catch(() => {});
      await cgroup?.destroy().catch(() => {});
      if (outputDir) rmSync(outputDir, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
      throw error;
    }
  }

  /**
   * Stops collecting bwrap's set-up stderr: what it printed becomes the instance's early lines, the rest waits in
   * the pipe until execute() attaches.
   */
  private holdStderr(child: ChildProcess, stderrBuffer: readonly string[], early: Instance['early']): void {
    child.stderr!.removeAllListeners('data');
    child.stderr!.pause(); // execute() resumes it; nothing is lost in between
    for (const text of stderrBuffer.join('').split('\n').filter(Boolean))
      early.push({ stream: 'stderr', text });
  }

  async execute(id: InstanceId, task: TaskInput): Promise<TaskOutput> {
    const instance = this.instances.get(id);
    if (!instance) throw new AegisError('NOT_FOUND', `no instance ${id}`);
    if (this.status(id) === 'failed' && !instance.executed) {
      // Died while Warm (killed, OOM while idle in a pool): fail fast and release what it held.
      const exit = instance.proc.signalCode ?? `exit code ${instance.proc.exitCode}`;
      await this.terminate(id);
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `instance ${id} died before it was used (bubblewrap ended: ${exit}); nothing of the task ran`,
        { hint: 'start another instance (a warm pool replaces dead instances on its own)' },
      );
    }
    if (instance.state !== 'warm')
      throw new AegisError('USAGE', `instance ${id} is ${instance.state}; instances serve one execution`);
    instance.state = 'hot';
    instance.executed = true;
    const { proc, agent } = instance;
    let lastStdoutLine: string | undefined;
    // bubblewrap's own report of a mount source replaced during set-up (the agent never ran). An agent printing
    // the same line only changes the reason on its own failed record.
    let mountRace: string | undefined;
    let loggedBytes = 0;
    let truncated = false;
    const log = (stream: 'stdout' | 'stderr', text: string) => {
      if (stream === 'stdout' && text.trim() !== '') lastStdoutLine = text;
      if (stream === 'stderr' && mountRace === undefined && BWRAP_MOUNT_RACE.test(text)) mountRace = text;
      loggedBytes += text.length;
      if (loggedBytes > MAX_LOG_BYTES) {
        if (!truncated)
          task.onLog(
            'stderr',
            `[aegis] log output exceeded ${formatBytes(MAX_LOG_BYTES)}; further lines dropped`,
          );
        truncated = true;
        return;
      }
      task.onLog(stream, text);
    };
    const inputJson = JSON.stringify(task.input ?? null);
    writeFileSync(instance.inputFile, inputJson);
    proc.stdin!.on('error', () => {}); // the agent may never read stdin
    proc.stdin!.end(`${inputJson}\n`);

    const kill = (why: Instance['killedBy']) => {
      instance.killedBy ??= why;
      this.killTree(instance);
    };
    const timer = setTimeout(() => kill('timeout'), agent.limits.timeoutMs);
    const onAbort = () => kill('abort');
    if (task.signal?.aborted) onAbort();
    task.signal?.addEventListener('abort', onAbort, { once: true });

    const releasedAtMs = performance.timeOrigin + performance.now();
    // Cold: bwrap execs the agent. Prewarmed: the shim reads the execution id, closes the socket, runs the agent.
    if (instance.go) instance.go.end(goMessage(instance.route.executionId));
    else instance.release.end('1');
    // The rest needs not delay the agent's start. Still in the same tick as the release: no output is read before
    // these listeners are attached.
    for (const line of instance.early) log(line.stream, line.text);
    const stdoutDone = splitLines(proc.stdout!, (text) => log('stdout', text));
    const stderrDone = splitLines(proc.stderr!, (text) => log('stderr', text));
    if (instance.boundState) {
      try {
        writeScratchState(instance.dir, instance.boundState);
      } catch {
        // The agent runs already: a failed rewrite only leaves the reaper the pool id to report.
      }
    }

    const { code, signal } = await instance.exited;
    clearTimeout(timer);
    task.signal?.removeEventListener('abort', onAbort);
    await Promise.all([stdoutDone, stderrDone]);
    const finishedAtMs = performance.timeOrigin + performance.now();
    const stats = instance.cgroup.stats();

    const limitsHit: LimitName[] = [];
    const violations: Violation[] = [];
    if (stats.oomKills > 0) {
      limitsHit.push('memory');
      violations.push({
        kind: 'limit',
        rule: 'memory',
        count: stats.oomKills,
        message: `memory: ${stats.oomKills} process(es) killed for exceeding ${formatBytes(agent.limits.memoryBytes)} (spec.security.resources.memory)`,
      });
    }
    if (stats.pidsLimitHits > 0) {
      limitsHit.push('pids');
      violations.push({
        kind: 'limit',
        rule: 'pids',
        count: stats.pidsLimitHits,
        message: `pids: ${stats.pidsLimitHits} process/thread creation(s) refused at the limit of ${agent.limits.pids} (spec.security.resources.pids)`,
      });
    }
    if (stats.cpuThrottledPeriods > 0) limitsHit.push('cpu');
    if (instance.killedBy === 'timeout') {
      limitsHit.push('timeout');
      violations.push({
        kind: 'limit',
        rule: 'timeout',
        message: `timeout: still running after ${agent.limits.timeoutMs} ms (spec.security.resources.timeout); the whole process tree was killed`,
      });
    }

    const exitCode = code;
    let status: TerminalStatus;
    let reason: string | null = null;
    if (instance.killedBy === 'timeout') {
      status = 'timeout';
      reason = `wall-clock limit of ${agent.limits.timeoutMs} ms reached`;
    } else if (instance.killedBy === 'abort' || instance.killedBy === 'terminate') {
      status = 'killed';
      reason = 'cancelled';
    } else if (stats.oomKills > 0 && exitCode !== 0) {
      status = 'oom';
      reason = `out of memory (limit ${formatBytes(agent.limits.memoryBytes)})`;
    } else if (exitCode === 0) {
      status = 'succeeded';
    } else {
      status = 'failed';
      if (mountRace !== undefined && exitCode === 1) {
        reason = `not started: a mount source was moved or replaced while the sandbox was being set up (${mountRace.trim()}); bubblewrap refused it`;
      } else if (signal) reason = `sandbox terminated by ${signal}`;
      else if (exitCode !== null && exitCode > 128 && signalNameOf(exitCode)) {
        reason = `exit code ${exitCode} (the agent was killed by ${signalNameOf(exitCode)})`;
      } else reason = `exit code ${exitCode}`;
    }

    const output = this.collectOutput(instance, lastStdoutLine, task);
    instance.state = status === 'succeeded' ? 'terminated' : 'failed';
    await this.destroy(instance);
    return { status, exitCode, reason, output, limitsHit, violations, releasedAtMs, finishedAtMs };
  }

  private collectOutput(instance: Instance, lastStdoutLine: string | undefined, task: TaskInput): unknown {
    try {
      const size = statSync(instance.outputFile).size;
      if (size > MAX_OUTPUT_BYTES) {
        task.onLog(
          'system',
          `output.json is ${formatBytes(size)}; outputs are capped at ${formatBytes(MAX_OUTPUT_BYTES)} — ignored`,
        );
        return null;
      }
      if (size > 0) {
        const text = readFileSync(instance.outputFile, 'utf8');
        try {
          return JSON.parse(text) as unknown;
        } catch (error) {
          task.onLog(
            'system',
            `/run/aegis/output.json is not valid JSON (${(error as Error).message}); ignored`,
          );
          return null;
        }
      }
    } catch {
      // no output file: fall back to stdout
    }
    if (lastStdoutLine !== undefined) {
      try {
        return JSON.parse(lastStdoutLine) as unknown;
      } catch {
        return null;
      }
    }
    return null;
  }

  private killTree(instance: Instance): void {
    // SIGKILL to the pid-namespace init makes the kernel kill every process in the namespace; the cgroup kill
    // covers anything that might have escaped it.
    try {
      process.kill(instance.childPid, 'SIGKILL');
    } catch {
      // already gone
    }
    instance.cgroup.kill();
    if (instance.proc.exitCode === null) instance.proc.kill('SIGKILL');
  }

  private async destroy(instance: Instance): Promise<void> {
    this.instances.delete(instance.id);
    try {
      // First the way out: its listener lived in this process, so closing it leaves nothing behind to reap.
      await instance.proxy?.close();
      await instance.cgroup.destroy();
    } finally {
      if (instance.outputDir) removeDir(instance.outputDir, ['output.json']);
      removeDir(instance.dir, SCRATCH_FILES);
    }
  }

  async terminate(id: InstanceId): Promise<void> {
    const instance = this.instances.get(id);
    if (!instance) return;
    instance.killedBy ??= 'terminate';
    this.killTree(instance);
    if (!instance.executed && (instance.state === 'warm' || instance.state === 'failed')) {
      instance.state = 'terminated';
      instance.executed = true; // a second terminate() or execute() finds nothing to do
      await instance.exited;
      await this.destroy(instance);
    }
    // A hot instance is destroyed by the execute() call that is waiting on it.
  }

  /**
   * Claims a Warm instance (spawned for a pool under a pool id) for one execution: egress decisions go to the
   * binding's callback, `setNetworkPolicy(binding.executionId)` reaches it, prewarmed agents see the execution id in
   * AEGIS_EXECUTION_ID, and state.json names it from execute() on (the reaper returns it). The scratch dir and
   * cgroups keep the pool id's name.
   */
  bind(id: InstanceId, binding: InstanceBinding): void {
    const instance = this.instances.get(id);
    if (!instance) throw new AegisError('NOT_FOUND', `no instance ${id}`);
    const state = this.status(id);
    if (state !== 'warm')
      throw new AegisError('USAGE', `instance ${id} is ${state}; only a Warm instance can be bound`);
    if (instance.bound) {
      throw new AegisError(
        'USAGE',
        `instance ${id} is already bound to execution ${instance.route.executionId}`,
      );
    }
    goMessage(binding.executionId); // refuses ids the go message can't carry
    instance.bound = true;
    instance.route.executionId = binding.executionId;
    instance.route.onNetworkDecision = binding.onNetworkDecision;
    // Written by execute() right after the go message, off the warm-start path (a write + rename, ≈ 1 ms on ext4).
    // Until then nothing of the execution runs in the instance; the reaper only reports the id it names.
    instance.boundState = {
      ...instance.scratchState,
      executionId: binding.executionId,
      spawnedAs: instance.scratchState.executionId,
    };
  }

  async setNetworkPolicy(executionId: string, policy: NetworkPolicy): Promise<boolean> {
    const proxy = this.egressProxyOf(executionId);
    if (!proxy) return false;
    proxy.setPolicy(policy);
    return true;
  }

  /** The live egress proxy of an execution, if it has one (tests use it to cut the network mid-run). */
  egressProxyOf(executionId: string): EgressProxy | undefined {
    for (const instance of this.instances.values()) {
      if (instance.route.executionId === executionId) return instance.proxy;
    }
    return undefined;
  }

  /** Kills and removes every live instance (orchestrator shutdown). */
  async terminateAll(): Promise<void> {
    await Promise.all([...this.instances.keys()].map((id) => this.terminate(id)));
  }

  async reapOrphans(): Promise<readonly string[]> {
    const root = join(this.scratchRoot, 'sandboxes');
    if (!existsSync(root)) return [];
    const reaped: string[] = [];
    for (const name of readdirSync(root)) {
      const dir = join(root, name);
      let state: ScratchState | undefined;
      try {
        state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as ScratchState;
      } catch {
        state = undefined;
      }
      if (state && this.options.identity.isAlive(state.owner)) continue;
      if (!state) {
        // Half-written by a dying orchestrator; leave very fresh ones to their (maybe live) creator. A dir that is
        // gone by now was destroyed by its (live) owner between the listing and here.
        let ageMs: number;
        try {
          ageMs = Date.now() - statSync(dir).mtimeMs;
        } catch {
          continue;
        }
        if (ageMs < 60_000) continue;
      }
      if (state) await removeCgroupPaths(state.cgroupPaths).catch(() => {});
      if (state?.outputDir?.startsWith(`${SHM_ROOT}/aegis-output-`)) {
        rmSync(state.outputDir, { recursive: true, force: true });
      }
      rmSync(dir, { recursive: true, force: true });
      reaped.push(state?.executionId ?? name);
    }
    return reaped;
  }
}

/**
 * What bubblewrap says when an object bound by descriptor was moved or replaced while it mounted it: it resolves
 * the descriptor to the object's current path, binds that, and dies if the result is not the object ("Race
 * condition binding dirfd"), or fails to find the moved path. Either way nothing ran in the sandbox.
 */
export const BWRAP_MOUNT_RACE =
  /bwrap: (Race condition binding dirfd|Can't find source path \/proc\/self\/fd\/|Can't get type of source |Can't bind mount \/oldroot\/)/;

function mountRaceDetected(said: string): AegisError {
  const line = said.split('\n').find((l) => BWRAP_MOUNT_RACE.test(l)) ?? said;
  return new AegisError(
    'POLICY_DENIED',
    `a mount source was moved or replaced while the sandbox was being set up (${line.trim()}); bubblewrap refused it and nothing ran`,
    {
      hint: 'something renamed a granted path (or a parent of it) during the start — if another agent can write to a parent directory of a grant, grant a directory it cannot rename instead; otherwise retry',
    },
  );
}

/**
 * realpath, telling a path that is missing (`missing()`) from one that was being replaced while it was resolved
 * (it exists again a moment later: POLICY_DENIED "changed while being checked").
 */
function realpathOrRefuse(path: string, what: string, missing: () => AegisError): string {
  try {
    return realpathSync(path);
  } catch (error) {
    let exists = false;
    try {
      lstatSync(path);
      exists = true;
    } catch {
      // really missing
    }
    if (exists) {
      const refusal = changedWhileChecked(what, path, `resolving it failed: ${(error as Error).message}`);
      refusal.cause = error;
      throw refusal;
    }
    const refusal = missing();
    refusal.cause = error;
    throw refusal;
  }
}

/**
 * Replaced by rename, never rewritten in place: another process's reaper treats an unparsable state.json older than a
 * minute as abandoned, and bind() rewrites it on instances that may have idled in a pool for longer.
 */
function writeScratchState(dir: string, state: ScratchState): void {
  const partial = join(dir, 'state.json.partial');
  writeFileSync(partial, JSON.stringify(state), { mode: 0o600 });
  renameSync(partial, join(dir, 'state.json'));
}

/** What spawn() puts in a scratch dir (an agent copy, if any, is left to the recursive fallback). */
const SCRATCH_FILES = ['state.json', 'input.json', 'output.json'];

/**
 * Removes a dir this runtime made by unlinking the files it knows of and rmdir — a few syscalls instead of a
 * recursive walk on every execution; anything else in it (an agent copy, a partial state.json) falls back to rm -rf.
 * The dirs are root-owned and not writable by the sandbox, so nothing in them was swapped for a symlink.
 */
function removeDir(dir: string, files: readonly string[]): void {
  try {
    for (const name of files) {
      try {
        unlinkSync(join(dir, name));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    rmdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The process has exited (its 'exit' event may still be queued). */
function exitedAlready(proc: ChildProcess): boolean {
  return proc.exitCode !== null || proc.signalCode !== null;
}

/** Resolves when the prewarm shim reports it is ready (one `r` on the go socket). */
function readReady(stream: Readable): Promise<void> {
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      if (!chunk.includes(0x72)) return;
      stream.off('data', onData);
      stream.off('error', reject);
      resolve();
    };
    stream.on('data', onData);
    stream.once('error', reject);
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** bwrap writes `{"child-pid": N, …}` to --info-fd once the sandbox init exists. */
function readInfoPid(stream: Readable): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const match = /"child-pid"\s*:\s*(\d+)/.exec(text);
      if (match) {
        stream.off('data', onData);
        stream.resume();
        resolve(Number(match[1]));
      }
    };
    stream.on('data', onData);
    stream.once('error', reject);
  });
}

/** Calls `onLine` for each complete line (long lines are split at MAX_LINE_BYTES). */
function splitLines(stream: Readable, onLine: (text: string) => void): Promise<void> {
  return new Promise((resolve) => {
    let pending = '';
    stream.setEncoding('utf8');
    queueMicrotask(() => stream.resume());
    stream.on('data', (chunk: string) => {
      pending += chunk;
      let index = pending.indexOf('\n');
      while (index !== -1) {
        onLine(pending.slice(0, index).replace(/\r$/, ''));
        pending = pending.slice(index + 1);
        index = pending.indexOf('\n');
      }
      while (pending.length > MAX_LINE_BYTES) {
        onLine(pending.slice(0, MAX_LINE_BYTES));
        pending = pending.slice(MAX_LINE_BYTES);
      }
    });
    stream.on('end', () => {
      if (pending !== '') onLine(pending);
      resolve();
    });
    stream.on('error', () => resolve());
  });
}
