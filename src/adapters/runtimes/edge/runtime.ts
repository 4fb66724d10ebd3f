/**
 * `EdgeRuntime`: the server-side `Runtime` of edge nodes. runAgent, the ledger, logs and limits work unchanged: spawn
 * places the execution on a connected (or returning) edge whose labels match `spec.placement.labels`, execute ships
 * the bundle and input there and resolves with the edge's result; logs and egress decisions arrive through the same
 * callbacks a local runtime calls (hub.ts). The edge enforces the limits with its own sandbox runtime.
 */
import type {
  InstanceId,
  InstanceSpec,
  InstanceState,
  Runtime,
  TaskInput,
  TaskOutput,
} from '../../../app/ports.ts';
import { assertEdgeCanRun, type EdgeNodeRecord } from '../../../domain/edge/records.ts';
import { AegisError } from '../../../domain/errors.ts';
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';
import type { EdgeHub } from './hub.ts';

export interface EdgeRuntimeOptions {
  readonly hub: EdgeHub;
  /** The deployed bundle of this execution's revision (digest and bytes), to ship to the edge. */
  readonly bundleFor: (executionId: string) => Promise<{ digest: string; bytes: Uint8Array }>;
  /** Every enrolled edge in the (shared) store: placement refreshes from it (edges enrolled through other servers). */
  readonly listEdges?: () => Promise<readonly EdgeNodeRecord[]>;
}

const PREFIX = 'edge:';

export class EdgeRuntime implements Runtime {
  readonly name = 'edge';
  readonly #options: EdgeRuntimeOptions;

  constructor(options: EdgeRuntimeOptions) {
    this.#options = options;
  }

  /** True when the agent's placement labels name an enrolled edge; then it runs there or nowhere. */
  places(agent: CompiledAgent): boolean {
    return this.#options.hub.places(agent);
  }

  /** Reloads the enrolled edges from the store, so `places` knows those enrolled through any server. */
  async refreshPlacement(): Promise<void> {
    if (this.#options.listEdges) this.#options.hub.load(await this.#options.listEdges());
  }

  nameFor(agent: CompiledAgent): string {
    assertEdgeCanRun(agent);
    return this.name;
  }

  async spawn(spec: InstanceSpec): Promise<InstanceId> {
    assertEdgeCanRun(spec.agent);
    if (spec.live || spec.prewarm || spec.secrets || spec.inSandboxApi) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        'edge nodes run one-shot executions only (no live sandboxes, warm pools, secrets or in-sandbox API)',
      );
    }
    this.#options.hub.assign(spec);
    return `${PREFIX}${spec.executionId}`;
  }

  async execute(id: InstanceId, task: TaskInput): Promise<TaskOutput> {
    const executionId = executionOf(id);
    let bundle: { digest: string; bytes: Uint8Array };
    try {
      bundle = await this.#options.bundleFor(executionId);
    } catch (error) {
      this.#options.hub.forget(executionId);
      throw error;
    }
    return this.#options.hub.execute(executionId, task, bundle);
  }

  async terminate(id: InstanceId): Promise<void> {
    const executionId = executionOf(id);
    if (this.#options.hub.status(executionId) === 'warm') this.#options.hub.forget(executionId);
    else this.#options.hub.cancel(executionId, 'terminated by the server');
  }

  status(id: InstanceId): InstanceState | undefined {
    return this.#options.hub.status(executionOf(id));
  }

  /** Edges reap their own orphans (after a restart, told by the server which executions to reap). */
  async reapOrphans(): Promise<readonly string[]> {
    return [];
  }
}

function executionOf(id: InstanceId): string {
  if (!id.startsWith(PREFIX)) throw new AegisError('NOT_FOUND', `no edge instance ${id}`);
  return id.slice(PREFIX.length);
}
