/** One run of an agent: its record, its outcome, its log lines. */
import type { AuthorityCeiling } from './swarm/authority.ts';

/** Terminal outcomes, named precisely. */
export type TerminalStatus = 'succeeded' | 'failed' | 'timeout' | 'oom' | 'killed';
/**
 * created → queued → running → terminal. `aegis run` goes created → running directly (no queue); the server
 * persists every accepted execution as `queued` before it answers, so a crash never loses one.
 */
export type ExecutionStatus = 'created' | 'queued' | 'running' | TerminalStatus;

export const TERMINAL_STATUSES: readonly TerminalStatus[] = [
  'succeeded',
  'failed',
  'timeout',
  'oom',
  'killed',
];

/** The largest page of executions a client may ask for (REST `?limit=`, gRPC `limit`, `aegis ps --limit`). */
export const MAX_EXECUTIONS_PAGE = 1000;
/**
 * The most a store's `listExecutions` returns: one full page plus the one record that, when it comes back, says a
 * next page exists. A store capped at the page size itself would hide the next page of a full 1000-row page.
 */
export const MAX_EXECUTIONS_LIST = MAX_EXECUTIONS_PAGE + 1;

export function isTerminal(status: ExecutionStatus): status is TerminalStatus {
  return (TERMINAL_STATUSES as readonly string[]).includes(status);
}

/** Kernel limits a run can hit, reported by name. */
export type LimitName = 'memory' | 'pids' | 'timeout' | 'cpu' | 'disk';

/** A denied or contained attempt, phrased so a human or an LLM can act on it. */
export interface Violation {
  /** `budget`: an `spec.llm.budget` limit was used up (the execution ends with reason `budget`). */
  /** `tool`: a declarative agent's tool call refused by the tool gateway (counted per tool). */
  /** `swarm`: a spawn refused (canSpawn, maxChildren, maxDepth, budget.executions). */
  readonly kind: 'limit' | 'network' | 'filesystem' | 'budget' | 'tool' | 'swarm';
  readonly rule: string;
  readonly message: string;
  readonly count?: number;
}

export interface AgentRef {
  readonly name: string;
  /** `metadata.version` of the manifest. */
  readonly version: string;
  /** The deployed revision that ran (server executions only; `aegis run` of a local file has none). */
  readonly revision?: number;
}

export interface ExecutionRecord {
  readonly id: string;
  readonly agent: AgentRef;
  readonly runtime: string;
  readonly status: ExecutionStatus;
  readonly exitCode: number | null;
  /** Why a run ended the way it did, when the status alone doesn't say (`signal SIGSEGV`, `orchestrator-exited`). */
  readonly reason: string | null;
  readonly input: unknown;
  readonly output: unknown;
  readonly violations: readonly Violation[];
  readonly createdAt: string;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
  readonly durationMs: number | null;
  /** Process that owns the run; lets the next start tell a dead owner's runs from live ones. */
  readonly owner: OwnerRef | null;
  /** What the run consumed through AEGIS (set when it ends; `llm` only for agents with `spec.llm`). */
  readonly usage?: ExecutionUsage;
  /** Labels a node must carry to claim it (`spec.placement.labels` at submit); absent: any node. */
  readonly placement?: Readonly<Record<string, string>>;
  /** Claim order: higher first (judges, which a running execution waits for), then oldest. @default 0 */
  readonly priority?: number;
  /** The node that holds it (claimed it last); absent when none does (queued, or `aegis run`). */
  readonly node?: string;
  /** Swarm: the execution that spawned this one (`aegis.swarm.spawn`); absent (null in the stores) for a root. */
  readonly parentId?: string;
  /** Swarm: the root of this execution's tree — the swarm id the bus and locks are scoped by; absent for a root. */
  readonly rootId?: string;
  /** Swarm: the most a child may hold (its parent's authority), applied to its manifest when it runs (ADR 0140). */
  readonly authority?: AuthorityCeiling;
}

/** The swarm an execution belongs to: its root's id (a root is its own swarm). */
export function swarmIdOf(record: Pick<ExecutionRecord, 'id' | 'rootId'>): string {
  return record.rootId ?? record.id;
}

/** Model calls made through the LLM gateway by one execution (`spec.llm`): calls that reached an upstream, tokens, USD. */
export interface LlmUsage {
  readonly calls: number;
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly usd: number;
}

/** Metered consumption of one execution, one key per metered service (tools, memory… slot in beside `llm`). */
export interface ExecutionUsage {
  readonly llm?: LlmUsage;
}

export interface OwnerRef {
  readonly host: string;
  readonly pid: number;
  /** Kernel start time of the owner process (clock ticks since boot) — guards against pid reuse. */
  readonly startTicks: number;
}

export type LogStream = 'stdout' | 'stderr' | 'system';

export interface LogLine {
  readonly seq: number;
  readonly ts: string;
  readonly stream: LogStream;
  readonly text: string;
}

/** The JSON shape `aegis run --output json` prints. */
export interface RunResult {
  readonly id: string;
  readonly agent: string;
  readonly status: ExecutionStatus;
  readonly exitCode: number | null;
  readonly output: unknown;
  readonly durationMs: number | null;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
  readonly violations: readonly Violation[];
  readonly reason?: string;
}

export function toRunResult(record: ExecutionRecord): RunResult {
  return {
    id: record.id,
    agent: `${record.agent.name}@${record.agent.version}`,
    status: record.status,
    exitCode: record.exitCode,
    output: record.output,
    durationMs: record.durationMs,
    startedAt: record.startedAt,
    finishedAt: record.finishedAt,
    violations: record.violations,
    ...(record.reason ? { reason: record.reason } : {}),
  };
}
