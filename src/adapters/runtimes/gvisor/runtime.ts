/**
 * `gvisor` runtime: runsc (gVisor's OCI runtime, ptrace platform — no KVM needed) running a bundle AEGIS generates,
 * driven directly (`runsc create/start/exec/kill/delete`, its own `--root` state dir per instance), not via Docker.
 * The agent's system calls are served by gVisor's user-space kernel (the sentry); the host kernel sees only the
 * sentry's own, seccomp-filtered by runsc. See docs/adr/0037-gvisor-runtime.md.
 *
 * spawn():   opens and checks the agent directory and every grant (mount-source.ts), writes config.json and a
 *            read-only root, creates the cgroup, starts a launcher (`sh`, under `unshare --net` when the agent has
 *            egress) and moves it into the cgroup *before* it execs `runsc create`: the sentry, the gofer and the
 *            ptrace stubs all start inside the limits. With egress, the proxy's listener is opened on 127.0.0.1:3128
 *            in the launcher's fresh network namespace (netns-listener.ts) and runsc runs there with
 *            `--network=host`: gVisor's sockets are host sockets *of that namespace*, which holds only `lo` and the
 *            listener. Without egress, `--network=none`: gVisor's netstack with only its own loopback.
 *            Then `runsc start` runs the container's init — an idle process (uid 65534) that ends when its stdin
 *            (held by this process) closes. The instance is Warm: sandbox booted, mounts and limits in place, the
 *            agent has not run one instruction.
 * execute(): writes the input, `runsc exec --process process.json` runs the agent (no capabilities,
 *            no_new_privs, the sandbox user's uid) with its stdio on pipes; exit status from runsc exec; the
 *            wall-clock timeout and terminate() kill the cgroup (sentry, gofer, stubs at once); the outcome is
 *            classified from the exit status and the cgroup's counters; the instance is destroyed.
 * Live (spec.live) and the in-sandbox API (spec.inSandboxApi): docs/adr/0072-live-sandboxes-and-in-sandbox-api-on-
 * docker-and-gvisor.md. A live instance's process.json runs the exec agent (../sandbox/shims/live-agent.cjs on the
 * host's Node, both bound read-only); `openLive` runsc-execs it and speaks its framed channel over the exec's stdio.
 * The in-sandbox API needs a host network namespace to listen in, so an instance with it always runs the `host`
 * mode above (private netns, `--network=host`), egress or not: without egress that netns holds `lo` and the API's
 * listener only.
 * Why exec and not `start` of the agent itself: when a container's init exits the sandbox exits with it, and
 * `runsc wait` then reports "exit status unavailable" unless it was already waiting — a race a fast agent loses.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statfsSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type {
  InstanceBinding,
  InstanceId,
  InstanceSpec,
  InstanceState,
  LivePathPolicy,
  LiveRuntime,
  LiveSession,
  ProcessIdentity,
  Runtime,
  TaskInput,
  TaskOutput,
} from '../../../app/ports.ts';
import { AegisError } from '../../../domain/errors.ts';
import { checkMountSource } from '../../../domain/filesystem-policy.ts';
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';
import { isWithin } from '../../../domain/paths.ts';
import type { NetworkPolicy } from '../../../domain/policy/network-rules.ts';
import { classifyOutcome } from '../../../domain/runtime/outcome.ts';
import type { EgressProxy } from '../../egress/proxy.ts';
import { DockerEngine } from '../docker/engine.ts';
import { imageAgentArgv, imageEnv } from '../images/agent-command.ts';
import { hostNodeInImage } from '../images/host-node.ts';
import { defaultImageCacheDir, ImageStore, type ResolvedImage } from '../images/store.ts';
import {
  CgroupDriver,
  type CgroupLayout,
  detectCgroupLayout,
  removeCgroupPaths,
  type SandboxCgroup,
} from '../sandbox/cgroups.ts';
import { bindWarm, openEgressInNetns, setPolicyOfExecution } from '../sandbox/egress.ts';
import { NODE_INSIDE, sandboxEnv } from '../sandbox/environment.ts';
import { hostHasMergedUsr, presentEtcFiles, resolveSandboxUser, type SandboxUser } from '../sandbox/host.ts';
import { type InSandboxApiServer, openInSandboxApiInNetns, SDK_FILES } from '../sandbox/in-sandbox-api.ts';
import {
  LIVE_AGENT_INSIDE,
  LIVE_AGENT_SOURCE,
  type LiveAttachment,
  openLiveSession,
} from '../sandbox/live.ts';
import { openMountSource, userMay } from '../sandbox/mount-source.ts';
import {
  executionOfSpawnName,
  type ScratchState,
  spawnNameFor,
  writeScratchState,
} from '../sandbox/scratch.ts';
import { collectOutput, createLogSink, delay, splitLines } from '../sandbox/supervise.ts';
import { agentCommand, generatedEtcFiles } from './agent-env.ts';
import { buildOciSpec, type OciBind } from './oci-spec.ts';

const SPAWN_DEADLINE_MS = 20_000;
const TMPFS_MAGIC = 0x01021994;
const SHM_ROOT = '/dev/shm';
/** The sentry's and gofer's own host threads (Go runtime), measured ≈ 20–40 here; generous on purpose. */
const SENTRY_HOST_TASKS = 160;
/**
 * The container's init: idles as nobody (the agent, another uid without capabilities, cannot signal it). Not a
 * read on stdin: gVisor hands a host socket to the container non-blocking, and `read` ends at once with EAGAIN.
 */
