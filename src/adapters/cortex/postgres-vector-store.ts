/**
 * VectorStore on PostgreSQL, for clusters: table `memories` (migration 5 of adapters/store/postgres/migrations.ts)
 * in the same schema as the execution store, vectors as little-endian Float32 BYTEA.
 *
 * Search: PostgreSQL narrows by scope, embedder, expiry and filter (meta with JSONB containment), then this process
 * computes the dot products over the rows returned — an exact scan that ships every candidate vector over the wire.
 * Documented ceiling: about 10k memories per search (1.5 KiB per 384-float vector; `npm run bench`). The test
 * server has no pgvector (Debian's postgresql package does not include it); with pgvector, an HNSW index on a
 * `vector` column is the way past that ceiling (docs/adr/0120-cortex-vector-stores.md).
 */
import pg from 'pg';
import { checkVector } from '../../app/fakes/memory-vector-store.ts';
import type {
  MemoryListQuery,
  MemoryPage,
  ScopeEmbedder,
  VectorHit,
  VectorPut,
  VectorSearchQuery,
  VectorStore,
} from '../../app/ports.ts';
import {
  listCursor,
  type MemoryFilter,
  type MemoryMeta,
  type MemoryRecord,
  type MemoryScope,
  parseListCursor,
} from '../../domain/cortex/memory.ts';
import { AegisError } from '../../domain/errors.ts';
import { isSchemaName, migrate } from '../store/postgres/migrations.ts';
import { mapError, parseUrl } from '../store/postgres/store.ts';
import { dotAt } from './ivf-index.ts';
import { TopK } from './vector-matrix.ts';

export interface PostgresVectorStoreOptions {
  /** @default 'public' */
  readonly schema?: string;
  /** @default 4 */
  readonly poolSize?: number;
}

const COLUMNS =
  'id, agent, namespace, text, meta, embedder_id, dimension, created_at, expires_at, execution_id, outcome, source';

type Row = Record<string, unknown>;

const PUT_SQL = `INSERT INTO memories (${COLUMNS}, vector) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
  ON CONFLICT (id) DO UPDATE SET text = excluded.text, meta = excluded.meta, embedder_id = excluded.embedder_id,
    dimension = excluded.dimension, created_at = excluded.created_at, expires_at = excluded.expires_at,
    execution_id = excluded.execution_id, outcome = excluded.outcome, source = excluded.source,
    vector = excluded.vector
  WHERE memories.agent = excluded.agent AND memories.namespace = excluded.namespace`;

function putParams(record: MemoryRecord, vector: Float32Array): unknown[] {
  const s = record.scope;
  return [
    record.id,
    s.agent,
    s.namespace,
    record.text,
    JSON.stringify(record.meta),
    record.embedderId,
    record.dimension,
    record.createdAt,
    record.expiresAt,
    record.executionId,
    record.outcome,
    record.source,
    Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength),
  ];
}

export class PostgresVectorStore implements VectorStore {
  readonly searchMode = 'exact' as const;
  readonly #pool: pg.Pool;
  readonly #where: string;

  static async open(url: string, options: PostgresVectorStoreOptions = {}): Promise<PostgresVectorStore> {
    const schema = options.schema ?? 'public';
    if (!isSchemaName(schema)) {
      throw new AegisError('USAGE', `"${schema}" is not a schema name this store accepts`, {
        hint: 'use lowercase letters, digits and "_", not starting with a digit (at most 63 characters)',
      });
    }
    const { connectionString, where, startupOptions } = parseUrl(url);
    const pool = new pg.Pool({
      connectionString,
      max: options.poolSize ?? 4,
      connectionTimeoutMillis: 10_000,
      application_name: 'aegis-cortex',
      options: `${startupOptions} -c search_path=${schema}`.trim(),
    });
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
    return new PostgresVectorStore(pool, where);
  }

  private constructor(pool: pg.Pool, where: string) {
    this.#pool = pool;
    this.#where = where;
  }

