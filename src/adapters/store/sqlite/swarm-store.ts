/**
 * The swarm bus and locks on SQLite (one node: `aegis server` without PostgreSQL). Every write is one IMMEDIATE
 * transaction, so the database lock serialises publishers of a topic and acquirers of a lock — even across
 * processes sharing the file. Tables: migration 10 (sqlite/migrations.ts).
 */
import type { DatabaseSync } from 'node:sqlite';
import type { SwarmMessage } from '../../../app/swarm-bus.ts';
import type {
  AcquireOutcome,
  AcquireRequest,
  LockLease,
  LockView,
  SwarmStore,
} from '../../../app/swarm-locks.ts';

interface LockRow {
  token: number;
  holder: string | null;
  node: string | null;
  expires_at: string | null;
}

export class SqliteSwarmStore implements SwarmStore {
  readonly #db: DatabaseSync;

  constructor(db: DatabaseSync) {
    this.#db = db;
  }

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

  async appendMessage(message: Omit<SwarmMessage, 'seq'>): Promise<SwarmMessage> {
    return this.#transaction(() => {
      const row = this.#db
        .prepare(
          `INSERT INTO swarm_topics (swarm, topic, last_seq) VALUES (?, ?, 1)
           ON CONFLICT (swarm, topic) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq`,
        )
        .get(message.swarm, message.topic);
      const seq = Number(row?.['last_seq']);
      this.#db
        .prepare(
          `INSERT INTO swarm_messages (swarm, topic, seq, sender, body, size_bytes, digest, published_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          message.swarm,
          message.topic,
          seq,
          message.sender,
          message.body,
          message.sizeBytes,
          message.digest,
          message.publishedAt,
        );
      return { ...message, seq };
    });
  }

  async readMessages(swarm: string, topic: string, afterSeq: number, limit: number): Promise<SwarmMessage[]> {
    return this.#db
      .prepare(
        `SELECT swarm, topic, seq, sender, body, size_bytes, digest, published_at FROM swarm_messages
         WHERE swarm = ? AND topic = ? AND seq > ? ORDER BY seq LIMIT ?`,
      )
      .all(swarm, topic, afterSeq, limit)
      .map(toMessage);
  }

  async recentMessages(swarm: string, limit: number): Promise<SwarmMessage[]> {
    return this.#db
      .prepare(
        `SELECT swarm, topic, seq, sender, body, size_bytes, digest, published_at FROM swarm_messages
         WHERE swarm = ? ORDER BY published_at DESC, topic DESC, seq DESC LIMIT ?`,
      )
      .all(swarm, limit)
      .map(toMessage)
      .reverse();
  }

  async listLocks(scope: string): Promise<LockView[]> {
    return this.#db
      .prepare('SELECT name, token, holder, node, expires_at FROM swarm_locks WHERE scope = ? ORDER BY name')
      .all(scope)
      .map((row) => ({
        name: String(row['name']),
        token: Number(row['token']),
        holder: row['holder'] === null ? null : String(row['holder']),
        node: row['node'] === null ? null : String(row['node']),
        expiresAt: row['expires_at'] === null ? null : String(row['expires_at']),
      }));
  }

  async acquireLock(request: AcquireRequest): Promise<AcquireOutcome> {
    const { scope, name } = request;
    return this.#transaction(() => {
      this.#db
        .prepare('INSERT INTO swarm_locks (scope, name, token) VALUES (?, ?, 0) ON CONFLICT DO NOTHING')
        .run(scope, name);
      const row = this.#lock(scope, name) as LockRow;
      this.#db
        .prepare(
          'DELETE FROM swarm_lock_waiters WHERE scope = ? AND name = ? AND keep_until < ? AND waiter <> ?',
        )
        .run(scope, name, request.at, request.waiter);
      this.#db
        .prepare(
          `INSERT INTO swarm_lock_waiters (scope, name, waiter, keep_until) VALUES (?, ?, ?, ?)
           ON CONFLICT (scope, name, waiter) DO UPDATE SET keep_until = excluded.keep_until`,
        )
        .run(scope, name, request.waiter, request.waiterUntil);
      const head = this.#db
        .prepare('SELECT waiter FROM swarm_lock_waiters WHERE scope = ? AND name = ? ORDER BY seq LIMIT 1')
        .get(scope, name)?.['waiter'];
      const free = row.holder === null || (row.expires_at !== null && row.expires_at < request.at);
      if (!free || head !== request.waiter)
        return { acquired: false, heldUntil: free ? null : row.expires_at };
      const expiresAt = new Date(Date.parse(request.at) + request.ttlMs).toISOString();
      this.#db
        .prepare(
          'UPDATE swarm_locks SET token = token + 1, holder = ?, node = ?, expires_at = ? WHERE scope = ? AND name = ?',
        )
        .run(request.holder, request.node, expiresAt, scope, name);
      this.#db
        .prepare('DELETE FROM swarm_lock_waiters WHERE scope = ? AND name = ? AND waiter = ?')
        .run(scope, name, request.waiter);
      const lease: LockLease = {
        scope,
        name,
        token: row.token + 1,
        holder: request.holder,
        node: request.node,
        expiresAt,
      };
      return row.holder === null
        ? { acquired: true, lease }
        : { acquired: true, lease, expired: { holder: row.holder, token: row.token } };
    });
  }

  async leaveLockQueue(scope: string, name: string, waiter: string): Promise<void> {
    this.#db
      .prepare('DELETE FROM swarm_lock_waiters WHERE scope = ? AND name = ? AND waiter = ?')
      .run(scope, name, waiter);
  }

  async renewLock(
    scope: string,
    name: string,
    token: number,
    holder: string,
    at: string,
    ttlMs: number,
  ): Promise<LockLease | undefined> {
    const expiresAt = new Date(Date.parse(at) + ttlMs).toISOString();
    const row = this.#db
      .prepare(
        `UPDATE swarm_locks SET expires_at = ? WHERE scope = ? AND name = ? AND token = ? AND holder = ?
         RETURNING token, holder, node, expires_at`,
      )
      .get(expiresAt, scope, name, token, holder);
    return row === undefined ? undefined : toLease(scope, name, row as unknown as LockRow);
  }

  async releaseLock(scope: string, name: string, token: number, holder: string): Promise<boolean> {
    const result = this.#db
      .prepare(
        `UPDATE swarm_locks SET holder = NULL, node = NULL, expires_at = NULL
         WHERE scope = ? AND name = ? AND token = ? AND holder = ?`,
      )
      .run(scope, name, token, holder);
    return Number(result.changes) === 1;
  }

  async releaseLocksOf(holder: string): Promise<LockLease[]> {
    return this.#transaction(() => {
      const rows = this.#db
        .prepare('SELECT scope, name, token, holder, node, expires_at FROM swarm_locks WHERE holder = ?')
        .all(holder);
      this.#db
        .prepare('UPDATE swarm_locks SET holder = NULL, node = NULL, expires_at = NULL WHERE holder = ?')
        .run(holder);
      return rows.map((row) => toLease(String(row['scope']), String(row['name']), row as unknown as LockRow));
    });
  }

  async lockState(
    scope: string,
    name: string,
  ): Promise<{ token: number; holder: string | null; expiresAt: string | null } | undefined> {
    const row = this.#lock(scope, name);
    return row === undefined
      ? undefined
      : { token: row.token, holder: row.holder, expiresAt: row.expires_at };
  }

  #lock(scope: string, name: string): LockRow | undefined {
    const row = this.#db
      .prepare('SELECT token, holder, node, expires_at FROM swarm_locks WHERE scope = ? AND name = ?')
      .get(scope, name);
    if (row === undefined) return undefined;
    return {
      token: Number(row['token']),
      holder: row['holder'] === null ? null : String(row['holder']),
      node: row['node'] === null ? null : String(row['node']),
      expires_at: row['expires_at'] === null ? null : String(row['expires_at']),
    };
  }
}

function toMessage(row: Record<string, unknown>): SwarmMessage {
  return {
    swarm: String(row['swarm']),
    topic: String(row['topic']),
    seq: Number(row['seq']),
    sender: String(row['sender']),
    body: String(row['body']),
    sizeBytes: Number(row['size_bytes']),
    digest: String(row['digest']),
    publishedAt: String(row['published_at']),
  };
}

function toLease(scope: string, name: string, row: LockRow): LockLease {
  return {
    scope,
    name,
    token: Number(row.token),
    holder: String(row.holder),
    node: row.node === null ? null : String(row.node),
    expiresAt: String(row.expires_at),
  };
}
