/**
 * Cortex: agent memory. Stores texts with their vectors in scopes `(agent, namespace)`, recalls the ones closest to
 * a query weighted by recency and outcome (domain/cortex/recall.ts), forgets them, and re-embeds a scope when the
 * embedder changes. Every store, search and forget is an audit entry holding ids, sizes, counts and digests — never
 * the text or the query.
 *
 * Scopes are the caller's decision: `search` sees exactly the scopes it is given (an agent's own, plus its swarm's
 * when granted); nothing here widens them.
 *
 * One scope holds vectors of one embedder. Storing or searching with another embedder is refused with CONFLICT
 * until `reembed` has moved the scope over (`aegis memory reembed`).
 */

import { canonicalJson } from '../domain/audit/canonical-json.ts';
import { AUDIT_KINDS } from '../domain/audit/entry.ts';
import {
  checkScope,
  DEFAULT_NAMESPACE,
  type MemoryFilter,
  type MemoryMeta,
  type MemoryOutcome,
  type MemoryRecord,
  type MemoryScope,
  type MemorySource,
  sameScope,
  scopeKey,
} from '../domain/cortex/memory.ts';
import {
  checkThreshold,
  type RecallOptions,
  type RecallPolicy,
  rankRecall,
  recallPolicy,
} from '../domain/cortex/recall.ts';
import { AegisError } from '../domain/errors.ts';
import type { AuditLog, Clock, Embedder, Hasher, MemoryIds, MemoryPage, VectorStore } from './ports.ts';

export interface CortexOptions extends RecallOptions {
  /** Largest memory text, UTF-8 bytes. @default 16 KiB */
  readonly maxTextBytes?: number;
  /** Largest `meta`, bytes of its JSON. @default 4 KiB */
  readonly maxMetaBytes?: number;
  /** Largest `k` a search may ask for. @default 100 */
  readonly maxK?: number;
  /**
   * How many nearest vectors are re-ranked by recency and outcome per result asked for: a search for k fetches
   * `max(k × candidateFactor, 50)` by similarity, then scores them. @default 5
   */
  readonly candidateFactor?: number;
}

export interface CortexDeps {
  readonly embedder: Embedder;
  readonly store: VectorStore;
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly ids: MemoryIds;
  readonly hasher: Hasher;
  readonly options?: CortexOptions;
}

export interface StoreOptions {
  readonly executionId?: string | null;
  readonly outcome?: MemoryOutcome | null;
  /** Forget the memory this long after storing it. @default never */
  readonly ttlMs?: number | null;
  /** @default 'api' */
  readonly source?: MemorySource;
}

export interface SearchOptions {
  readonly k: number;
  readonly filter?: MemoryFilter;
  /** Overrides the configured threshold for this search, in [0, 1]. */
  readonly threshold?: number;
  /** ms since epoch; recency is computed against it. @default clock.now() */
  readonly now?: number;
  /** The execution on whose behalf the search runs (its audit entry is filed under it). */
  readonly executionId?: string | null;
}

export interface RecalledMemory {
  readonly record: MemoryRecord;
  readonly similarity: number;
  readonly recency: number;
  readonly outcomeWeight: number;
  readonly score: number;
}

export interface ListPage {
  /** @default 50 */
  readonly limit?: number;
  readonly after?: string | null;
  readonly filter?: MemoryFilter;
}

const KIB = 1024;
const encoder = new TextEncoder();
const REEMBED_BATCH = 32;

export class Cortex {
  readonly #embedder: Embedder;
  readonly #store: VectorStore;
  readonly #audit: AuditLog;
  readonly #clock: Clock;
  readonly #ids: MemoryIds;
  readonly #hasher: Hasher;
  readonly #policy: RecallPolicy;
  readonly #maxTextBytes: number;
  readonly #maxMetaBytes: number;
  readonly #maxK: number;
  readonly #candidateFactor: number;

  constructor(deps: CortexDeps) {
    const options = deps.options ?? {};
    this.#embedder = deps.embedder;
    this.#store = deps.store;
    this.#audit = deps.audit;
    this.#clock = deps.clock;
    this.#ids = deps.ids;
    this.#hasher = deps.hasher;
    this.#policy = recallPolicy(options);
    this.#maxTextBytes = options.maxTextBytes ?? 16 * KIB;
    this.#maxMetaBytes = options.maxMetaBytes ?? 4 * KIB;
    this.#maxK = options.maxK ?? 100;
    this.#candidateFactor = options.candidateFactor ?? 5;
  }

  /** The embedder new memories and queries go through. */
  get embedder(): Embedder {
    return this.#embedder;
  }

  get policy(): RecallPolicy {
    return this.#policy;
  }

