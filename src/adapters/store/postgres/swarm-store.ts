/**
 * The swarm bus and locks on PostgreSQL, shared by every node of a cluster (ADR 0144). A publish takes the topic's
 * counter row (INSERT … ON CONFLICT DO UPDATE, a row lock held to COMMIT), so a topic's seqs commit in order. An
 * acquire locks the lock's row FOR UPDATE: concurrent acquirers on any node are serialised on it, and the grant is
 * a conditional update of that row, so two nodes never both hold a lock. Waking waiters is the use-case's job
 * (ClusterStore.signal: LISTEN/NOTIFY). Tables: migration 11 (postgres/migrations.ts).
 */
import type pg from 'pg';
import type { SwarmMessage } from '../../../app/swarm-bus.ts';
import type {
  AcquireOutcome,
  AcquireRequest,
  LockLease,
  LockView,
  SwarmStore,
} from '../../../app/swarm-locks.ts';

interface LockRow {
  scope: string;
  name: string;
  token: string;
  holder: string | null;
  node: string | null;
  expires_at: string | null;
}

interface MessageRow {
  swarm: string;
  topic: string;
  seq: string;
  sender: string;
  body: string;
  size_bytes: number;
  digest: string;
  published_at: string;
}

export class PostgresSwarmStore implements SwarmStore {
  readonly #pool: pg.Pool;
  readonly #mapError: (error: unknown) => unknown;

  /** `mapError` turns driver errors into AegisErrors (the store's, which names the URL without its password). */
  constructor(pool: pg.Pool, mapError: (error: unknown) => unknown) {
    this.#pool = pool;
    this.#mapError = mapError;
  }

