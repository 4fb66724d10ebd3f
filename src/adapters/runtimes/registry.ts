/**
 * The runtime registry: every runtime AEGIS can run agents on, by name, with a cheap availability probe and a
 * factory; and `RuntimeRouter`, the one `Runtime` the composition roots hand to the use-cases, which sends each
 * agent to the runtime its `spec.isolation` names (`auto`: the strongest available that enforces every rule —
 * domain/runtime/capabilities.ts). `aegis doctor` lists the same probes.
 *
 * Adding a runtime (docker, gvisor) is one entry in `runtimeEntries()`: name, probe, create.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
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
} from '../../app/ports.ts';
import { AegisError } from '../../domain/errors.ts';
import type { CompiledAgent } from '../../domain/manifest/compiled.ts';
import type { NetworkPolicy } from '../../domain/policy/network-rules.ts';
import {
  type RuntimeAvailability,
  type RuntimeName,
  resolveIsolation,
} from '../../domain/runtime/capabilities.ts';
import { defaultDockerSocket } from './docker/engine.ts';
import { DockerRuntime } from './docker/runtime.ts';
import { GvisorRuntime } from './gvisor/runtime.ts';
import { detectCgroupLayout } from './sandbox/cgroups.ts';
import { SandboxRuntime, type SandboxRuntimeOptions } from './sandbox/runtime.ts';

/** What a runtime factory gets: the sandbox's options are the common ones (identity, protected paths, scratch). */
export type RuntimeFactoryOptions = SandboxRuntimeOptions & {
  /** Where custom images are unpacked (images/store.ts). @default $AEGIS_HOME/images from the composition root */
  readonly imageCacheDir?: string;
};

export interface RuntimeEntry {
  readonly name: RuntimeName;
  /** Cheap (no process start beyond a `--version`), side-effect free: can this host run it, and if not why. */
  probe(): RuntimeAvailability;
  create(options: RuntimeFactoryOptions): Runtime;
}

function onPath(binary: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    try {
      accessSync(`${dir}/${binary}`, constants.X_OK);
      return `${dir}/${binary}`;
    } catch {
      // next
    }
  }
  return undefined;
}

/** The sandbox runtime's quick probe (`aegis doctor` runs the thorough one: user namespaces, seccomp, --bind-fd). */
export function probeSandbox(): RuntimeAvailability {
  const name = 'sandbox';
  if (process.platform !== 'linux')
    return { name, available: false, reason: `needs Linux (this is ${process.platform})` };
  const bwrap = onPath('bwrap');
  if (!bwrap)
    return { name, available: false, reason: 'bubblewrap (bwrap) not found — npm run setup installs it' };
  if (spawnSync(bwrap, ['--version'], { stdio: 'ignore' }).status !== 0)
    return { name, available: false, reason: `${bwrap} --version failed` };
  if (detectCgroupLayout().mode === 'none')
    return { name, available: false, reason: 'no usable cgroup memory/pids/cpu controllers' };
  return { name, available: true, reason: `bubblewrap at ${bwrap}, cgroups usable` };
}

/** The docker runtime's quick probe: a unix socket where the Engine API should answer (spawn says if it does not). */
export function probeDocker(): RuntimeAvailability {
  const name = 'docker';
  const socket = defaultDockerSocket();
  try {
    if (statSync(socket).isSocket())
      return { name, available: true, reason: `Docker Engine socket at ${socket}` };
    return { name, available: false, reason: `${socket} is not a socket` };
  } catch {
    return {
      name,
      available: false,
      reason: `no Docker Engine socket at ${socket} — start dockerd (npm run setup -- --runtimes docker installs it) or set AEGIS_DOCKER_HOST`,
    };
  }
}

/** The gvisor runtime's quick probe: runsc on PATH, and root (runsc creates namespaces and cgroups itself). */
export function probeGvisor(): RuntimeAvailability {
  const name = 'gvisor';
  const runsc = onPath('runsc');
  if (!runsc) {
    return {
      name,
      available: false,
      reason: 'runsc not found — npm run setup -- --runtimes gvisor installs it (Debian package runsc)',
    };
  }
  if (process.getuid?.() !== 0) return { name, available: false, reason: 'runsc needs root here' };
  if (spawnSync(runsc, ['--version'], { stdio: 'ignore' }).status !== 0) {
    return { name, available: false, reason: `${runsc} --version failed` };
  }
  return { name, available: true, reason: `runsc at ${runsc}` };
}

