/**
 * `docker` runtime: one container per execution through the Docker Engine API (engine.ts), hardened by default —
 * read-only root, CapDrop ALL, no-new-privileges, AEGIS's seccomp policy (seccomp-profile.ts), the sandbox uid (never root),
 * PidsLimit, memory = memory+swap, CPU quota, tmpfs /workspace and /tmp sized by `disk`, NetworkMode none, no log
 * driver (nothing the agent prints lands on the host's disk), and no host mounts but the policy's grants, the agent
 * directory, the I/O files and (default rootfs only) the read-only host /usr view.
 *
 * spawn():   opens every grant race-free (mount-source.ts) and hands dockerd `/proc/<our pid>/fd/<n>` as the bind
 *            source, so the daemon binds the object that was checked; creates the container, attaches to its
 *            stdio, starts it. Its command is a gate (`sh -c 'read -r AEGIS_EXECUTION_ID; exec "$@"'`) that blocks
 *            on stdin before the agent's first instruction. With `network.allow` it then opens the egress proxy's
 *            listener inside the container's network namespace (its init pid from inspect). The instance is Warm.
 * execute(): writes the input file, sends the execution id (the gate's go line) and the input JSON on stdin, closes
 *            stdin; streams stdout/stderr line by line; the wall-clock timeout kills the container; the outcome
 *            comes from the exit code and the daemon's OOMKilled; output from /run/aegis/output.json; the container
 *            is removed.
 * Live (spec.live, docs/adr/0072-live-sandboxes-and-in-sandbox-api-on-docker-and-gvisor.md): the command after the
 *            gate is the exec agent (../sandbox/shims/live-agent.cjs on the host's Node, both bound read-only);
 *            `openLive` sends the go line and then speaks the agent's framed channel over the attach stream.
 * In-sandbox API (spec.inSandboxApi): its listener is opened on 127.0.0.1:3129 inside the container's network
 *            namespace like the egress proxy's, the SDKs are bound read-only, its env is added.
 */
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
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
import { parseImageRef } from '../../../domain/runtime/image-ref.ts';
import { classifyOutcome } from '../../../domain/runtime/outcome.ts';
import type { EgressProxy } from '../../egress/proxy.ts';
import { imageAgentArgv, imageEnv } from '../images/agent-command.ts';
import { hostNodeInImage } from '../images/host-node.ts';
import { defaultImageCacheDir, ImageStore } from '../images/store.ts';
import { type CgroupLayout, detectCgroupLayout, type SandboxCgroup } from '../sandbox/cgroups.ts';
import { bindWarm, openEgressInNetns, type Route, setPolicyOfExecution } from '../sandbox/egress.ts';
import { generatedEtc, HOST_INTERPRETERS, NODE_INSIDE, sandboxEnv } from '../sandbox/environment.ts';
import { hostHasMergedUsr, presentEtcFiles, resolveSandboxUser, type SandboxUser } from '../sandbox/host.ts';
import { type InSandboxApiServer, openInSandboxApiInNetns, SDK_FILES } from '../sandbox/in-sandbox-api.ts';
import {
  LIVE_AGENT_INSIDE,
  LIVE_AGENT_SOURCE,
  type LiveAttachment,
  openLiveSession,
} from '../sandbox/live.ts';
import { openMountSource, userMay } from '../sandbox/mount-source.ts';
import { spawnNameFor } from '../sandbox/scratch.ts';
import { hostSeccompArch } from '../sandbox/seccomp.ts';
import { collectOutput, createLogSink, lineSplitter } from '../sandbox/supervise.ts';
import { DockerCgroups, removeContainerParents, thawContainerParent } from './cgroups.ts';
import { DockerEngine, demux } from './engine.ts';
import { ensureBaseImage, entriesOfDir, imageId, importEntries } from './images.ts';
import { dockerSeccompProfile } from './seccomp-profile.ts';

const SPAWN_DEADLINE_MS = 10_000;
const LABEL_RUNTIME = 'aegis.runtime';
const LABEL_EXECUTION = 'aegis.execution';
const LABEL_OWNER = 'aegis.node';
const LABEL_SCRATCH = 'aegis.scratch';
/** One start's name (`<execution id>.<8 hex>`): names its container and parent group, unique per start. */
const LABEL_SPAWN = 'aegis.spawn';
/**
 * The gate: the container's first process reads one line (the execution id) from stdin, then execs the agent,
 * which reads the rest (the input JSON). sh's `read` takes stdin one byte at a time, so nothing of the input is
 * lost. An id that is not a plain id (the daemon closed stdin early, say) ends the container before the agent runs.
 */
const GATE_SCRIPT =
  'IFS= read -r AEGIS_EXECUTION_ID || exit 125; case "$AEGIS_EXECUTION_ID" in ""|*[!A-Za-z0-9_-]*) exit 125;; esac; export AEGIS_EXECUTION_ID; exec "$@"';
