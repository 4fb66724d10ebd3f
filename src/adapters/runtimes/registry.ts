/**
 * One `Runtime` in front of several, keyed by `agent.isolation`: spawn picks the agent's runtime, every other call
 * goes to the runtime that owns the instance. Composition roots build it from the runtimes this node offers; an
 * isolation nobody here provides is refused with RUNTIME_UNAVAILABLE naming the ones that are.
 */
import type {
  InstanceBinding,
  InstanceId,
  InstanceSpec,
  InstanceState,
  Runtime,
  TaskInput,
  TaskOutput,
} from '../../app/ports.ts';
import { AegisError } from '../../domain/errors.ts';
import type { Isolation } from '../../domain/manifest/schema.ts';
import type { NetworkPolicy } from '../../domain/policy/network-rules.ts';

export class RuntimeRegistry implements Runtime {
  /** The default runtime's name (what use-cases record when they ask `runtime.name`). */
  readonly name: string;
  private readonly runtimes: ReadonlyMap<Isolation, Runtime>;
  private readonly owners = new Map<InstanceId, Runtime>();

  constructor(runtimes: Partial<Record<Isolation, Runtime>>, defaultIsolation: Isolation = 'sandbox') {
    this.runtimes = new Map(Object.entries(runtimes) as [Isolation, Runtime][]);
    this.name = this.runtimes.get(defaultIsolation)?.name ?? defaultIsolation;
  }

  /** The runtime for an isolation, or RUNTIME_UNAVAILABLE naming those this node has. */
  for(isolation: Isolation): Runtime {
    const runtime = this.runtimes.get(isolation);
    if (runtime) return runtime;
    const offered = [...this.runtimes.keys()].join(', ');
    throw new AegisError('RUNTIME_UNAVAILABLE', `isolation "${isolation}" is not available on this node`, {
      hint: `use one of: ${offered} (spec.isolation, or --isolation with aegis run)`,
    });
  }

  async spawn(spec: InstanceSpec): Promise<InstanceId> {
    const runtime = this.for(spec.agent.isolation);
    const id = await runtime.spawn(spec);
    this.owners.set(id, runtime);
    return id;
  }

  private owner(id: InstanceId): Runtime {
    const runtime = this.owners.get(id);
    if (!runtime) throw new AegisError('NOT_FOUND', `no instance ${id}`);
    return runtime;
  }

  async execute(id: InstanceId, task: TaskInput): Promise<TaskOutput> {
    try {
      return await this.owner(id).execute(id, task);
    } finally {
      this.owners.delete(id);
    }
  }

  async terminate(id: InstanceId): Promise<void> {
    const runtime = this.owners.get(id);
    if (!runtime) return;
    await runtime.terminate(id);
    const state = runtime.status(id);
    if (state === undefined || state === 'terminated') this.owners.delete(id);
  }

  status(id: InstanceId): InstanceState | undefined {
    return this.owners.get(id)?.status(id);
  }

  bind(id: InstanceId, binding: InstanceBinding): void {
    const runtime = this.owner(id);
    if (!runtime.bind) throw new AegisError('USAGE', `the ${runtime.name} runtime has no warm pools`);
    runtime.bind(id, binding);
  }

  async reapOrphans(): Promise<readonly string[]> {
    const reaped: string[] = [];
    for (const runtime of this.runtimes.values()) reaped.push(...(await runtime.reapOrphans()));
    return reaped;
  }

  async setNetworkPolicy(executionId: string, policy: NetworkPolicy): Promise<boolean> {
    for (const runtime of this.runtimes.values()) {
      if (await runtime.setNetworkPolicy?.(executionId, policy)) return true;
    }
    return false;
  }
}
