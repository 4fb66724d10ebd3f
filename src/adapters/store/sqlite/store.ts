/**
 * The embedded store: one SQLite file (WAL) through Node's built-in `node:sqlite` — executions and their logs,
 * deployed agents (revisions and bundles) and API keys.
 *
 * node:sqlite is synchronous; the methods are async only because the port is. Each call is a few prepared-statement
 * steps, so they stay cheap enough to run on the event loop — and since a call never yields, the calls of one
 * process never interleave. Writes that read first run in `BEGIN IMMEDIATE`, which also serialises them against
 * other processes sharing the file.
 *
 * One process writes the logs of a given execution (its owner): log sequence numbers are counted in memory,
 * initialised from the database the first time an execution is seen.
 */
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import type {
  ChildInsert,
  ChildLimits,
  ClaimRequest,
  ClusterTopic,
  DeployOutcome,
  ExecutionPatch,
  Heartbeat,
  ListExecutionsQuery,
  LlmSpend,
  NewAgentRevision,
  NewLogLine,
  PruneBatch,
  PrunedRows,
  Store,
} from '../../../app/ports.ts';
import type { ApiKeyRecord, RateLimit, Scope } from '../../../domain/auth/api-key.ts';
import {
  type ClaimedExecution,
  type ExecutionFence,
  fencedOut,
  isoPlus,
  matchesPlacement,
  type NodeKind,
  type NodeLabels,
  type NodeRecord,
  type NodeRegistration,
  type NodeState,
  type NodeStatus,
} from '../../../domain/cluster/node.ts';
import type { AgentRevision, AgentSummary } from '../../../domain/deployment.ts';
import type { EdgeNodeRecord, EdgeTokenRecord } from '../../../domain/edge/records.ts';
import { AegisError } from '../../../domain/errors.ts';
import {
  type ExecutionRecord,
  type ExecutionStatus,
  type ExecutionUsage,
  isTerminal,
  type LogLine,
  type LogStream,
  type OwnerRef,
  TERMINAL_STATUSES,
  type Violation,
} from '../../../domain/execution.ts';
import type { SandboxRecord } from '../../../domain/live-sandbox.ts';
import type { AuthorityCeiling } from '../../../domain/swarm/authority.ts';
import {
  CLAIMED_STATUSES,
  COLUMNS,
  INSERT_COLUMNS,
  KEY_COLUMNS,
  listLimit,
  NODE_COLUMNS,
  REVISION_COLUMNS,
  SUMMARY_SELECT,
  toJson,
  UNFINISHED_STATUSES,
} from '../sql-common.ts';
import { migrate } from './migrations.ts';
import { reclaimSqliteSpace } from './reclaim.ts';
import { SqliteSwarmStore } from './swarm-store.ts';

interface ExecutionRow {
  readonly id: string;
  readonly agent_name: string;
  readonly agent_version: string;
  readonly agent_revision: number | null;
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
  readonly usage_json: string | null;
  readonly placement_json: string | null;
  readonly priority: number;
  readonly parent_id: string | null;
  readonly root_id: string | null;
  readonly authority_json: string | null;
  readonly node_id: string | null;
}

interface NodeRow {
  readonly id: string;
  readonly kind: string;
  readonly state: string;
  readonly labels_json: string;
  readonly runtimes_json: string;
  readonly capacity: number;
  readonly host: string;
  readonly version: string;
  readonly started_at: string;
  readonly heartbeat_at: string;
  readonly lease_expires_at: string;
  readonly epoch: number;
}

interface LogRow {
  readonly seq: number;
  readonly ts: string;
  readonly stream: string;
  readonly text: string;
}

interface RevisionRow {
  readonly agent: string;
  readonly revision: number;
  readonly version: string;
  readonly digest: string;
  readonly size_bytes: number;
  readonly description: string | null;
  readonly created_at: string;
  readonly deployed_by: string;
}

interface SummaryRow extends RevisionRow {
  readonly name: string;
  readonly active_revision: number;
  readonly agent_created_at: string;
  readonly agent_updated_at: string;
  readonly revision_count: number;
}

interface KeyRow {
  readonly id: string;
  readonly name: string;
  readonly hash: string;
  readonly prefix: string;
  readonly scopes_json: string;
  readonly rate_json: string | null;
  readonly created_at: string;
  readonly revoked_at: string | null;
  readonly last_used_at: string | null;
}

export class SqliteStore implements Store {
  readonly #db: DatabaseSync;
  readonly #insertExecution: StatementSync;
  readonly #updateExecution: StatementSync;
  readonly #getExecution: StatementSync;
  /** List statements by shape (which of agent / status / cursor are given), prepared on first use. */
  readonly #list = new Map<string, StatementSync>();
  readonly #listUnfinished: StatementSync;
  readonly #insertLog: StatementSync;
  readonly #maxSeq: StatementSync;
  readonly #readLogs: StatementSync;
  readonly #agentRow: StatementSync;
  readonly #revision: StatementSync;
  readonly #maxRevision: StatementSync;
  readonly #insertBundle: StatementSync;
  readonly #insertAgent: StatementSync;
  readonly #activate: StatementSync;
  readonly #insertRevision: StatementSync;
  readonly #summary: StatementSync;
  readonly #summaries: StatementSync;
  readonly #revisions: StatementSync;
  readonly #deleteRevisions: StatementSync;
  readonly #deleteAgent: StatementSync;
  readonly #deleteOrphanBundles: StatementSync;
  readonly #readBundle: StatementSync;
  readonly #insertKey: StatementSync;
  readonly #keyByHash: StatementSync;
  readonly #keys: StatementSync;
  readonly #revokeKey: StatementSync;
  readonly #touchKey: StatementSync;
  /** Last stored seq per execution; an entry is dropped when it may be stale and re-read from the db. */
  readonly #lastSeq = new Map<string, number>();
  readonly #listeners = new Set<(topic: ClusterTopic, id: string) => void>();