const EXECUTION_ID = /^[A-Za-z0-9_-]{1,128}$/;
/** A start's name as spawnNameFor makes it; the reaper trusts no other label value as a cgroup path component. */
const SPAWN_NAME = /^[A-Za-z0-9_-]{1,128}\.[0-9a-f]{8}$/;

export interface DockerRuntimeOptions {
  readonly identity: ProcessIdentity;
  /** @default a DockerEngine on AEGIS_DOCKER_HOST / DOCKER_HOST / /var/run/docker.sock */
  readonly engine?: DockerEngine;
  /** Per-execution input/output files. Must be a tmpfs (output.json's pages are charged to the container). @default /dev/shm/aegis-docker */
  readonly scratchRoot?: string;
  /** Host paths never mountable in addition to the built-in list (the orchestrator's data dir). */
  readonly protectedPaths?: readonly string[];
  /** Node binary agents with `language: node` run on (default rootfs). @default process.execPath */
  readonly nodeBinary?: string;
  /** @default "nsenter" */
  readonly nsenterPath?: string;
  /** @default detectCgroupLayout() */
  readonly cgroupLayout?: CgroupLayout;
  /** Where an OCI layout `spec.runtime.image` is unpacked and verified before it is imported. @default images/store.ts */
  readonly imageCacheDir?: string;
}

interface Instance {
  readonly id: InstanceId;
  readonly containerId: string;
  readonly route: Route;
  bound: boolean;
  readonly agent: CompiledAgent;
  state: InstanceState;
  executed: boolean;
  readonly dir: string;
  readonly inputFile: string;
  readonly outputFile: string;
  readonly stdio: Socket;
  /** Resolves when the attach stream ends (the container's stdio closed: it exited or is exiting). */
  readonly streamsEnded: Promise<void>;
  /** Output before execute() attached its line splitters (the gate's own errors), then where output goes. */
  readonly feed: Feed;
  readonly proxy: EgressProxy | undefined;
  /** The in-sandbox API's server (spec.inSandboxApi); undefined when the instance has none. */
  readonly api: InSandboxApiServer | undefined;
  /** A live sandbox (spec.live): its command is the exec agent, driven through `openLive`. */
  readonly live: boolean;
  /** The container's parent group (cgroups.ts): limits and the counters read after the run. None: systemd driver. */
  readonly cgroup: SandboxCgroup | undefined;
  /** The start's name (`<id spawned under>.<8 hex>`, a pool's id before bind): names its container and parent group. */
  readonly spawnedAs: string;
  killedBy: 'timeout' | 'abort' | 'terminate' | undefined;
}

/** What must be found mounted at `target` once the container exists: the object that was opened and checked. */
interface MountCheck {
  readonly target: string;
  readonly what: string;
  readonly path: string;
  readonly dev: number;
  readonly ino: number;
}

/**
 * Refuses (POLICY_DENIED) a container in which some grant's target is not the object that was checked: its path
 * was moved or replaced between the check and dockerd's mount. Runs while the gate holds the agent back.
 */
export function verifyMounts(pid: number, checks: readonly MountCheck[]): void {
  for (const check of checks) {
    let found: { dev: number; ino: number } | undefined;
    try {
      found = statSync(`/proc/${pid}/root${check.target}`);
    } catch {
      found = undefined;
    }
    if (found?.dev !== check.dev || found.ino !== check.ino) {
      throw new AegisError(
        'POLICY_DENIED',
        `${check.what}: ${check.path} was moved or replaced while the container was being set up (what got mounted at ${check.target} is not the object that was checked); the container was removed and nothing ran`,
        {
          hint: 'something renamed a granted path (or a parent of it) during the start — grant a directory no one else can rename; otherwise retry',
        },
      );
    }
  }
}

interface Feed {
  readonly early: { which: 'stdout' | 'stderr'; data: Buffer }[];
  onChunk: ((which: 'stdout' | 'stderr', data: Buffer) => void) | undefined;
}

interface BindMount {
  readonly Type: 'bind';
  readonly Source: string;
  readonly Target: string;
  readonly ReadOnly: boolean;
  readonly BindOptions: { readonly Propagation: 'rprivate' };
}

function bind(source: string, target: string, readOnly: boolean): BindMount {
  return {
    Type: 'bind',
    Source: source,
    Target: target,
    ReadOnly: readOnly,
    BindOptions: { Propagation: 'rprivate' },
  };
}

export class DockerRuntime implements Runtime, LiveRuntime {
  readonly name = 'docker';
  readonly engine: DockerEngine;
  readonly scratchRoot: string;
  readonly user: SandboxUser;
  private readonly options: DockerRuntimeOptions;
  private readonly instances = new Map<InstanceId, Instance>();
  private readonly mergedUsr = hostHasMergedUsr();
  private baseImage: Promise<string> | undefined;
  private images: ImageStore | undefined;
  private readonly cgroupLayout: CgroupLayout;
  private readonly cgroups: DockerCgroups;
  /** Whether dockerd uses the cgroupfs driver (then containers nest in AEGIS's groups: cgroups.ts). */
  private cgroupfs: Promise<boolean> | undefined;
  /** AEGIS's seccomp policy as Docker's JSON (seccomp-profile.ts), sent with every container. */
  private readonly seccomp = JSON.stringify(dockerSeccompProfile(hostSeccompArch()));