/** A runtime this build does not contain yet: always unavailable, saying so. */
function notInThisBuild(name: RuntimeName, why: string): RuntimeEntry {
  return {
    name,
    probe: () => ({ name, available: false, reason: why }),
    create: () => {
      throw new AegisError('RUNTIME_UNAVAILABLE', `isolation: ${name} — ${why}`, {
        hint: 'run `aegis doctor` to see the runtimes this host offers',
      });
    },
  };
}

/** Every runtime, strongest last-resort order irrelevant here (capabilities.ts orders them). */
export function runtimeEntries(): RuntimeEntry[] {
  return [
    { name: 'sandbox', probe: probeSandbox, create: (options) => new SandboxRuntime(options) },
    // Registered at merge time by the docker/gvisor runtimes (one line each: name, probe, create).
    {
      name: 'gvisor',
      probe: probeGvisor,
      create: (options) =>
        new GvisorRuntime({
          identity: options.identity,
          ...(options.protectedPaths ? { protectedPaths: options.protectedPaths } : {}),
          ...(options.scratchRoot ? { scratchRoot: options.scratchRoot } : {}),
          ...(options.nodeBinary ? { nodeBinary: options.nodeBinary } : {}),
          ...(options.nsenterPath ? { nsenterPath: options.nsenterPath } : {}),
          ...(options.imageCacheDir ? { imageCacheDir: options.imageCacheDir } : {}),
        }),
    },
    {
      name: 'docker',
      probe: probeDocker,
      create: (options) =>
        new DockerRuntime({
          identity: options.identity,
          ...(options.protectedPaths ? { protectedPaths: options.protectedPaths } : {}),
          ...(options.nodeBinary ? { nodeBinary: options.nodeBinary } : {}),
          ...(options.nsenterPath ? { nsenterPath: options.nsenterPath } : {}),
          ...(options.imageCacheDir ? { imageCacheDir: options.imageCacheDir } : {}),
        }),
    },
    notInThisBuild('firecracker', 'no microVM runtime yet (docs/adr/0031-microvm-runtime-port.md)'),
  ];
}

/** A runtime chosen by placement rather than isolation: edge nodes (runtimes/edge/runtime.ts). */
export interface PlacedRuntime extends Runtime {
  places(agent: CompiledAgent): boolean;
  nameFor(agent: CompiledAgent): string;
  refreshPlacement?(): Promise<void>;
}

/**
 * The `Runtime` the use-cases see: routes spawn by `agent.isolation` and every later call by the instance it made.
 * Runtimes are created on first use (a host without dockerd never constructs the docker runtime).
 */
export class RuntimeRouter implements Runtime, LiveRuntime {
  readonly name = 'router';
  readonly #entries: ReadonlyMap<RuntimeName, RuntimeEntry>;
  readonly #options: RuntimeFactoryOptions;
  readonly #live = new Map<RuntimeName, Runtime>();
  readonly #owner = new Map<InstanceId, Runtime>();
  #availability: readonly RuntimeAvailability[] | undefined;
  /** Edge nodes (runtimes/edge/): an agent whose placement labels name an enrolled edge goes there. */
  #edge: PlacedRuntime | undefined;

  constructor(
    options: RuntimeFactoryOptions,
    entries: readonly RuntimeEntry[] = runtimeEntries(),
    prebuilt: readonly Runtime[] = [],
  ) {
    this.#options = options;
    this.#entries = new Map(entries.map((entry) => [entry.name, entry]));
    for (const runtime of prebuilt) this.#live.set(runtime.name as RuntimeName, runtime);
  }

