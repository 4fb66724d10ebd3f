/**
 * In-memory VectorStore for use-case tests: an exact scan, with the same scope, filter, expiry and ordering rules as
 * the SQLite and PostgreSQL stores (test/contracts/vector-store.contract.ts runs on all three).
 */
import {
  afterCursor,
  compareHits,
  compareListOrder,
  dot,
  listCursor,
  type MemoryRecord,
  type MemoryScope,
  matchesFilter,
  parseListCursor,
  sameScope,
} from '../../domain/cortex/memory.ts';
import { AegisError } from '../../domain/errors.ts';
import type {
  MemoryListQuery,
  MemoryPage,
  ScopeEmbedder,
  VectorHit,
  VectorPut,
  VectorSearchQuery,
  VectorStore,
} from '../ports.ts';

interface Row {
  record: MemoryRecord;
  vector: Float32Array;
}

export class MemoryVectorStore implements VectorStore {
  readonly searchMode = 'exact' as const;
  readonly #rows = new Map<string, Row>();

  async put(record: MemoryRecord, vector: Float32Array): Promise<void> {
    checkVector(record, vector);
    const existing = this.#rows.get(record.id);
    if (existing !== undefined && !sameScope(existing.record.scope, record.scope)) {
      throw new AegisError('CONFLICT', `memory ${record.id} belongs to another scope`);
    }
    this.#rows.set(record.id, { record: structuredClone(record), vector: Float32Array.from(vector) });
  }

  async putMany(items: readonly VectorPut[]): Promise<void> {
    // Check everything first, so a refusal leaves the store as it was.
    const scopes = new Map<string, MemoryScope>();
    for (const { record, vector } of items) {
      checkVector(record, vector);
      const owner = scopes.get(record.id) ?? this.#rows.get(record.id)?.record.scope;
      if (owner !== undefined && !sameScope(owner, record.scope)) {
        throw new AegisError('CONFLICT', `memory ${record.id} belongs to another scope`);
      }
      scopes.set(record.id, record.scope);
    }
    for (const { record, vector } of items) await this.put(record, vector);
  }

  async search(query: VectorSearchQuery): Promise<VectorHit[]> {
    const hits: VectorHit[] = [];
    for (const row of this.#rows.values()) {
      const r = row.record;
      if (r.embedderId !== query.embedderId || r.dimension !== query.vector.length) continue;
      if (!query.scopes.some((s) => sameScope(s, r.scope))) continue;
      if (!matchesFilter(r, query.filter, query.now)) continue;
      hits.push({ record: structuredClone(r), similarity: dot(query.vector, row.vector) });
    }
    return hits.sort(compareHits).slice(0, query.k);
  }

  async get(scope: MemoryScope, id: string): Promise<MemoryRecord | null> {
    const row = this.#rows.get(id);
    return row !== undefined && sameScope(row.record.scope, scope) ? structuredClone(row.record) : null;
  }

  async getVector(scope: MemoryScope, id: string): Promise<Float32Array | null> {
    const row = this.#rows.get(id);
    return row !== undefined && sameScope(row.record.scope, scope) ? Float32Array.from(row.vector) : null;
  }

  async list(scope: MemoryScope, query: MemoryListQuery): Promise<MemoryPage> {
    const limit = query.limit ?? 50;
    const cursor = query.after ? parseListCursor(query.after) : null;
    const all = [...this.#rows.values()]
      .map((r) => r.record)
      .filter((r) => sameScope(r.scope, scope) && matchesFilter(r, query.filter, query.now))
      .filter((r) => cursor === null || afterCursor(r, cursor))
      .sort(compareListOrder);
    const items = all.slice(0, limit).map((r) => structuredClone(r));
    const last = items.at(-1);
    return { items, next: all.length > limit && last !== undefined ? listCursor(last) : null };
  }

  async forget(scope: MemoryScope, id: string): Promise<boolean> {
    const row = this.#rows.get(id);
    if (row === undefined || !sameScope(row.record.scope, scope)) return false;
    return this.#rows.delete(id);
  }

  async forgetExpired(now: string): Promise<number> {
    let n = 0;
    for (const [id, row] of this.#rows) {
      if (row.record.expiresAt !== null && row.record.expiresAt <= now) {
        this.#rows.delete(id);
        n++;
      }
    }
    return n;
  }

  async count(scope?: MemoryScope): Promise<number> {
    if (scope === undefined) return this.#rows.size;
    let n = 0;
    for (const row of this.#rows.values()) if (sameScope(row.record.scope, scope)) n++;
    return n;
  }

  async scopes(): Promise<MemoryScope[]> {
    const out: MemoryScope[] = [];
    for (const row of this.#rows.values()) {
      if (!out.some((s) => sameScope(s, row.record.scope))) out.push({ ...row.record.scope });
    }
    return out.sort((a, b) => (a.agent + '/' + a.namespace < b.agent + '/' + b.namespace ? -1 : 1));
  }

  async embedders(scope: MemoryScope): Promise<ScopeEmbedder[]> {
    const by = new Map<string, { embedderId: string; dimension: number; count: number }>();
    for (const row of this.#rows.values()) {
      if (!sameScope(row.record.scope, scope)) continue;
      const key = `${row.record.embedderId}\u0000${row.record.dimension}`;
      const e = by.get(key) ?? {
        embedderId: row.record.embedderId,
        dimension: row.record.dimension,
        count: 0,
      };
      e.count++;
      by.set(key, e);
    }
    return [...by.values()].sort((a, b) => (a.embedderId < b.embedderId ? -1 : 1));
  }

  async close(): Promise<void> {}
}

/** A vector's length must be the record's dimension; every store checks this before writing. */
export function checkVector(record: MemoryRecord, vector: Float32Array): void {
  if (vector.length !== record.dimension) {
    throw new AegisError(
      'INTERNAL',
      `memory ${record.id}: vector has ${vector.length} floats but the record says dimension ${record.dimension}`,
    );
  }
}
