/**
 * VectorStore on SQLite (`node:sqlite`), in its own file — `$AEGIS_HOME/cortex.db` — so memory never bloats or
 * locks the execution store. Rows hold the record and its vector as a little-endian Float32 blob.
 *
 * Search runs over an in-memory copy of the vectors of each (scope, embedder) (vector-matrix.ts), loaded on first
 * use and kept up to date by this connection's own writes; `PRAGMA data_version` tells when another process (the
 * CLI next to the server) committed, and then the copy is dropped and reloaded. In `searchMode: 'ann'` (the default)
 * a copy with at least `ann.minRows` vectors gets an IVF index (ivf-index.ts), built from the copy on the first
 * search after a load and maintained on put/forget; smaller copies, and selective filters, are scanned exactly
 * (docs/adr/0129-cortex-ann-index.md). `putMany` writes a batch in one transaction.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
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
  type MemoryMeta,
  type MemoryRecord,
  type MemoryScope,
  matchesFilter,
  parseListCursor,
  scopeKey,
} from '../../domain/cortex/memory.ts';
import { AegisError } from '../../domain/errors.ts';
import {
  type AnnOptions,
  type AnnSettings,
  annSettings,
  type SearchPath,
  TopK,
  VectorMatrix,
} from './vector-matrix.ts';

export interface SqliteVectorStoreOptions {
  /** `ann`: large scopes are searched through an IVF index (recall@10 ≈ 0.95+, see the bench); `exact`: always
   * scan every vector. @default 'ann' */
  readonly searchMode?: 'exact' | 'ann';
  /** When the index is used and how much of it a search scores. */
  readonly ann?: AnnOptions;
}