  /**
   * Opens (creating if needed) the database at `file` and brings its schema up to date. A missing parent directory
   * is created with mode 0700 and a new database file with mode 0600; existing ones are left as they are.
   * `:memory:` opens a private in-memory database.
   */
  static open(file: string): SqliteStore {
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
      // A new database gives pruned pages back to the file system (reclaimSpace); no effect on an existing one.
      db.exec('PRAGMA auto_vacuum = INCREMENTAL');
      migrate(db);
      return new SqliteStore(db);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  private constructor(db: DatabaseSync) {
    this.#db = db;
    this.#insertExecution = db.prepare(
      `INSERT INTO executions (${INSERT_COLUMNS}) VALUES (:id, :agent_name, :agent_version, :agent_revision, ` +
        ':runtime, :status, :exit_code, :reason, :input_json, :output_json, :violations_json, :created_at, ' +
        ':started_at, :finished_at, :duration_ms, :owner_json, :usage_json, :placement_json, :priority, ' +
        ':parent_id, :root_id, :authority_json)',
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
      'owner_json',
      'usage_json',
    ];
    this.#updateExecution = db.prepare(
      `UPDATE executions SET ${patchable.map((c) => `${c} = CASE WHEN :set_${c} THEN :${c} ELSE ${c} END`).join(', ')}, ` +
        'node_id = CASE WHEN :unclaim THEN NULL ELSE node_id END, ' +
        'lease_expires_at = CASE WHEN :unclaim THEN NULL ELSE lease_expires_at END, ' +
        'cancel_requested = CASE WHEN :unclaim THEN 0 ELSE cancel_requested END ' +
        `WHERE id = :id AND (:fenced = 0 OR (node_id = :fence_node AND fence = :fence AND EXISTS (` +
        "SELECT 1 FROM nodes n WHERE n.id = :fence_node AND n.epoch = :fence_epoch AND n.state <> 'dead'))) " +
        `RETURNING ${COLUMNS}`,
    );
    this.#getExecution = db.prepare(`SELECT ${COLUMNS} FROM executions WHERE id = ?`);
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

