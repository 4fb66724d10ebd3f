/**
 * Outcome classification: how a run ended (exit status, signal, cgroup counters, who killed it) → the execution's
 * terminal status, reason, limits hit and violations. Pure, so every runtime (sandbox, docker, gvisor, a microVM)
 * reports the same facts the same way, and the rules are unit-tested without root.
 */
import type { LimitName, TerminalStatus, Violation } from '../execution.ts';
import { formatBytes } from '../units.ts';

/** Who killed the instance, if AEGIS did: the wall-clock timer, the caller's abort, or terminate(). */
export type KilledBy = 'timeout' | 'abort' | 'terminate';

/** Kernel counters read from the instance's cgroup (or the runtime's equivalent) after the run. */
export interface LimitCounters {
  /** Processes the OOM killer killed. */
  readonly oomKills: number;
  /** Process/thread creations refused at the pids limit. */
  readonly pidsLimitHits: number;
  /** CFS periods in which the group was throttled. */
  readonly cpuThrottledPeriods: number;
}

/** Everything a runtime observed about how its instance ended. */
export interface RunFacts {
  /** Exit code of the instance's top process; null when it died of a signal. */
  readonly exitCode: number | null;
  /** The signal that ended the top process, when it did. */
  readonly signal: string | null;
  readonly counters: LimitCounters;
  readonly killedBy: KilledBy | undefined;
  /** The limits the agent ran under (for the messages). */
  readonly limits: { readonly memoryBytes: number; readonly pids: number; readonly timeoutMs: number };
  /**
   * The runtime's own report that the instance never started because a mount source was replaced during set-up
   * (bubblewrap's "Race condition binding dirfd" line, say). Only consulted for exit code 1.
   */
  readonly mountRace?: string | undefined;
}

export interface Outcome {
  readonly status: TerminalStatus;
  readonly exitCode: number | null;
  readonly reason: string | null;
  readonly limitsHit: readonly LimitName[];
  readonly violations: readonly Violation[];
}

const SIGNAL_NAMES: Readonly<Record<number, string>> = {
  6: 'SIGABRT',
  9: 'SIGKILL',
  11: 'SIGSEGV',
  15: 'SIGTERM',
  25: 'SIGXFSZ',
};

/** `SIGKILL` for exit code 137 (a shell's 128 + signal), undefined for codes that name no known signal. */
export function signalNameOfExitCode(code: number): string | undefined {
  return SIGNAL_NAMES[code - 128];
}

export function classifyOutcome(facts: RunFacts): Outcome {
  const { counters, killedBy, limits, exitCode, signal } = facts;
  const limitsHit: LimitName[] = [];
  const violations: Violation[] = [];
  if (counters.oomKills > 0) {
    limitsHit.push('memory');
    violations.push({
      kind: 'limit',
      rule: 'memory',
      count: counters.oomKills,
      message: `memory: ${counters.oomKills} process(es) killed for exceeding ${formatBytes(limits.memoryBytes)} (spec.security.resources.memory)`,
    });
  }
  if (counters.pidsLimitHits > 0) {
    limitsHit.push('pids');
    violations.push({
      kind: 'limit',
      rule: 'pids',
      count: counters.pidsLimitHits,
      message: `pids: ${counters.pidsLimitHits} process/thread creation(s) refused at the limit of ${limits.pids} (spec.security.resources.pids)`,
    });
  }
  if (counters.cpuThrottledPeriods > 0) limitsHit.push('cpu');
  if (killedBy === 'timeout') {
    limitsHit.push('timeout');
    violations.push({
      kind: 'limit',
      rule: 'timeout',
      message: `timeout: still running after ${limits.timeoutMs} ms (spec.security.resources.timeout); the whole process tree was killed`,
    });
  }

  let status: TerminalStatus;
  let reason: string | null = null;
  if (killedBy === 'timeout') {
    status = 'timeout';
    reason = `wall-clock limit of ${limits.timeoutMs} ms reached`;
  } else if (killedBy === 'abort' || killedBy === 'terminate') {
    status = 'killed';
    reason = 'cancelled';
  } else if (counters.oomKills > 0 && exitCode !== 0) {
    status = 'oom';
    reason = `out of memory (limit ${formatBytes(limits.memoryBytes)})`;
  } else if (exitCode === 0) {
    status = 'succeeded';
  } else {
    status = 'failed';
    const signalName = exitCode !== null && exitCode > 128 ? signalNameOfExitCode(exitCode) : undefined;
    if (facts.mountRace !== undefined && exitCode === 1) {
      reason = `not started: a mount source was moved or replaced while the sandbox was being set up (${facts.mountRace.trim()}); bubblewrap refused it`;
    } else if (signal) reason = `sandbox terminated by ${signal}`;
    else if (signalName) reason = `exit code ${exitCode} (the agent was killed by ${signalName})`;
    else reason = `exit code ${exitCode}`;
  }
  return { status, exitCode, reason, limitsHit, violations };
}