const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS memories (
  id TEXT PRIMARY KEY,
  agent TEXT NOT NULL,
  namespace TEXT NOT NULL,
  text TEXT NOT NULL,
  meta TEXT NOT NULL,
  embedder_id TEXT NOT NULL,
  dimension INTEGER NOT NULL,
  created_at TEXT NOT NULL,
  expires_at TEXT,
  execution_id TEXT,
  outcome TEXT,
  source TEXT NOT NULL,
  vector BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS memories_scope_time ON memories (agent, namespace, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS memories_scope_embedder ON memories (agent, namespace, embedder_id, dimension);
CREATE INDEX IF NOT EXISTS memories_expiry ON memories (expires_at) WHERE expires_at IS NOT NULL;
`;

type Row = Record<string, unknown>;

export class SqliteVectorStore implements VectorStore {
  readonly searchMode: 'exact' | 'ann';
  readonly #ann: AnnSettings | undefined;
  readonly #db: DatabaseSync;
  /** scopeKey → embedderId/dimension → matrix; a scope is present once loaded. */
  readonly #cache = new Map<string, Map<string, VectorMatrix>>();
  #dataVersion = -1;
  readonly #stmts: Record<
    'put' | 'get' | 'forget' | 'scopeRows' | 'embedders' | 'dataVersion',
    StatementSync
  >;

  /** Opens (creating when missing) the database at `path` (`:memory:` for tests). */
  static open(path: string, options: SqliteVectorStoreOptions = {}): SqliteVectorStore {
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(path);
      db.exec('PRAGMA journal_mode = WAL');
      db.exec('PRAGMA synchronous = NORMAL');
      db.exec('PRAGMA busy_timeout = 5000');
      const version = Number(db.prepare('PRAGMA user_version').get()?.['user_version'] ?? 0);
      if (version > SCHEMA_VERSION) {
        throw new AegisError(
          'CONFLICT',
          `${path} was written by a newer AEGIS (cortex schema ${version}; this one knows ${SCHEMA_VERSION})`,
          { hint: 'upgrade aegis, or point AEGIS_HOME elsewhere' },
        );
      }
      db.exec(SCHEMA);
      db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
    } catch (error) {
      if (error instanceof AegisError) throw error;
      throw new AegisError(
        'UNAVAILABLE',
        `cannot open the memory database ${path}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
    return new SqliteVectorStore(db, options);
  }

  private constructor(db: DatabaseSync, options: SqliteVectorStoreOptions) {
    this.#db = db;
    this.searchMode = options.searchMode ?? 'ann';
    this.#ann = this.searchMode === 'ann' ? annSettings(options.ann) : undefined;
    this.#stmts = {
      put: db.prepare(
        `INSERT INTO memories (id, agent, namespace, text, meta, embedder_id, dimension, created_at, expires_at,
           execution_id, outcome, source, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET text = excluded.text, meta = excluded.meta, embedder_id = excluded.embedder_id,
           dimension = excluded.dimension, created_at = excluded.created_at, expires_at = excluded.expires_at,
           execution_id = excluded.execution_id, outcome = excluded.outcome, source = excluded.source,
           vector = excluded.vector
         WHERE memories.agent = excluded.agent AND memories.namespace = excluded.namespace`,
      ),
      get: db.prepare('SELECT * FROM memories WHERE id = ? AND agent = ? AND namespace = ?'),
      forget: db.prepare('DELETE FROM memories WHERE id = ? AND agent = ? AND namespace = ?'),
      scopeRows: db.prepare('SELECT * FROM memories WHERE agent = ? AND namespace = ?'),
      dataVersion: db.prepare('PRAGMA data_version'),
      embedders: db.prepare(
        `SELECT embedder_id, dimension, count(*) AS n FROM memories WHERE agent = ? AND namespace = ?
         GROUP BY embedder_id, dimension ORDER BY embedder_id`,
      ),
    };
  }

  async put(record: MemoryRecord, vector: Float32Array): Promise<void> {
    checkVector(record, vector);
    this.#refresh();
    this.#write(record, vector);
  }

  /** Like `put` for each item, in one transaction: all are written or none (the first refusal rolls back). */
  async putMany(items: readonly VectorPut[]): Promise<void> {
    for (const { record, vector } of items) checkVector(record, vector);
    this.#refresh();
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      for (const { record, vector } of items) this.#write(record, vector);
      this.#db.exec('COMMIT');
    } catch (error) {
      this.#db.exec('ROLLBACK');
      // The in-memory copies may hold rows that were rolled back: reload them on the next search.
      this.#cache.clear();
      throw error;
    }
  }

  #write(record: MemoryRecord, vector: Float32Array): void {
    const s = record.scope;
    const result = this.#stmts.put.run(
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
      new Uint8Array(vector.buffer, vector.byteOffset, vector.byteLength),
    );
    if (Number(result.changes) === 0)
      throw new AegisError('CONFLICT', `memory ${record.id} belongs to another scope`);
    const scope = this.#cache.get(scopeKey(s));
    if (scope !== undefined) {
      for (const m of scope.values()) m.remove(record.id);
      matrixFor(scope, record.embedderId, record.dimension).upsert(structuredClone(record), vector);
    }
  }

  async search(query: VectorSearchQuery): Promise<VectorHit[]> {
    this.#refresh();
    const top = new TopK(query.k);
    const matrixKey = `${query.embedderId}\u0000${query.vector.length}`;
    const paths: SearchPath[] = [];
    for (const scope of query.scopes) {
      const matrix = this.#load(scope).get(matrixKey);
      if (matrix !== undefined)
        paths.push(matrix.search(query.vector, query.filter, query.now, top, this.#ann));
    }
    this.lastSearchPaths = paths;
    return top.hits().map((h) => ({ record: structuredClone(h.record), similarity: h.similarity }));
  }

  /** How each scope of the last search was answered (`exact`, `ann`, `ann-fallback`): for tests and the bench. */
  lastSearchPaths: readonly SearchPath[] = [];

  async get(scope: MemoryScope, id: string): Promise<MemoryRecord | null> {
    const row = this.#stmts.get.get(id, scope.agent, scope.namespace);
    return row === undefined ? null : toRecord(row);
  }

  async getVector(scope: MemoryScope, id: string): Promise<Float32Array | null> {
    const row = this.#stmts.get.get(id, scope.agent, scope.namespace);
    return row === undefined ? null : toVector(row['vector']);
  }

  async list(scope: MemoryScope, query: MemoryListQuery): Promise<MemoryPage> {
    const limit = query.limit ?? 50;
    const cursor = query.after ? parseListCursor(query.after) : null;
    const items: MemoryRecord[] = [];
    let more = false;
    // Filters on meta are JSON comparisons: read in batches and filter here, still in list order.
    const sql = `SELECT id, agent, namespace, text, meta, embedder_id, dimension, created_at, expires_at, execution_id,
        outcome, source FROM memories WHERE agent = ? AND namespace = ?
        AND (? IS NULL OR created_at < ? OR (created_at = ? AND id < ?))
        ORDER BY created_at DESC, id DESC`;
    const rows = this.#db
      .prepare(sql)
      .iterate(
        scope.agent,
        scope.namespace,
        cursor?.createdAt ?? null,
        cursor?.createdAt ?? null,
        cursor?.createdAt ?? null,
        cursor?.id ?? null,
      );
    for (const row of rows) {
      const record = toRecord(row);
      if (!matchesFilter(record, query.filter, query.now)) continue;
      if (items.length === limit) {
        more = true;
        break;
      }
      items.push(record);
    }
    const last = items.at(-1);
    return { items, next: more && last !== undefined ? listCursor(last) : null };
  }

  async forget(scope: MemoryScope, id: string): Promise<boolean> {
    this.#refresh();
    const gone = Number(this.#stmts.forget.run(id, scope.agent, scope.namespace).changes) > 0;
    const cached = this.#cache.get(scopeKey(scope));
    if (gone && cached !== undefined) for (const m of cached.values()) m.remove(id);
    return gone;
  }

  async forgetExpired(now: string): Promise<number> {
    this.#refresh();
    const rows = this.#db
      .prepare(
        'DELETE FROM memories WHERE expires_at IS NOT NULL AND expires_at <= ? RETURNING id, agent, namespace',
      )
      .all(now);
    for (const row of rows) {
      const cached = this.#cache.get(`${row['agent']}/${row['namespace']}`);
      if (cached !== undefined) for (const m of cached.values()) m.remove(String(row['id']));
    }
    return rows.length;
  }

  async count(scope?: MemoryScope): Promise<number> {
    const row =
      scope === undefined
        ? this.#db.prepare('SELECT count(*) AS n FROM memories').get()
        : this.#db
            .prepare('SELECT count(*) AS n FROM memories WHERE agent = ? AND namespace = ?')
            .get(scope.agent, scope.namespace);
    return Number(row?.['n'] ?? 0);
  }

  async scopes(): Promise<MemoryScope[]> {
    return this.#db
      .prepare('SELECT DISTINCT agent, namespace FROM memories ORDER BY agent, namespace')
      .all()
      .map((r) => ({ agent: String(r['agent']), namespace: String(r['namespace']) }));
  }

  async embedders(scope: MemoryScope): Promise<ScopeEmbedder[]> {
    return this.#stmts.embedders.all(scope.agent, scope.namespace).map((r) => ({
      embedderId: String(r['embedder_id']),
      dimension: Number(r['dimension']),
      count: Number(r['n']),
    }));
  }

  async close(): Promise<void> {
    this.#cache.clear();
    if (this.#db.isOpen) this.#db.close();
  }

  /** Drops the in-memory copy when another connection committed since we last looked. */
  #refresh(): void {
    const version = this.#readDataVersion();
    if (version !== this.#dataVersion) {
      this.#cache.clear();
      this.#dataVersion = version;
    }
  }

  #readDataVersion(): number {
    return Number(this.#stmts.dataVersion.get()?.['data_version'] ?? 0);
  }

  #load(scope: MemoryScope): Map<string, VectorMatrix> {
    const key = scopeKey(scope);
    let matrices = this.#cache.get(key);
    if (matrices !== undefined) return matrices;
    matrices = new Map();
    for (const row of this.#stmts.scopeRows.iterate(scope.agent, scope.namespace)) {
      const record = toRecord(row);
      matrixFor(matrices, record.embedderId, record.dimension).upsert(record, toVector(row['vector']));
    }
    this.#cache.set(key, matrices);
    return matrices;
  }
}

function matrixFor(scope: Map<string, VectorMatrix>, embedderId: string, dimension: number): VectorMatrix {
  const key = `${embedderId}\u0000${dimension}`;
  let m = scope.get(key);
  if (m === undefined) {
    m = new VectorMatrix(dimension);
    scope.set(key, m);
  }
  return m;
}

function toVector(blob: unknown): Float32Array {
  const bytes = blob as Uint8Array;
  // Copy: the blob's offset need not be 4-aligned.
  return new Float32Array(bytes.slice().buffer);
}

function toRecord(row: Row): MemoryRecord {
  return {
    id: String(row['id']),
    scope: { agent: String(row['agent']), namespace: String(row['namespace']) },
    text: String(row['text']),
    meta: JSON.parse(String(row['meta'])) as MemoryMeta,
    embedderId: String(row['embedder_id']),
    dimension: Number(row['dimension']),
    createdAt: String(row['created_at']),
    expiresAt: row['expires_at'] === null ? null : String(row['expires_at']),
    executionId: row['execution_id'] === null ? null : String(row['execution_id']),
    outcome: row['outcome'] === null ? null : (String(row['outcome']) as MemoryRecord['outcome']),
    source: String(row['source']) as MemoryRecord['source'],
  };
}