  async store(
    scope: MemoryScope,
    text: string,
    meta: MemoryMeta = {},
    opts: StoreOptions = {},
  ): Promise<MemoryRecord> {
    const at = checkScope(withNamespace(scope));
    const bytes = this.#checkText(text, 'text');
    const metaJson = this.#checkMeta(meta);
    if (opts.ttlMs !== undefined && opts.ttlMs !== null && !(Number.isFinite(opts.ttlMs) && opts.ttlMs > 0)) {
      throw new AegisError('USAGE', `ttlMs is ${opts.ttlMs}; it must be a positive number of milliseconds`, {
        hint: 'omit the ttl to keep the memory until it is forgotten',
      });
    }
    await this.#requireEmbedder(at);
    const [vector] = await this.#embedder.embed([text]);
    const checked = this.#checkVector(vector);
    const nowMs = this.#clock.now();
    const record: MemoryRecord = {
      id: this.#ids.memoryId(),
      scope: at,
      text,
      meta: JSON.parse(metaJson) as MemoryMeta,
      embedderId: this.#embedder.id,
      dimension: this.#embedder.dimension,
      createdAt: new Date(nowMs).toISOString(),
      expiresAt: opts.ttlMs ? new Date(nowMs + opts.ttlMs).toISOString() : null,
      executionId: opts.executionId ?? null,
      outcome: opts.outcome ?? null,
      source: opts.source ?? 'api',
    };
    await this.#store.put(record, checked);
    this.#audit.append(AUDIT_KINDS.memoryStore, record.executionId, {
      scope: scopeKey(at),
      id: record.id,
      bytes,
      metaBytes: metaJson.length,
      textDigest: this.#hasher.sha256Hex(text),
      embedder: record.embedderId,
      dimension: record.dimension,
      source: record.source,
      outcome: record.outcome,
      expiresAt: record.expiresAt,
    });
    return record;
  }

  async search(
    scopes: readonly MemoryScope[],
    query: string,
    opts: SearchOptions,
  ): Promise<RecalledMemory[]> {
    const unique = dedupeScopes(scopes.map((s, i) => checkScope(withNamespace(s), `scopes[${i}]`)));
    const bytes = this.#checkText(query, 'query');
    if (!(Number.isInteger(opts.k) && opts.k >= 1 && opts.k <= this.#maxK)) {
      throw new AegisError('USAGE', `k is ${opts.k}; it must be a whole number from 1 to ${this.#maxK}`);
    }
    const threshold = checkThreshold(opts.threshold ?? this.#policy.threshold);
    for (const scope of unique) await this.#requireEmbedder(scope);
    const nowMs = opts.now ?? this.#clock.now();
    let results: RecalledMemory[] = [];
    let candidates = 0;
    if (unique.length > 0) {
      const [vector] = await this.#embedder.embed([query]);
      const hits = await this.#store.search({
        scopes: unique,
        vector: this.#checkVector(vector),
        embedderId: this.#embedder.id,
        k: Math.max(opts.k * this.#candidateFactor, 50),
        ...(opts.filter === undefined ? {} : { filter: opts.filter }),
        now: new Date(nowMs).toISOString(),
      });
      candidates = hits.length;
      results = rankRecall(hits, { k: opts.k, threshold, nowMs, policy: this.#policy });
    }
    this.#audit.append(AUDIT_KINDS.memorySearch, opts.executionId ?? null, {
      scopes: unique.map(scopeKey),
      k: opts.k,
      threshold,
      queryBytes: bytes,
      queryDigest: this.#hasher.sha256Hex(query),
      filtered: opts.filter !== undefined,
      candidates,
      returned: results.length,
      ids: results.map((r) => r.record.id),
    });
    return results.map((r) => ({
      record: r.record,
      similarity: r.similarity,
      recency: r.recency,
      outcomeWeight: r.outcomeWeight,
      score: r.score,
    }));
  }

  /** Deletes one memory of `scope`; false (and still audited) when the scope holds no such memory. */
  async forget(scope: MemoryScope, id: string, executionId: string | null = null): Promise<boolean> {
    const at = checkScope(withNamespace(scope));
    const found = await this.#store.forget(at, id);
    this.#audit.append(AUDIT_KINDS.memoryForget, executionId, { scope: scopeKey(at), id, found });
    return found;
  }

  /** Deletes every expired memory; audited as one entry with the count. */
  async forgetExpired(): Promise<number> {
    const count = await this.#store.forgetExpired(new Date(this.#clock.now()).toISOString());
    if (count > 0) this.#audit.append(AUDIT_KINDS.memoryForget, null, { expired: count });
    return count;
  }

  async get(scope: MemoryScope, id: string): Promise<MemoryRecord | null> {
    return this.#store.get(checkScope(withNamespace(scope)), id);
  }

  async list(scope: MemoryScope, page: ListPage = {}): Promise<MemoryPage> {
    const limit = page.limit ?? 50;
    if (!(Number.isInteger(limit) && limit >= 1 && limit <= 1000)) {
      throw new AegisError('USAGE', `limit is ${limit}; it must be a whole number from 1 to 1000`);
    }
    return this.#store.list(checkScope(withNamespace(scope)), {
      limit,
      after: page.after ?? null,
      ...(page.filter === undefined ? {} : { filter: page.filter }),
      now: new Date(this.#clock.now()).toISOString(),
    });
  }

  /**
   * Re-computes the vector of every memory in `target` (one scope, or every scope) with `embedder` (default: this
   * Cortex's), so the scope can be searched with it. Ids, texts and times stay; memories expired are skipped.
   */
  async reembed(
    target: MemoryScope | 'all',
    embedder: Embedder = this.#embedder,
  ): Promise<{ count: number }> {
    const scopes = target === 'all' ? await this.#store.scopes() : [checkScope(withNamespace(target))];
    let total = 0;
    for (const scope of scopes) {
      let count = 0;
      let after: string | null = null;
      do {
        const page: MemoryPage = await this.#store.list(scope, {
          limit: REEMBED_BATCH,
          after,
          now: new Date(this.#clock.now()).toISOString(),
        });
        const stale = page.items.filter((r) => r.embedderId !== embedder.id);
        if (stale.length > 0) {
          const vectors = await embedder.embed(stale.map((r) => r.text));
          for (let i = 0; i < stale.length; i++) {
            const record = stale[i] as MemoryRecord;
            const vector = this.#checkVector(vectors[i], embedder);
            await this.#store.put(
              { ...record, embedderId: embedder.id, dimension: embedder.dimension },
              vector,
            );
          }
          count += stale.length;
        }
        after = page.next;
      } while (after !== null);
      if (count > 0) {
        this.#audit.append(AUDIT_KINDS.memoryStore, null, {
          scope: scopeKey(scope),
          reembedded: count,
          embedder: embedder.id,
          dimension: embedder.dimension,
        });
      }
      total += count;
    }
    return { count: total };
  }

  /** CONFLICT when `scope` holds vectors of another embedder than this Cortex's. */
  async #requireEmbedder(scope: MemoryScope): Promise<void> {
    const present = await this.#store.embedders(scope);
    const other = present.find(
      (e) => e.embedderId !== this.#embedder.id || e.dimension !== this.#embedder.dimension,
    );
    if (other === undefined) return;
    const ns = scope.namespace === DEFAULT_NAMESPACE ? '' : ` --namespace ${scope.namespace}`;
    throw new AegisError(
      'CONFLICT',
      `memory scope ${scopeKey(scope)} holds ${other.count} vector(s) of embedder ${other.embedderId} (dimension ${other.dimension}); this server embeds with ${this.#embedder.id} (dimension ${this.#embedder.dimension}), and vectors of different embedders cannot be compared`,
      {
        hint: `run \`aegis memory reembed ${scope.agent}${ns}\` to re-embed the scope with ${this.#embedder.id}, or configure the embedder ${other.embedderId} again`,
        details: { scope: scopeKey(scope), stored: other.embedderId, configured: this.#embedder.id },
      },
    );
  }

  #checkText(text: unknown, what: string): number {
    if (typeof text !== 'string' || text.trim() === '') {
      throw new AegisError('USAGE', `memory ${what} must be a non-empty string`);
    }
    const bytes = encoder.encode(text).length;
    if (bytes > this.#maxTextBytes) {
      throw new AegisError(
        'PAYLOAD_TOO_LARGE',
        `memory ${what} is ${bytes} bytes; the limit is ${this.#maxTextBytes}`,
        {
          hint: 'store a summary, or split the text into several memories',
        },
      );
    }
    return bytes;
  }

  #checkMeta(meta: unknown): string {
    if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) {
      throw new AegisError('USAGE', 'memory meta must be a JSON object');
    }
    let json: string;
    try {
      json = canonicalJson(meta);
    } catch (error) {
      throw new AegisError('USAGE', `memory meta is not plain JSON: ${(error as Error).message}`, {
        cause: error,
      });
    }
    if (json.length > this.#maxMetaBytes) {
      throw new AegisError(
        'PAYLOAD_TOO_LARGE',
        `memory meta is ${json.length} bytes of JSON; the limit is ${this.#maxMetaBytes}`,
      );
    }
    return json;
  }

  #checkVector(vector: Float32Array | undefined, embedder: Embedder = this.#embedder): Float32Array {
    if (!(vector instanceof Float32Array) || vector.length !== embedder.dimension) {
      throw new AegisError(
        'INTERNAL',
        `embedder ${embedder.id} returned ${vector instanceof Float32Array ? `a vector of ${vector.length} floats` : 'no vector'}; it declares dimension ${embedder.dimension}`,
      );
    }
    return vector;
  }
}

function withNamespace(scope: MemoryScope): MemoryScope {
  return { agent: scope.agent, namespace: scope.namespace ?? DEFAULT_NAMESPACE };
}

function dedupeScopes(scopes: readonly MemoryScope[]): MemoryScope[] {
  const out: MemoryScope[] = [];
  for (const s of scopes) if (!out.some((o) => sameScope(o, s))) out.push(s);
  return out;
}
