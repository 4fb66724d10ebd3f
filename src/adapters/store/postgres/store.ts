/**
 * The server store on PostgreSQL (`pg`, a connection pool): executions and their logs, deployed agents (revisions
 * and bundles) and API keys — the same `Store` the SQLite store is, checked by the same contract suite
 * (test/contracts/store.contract.ts). See docs/adr/0009-postgres-store.md.
 *
 * Several processes may share one database: every read-then-write runs in a transaction that locks what it reads
 * (the agent's row for deploys; a transaction-scoped advisory lock per execution for log numbering), so revision
 * and sequence numbers stay distinct whoever writes.
 */
import pg from 'pg';
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
import type {
  ExecutionRecord,
  ExecutionStatus,
  ExecutionUsage,
  LogLine,
  LogStream,
  OwnerRef,
  Violation,
} from '../../../domain/execution.ts';
import { TERMINAL_STATUSES } from '../../../domain/execution.ts';
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
import { isSchemaName, LOCK_KEY_SQL, migrate } from './migrations.ts';
import { PostgresSwarmStore } from './swarm-store.ts';

export interface PostgresStoreOptions {
  /** Schema that holds the tables; created on open when missing. Lowercase letters, digits, `_`. @default 'public' */
  readonly schema?: string;
  /** Most connections the pool opens. @default 10 */
  readonly poolSize?: number;
  /** Give up connecting after this long. @default 10000 */
  readonly connectTimeoutMs?: number;
}

/** PostgreSQL error codes (SQLSTATE) this store tells apart. */
const UNIQUE_VIOLATION = '23505';

interface ExecutionRow {
  readonly id: string;
  readonly agent_name: string;
  readonly agent_version: string;
  readonly agent_revision: number | null;
  readonly runtime: string;
  readonly status: string;
  readonly exit_code: number | null;
  readonly reason: string | null;
  /** `json` columns arrive parsed. */
  readonly input_json: unknown;
  readonly output_json: unknown;
  readonly violations_json: Violation[];
  readonly created_at: string;
  readonly started_at: string | null;
  readonly finished_at: string | null;
  readonly duration_ms: number | null;
  readonly owner_json: OwnerRef | null;
  readonly usage_json: ExecutionUsage | null;
  readonly placement_json: Record<string, string> | null;
  readonly priority: number;
  readonly parent_id: string | null;
  readonly root_id: string | null;
  readonly authority_json: AuthorityCeiling | null;
  readonly node_id: string | null;
}

interface NodeRow {
  readonly id: string;
  readonly kind: string;
  readonly state: string;
  readonly labels_json: NodeLabels;
  readonly runtimes_json: string[];
  readonly capacity: number;
  readonly host: string;
  readonly version: string;
  readonly started_at: string;
  readonly heartbeat_at: string;
  readonly lease_expires_at: string;
  /** BIGINT arrives as a string. */
  readonly epoch: string;
}

const CLAIMED_SQL = `(${CLAIMED_STATUSES.map((status) => `'${status}'`).join(', ')})`;
const PREFIXED_COLUMNS = COLUMNS.split(', ')
  .map((column) => `e.${column}`)
  .join(', ');

interface LogRow {
  readonly seq: number;
  readonly ts: string;
  readonly stream: string;
  readonly text: Buffer;
}

interface RevisionRow {
  readonly agent: string;
  readonly revision: number;
  readonly version: string;
  readonly digest: string;
  /** BIGINT arrives as a string. */
  readonly size_bytes: string;
  readonly description: string | null;
  readonly created_at: string;
  readonly deployed_by: string;
}

interface SummaryRow extends RevisionRow {
  readonly name: string;
  readonly active_revision: number;
  readonly agent_created_at: string;
  readonly agent_updated_at: string;
  readonly revision_count: string;
}

interface KeyRow {
  readonly id: string;
  readonly name: string;
  readonly hash: string;
  readonly prefix: string;
  readonly scopes_json: Scope[];
  readonly rate_json: RateLimit | null;
  readonly created_at: string;
  readonly revoked_at: string | null;
  readonly last_used_at: string | null;
}

type Queryable = Pick<pg.PoolClient, 'query'>;

export class PostgresStore implements Store {
  readonly #pool: pg.Pool;
  readonly #schema: string;
  /** The URL without its password: the only form that appears in messages. */
  readonly #where: string;
  /** What the LISTEN connection is opened with (the pool's settings). */
  readonly #clientConfig: pg.ClientConfig;
  /** The NOTIFY channel of this schema: nodes on other schemas never hear it. */
  readonly #channel: string;
  readonly #listeners = new Set<(topic: ClusterTopic, id: string) => void>();
  #listener: pg.Client | undefined;
  #closed = false;

