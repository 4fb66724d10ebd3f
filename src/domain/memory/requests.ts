/**
 * The bodies of the in-sandbox memory API (`/v1/memory/store|search|forget`) and the operator API, checked once at
 * the edge: unknown fields are errors, and a field that would choose a scope (`agent`, `namespace`, `scope`) is
 * refused as a scope override — an agent's scope comes from its manifest, never from its requests.
 */
import { AegisError } from '../errors.ts';

type JsonScalar = string | number | boolean | null;

/** The MemoryFilter of domain/cortex/memory.ts, as a request may give it. */
export interface RequestFilter {
  readonly meta?: Readonly<Record<string, JsonScalar>>;
  readonly outcome?: 'succeeded' | 'failed' | null;
  readonly source?: 'sdk' | 'execution' | 'api';
  readonly executionId?: string;
  readonly createdAfter?: string;
}

/** Fields that would pick a scope; refused (POLICY_DENIED by the caller) wherever they appear. */
export const SCOPE_FIELDS = ['agent', 'namespace', 'scope', 'scopes'] as const;

export class ScopeOverride extends Error {
  readonly field: string;
  constructor(field: string) {
    super(`the request sets "${field}"`);
    this.field = field;
  }
}

function object(value: unknown, where: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new AegisError('USAGE', `${where} must be a JSON object`);
  return value as Record<string, unknown>;
}

function only(body: Record<string, unknown>, allowed: readonly string[], where: string): void {
  for (const key of Object.keys(body)) {
    if ((SCOPE_FIELDS as readonly string[]).includes(key)) throw new ScopeOverride(`${where}.${key}`);
    if (!allowed.includes(key))
      throw new AegisError('USAGE', `${where}.${key} is not a field here`, {
        hint: `allowed: ${allowed.join(', ')}`,
      });
  }
}

function isScalar(value: unknown): value is JsonScalar {
  return value === null || ['string', 'number', 'boolean'].includes(typeof value);
}

export function parseFilter(value: unknown, where = 'filter'): RequestFilter | undefined {
  if (value === undefined || value === null) return undefined;
  const body = object(value, where);
  only(body, ['meta', 'outcome', 'source', 'executionId', 'createdAfter'], where);
  const filter: {
    meta?: Record<string, JsonScalar>;
    outcome?: 'succeeded' | 'failed' | null;
    source?: 'sdk' | 'execution' | 'api';
    executionId?: string;
    createdAfter?: string;
  } = {};
  if (body['meta'] !== undefined) {
    const meta = object(body['meta'], `${where}.meta`);
    for (const [key, item] of Object.entries(meta))
      if (!isScalar(item))
        throw new AegisError('USAGE', `${where}.meta.${key} must be a string, number, boolean or null`);
    filter.meta = meta as Record<string, JsonScalar>;
  }
  if (body['outcome'] !== undefined) {
    const outcome = body['outcome'];
    if (outcome !== null && outcome !== 'succeeded' && outcome !== 'failed')
      throw new AegisError('USAGE', `${where}.outcome is succeeded, failed or null`);
    filter.outcome = outcome;
  }
  if (body['source'] !== undefined) {
    const source = body['source'];
    if (source !== 'sdk' && source !== 'execution' && source !== 'api')
      throw new AegisError('USAGE', `${where}.source is sdk, execution or api`);
    filter.source = source;
  }
  for (const key of ['executionId', 'createdAfter'] as const) {
    const item = body[key];
    if (item === undefined) continue;
    if (typeof item !== 'string' || item.length > 200)
      throw new AegisError('USAGE', `${where}.${key} must be a string`);
    filter[key] = item;
  }
  return filter;
}

function k(value: unknown, fallback: number, max: number): number {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max)
    throw new AegisError('USAGE', `k must be a whole number from 1 to ${max}`);
  return value;
}

function text(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.trim() === '')
    throw new AegisError('USAGE', `${field} must be a non-empty string`);
  return value;
}

export interface StoreRequest {
  readonly text: string;
  readonly meta: Readonly<Record<string, unknown>>;
}

export function parseStoreRequest(value: unknown): StoreRequest {
  const body = object(value, 'body');
  only(body, ['text', 'meta'], 'body');
  const meta = body['meta'] === undefined || body['meta'] === null ? {} : object(body['meta'], 'body.meta');
  return { text: text(body['text'], 'body.text'), meta };
}

export interface SearchRequest {
  readonly query: string;
  readonly k: number;
  readonly filter?: RequestFilter;
  readonly threshold?: number;
}

export function parseSearchRequest(value: unknown, maxK = 50): SearchRequest {
  const body = object(value, 'body');
  only(body, ['query', 'k', 'filter', 'threshold'], 'body');
  const filter = parseFilter(body['filter'], 'body.filter');
  const threshold = body['threshold'];
  if (threshold !== undefined && (typeof threshold !== 'number' || !(threshold >= 0 && threshold <= 1)))
    throw new AegisError('USAGE', 'body.threshold must be a number from 0 to 1');
  return {
    query: text(body['query'], 'body.query'),
    k: k(body['k'], 5, maxK),
    ...(filter === undefined ? {} : { filter }),
    ...(threshold === undefined ? {} : { threshold: threshold as number }),
  };
}

export function parseForgetRequest(value: unknown): { readonly id: string } {
  const body = object(value, 'body');
  only(body, ['id'], 'body');
  const id = text(body['id'], 'body.id');
  if (id.length > 128) throw new AegisError('USAGE', 'body.id is a memory id (mem_…)');
  return { id };
}

/** Meta with every string (keys included) passed through `clean` (the execution's redaction). */
export function cleanMeta(value: unknown, clean: (text: string) => string): unknown {
  if (typeof value === 'string') return clean(value);
  if (Array.isArray(value)) return value.map((item) => cleanMeta(item, clean));
  if (value !== null && typeof value === 'object')
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [clean(key), cleanMeta(item, clean)]),
    );
  return value;
}
