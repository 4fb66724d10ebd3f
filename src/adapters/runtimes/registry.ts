/**
 * The composition roots' runtime: one Runtime that hands each agent to the runtime named by its `isolation`
 * (`sandbox`, `docker`, …) and routes every later call on an instance to the runtime that spawned it. An isolation
 * with no runtime registered is refused at spawn with RUNTIME_UNAVAILABLE naming the ones that are.
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
import type { CompiledAgent } from '../../domain/manifest/compiled.ts';
import type { NetworkPolicy } from '../../domain/policy/network-rules.ts';

export class RuntimeRegistry implements Runtime {
  readonly name: string;
  private readonly byIsolation: ReadonlyMap<string, Runtime>;
  private readonly owners = new Map<InstanceId, Runtime>();

  /** `runtimes`: isolation → runtime; the first one is the default name (what `name` reports). */
  constructor(runtimes: Readonly<Record<string, Runtime>>) {
    this.byIsolation = new Map(Object.entries(runtimes));
    this.name = Object.keys(runtimes)[0] ?? 'none';
  }

  /** The runtime registered for `isolation`, if any. */
  get(isolation: string): Runtime | undefined {
    return this.byIsolation.get(isolation);
  }

  nameFor(agent: CompiledAgent): string {
    return this.byIsolation.get(agent.isolation)?.name ?? agent.isolation;
  }

  private forAgent(agent: CompiledAgent): Runtime {
    const runtime = this.byIsolation.get(agent.isolation);
    if (runtime) return runtime;
    throw new AegisError(
      'RUNTIME_UNAVAILABLE',
      `isolation "${agent.isolation}" is not available here (this orchestrator runs: ${[...this.byIsolation.keys()].join(', ')})`,
      { hint: `use isolation: ${[...this.byIsolation.keys()].join(' or ')}` },
    );
  }

  private owner(id: InstanceId): Runtime {
    const runtime = this.owners.get(id);
    if (!runtime) throw new AegisError('NOT_FOUND', `no instance ${id}`);
    return runtime;
  }

  async spawn(spec: InstanceSpec): Promise<InstanceId> {
    const runtime = this.forAgent(spec.agent);
    const id = await runtime.spawn(spec);
    this.owners.set(id, runtime);
    return id;
  }

  async execute(id: InstanceId, task: TaskInput): Promise<TaskOutput> {
    const runtime = this.owner(id);
    try {
      return await runtime.execute(id, task);
    } finally {
      if (runtime.status(id) === undefined) this.owners.delete(id);
    }
  }

  async terminate(id: InstanceId): Promise<void> {
    const runtime = this.owners.get(id);
    if (!runtime) return;
    await runtime.terminate(id);
    if (runtime.status(id) === undefined) this.owners.delete(id);
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
    const all = await Promise.all([...this.byIsolation.values()].map((runtime) => runtime.reapOrphans()));
    return all.flat();
  }

  async setNetworkPolicy(executionId: string, policy: NetworkPolicy): Promise<boolean> {
    for (const runtime of this.byIsolation.values()) {
      if (await runtime.setNetworkPolicy?.(executionId, policy)) return true;
    }
    return false;
  }
}