const IDLE_INIT = ['/usr/bin/sleep', 'infinity'];
/** In a custom image (no host /usr): the image's /bin/sh stops itself — the docker runtime's gate needs it too. */
const IDLE_INIT_IN_IMAGE = ['/bin/sh', '-c', 'kill -STOP $$'];
const IDLE_UID = 65534;
/**
 * The launcher, run in a private mount namespace of its own (`unshare --mount --propagation private`, plus
 * `--net` when the agent has egress). With `host` networking it brings its new namespace's `lo` up. It binds each
 * checked host object (the agent directory, grants) onto its staging point in the instance dir and then checks
 * that the bound object *is* the one mount-source.ts opened and checked — same device and inode, which cannot be
 * reused while this process holds its descriptor — else exits 94 and nothing runs (a path swapped in between is
 * refused, never mounted). A descriptor opened out here cannot be bound in there (the kernel refuses binds of
 * mounts of another mount namespace). It reports `r` on fd 3 and waits there for the go (the orchestrator moves it
 * into the cgroup and opens the proxy listener meanwhile), then becomes `runsc create`. The staging binds exist
 * only in that namespace: they vanish with its last process (the sandbox) — nothing to unmount, nothing for a
 * recursive delete of the instance dir to walk into.
 */
/** The launcher's exit code when a bound object is not the one that was checked. */
const MOUNT_SOURCE_CHANGED = 94;
const LAUNCHER = [
  'net=$1; n=$2; shift 2',
  'if [ "$net" = host ]; then ip link set lo up || exit 96; fi',
  'while [ "$n" -gt 0 ]; do',
  '  mount -c --bind "$1" "$3" || exit 95',
  '  [ "$(stat -c %d:%i "$3")" = "$2" ] || { echo "aegis: $1 changed while being mounted" >&2; exit 94; }',
  '  shift 3; n=$((n - 1))',
  'done',
  'echo r >&3',
  'read -r _ <&3 || exit 97',
  'exec 3>&-',
  'exec "$@"',
].join('\n');

export interface GvisorRuntimeOptions {
  /** Scratch root for per-execution bundles and runsc state. @default /run/aegis (root) */
  readonly scratchRoot?: string;
  /** Host paths never mountable in addition to the built-in list (the orchestrator's data dir). */
  readonly protectedPaths?: readonly string[];
  /** cgroup sub-path for gVisor sandboxes. @default "aegis-gvisor" */
  readonly cgroupParent?: string;
  readonly identity: ProcessIdentity;
  /** @default "runsc" (PATH) */
  readonly runscPath?: string;
  /** gVisor platform. @default "ptrace" (the 2022-12 Debian build has ptrace and kvm; no KVM here) */
  readonly platform?: string;
  /** Node binary agents with `language: node` run on. @default process.execPath */
  readonly nodeBinary?: string;
  readonly cgroupLayout?: CgroupLayout;
  /** runsc writes debug logs (one file per command) here: diagnosing a refused spec. @default none */
  readonly debugLogDir?: string;
  /** @default "nsenter" */
  readonly nsenterPath?: string;
  /** Where `spec.runtime.image` is unpacked (images/store.ts). @default $AEGIS_HOME/images via the composition root, else /var/lib/aegis/images */
  readonly imageCacheDir?: string;
  /** The engine `spec.runtime.image: name[:tag]` is exported from. @default AEGIS_DOCKER_HOST or /var/run/docker.sock */
  readonly engine?: DockerEngine;
}

interface Instance {
  readonly id: InstanceId;
  readonly route: { executionId: string; onNetworkDecision: InstanceSpec['onNetworkDecision'] };
  bound: boolean;
  readonly agent: CompiledAgent;
  readonly spec: InstanceSpec;
  state: InstanceState;
  executed: boolean;
  readonly dir: string;
  readonly containerId: string;
  /** How to run runsc for this instance: [nsenter into its netns…], runsc, its global flags. */
  readonly runscCommand: readonly string[];
  /** The launcher, which became `runsc create` (exited); its stdout ends when the sandbox is gone. */
  readonly launcher: ChildProcess;
  readonly sandboxGone: Promise<void>;
  readonly cgroup: SandboxCgroup;
  readonly inputFile: string;
  readonly outputFile: string;
  readonly outputDir: string | undefined;
  readonly proxy: EgressProxy | undefined;
  readonly egress: boolean;
  /** The in-sandbox API's server (spec.inSandboxApi); undefined when the instance has none. */
  readonly api: InSandboxApiServer | undefined;
  /** A live sandbox (spec.live): process.json runs the exec agent, started by `openLive`. */
  readonly live: boolean;
  readonly scratchState: GvisorScratchState;
  killedBy: 'timeout' | 'abort' | 'terminate' | undefined;
}

