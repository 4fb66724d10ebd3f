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
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Duplex, Readable, Writable } from 'node:stream';
import type {
  InstanceBinding,
  InstanceId,
  InstanceSpec,
  InstanceState,
  LivePathPolicy,
  LiveRuntime,
  LiveSession,
  Runtime,
  TaskInput,
  TaskOutput,
} from '../../../app/ports.ts';
import { AegisError } from '../../../domain/errors.ts';
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';
import type { NetworkPolicy } from '../../../domain/policy/network-rules.ts';
import { assertEnforceable } from '../../../domain/runtime/capabilities.ts';
import { classifyOutcome } from '../../../domain/runtime/outcome.ts';
import { connectInNetns, netnsConnectFiles } from '../../egress/netns-connect.ts';
import { listenInNetns, netnsHelperFiles } from '../../egress/netns-listener.ts';
import type { EgressProxy } from '../../egress/proxy.ts';
import { reachableCopy } from '../../host/reachable-copy.ts';
import { buildBwrapArgs } from './bwrap-args.ts';
import { CgroupDriver, removeCgroupPaths, type SandboxCgroup } from './cgroups.ts';
import { createEgressProxy, type Route } from './egress.ts';
import {
  API_PORT,
  GENERATED_ETC,
  INNER_GID,
  INNER_UID,
  NODE_INSIDE,
  PROXY_ENV,
  PROXY_PORT,
  sandboxEnv,
} from './environment.ts';
import { agentDirFor, type GrantContext, ownDirOf, resolveMounts, scratchFile } from './grants.ts';
import { hostHasMergedUsr, presentEtcFiles, resolveSandboxUser, type SandboxUser } from './host.ts';
import { SDK_FILES, serveInSandboxApi } from './in-sandbox-api.ts';
import {
  LIVE_AGENT,
  LIVE_AGENT_INSIDE,
  LIVE_PTY_HELPER,
  LIVE_PTY_HELPER_INSIDE,
  type LiveAttachment,
  openLiveSession,
} from './live.ts';
import { type CompiledSandboxOptions, compileSandboxOptions, type SandboxRuntimeOptions } from './options.ts';
import { goMessage, planPrewarm, SHIM_DIR_INSIDE, shimSources } from './prewarm.ts';
import {
  executionOfSpawnName,
  outputDirFor,
  removeDir,
  SCRATCH_FILES,
  type ScratchState,
  SHM_ROOT,
  spawnNameFor,
  writeScratchState,
} from './scratch.ts';
import { buildSeccompProgram, hostSeccompArch } from './seccomp.ts';
import {
  collectOutput,
  createLogSink,
  delay,
  exitedAlready,
  readInfoPid,
  readReady,
  splitLines,
} from './supervise.ts';

export type { SandboxRuntimeOptions };
// Re-exported: the bench and tests import these from the runtime (its public face).
export { GENERATED_ETC, INNER_GID, INNER_UID, PROXY_ENV, PROXY_PORT, sandboxEnv };

const SPAWN_DEADLINE_MS = 10_000;

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
  /** The in-sandbox API's server (spec.inSandboxApi); undefined when the instance has none. */
  readonly api: { close(): Promise<void> } | undefined;
  killedBy: 'timeout' | 'abort' | 'terminate' | undefined;
}

export class SandboxRuntime implements Runtime, LiveRuntime {
  readonly name = 'sandbox';
  readonly scratchRoot: string;
  readonly user: SandboxUser;
  readonly cgroups: CgroupDriver;
  private readonly options: CompiledSandboxOptions;
  private readonly instances = new Map<InstanceId, Instance>();
  private readonly seccomp: Buffer;
  private readonly mergedUsr = hostHasMergedUsr();
  private readonly etcFiles = presentEtcFiles();
  private staticEtc: Record<string, string> | undefined;