  /**
   * Connects to the database at `url` (`postgres://user:password@host:port/database`), creates `schema` if needed
   * and brings it up to date. UNAVAILABLE when the server can't be reached or refuses us (the message names the URL
   * without its password); USAGE for a malformed URL or option.
   */
  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
    const schema = options.schema ?? 'public';
    if (!isSchemaName(schema)) {
      throw new AegisError('USAGE', `"${schema}" is not a schema name this store accepts`, {
        hint: 'use lowercase letters, digits and "_", not starting with a digit (at most 63 characters)',
      });
    }
    const poolSize = options.poolSize ?? 10;
    if (!Number.isSafeInteger(poolSize) || poolSize < 1) {
      throw new AegisError('USAGE', `poolSize must be a whole number ≥ 1, got ${poolSize}`);
    }
    const { connectionString, where, startupOptions } = parseUrl(url);
    const clientConfig: pg.ClientConfig = {
      connectionString,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
      application_name: 'aegis',
      // Every connection resolves unqualified names in our schema. The name was checked above: no quoting needed.
      options: `${startupOptions} -c search_path=${schema}`.trim(),
    };
    const pool = new pg.Pool({ ...clientConfig, max: poolSize });
    // A pooled idle connection that dies (server restart) emits 'error' on the pool; without a listener that would
    // crash the process. The next query opens a new connection, or reports UNAVAILABLE.
    pool.on('error', () => {});
    try {
      const client = await pool.connect();
      try {
        await migrate(client, schema);
      } finally {
        client.release();
      }
    } catch (error) {
      await pool.end().catch(() => {});
      throw mapError(error, where);
    }
    return new PostgresStore(pool, schema, where, clientConfig);
  }

  private constructor(pool: pg.Pool, schema: string, where: string, clientConfig: pg.ClientConfig) {
    this.#pool = pool;
    this.#schema = schema;
    this.#where = where;
    this.#clientConfig = clientConfig;
    this.#channel = `aegis_${schema}`.slice(0, 63);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Executions and logs.

  async createExecution(record: ExecutionRecord): Promise<void> {
    try {
      await this.#query(
        `INSERT INTO executions (${INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)`,
        insertParams(record),
      );
    } catch (error) {
      if (sqlState(error) === UNIQUE_VIOLATION) {
        throw new AegisError('INTERNAL', `execution ${record.id} already exists`, { cause: error });
      }
      throw error;
    }
  }

  async updateExecution(id: string, patch: ExecutionPatch, fence?: ExecutionFence): Promise<ExecutionRecord> {
    const { rows } = await this.#query<ExecutionRow>(...this.#updateSql(id, patch, fence));
    const row = rows[0];
    if (row === undefined) {
      if (fence !== undefined) {
        const holder = await this.#query<{ node_id: string | null; fence: string }>(
          'SELECT node_id, fence FROM executions WHERE id = $1',
          [id],
        );
        const now = holder.rows[0];
        if (now !== undefined) throw fencedOut(id, fence, { node: now.node_id, fence: Number(now.fence) });
      }
      throw new AegisError('NOT_FOUND', `no execution with id ${id}`, { details: { id } });
    }
    return toRecord(row);
  }

  /** The UPDATE (or, for an empty patch, SELECT) of `patch`, conditional on `fence` when given. */
  #updateSql(id: string, patch: ExecutionPatch, fence?: ExecutionFence): [string, unknown[]] {
    const params: unknown[] = [id];
    const sets: string[] = [];
    const set = (column: string, value: unknown) => {
      if (value === undefined) return;
      params.push(value);
      sets.push(`${column} = $${params.length}`);
    };
    set('status', patch.status);
    set('exit_code', patch.exitCode);
    set('reason', patch.reason);
    if (patch.output !== undefined) set('output_json', toJson(patch.output));
    if (patch.violations !== undefined) set('violations_json', JSON.stringify(patch.violations));
    set('started_at', patch.startedAt);
    set('finished_at', patch.finishedAt);
    set('duration_ms', patch.durationMs);
    if (patch.owner !== undefined)
      set('owner_json', patch.owner === null ? null : JSON.stringify(patch.owner));
    if (patch.usage !== undefined) set('usage_json', JSON.stringify(patch.usage));
    if (patch.unclaim) sets.push('node_id = NULL', 'lease_expires_at = NULL', 'cancel_requested = false');
    let where = 'id = $1';
    if (fence !== undefined) {
      params.push(fence.nodeId, fence.fence, fence.epoch);
      const [node, token, epoch] = [params.length - 2, params.length - 1, params.length];
      where +=
        ` AND node_id = $${node} AND fence = $${token} AND EXISTS (SELECT 1 FROM nodes n ` +
        `WHERE n.id = $${node} AND n.epoch = $${epoch} AND n.state <> 'dead')`;
    }
    const sql =
      sets.length === 0
        ? `SELECT ${COLUMNS} FROM executions WHERE ${where}`
        : `UPDATE executions SET ${sets.join(', ')} WHERE ${where} RETURNING ${COLUMNS}`;
    return [sql, params];
  }

  async getExecution(id: string): Promise<ExecutionRecord | undefined> {
    const { rows } = await this.#query<ExecutionRow>(`SELECT ${COLUMNS} FROM executions WHERE id = $1`, [id]);
    return rows[0] === undefined ? undefined : toRecord(rows[0]);
  }

  async listExecutions(query: ListExecutionsQuery = {}): Promise<readonly ExecutionRecord[]> {
    const params: unknown[] = [];
    const where: string[] = [];
    if (query.agent !== undefined) {
      params.push(query.agent);
      where.push(`agent_name = $${params.length}`);
    }
    if (query.status !== undefined) {
      params.push(query.status);
      where.push(`status = $${params.length}`);
    }
    if (query.after !== undefined) {
      // Strictly after the cursor in list order (created_at desc, id desc): a row comparison, one index range.
      params.push(query.after.createdAt, query.after.id);
      where.push(`(created_at, id) < ($${params.length - 1}, $${params.length})`);
    }
    params.push(listLimit(query.limit));
    const { rows } = await this.#query<ExecutionRow>(
      `SELECT ${COLUMNS} FROM executions ${where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`} ` +
        `ORDER BY created_at DESC, id DESC LIMIT $${params.length}`,
      params,
    );
    return rows.map(toRecord);
  }

  /** Oldest first. */
  /** Counts and inserts under a transaction-scoped advisory lock on the swarm's root: spawners on any node queue there. */
  async createChildExecution(record: ExecutionRecord, limits: ChildLimits): Promise<ChildInsert> {
    const rootId = record.rootId ?? record.id;
    const parentId = record.parentId ?? null;
    const refused = await this.#transaction(async (client): Promise<ChildInsert | undefined> => {
      await client.query(`SELECT pg_advisory_xact_lock(${LOCK_KEY_SQL})`, [
        `aegis.swarm:${this.#schema}:${rootId}`,
      ]);
      const { rows } = await client.query<{ children: string; tree: string }>(
        'SELECT COUNT(*) FILTER (WHERE parent_id = $2) AS children, COUNT(*) AS tree FROM executions WHERE root_id = $1',
        [rootId, parentId],
      );
      const children = Number(rows[0]?.children ?? 0);
      const tree = Number(rows[0]?.tree ?? 0);
      if (children >= limits.maxChildren) return { ok: false, limit: 'maxChildren', count: children };
      if (limits.maxDescendants !== null && tree >= limits.maxDescendants)
        return { ok: false, limit: 'budget.executions', count: tree };
      await client.query(
        `INSERT INTO executions (${INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)`,
        insertParams(record),
      );
      return undefined;
    });
    return refused ?? { ok: true };
  }

  async listSwarm(rootId: string): Promise<readonly ExecutionRecord[]> {
    const { rows } = await this.#query<ExecutionRow>(
      `SELECT ${COLUMNS} FROM executions WHERE root_id = $1 ORDER BY created_at, id`,
      [rootId],
    );
    return rows.map(toRecord);
  }

  async listUnfinished(): Promise<readonly ExecutionRecord[]> {
    const { rows } = await this.#query<ExecutionRow>(
      `SELECT ${COLUMNS} FROM executions WHERE status = ANY($1::text[]) ORDER BY created_at, id`,
      [UNFINISHED_STATUSES],
    );
    return rows.map(toRecord);
  }

  /**
   * Numbers the lines after the highest stored seq of the execution, in one transaction that first takes an
   * advisory lock on the execution: appends from any number of connections or processes queue there, and each
   * sees the lines committed before it.
   */
  async appendLogs(executionId: string, lines: readonly NewLogLine[]): Promise<void> {
    if (lines.length === 0) return;
    await this.#transaction(async (client) => {
      await client.query(`SELECT pg_advisory_xact_lock(${LOCK_KEY_SQL})`, [
        `aegis.logs:${this.#schema}:${executionId}`,
      ]);
      await client.query(
        'INSERT INTO execution_logs (execution_id, seq, ts, stream, text) ' +
          'SELECT $1, base.seq + l.n, l.ts, l.stream, l.text ' +
          'FROM (SELECT COALESCE(MAX(seq), 0) AS seq FROM execution_logs WHERE execution_id = $1) AS base, ' +
          'unnest($2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS l (ts, stream, text, n)',
        [
          executionId,
          lines.map((line) => line.ts),
          lines.map((line) => line.stream),
          lines.map((line) => Buffer.from(line.text, 'utf8')),
        ],
      );
    });
  }

  /** Without `limit`, every line after `afterSeq` (default 0: all of them). */
  async readLogs(
    executionId: string,
    options: { afterSeq?: number; limit?: number } = {},
  ): Promise<readonly LogLine[]> {
    const limit = options.limit === undefined ? null : Math.max(0, Math.trunc(options.limit));
    const { rows } = await this.#query<LogRow>(
      'SELECT seq, ts, stream, text FROM execution_logs WHERE execution_id = $1 AND seq > $2 ORDER BY seq LIMIT $3',
      [executionId, options.afterSeq ?? 0, limit],
    );
    return rows.map((r) => ({
      seq: r.seq,
      ts: r.ts,
      stream: r.stream as LogStream,
      text: r.text.toString('utf8'),
    }));
  }

  // -------------------------------------------------------------------------------------------------------------
  // Deployed agents.

  async deployRevision(input: NewAgentRevision, bundle: Uint8Array): Promise<DeployOutcome> {
    return this.#transaction(async (client) => {
      // Shared: deploys run side by side; deleteAgent takes it exclusively before it removes unused bundles, so it
      // never removes one a deploy in flight is about to reference.
      await client.query(`SELECT pg_advisory_xact_lock_shared(${LOCK_KEY_SQL})`, [
        `aegis.bundles:${this.#schema}`,
      ]);
      // Lock the agent's row, creating it first on a first deploy (active_revision 0 until revision 1 exists, never
      // visible outside this transaction). Concurrent deploys of one agent queue here. If a concurrent deleteAgent
      // removes the row while we wait, the SELECT finds nothing: create it again.
      let agent: { active_revision: number } | undefined;
      for (let attempt = 0; agent === undefined; attempt++) {
        if (attempt === 3)
          throw new AegisError('INTERNAL', `agent ${input.agent} keeps vanishing during deploy`);
        await client.query(
          'INSERT INTO agents (name, active_revision, created_at, updated_at) VALUES ($1, 0, $2, $2) ' +
            'ON CONFLICT (name) DO NOTHING',
          [input.agent, input.createdAt],
        );
        const locked = await client.query<{ active_revision: number }>(
          'SELECT active_revision FROM agents WHERE name = $1 FOR UPDATE',
          [input.agent],
        );
        agent = locked.rows[0];
      }
      if (agent.active_revision !== 0) {
        const active = await client.query<RevisionRow>(
          `SELECT ${REVISION_COLUMNS} FROM agent_revisions WHERE agent = $1 AND revision = $2`,
          [input.agent, agent.active_revision],
        );
        const row = active.rows[0];
        if (row !== undefined && row.digest === input.digest)
          return { revision: toRevision(row), created: false };
      }
      const highest = await client.query<{ revision: number }>(
        'SELECT COALESCE(MAX(revision), 0) + 1 AS revision FROM agent_revisions WHERE agent = $1',
        [input.agent],
      );
      const revision: AgentRevision = {
        agent: input.agent,
        revision: highest.rows[0]?.revision ?? 1,
        version: input.version,
        digest: input.digest,
        sizeBytes: input.sizeBytes,
        description: input.description,
        createdAt: input.createdAt,
        deployedBy: input.deployedBy,
      };
      // Send the bytes only when the digest is new (a bundle may be tens of MiB).
      const known = await client.query('SELECT 1 FROM bundles WHERE digest = $1', [input.digest]);
      if (known.rowCount === 0) {
        await client.query(
          'INSERT INTO bundles (digest, bytes, size_bytes, created_at) VALUES ($1, $2, $3, $4) ' +
            'ON CONFLICT (digest) DO NOTHING',
          [input.digest, bundle, bundle.byteLength, input.createdAt],
        );
      }
      await client.query(
        `INSERT INTO agent_revisions (${REVISION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [
          revision.agent,
          revision.revision,
          revision.version,
          revision.digest,
          revision.sizeBytes,
          revision.description,
          revision.createdAt,
          revision.deployedBy,
        ],
      );
      await client.query('UPDATE agents SET active_revision = $2, updated_at = $3 WHERE name = $1', [
        input.agent,
        revision.revision,
        input.createdAt,
      ]);
      return { revision, created: true };
    });
  }

  async getAgent(name: string): Promise<AgentSummary | undefined> {
    const { rows } = await this.#query<SummaryRow>(`${SUMMARY_SELECT} WHERE a.name = $1`, [name]);
    return rows[0] === undefined ? undefined : toSummary(rows[0]);
  }

  async listAgents(): Promise<readonly AgentSummary[]> {
    const { rows } = await this.#query<SummaryRow>(`${SUMMARY_SELECT} ORDER BY a.name`);
    return rows.map(toSummary);
  }

  async listRevisions(name: string): Promise<readonly AgentRevision[]> {
    const { rows } = await this.#query<RevisionRow>(
      `SELECT ${REVISION_COLUMNS} FROM agent_revisions WHERE agent = $1 ORDER BY revision DESC`,
      [name],
    );
    return rows.map(toRevision);
  }

  async setActiveRevision(name: string, revision: number, at: string): Promise<AgentSummary> {
    return this.#transaction(async (client) => {
      const agent = await client.query('SELECT 1 FROM agents WHERE name = $1 FOR UPDATE', [name]);
      if (agent.rowCount === 0) {
        throw new AegisError('NOT_FOUND', `no agent named ${name}`, { details: { name } });
      }
      const exists = await client.query('SELECT 1 FROM agent_revisions WHERE agent = $1 AND revision = $2', [
        name,
        revision,
      ]);
      if (exists.rowCount === 0) {
        throw new AegisError('NOT_FOUND', `agent ${name} has no revision ${revision}`, {
          details: { name, revision },
        });
      }
      await client.query('UPDATE agents SET active_revision = $2, updated_at = $3 WHERE name = $1', [
        name,
        revision,
        at,
      ]);
      const { rows } = await client.query<SummaryRow>(`${SUMMARY_SELECT} WHERE a.name = $1`, [name]);
      if (rows[0] === undefined) throw new AegisError('INTERNAL', `agent ${name} vanished while activating`);
      return toSummary(rows[0]);
    });
  }

  async deleteAgent(name: string): Promise<boolean> {
    return this.#transaction(async (client) => {
      await client.query(`SELECT pg_advisory_xact_lock(${LOCK_KEY_SQL})`, [`aegis.bundles:${this.#schema}`]);
      const agent = await client.query('SELECT 1 FROM agents WHERE name = $1 FOR UPDATE', [name]);
      if (agent.rowCount === 0) return false;
      const { rows } = await client.query<{ digest: string }>(
        'DELETE FROM agent_revisions WHERE agent = $1 RETURNING digest',
        [name],
      );
      await client.query('DELETE FROM agents WHERE name = $1', [name]);
      await client.query(
        'DELETE FROM bundles b WHERE b.digest = ANY($1::text[]) ' +
          'AND NOT EXISTS (SELECT 1 FROM agent_revisions r WHERE r.digest = b.digest)',
        [[...new Set(rows.map((row) => row.digest))]],
      );
      return true;
    });
  }

  async readBundle(digest: string): Promise<Uint8Array | undefined> {
    const { rows } = await this.#query<{ bytes: Buffer }>('SELECT bytes FROM bundles WHERE digest = $1', [
      digest,
    ]);
    return rows[0]?.bytes;
  }

  // -------------------------------------------------------------------------------------------------------------
  // API keys.

  async createKey(record: ApiKeyRecord): Promise<void> {
    try {
      await this.#query(`INSERT INTO api_keys (${KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, [
        record.id,
        record.name,
        record.hash,
        record.prefix,
        JSON.stringify(record.scopes),
        record.rateLimit === null ? null : JSON.stringify(record.rateLimit),
        record.createdAt,
        record.revokedAt,
        record.lastUsedAt,
      ]);
    } catch (error) {
      if (sqlState(error) === UNIQUE_VIOLATION) {
        throw new AegisError('CONFLICT', `an API key with id ${record.id} or the same hash exists already`, {
          cause: error,
          details: { id: record.id },
        });
      }
      throw error;
    }
  }

  async findKeyByHash(hash: string): Promise<ApiKeyRecord | undefined> {
    const { rows } = await this.#query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE hash = $1`, [hash]);
    return rows[0] === undefined ? undefined : toKey(rows[0]);
  }

  async listKeys(): Promise<readonly ApiKeyRecord[]> {
    const { rows } = await this.#query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys ORDER BY created_at, id`);
    return rows.map(toKey);
  }

  async revokeKey(id: string, at: string): Promise<ApiKeyRecord> {
    const { rows } = await this.#query<KeyRow>(
      `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING ${KEY_COLUMNS}`,
      [id, at],
    );
    if (rows[0] === undefined)
      throw new AegisError('NOT_FOUND', `no API key with id ${id}`, { details: { id } });
    return toKey(rows[0]);
  }

  async touchKey(id: string, at: string): Promise<void> {
    await this.#query('UPDATE api_keys SET last_used_at = $2 WHERE id = $1', [id, at]);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Live sandboxes.

  async putSandbox(record: SandboxRecord): Promise<void> {
    await this.#query(
      `INSERT INTO sandboxes (id, status, created_at, record_json) VALUES ($1, $2, $3, $4)
       ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, record_json = EXCLUDED.record_json`,
      [record.id, record.status, record.createdAt, JSON.stringify(record)],
    );
  }

  async getLlmSpend(scope: string, windowStartMs: number): Promise<LlmSpend> {
    const { rows } = await this.#query<{ calls: string; tokens: string; usd: number }>(
      'SELECT calls, tokens, usd FROM llm_spend WHERE scope = $1 AND window_start = $2',
      [scope, windowStartMs],
    );
    const row = rows[0];
    return row === undefined
      ? { calls: 0, tokens: 0, usd: 0 }
      : { calls: Number(row.calls), tokens: Number(row.tokens), usd: Number(row.usd) };
  }

  async addLlmSpend(scope: string, windowStartMs: number, delta: LlmSpend): Promise<void> {
    await this.#query(
      `INSERT INTO llm_spend (scope, window_start, calls, tokens, usd) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (scope, window_start) DO UPDATE SET calls = llm_spend.calls + EXCLUDED.calls,
         tokens = llm_spend.tokens + EXCLUDED.tokens, usd = llm_spend.usd + EXCLUDED.usd`,
      [scope, windowStartMs, delta.calls, delta.tokens, delta.usd],
    );
  }

  // -------------------------------------------------------------------------------------------------------------
  // Edge nodes.

  async createEdgeToken(record: EdgeTokenRecord): Promise<void> {
    try {
      await this.#query(
        'INSERT INTO edge_tokens (id, hash, used_at, used_by, record_json) VALUES ($1, $2, $3, $4, $5)',
        [record.id, record.hash, record.usedAt, record.usedBy, JSON.stringify(record)],
      );
    } catch (error) {
      if (sqlState(error) === UNIQUE_VIOLATION) {
        throw new AegisError('CONFLICT', `an edge token with id ${record.id} or the same hash exists`, {
          cause: error,
        });
      }
      throw error;
    }
  }

  async consumeEdgeToken(hash: string, at: string, nodeId: string): Promise<EdgeTokenRecord | undefined> {
    // One statement (row lock): of two enrolments racing with one token, exactly one sees a row.
    const { rows } = await this.#query<{ record_json: string }>(
      'UPDATE edge_tokens SET used_at = $1, used_by = $2 WHERE hash = $3 AND used_at IS NULL RETURNING record_json',
      [at, nodeId, hash],
    );
    return rows[0] === undefined ? undefined : (JSON.parse(rows[0].record_json) as EdgeTokenRecord);
  }

  async putEdgeNode(record: EdgeNodeRecord): Promise<void> {
    await this.#query(
      `INSERT INTO edge_nodes (id, enrolled_at, record_json) VALUES ($1, $2, $3)
       ON CONFLICT (id) DO UPDATE SET record_json = EXCLUDED.record_json`,
      [record.id, record.enrolledAt, JSON.stringify(record)],
    );
  }

  async getEdgeNode(id: string): Promise<EdgeNodeRecord | undefined> {
    const { rows } = await this.#query<{ record_json: string }>(
      'SELECT record_json FROM edge_nodes WHERE id = $1',
      [id],
    );
    return rows[0] === undefined ? undefined : (JSON.parse(rows[0].record_json) as EdgeNodeRecord);
  }

  async listEdgeNodes(): Promise<readonly EdgeNodeRecord[]> {
    const { rows } = await this.#query<{ record_json: string }>(
      'SELECT record_json FROM edge_nodes ORDER BY enrolled_at, id',
    );
    return rows.map((row) => JSON.parse(row.record_json) as EdgeNodeRecord);
  }

  async getSandbox(id: string): Promise<SandboxRecord | undefined> {
    const { rows } = await this.#query<{ record_json: string }>(
      'SELECT record_json FROM sandboxes WHERE id = $1',
      [id],
    );
    return rows[0] === undefined ? undefined : (JSON.parse(rows[0].record_json) as SandboxRecord);
  }

  async listSandboxes(
    filter: { unfinished?: boolean; limit?: number } = {},
  ): Promise<readonly SandboxRecord[]> {
    const where = filter.unfinished ? "WHERE status <> 'terminated'" : '';
    const { rows } = await this.#query<{ record_json: string }>(
      `SELECT record_json FROM sandboxes ${where} ORDER BY created_at DESC, id DESC LIMIT $1`,
      [filter.limit ?? null],
    );
    return rows.map((row) => JSON.parse(row.record_json) as SandboxRecord);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Retention. Deleted rows' space is reused by PostgreSQL (autovacuum), not returned to the OS (that needs
  // VACUUM FULL, which locks the tables: an operator's decision, not a background job's).

  async pruneExecutions(batch: PruneBatch): Promise<PrunedRows> {
    return this.#prune(batch, false);
  }

  async pruneLogs(batch: PruneBatch): Promise<PrunedRows> {
    return this.#prune(batch, true);
  }

  async pruneSandboxes(batch: Omit<PruneBatch, 'agents' | 'exceptAgents'>): Promise<number> {
    // A terminated sandbox ended by its expiresAt (it is killed then at the latest).
    const where = "status = 'terminated' AND (record_json::jsonb ->> 'expiresAt') < $1";
    if (batch.dryRun) {
      const { rows } = await this.#query<{ n: string }>(
        `SELECT COUNT(*) AS n FROM sandboxes WHERE ${where}`,
        [batch.before],
      );
      return Number(rows[0]?.n ?? 0);
    }
    const result = await this.#query(
      `DELETE FROM sandboxes WHERE id IN (SELECT id FROM sandboxes WHERE ${where} ORDER BY created_at LIMIT $2)`,
      [batch.before, Math.max(1, Math.trunc(batch.limit))],
    );
    return result.rowCount ?? 0;
  }

  async #prune(batch: PruneBatch, logsOnly: boolean): Promise<PrunedRows> {
    const params: unknown[] = [[...TERMINAL_STATUSES], batch.before];
    let where = 'WHERE e.status = ANY($1::text[]) AND COALESCE(e.finished_at, e.created_at) < $2';
    if (batch.notBefore !== undefined) {
      params.push(batch.notBefore);
      where += ` AND COALESCE(e.finished_at, e.created_at) >= $${params.length}`;
    }
    if (batch.agents !== undefined) {
      params.push([...batch.agents]);
      where += ` AND e.agent_name = ANY($${params.length}::text[])`;
    }
    if (batch.exceptAgents !== undefined && batch.exceptAgents.length > 0) {
      params.push([...batch.exceptAgents]);
      where += ` AND NOT (e.agent_name = ANY($${params.length}::text[]))`;
    }
    if (logsOnly) where += ' AND EXISTS (SELECT 1 FROM execution_logs l WHERE l.execution_id = e.id)';
    const limit = batch.dryRun
      ? ''
      : ` ORDER BY COALESCE(e.finished_at, e.created_at) LIMIT ${Math.max(1, Math.trunc(batch.limit))} FOR UPDATE SKIP LOCKED`;
    return this.#transaction(async (client) => {
      const ids = (
        await client.query<{ id: string }>(`SELECT e.id FROM executions e ${where}${limit}`, params)
      ).rows.map((row) => row.id);
      if (ids.length === 0) return { executions: 0, logLines: 0, logBytes: 0 };
      const logs = await client.query<{ n: string; bytes: string }>(
        'SELECT COUNT(*) AS n, COALESCE(SUM(octet_length(text)), 0) AS bytes FROM execution_logs WHERE execution_id = ANY($1::text[])',
        [ids],
      );
      if (!batch.dryRun) {
        await client.query('DELETE FROM execution_logs WHERE execution_id = ANY($1::text[])', [ids]);
        if (!logsOnly) {
          // The swarms these executions belong to: their bus messages go once no execution of the swarm is left
          // (lock rows stay: a lock's fencing token must never go back).
          const swarms = (
            await client.query<{ swarm: string }>(
              'SELECT DISTINCT COALESCE(root_id, id) AS swarm FROM executions WHERE id = ANY($1::text[])',
              [ids],
            )
          ).rows.map((row) => row.swarm);
          await client.query('DELETE FROM executions WHERE id = ANY($1::text[])', [ids]);
          for (const table of ['swarm_messages', 'swarm_topics']) {
            await client.query(
              `DELETE FROM ${table} WHERE swarm = ANY($1::text[]) AND NOT EXISTS ` +
                `(SELECT 1 FROM executions x WHERE x.id = ${table}.swarm OR x.root_id = ${table}.swarm)`,
              [swarms],
            );
          }
        }
      }
      return {
        executions: ids.length,
        logLines: Number(logs.rows[0]?.n ?? 0),
        logBytes: Number(logs.rows[0]?.bytes ?? 0),
      };
    });
  }

  // -------------------------------------------------------------------------------------------------------------
  // Cluster (ADR 0101): the node registry, claims with FOR UPDATE SKIP LOCKED, fencing, LISTEN/NOTIFY.

  async registerNode(registration: NodeRegistration): Promise<NodeRecord> {
    const { rows } = await this.#query<NodeRow>(
      `INSERT INTO nodes (${NODE_COLUMNS}) VALUES ($1, $2, 'live', $3, $4, $5, $6, $7, $8, $8, $9, 1)
       ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, state = 'live', labels_json = EXCLUDED.labels_json,
         runtimes_json = EXCLUDED.runtimes_json, capacity = EXCLUDED.capacity, host = EXCLUDED.host,
         version = EXCLUDED.version, started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at,
         lease_expires_at = EXCLUDED.lease_expires_at, epoch = nodes.epoch + 1
       RETURNING ${NODE_COLUMNS}`,
      [
        registration.id,
        registration.kind,
        JSON.stringify(registration.labels),
        JSON.stringify(registration.runtimes),
        registration.capacity,
        registration.host,
        registration.version,
        registration.at,
        isoPlus(registration.at, registration.leaseMs),
      ],
    );
    return toNode(rows[0]!);
  }

  async heartbeatNode(
    heartbeat: Heartbeat,
  ): Promise<{ readonly cancelRequested: readonly string[] } | undefined> {
    const lease = isoPlus(heartbeat.at, heartbeat.leaseMs);
    return this.#transaction(async (client) => {
      const renewed = await client.query(
        "UPDATE nodes SET heartbeat_at = $3, lease_expires_at = $4 WHERE id = $1 AND epoch = $2 AND state <> 'dead'",
        [heartbeat.nodeId, heartbeat.epoch, heartbeat.at, lease],
      );
      if (renewed.rowCount === 0) return undefined;
      const { rows } = await client.query<{ id: string; cancel_requested: boolean }>(
        `UPDATE executions SET lease_expires_at = $3 WHERE node_id = $1 AND node_epoch = $2 AND status IN ${CLAIMED_SQL} ` +
          'RETURNING id, cancel_requested',
        [heartbeat.nodeId, heartbeat.epoch, lease],
      );
      return { cancelRequested: rows.filter((row) => row.cancel_requested).map((row) => row.id) };
    });
  }

  async listNodes(): Promise<readonly NodeStatus[]> {
    const { rows } = await this.#query<NodeRow & { running: string }>(
      `SELECT ${NODE_COLUMNS}, (SELECT count(*) FROM executions e WHERE e.node_id = nodes.id AND e.status IN ${CLAIMED_SQL}) AS running ` +
        'FROM nodes ORDER BY id',
    );
    return rows.map((row) => ({ ...toNode(row), running: Number(row.running) }));
  }

  async setNodeState(nodeId: string, epoch: number, state: NodeState, at: string): Promise<boolean> {
    const { rowCount } = await this.#query(
      "UPDATE nodes SET state = $3, heartbeat_at = $4 WHERE id = $1 AND epoch = $2 AND state <> 'dead'",
      [nodeId, epoch, state, at],
    );
    return (rowCount ?? 0) > 0;
  }

  async declareNodeDead(nodeId: string, epoch: number, at: string): Promise<boolean> {
    const { rowCount } = await this.#query(
      "UPDATE nodes SET state = 'dead', epoch = epoch + 1 WHERE id = $1 AND epoch = $2 AND state <> 'dead' AND lease_expires_at < $3",
      [nodeId, epoch, at],
    );
    return (rowCount ?? 0) > 0;
  }

  async claimExecutions(request: ClaimRequest): Promise<readonly ClaimedExecution<ExecutionRecord>[]> {
    if (request.limit <= 0 || request.runtimes.length === 0) return [];
    const { rows } = await this.#query<ExecutionRow & { fence: string }>(
      `WITH picked AS (
         SELECT id FROM executions
         WHERE status = 'queued' AND node_id IS NULL AND runtime = ANY($1::text[])
           AND NOT (agent_name = ANY($2::text[]))
           AND (placement_json IS NULL OR placement_json <@ $3::jsonb)
           AND EXISTS (SELECT 1 FROM nodes WHERE id = $4 AND epoch = $5 AND state = 'live')
         ORDER BY priority DESC, created_at, id
         LIMIT $6
         FOR UPDATE SKIP LOCKED
       )
       UPDATE executions e SET node_id = $4, node_epoch = $5, fence = e.fence + 1, lease_expires_at = $7,
         owner_json = $8
       FROM picked WHERE e.id = picked.id
       RETURNING ${PREFIXED_COLUMNS}, e.fence`,
      [
        request.runtimes,
        request.excludeAgents ?? [],
        JSON.stringify(request.labels),
        request.nodeId,
        request.epoch,
        request.limit,
        isoPlus(request.at, request.leaseMs),
        JSON.stringify(request.owner),
      ],
    );
    return rows
      .sort(
        (a, b) =>
          b.priority - a.priority ||
          (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : 1),
      )
      .map((row) => ({
        record: toRecord(row),
        fence: { nodeId: request.nodeId, epoch: request.epoch, fence: Number(row.fence) },
      }));
  }

  async listOrphanedExecutions(): Promise<readonly ClaimedExecution<ExecutionRecord>[]> {
    const { rows } = await this.#query<ExecutionRow & { node_epoch: string; fence: string }>(
      `SELECT ${PREFIXED_COLUMNS}, e.node_epoch, e.fence FROM executions e LEFT JOIN nodes n ON n.id = e.node_id
       WHERE e.node_id IS NOT NULL AND e.status IN ${CLAIMED_SQL}
         AND (n.id IS NULL OR n.state = 'dead' OR n.epoch <> e.node_epoch)
       ORDER BY e.created_at, e.id`,
    );
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
    const { rows } = await this.#query<ExecutionRow & { fence: string }>(
      `UPDATE executions e SET node_id = $5, node_epoch = $6, fence = e.fence + 1, lease_expires_at = $7,
         owner_json = $8
       WHERE e.id = $1 AND e.node_id = $2 AND e.node_epoch = $3 AND e.fence = $4 AND e.status IN ${CLAIMED_SQL}
       RETURNING ${PREFIXED_COLUMNS}, e.fence`,
      [
        id,
        expected.nodeId,
        expected.epoch,
        expected.fence,
        claimant.nodeId,
        claimant.epoch,
        isoPlus(at, leaseMs),
        JSON.stringify(claimant.owner),
      ],
    );
    const row = rows[0];
    return row === undefined
      ? undefined
      : {
          record: toRecord(row),
          fence: { nodeId: claimant.nodeId, epoch: claimant.epoch, fence: Number(row.fence) },
        };
  }

  async updateQueuedExecution(id: string, patch: ExecutionPatch): Promise<ExecutionRecord | undefined> {
    return this.#transaction(async (client) => {
      const bumped = await client.query(
        "UPDATE executions SET fence = fence + 1 WHERE id = $1 AND status = 'queued' AND node_id IS NULL",
        [id],
      );
      if (bumped.rowCount === 0) return undefined;
      const { rows } = await client.query<ExecutionRow>(...this.#updateSql(id, patch));
      return rows[0] === undefined ? undefined : toRecord(rows[0]);
    });
  }

  async requestCancel(id: string): Promise<boolean> {
    const { rowCount } = await this.#query(
      'UPDATE executions SET cancel_requested = true WHERE id = $1 AND status = ANY($2::text[])',
      [id, UNFINISHED_STATUSES],
    );
    return (rowCount ?? 0) > 0;
  }

  async countQueued(): Promise<number> {
    const { rows } = await this.#query<{ n: string }>(
      "SELECT COUNT(*) AS n FROM executions WHERE status = 'queued'",
    );
    return Number(rows[0]?.n ?? 0);
  }

  /** NOTIFY on this schema's channel: every node LISTENing on it (this one too) hears `topic:id`. */
  async signal(topic: ClusterTopic, id: string): Promise<void> {
    await this.#query('SELECT pg_notify($1, $2)', [this.#channel, `${topic}:${id}`]);
  }

  onSignal(listener: (topic: ClusterTopic, id: string) => void): () => void {
    this.#listeners.add(listener);
    if (this.#listener === undefined) void this.#listen();
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** One dedicated connection LISTENs; when it breaks it is opened again a second later (nodes poll meanwhile). */
  async #listen(): Promise<void> {
    if (this.#closed || this.#listeners.size === 0) return;
    const client = new pg.Client(this.#clientConfig);
    this.#listener = client;
    const retry = () => {
      if (this.#listener !== client) return;
      this.#listener = undefined;
      client.end().catch(() => {});
      if (!this.#closed) setTimeout(() => void this.#listen(), 1000).unref();
    };
    client.on('error', retry);
    client.on('end', retry);
    client.on('notification', (message) => {
      const payload = message.payload ?? '';
      const at = payload.indexOf(':');
      if (at === -1) return;
      const topic = payload.slice(0, at) as ClusterTopic;
      for (const listener of [...this.#listeners]) {
        try {
          listener(topic, payload.slice(at + 1));
        } catch {
          // a listener's failure is its own
        }
      }
    });
    try {
      await client.connect();
      await client.query(`LISTEN "${this.#channel}"`);
    } catch {
      retry();
    }
  }

  /** The swarm bus and locks in this database, over this store's pool (adapters/store/postgres/swarm-store.ts). */
  swarmStore(): PostgresSwarmStore {
    return new PostgresSwarmStore(this.#pool, (error) => mapError(error, this.#where));
  }

  /** Closes the pool (waiting for queries in flight) and the LISTEN connection. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const listener = this.#listener;
    this.#listener = undefined;
    await listener?.end().catch(() => {});
    await this.#pool.end();
  }

  // -------------------------------------------------------------------------------------------------------------

  async #query<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    try {
      return await this.#pool.query<R>(sql, params);
    } catch (error) {
      throw mapError(error, this.#where);
    }
  }

  /** Runs `body` on one connection inside BEGIN … COMMIT; rolls back when it throws. */
  async #transaction<T>(body: (client: Queryable) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      throw mapError(error, this.#where);
    }
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await body(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      try {
        await client.query('ROLLBACK');
      } catch (rollbackError) {
        // The connection is gone or unusable: drop it from the pool rather than hand it out again.
        broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
      }
      throw mapError(error, this.#where);
    } finally {
      client.release(broken);
    }
  }
}

/**
 * Splits what we hand to `pg` from what we show: the URL for messages has no password (neither in the userinfo nor
 * as a `password` parameter); a `?options=` parameter is taken out so that our search_path can be added to it.
 */
export function parseUrl(url: string): { connectionString: string; where: string; startupOptions: string } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // Never echo the text: it may hold a password.
    throw new AegisError('USAGE', 'the PostgreSQL URL is not a URL', {
      hint: 'write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE',
    });
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new AegisError(
      'USAGE',
      `the PostgreSQL URL must start with postgres://, not ${parsed.protocol}//`,
      {
        hint: 'write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE',
      },
    );
  }
  const startupOptions = parsed.searchParams.get('options') ?? '';
  parsed.searchParams.delete('options');
  const connectionString = parsed.toString();
  parsed.password = '';
  parsed.searchParams.delete('password');
  return { connectionString, where: parsed.toString(), startupOptions };
}

/** Connection-level failures (no server, refused login, server going away): UNAVAILABLE. Everything else as is. */
export function mapError(error: unknown, where: string): unknown {
  if (error instanceof AegisError || !(error instanceof Error)) return error;
  if (!isConnectionError(error)) return error;
  const code = sqlState(error) ?? (error as NodeJS.ErrnoException).code;
  // Node reports a refused dual-stack connect as an AggregateError with an empty message.
  const reason = error.message || code || error.name;
  return new AegisError('UNAVAILABLE', `cannot reach PostgreSQL at ${where}: ${reason}`, {
    cause: error,
    details: code === undefined ? {} : { code },
    hint: hintFor(code),
  });
}

const NETWORK_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ENOENT', // unix socket path missing
]);

function isConnectionError(error: Error): boolean {
  const state = sqlState(error);
  if (state !== undefined) {
    // 08: connection exception; 28: invalid authorization; 3D000: no such database; 53300: too many connections;
    // 57P01-57P03: the server is shutting down, crashed or still starting.
    return (
      state.startsWith('08') ||
      state.startsWith('28') ||
      state === '3D000' ||
      state === '53300' ||
      state === '57P01' ||
      state === '57P02' ||
      state === '57P03'
    );
  }
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== undefined && NETWORK_ERRORS.has(code)) return true;
  if (error instanceof AggregateError)
    return error.errors.some((e) => e instanceof Error && isConnectionError(e));
  return /Connection terminated|timeout exceeded when trying to connect|connect ECONN/i.test(error.message);
}