interface GvisorScratchState extends ScratchState {
  readonly runtime: 'gvisor';
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

export class GvisorRuntime implements Runtime, LiveRuntime {
  readonly name = 'gvisor';
  readonly scratchRoot: string;
  readonly user: SandboxUser;
  readonly cgroups: CgroupDriver;
  private readonly options: GvisorRuntimeOptions;
  private images: ImageStore | undefined;
  private engine: DockerEngine | undefined;
  private readonly instances = new Map<InstanceId, Instance>();
  private readonly mergedUsr = hostHasMergedUsr();
  private readonly etcFiles = presentEtcFiles();

  constructor(options: GvisorRuntimeOptions) {
    this.options = options;
    this.scratchRoot = options.scratchRoot ?? defaultScratchRoot();
    this.user = resolveSandboxUser();
    this.cgroups = new CgroupDriver(options.cgroupLayout ?? detectCgroupLayout(), {
      parent: options.cgroupParent ?? 'aegis-gvisor',
    });
  }

  private get root(): string {
    return join(this.scratchRoot, 'gvisor');
  }

  status(id: InstanceId): InstanceState | undefined {
    const instance = this.instances.get(id);
    if (instance?.state === 'warm' && instance.launcher.stdout!.readableEnded) instance.state = 'failed';
    return instance?.state;
  }

  private protectedPaths(): string[] {
    return [...(this.options.protectedPaths ?? []), this.scratchRoot];
  }

  /** runsc's global flags for one instance: its own state dir, platform, network mode, no cgroup handling. */
  private runscGlobal(dir: string, hostNet: boolean): string[] {
    return [
      '--root',
      join(dir, 'runsc'),
      `--platform=${this.options.platform ?? 'ptrace'}`,
      `--network=${hostNet ? 'host' : 'none'}`,
      // AEGIS's cgroup driver holds the whole sandbox (the launcher joins it before runsc starts).
      '--ignore-cgroups',
      ...(this.options.debugLogDir ? ['--debug', `--debug-log=${this.options.debugLogDir}/`] : []),
    ];
  }