    this.#agentRow = db.prepare('SELECT name, active_revision FROM agents WHERE name = ?');
    this.#revision = db.prepare(
      `SELECT ${REVISION_COLUMNS} FROM agent_revisions WHERE agent = ? AND revision = ?`,
    );
    this.#maxRevision = db.prepare('SELECT MAX(revision) AS revision FROM agent_revisions WHERE agent = ?');
    this.#insertBundle = db.prepare(
      'INSERT INTO bundles (digest, bytes, size_bytes, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING',
    );
    this.#insertAgent = db.prepare(
      'INSERT INTO agents (name, active_revision, created_at, updated_at) VALUES (?, ?, ?, ?)',
    );
    this.#activate = db.prepare('UPDATE agents SET active_revision = ?, updated_at = ? WHERE name = ?');
    this.#insertRevision = db.prepare(
      `INSERT INTO agent_revisions (${REVISION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#summary = db.prepare(`${SUMMARY_SELECT} WHERE a.name = ?`);
    this.#summaries = db.prepare(`${SUMMARY_SELECT} ORDER BY a.name`);
    this.#revisions = db.prepare(
      `SELECT ${REVISION_COLUMNS} FROM agent_revisions WHERE agent = ? ORDER BY revision DESC`,
    );
    this.#deleteRevisions = db.prepare('DELETE FROM agent_revisions WHERE agent = ?');
    this.#deleteAgent = db.prepare('DELETE FROM agents WHERE name = ?');
    this.#deleteOrphanBundles = db.prepare(
      'DELETE FROM bundles WHERE NOT EXISTS (SELECT 1 FROM agent_revisions r WHERE r.digest = bundles.digest)',
    );
    this.#readBundle = db.prepare('SELECT bytes FROM bundles WHERE digest = ?');

    this.#insertKey = db.prepare(`INSERT INTO api_keys (${KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    this.#keyByHash = db.prepare(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE hash = ?`);
    this.#keys = db.prepare(`SELECT ${KEY_COLUMNS} FROM api_keys ORDER BY created_at, id`);
    this.#revokeKey = db.prepare(
      `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING ${KEY_COLUMNS}`,
    );
    this.#touchKey = db.prepare('UPDATE api_keys SET last_used_at = ? WHERE id = ?');
  }

  // -------------------------------------------------------------------------------------------------------------
  // Executions and logs.

  async createExecution(record: ExecutionRecord): Promise<void> {
    try {
      this.#insertExecution.run({
        id: record.id,
        agent_name: record.agent.name,
        agent_version: record.agent.version,
        agent_revision: record.agent.revision ?? null,
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
        usage_json: record.usage === undefined ? null : JSON.stringify(record.usage),
        placement_json: record.placement === undefined ? null : JSON.stringify(record.placement),
        priority: record.priority ?? 0,
        parent_id: record.parentId ?? null,
        root_id: record.rootId ?? null,
        authority_json: record.authority === undefined ? null : JSON.stringify(record.authority),
      });
    } catch (error) {
      if (isUniqueClash(error)) {
        throw new AegisError('INTERNAL', `execution ${record.id} already exists`, { cause: error });
      }
      throw error;
    }
  }

  async updateExecution(id: string, patch: ExecutionPatch, fence?: ExecutionFence): Promise<ExecutionRecord> {
    const params = this.#patchParams(id, patch, fence);
    const row = this.#updateExecution.get(params);
    if (row === undefined) {
      const holder = this.#db.prepare('SELECT node_id, fence FROM executions WHERE id = ?').get(id);
      if (holder !== undefined && fence !== undefined) {
        throw fencedOut(id, fence, {
          node: (holder['node_id'] as string | null) ?? null,
          fence: Number(holder['fence']),
        });
      }
      throw new AegisError('NOT_FOUND', `no execution with id ${id}`, { details: { id } });
    }
    // A finished execution rarely gets more log lines; forget its counter (a late append re-reads it).
    if (patch.status !== undefined && isTerminal(patch.status)) this.#lastSeq.delete(id);
    return toRecord(row as unknown as ExecutionRow);
  }

  /** The named parameters of the one UPDATE statement for `patch` (columns not given keep their value). */
  #patchParams(id: string, patch: ExecutionPatch, fence?: ExecutionFence): Record<string, SQLInputValue> {
    const params: Record<string, SQLInputValue> = {
      id,
      unclaim: patch.unclaim ? 1 : 0,
      fenced: fence === undefined ? 0 : 1,
      fence_node: fence?.nodeId ?? null,
      fence: fence?.fence ?? null,
      fence_epoch: fence?.epoch ?? null,
    };
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
    set(
      'owner_json',
      patch.owner === undefined ? undefined : patch.owner === null ? null : JSON.stringify(patch.owner),
    );
    set('usage_json', patch.usage === undefined ? undefined : JSON.stringify(patch.usage));
    return params;
  }

  async getExecution(id: string): Promise<ExecutionRecord | undefined> {
    const row = this.#getExecution.get(id);
    return row === undefined ? undefined : toRecord(row as unknown as ExecutionRow);
  }

  async listExecutions(query: ListExecutionsQuery = {}): Promise<readonly ExecutionRecord[]> {
    const params: Record<string, SQLInputValue> = { limit: listLimit(query.limit) };
    const where: string[] = [];
    if (query.agent !== undefined) {
      where.push('agent_name = :agent');
      params['agent'] = query.agent;
    }
    if (query.status !== undefined) {
      where.push('status = :status');
      params['status'] = query.status;
    }
    if (query.after !== undefined) {
      // Strictly after the cursor in list order (created_at desc, id desc): a row-value comparison.
      where.push('(created_at, id) < (:after_created_at, :after_id)');
      params['after_created_at'] = query.after.createdAt;
      params['after_id'] = query.after.id;
    }
    const sql =
      `SELECT ${COLUMNS} FROM executions ${where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`} ` +
      'ORDER BY created_at DESC, id DESC LIMIT :limit';
    let statement = this.#list.get(sql);
    if (statement === undefined) {
      statement = this.#db.prepare(sql);
      this.#list.set(sql, statement);
    }
    return statement.all(params).map((row) => toRecord(row as unknown as ExecutionRow));
  }

  /** Oldest first. */
  /** Counts and inserts in one IMMEDIATE transaction: the database file's write lock serialises spawners. */
  async createChildExecution(record: ExecutionRecord, limits: ChildLimits): Promise<ChildInsert> {
    const rootId = record.rootId ?? record.id;
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const row = this.#db
        .prepare(
          'SELECT SUM(CASE WHEN parent_id = ? THEN 1 ELSE 0 END) AS children, COUNT(*) AS tree FROM executions WHERE root_id = ?',
        )
        .get(record.parentId ?? null, rootId);
      const children = Number(row?.['children'] ?? 0);
      const tree = Number(row?.['tree'] ?? 0);
      let refused: ChildInsert | undefined;
      if (children >= limits.maxChildren) refused = { ok: false, limit: 'maxChildren', count: children };
      else if (limits.maxDescendants !== null && tree >= limits.maxDescendants)
        refused = { ok: false, limit: 'budget.executions', count: tree };
      if (refused !== undefined) {
        this.#db.exec('ROLLBACK');
        return refused;
      }
      // createExecution inserts synchronously (node:sqlite); commit before yielding so nothing else joins the transaction.
      const inserted = this.createExecution(record);
      this.#db.exec('COMMIT');
      await inserted;
      return { ok: true };
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw error;
    }
  }

  async listSwarm(rootId: string): Promise<readonly ExecutionRecord[]> {
    return this.#db
      .prepare(`SELECT ${COLUMNS} FROM executions WHERE root_id = ? ORDER BY created_at, id`)
      .all(rootId)
      .map((row) => toRecord(row as unknown as ExecutionRow));
  }

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

  // -------------------------------------------------------------------------------------------------------------
  // Deployed agents.

  async deployRevision(input: NewAgentRevision, bundle: Uint8Array): Promise<DeployOutcome> {
    return this.#transaction(() => {
      const agent = this.#agentRow.get(input.agent) as { active_revision: number } | undefined;
      if (agent !== undefined) {
        const active = this.#revision.get(input.agent, agent.active_revision) as RevisionRow | undefined;
        if (active !== undefined && active.digest === input.digest) {
          return { revision: toRevision(active), created: false };
        }
      }
      const highest = this.#maxRevision.get(input.agent)?.['revision'];
      const revision: AgentRevision = {
        agent: input.agent,
        revision: Number(highest ?? 0) + 1,
        version: input.version,
        digest: input.digest,
        sizeBytes: input.sizeBytes,
        description: input.description,
        createdAt: input.createdAt,
        deployedBy: input.deployedBy,
      };
      this.#insertBundle.run(input.digest, bundle, bundle.byteLength, input.createdAt);
      if (agent === undefined) {
        this.#insertAgent.run(input.agent, revision.revision, input.createdAt, input.createdAt);
      } else {
        this.#activate.run(revision.revision, input.createdAt, input.agent);
      }
      this.#insertRevision.run(
        revision.agent,
        revision.revision,
        revision.version,
        revision.digest,
        revision.sizeBytes,
        revision.description,
        revision.createdAt,
        revision.deployedBy,
      );
      return { revision, created: true };
    });
  }

  async getAgent(name: string): Promise<AgentSummary | undefined> {
    const row = this.#summary.get(name);
    return row === undefined ? undefined : toSummary(row as unknown as SummaryRow);
  }

  async listAgents(): Promise<readonly AgentSummary[]> {
    return this.#summaries.all().map((row) => toSummary(row as unknown as SummaryRow));
  }

  async listRevisions(name: string): Promise<readonly AgentRevision[]> {
    return this.#revisions.all(name).map((row) => toRevision(row as unknown as RevisionRow));
  }

  async setActiveRevision(name: string, revision: number, at: string): Promise<AgentSummary> {
    return this.#transaction(() => {
      if (this.#agentRow.get(name) === undefined) throw noSuchAgent(name);
      if (this.#revision.get(name, revision) === undefined) throw noSuchRevision(name, revision);
      this.#activate.run(revision, at, name);
      const row = this.#summary.get(name);
      if (row === undefined) throw new AegisError('INTERNAL', `agent ${name} vanished while activating`);
      return toSummary(row as unknown as SummaryRow);
    });
  }

  async deleteAgent(name: string): Promise<boolean> {
    return this.#transaction(() => {
      this.#deleteRevisions.run(name);
      const deleted = Number(this.#deleteAgent.run(name).changes) > 0;
      if (deleted) this.#deleteOrphanBundles.run();
      return deleted;
    });
  }

  async readBundle(digest: string): Promise<Uint8Array | undefined> {
    const row = this.#readBundle.get(digest);
    return row === undefined ? undefined : (row['bytes'] as Uint8Array);
  }

  // -------------------------------------------------------------------------------------------------------------
  // API keys.

  async createKey(record: ApiKeyRecord): Promise<void> {
    try {
      this.#insertKey.run(
        record.id,
        record.name,
        record.hash,
        record.prefix,
        JSON.stringify(record.scopes),
        record.rateLimit === null ? null : JSON.stringify(record.rateLimit),
        record.createdAt,
        record.revokedAt,
        record.lastUsedAt,
      );
    } catch (error) {
      if (isUniqueClash(error)) {
        throw new AegisError('CONFLICT', `an API key with id ${record.id} or the same hash exists already`, {
          cause: error,
          details: { id: record.id },
        });
      }
      throw error;
    }
  }

  async findKeyByHash(hash: string): Promise<ApiKeyRecord | undefined> {
    const row = this.#keyByHash.get(hash);
    return row === undefined ? undefined : toKey(row as unknown as KeyRow);
  }

  async listKeys(): Promise<readonly ApiKeyRecord[]> {
    return this.#keys.all().map((row) => toKey(row as unknown as KeyRow));
  }

  async revokeKey(id: string, at: string): Promise<ApiKeyRecord> {
    const row = this.#revokeKey.get(at, id);
    if (row === undefined) throw new AegisError('NOT_FOUND', `no API key with id ${id}`, { details: { id } });
    return toKey(row as unknown as KeyRow);
  }

  async touchKey(id: string, at: string): Promise<void> {
    this.#touchKey.run(at, id);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Live sandboxes.

  async putSandbox(record: SandboxRecord): Promise<void> {
    this.#db
      .prepare(
        `INSERT INTO sandboxes (id, status, created_at, record_json) VALUES (?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, record_json = excluded.record_json`,
      )
      .run(record.id, record.status, record.createdAt, JSON.stringify(record));
  }

  async getLlmSpend(scope: string, windowStartMs: number): Promise<LlmSpend> {
    const row = this.#db
      .prepare('SELECT calls, tokens, usd FROM llm_spend WHERE scope = ? AND window_start = ?')
      .get(scope, windowStartMs);
    return row === undefined
      ? { calls: 0, tokens: 0, usd: 0 }
      : { calls: Number(row['calls']), tokens: Number(row['tokens']), usd: Number(row['usd']) };
  }

  async addLlmSpend(scope: string, windowStartMs: number, delta: LlmSpend): Promise<void> {
    this.#db
      .prepare(
        `INSERT INTO llm_spend (scope, window_start, calls, tokens, usd) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (scope, window_start) DO UPDATE SET calls = calls + excluded.calls,
           tokens = tokens + excluded.tokens, usd = usd + excluded.usd`,
      )
      .run(scope, windowStartMs, delta.calls, delta.tokens, delta.usd);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Edge nodes.

  async createEdgeToken(record: EdgeTokenRecord): Promise<void> {
    try {
      this.#db
        .prepare('INSERT INTO edge_tokens (id, hash, used_at, used_by, record_json) VALUES (?, ?, ?, ?, ?)')
        .run(record.id, record.hash, record.usedAt, record.usedBy, JSON.stringify(record));
    } catch (error) {
      if (isUniqueClash(error)) {
        throw new AegisError('CONFLICT', `an edge token with id ${record.id} or the same hash exists`, {
          cause: error,
        });
      }
      throw error;
    }
  }

  async consumeEdgeToken(hash: string, at: string, nodeId: string): Promise<EdgeTokenRecord | undefined> {
    // One statement: of two enrolments racing with one token, exactly one sees a row.
    const row = this.#db
      .prepare(
        'UPDATE edge_tokens SET used_at = ?, used_by = ? WHERE hash = ? AND used_at IS NULL RETURNING record_json',
      )
      .get(at, nodeId, hash);
    return row === undefined ? undefined : (JSON.parse(String(row['record_json'])) as EdgeTokenRecord);
  }

  async putEdgeNode(record: EdgeNodeRecord): Promise<void> {
    this.#db
      .prepare(
        `INSERT INTO edge_nodes (id, enrolled_at, record_json) VALUES (?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET record_json = excluded.record_json`,
      )
      .run(record.id, record.enrolledAt, JSON.stringify(record));
  }

  async getEdgeNode(id: string): Promise<EdgeNodeRecord | undefined> {
    const row = this.#db.prepare('SELECT record_json FROM edge_nodes WHERE id = ?').get(id);
    return row === undefined ? undefined : (JSON.parse(String(row['record_json'])) as EdgeNodeRecord);
  }

  async listEdgeNodes(): Promise<readonly EdgeNodeRecord[]> {
    return this.#db
      .prepare('SELECT record_json FROM edge_nodes ORDER BY enrolled_at, id')
      .all()
      .map((row) => JSON.parse(String(row['record_json'])) as EdgeNodeRecord);
  }

  async getSandbox(id: string): Promise<SandboxRecord | undefined> {
    const row = this.#db.prepare('SELECT record_json FROM sandboxes WHERE id = ?').get(id);
    return row === undefined ? undefined : (JSON.parse(String(row['record_json'])) as SandboxRecord);
  }

  async listSandboxes(
    filter: { unfinished?: boolean; limit?: number } = {},
  ): Promise<readonly SandboxRecord[]> {
    const where = filter.unfinished ? "WHERE status <> 'terminated'" : '';
    const rows = this.#db
      .prepare(`SELECT record_json FROM sandboxes ${where} ORDER BY created_at DESC, id DESC LIMIT ?`)
      .all(filter.limit ?? -1);
    return rows.map((row) => JSON.parse(String(row['record_json'])) as SandboxRecord);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Retention.

  async pruneExecutions(batch: PruneBatch): Promise<PrunedRows> {
    return this.#prune(batch, false);
  }

  async pruneLogs(batch: PruneBatch): Promise<PrunedRows> {
    return this.#prune(batch, true);
  }

  async pruneSandboxes(batch: Omit<PruneBatch, 'agents' | 'exceptAgents'>): Promise<number> {
    // A terminated sandbox ended by its expiresAt (it is killed then at the latest).
    const where = "WHERE status = 'terminated' AND json_extract(record_json, '$.expiresAt') < ?";
    if (batch.dryRun) {
      return Number(
        this.#db.prepare(`SELECT COUNT(*) AS n FROM sandboxes ${where}`).get(batch.before)?.['n'],
      );
    }
    return Number(
      this.#db
        .prepare(
          `DELETE FROM sandboxes WHERE id IN (SELECT id FROM sandboxes ${where} ORDER BY created_at LIMIT ?)`,
        )
        .run(batch.before, batch.limit).changes,
    );
  }

  async reclaimSpace(): Promise<{ readonly beforeBytes: number; readonly afterBytes: number }> {
    return reclaimSqliteSpace(this.#db);
  }

  #prune(batch: PruneBatch, logsOnly: boolean): PrunedRows {
    const params: SQLInputValue[] = [...TERMINAL_STATUSES, batch.before];
    let where =
      `WHERE e.status IN (${TERMINAL_STATUSES.map(() => '?').join(', ')}) ` +
      'AND COALESCE(e.finished_at, e.created_at) < ?';
    if (batch.notBefore !== undefined) {
      where += ' AND COALESCE(e.finished_at, e.created_at) >= ?';
      params.push(batch.notBefore);
    }
    if (batch.agents !== undefined) {
      where += ' AND e.agent_name IN (SELECT value FROM json_each(?))';
      params.push(JSON.stringify(batch.agents));
    }
    if (batch.exceptAgents !== undefined && batch.exceptAgents.length > 0) {
      where += ' AND e.agent_name NOT IN (SELECT value FROM json_each(?))';
      params.push(JSON.stringify(batch.exceptAgents));
    }
    if (logsOnly) where += ' AND EXISTS (SELECT 1 FROM execution_logs l WHERE l.execution_id = e.id)';
    const limit = batch.dryRun
      ? ''
      : ` ORDER BY COALESCE(e.finished_at, e.created_at) LIMIT ${Math.max(1, Math.trunc(batch.limit))}`;
    const run = (): PrunedRows => {
      const ids = this.#db
        .prepare(`SELECT e.id FROM executions e ${where}${limit}`)
        .all(...params)
        .map((row) => String(row['id']));
      if (ids.length === 0) return { executions: 0, logLines: 0, logBytes: 0 };
      const list = JSON.stringify(ids);
      const logs = this.#db
        .prepare(
          'SELECT COUNT(*) AS n, COALESCE(SUM(length(CAST(text AS BLOB))), 0) AS bytes FROM execution_logs ' +
            'WHERE execution_id IN (SELECT value FROM json_each(?))',
        )
        .get(list);
      if (!batch.dryRun) {
        this.#db
          .prepare('DELETE FROM execution_logs WHERE execution_id IN (SELECT value FROM json_each(?))')
          .run(list);
        if (!logsOnly) {
          // The swarms these executions belong to: their bus messages go once no execution of the swarm is left
          // (lock rows stay: a lock's fencing token must never go back).
          const swarms = JSON.stringify(
            this.#db
              .prepare(
                'SELECT DISTINCT COALESCE(root_id, id) AS swarm FROM executions WHERE id IN (SELECT value FROM json_each(?))',
              )
              .all(list)
              .map((row) => String(row['swarm'])),
          );
          this.#db.prepare('DELETE FROM executions WHERE id IN (SELECT value FROM json_each(?))').run(list);
          for (const table of ['swarm_messages', 'swarm_topics']) {
            this.#db
              .prepare(
                `DELETE FROM ${table} WHERE swarm IN (SELECT value FROM json_each(?)) AND NOT EXISTS ` +
                  `(SELECT 1 FROM executions x WHERE x.id = ${table}.swarm OR x.root_id = ${table}.swarm)`,
              )
              .run(swarms);
          }
        }
        for (const id of ids) this.#lastSeq.delete(id);
      }
      return {
        executions: ids.length,
        logLines: Number(logs?.['n'] ?? 0),
        logBytes: Number(logs?.['bytes'] ?? 0),
      };
    };
    return batch.dryRun ? run() : this.#transaction(run);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Cluster (ADR 0101). One writer at a time (BEGIN IMMEDIATE) makes every claim and takeover exclusive.

  async registerNode(registration: NodeRegistration): Promise<NodeRecord> {
    return this.#transaction(() => {
      const row = this.#db
        .prepare(
          `INSERT INTO nodes (${NODE_COLUMNS}) VALUES (?, ?, 'live', ?, ?, ?, ?, ?, ?, ?, ?, 1)
           ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, state = 'live', labels_json = excluded.labels_json,
             runtimes_json = excluded.runtimes_json, capacity = excluded.capacity, host = excluded.host,
             version = excluded.version, started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
             lease_expires_at = excluded.lease_expires_at, epoch = nodes.epoch + 1
           RETURNING ${NODE_COLUMNS}`,
        )
        .get(
          registration.id,
          registration.kind,
          JSON.stringify(registration.labels),
          JSON.stringify(registration.runtimes),
          registration.capacity,
          registration.host,
          registration.version,
          registration.at,
          registration.at,
          isoPlus(registration.at, registration.leaseMs),
        );
      return toNode(row as unknown as NodeRow);
    });
  }

  async heartbeatNode(
    heartbeat: Heartbeat,
  ): Promise<{ readonly cancelRequested: readonly string[] } | undefined> {
    return this.#transaction(() => {
      const lease = isoPlus(heartbeat.at, heartbeat.leaseMs);
      const renewed = this.#db
        .prepare(
          "UPDATE nodes SET heartbeat_at = ?, lease_expires_at = ? WHERE id = ? AND epoch = ? AND state <> 'dead'",
        )
        .run(heartbeat.at, lease, heartbeat.nodeId, heartbeat.epoch);
      if (Number(renewed.changes) === 0) return undefined;
      const held = `node_id = ? AND node_epoch = ? AND status IN (${CLAIMED_STATUSES.map((s) => `'${s}'`).join(', ')})`;
      this.#db
        .prepare(`UPDATE executions SET lease_expires_at = ? WHERE ${held}`)
        .run(lease, heartbeat.nodeId, heartbeat.epoch);
      const cancelRequested = this.#db
        .prepare(`SELECT id FROM executions WHERE ${held} AND cancel_requested = 1`)
        .all(heartbeat.nodeId, heartbeat.epoch)
        .map((row) => String(row['id']));
      return { cancelRequested };
    });
  }

  async listNodes(): Promise<readonly NodeStatus[]> {
    const claimed = CLAIMED_STATUSES.map((s) => `'${s}'`).join(', ');
    return this.#db
      .prepare(
        `SELECT ${NODE_COLUMNS}, (SELECT count(*) FROM executions e WHERE e.node_id = nodes.id AND e.status IN (${claimed})) AS running ` +
          'FROM nodes ORDER BY id',
      )
      .all()
      .map((row) => ({
        ...toNode(row as unknown as NodeRow),
        running: Number((row as { running: number | bigint }).running),
      }));
  }

  async setNodeState(nodeId: string, epoch: number, state: NodeState, at: string): Promise<boolean> {
    const changed = this.#db
      .prepare("UPDATE nodes SET state = ?, heartbeat_at = ? WHERE id = ? AND epoch = ? AND state <> 'dead'")
      .run(state, at, nodeId, epoch);
    return Number(changed.changes) > 0;
  }

  async declareNodeDead(nodeId: string, epoch: number, at: string): Promise<boolean> {
    const changed = this.#db
      .prepare(
        "UPDATE nodes SET state = 'dead', epoch = epoch + 1 WHERE id = ? AND epoch = ? AND state <> 'dead' AND lease_expires_at < ?",
      )
      .run(nodeId, epoch, at);
    return Number(changed.changes) > 0;
  }

  async claimExecutions(request: ClaimRequest): Promise<readonly ClaimedExecution<ExecutionRecord>[]> {
    if (request.limit <= 0 || request.runtimes.length === 0) return [];
    return this.#transaction(() => {
      const node = this.#db
        .prepare("SELECT 1 FROM nodes WHERE id = ? AND epoch = ? AND state = 'live'")
        .get(request.nodeId, request.epoch);
      if (node === undefined) return [];
      const excluded = request.excludeAgents ?? [];
      const candidates = this.#db
        .prepare(
          `SELECT id, placement_json FROM executions WHERE status = 'queued' AND node_id IS NULL ` +
            `AND runtime IN (${request.runtimes.map(() => '?').join(', ')}) ` +
            (excluded.length === 0 ? '' : `AND agent_name NOT IN (${excluded.map(() => '?').join(', ')}) `) +
            'ORDER BY priority DESC, created_at, id',
        )
        .iterate(...request.runtimes, ...excluded);
      const ids: string[] = [];
      for (const row of candidates) {
        const placement =
          row['placement_json'] === null ? undefined : JSON.parse(String(row['placement_json']));
        if (!matchesPlacement(placement, request.labels)) continue;
        ids.push(String(row['id']));
        if (ids.length >= request.limit) break;
      }
      return ids.map((id) => this.#take(id, request, request.at, request.leaseMs));
    });
  }

  #take(
    id: string,
    claimant: { readonly nodeId: string; readonly epoch: number; readonly owner: OwnerRef },
    at: string,
    leaseMs: number,
  ): ClaimedExecution<ExecutionRecord> {
    const row = this.#db
      .prepare(
        'UPDATE executions SET node_id = ?, node_epoch = ?, fence = fence + 1, lease_expires_at = ?, owner_json = ? ' +
          `WHERE id = ? RETURNING ${COLUMNS}, fence`,
      )
      .get(claimant.nodeId, claimant.epoch, isoPlus(at, leaseMs), JSON.stringify(claimant.owner), id) as
      | (ExecutionRow & { fence: number })
      | undefined;
    if (row === undefined) throw new AegisError('INTERNAL', `execution ${id} vanished while claimed`);
    return {
      record: toRecord(row),
      fence: { nodeId: claimant.nodeId, epoch: claimant.epoch, fence: Number(row.fence) },
    };
  }

  async listOrphanedExecutions(): Promise<readonly ClaimedExecution<ExecutionRecord>[]> {
    const rows = this.#db
      .prepare(
        `SELECT ${COLUMNS.split(', ')
          .map((c) => `e.${c}`)
          .join(', ')}, e.node_epoch, e.fence FROM executions e LEFT JOIN nodes n ON n.id = e.node_id ` +
          `WHERE e.node_id IS NOT NULL AND e.status IN (${CLAIMED_STATUSES.map((s) => `'${s}'`).join(', ')}) ` +
          "AND (n.id IS NULL OR n.state = 'dead' OR n.epoch <> e.node_epoch) ORDER BY e.created_at, e.id",
      )
      .all() as unknown as (ExecutionRow & { node_epoch: number; fence: number })[];
    return rows.map((row) => ({
      record: toRecord(row),
      fence: { nodeId: row.node_id ?? '', epoch: Number(row.node_epoch), fence: Number(row.fence) },
    }));
  }

  async takeOverExecution(
    id: string,
    expected: ExecutionFence,
    claimant: { readonly nodeId: string; readonly epoch: number; readonly owner: OwnerRef },
    at: string,
    leaseMs: number,
  ): Promise<ClaimedExecution<ExecutionRecord> | undefined> {
    return this.#transaction(() => {
      const held = this.#db
        .prepare(
          `SELECT 1 FROM executions WHERE id = ? AND node_id = ? AND node_epoch = ? AND fence = ? ` +
            `AND status IN (${CLAIMED_STATUSES.map((s) => `'${s}'`).join(', ')})`,
        )
        .get(id, expected.nodeId, expected.epoch, expected.fence);
      return held === undefined ? undefined : this.#take(id, claimant, at, leaseMs);
    });
  }

  async updateQueuedExecution(id: string, patch: ExecutionPatch): Promise<ExecutionRecord | undefined> {
    return this.#transaction(() => {
      const bumped = this.#db
        .prepare(
          "UPDATE executions SET fence = fence + 1 WHERE id = ? AND status = 'queued' AND node_id IS NULL",
        )
        .run(id);
      if (Number(bumped.changes) === 0) return undefined;
      const row = this.#updateExecution.get(this.#patchParams(id, patch));
      return row === undefined ? undefined : toRecord(row as unknown as ExecutionRow);
    });
  }

  async requestCancel(id: string): Promise<boolean> {
    const changed = this.#db
      .prepare(
        `UPDATE executions SET cancel_requested = 1 WHERE id = ? AND status IN (${UNFINISHED_STATUSES.map((s) => `'${s}'`).join(', ')})`,
      )
      .run(id);
    return Number(changed.changes) > 0;
  }

  async countQueued(): Promise<number> {
    return Number(
      this.#db.prepare("SELECT COUNT(*) AS n FROM executions WHERE status = 'queued'").get()?.['n'],
    );
  }

  async signal(topic: ClusterTopic, id: string): Promise<void> {
    for (const listener of [...this.#listeners]) {
      try {
        listener(topic, id);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  /** One process: signals reach this store's listeners only (other processes on the file poll). */
  onSignal(listener: (topic: ClusterTopic, id: string) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Closes the database. Idempotent. */
  /** The swarm bus and locks in this database (adapters/store/sqlite/swarm-store.ts). */
  swarmStore(): SqliteSwarmStore {
    return new SqliteSwarmStore(this.#db);
  }

  async close(): Promise<void> {
    this.#lastSeq.clear();
    this.#list.clear();
    if (this.#db.isOpen) this.#db.close();
  }

  /** Runs `body` in a BEGIN IMMEDIATE transaction: committed when it returns, rolled back when it throws. */
  #transaction<T>(body: () => T): T {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const result = body();
      this.#db.exec('COMMIT');
      return result;
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw error;
    }
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

function fromJson(text: string | null): unknown {
  return text === null ? null : JSON.parse(text);
}

const SQLITE_CONSTRAINT_PRIMARYKEY = 1555;
const SQLITE_CONSTRAINT_UNIQUE = 2067;

function isUniqueClash(error: unknown): boolean {
  const code = error instanceof Error ? (error as { errcode?: unknown }).errcode : undefined;
  return code === SQLITE_CONSTRAINT_PRIMARYKEY || code === SQLITE_CONSTRAINT_UNIQUE;
}

function noSuchAgent(name: string): AegisError {
  return new AegisError('NOT_FOUND', `no agent named ${name}`, { details: { name } });
}

function noSuchRevision(name: string, revision: number): AegisError {
  return new AegisError('NOT_FOUND', `agent ${name} has no revision ${revision}`, {
    details: { name, revision },
  });
}

function toRecord(row: ExecutionRow): ExecutionRecord {
  return {
    id: row.id,
    agent:
      row.agent_revision === null
        ? { name: row.agent_name, version: row.agent_version }
        : { name: row.agent_name, version: row.agent_version, revision: row.agent_revision },
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
    ...(row.usage_json === null ? {} : { usage: JSON.parse(row.usage_json) as ExecutionUsage }),
    ...(row.placement_json === null
      ? {}
      : { placement: JSON.parse(row.placement_json) as Record<string, string> }),
    ...(row.priority === 0 ? {} : { priority: row.priority }),
    ...(row.node_id === null ? {} : { node: row.node_id }),
    ...(row.parent_id === null ? {} : { parentId: row.parent_id }),
    ...(row.root_id === null ? {} : { rootId: row.root_id }),
    ...(row.authority_json === null ? {} : { authority: JSON.parse(row.authority_json) as AuthorityCeiling }),
  };
}

function toNode(row: NodeRow): NodeRecord {
  return {
    id: row.id,
    kind: row.kind as NodeKind,
    state: row.state as NodeState,
    labels: JSON.parse(row.labels_json) as NodeLabels,
    runtimes: JSON.parse(row.runtimes_json) as string[],
    capacity: row.capacity,
    host: row.host,
    version: row.version,
    startedAt: row.started_at,
    heartbeatAt: row.heartbeat_at,
    leaseExpiresAt: row.lease_expires_at,
    epoch: Number(row.epoch),
  };
}

function toRevision(row: RevisionRow): AgentRevision {
  return {
    agent: row.agent,
    revision: row.revision,
    version: row.version,
    digest: row.digest,
    sizeBytes: row.size_bytes,
    description: row.description,
    createdAt: row.created_at,
    deployedBy: row.deployed_by,
  };
}

function toSummary(row: SummaryRow): AgentSummary {
  return {
    name: row.name,
    activeRevision: row.active_revision,
    active: toRevision(row),
    revisions: row.revision_count,
    createdAt: row.agent_created_at,
    updatedAt: row.agent_updated_at,
  };
}

function toKey(row: KeyRow): ApiKeyRecord {
  return {
    id: row.id,
    name: row.name,
    hash: row.hash,
    prefix: row.prefix,
    scopes: JSON.parse(row.scopes_json) as Scope[],
    rateLimit: row.rate_json === null ? null : (JSON.parse(row.rate_json) as RateLimit),
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
    lastUsedAt: row.last_used_at,
  };
}