function hintFor(code: string | undefined): string {
  if (code?.startsWith('28'))
    return 'check the user and password in the PostgreSQL URL, and pg_hba.conf on the server';
  if (code === '3D000') return 'create the database (createdb NAME) or fix its name in the URL';
  return 'check that PostgreSQL runs and accepts TCP connections at that host and port (pg_isready -h HOST -p PORT)';
}

/** The SQLSTATE of a PostgreSQL error, if `error` is one. */
function sqlState(error: unknown): string | undefined {
  return error instanceof pg.DatabaseError ? error.code : undefined;
}

/** The parameters of an INSERT of INSERT_COLUMNS, in order. */
function insertParams(record: ExecutionRecord): unknown[] {
  return [
    record.id,
    record.agent.name,
    record.agent.version,
    record.agent.revision ?? null,
    record.runtime,
    record.status,
    record.exitCode,
    record.reason,
    toJson(record.input),
    toJson(record.output),
    JSON.stringify(record.violations),
    record.createdAt,
    record.startedAt,
    record.finishedAt,
    record.durationMs,
    record.owner === null ? null : JSON.stringify(record.owner),
    record.usage === undefined ? null : JSON.stringify(record.usage),
    record.placement === undefined ? null : JSON.stringify(record.placement),
    record.priority ?? 0,
    record.parentId ?? null,
    record.rootId ?? null,
    record.authority === undefined ? null : JSON.stringify(record.authority),
  ];
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
    input: row.input_json ?? null,
    output: row.output_json ?? null,
    violations: row.violations_json,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    durationMs: row.duration_ms,
    owner: row.owner_json,
    ...(row.usage_json === null ? {} : { usage: row.usage_json }),
    ...(row.placement_json === null ? {} : { placement: row.placement_json }),
    ...(row.priority === 0 ? {} : { priority: row.priority }),
    ...(row.node_id === null ? {} : { node: row.node_id }),
    ...(row.parent_id === null ? {} : { parentId: row.parent_id }),
    ...(row.root_id === null ? {} : { rootId: row.root_id }),
    ...(row.authority_json === null ? {} : { authority: row.authority_json }),
  };
}

function toNode(row: NodeRow): NodeRecord {
  return {
    id: row.id,
    kind: row.kind as NodeKind,
    state: row.state as NodeState,
    labels: row.labels_json,
    runtimes: row.runtimes_json,
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
    sizeBytes: Number(row.size_bytes),
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
    revisions: Number(row.revision_count),
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
    scopes: row.scopes_json,
    rateLimit: row.rate_json,
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
    lastUsedAt: row.last_used_at,
  };
}
