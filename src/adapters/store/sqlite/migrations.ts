/**
 * Schema of the embedded store, as an ordered list of migrations. Append new migrations at the end with the next
 * id; never edit or reorder one that has shipped — databases in the field have already applied it.
 */
import type { DatabaseSync } from 'node:sqlite';

export interface Migration {
  /** Strictly increasing, starting at 1. */
  readonly id: number;
  /** Short description, for humans reading this file. */
  readonly name: string;
  /** One or more statements, run with `exec` inside the migration transaction. */
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    id: 1,
    name: 'executions and their logs',
    sql: `
      CREATE TABLE executions (
        id              TEXT PRIMARY KEY NOT NULL,
        agent_name      TEXT NOT NULL,
        agent_version   TEXT NOT NULL,
        runtime         TEXT NOT NULL,
        status          TEXT NOT NULL,
        exit_code       INTEGER,
        reason          TEXT,
        input_json      TEXT,
        output_json     TEXT,
        violations_json TEXT NOT NULL DEFAULT '[]',
        created_at      TEXT NOT NULL,
        started_at      TEXT,
        finished_at     TEXT,
        duration_ms     REAL,
        owner_json      TEXT
      );
      CREATE INDEX executions_by_created_at ON executions (created_at);
      CREATE INDEX executions_by_agent_created_at ON executions (agent_name, created_at);
      -- (status, created_at) rather than (status) alone: same lookups, and a status-filtered list needs no sort.
      CREATE INDEX executions_by_status ON executions (status, created_at);

      CREATE TABLE execution_logs (
        execution_id TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        ts           TEXT NOT NULL,
        stream       TEXT NOT NULL,
        text         TEXT NOT NULL,
        PRIMARY KEY (execution_id, seq)
      ) WITHOUT ROWID;
    `,
  },
  {
    id: 2,
    name: 'deployed agents, their revisions and bundles; API keys; cursor pagination',
    sql: `
      -- The deployed revision an execution ran (NULL when aegis run ran a local file).
      ALTER TABLE executions ADD COLUMN agent_revision INTEGER;

      -- List order is (created_at desc, id desc); with id in the index a page is an index range, with no sort.
      DROP INDEX executions_by_created_at;
      DROP INDEX executions_by_agent_created_at;
      DROP INDEX executions_by_status;
      CREATE INDEX executions_by_created_at_id ON executions (created_at, id);
      CREATE INDEX executions_by_agent_created_at_id ON executions (agent_name, created_at, id);
      CREATE INDEX executions_by_status_created_at_id ON executions (status, created_at, id);

      -- One row per .tar.gz, by content address; shared by every revision (of any agent) with that digest.
      CREATE TABLE bundles (
        digest     TEXT PRIMARY KEY NOT NULL,
        bytes      BLOB NOT NULL,
        size_bytes INTEGER NOT NULL,
        created_at TEXT NOT NULL
      );

      CREATE TABLE agents (
        name            TEXT PRIMARY KEY NOT NULL,
        active_revision INTEGER NOT NULL,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL
      );

      CREATE TABLE agent_revisions (
        agent       TEXT NOT NULL REFERENCES agents (name),
        revision    INTEGER NOT NULL,
        version     TEXT NOT NULL,
        digest      TEXT NOT NULL REFERENCES bundles (digest),
        size_bytes  INTEGER NOT NULL,
        description TEXT,
        created_at  TEXT NOT NULL,
        deployed_by TEXT NOT NULL,
        PRIMARY KEY (agent, revision)
      ) WITHOUT ROWID;
      -- Is a bundle still used? (deleteAgent)
      CREATE INDEX agent_revisions_by_digest ON agent_revisions (digest);

      CREATE TABLE api_keys (
        id           TEXT PRIMARY KEY NOT NULL,
        name         TEXT NOT NULL,
        hash         TEXT NOT NULL UNIQUE,
        prefix       TEXT NOT NULL,
        scopes_json  TEXT NOT NULL,
        rate_json    TEXT,
        created_at   TEXT NOT NULL,
        revoked_at   TEXT,
        last_used_at TEXT
      );
      CREATE INDEX api_keys_by_created_at ON api_keys (created_at, id);
    `,
  },
  {
    id: 3,
    name: 'usage of an execution (LLM calls, tokens, USD)',
    sql: `
      -- ExecutionUsage as JSON ({"llm": {"calls", "inputTokens", "outputTokens", "usd"}}); NULL = nothing metered.
      ALTER TABLE executions ADD COLUMN usage_json TEXT;
    `,
  },
  {
    id: 4,
    name: 'live sandboxes (so a restart can account for the ones a crash left behind)',
    sql: `
      CREATE TABLE sandboxes (
        id          TEXT PRIMARY KEY NOT NULL,
        status      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        record_json TEXT NOT NULL
      );
      CREATE INDEX sandboxes_by_created_at ON sandboxes (created_at, id);
    `,
  },
  {
    id: 5,
    name: 'spend of the server LLM budgets (llm.budgets), per scope and window',
    sql: `
      CREATE TABLE llm_spend (
        scope        TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        calls        INTEGER NOT NULL,
        tokens       INTEGER NOT NULL,
        usd          REAL NOT NULL,
        PRIMARY KEY (scope, window_start)
      );
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
        id               TEXT PRIMARY KEY NOT NULL,
        kind             TEXT NOT NULL,
        state            TEXT NOT NULL,
        labels_json      TEXT NOT NULL,
        runtimes_json    TEXT NOT NULL,
        capacity         INTEGER NOT NULL,
        host             TEXT NOT NULL,
        version          TEXT NOT NULL,
        started_at       TEXT NOT NULL,
        heartbeat_at     TEXT NOT NULL,
        lease_expires_at TEXT NOT NULL,
        epoch            INTEGER NOT NULL
      );
      -- The node holding an execution (NULL: queued, or aegis run), its epoch when it claimed, the fencing token
      -- (incremented on every claim and takeover) and the claim's lease.
      ALTER TABLE executions ADD COLUMN node_id TEXT;
      ALTER TABLE executions ADD COLUMN node_epoch INTEGER;
      ALTER TABLE executions ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE executions ADD COLUMN lease_expires_at TEXT;
      ALTER TABLE executions ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
      -- spec.placement.labels at submit (JSON object; NULL: any node) and the claim priority (judges first).
      ALTER TABLE executions ADD COLUMN placement_json TEXT;
      ALTER TABLE executions ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
      CREATE INDEX executions_queue ON executions (priority DESC, created_at, id) WHERE status = 'queued';
      CREATE INDEX executions_by_node ON executions (node_id) WHERE node_id IS NOT NULL;
    `,
  },
  {
    id: 8,
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
    id: 9,
    name: 'swarm: parent, root and authority ceiling of a spawned execution (ADR 0140)',
    sql: `
      -- The execution that spawned this one and the root of its tree (the swarm id); NULL for a root. The
      -- authority ceiling (the parent's authority, JSON text) is applied to the child's manifest when it runs.
      ALTER TABLE executions ADD COLUMN parent_id TEXT;
      ALTER TABLE executions ADD COLUMN root_id TEXT;
      ALTER TABLE executions ADD COLUMN authority_json TEXT;
      CREATE INDEX executions_by_parent ON executions (parent_id) WHERE parent_id IS NOT NULL;
      CREATE INDEX executions_by_root ON executions (root_id) WHERE root_id IS NOT NULL;
    `,
  },
  {
    id: 10,
    name: 'swarm bus (messages numbered per topic) and swarm locks (fencing tokens, FIFO waiters), ADR 0144',
    sql: `
      -- The last seq given out per (swarm, topic): taking the next one and inserting the message is one transaction.
      CREATE TABLE swarm_topics (
        swarm    TEXT NOT NULL,
        topic    TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (swarm, topic)
      );
      CREATE TABLE swarm_messages (
        swarm        TEXT NOT NULL,
        topic        TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        sender       TEXT NOT NULL,
        body         TEXT NOT NULL,
        size_bytes   INTEGER NOT NULL,
        digest       TEXT NOT NULL,
        published_at TEXT NOT NULL,
        PRIMARY KEY (swarm, topic, seq)
      );
      -- One row per lock ever taken: token is the fencing counter (never reset); holder NULL when free.
      CREATE TABLE swarm_locks (
        scope      TEXT NOT NULL,
        name       TEXT NOT NULL,
        token      INTEGER NOT NULL,
        holder     TEXT,
        node       TEXT,
        expires_at TEXT,
        PRIMARY KEY (scope, name)
      );
      CREATE INDEX swarm_locks_by_holder ON swarm_locks (holder) WHERE holder IS NOT NULL;
      -- FIFO queue per lock (seq order); a waiter's place is kept until keep_until unless it asks again.
      CREATE TABLE swarm_lock_waiters (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        scope      TEXT NOT NULL,
        name       TEXT NOT NULL,
        waiter     TEXT NOT NULL,
        keep_until TEXT NOT NULL,
        UNIQUE (scope, name, waiter)
      );
    `,
  },
];

/**
 * Applies the migrations `db` has not seen yet, in order, in one IMMEDIATE transaction (so two processes opening
 * the same file at once don't both migrate), and records each in `schema_migrations`. Idempotent.
 * Returns the ids it applied (empty when the schema was already current).
 */
export function migrate(db: DatabaseSync, migrations: readonly Migration[] = MIGRATIONS): number[] {
  const applied: number[] = [];
  db.exec('BEGIN IMMEDIATE');
  try {
    db.exec(
      'CREATE TABLE IF NOT EXISTS schema_migrations (id INTEGER PRIMARY KEY NOT NULL, applied_at TEXT NOT NULL)',
    );
    const done = new Set(
      db
        .prepare('SELECT id FROM schema_migrations')
        .all()
        .map((row) => Number(row['id'])),
    );
    const record = db.prepare('INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)');
    for (const migration of migrations) {
      if (done.has(migration.id)) continue;
      db.exec(migration.sql);
      record.run(migration.id, new Date().toISOString());
      applied.push(migration.id);
    }
    db.exec('COMMIT');
  } catch (error) {
    if (db.isTransaction) db.exec('ROLLBACK');
    throw error;
  }
  return applied;
}
