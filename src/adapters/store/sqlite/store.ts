/**
 * The embedded execution store: one SQLite file (WAL) through Node's built-in `node:sqlite`.
 *
 * node:sqlite is synchronous; the methods are async only because the port is. Each call is a few prepared-statement
 * steps, so they stay cheap enough to run on the event loop.
 *
 * One process writes the logs of a given execution (its owner): log sequence numbers are counted in memory,
 * initialised from the database the first time an execution is seen.
 */
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import type { ExecutionPatch, ExecutionStore, ListExecutionsQuery, NewLogLine } from '../../../app/ports.ts';
import { AegisError } from '../../../domain/errors.ts';
import {
  type ExecutionRecord,
  type ExecutionStatus,
  isTerminal,
  type LogLine,
  type LogStream,
  type OwnerRef,
  type Violation,
} from '../../../domain/execution.ts';
import { migrate } from './migrations.ts';

const DEFAULT_LIST_LIMIT = 50;
const MAX_LIST_LIMIT = 1000;
const UNFINISHED_STATUSES: readonly ExecutionStatus[] = ['created', 'running'];

const COLUMNS =
  'id, agent_name, agent_version, runtime, status, exit_code, reason, input_json, output_json, violations_json, ' +
  'created_at, started_at, finished_at, duration_ms, owner_json';

interface ExecutionRow {
  readonly id: string;
  readonly agent_name: string;
  readonly agent_version: string;
  readonly runtime: string;
  readonly status: string;
  readonly exit_code: number | null;
  readonly reason: string | null;
  readonly input_json: string | null;
  readonly output_json: string | null;
  readonly violations_json: string;
  readonly created_at: string;
  readonly started_at: string | null;
  readonly finished_at: string | null;
  readonly duration_ms: number | null;
  readonly owner_json: string | null;
}

interface LogRow {
  readonly seq: number;
  readonly ts: string;
  readonly stream: string;
  readonly text: string;
}

type ListVariant = 'all' | 'agent' | 'status' | 'agent+status';

export class SqliteExecutionStore implements ExecutionStore {
  readonly #db: DatabaseSync;
  readonly #insertExecution: StatementSync;
  readonly #updateExecution: StatementSync;
  readonly #getExecution: StatementSync;
  readonly #list: Readonly<Record<ListVariant, StatementSync>>;
  readonly #listUnfinished: StatementSync;
  readonly #insertLog: StatementSync;
  readonly #maxSeq: StatementSync;
  readonly #readLogs: StatementSync;
  /** Last stored seq per execution; an entry is dropped when it may be stale and re-read from the db. */
  readonly #lastSeq = new Map<string, number>();

