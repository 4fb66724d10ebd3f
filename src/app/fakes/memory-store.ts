/**
 * In-memory ExecutionStore for use-case tests. Behaves like the real stores as far as the shared contract
 * (test/contracts/execution-store.contract.ts) can tell: values go in and come out as JSON would (so `undefined`
 * input/output reads back as null), and every record handed in or out is a copy.
 */
import { AegisError } from '../../domain/errors.ts';
import { type ExecutionRecord, isTerminal, type LogLine } from '../../domain/execution.ts';
import type { ExecutionPatch, ExecutionStore, ListExecutionsQuery, NewLogLine } from '../ports.ts';

const DEFAULT_LIST_LIMIT = 50;
const MAX_LIST_LIMIT = 1000;
/** Every ExecutionPatch field; the type check fails here when the port gains one. */
const PATCHABLE = Object.keys({
  status: true,
  exitCode: true,
  reason: true,
  output: true,
  violations: true,
  startedAt: true,
  finishedAt: true,
  durationMs: true,
} satisfies Record<keyof ExecutionPatch, true>) as (keyof ExecutionPatch)[];

export class MemoryExecutionStore implements ExecutionStore {
  readonly #executions = new Map<string, ExecutionRecord>();
  readonly #logs = new Map<string, LogLine[]>();

  async createExecution(record: ExecutionRecord): Promise<void> {
    if (this.#executions.has(record.id)) {
      throw new AegisError('INTERNAL', `execution ${record.id} already exists`);
    }
    this.#executions.set(record.id, stored(record));
  }

  async updateExecution(id: string, patch: ExecutionPatch): Promise<ExecutionRecord> {
    const current = this.#executions.get(id);
    if (current === undefined)
      throw new AegisError('NOT_FOUND', `no execution with id ${id}`, { details: { id } });
    // Only the patchable fields, and a field whose value is undefined is "not given" — as in the SQL stores.
    const given: Record<string, unknown> = {};
    for (const key of PATCHABLE) if (patch[key] !== undefined) given[key] = patch[key];
    const next = stored({ ...current, ...given });
    this.#executions.set(id, next);
    return structuredClone(next);
  }

  async getExecution(id: string): Promise<ExecutionRecord | undefined> {
    const record = this.#executions.get(id);
    return record === undefined ? undefined : structuredClone(record);
  }

  async listExecutions(query: ListExecutionsQuery = {}): Promise<readonly ExecutionRecord[]> {
    const matching = [...this.#executions.values()].filter(
      (r) =>
        (query.agent === undefined || r.agent.name === query.agent) &&
        (query.status === undefined || r.status === query.status),
    );
    return matching
      .sort((a, b) => compare(b.createdAt, a.createdAt) || compare(b.id, a.id))
      .slice(0, listLimit(query.limit))
      .map((r) => structuredClone(r));
  }

  /** Oldest first. */
  async listUnfinished(): Promise<readonly ExecutionRecord[]> {
    return [...this.#executions.values()]
      .filter((r) => !isTerminal(r.status))
      .sort((a, b) => compare(a.createdAt, b.createdAt) || compare(a.id, b.id))
      .map((r) => structuredClone(r));
  }

  async appendLogs(executionId: string, lines: readonly NewLogLine[]): Promise<void> {
    if (lines.length === 0) return;
    let log = this.#logs.get(executionId);
    if (log === undefined) {
      log = [];
      this.#logs.set(executionId, log);
    }
    for (const line of lines)
      log.push({ seq: log.length + 1, ts: line.ts, stream: line.stream, text: line.text });
  }

  /** Without `limit`, every line after `afterSeq` (default 0: all of them). */
  async readLogs(
    executionId: string,
    options: { afterSeq?: number; limit?: number } = {},
  ): Promise<readonly LogLine[]> {
    const afterSeq = options.afterSeq ?? 0;
    const after = (this.#logs.get(executionId) ?? []).filter((line) => line.seq > afterSeq);
    const limited =
      options.limit === undefined ? after : after.slice(0, Math.max(0, Math.trunc(options.limit)));
    return limited.map((line) => ({ ...line }));
  }

  async close(): Promise<void> {}
}

/** A private copy that holds exactly what a JSON column would: `undefined` input/output become null. */
function stored(record: ExecutionRecord): ExecutionRecord {
  const copy = JSON.parse(JSON.stringify(record)) as ExecutionRecord;
  return { ...copy, input: copy.input ?? null, output: copy.output ?? null };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function listLimit(limit: number | undefined): number {
  if (limit === undefined || Number.isNaN(limit)) return DEFAULT_LIST_LIMIT;
  return Math.min(MAX_LIST_LIMIT, Math.max(0, Math.trunc(limit)));
}