  /** Each runtime's availability on this host (probed once per router; a prebuilt runtime is available). */
  availability(): readonly RuntimeAvailability[] {
    this.#availability ??= [...this.#entries.values()].map((entry) =>
      this.#live.has(entry.name)
        ? { name: entry.name, available: true, reason: 'configured' }
        : entry.probe(),
    );
    return this.#availability;
  }

  /** Sends agents placed (by `spec.placement.labels`) on an enrolled edge to `edge` (docs/adr/0108). */
  setEdge(edge: PlacedRuntime): void {
    this.#edge = edge;
  }

  /** What placement knows (the enrolled edges) is brought up to date with the store. */
  async refreshPlacement(): Promise<void> {
    await this.#edge?.refreshPlacement?.();
  }

  /** The runtime `agent` runs on here; RUNTIME_UNAVAILABLE / LIMIT_UNENFORCEABLE when none fits. */
  nameFor(agent: CompiledAgent): string {
    if (this.#edge?.places(agent)) return this.#edge.nameFor(agent);
    return resolveIsolation(agent.isolation, agent, this.availability());
  }

  /** The runtime named `name`, created on first use. */
  runtime(name: RuntimeName): Runtime {
    let runtime = this.#live.get(name);
    if (runtime === undefined) {
      const entry = this.#entries.get(name);
      if (entry === undefined) throw new AegisError('RUNTIME_UNAVAILABLE', `no runtime ${name} registered`);
      runtime = entry.create(this.#options);
      this.#live.set(name, runtime);
    }
    return runtime;
  }

  #of(id: InstanceId): Runtime {
    const runtime = this.#owner.get(id);
    if (runtime === undefined) throw new AegisError('NOT_FOUND', `no instance ${id}`);
    return runtime;
  }

  async spawn(spec: InstanceSpec): Promise<InstanceId> {
    const name = this.nameFor(spec.agent);
    const runtime =
      this.#edge !== undefined && name === this.#edge.name ? this.#edge : this.runtime(name as RuntimeName);
    const id = await runtime.spawn(spec);
    this.#owner.set(id, runtime);
    return id;
  }

  async execute(id: InstanceId, task: TaskInput): Promise<TaskOutput> {
    try {
      return await this.#of(id).execute(id, task);
    } finally {
      this.#owner.delete(id);
    }
  }

  async terminate(id: InstanceId): Promise<void> {
    const runtime = this.#owner.get(id);
    if (runtime === undefined) return;
    await runtime.terminate(id);
    if (runtime.status(id) === undefined) this.#owner.delete(id);
  }

  status(id: InstanceId): InstanceState | undefined {
    return this.#owner.get(id)?.status(id);
  }

  /** Live sandboxes on the runtime that spawned the instance (sandbox, docker, gvisor all hold them). */
  async openLive(id: InstanceId, policy: LivePathPolicy): Promise<LiveSession> {
    const runtime = this.#of(id) as Runtime & Partial<LiveRuntime>;
    if (typeof runtime.openLive !== 'function') {
      throw new AegisError('USAGE', `the ${runtime.name} runtime cannot hold live sandboxes`, {
        hint: 'deploy the agent with isolation: sandbox, docker or gvisor for live sandboxes',
      });
    }
    const session = await runtime.openLive(id, policy);
    void session.closed.then(() => this.#owner.delete(id));
    return session;
  }

  bind(id: InstanceId, binding: InstanceBinding): void {
    const runtime = this.#of(id);
    if (!runtime.bind)
      throw new AegisError('USAGE', `the ${runtime.name} runtime has no warm instances to bind`);
    runtime.bind(id, binding);
  }

  /** Reaps for every runtime available here (a crashed orchestrator may have used any of them). */
  async reapOrphans(): Promise<readonly string[]> {
    const reaped: string[] = [];
    for (const { name, available } of this.availability()) {
      if (!available) continue;
      reaped.push(...(await this.runtime(name).reapOrphans()));
    }
    return reaped;
  }

  async setNetworkPolicy(executionId: string, policy: NetworkPolicy): Promise<boolean> {
    for (const runtime of this.#live.values()) {
      if (await runtime.setNetworkPolicy?.(executionId, policy)) return true;
    }
    return false;
  }
}
