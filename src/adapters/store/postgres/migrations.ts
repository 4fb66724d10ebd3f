/**
 * Schema of the PostgreSQL store, as an ordered list of migrations (same rules as sqlite/migrations.ts: append with
 * the next id, never edit one that has shipped).
 *
 * Column choices (docs/adr/0009-postgres-store.md):
 * - Timestamps are TEXT holding the ISO strings the app hands in, so they read back exactly as given (a
 *   `timestamptz` would normalise precision and offset). Sorting them as text is chronological for the UTC `Z`
 *   strings the app writes.
 * - Every text column that is sorted or compared is `COLLATE "C"`: byte order, the order SQLite and the in-memory
 *   store use, whatever the database's locale.
 * - Agent-supplied JSON (input, output, violations) is `json`: verbatim text, so key order survives and strings may
 *   hold `\u0000`, which `jsonb` refuses. Our own small structures (owner, scopes, rate limit) are `jsonb`.
 * - Log text is `bytea` (UTF-8): PostgreSQL text cannot hold NUL, and agents print anything.
 */
import type { PoolClient } from 'pg';

export interface Migration {
  /** Strictly increasing, starting at 1. */
  readonly id: number;
  /** Short description, for humans reading this file. */
  readonly name: string;
  /** One or more statements (no parameters), run inside the migration transaction. */
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    id: 1,
    name: 'executions and logs, deployed agents (revisions, bundles), API keys',
    sql: `
      CREATE TABLE executions (
        id              TEXT COLLATE "C" PRIMARY KEY,
        agent_name      TEXT COLLATE "C" NOT NULL,
        agent_version   TEXT NOT NULL,
        agent_revision  INTEGER,
        runtime         TEXT NOT NULL,
        status          TEXT COLLATE "C" NOT NULL,
        exit_code       INTEGER,
        reason          TEXT,
        input_json      JSON,
        output_json     JSON,
        violations_json JSON NOT NULL DEFAULT '[]',
        created_at      TEXT COLLATE "C" NOT NULL,
        started_at      TEXT,
        finished_at     TEXT,
        duration_ms     DOUBLE PRECISION,
        owner_json      JSONB
      );
      -- List order is (created_at desc, id desc): a page, filtered or not, is one index range.
      CREATE INDEX executions_by_created_at_id ON executions (created_at, id);
      CREATE INDEX executions_by_agent_created_at_id ON executions (agent_name, created_at, id);
      CREATE INDEX executions_by_status_created_at_id ON executions (status, created_at, id);

      CREATE TABLE execution_logs (
        execution_id TEXT COLLATE "C" NOT NULL,
        seq          INTEGER NOT NULL,
        ts           TEXT NOT NULL,
        stream       TEXT NOT NULL,
        text         BYTEA NOT NULL,
        PRIMARY KEY (execution_id, seq)
      );

      -- One row per .tar.gz, by content address; shared by every revision (of any agent) with that digest.
      CREATE TABLE bundles (
        digest     TEXT COLLATE "C" PRIMARY KEY,
        bytes      BYTEA NOT NULL,
        size_bytes BIGINT NOT NULL,
        created_at TEXT NOT NULL
      );
      -- Bundles are large and written once: keep them out of the compression attempt, stored out of line.
      ALTER TABLE bundles ALTER COLUMN bytes SET STORAGE EXTERNAL;

      CREATE TABLE agents (
        name            TEXT COLLATE "C" PRIMARY KEY,
        -- 0 only inside the transaction of an agent's first deploy, before its revision 1 exists.
        active_revision INTEGER NOT NULL,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL
      );

      CREATE TABLE agent_revisions (
        agent       TEXT COLLATE "C" NOT NULL REFERENCES agents (name),
        revision    INTEGER NOT NULL,
        version     TEXT NOT NULL,
        digest      TEXT COLLATE "C" NOT NULL REFERENCES bundles (digest),
        size_bytes  BIGINT NOT NULL,
        description TEXT,
        created_at  TEXT NOT NULL,
        deployed_by TEXT NOT NULL,
        PRIMARY KEY (agent, revision)
      );
      -- Is a bundle still used? (deleteAgent)
      CREATE INDEX agent_revisions_by_digest ON agent_revisions (digest);

      CREATE TABLE api_keys (
        id           TEXT COLLATE "C" PRIMARY KEY,
        name         TEXT NOT NULL,
        hash         TEXT COLLATE "C" NOT NULL UNIQUE,
        prefix       TEXT NOT NULL,
        scopes_json  JSONB NOT NULL,
        rate_json    JSONB,
        created_at   TEXT COLLATE "C" NOT NULL,
        revoked_at   TEXT,
        last_used_at TEXT
      );
      CREATE INDEX api_keys_by_created_at ON api_keys (created_at, id);
    `,
  },
  {
    id: 2,
    name: 'usage of an execution (LLM calls, tokens, USD)',
    sql: `
      -- ExecutionUsage ({"llm": {"calls", "inputTokens", "outputTokens", "usd"}}), our own structure: jsonb.
      ALTER TABLE executions ADD COLUMN usage_json JSONB;
    `,
  },
  {
    id: 3,
    name: 'live sandboxes (so a restart can account for the ones a crash left behind)',
    sql: `
      CREATE TABLE sandboxes (
        id          TEXT COLLATE "C" PRIMARY KEY,
        status      TEXT COLLATE "C" NOT NULL,
        created_at  TEXT COLLATE "C" NOT NULL,
        record_json TEXT NOT NULL
      );
      CREATE INDEX sandboxes_by_created_at ON sandboxes (created_at, id);
    `,
  },
  {
    id: 4,
    name: 'spend of the server LLM budgets (llm.budgets), per scope and window',
    sql: `
      CREATE TABLE llm_spend (
        scope        TEXT COLLATE "C" NOT NULL,
        window_start BIGINT NOT NULL,
        calls        BIGINT NOT NULL,
        tokens       BIGINT NOT NULL,
        usd          DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (scope, window_start)
      );
    `,
  },
  {
    id: 5,
    name: 'Cortex memories and their vectors (adapters/cortex/postgres-vector-store.ts)',
    sql: `
      CREATE TABLE memories (
        id           TEXT COLLATE "C" PRIMARY KEY,
        agent        TEXT COLLATE "C" NOT NULL,
        namespace    TEXT COLLATE "C" NOT NULL,
        text         TEXT NOT NULL,
        meta         JSONB NOT NULL,
        embedder_id  TEXT COLLATE "C" NOT NULL,
        dimension    INTEGER NOT NULL,
        created_at   TEXT COLLATE "C" NOT NULL,
        expires_at   TEXT COLLATE "C",
        execution_id TEXT COLLATE "C",
        outcome      TEXT COLLATE "C",
        source       TEXT COLLATE "C" NOT NULL,
        vector       BYTEA NOT NULL
      );
      CREATE INDEX memories_scope_time ON memories (agent, namespace, created_at DESC, id DESC);
      CREATE INDEX memories_scope_embedder ON memories (agent, namespace, embedder_id, dimension);
      CREATE INDEX memories_expiry ON memories (expires_at) WHERE expires_at IS NOT NULL;
      `,
  },
  {
    id: 6,
    name: 'retention: finished executions by finish time (aegis prune, --retain)',
    sql: `
      CREATE INDEX executions_by_status_finished_at ON executions (status, finished_at);
    `,
  },
  {
    id: 7,
    name: 'cluster: node registry; executions claimed by a node with a fence and a lease (ADR 0101)',
    sql: `
      CREATE TABLE nodes (
        id               TEXT COLLATE "C" PRIMARY KEY,
        kind             TEXT NOT NULL,
        state            TEXT NOT NULL,
        labels_json      JSONB NOT NULL,
        runtimes_json    JSONB NOT NULL,
        capacity         INTEGER NOT NULL,
        host             TEXT NOT NULL,
        version          TEXT NOT NULL,
        started_at       TEXT NOT NULL,
        heartbeat_at     TEXT NOT NULL,
        lease_expires_at TEXT COLLATE "C" NOT NULL,
        epoch            BIGINT NOT NULL
      );
      -- The node holding an execution (NULL: queued, or aegis run), its epoch when it claimed, the fencing token
      -- (incremented on every claim and takeover) and the claim's lease.
      ALTER TABLE executions ADD COLUMN node_id TEXT COLLATE "C";
      ALTER TABLE executions ADD COLUMN node_epoch BIGINT;
      ALTER TABLE executions ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
      ALTER TABLE executions ADD COLUMN lease_expires_at TEXT COLLATE "C";
      ALTER TABLE executions ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false;
      -- spec.placement.labels at submit (NULL: any node; matched with jsonb containment) and the claim priority.
      ALTER TABLE executions ADD COLUMN placement_json JSONB;
      ALTER TABLE executions ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
      CREATE INDEX executions_queue ON executions (priority DESC, created_at, id) WHERE status = 'queued';
      CREATE INDEX executions_by_node ON executions (node_id) WHERE node_id IS NOT NULL;
    `,
  },
  {
    id: 8,
    name: "the cluster ledger: every node's replicated chain, signed heads and published key (ADR 0116)",
    sql: `
      -- The keys of every node that ever shipped its chain: the one it published first (rotated_at_seq NULL), then
      -- each key its chain handed over to (the seq of its audit.key-rotated entry, signed by the previous key). Any
      -- other key for the node id is refused.
      CREATE TABLE ledger_nodes (
        node_id        TEXT COLLATE "C" NOT NULL,
        key_id         TEXT NOT NULL,
        public_key     TEXT NOT NULL,
        published_at   TEXT NOT NULL,
        rotated_at_seq BIGINT,
        PRIMARY KEY (node_id, key_id)
      );
      -- Copies of each node's local entries (adapters/audit/sqlite-ledger.ts), idempotent by (node_id, seq).
      -- data is the canonical JSON text that was hashed, verbatim.
      CREATE TABLE ledger_entries (
        node_id   TEXT COLLATE "C" NOT NULL,
        seq       BIGINT NOT NULL,
        ts        TEXT NOT NULL,
        execution TEXT COLLATE "C",
        kind      TEXT COLLATE "C" NOT NULL,
        data      TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL,
        PRIMARY KEY (node_id, seq)
      );
      CREATE INDEX ledger_entries_by_execution ON ledger_entries (execution, node_id, seq);
      CREATE TABLE ledger_heads (
        node_id   TEXT COLLATE "C" NOT NULL,
        seq       BIGINT NOT NULL,
        hash      TEXT NOT NULL,
        ts        TEXT NOT NULL,
        key_id    TEXT NOT NULL,
        signature TEXT NOT NULL,
        PRIMARY KEY (node_id, seq)
      );
      -- What replication refused or found wrong (a different key for a published node id, shipped rows gone):
      -- verify --cluster reports every row.
      CREATE TABLE ledger_incidents (
        id       BIGSERIAL PRIMARY KEY,
        node_id  TEXT COLLATE "C" NOT NULL,
        at       TEXT NOT NULL,
        problem  TEXT NOT NULL,
        message  TEXT NOT NULL
      );
    `,
  },
  {
    id: 9,
    name: 'edge nodes: single-use enrolment tokens (hashed) and enrolled edges (ADR 0108)',
    sql: `
      CREATE TABLE edge_tokens (
        id          TEXT PRIMARY KEY NOT NULL,
        hash        TEXT NOT NULL UNIQUE,
        used_at     TEXT,
        used_by     TEXT,
        record_json TEXT NOT NULL
      );
      CREATE TABLE edge_nodes (
        id          TEXT PRIMARY KEY NOT NULL,
        enrolled_at TEXT NOT NULL,
        record_json TEXT NOT NULL
      );
    `,
  },
  {
    id: 10,
    name: 'swarm: parent, root and authority ceiling of a spawned execution (ADR 0140)',
    sql: `
      -- The execution that spawned this one and the root of its tree (the swarm id); NULL for a root. The
      -- authority ceiling (the parent's authority, JSON) is applied to the child's manifest when it runs.
      ALTER TABLE executions ADD COLUMN parent_id TEXT COLLATE "C";
      ALTER TABLE executions ADD COLUMN root_id TEXT COLLATE "C";
      ALTER TABLE executions ADD COLUMN authority_json JSONB;
      CREATE INDEX executions_by_parent ON executions (parent_id) WHERE parent_id IS NOT NULL;
      CREATE INDEX executions_by_root ON executions (root_id) WHERE root_id IS NOT NULL;
    `,
  },
  {
    id: 11,
    name: 'swarm bus (messages numbered per topic) and swarm locks (fencing tokens, FIFO waiters), ADR 0144',
    sql: `
      -- The last seq given out per (swarm, topic): the UPDATE of this row serialises a topic's publishers, so seqs
      -- commit in order and a reader never sees n+1 before n.
      CREATE TABLE swarm_topics (
        swarm    TEXT COLLATE "C" NOT NULL,
        topic    TEXT COLLATE "C" NOT NULL,
        last_seq BIGINT NOT NULL,
        PRIMARY KEY (swarm, topic)
      );
      CREATE TABLE swarm_messages (
        swarm        TEXT COLLATE "C" NOT NULL,
        topic        TEXT COLLATE "C" NOT NULL,
        seq          BIGINT NOT NULL,
        sender       TEXT NOT NULL,
        body         TEXT NOT NULL,
        size_bytes   INTEGER NOT NULL,
        digest       TEXT NOT NULL,
        published_at TEXT NOT NULL,
        PRIMARY KEY (swarm, topic, seq)
      );
      -- One row per lock ever taken, locked FOR UPDATE by every acquire: token is the fencing counter.
      CREATE TABLE swarm_locks (
        scope      TEXT COLLATE "C" NOT NULL,
        name       TEXT COLLATE "C" NOT NULL,
        token      BIGINT NOT NULL,
        holder     TEXT COLLATE "C",
        node       TEXT,
        expires_at TEXT COLLATE "C",
        PRIMARY KEY (scope, name)
      );
      CREATE INDEX swarm_locks_by_holder ON swarm_locks (holder) WHERE holder IS NOT NULL;
      CREATE TABLE swarm_lock_waiters (
        seq        BIGSERIAL PRIMARY KEY,
        scope      TEXT COLLATE "C" NOT NULL,
        name       TEXT COLLATE "C" NOT NULL,
        waiter     TEXT COLLATE "C" NOT NULL,
        keep_until TEXT COLLATE "C" NOT NULL,
        UNIQUE (scope, name, waiter)
      );
    `,
  },
];