  /**
   * Opens (creating if needed) the database at `file` and brings its schema up to date. A missing parent directory
   * is created with mode 0700 and a new database file with mode 0600; existing ones are left as they are.
   * `:memory:` opens a private in-memory database.
   */
  static open(file: string): SqliteExecutionStore {
    if (file !== ':memory:') {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      createPrivateFile(file);
    }
    const db = new DatabaseSync(file);
    try {
      // WAL lets readers (`aegis logs -f`, the API) run beside the writer; NORMAL is durable across process crashes
      // in WAL mode, and only a power loss can drop the last transactions.
      db.exec('PRAGMA journal_mode = WAL');
      db.exec('PRAGMA synchronous = NORMAL');
      db.exec('PRAGMA busy_timeout = 5000');
      db.exec('PRAGMA foreign_keys = ON');
      migrate(db);
      return new SqliteExecutionStore(db);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  private constructor(db: DatabaseSync) {
    this.#db = db;
    this.#insertExecution = db.prepare(
      `INSERT INTO executions (${COLUMNS}) VALUES (:id, :agent_name, :agent_version, :runtime, :status, ` +
        ':exit_code, :reason, :input_json, :output_json, :violations_json, :created_at, :started_at, ' +
        ':finished_at, :duration_ms, :owner_json)',
    );
    // One statement for every patch shape: each column changes only when its `set_*` flag is 1.
    const patchable = [
      'status',
      'exit_code',
      'reason',
      'output_json',
      'violations_json',
      'started_at',
      'finished_at',
      'duration_ms',
    ];
    this.#updateExecution = db.prepare(
      `UPDATE executions SET ${patchable.map((c) => `${c} = CASE WHEN :set_${c} THEN :${c} ELSE ${c} END`).join(', ')} ` +
        `WHERE id = :id RETURNING ${COLUMNS}`,
    );
    this.#getExecution = db.prepare(`SELECT ${COLUMNS} FROM executions WHERE id = ?`);
    const list = (where: string) =>
      db.prepare(`SELECT ${COLUMNS} FROM executions ${where} ORDER BY created_at DESC, id DESC LIMIT :limit`);
    this.#list = {
      all: list(''),
      agent: list('WHERE agent_name = :agent'),
      status: list('WHERE status = :status'),
      'agent+status': list('WHERE agent_name = :agent AND status = :status'),
    };
    this.#listUnfinished = db.prepare(
      `SELECT ${COLUMNS} FROM executions WHERE status IN (${UNFINISHED_STATUSES.map(() => '?').join(', ')}) ` +
        'ORDER BY created_at, id',
    );
    this.#insertLog = db.prepare(
      'INSERT INTO execution_logs (execution_id, seq, ts, stream, text) VALUES (?, ?, ?, ?, ?)',
    );
    this.#maxSeq = db.prepare('SELECT MAX(seq) AS seq FROM execution_logs WHERE execution_id = ?');
    this.#readLogs = db.prepare(
      'SELECT seq, ts, stream, text FROM execution_logs WHERE execution_id = ? AND seq > ? ORDER BY seq LIMIT ?',
    );
  }

  async createExecution(record: ExecutionRecord): Promise<void> {
    try {
      this.#insertExecution.run({
        id: record.id,
        agent_name: record.agent.name,
        agent_version: record.agent.version,
        runtime: record.runtime,
        status: record.status,
        exit_code: record.exitCode,
        reason: record.reason,
        input_json: toJson(record.input),
        output_json: toJson(record.output),
        violations_json: JSON.stringify(record.violations),
        created_at: record.createdAt,
        started_at: record.startedAt,
        finished_at: record.finishedAt,
        duration_ms: record.durationMs,
        owner_json: record.owner === null ? null : JSON.stringify(record.owner),
      });
    } catch (error) {
      if (isPrimaryKeyClash(error)) {
        throw new AegisError('INTERNAL', `execution ${record.id} already exists`, { cause: error });
      }
      throw error;
    }
  }

  async updateExecution(id: string, patch: ExecutionPatch): Promise<ExecutionRecord> {
    const params: Record<string, SQLInputValue> = { id };
    const set = (column: string, value: SQLInputValue | undefined) => {
      params[`set_${column}`] = value === undefined ? 0 : 1;
      params[column] = value === undefined ? null : value;
    };
    set('status', patch.status);
    set('exit_code', patch.exitCode);
    set('reason', patch.reason);
    set('output_json', patch.output === undefined ? undefined : toJson(patch.output));
    set('violations_json', patch.violations === undefined ? undefined : JSON.stringify(patch.violations));
    set('started_at', patch.startedAt);
    set('finished_at', patch.finishedAt);
    set('duration_ms', patch.durationMs);
    const row = this.#updateExecution.get(params);
    if (row === undefined)
      throw new AegisError('NOT_FOUND', `no execution with id ${id}`, { details: { id } });
    // A finished execution rarely gets more log lines; forget its counter (a late append re-reads it).
    if (patch.status !== undefined && isTerminal(patch.status)) this.#lastSeq.delete(id);
    return toRecord(row as unknown as ExecutionRow);
  }

  async getExecution(id: string): Promise<ExecutionRecord | undefined> {
    const row = this.#getExecution.get(id);
    return row === undefined ? undefined : toRecord(row as unknown as ExecutionRow);
  }

  async listExecutions(query: ListExecutionsQuery = {}): Promise<readonly ExecutionRecord[]> {
    const variant: ListVariant =
      query.agent !== undefined
        ? query.status !== undefined
          ? 'agent+status'
          : 'agent'
        : query.status !== undefined
          ? 'status'
          : 'all';
    const params: Record<string, SQLInputValue> = { limit: listLimit(query.limit) };
    if (query.agent !== undefined) params['agent'] = query.agent;
    if (query.status !== undefined) params['status'] = query.status;
    return this.#list[variant].all(params).map((row) => toRecord(row as unknown as ExecutionRow));
  }

  /** Oldest first. */
  async listUnfinished(): Promise<readonly ExecutionRecord[]> {
    return this.#listUnfinished
      .all(...UNFINISHED_STATUSES)
      .map((row) => toRecord(row as unknown as ExecutionRow));
  }

  async appendLogs(executionId: string, lines: readonly NewLogLine[]): Promise<void> {
    if (lines.length === 0) return;
    let seq = this.#lastSeq.get(executionId);
    if (seq === undefined) seq = Number(this.#maxSeq.get(executionId)?.['seq'] ?? 0);
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      for (const line of lines) {
        seq += 1;
        this.#insertLog.run(executionId, seq, line.ts, line.stream, line.text);
      }
      this.#db.exec('COMMIT');
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      // Another writer may have appended (a primary-key clash); re-read the max next time rather than trust the cache.
      this.#lastSeq.delete(executionId);
      throw error;
    }
    this.#lastSeq.set(executionId, seq);
  }

  /** Without `limit`, every line after `afterSeq` (default 0: all of them). */
  async readLogs(
    executionId: string,
    options: { afterSeq?: number; limit?: number } = {},
  ): Promise<readonly LogLine[]> {
    const limit = options.limit === undefined ? -1 : Math.max(0, Math.trunc(options.limit));
    return this.#readLogs.all(executionId, options.afterSeq ?? 0, limit).map((row) => {
      const r = row as unknown as LogRow;
      return { seq: r.seq, ts: r.ts, stream: r.stream as LogStream, text: r.text };
    });
  }

  /** Closes the database. Idempotent. */
  async close(): Promise<void> {
    this.#lastSeq.clear();
    if (this.#db.isOpen) this.#db.close();
  }
}

