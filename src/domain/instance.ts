/**
 * The instance lifecycle (seed): Cold (deployed, no instance) → Warm (sandbox prepared — namespaces, mounts, cgroups,
 * seccomp, egress, and for Python/Node the interpreter started — waiting for its task) → Hot (executing) →
 * Terminated | Failed. An instance serves exactly one execution and is then destroyed: nothing crosses executions.
 * "Cold" is a property of an agent revision (no instance), not of an instance, so instances start Warm.
 */
import { AegisError } from './errors.ts';

export type LifecycleState = 'cold' | 'warm' | 'hot' | 'terminated' | 'failed';

const NEXT: Readonly<Record<LifecycleState, readonly LifecycleState[]>> = {
  cold: ['warm', 'failed'],
  warm: ['hot', 'terminated', 'failed'],
  hot: ['terminated', 'failed'],
  terminated: [],
  failed: [],
};

export function canTransition(from: LifecycleState, to: LifecycleState): boolean {
  return NEXT[from].includes(to);
}

/** Throws INTERNAL on a transition the lifecycle does not allow (e.g. Hot → Warm: reuse). */
export function assertTransition(from: LifecycleState, to: LifecycleState, what: string): void {
  if (!canTransition(from, to)) {
    throw new AegisError('INTERNAL', `${what}: ${from} → ${to} is not a lifecycle transition`, {
      details: { from, to },
    });
  }
}

/** Why a pooled instance ended without serving an execution. */
export type RetireReason = 'idle' | 'drained' | 'redeployed' | 'shutdown' | 'died' | 'over-capacity';