  /** Opens and checks a grant or the agent directory; the descriptor goes to `held`. */
  private openChecked(
    path: string,
    what: string,
    ownDir: string,
    writable: boolean,
    held: number[],
  ): { fd: number; real: string; dir: boolean; devIno: string } {
    let real: string;
    try {
      real = realpathSync(path);
    } catch (error) {
      throw new AegisError('MANIFEST_INVALID', `${what}: host path ${path} does not exist`, {
        cause: error,
        problems: [{ path: what, message: `host path ${path} does not exist` }],
        hint: 'create it first, or remove the entry',
      });
    }
    const verdict = checkMountSource(real, this.protectedPaths(), ownDir);
    if (verdict.forbidden) {
      throw new AegisError(
        'POLICY_DENIED',
        `${what}: ${path} may never be mounted into a sandbox — it is or contains the protected path ${verdict.protectedPath}`,
        {
          problems: [{ path: what, message: `protected host path ${verdict.protectedPath}` }],
          hint: 'grant a dedicated directory that holds only what the agent needs',
        },
      );
    }
    // gVisor checks modes against the mounted object itself (the gofer, not the agent's uid, walks the host path),
    // so only the object must be accessible to the sandbox user — the walk still refuses symlinks and swaps.
    const opened = openMountSource(real, { user: this.user, what, searchFrom: real });
    held.push(opened.fd);
    const access = writable ? 'write' : 'read';
    if (!userMay(opened.stat, this.user, access)) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `${what}: the sandbox user ${this.user.name} (uid ${this.user.uid}) cannot ${access} ${real}: it is mode ${(opened.stat.mode & 0o777).toString(8)}, owner uid ${opened.stat.uid}`,
        {
          hint: writable
            ? `give it to the sandbox user: chown ${this.user.uid} ${real}`
            : `make it readable: chmod o+r${opened.stat.isDirectory() ? 'x' : ''} ${real}`,
        },
      );
    }
    return {
      fd: opened.fd,
      real,
      dir: opened.stat.isDirectory(),
      devIno: `${opened.stat.dev}:${opened.stat.ino}`,
    };
  }

  /** A read-only root: mount points, merged-/usr symlinks, synthesised /etc. Root-owned, not writable inside. */
  private makeRootfs(rootfs: string, agent: CompiledAgent, binaries: Record<string, string>): void {
    const dirs = ['usr', 'etc', 'proc', 'dev', 'tmp', 'workspace', 'agent', 'run/aegis', 'opt/aegis/bin'];
    for (const d of dirs) mkdirSync(join(rootfs, d), { recursive: true, mode: 0o755 });
    if (this.mergedUsr) {
      for (const [link, target] of [
        ['bin', 'usr/bin'],
        ['sbin', 'usr/sbin'],
        ['lib', 'usr/lib'],
        ['lib64', 'usr/lib64'],
      ] as const) {
        symlinkSync(target, join(rootfs, link));
      }
    }
    for (const [name, content] of Object.entries(generatedEtcFiles(this.user.uid, this.user.gid))) {
      writeFileSync(join(rootfs, 'etc', name), content, { mode: 0o644 });
    }
    // Mount points of the host /etc files, binaries and grants (the root is read-only inside).
    const points = [
      ...this.etcFiles.map((f) => ({ target: f, dir: statSync(f).isDirectory() })),
      ...Object.entries(binaries).map(([source, target]) => ({
        target,
        dir: statSync(source).isDirectory(),
      })),
      ...agent.mounts.map((m) => ({ target: m.target, dir: statIsDir(m.source) })),
      { target: '/run/aegis/input.json', dir: false },
      { target: '/run/aegis/output.json', dir: false },
    ];
    for (const point of points) {
      const path = join(rootfs, point.target);
      if (existsSync(path)) continue;
      if (point.dir) mkdirSync(path, { recursive: true, mode: 0o755 });
      else {
        mkdirSync(join(path, '..'), { recursive: true, mode: 0o755 });
        writeFileSync(path, '', { mode: 0o644 });
      }
    }
  }

  async spawn(spec: InstanceSpec): Promise<InstanceId> {
    const { agent } = spec;
    if (agent.isolation !== 'gvisor') {
      throw new AegisError('USAGE', `the gvisor runtime was asked to run isolation "${agent.isolation}"`);
    }
    this.cgroups.assertUsable();
    const egress = agent.network.allow.length > 0;
    let plan: { egress: boolean; argv: string[]; binaries: Record<string, string>; image?: ResolvedImage };
    if (agent.runtime.image !== undefined) {
      this.images ??= new ImageStore({ dir: this.options.imageCacheDir ?? defaultImageCacheDir() });
      const image = await this.images.resolve(agent.runtime.image, agent.agentDir, () => {
        this.engine ??= this.options.engine ?? new DockerEngine();
        return this.engine;
      });
      if (spec.live) {
        // The exec agent on the host's Node with its own loader and libraries (images/host-node.ts).
        const node = hostNodeInImage(this.options.nodeBinary ?? process.execPath);
        plan = {
          egress,
          argv: [...node.argv, LIVE_AGENT_INSIDE],
          binaries: { ...node.binds, [LIVE_AGENT_SOURCE]: LIVE_AGENT_INSIDE },
          image,
        };
      } else plan = { egress, argv: imageAgentArgv(agent), binaries: {}, image };
    } else {
      const nodeBinary = realpathSync(this.options.nodeBinary ?? process.execPath);
      plan = {
        egress,
        ...(spec.live ? liveCommand(nodeBinary) : agentCommand(agent, nodeBinary)),
      };
    }
    // The in-sandbox SDKs, importable without installation (PYTHONPATH, /node_modules): read-only binds.
    if (spec.inSandboxApi) Object.assign(plan.binaries, SDK_FILES);
    const held: number[] = [];
    try {
      return await this.spawnHolding(spec, plan, held);
    } finally {
      for (const fd of held) closeSync(fd);
    }
  }

  private async spawnHolding(
    spec: InstanceSpec,
    plan: { egress: boolean; argv: string[]; binaries: Record<string, string>; image?: ResolvedImage },
    held: number[],
  ): Promise<InstanceId> {
    const { agent, executionId } = spec;
    const { egress, argv, binaries, image } = plan;
    // A netns of our own (runsc --network=host in it) for the egress listener and/or the in-sandbox API's.
    const hostNet = egress || spec.inSandboxApi !== undefined;
    const live = spec.live === true;
    let api: InSandboxApiServer | undefined;
    let ownDir: string;
    try {
      ownDir = realpathSync(agent.agentDir);
    } catch (error) {
      throw new AegisError('MANIFEST_INVALID', `the agent directory ${agent.agentDir} does not exist`, {
        cause: error,
      });
    }
    mkdirSync(this.root, { recursive: true, mode: 0o711 });
    // Unique per start (scratch dir, runsc container, cgroups): a fenced-out node and the node that took the execution
    // over may both start it on one host, and the fenced one's teardown must not remove the new holder's sandbox.
    const spawnName = spawnNameFor(executionId);
    const id: InstanceId = `gv_${spawnName}`;
    const dir = join(this.root, spawnName);
    mkdirSync(dir, { mode: 0o711 });
    let outputDir: string | undefined;
    let cgroup: SandboxCgroup | undefined;
    let launcher: ChildProcess | undefined;
    let proxy: EgressProxy | undefined;
    const runscArgs = this.runscGlobal(dir, hostNet);
    const containerId = `aegis-${spawnName}`;
    try {
      outputDir = onTmpfs(dir) ? undefined : privateShmDir();
      const scratchState: GvisorScratchState = {
        executionId,
        owner: this.options.identity.current(),
        cgroupPaths: this.cgroups.plannedPaths(spawnName, { freezer: live }),
        ...(outputDir ? { outputDir } : {}),
        runtime: 'gvisor',
        createdAt: new Date().toISOString(),
      };
      writeScratchState(dir, scratchState);
      const inputFile = join(dir, 'input.json');
      const outputFile = join(outputDir ?? dir, 'output.json');
      writeFileSync(inputFile, '', { mode: 0o644 });
      writeFileSync(outputFile, '', { mode: 0o600 });
      chownSync(outputFile, this.user.uid, this.user.gid);

      // Child descriptor slots of everything bound by descriptor: 0-2 stdio, 3 the launcher's control socket.
      // Staging points the launcher binds the checked objects onto: [host path, "dev:ino", point].
      const binds: [string, string, string][] = [];
      const staging = join(dir, 'binds');
      mkdirSync(staging, { mode: 0o700 });
      const bySlot = (opened: { real: string; dir: boolean; devIno: string }): string => {
        const point = join(staging, String(binds.length));
        if (opened.dir) mkdirSync(point, { mode: 0o700 });
        else writeFileSync(point, '', { mode: 0o600 });
        binds.push([opened.real, opened.devIno, point]);
        return point;
      };
      const agentDir = this.openChecked(ownDir, 'the agent directory', ownDir, false, held);
      const mounts: OciBind[] = agent.mounts.map((mount) => {
        const opened = this.openChecked(
          mount.source,
          mount.manifestPath,
          isWithin(realpathOr(mount.source), ownDir) ? ownDir : '',
          mount.writable,
          held,
        );
        return { source: bySlot(opened), target: mount.target, writable: mount.writable };
      });
      // A custom image's verified, shared, read-only tree (images/store.ts); else a generated root per instance.
      let rootfs = join(dir, 'rootfs');
      if (image) rootfs = image.rootfs;
      else this.makeRootfs(rootfs, agent, binaries);
      const pending = {
        agentDir: bySlot(agentDir),
        inputFile,
        outputFile,
        mounts,
      };
      // gVisor's tasks are not host processes: the host pids budget covers the sentry's own threads and the ptrace
      // stubs (about two host tasks per agent task) — the agent's own count is RLIMIT_NPROC inside (process.json).
      cgroup = this.cgroups.create(
        spawnName,
        { ...agent.limits, pids: hostPidsFor(agent.limits.pids) },
        { freezer: live },
      );

      const stdio: 'pipe'[] = ['pipe', 'pipe', 'pipe', 'pipe'];
      const wrapper = ['unshare', '--mount', '--propagation', 'private', ...(hostNet ? ['--net'] : []), '--'];
      const child = spawn(
        wrapper[0]!,
        [
          ...wrapper.slice(1),
          '/bin/sh',
          '-c',
          LAUNCHER,
          'aegis-gvisor-launcher',
          hostNet ? 'host' : 'none',
          String(binds.length),
          ...binds.flat(),
          this.options.runscPath ?? 'runsc',
          ...runscArgs,
          'create',
          '--bundle',
          dir,
          '--pid-file',
          join(dir, 'sandbox.pid'),
          containerId,
        ],
        { stdio, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } },
      );
      launcher = child;
      const stderr: string[] = [];
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (text: string) => stderr.push(text));
      const control = (child.stdio as unknown as (Readable & Writable)[])[3]!;
      control.on('error', () => {});
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      const failed = (what: string) =>
        new AegisError('RUNTIME_UNAVAILABLE', `${what}: ${stderr.join('').trim() || '(nothing on stderr)'}`, {
          hint: 'install gVisor (Debian: apt-get install runsc; `npm run setup -- --runtimes gvisor`); `aegis doctor` checks the host',
        });
      const spawnError = new Promise<never>((_, reject) =>
        child.once('error', (error) => reject(failed(`cannot start the gVisor launcher (${error.message})`))),
      );
      spawnError.catch(() => {});
      await Promise.race([
        readByte(control),
        spawnError,
        exited.then((code) => {
          if (code === MOUNT_SOURCE_CHANGED) {
            const said = stderr.join('').trim();
            throw new AegisError(
              'POLICY_DENIED',
              `a mount source was moved or replaced while the gVisor sandbox was being set up (${said}); it was not mounted and nothing ran`,
              {
                hint: 'something renamed a granted path (or a parent of it) during the start — if another agent can write to a parent directory of a grant, grant a directory it cannot rename instead; otherwise retry',
              },
            );
          }
          throw failed(`the gVisor launcher exited with code ${code} before runsc ran`);
        }),
        deadline('the gVisor launcher did not get ready'),
      ]);
      // Limits from runsc's first instruction: the sentry, gofer and stubs are all its descendants.
      cgroup.join(child.pid!);

      const route: Instance['route'] = { executionId, onNetworkDecision: spec.onNetworkDecision };
      if (egress) {
        proxy = await openEgressInNetns(agent, executionId, spec.secrets, route, {
          pid: child.pid!,
          ...(this.options.nsenterPath ? { nsenterPath: this.options.nsenterPath } : {}),
          timeoutMs: SPAWN_DEADLINE_MS,
        });
      }
      if (spec.inSandboxApi) {
        // In the launcher's fresh netns, before runsc starts: the agent's lo:3129 is this process's listener.
        api = await openInSandboxApiInNetns(spec.inSandboxApi.handler, {
          pid: child.pid!,
          ...(this.options.nsenterPath ? { nsenterPath: this.options.nsenterPath } : {}),
          timeoutMs: SPAWN_DEADLINE_MS,
        });
      }
      const oci = buildOciSpec({
        uid: IDLE_UID,
        gid: IDLE_UID,
        hostname: 'aegis',
        env: { PATH: '/usr/bin:/bin' },
        argv: image ? IDLE_INIT_IN_IMAGE : IDLE_INIT,
        rootfs,
        hostView: image === undefined,
        mergedUsr: this.mergedUsr,
        etcFiles: image ? [] : this.etcFiles,
        binaries,
        agentDir: pending.agentDir,
        inputFile: pending.inputFile,
        outputFile: pending.outputFile,
        mounts: pending.mounts,
        diskBytes: agent.limits.diskBytes,
        network: hostNet ? 'host' : 'none',
        maxOpenFiles: 1024,
      });
      writeFileSync(join(dir, 'config.json'), JSON.stringify(oci), { mode: 0o600 });
      writeFileSync(
        join(dir, 'process.json'),
        JSON.stringify({
          ...oci.process,
          user: { uid: this.user.uid, gid: this.user.gid, additionalGids: [] },
          args: argv,
          rlimits: [
            ...oci.process.rlimits,
            { type: 'RLIMIT_NPROC', hard: agent.limits.pids, soft: agent.limits.pids },
          ],
          env: Object.entries(
            imageEnv(
              image?.config.env ?? [],
              sandboxEnv(agent, executionId, {
                egress,
                secretEnv: spec.secrets?.env ?? {},
                ...(spec.inSandboxApi ? { apiEnv: spec.inSandboxApi.env } : {}),
              }),
            ),
          ).map(([k, v]) => `${k}=${v}`),
        }),
        { mode: 0o600 },
      );
      control.end('g\n');
      const code = await Promise.race([exited, deadline('runsc create did not finish')]);
      if (code !== 0) throw failed(`runsc create failed (exit code ${code})`);
      // With egress the sandbox lives in the launcher's network namespace, and runsc reaches its control socket
      // (an abstract unix socket: per namespace) only from inside it: later runsc commands enter it first.
      const enter = hostNet
        ? [
            this.options.nsenterPath ?? 'nsenter',
            `--net=/proc/${readFileSync(join(dir, 'sandbox.pid'), 'utf8').trim()}/ns/net`,
            '--',
          ]
        : [];
      const runscCommand = [...enter, this.options.runscPath ?? 'runsc', ...runscArgs];
      const started = await runsc(runscCommand, ['start', containerId]);
      if (started.code !== 0) {
        throw new AegisError('RUNTIME_UNAVAILABLE', `runsc start failed: ${started.stderr.trim()}`, {
          hint: '`aegis doctor` checks the host',
        });
      }
      child.stderr!.removeAllListeners('data');
      child.stdout!.resume(); // the idle init writes nothing; 'end' means the sandbox is gone
      child.stderr!.resume();
      const sandboxGone = new Promise<void>((resolve) => {
        if (child.stdout!.readableEnded) resolve();
        else child.stdout!.once('end', () => resolve());
      });
      child.stdin!.on('error', () => {});

      const instance: Instance = {
        id,
        route,
        bound: false,
        agent,
        spec,
        state: 'warm',
        executed: false,
        dir,
        containerId,
        runscCommand,
        launcher: child,
        sandboxGone,
        cgroup,
        inputFile,
        outputFile,
        outputDir,
        proxy,
        egress,
        api,
        live,
        scratchState,
        killedBy: undefined,
      };
      this.instances.set(id, instance);
      return id;
    } catch (error) {
      cgroup?.kill();
      if (launcher && launcher.exitCode === null) launcher.kill('SIGKILL');
      await proxy?.close().catch(() => {});
      await api?.close().catch(() => {});
      await cgroup?.destroy().catch(() => {});
      if (outputDir) rmSync(outputDir, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
      throw error;
    }
  }

  async execute(id: InstanceId, task: TaskInput): Promise<TaskOutput> {
    const instance = this.instances.get(id);
    if (!instance) throw new AegisError('NOT_FOUND', `no instance ${id}`);
    if (this.status(id) === 'failed' && !instance.executed) {
      await this.terminate(id);
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `instance ${id} died before it was used (the gVisor sandbox ended); nothing of the task ran`,
        { hint: 'start another instance (a warm pool replaces dead instances on its own)' },
      );
    }
    if (instance.state !== 'warm')
      throw new AegisError('USAGE', `instance ${id} is ${instance.state}; instances serve one execution`);
    instance.state = 'hot';
    instance.executed = true;
    const { agent } = instance;
    const { log, lastStdoutLine } = createLogSink(task.onLog);
    const inputJson = JSON.stringify(task.input ?? null);
    writeFileSync(instance.inputFile, inputJson);
    if (instance.route.executionId !== instance.scratchState.executionId) {
      // Bound pool instance: the agent sees its execution's id.
      const processFile = join(instance.dir, 'process.json');
      const proc = JSON.parse(readFileSync(processFile, 'utf8')) as { env: string[] };
      proc.env = proc.env.map((e) =>
        e.startsWith('AEGIS_EXECUTION_ID=') ? `AEGIS_EXECUTION_ID=${instance.route.executionId}` : e,
      );
      writeFileSync(processFile, JSON.stringify(proc), { mode: 0o600 });
      writeScratchState(instance.dir, {
        ...instance.scratchState,
        executionId: instance.route.executionId,
        spawnedAs: instance.scratchState.executionId,
      });
    }
    const releasedAtMs = performance.timeOrigin + performance.now();
    const [command, ...args] = instance.runscCommand;
    const agentProc = spawn(
      command!,
      [...args, 'exec', '--process', join(instance.dir, 'process.json'), instance.containerId],
      { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } },
    );
    const agentExit = new Promise<number | null>((resolve) => {
      agentProc.once('error', () => resolve(null));
      agentProc.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : null)));
    });
    agentProc.stdin!.on('error', () => {});
    agentProc.stdin!.end(`${inputJson}\n`);
    const stdoutDone = splitLines(agentProc.stdout!, (text) => log('stdout', text));
    const stderrDone = splitLines(agentProc.stderr!, (text) => log('stderr', text));

    const kill = (why: Instance['killedBy']) => {
      instance.killedBy ??= why;
      this.killTree(instance);
      if (agentProc.exitCode === null) agentProc.kill('SIGKILL');
    };
    const timer = setTimeout(() => kill('timeout'), agent.limits.timeoutMs);
    const onAbort = () => kill('abort');
    if (task.signal?.aborted) onAbort();
    task.signal?.addEventListener('abort', onAbort, { once: true });

    const exitCode = await agentExit;
    clearTimeout(timer);
    task.signal?.removeEventListener('abort', onAbort);
    // Counters before the teardown kill (which is not the agent's doing).
    const stats = instance.cgroup.stats();
    // The agent is done: end the sandbox (background processes too), which closes the agent's stdio.
    this.killTree(instance);
    await Promise.race([Promise.all([stdoutDone, stderrDone]), delay(5_000)]);
    const finishedAtMs = performance.timeOrigin + performance.now();

    const { status, reason, limitsHit, violations } = classifyOutcome({
      exitCode,
      signal: null,
      counters: stats,
      killedBy: instance.killedBy,
      limits: agent.limits,
    });
    const output = collectOutput(instance.outputFile, lastStdoutLine(), task.onLog);
    instance.state = status === 'succeeded' ? 'terminated' : 'failed';
    await this.destroy(instance);
    return { status, exitCode, reason, output, limitsHit, violations, releasedAtMs, finishedAtMs };
  }

  /** Ends the sandbox: the cgroup kill takes sentry, gofer and stubs at once. */
  private killTree(instance: Instance): void {
    instance.launcher.stdin!.destroy();
    instance.cgroup.kill();
  }

  private async destroy(instance: Instance): Promise<void> {
    this.instances.delete(instance.id);
    try {
      await instance.proxy?.close();
      await instance.api?.close();
      await Promise.race([instance.sandboxGone, delay(5_000)]);
      await instance.cgroup.destroy();
    } finally {
      if (instance.outputDir) rmSync(instance.outputDir, { recursive: true, force: true });
      rmSync(instance.dir, { recursive: true, force: true });
    }
  }

  async terminate(id: InstanceId): Promise<void> {
    const instance = this.instances.get(id);
    if (!instance) return;
    instance.killedBy ??= 'terminate';
    this.killTree(instance);
    if (!instance.executed && (instance.state === 'warm' || instance.state === 'failed')) {
      instance.state = 'terminated';
      instance.executed = true;
      await this.destroy(instance);
    }
  }

  /**
   * Starts a live instance's exec agent (spawned with `live: true`): `runsc exec` of its process.json, the framed
   * channel over that exec's stdin/stdout (stderr dropped). Pause/resume freeze the instance's cgroup (sentry,
   * gofer and stubs). When the agent ends, the sandbox is ended and destroyed.
   */
  attach(id: InstanceId): LiveAttachment {
    const instance = this.instances.get(id);
    if (!instance) throw new AegisError('NOT_FOUND', `no instance ${id}`);
    if (!instance.live || this.status(id) !== 'warm' || instance.executed) {
      throw new AegisError(
        'USAGE',
        `instance ${id} is ${instance.state}${instance.live ? '' : ' (not live)'}; only a Warm live instance can be attached`,
      );
    }
    instance.state = 'hot';
    instance.executed = true;
    const [command, ...args] = instance.runscCommand;
    const agentProc = spawn(
      command!,
      [...args, 'exec', '--process', join(instance.dir, 'process.json'), instance.containerId],
      { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } },
    );
    agentProc.stdin!.on('error', () => {});
    agentProc.stderr!.resume(); // runsc's and the agent's own diagnostics: dropped (never a channel)
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      agentProc.once('error', () => resolve({ code: null, signal: null }));
      agentProc.once('exit', (code, signal) => resolve({ code, signal }));
    });
    void exited
      .then(async () => {
        this.killTree(instance);
        if (this.instances.has(id)) {
          instance.state = 'terminated';
          await this.destroy(instance);
        }
      })
      .catch(() => {});
    return {
      input: agentProc.stdin!,
      output: agentProc.stdout!,
      exited,
      stats: () => instance.cgroup.stats(),
      freeze: () => instance.cgroup.freeze(),
      thaw: () => instance.cgroup.thaw(),
      kill: () => {
        instance.killedBy ??= 'terminate';
        this.killTree(instance);
        if (agentProc.exitCode === null) agentProc.kill('SIGKILL');
      },
    };
  }

  /** LiveRuntime: attaches a live instance and opens its channel. */
  async openLive(id: InstanceId, policy: LivePathPolicy): Promise<LiveSession> {
    return openLiveSession(this.attach(id), policy);
  }

  bind(id: InstanceId, binding: InstanceBinding): void {
    bindWarm(id, this.instances.get(id), this.status(id), binding);
  }

  async setNetworkPolicy(executionId: string, policy: NetworkPolicy): Promise<boolean> {
    return setPolicyOfExecution(this.instances.values(), executionId, policy);
  }

  async terminateAll(): Promise<void> {
    await Promise.all([...this.instances.keys()].map((id) => this.terminate(id)));
  }

  /**
   * Sandboxes whose orchestrator died: kill and remove their cgroups (sentry, gofer, stubs with them), their
   * runsc state (inside the instance dir) and scratch. Returns their execution ids.
   */
  async reapOrphans(): Promise<readonly string[]> {
    if (!existsSync(this.root)) return [];
    const reaped: string[] = [];
    for (const name of readdirSync(this.root)) {
      const dir = join(this.root, name);
      let state: GvisorScratchState | undefined;
      try {
        state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as GvisorScratchState;
      } catch {
        state = undefined;
      }
      if (state && this.options.identity.isAlive(state.owner)) continue;
      if (!state) {
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
      reaped.push(state?.executionId ?? executionOfSpawnName(name));
    }
    return reaped;
  }
}