  constructor(options: SandboxRuntimeOptions) {
    this.options = compileSandboxOptions(options);
    this.scratchRoot = this.options.scratchRoot;
    this.user = resolveSandboxUser();
    this.cgroups = new CgroupDriver(this.options.cgroupLayout, { parent: this.options.cgroupParent });
    this.seccomp = buildSeccompProgram(hostSeccompArch());
  }

  /** Who grants are checked for and what may never be granted: the configured paths and the scratch root. */
  private grants(): GrantContext {
    return { user: this.user, protectedPaths: [...this.options.protectedPaths, this.scratchRoot] };
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

  /** The Node binary agents run on, as the sandbox uid can bind it. */
  private nodeBinaryForSandbox(nodeBinary: string): string {
    this.ensureScratchRoot();
    this.ensureStaticEtc();
    return reachableCopy(nodeBinary, 'node', this.user, join(this.scratchRoot, 'static'));
  }

  /** The Node binary and script of the egress helper, as uid 65534 can run them. */
  private netnsHelper(): { nodeBinary: string; script: string } {
    this.ensureScratchRoot();
    this.ensureStaticEtc();
    return netnsHelperFiles(join(this.scratchRoot, 'static'));
  }

  /** Interpreter argv for the agent, and interpreter binaries to bind. */
  private commandFor(agent: CompiledAgent): { argv: string[]; binaries: Record<string, string> } {
    const { language, entrypoint, command } = agent.runtime;
    const binaries: Record<string, string> = {};
    const nodeBinary = realpathSync(this.options.nodeBinary);
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

  /** A live sandbox's command: the exec agent on the bound Node (live.ts). */
  private liveCommand(): { argv: string[]; binaries: Record<string, string> } {
    const node = this.nodeBinaryForSandbox(realpathSync(this.options.nodeBinary));
    return { argv: [NODE_INSIDE, LIVE_AGENT_INSIDE], binaries: { [node]: NODE_INSIDE } };
  }

  /**
   * Starts a live instance's exec agent (spawned with `live: true`) and hands over its control channel. The
   * instance is Hot until `terminate`; its cgroup counters stay readable through `stats`.
   */
  attach(id: InstanceId): LiveAttachment {
    const instance = this.instances.get(id);
    if (!instance) throw new AegisError('NOT_FOUND', `no instance ${id}`);
    if (this.status(id) !== 'warm' || instance.executed) {
      throw new AegisError(
        'USAGE',
        `instance ${id} is ${instance.state}; only a Warm live instance can be attached`,
      );
    }
    instance.state = 'hot';
    instance.executed = true;
    const { proc } = instance;
    proc.stdin!.on('error', () => {});
    instance.release.end('1');
    proc.stderr!.resume(); // the agent's own diagnostics: dropped (never a channel)
    const destroy = async () => {
      await instance.exited;
      if (this.instances.has(id)) {
        instance.state = 'terminated';
        await this.destroy(instance);
      }
    };
    void destroy().catch(() => {});
    return {
      input: proc.stdin!,
      output: proc.stdout!,
      exited: instance.exited,
      stats: () => instance.cgroup.stats(),
      freeze: () => instance.cgroup.freeze(),
      thaw: () => instance.cgroup.thaw(),
      kill: () => {
        instance.killedBy ??= 'terminate';
        this.killTree(instance);
      },
      connect: (port) =>
        connectInNetns({
          pid: instance.childPid,
          port,
          ...netnsConnectFiles(join(this.scratchRoot, 'static')),
          ...(this.options.nsenterPath ? { nsenterPath: this.options.nsenterPath } : {}),
        }),
    };
  }

  /** LiveRuntime: attaches a live instance and opens its channel. */
  async openLive(id: InstanceId, policy: LivePathPolicy): Promise<LiveSession> {
    return openLiveSession(this.attach(id), policy);
  }

  async spawn(spec: InstanceSpec): Promise<InstanceId> {
    const { agent } = spec;
    // `auto` arrives here when the router picked this runtime for it (registry.ts).
    if (agent.isolation !== 'sandbox' && agent.isolation !== 'auto') {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `the sandbox runtime was asked to run an agent with isolation: ${agent.isolation}`,
        {
          hint: 'run it through the runtime router (src/adapters/runtimes/registry.ts), or use isolation: sandbox',
        },
      );
    }
    assertEnforceable('sandbox', agent);
    // Egress only through the proxy, and the proxy only when something is allowed: without allow rules the
    // namespace's lo is all there is (starting the proxy costs a Node start, ~0.1 s — see ADR 0007).
    const egress = agent.network.allow.length > 0;
    this.cgroups.assertUsable();
    const cold = spec.live ? this.liveCommand() : this.commandFor(agent);
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
    const ownDir = ownDirOf(this.grants(), agent);
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
    if (spec.live) {
      copied.push([this.ensureShims()[LIVE_AGENT]!, LIVE_AGENT_INSIDE, 0o644]);
      copied.push([this.ensureShims()[LIVE_PTY_HELPER]!, LIVE_PTY_HELPER_INSIDE, 0o644]);
    }
    // With the in-sandbox API, its SDKs: importable without installation, read-only (the root is remounted ro).
    if (spec.inSandboxApi) {
      for (const [file, target] of Object.entries(SDK_FILES)) copied.push([file, target, 0o444]);
    }

    // Unique per start, not per execution: two starts of one execution on one host (a fenced-out node and the node
    // that took it over, sharing the cgroup parent and scratch root) must never share a cgroup or scratch dir — the
    // fenced one's teardown would remove the new holder's. The reaper finds them by state.json, not by name.
    const spawnName = spawnNameFor(executionId);
    const id: InstanceId = `sbx_${spawnName}`;
    const dir = join(this.scratchRoot, 'sandboxes', spawnName);
    this.makeInstanceDir(dir);
    let outputDir: string | undefined;
    let scratchState: ScratchState | undefined;
    let cgroup: SandboxCgroup | undefined;
    let proc: ChildProcess | undefined;
    let proxy: EgressProxy | undefined;
    let api: { close(): Promise<void> } | undefined;
    try {
      outputDir = outputDirFor(dir);
      // Written once, before anything it names exists: the output dir (just made) and every cgroup dir create() may
      // make. A crash from here on leaves a state.json from which the reaper removes all of it.
      scratchState = {
        executionId,
        owner: this.options.identity.current(),
        cgroupPaths: this.cgroups.plannedPaths(spawnName, { freezer: spec.live === true }),
        ...(outputDir ? { outputDir } : {}),
        createdAt: new Date().toISOString(),
      };
      writeScratchState(dir, scratchState);
      const inputFile = join(dir, 'input.json');
      const outputFile = join(outputDir ?? dir, 'output.json');
      writeFileSync(inputFile, '', { mode: 0o644 });
      writeFileSync(outputFile, '', { mode: 0o600 });
      if (this.user.dedicated) chownSync(outputFile, this.user.uid, this.user.gid);
      const agentDir = agentDirFor(this.grants(), ownDir, dir, held);
      const mounts = resolveMounts(this.grants(), agent, ownDir, agentDir.copy, held);

      cgroup = this.cgroups.create(spawnName, agent.limits, { freezer: spec.live === true });

      // Child fd numbers of the descriptors bound by fd: after stdio, the control pipes and the go socket.
      const fdSlots = new Map<number, number>();
      const firstSlot = prewarm ? prewarm.goFd + 1 : 7;
      const slot = (source: { fd: number }): { fd: number } => {
        const childFd = firstSlot + fdSlots.size;
        fdSlots.set(childFd, source.fd);
        return { fd: childFd };
      };
      const env = sandboxEnv(agent, executionId, {
        egress,
        secretEnv: spec.secrets?.env ?? {},
        ...(spec.inSandboxApi ? { apiEnv: spec.inSandboxApi.env } : {}),
      });
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
        inputFile: slot(scratchFile(this.grants(), inputFile, held)),
        outputFile: slot(scratchFile(this.grants(), outputFile, held)),
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
        child = spawn(this.options.bwrapPath, ['--args', '6', ...args.slice(separator)], {
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
        proxy = createEgressProxy(agent, executionId, spec.secrets, route);
        const servers = await listenInNetns({
          pid: childPid,
          port: PROXY_PORT,
          ...this.netnsHelper(),
          ...(this.options.nsenterPath ? { nsenterPath: this.options.nsenterPath } : {}),
          timeoutMs: SPAWN_DEADLINE_MS,
        });
        for (const server of servers) proxy.serve(server);
      }
      if (spec.inSandboxApi) {
        // Same way as the egress listener, whether or not the agent has egress: the agent's lo:3129 is served from
        // this process, before its first instruction.
        const servers = await listenInNetns({
          pid: childPid,
          port: API_PORT,
          ...this.netnsHelper(),
          ...(this.options.nsenterPath ? { nsenterPath: this.options.nsenterPath } : {}),
          timeoutMs: SPAWN_DEADLINE_MS,
        });
        api = serveInSandboxApi(spec.inSandboxApi.handler, servers);
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
        api,
        killedBy: undefined,
      };
      this.instances.set(id, instance);
      if (exitedAlready(child)) instance.state = 'failed';
      return id;
    } catch (error) {
      if (proc && proc.exitCode === null) proc.kill('SIGKILL');
      await proxy?.close().catch(() => {});
      await api?.close().catch(() => {});
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
    // bubblewrap's own report of a mount source replaced during set-up (the agent never ran). An agent printing
    // the same line only changes the reason on its own failed record.
    let mountRace: string | undefined;
    const sink = createLogSink(task.onLog, (stream, text) => {
      if (stream === 'stderr' && mountRace === undefined && BWRAP_MOUNT_RACE.test(text)) mountRace = text;
    });
    const log = sink.log;
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

    const { status, exitCode, reason, limitsHit, violations } = classifyOutcome({
      exitCode: code,
      signal,
      counters: stats,
      killedBy: instance.killedBy,
      limits: agent.limits,
      mountRace,
    });

    const output = collectOutput(instance.outputFile, sink.lastStdoutLine(), task.onLog);
    instance.state = status === 'succeeded' ? 'terminated' : 'failed';
    await this.destroy(instance);
    return { status, exitCode, reason, output, limitsHit, violations, releasedAtMs, finishedAtMs };
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
      await instance.api?.close();
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
      // state.json, or the state.json.partial a dying orchestrator was writing: either names the owner.
      const state = readStateOf(dir, 'state.json') ?? readStateOf(dir, 'state.json.partial');
      if (state && this.options.identity.isAlive(state.owner)) continue;
      if (!state) {
        // Empty or half-written: a crash between mkdir and the first state write, or mid-removal — or another
        // process's start right now, between its mkdir and its state write (reaping that one made its start fail
        // with ENOENT; seen under load with two `aegis run`s on one host). Fresh ones are left to their (maybe live)
        // creator; a dir gone by now was destroyed by its (live) owner between the listing and here.
        let ageMs: number;
        try {
          ageMs = Date.now() - statSync(dir).mtimeMs;
        } catch {
          continue;
        }
        if (ageMs < 60_000) continue;
        if (removeIfEmpty(dir)) {
          reaped.push(executionOfSpawnName(name));
          continue;
        }
      }
      if (state) await removeCgroupPaths(state.cgroupPaths).catch(() => {});
      if (state?.outputDir?.startsWith(`${SHM_ROOT}/aegis-output-`)) {
        rmSync(state.outputDir, { recursive: true, force: true });
      }
      rmSync(dir, { recursive: true, force: true });
      reaped.push(state?.executionId ?? executionOfSpawnName(name));
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

function readStateOf(dir: string, file: string): ScratchState | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, file), 'utf8')) as ScratchState;
  } catch {
    return undefined;
  }
}

/** rmdir: true when the dir was empty and is now gone. */
function removeIfEmpty(dir: string): boolean {
  try {
    rmdirSync(dir);
    return true;
  } catch {
    return false;
  }
}