  async put(record: MemoryRecord, vector: Float32Array): Promise<void> {
    checkVector(record, vector);
    const result = await this.#query(PUT_SQL, putParams(record, vector));
    if (result.rowCount === 0)
      throw new AegisError('CONFLICT', `memory ${record.id} belongs to another scope`);
  }

  /** One transaction on one connection: all rows or none. */
  async putMany(items: readonly VectorPut[]): Promise<void> {
    for (const { record, vector } of items) checkVector(record, vector);
    if (items.length === 0) return;
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      throw mapError(error, this.#where);
    }
    try {
      await client.query('BEGIN');
      for (const { record, vector } of items) {
        const result = await client.query(PUT_SQL, putParams(record, vector));
        if (result.rowCount === 0)
          throw new AegisError('CONFLICT', `memory ${record.id} belongs to another scope`);
      }
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw error instanceof AegisError ? error : mapError(error, this.#where);
    } finally {
      client.release();
    }
  }

  async search(query: VectorSearchQuery): Promise<VectorHit[]> {
    if (query.scopes.length === 0) return [];
    const params: unknown[] = [
      query.scopes.map((s) => s.agent),
      query.scopes.map((s) => s.namespace),
      query.embedderId,
      query.vector.length,
      query.now,
    ];
    const where = [
      '(agent, namespace) IN (SELECT * FROM unnest($1::text[], $2::text[]))',
      'embedder_id = $3',
      'dimension = $4',
      '(expires_at IS NULL OR expires_at > $5)',
      ...filterSql(query.filter, params),
    ];
    const { rows } = await this.#query(
      `SELECT ${COLUMNS}, vector FROM memories WHERE ${where.join(' AND ')}`,
      params,
    );
    const top = new TopK(query.k);
    const q = query.vector;
    for (const row of rows) {
      const s = dotAt(q, toVector(row['vector']), 0, q.length);
      // Only the rows that make the top k are turned into records.
      if (s > top.floor) top.offer(s, toRecord(row));
    }
    return top.hits();
  }