/** Advisory-lock key (one bigint) for a name: every lock this store takes goes through here. */
export const LOCK_KEY_SQL = 'hashtextextended($1, 0)';

/**
 * Creates `schema` if needed and applies the migrations it has not seen yet, in order, in one transaction on
 * `client`, recording each in `<schema>.schema_migrations`. Concurrent migrators of the same schema (several servers
 * starting at once) queue on a transaction-scoped advisory lock, so exactly one applies each migration; the
 * others then find nothing to do. A failing migration rolls everything back, the schema's creation included.
 * Returns the ids it applied (empty when the schema was already current).
 */
export async function migrate(
  client: PoolClient,
  schema: string,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<number[]> {
  const applied: number[] = [];
  const quoted = quoteIdentifier(schema);
  await client.query('BEGIN');
  try {
    await client.query(`SELECT pg_advisory_xact_lock(${LOCK_KEY_SQL})`, [`aegis.migrate:${schema}`]);
    // Only CREATE when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege even when it exists.
    const exists = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
    if (exists.rowCount === 0) await client.query(`CREATE SCHEMA ${quoted}`);
    await client.query(`SET LOCAL search_path TO ${quoted}`);
    await client.query(
      'CREATE TABLE IF NOT EXISTS schema_migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)',
    );
    const done = new Set(
      (await client.query<{ id: number }>('SELECT id FROM schema_migrations')).rows.map((row) => row.id),
    );
    for (const migration of migrations) {
      if (done.has(migration.id)) continue;
      await client.query(migration.sql);
      await client.query('INSERT INTO schema_migrations (id, name, applied_at) VALUES ($1, $2, $3)', [
        migration.id,
        migration.name,
        new Date().toISOString(),
      ]);
      applied.push(migration.id);
    }
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  }
  return applied;
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

/** True for the schema names this store accepts: lowercase letters, digits and `_`, not starting with a digit. */
export function isSchemaName(name: string): boolean {
  return IDENTIFIER.test(name);
}

function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