/** Creates `file` with mode 0600 if it doesn't exist yet, so SQLite (and its -wal/-shm files) inherit that mode. */
function createPrivateFile(file: string): void {
  try {
    closeSync(openSync(file, 'wx', 0o600));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
}

/** `undefined` (and anything else JSON can't represent at top level) is stored as SQL NULL. */
function toJson(value: unknown): string | null {
  return value === undefined ? null : (JSON.stringify(value) ?? null);
}

function fromJson(text: string | null): unknown {
  return text === null ? null : JSON.parse(text);
}

function listLimit(limit: number | undefined): number {
  if (limit === undefined || Number.isNaN(limit)) return DEFAULT_LIST_LIMIT;
  return Math.min(MAX_LIST_LIMIT, Math.max(0, Math.trunc(limit)));
}

const SQLITE_CONSTRAINT_PRIMARYKEY = 1555;

function isPrimaryKeyClash(error: unknown): boolean {
  return error instanceof Error && (error as { errcode?: unknown }).errcode === SQLITE_CONSTRAINT_PRIMARYKEY;
}

function toRecord(row: ExecutionRow): ExecutionRecord {
  return {
    id: row.id,
    agent: { name: row.agent_name, version: row.agent_version },
    runtime: row.runtime,
    status: row.status as ExecutionStatus,
    exitCode: row.exit_code,
    reason: row.reason,
    input: fromJson(row.input_json),
    output: fromJson(row.output_json),
    violations: JSON.parse(row.violations_json) as Violation[],
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    durationMs: row.duration_ms,
    owner: row.owner_json === null ? null : (JSON.parse(row.owner_json) as OwnerRef),
  };
}
