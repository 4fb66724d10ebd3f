/** In-memory Runtime for use-case tests: scripted outcomes, no processes. */
import { AegisError } from '../../domain/errors.ts';
import type { NetworkPolicy } from '../../domain/policy/network-rules.ts';
import type {
  Clock,
  InstanceBinding,
  InstanceId,
  InstanceSpec,
  InstanceState,
  NetworkDecisionEvent,
  Runtime,
  TaskInput,
  TaskOutput,
} from '../ports.ts';
import { ManualClock } from './manual-clock.ts';

export interface FakeScript {
  /** Lines the "agent" prints, in order. */
  readonly logs?: readonly { stream: 'stdout' | 'stderr'; text: string }[];
  readonly outcome?: Partial<TaskOutput>;
  /** Make spawn() refuse with this error. */
  readonly refuse?: AegisError;
  /** Wait for abort instead of finishing (to test cancellation). */
  readonly hang?: boolean;
  /** Egress decisions the "agent" causes, delivered through the spec's onNetworkDecision during execute. */
  readonly network?: readonly NetworkDecisionEvent[];
}

export class FakeRuntime implements Runtime {
  readonly name = 'fake';
  /** Times reported in `releasedAtMs` / `finishedAtMs`. */
  readonly clock: Pick<Clock, 'now'>;
  readonly spawned: InstanceSpec[] = [];
  readonly states = new Map<InstanceId, InstanceState>();
  orphans: string[] = [];
  /** Policies set on live instances, by execution id. */
  readonly policies = new Map<string, NetworkPolicy>();
  script: FakeScript = {};
  /** Pool instances claimed by executions (`bind`), by instance id. */
  readonly bindings = new Map<InstanceId, InstanceBinding>();
  /** Instances that were executed, in order (an instance must never appear twice). */
  readonly executed: InstanceId[] = [];

  constructor(clock: Pick<Clock, 'now'> = new ManualClock()) {
    this.clock = clock;
  }

  async spawn(spec: InstanceSpec): Promise<InstanceId> {
    if (this.script.refuse) throw this.script.refuse;
    this.spawned.push(spec);
    const id = `fake_${spec.executionId}`;
    this.states.set(id, 'warm');
    return id;
  }

  async execute(id: InstanceId, task: TaskInput): Promise<TaskOutput> {
    if (this.states.get(id) !== 'warm') throw new AegisError('USAGE', `instance ${id} is not warm`);
    this.states.set(id, 'hot');
    this.executed.push(id);
    const releasedAtMs = this.clock.now();
    for (const line of this.script.logs ?? []) task.onLog(line.stream, line.text);
    const spec = this.spawned.find((s) => `fake_${s.executionId}` === id);
    const onDecision = this.bindings.get(id)?.onNetworkDecision ?? spec?.onNetworkDecision;
    for (const event of this.script.network ?? []) onDecision?.(event);
    if (this.script.hang) {
      await new Promise<void>((resolve) => {
        if (task.signal?.aborted) resolve();
        task.signal?.addEventListener('abort', () => resolve(), { once: true });
      });
      this.states.set(id, 'failed');
      return {
        status: 'killed',
        exitCode: null,
        reason: 'cancelled',
        output: null,
        limitsHit: [],
        violations: [],
        releasedAtMs,
        finishedAtMs: this.clock.now(),
      };
    }
    this.states.set(id, 'terminated');
    return {
      status: 'succeeded',
      exitCode: 0,
      reason: null,
      output: { echo: task.input },
      limitsHit: [],
      violations: [],
      releasedAtMs,
      finishedAtMs: releasedAtMs + 5,
      ...this.script.outcome,
    };
  }

  bind(id: InstanceId, binding: InstanceBinding): void {
    if (this.states.get(id) !== 'warm') throw new AegisError('USAGE', `instance ${id} is not warm`);
    this.bindings.set(id, binding);
  }

  /** Test hook: a Warm instance dies on its own (its sandbox was killed). */
  die(id: InstanceId): void {
    this.states.set(id, 'failed');
  }

  async terminate(id: InstanceId): Promise<void> {
    this.states.set(id, 'terminated');
  }

  status(id: InstanceId): InstanceState | undefined {
    return this.states.get(id);
  }

  async setNetworkPolicy(executionId: string, policy: NetworkPolicy): Promise<boolean> {
    const state = this.states.get(`fake_${executionId}`);
    if (state !== 'warm' && state !== 'hot') return false;
    this.policies.set(executionId, policy);
    return true;
  }

  async reapOrphans(): Promise<readonly string[]> {
    const reaped = this.orphans;
    this.orphans = [];
    return reaped;
  }
}
