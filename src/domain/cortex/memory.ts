/**
 * Cortex memories: what one is, where it lives (its scope), and how callers narrow a search. Pure types and checks;
 * the use-case is app/cortex.ts, the stores are adapters/cortex/.
 *
 * A memory belongs to exactly one scope `(agent, namespace)`. A search sees only the scopes its caller passes in:
 * deciding which scopes an agent (or its swarm) may read is the caller's job, never the store's.
 */
import { AegisError } from '../errors.ts';

export type JsonScalar = string | number | boolean | null;
export type MemoryJson = JsonScalar | readonly MemoryJson[] | { readonly [key: string]: MemoryJson };
export type MemoryMeta = { readonly [key: string]: MemoryJson };

export interface MemoryScope {
  readonly agent: string;
  /** @default 'default' */
  readonly namespace: string;
}

export const DEFAULT_NAMESPACE = 'default';

export type MemoryOutcome = 'succeeded' | 'failed';
export type MemorySource = 'sdk' | 'execution' | 'api';

export interface MemoryRecord {
  /** `mem_` + a sortable id. Unique across all scopes. */
  readonly id: string;
  readonly scope: MemoryScope;
  readonly text: string;
  readonly meta: MemoryMeta;
  /** The embedder whose vector is stored for this memory (`hash-v1/256`, `minilm-l6-v2`, `openai:…`). */
  readonly embedderId: string;
  readonly dimension: number;
  /** ISO-8601 UTC. */
  readonly createdAt: string;
  /** ISO-8601 UTC; the memory is invisible to search and list from then on and `forgetExpired` deletes it. */
  readonly expiresAt: string | null;
  /** The execution this memory came from (auto-indexing, or an SDK call inside an execution). */
  readonly executionId: string | null;
  /** Outcome of that execution; recall weighs succeeded above unknown above failed. */
  readonly outcome: MemoryOutcome | null;
  readonly source: MemorySource;
}

/**
 * What a search (or list) keeps, besides its scopes. Every given field must match (AND). `meta` compares each named
 * key by JSON equality with scalar values only; an absent key never matches.
 */
export interface MemoryFilter {
  readonly meta?: Readonly<Record<string, JsonScalar>>;
  readonly outcome?: MemoryOutcome | null;
  readonly source?: MemorySource;
  readonly executionId?: string;
  /** ISO-8601: only memories created at or after this time. */
  readonly createdAfter?: string;
}

/** `agent/namespace`, the way scopes appear in audit entries and messages. */
export function scopeKey(scope: MemoryScope): string {
  return `${scope.agent}/${scope.namespace}`;
}

export function sameScope(a: MemoryScope, b: MemoryScope): boolean {
  return a.agent === b.agent && a.namespace === b.namespace;
}

/** Agent names are DNS labels (the manifest's rule); namespaces the same, so `agent/namespace` is unambiguous. */
const SCOPE_PART = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Throws USAGE naming the field when a scope part is not a DNS label. */
export function checkScope(scope: MemoryScope, where = 'scope'): MemoryScope {
  if (!SCOPE_PART.test(scope.agent)) {
    throw new AegisError('USAGE', `${where}.agent ${JSON.stringify(scope.agent)} is not an agent name`, {
      hint: 'agent names are lowercase DNS labels: a-z, 0-9 and -, at most 63 characters',
    });
  }
  if (!SCOPE_PART.test(scope.namespace)) {
    throw new AegisError(
      'USAGE',
      `${where}.namespace ${JSON.stringify(scope.namespace)} is not a valid namespace`,
      {
        hint: `namespaces are lowercase DNS labels like agent names; omit it for ${JSON.stringify(DEFAULT_NAMESPACE)}`,
      },
    );
  }
  return scope;
}

/** True when `record` passes `filter` (and is not expired at `nowIso`). Stores that cannot push a filter down use this. */
export function matchesFilter(
  record: MemoryRecord,
  filter: MemoryFilter | undefined,
  nowIso: string,
): boolean {
  if (record.expiresAt !== null && record.expiresAt <= nowIso) return false;
  if (filter === undefined) return true;
  if (filter.outcome !== undefined && record.outcome !== filter.outcome) return false;
  if (filter.source !== undefined && record.source !== filter.source) return false;
  if (filter.executionId !== undefined && record.executionId !== filter.executionId) return false;
  if (filter.createdAfter !== undefined && record.createdAt < filter.createdAfter) return false;
  if (filter.meta !== undefined) {
    for (const [key, want] of Object.entries(filter.meta)) {
      if (!Object.hasOwn(record.meta, key)) return false;
      if (record.meta[key] !== want) return false;
    }
  }
  return true;
}

/** Cosine similarity of two L2-normalised vectors (their dot product), clamped to [-1, 1]. */
export function dot(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  const n = a.length;
  for (let i = 0; i < n; i++) sum += (a[i] as number) * (b[i] as number);
  return Math.min(1, Math.max(-1, sum));
}

/** Scales `v` in place to unit length (a zero vector stays zero); returns it. */
export function l2Normalise(v: Float32Array): Float32Array {
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += (v[i] as number) * (v[i] as number);
  if (sum === 0) return v;
  const inv = 1 / Math.sqrt(sum);
  for (let i = 0; i < v.length; i++) v[i] = (v[i] as number) * inv;
  return v;
}

/** List order: newest first, then id descending. A page cursor is the last item's `createdAt|id`. */
export function listCursor(record: Pick<MemoryRecord, 'createdAt' | 'id'>): string {
  return `${record.createdAt}|${record.id}`;
}

/** Splits a cursor from `listCursor`; USAGE when it is not one. */
export function parseListCursor(cursor: string): { createdAt: string; id: string } {
  const bar = cursor.indexOf('|');
  if (bar <= 0 || bar === cursor.length - 1) {
    throw new AegisError('USAGE', `page cursor ${JSON.stringify(cursor)} is not one this server returned`, {
      hint: 'pass the `next` value of the previous page unchanged, or omit it for the first page',
    });
  }
  return { createdAt: cursor.slice(0, bar), id: cursor.slice(bar + 1) };
}

/** True when `record` comes after the cursor in list order (newest first). */
export function afterCursor(
  record: Pick<MemoryRecord, 'createdAt' | 'id'>,
  cursor: { createdAt: string; id: string },
): boolean {
  return (
    record.createdAt < cursor.createdAt || (record.createdAt === cursor.createdAt && record.id < cursor.id)
  );
}

/** Newest first, then id descending. */
export function compareListOrder(
  a: Pick<MemoryRecord, 'createdAt' | 'id'>,
  b: Pick<MemoryRecord, 'createdAt' | 'id'>,
): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

/** Best first; equal similarity by id ascending, so every store returns the same order. */
export function compareHits(
  a: { similarity: number; record: { id: string } },
  b: { similarity: number; record: { id: string } },
): number {
  return b.similarity - a.similarity || (a.record.id < b.record.id ? -1 : a.record.id > b.record.id ? 1 : 0);
}