  constructor(options: DockerRuntimeOptions) {
    this.options = options;
    this.engine = options.engine ?? new DockerEngine();
    this.scratchRoot = options.scratchRoot ?? '/dev/shm/aegis-docker';
    this.user = resolveSandboxUser();
    this.cgroupLayout = options.cgroupLayout ?? detectCgroupLayout();
    this.cgroups = new DockerCgroups(this.cgroupLayout);
  }

  private engineUsesCgroupfs(): Promise<boolean> {
    this.cgroupfs ??= this.engine
      .call('GET', '/info')
      .then((info) => (info.body as { CgroupDriver?: string }).CgroupDriver === 'cgroupfs')
      .catch(() => false);
    return this.cgroupfs;
  }

  status(id: InstanceId): InstanceState | undefined {
    const instance = this.instances.get(id);
    if (instance?.state === 'warm' && (instance.stdio.destroyed || instance.stdio.readableEnded)) {
      instance.state = 'failed';
    }
    return instance?.state;
  }

  private async requireEngine(): Promise<void> {
    if (!(await this.engine.ping())) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `isolation "docker": no Docker Engine answers on ${this.engine.socketPath}`,
        {
          hint: 'install docker.io and start dockerd (tests: bash scripts/test-dockerd.sh start), and point AEGIS_DOCKER_HOST=unix://<socket> at it; or use isolation: sandbox',
        },
      );
    }
  }

  /** The image and the argv after the gate. */
  private async imageAndCommand(
    agent: CompiledAgent,
  ): Promise<{ image: string; argv: string[]; custom: boolean; env: readonly string[] }> {
    const { language, entrypoint, command, image } = agent.runtime;
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
    if (image !== undefined) {
      const ref = parseImageRef(image, agent.agentDir);
      if (ref.kind === 'layout') {
        // Unpacked and verified by AEGIS (the same tree gvisor runs), then imported once, tagged by its digest.
        this.images ??= new ImageStore({ dir: this.options.imageCacheDir ?? defaultImageCacheDir() });
        const resolved = await this.images.resolveLayout(ref.path);
        const tag = `aegis-oci:${resolved.key.slice('sha256:'.length)}`;
        if ((await imageId(this.engine, tag)) === undefined)
          await importEntries(this.engine, entriesOfDir(resolved.rootfs), tag);
        return { image: tag, argv: imageAgentArgv(agent), custom: true, env: resolved.config.env };
      }
      if ((await imageId(this.engine, ref.name)) === undefined) {
        throw new AegisError(
          'RUNTIME_UNAVAILABLE',
          `spec.runtime.image: the local Docker Engine has no image "${image}"`,
          {
            problems: [{ path: 'spec.runtime.image', message: `no image ${image} in the local engine` }],
            hint: `build it from a root filesystem directory: aegis image build <dir> --tag ${image} (no registry is pulled from)`,
          },
        );
      }
      // The engine merges the image's own Env under the container's.
      return { image, argv: imageAgentArgv(agent), custom: true, env: [] };
    }
    const base = await this.baseImageId();
    if (command !== undefined) return { image: base, argv: [...command], custom: false, env: [] };
    const interpreter = HOST_INTERPRETERS[language ?? 'bash'];
    if (language !== 'node' && !existsSync(interpreter)) {
      throw new AegisError('RUNTIME_UNAVAILABLE', `${interpreter} is not installed on this host`, {
        hint: `install it (Debian: apt-get install ${language === 'python' ? 'python3' : 'bash'})`,
      });
    }
    return { image: base, argv: [interpreter, entrypoint!], custom: false, env: [] };
  }

  /** The default rootfs image (made once per runtime). */
  private async baseImageId(): Promise<string> {
    this.baseImage ??= ensureBaseImage(
      this.engine,
      generatedEtc(this.user.uid, this.user.gid),
      this.mergedUsr,
    );
    try {
      return await this.baseImage;
    } catch (error) {
      this.baseImage = undefined;
      throw error;
    }
  }

  /**
   * A live sandbox's image and command: the exec agent on the host's Node. In a custom image, Node comes with its
   * own loader and libraries, bound read-only (images/host-node.ts); the commands it runs use the image's.
   */
  private async liveImageAndCommand(agent: CompiledAgent): Promise<{
    image: string;
    argv: string[];
    custom: boolean;
    env: readonly string[];
    binds?: Readonly<Record<string, string>>;
  }> {
    if (agent.runtime.image !== undefined) {
      const { image, env } = await this.imageAndCommand(agent);
      const node = hostNodeInImage(this.options.nodeBinary ?? process.execPath);
      return { image, argv: [...node.argv, LIVE_AGENT_INSIDE], custom: true, env, binds: node.binds };
    }
    return {
      image: await this.baseImageId(),
      argv: [NODE_INSIDE, LIVE_AGENT_INSIDE],
      custom: false,
      env: [],
    };
  }

  private protectedPaths(): string[] {
    return [...(this.options.protectedPaths ?? []), this.scratchRoot];
  }

  /**
   * The agent directory and the policy's grants, opened race-free (component-wise O_PATH walk, mount-source.ts)
   * and checked on the opened object. dockerd can only be given a path (runc mounts in the container's own mount
   * namespace, where another namespace's descriptor cannot be bound: EINVAL), so it gets the walked path, and
   * `verifyMounts` checks after the start — before the agent's first instruction — that what is mounted at each
   * target is the very object that was checked (device and inode). Descriptors go to `held`, closed after that.
   */
  private grantMounts(agent: CompiledAgent, held: number[], checks: MountCheck[]): BindMount[] {
    const protectedPaths = this.protectedPaths();
    let ownDir: string;
    try {
      ownDir = realpathSync(agent.agentDir);
    } catch (error) {
      throw new AegisError('MANIFEST_INVALID', `the agent directory ${agent.agentDir} does not exist`, {
        cause: error,
        hint: 'run the agent from its agent.yaml again',
      });
    }
    const ownVerdict = checkMountSource(ownDir, protectedPaths, ownDir);
    if (ownVerdict.forbidden) {
      throw new AegisError(
        'POLICY_DENIED',
        `the agent directory ${ownDir} is or contains the protected path ${ownVerdict.protectedPath}; it would be visible at /agent`,
        { hint: 'keep each agent in a directory of its own that holds only the agent' },
      );
    }
    // Bound by root (runc), so only the directory itself must be readable by the agent's uid.
    const own = openMountSource(ownDir, { user: this.user, what: 'the agent directory', searchFrom: ownDir });
    held.push(own.fd);
    checks.push({
      target: '/agent',
      what: 'the agent directory',
      path: own.path,
      dev: own.stat.dev,
      ino: own.stat.ino,
    });
    const mounts = [bind(own.path, '/agent', true)];
    for (const mount of agent.mounts) {
      const what = mount.manifestPath;
      let real: string;
      try {
        real = realpathSync(mount.source);
      } catch (error) {
        throw new AegisError('MANIFEST_INVALID', `${what}: host path ${mount.source} does not exist`, {
          cause: error,
          problems: [{ path: what, message: `host path ${mount.source} does not exist` }],
          hint: 'create it first, or remove the entry',
        });
      }
      const verdict = checkMountSource(real, protectedPaths, ownDir);
      if (verdict.forbidden) {
        throw new AegisError(
          'POLICY_DENIED',
          `${what}: ${mount.source} may never be mounted into a container — it is or contains the protected path ${verdict.protectedPath}`,
          {
            problems: [{ path: what, message: `protected host path ${verdict.protectedPath}` }],
            hint: 'grant a dedicated directory that holds only what the agent needs',
          },
        );
      }
      const opened = openMountSource(real, {
        user: this.user,
        what,
        searchFrom: isWithin(real, ownDir) ? ownDir : real,
      });
      held.push(opened.fd);
      const access = mount.writable ? 'write' : 'read';
      if (!userMay(opened.stat, this.user, access)) {
        throw new AegisError(
          'RUNTIME_UNAVAILABLE',
          `${what}: the agent's uid ${this.user.uid} cannot ${access} ${real}: it is mode ${(opened.stat.mode & 0o777).toString(8)}, owner uid ${opened.stat.uid}`,
          {
            hint: mount.writable
              ? `give it to the sandbox user: chown ${this.user.uid} ${real}`
              : `make it readable: chmod o+r${opened.stat.isDirectory() ? 'x' : ''} ${real}`,
          },
        );
      }
      checks.push({
        target: mount.target,
        what,
        path: opened.path,
        dev: opened.stat.dev,
        ino: opened.stat.ino,
      });
      mounts.push(bind(opened.path, mount.target, !mount.writable));
    }
    return mounts;
  }

  /** The read-only host view of the default rootfs: /usr, the /etc files interpreters need, Node. */
  private hostViewMounts(agent: CompiledAgent, live = false): BindMount[] {
    const mounts = [bind('/usr', '/usr', true)];
    if (!this.mergedUsr) {
      for (const dir of ['/bin', '/lib', '/lib64', '/sbin'])
        if (existsSync(dir)) mounts.push(bind(dir, dir, true));
    }
    for (const file of presentEtcFiles()) mounts.push(bind(file, file, true));
    const { language, command } = agent.runtime;
    if (live || language === 'node' || command?.[0] === 'node' || command?.[0] === NODE_INSIDE) {
      mounts.push(bind(realpathSync(this.options.nodeBinary ?? process.execPath), NODE_INSIDE, true));
    }
    return mounts;
  }

  private ensureScratchRoot(): void {
    mkdirSync(this.scratchRoot, { recursive: true, mode: 0o711 });
    chmodSync(this.scratchRoot, 0o711);
  }

  async spawn(spec: InstanceSpec): Promise<InstanceId> {
    const { agent, executionId } = spec;
    if (agent.isolation !== 'docker') {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `the docker runtime got an agent with isolation "${agent.isolation}"`,
      );
    }
    if (!EXECUTION_ID.test(executionId))
      throw new AegisError('USAGE', `execution id ${executionId} is not a plain id`);
    await this.requireEngine();
    const egress = agent.network.allow.length > 0;
    const live = spec.live === true;
    const {
      image,
      argv,
      custom,
      env: imageEnvList,
      binds: extraBinds,
    } = live
      ? await this.liveImageAndCommand(agent)
      : { ...(await this.imageAndCommand(agent)), binds: undefined };
    this.ensureScratchRoot();
    // Unique per start (container name, parent group): a fenced-out node and the node that took the execution over
    // may both start it against one dockerd, and the fenced one's teardown must not remove the new holder's.
    const spawnName = spawnNameFor(executionId);
    const dir = mkdtempSync(join(this.scratchRoot, `${spawnName}-`));
    const held: number[] = [];
    const checks: MountCheck[] = [];
    let containerId: string | undefined;
    let proxy: EgressProxy | undefined;
    let api: InSandboxApiServer | undefined;
    let stdio: Socket | undefined;
    let cgroup: SandboxCgroup | undefined;
    try {
      const inputFile = join(dir, 'input.json');
      const outputFile = join(dir, 'output.json');
      writeFileSync(inputFile, '', { mode: 0o644 });
      const hostsFile = join(dir, 'hosts');
      writeFileSync(hostsFile, generatedEtc(this.user.uid, this.user.gid)['/etc/hosts']!, { mode: 0o644 });
      writeFileSync(outputFile, '', { mode: 0o600 });
      chownSync(outputFile, this.user.uid, this.user.gid);
      const mounts = [
        ...(custom ? [] : this.hostViewMounts(agent, live)),
        ...(live ? [bind(LIVE_AGENT_SOURCE, LIVE_AGENT_INSIDE, true)] : []),
        ...Object.entries(extraBinds ?? {}).map(([source, target]) => bind(source, target, true)),
        // The in-sandbox SDKs, importable without installation (PYTHONPATH, /node_modules): read-only.
        ...(spec.inSandboxApi
          ? Object.entries(SDK_FILES).map(([file, target]) => bind(file, target, true))
          : []),
        ...this.grantMounts(agent, held, checks),
        // Docker would mount a hosts file of its own (without localhost under NetworkMode none): the shared one.
        bind(hostsFile, '/etc/hosts', true),
        bind(inputFile, '/run/aegis/input.json', true),
        bind(outputFile, '/run/aegis/output.json', false),
      ];
      const { limits } = agent;
      // Limits on AEGIS's parent group (counted there, cgroups.ts), or Docker's own when it cannot nest them.
      let limitConfig: Record<string, unknown> = {
        PidsLimit: limits.pids,
        NanoCpus: limits.cpuMillis * 1_000_000,
      };
      if (await this.engineUsesCgroupfs()) {
        // A live sandbox's group also gets the v1 freezer (pause/resume freeze it, and runc's group nested in it).
        const parent = this.cgroups.create(spawnName, limits, { freezer: live });
        cgroup = parent.cgroup;
        limitConfig = { CgroupParent: parent.cgroupParent };
      }
      const tmpfsSize = `size=${limits.diskBytes}`;
      const body = {
        Image: image,
        Entrypoint: [custom ? '/bin/sh' : '/usr/bin/sh'],
        Cmd: ['-c', GATE_SCRIPT, 'aegis-gate', ...argv],
        Env: Object.entries(
          imageEnv(
            imageEnvList,
            sandboxEnv(agent, executionId, {
              egress,
              secretEnv: spec.secrets?.env ?? {},
              ...(spec.inSandboxApi ? { apiEnv: spec.inSandboxApi.env } : {}),
            }),
          ),
        ).map(([key, value]) => `${key}=${value}`),
        User: `${this.user.uid}:${this.user.gid}`,
        WorkingDir: '/agent',
        Hostname: 'aegis',
        Labels: {
          [LABEL_RUNTIME]: 'docker',
          [LABEL_EXECUTION]: executionId,
          [LABEL_SPAWN]: spawnName,
          [LABEL_OWNER]: JSON.stringify(this.options.identity.current()),
          [LABEL_SCRATCH]: dir,
        },
        AttachStdin: true,
        AttachStdout: true,
        AttachStderr: true,
        OpenStdin: true,
        StdinOnce: true,
        Tty: false,
        NetworkDisabled: true,
        HostConfig: {
          NetworkMode: 'none',
          ReadonlyRootfs: true,
          CapDrop: ['ALL'],
          SecurityOpt: ['no-new-privileges', `seccomp=${this.seccomp}`],
          Privileged: false,
          ...limitConfig,
          Memory: limits.memoryBytes,
          MemorySwap: limits.memoryBytes,
          IpcMode: 'private',
          ShmSize: Math.min(limits.diskBytes, 64 * 1024 * 1024),
          Tmpfs: {
            '/workspace': `rw,nosuid,nodev,${tmpfsSize},mode=0700,uid=${this.user.uid},gid=${this.user.gid}`,
            '/tmp': `rw,nosuid,nodev,${tmpfsSize},mode=1777`,
          },
          Mounts: mounts,
          LogConfig: { Type: 'none', Config: {} },
          RestartPolicy: { Name: 'no' },
          AutoRemove: false,
        },
      };
      const created = await this.engine.call(
        'POST',
        `/containers/create?name=aegis-${encodeURIComponent(spawnName)}`,
        body,
        { what: 'creating the container' },
      );
      containerId = (created.body as { Id: string }).Id;
      stdio = await this.engine.attach(containerId);
      const route: Route = { executionId, onNetworkDecision: spec.onNetworkDecision };
      const feed: Feed = { early: [], onChunk: undefined };
      const streamsEnded = demux(stdio, (which, data) => {
        if (feed.onChunk) feed.onChunk(which, data);
        else feed.early.push({ which, data });
      });
      await this.engine.call('POST', `/containers/${containerId}/start`, undefined, {
        what: 'starting the container',
      });
      const inspected = await this.engine.call('GET', `/containers/${containerId}/json`);
      const pid = (inspected.body as { State: { Pid: number } }).State.Pid;
      // The gate holds the agent: check that every grant mounted is the object that was checked.
      if (pid) verifyMounts(pid, checks);
      // …and move its one process into AEGIS's group: the kernel counts a refused fork (pids.events) in the group
      // of the process that forked, so the agent must fork there, not in runc's group that vanishes at exit.
      if (pid && cgroup) cgroup.join(pid);
      for (const fd of held.splice(0)) closeSync(fd);
      if (egress) {
        if (!pid) {
          throw new AegisError(
            'RUNTIME_UNAVAILABLE',
            'the container ended before its egress proxy could be opened',
            {
              hint: custom
                ? 'the image needs /bin/sh (the gate that holds the agent until AEGIS is ready)'
                : '',
            },
          );
        }
        proxy = await openEgressInNetns(agent, executionId, spec.secrets, route, {
          pid,
          ...(this.options.nsenterPath ? { nsenterPath: this.options.nsenterPath } : {}),
          timeoutMs: SPAWN_DEADLINE_MS,
        });
      }
      if (spec.inSandboxApi) {
        // Same way as the egress listener, with or without egress: the container's lo:3129 is served from this
        // process, before the gate lets the agent run.
        if (!pid) {
          throw new AegisError(
            'RUNTIME_UNAVAILABLE',
            'the container ended before its in-sandbox API could be opened',
          );
        }
        api = await openInSandboxApiInNetns(spec.inSandboxApi.handler, {
          pid,
          ...(this.options.nsenterPath ? { nsenterPath: this.options.nsenterPath } : {}),
          timeoutMs: SPAWN_DEADLINE_MS,
        });
      }
      const id: InstanceId = `dkr_${spawnName}`;
      const instance: Instance = {
        id,
        containerId,
        route,
        bound: false,
        agent,
        state: 'warm',
        executed: false,
        dir,
        inputFile,
        outputFile,
        stdio,
        streamsEnded,
        feed,
        proxy,
        api,
        live,
        cgroup,
        spawnedAs: spawnName,
        killedBy: undefined,
      };
      this.instances.set(id, instance);
      return id;
    } catch (error) {
      for (const fd of held) closeSync(fd);
      stdio?.destroy();
      await proxy?.close().catch(() => {});
      await api?.close().catch(() => {});
      if (containerId) await this.removeContainer(containerId);
      if (cgroup) await this.cgroups.remove(spawnName, cgroup);
      rmSync(dir, { recursive: true, force: true });
      throw error;
    }
  }

  private async removeContainer(containerId: string): Promise<void> {
    await this.engine.request('DELETE', `/containers/${containerId}?force=1&v=1`).catch(() => undefined);
  }

  private kill(instance: Instance): void {
    // A paused live sandbox: SIGKILL acts once its freezer is thawed (cgroup kill thaws it).
    if (instance.live) instance.cgroup?.kill();
    void this.engine
      .request('POST', `/containers/${instance.containerId}/kill?signal=SIGKILL`)
      .catch(() => {});
  }

  async execute(id: InstanceId, task: TaskInput): Promise<TaskOutput> {
    const instance = this.instances.get(id);
    if (!instance) throw new AegisError('NOT_FOUND', `no instance ${id}`);
    if (this.status(id) === 'failed' && !instance.executed) {
      await this.terminate(id);
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `instance ${id} died before it was used; nothing of the task ran`,
        {
          hint: 'start another instance (a warm pool replaces dead instances on its own)',
        },
      );
    }
    if (instance.state !== 'warm') {
      throw new AegisError('USAGE', `instance ${id} is ${instance.state}; instances serve one execution`);
    }
    instance.state = 'hot';
    instance.executed = true;
    const { agent } = instance;
    const { log, lastStdoutLine } = createLogSink(task.onLog);
    const splitters = {
      stdout: lineSplitter((text) => log('stdout', text)),
      stderr: lineSplitter((text) => log('stderr', text)),
    };
    for (const chunk of instance.feed.early.splice(0)) splitters[chunk.which].push(chunk.data);
    instance.feed.onChunk = (which, data) => splitters[which].push(data);

    const inputJson = JSON.stringify(task.input ?? null);
    writeFileSync(instance.inputFile, inputJson);
    const timer = setTimeout(() => {
      instance.killedBy ??= 'timeout';
      this.kill(instance);
    }, agent.limits.timeoutMs);
    const onAbort = () => {
      instance.killedBy ??= 'abort';
      this.kill(instance);
    };
    if (task.signal?.aborted) onAbort();
    task.signal?.addEventListener('abort', onAbort, { once: true });
    const releasedAtMs = performance.timeOrigin + performance.now();
    instance.stdio.on('error', () => {});
    // The go line (the execution id, read by the gate), then the input; closing our side closes the agent's stdin.
    instance.stdio.end(`${instance.route.executionId}\n${inputJson}\n`);

    await instance.streamsEnded;
    const waited = await this.engine
      .request('POST', `/containers/${instance.containerId}/wait?condition=not-running`)
      .catch(() => undefined);
    clearTimeout(timer);
    task.signal?.removeEventListener('abort', onAbort);
    splitters.stdout.end();
    splitters.stderr.end();
    const finishedAtMs = performance.timeOrigin + performance.now();
    const inspected = await this.engine
      .request('GET', `/containers/${instance.containerId}/json`)
      .catch(() => undefined);
    const state = (inspected?.body as { State?: { ExitCode?: number; OOMKilled?: boolean } } | undefined)
      ?.State;
    const exitCode =
      (waited?.body as { StatusCode?: number } | undefined)?.StatusCode ?? state?.ExitCode ?? null;
    // The parent group's counters, read before it is removed; the daemon's OOMKilled covers the container's own.
    const stats = instance.cgroup?.stats();
    const oomKills = Math.max(stats?.oomKills ?? 0, state?.OOMKilled === true ? 1 : 0);
    const outcome = classifyOutcome({
      exitCode,
      signal: null,
      counters: {
        oomKills,
        pidsLimitHits: stats?.pidsLimitHits ?? 0,
        cpuThrottledPeriods: stats?.cpuThrottledPeriods ?? 0,
      },
      killedBy: instance.killedBy,
      limits: agent.limits,
    });
    const { status, limitsHit, violations } = outcome;
    const reason =
      status === 'failed' && exitCode === 125
        ? 'the container ended before the agent started'
        : outcome.reason;
    const output = collectOutput(instance.outputFile, lastStdoutLine(), task.onLog);
    instance.state = status === 'succeeded' ? 'terminated' : 'failed';
    await this.destroy(instance);
    return {
      status,
      exitCode,
      reason,
      output,
      limitsHit,
      violations,
      releasedAtMs,
      finishedAtMs,
    };
  }

  private async destroy(instance: Instance): Promise<void> {
    this.instances.delete(instance.id);
    try {
      instance.stdio.destroy();
      await instance.proxy?.close();
      await instance.api?.close();
      await this.removeContainer(instance.containerId);
      if (instance.cgroup) await this.cgroups.remove(instance.spawnedAs, instance.cgroup);
    } finally {
      rmSync(instance.dir, { recursive: true, force: true });
    }
  }

  async terminate(id: InstanceId): Promise<void> {
    const instance = this.instances.get(id);
    if (!instance) return;
    instance.killedBy ??= 'terminate';
    if (!instance.executed) {
      instance.executed = true;
      instance.state = 'terminated';
      await this.destroy(instance);
      return;
    }
    // Hot: the execute() waiting on it classifies the outcome and destroys it.
    this.kill(instance);
  }

  /**
   * Starts a live instance's exec agent (spawned with `live: true`): the go line to the gate, then the framed
   * channel over the attach stream (stdin raw; stdout demultiplexed, stderr dropped). Hot until it ends.
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
    const output = new PassThrough();
    for (const chunk of instance.feed.early.splice(0)) if (chunk.which === 'stdout') output.write(chunk.data);
    instance.feed.onChunk = (which, data) => {
      if (which === 'stdout') output.write(data);
    };
    const exited = instance.streamsEnded.then(async () => {
      output.end();
      const waited = await this.engine
        .request('POST', `/containers/${instance.containerId}/wait?condition=not-running`)
        .catch(() => undefined);
      const code = (waited?.body as { StatusCode?: number } | undefined)?.StatusCode;
      return { code: typeof code === 'number' ? code : null, signal: null };
    });
    void exited
      .then(async () => {
        if (this.instances.has(id)) {
          instance.state = 'terminated';
          await this.destroy(instance);
        }
      })
      .catch(() => {});
    instance.stdio.on('error', () => {});
    instance.stdio.write(`${instance.route.executionId}\n`);
    const { cgroup, containerId } = instance;
    return {
      input: instance.stdio,
      output,
      exited,
      stats: () =>
        cgroup?.stats() ?? {
          oomKills: 0,
          pidsLimitHits: 0,
          cpuThrottledPeriods: 0,
          memoryPeakBytes: null,
          cpuUsageNs: null,
        },
      // AEGIS's parent group holds the agent (cgroupfs driver); else Docker's own pause (its freezer).
      freeze: async () => {
        if (cgroup) await cgroup.freeze();
        else
          await this.engine.call('POST', `/containers/${containerId}/pause`, undefined, { what: 'pausing' });
      },
      thaw: async () => {
        if (cgroup) await cgroup.thaw();
        else
          await this.engine.call('POST', `/containers/${containerId}/unpause`, undefined, {
            what: 'resuming',
          });
      },
      kill: () => {
        instance.killedBy ??= 'terminate';
        if (!cgroup) void this.engine.request('POST', `/containers/${containerId}/unpause`).catch(() => {});
        this.kill(instance);
      },
    };
  }

  /** LiveRuntime: attaches a live instance and opens its channel. */
  async openLive(id: InstanceId, policy: LivePathPolicy): Promise<LiveSession> {
    return openLiveSession(this.attach(id), policy);
  }

  bind(id: InstanceId, binding: InstanceBinding): void {
    // The id travels to the container's gate on stdin: only a plain one.
    if (!EXECUTION_ID.test(binding.executionId)) {
      throw new AegisError('USAGE', `execution id ${binding.executionId} is not a plain id`);
    }
    bindWarm(id, this.instances.get(id), this.status(id), binding);
  }

  async setNetworkPolicy(executionId: string, policy: NetworkPolicy): Promise<boolean> {
    return setPolicyOfExecution(this.instances.values(), executionId, policy);
  }

  async terminateAll(): Promise<void> {
    await Promise.all([...this.instances.keys()].map((id) => this.terminate(id)));
  }

  /**
   * Removes containers (and their scratch dirs) whose orchestrator is gone: every container labelled by this
   * runtime, made with this runtime's scratch root, whose `aegis.node` owner is not alive. Returns their execution
   * ids. No engine: nothing to reap. The scratch root scopes it: two AEGIS homes (or test suites) sharing one
   * dockerd never reap each other's containers.
   */
  async reapOrphans(): Promise<readonly string[]> {
    if (!(await this.engine.ping())) return [];
    const filters = encodeURIComponent(JSON.stringify({ label: [`${LABEL_RUNTIME}=docker`] }));
    const listed = await this.engine.call('GET', `/containers/json?all=1&filters=${filters}`);
    const reaped: string[] = [];
    for (const container of listed.body as { Id: string; Labels: Record<string, string> }[]) {
      let owner: { host: string; pid: number; startTicks: number } | undefined;
      try {
        owner = JSON.parse(container.Labels[LABEL_OWNER] ?? '') as typeof owner;
      } catch {
        owner = undefined;
      }
      const scratch = container.Labels[LABEL_SCRATCH];
      if (!scratch || !isWithin(scratch, this.scratchRoot) || scratch === this.scratchRoot) continue;
      if (owner && this.options.identity.isAlive(owner)) continue;
      const execution = container.Labels[LABEL_EXECUTION];
      // The parent group is named by the start (`aegis.spawn`); containers of older versions, by the execution.
      const spawned = container.Labels[LABEL_SPAWN];
      const group =
        spawned !== undefined
          ? SPAWN_NAME.test(spawned)
            ? spawned
            : undefined
          : execution !== undefined && EXECUTION_ID.test(execution)
            ? execution
            : undefined;
      try {
        // A live sandbox left paused: its frozen processes die only once thawed.
        if (group) thawContainerParent(this.cgroupLayout, group);
        await this.removeContainer(container.Id);
        if (group) await removeContainerParents(this.cgroupLayout, group);
        rmSync(scratch, { recursive: true, force: true });
        reaped.push(execution ?? container.Id);
      } catch {
        // One container that will not go does not keep the others; the next start retries it.
      }
    }
    return reaped;
  }
}