  async #transaction<T>(body: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      throw this.#mapError(error);
    }
    try {
      await client.query('BEGIN');
      const result = await body(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw this.#mapError(error);
    } finally {
      client.release();
    }
  }

  async #query<R extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      return await this.#pool.query<R>(sql, params);
    } catch (error) {
      throw this.#mapError(error);
    }
  }

  async appendMessage(message: Omit<SwarmMessage, 'seq'>): Promise<SwarmMessage> {
    return this.#transaction(async (client) => {
      const { rows } = await client.query<{ last_seq: string }>(
        `INSERT INTO swarm_topics (swarm, topic, last_seq) VALUES ($1, $2, 1)
         ON CONFLICT (swarm, topic) DO UPDATE SET last_seq = swarm_topics.last_seq + 1 RETURNING last_seq`,
        [message.swarm, message.topic],
      );
      const seq = Number(rows[0]?.last_seq);
      await client.query(
        `INSERT INTO swarm_messages (swarm, topic, seq, sender, body, size_bytes, digest, published_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [
          message.swarm,
          message.topic,
          seq,
          message.sender,
          message.body,
          message.sizeBytes,
          message.digest,
          message.publishedAt,
        ],
      );
      return { ...message, seq };
    });
  }

  async readMessages(swarm: string, topic: string, afterSeq: number, limit: number): Promise<SwarmMessage[]> {
    const { rows } = await this.#query<MessageRow>(
      `SELECT swarm, topic, seq, sender, body, size_bytes, digest, published_at FROM swarm_messages
       WHERE swarm = $1 AND topic = $2 AND seq > $3 ORDER BY seq LIMIT $4`,
      [swarm, topic, afterSeq, limit],
    );
    return rows.map(toMessage);
  }

  async recentMessages(swarm: string, limit: number): Promise<SwarmMessage[]> {
    const { rows } = await this.#query<MessageRow>(
      `SELECT swarm, topic, seq, sender, body, size_bytes, digest, published_at FROM swarm_messages
       WHERE swarm = $1 ORDER BY published_at DESC, topic DESC, seq DESC LIMIT $2`,
      [swarm, limit],
    );
    return rows.map(toMessage).reverse();
  }

  async listLocks(scope: string): Promise<LockView[]> {
    const { rows } = await this.#query<LockRow>(
      'SELECT scope, name, token, holder, node, expires_at FROM swarm_locks WHERE scope = $1 ORDER BY name',
      [scope],
    );
    return rows.map((row) => ({
      name: row.name,
      token: Number(row.token),
      holder: row.holder,
      node: row.node,
      expiresAt: row.expires_at,
    }));
  }

  async acquireLock(request: AcquireRequest): Promise<AcquireOutcome> {
    const { scope, name } = request;
    return this.#transaction(async (client) => {
      await client.query(
        'INSERT INTO swarm_locks (scope, name, token) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING',
        [scope, name],
      );
      // The row lock every acquirer of this lock, on every node, queues behind until COMMIT.
      const row = (
        await client.query<LockRow>(
          'SELECT scope, name, token, holder, node, expires_at FROM swarm_locks WHERE scope = $1 AND name = $2 FOR UPDATE',
          [scope, name],
        )
      ).rows[0] as LockRow;
      await client.query(
        'DELETE FROM swarm_lock_waiters WHERE scope = $1 AND name = $2 AND keep_until < $3 AND waiter <> $4',
        [scope, name, request.at, request.waiter],
      );
      await client.query(
        `INSERT INTO swarm_lock_waiters (scope, name, waiter, keep_until) VALUES ($1, $2, $3, $4)
         ON CONFLICT (scope, name, waiter) DO UPDATE SET keep_until = EXCLUDED.keep_until`,
        [scope, name, request.waiter, request.waiterUntil],
      );
      const head = (
        await client.query<{ waiter: string }>(
          'SELECT waiter FROM swarm_lock_waiters WHERE scope = $1 AND name = $2 ORDER BY seq LIMIT 1',
          [scope, name],
        )
      ).rows[0]?.waiter;
      const free = row.holder === null || (row.expires_at !== null && row.expires_at < request.at);
      if (!free || head !== request.waiter)
        return { acquired: false, heldUntil: free ? null : row.expires_at };
      const expiresAt = new Date(Date.parse(request.at) + request.ttlMs).toISOString();
      const granted = await client.query<LockRow>(
        `UPDATE swarm_locks SET token = token + 1, holder = $3, node = $4, expires_at = $5
         WHERE scope = $1 AND name = $2 AND token = $6 RETURNING scope, name, token, holder, node, expires_at`,
        [scope, name, request.holder, request.node, expiresAt, row.token],
      );
      await client.query('DELETE FROM swarm_lock_waiters WHERE scope = $1 AND name = $2 AND waiter = $3', [
        scope,
        name,
        request.waiter,
      ]);
      const lease = toLease(granted.rows[0] as LockRow);
      return row.holder === null
        ? { acquired: true, lease }
        : { acquired: true, lease, expired: { holder: row.holder, token: Number(row.token) } };
    });
  }

  async leaveLockQueue(scope: string, name: string, waiter: string): Promise<void> {
    await this.#query('DELETE FROM swarm_lock_waiters WHERE scope = $1 AND name = $2 AND waiter = $3', [
      scope,
      name,
      waiter,
    ]);
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
    const { rows } = await this.#query<LockRow>(
      `UPDATE swarm_locks SET expires_at = $1 WHERE scope = $2 AND name = $3 AND token = $4 AND holder = $5
       RETURNING scope, name, token, holder, node, expires_at`,
      [expiresAt, scope, name, token, holder],
    );
    return rows[0] === undefined ? undefined : toLease(rows[0]);
  }

  async releaseLock(scope: string, name: string, token: number, holder: string): Promise<boolean> {
    const { rowCount } = await this.#query(
      `UPDATE swarm_locks SET holder = NULL, node = NULL, expires_at = NULL
       WHERE scope = $1 AND name = $2 AND token = $3 AND holder = $4`,
      [scope, name, token, holder],
    );
    return rowCount === 1;
  }

  async releaseLocksOf(holder: string): Promise<LockLease[]> {
    // The old values, from the rows as they were before this statement.
    const { rows } = await this.#query<LockRow>(
      `WITH old AS (SELECT scope, name, token, holder, node, expires_at FROM swarm_locks WHERE holder = $1 FOR UPDATE)
       UPDATE swarm_locks AS l SET holder = NULL, node = NULL, expires_at = NULL FROM old
       WHERE l.scope = old.scope AND l.name = old.name AND l.holder = $1
       RETURNING old.scope, old.name, old.token, old.holder, old.node, old.expires_at`,
      [holder],
    );
    return rows.map(toLease);
  }

  async lockState(
    scope: string,
    name: string,
  ): Promise<{ token: number; holder: string | null; expiresAt: string | null } | undefined> {
    const { rows } = await this.#query<LockRow>(
      'SELECT scope, name, token, holder, node, expires_at FROM swarm_locks WHERE scope = $1 AND name = $2',
      [scope, name],
    );
    const row = rows[0];
    return row === undefined
      ? undefined
      : { token: Number(row.token), holder: row.holder, expiresAt: row.expires_at };
  }
}

function toMessage(row: MessageRow): SwarmMessage {
  return {
    swarm: row.swarm,
    topic: row.topic,
    seq: Number(row.seq),
    sender: row.sender,
    body: row.body,
    sizeBytes: Number(row.size_bytes),
    digest: row.digest,
    publishedAt: row.published_at,
  };
}

function toLease(row: LockRow): LockLease {
  return {
    scope: row.scope,
    name: row.name,
    token: Number(row.token),
    holder: String(row.holder),
    node: row.node,
    expiresAt: String(row.expires_at),
  };
}