  async get(scope: MemoryScope, id: string): Promise<MemoryRecord | null> {
    const { rows } = await this.#query(
      `SELECT ${COLUMNS} FROM memories WHERE id = $1 AND agent = $2 AND namespace = $3`,
      [id, scope.agent, scope.namespace],
    );
    return rows[0] === undefined ? null : toRecord(rows[0]);
  }

  async getVector(scope: MemoryScope, id: string): Promise<Float32Array | null> {
    const { rows } = await this.#query(
      'SELECT vector FROM memories WHERE id = $1 AND agent = $2 AND namespace = $3',
      [id, scope.agent, scope.namespace],
    );
    return rows[0] === undefined ? null : toVector(rows[0]['vector']);
  }

  async list(scope: MemoryScope, query: MemoryListQuery): Promise<MemoryPage> {
    const limit = query.limit ?? 50;
    const cursor = query.after ? parseListCursor(query.after) : null;
    const params: unknown[] = [
      scope.agent,
      scope.namespace,
      query.now,
      cursor?.createdAt ?? null,
      cursor?.id ?? null,
    ];
    const where = [
      'agent = $1',
      'namespace = $2',
      '(expires_at IS NULL OR expires_at > $3)',
      '($4::text IS NULL OR created_at < $4 OR (created_at = $4 AND id < $5))',
      ...filterSql(query.filter, params),
    ];
    params.push(limit + 1);
    const { rows } = await this.#query(
      `SELECT ${COLUMNS} FROM memories WHERE ${where.join(' AND ')} ORDER BY created_at DESC, id DESC LIMIT $${params.length}`,
      params,
    );
    const items = rows.slice(0, limit).map(toRecord);
    const last = items.at(-1);
    return { items, next: rows.length > limit && last !== undefined ? listCursor(last) : null };
  }

  async forget(scope: MemoryScope, id: string): Promise<boolean> {
    const result = await this.#query('DELETE FROM memories WHERE id = $1 AND agent = $2 AND namespace = $3', [
      id,
      scope.agent,
      scope.namespace,
    ]);
    return (result.rowCount ?? 0) > 0;
  }

  async forgetExpired(now: string): Promise<number> {
    const result = await this.#query(
      'DELETE FROM memories WHERE expires_at IS NOT NULL AND expires_at <= $1',
      [now],
    );
    return result.rowCount ?? 0;
  }

  async count(scope?: MemoryScope): Promise<number> {
    const { rows } =
      scope === undefined
        ? await this.#query('SELECT count(*)::int AS n FROM memories', [])
        : await this.#query('SELECT count(*)::int AS n FROM memories WHERE agent = $1 AND namespace = $2', [
            scope.agent,
            scope.namespace,
          ]);
    return Number(rows[0]?.['n'] ?? 0);
  }

  async scopes(): Promise<MemoryScope[]> {
    const { rows } = await this.#query(
      'SELECT DISTINCT agent, namespace FROM memories ORDER BY agent, namespace',
      [],
    );
    return rows.map((r) => ({ agent: String(r['agent']), namespace: String(r['namespace']) }));
  }

  async embedders(scope: MemoryScope): Promise<ScopeEmbedder[]> {
    const { rows } = await this.#query(
      `SELECT embedder_id, dimension, count(*)::int AS n FROM memories WHERE agent = $1 AND namespace = $2
       GROUP BY embedder_id, dimension ORDER BY embedder_id`,
      [scope.agent, scope.namespace],
    );
    return rows.map((r) => ({
      embedderId: String(r['embedder_id']),
      dimension: Number(r['dimension']),
      count: Number(r['n']),
    }));
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }

  async #query(sql: string, params: unknown[]): Promise<pg.QueryResult<Row>> {
    try {
      return await this.#pool.query<Row>(sql, params);
    } catch (error) {
      throw mapError(error, this.#where);
    }
  }
}

/** SQL conditions for `filter`, appending their parameters to `params`. */
function filterSql(filter: MemoryFilter | undefined, params: unknown[]): string[] {
  if (filter === undefined) return [];
  const out: string[] = [];
  const p = (value: unknown) => {
    params.push(value);
    return `$${params.length}`;
  };
  if (filter.outcome !== undefined)
    out.push(filter.outcome === null ? 'outcome IS NULL' : `outcome = ${p(filter.outcome)}`);
  if (filter.source !== undefined) out.push(`source = ${p(filter.source)}`);
  if (filter.executionId !== undefined) out.push(`execution_id = ${p(filter.executionId)}`);
  if (filter.createdAfter !== undefined) out.push(`created_at >= ${p(filter.createdAfter)}`);
  if (filter.meta !== undefined) {
    for (const [key, value] of Object.entries(filter.meta)) {
      // -> keeps JSON types apart ("1" is not 1); an absent key gives NULL, which never equals.
      out.push(`meta -> ${p(key)} = ${p(JSON.stringify(value))}::jsonb`);
    }
  }
  return out;
}

function toVector(bytes: unknown): Float32Array {
  const b = bytes as Buffer;
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

function toRecord(row: Row): MemoryRecord {
  return {
    id: String(row['id']),
    scope: { agent: String(row['agent']), namespace: String(row['namespace']) },
    text: String(row['text']),
    meta: row['meta'] as MemoryMeta,
    embedderId: String(row['embedder_id']),
    dimension: Number(row['dimension']),
    createdAt: String(row['created_at']),
    expiresAt: row['expires_at'] === null ? null : String(row['expires_at']),
    executionId: row['execution_id'] === null ? null : String(row['execution_id']),
    outcome: row['outcome'] === null ? null : (String(row['outcome']) as MemoryRecord['outcome']),
    source: String(row['source']) as MemoryRecord['source'],
  };
}