/** A live sandbox's command in the default rootfs: the exec agent on the host's Node (both bound read-only). */
function liveCommand(nodeBinary: string): { argv: string[]; binaries: Record<string, string> } {
  return {
    argv: [NODE_INSIDE, LIVE_AGENT_INSIDE],
    binaries: { [nodeBinary]: NODE_INSIDE, [LIVE_AGENT_SOURCE]: LIVE_AGENT_INSIDE },
  };
}

/** Host tasks a gVisor sandbox may use for an agent limited to `pids` tasks: the sentry's threads plus stubs. */
export function hostPidsFor(pids: number): number {
  return 2 * pids + SENTRY_HOST_TASKS;
}

/** Runs one runsc command to completion: `command` is [nsenter…], runsc and its global flags. */
function runsc(
  command: readonly string[],
  args: readonly string[],
): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command[0]!, [...command.slice(1), ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
    });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (text: string) => {
      stderr += text;
    });
    child.once('error', (error) => resolve({ code: null, stderr: error.message }));
    child.once('close', (code) => resolve({ code, stderr }));
  });
}

function statIsDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function realpathOr(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

function privateShmDir(): string {
  if (!onTmpfs(SHM_ROOT)) {
    throw new AegisError(
      'LIMIT_UNENFORCEABLE',
      `neither the scratch dir nor ${SHM_ROOT} is a tmpfs: the size of the agent's output file could not be bounded`,
      { hint: 'point AEGIS_SCRATCH_DIR at a tmpfs (e.g. a directory under /run or /dev/shm)' },
    );
  }
  const dir = mkdtempSync(join(SHM_ROOT, 'aegis-output-'));
  chmodSync(dir, 0o711);
  return dir;
}

function readByte(stream: Readable): Promise<void> {
  return new Promise((resolve, reject) => {
    const onData = () => {
      stream.off('data', onData);
      stream.pause();
      resolve();
    };
    stream.on('data', onData);
    stream.once('error', reject);
  });
}

function deadline(what: string): Promise<never> {
  return delay(SPAWN_DEADLINE_MS).then(() => {
    throw new AegisError('RUNTIME_UNAVAILABLE', `${what} within ${SPAWN_DEADLINE_MS} ms`);
  });
}
