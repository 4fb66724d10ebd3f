/**
 * Use-cases for API keys: authenticate a request, create / list / revoke keys, and the first admin key a fresh
 * server makes for its operator. Only SHA-256 hashes are stored; a key's text exists once, in the creation answer.
 */
import { AUDIT_KINDS } from '../domain/audit/entry.ts';
import {
  type ApiKeyRecord,
  KEY_PREFIX,
  looksLikeApiKey,
  type Principal,
  type RateLimit,
  requireScope,
  type Scope,
} from '../domain/auth/api-key.ts';
import { AegisError } from '../domain/errors.ts';
import type { ApiKeyStore, AuditLog, Clock, Hasher, Ids, SecretRandom } from './ports.ts';

export interface ApiKeyDeps {
  readonly store: ApiKeyStore;
  readonly hasher: Hasher;
  readonly clock: Pick<Clock, 'now'>;
  readonly ids: Pick<Ids, 'keyId'>;
  readonly random: SecretRandom;
  readonly audit: AuditLog;
}

/** What a key's owner may see of it: everything but the hash. */
export type ApiKeyView = Omit<ApiKeyRecord, 'hash'>;

export function viewOf(record: ApiKeyRecord): ApiKeyView {
  const { hash: _hash, ...view } = record;
  return view;
}

/** How often `lastUsedAt` is written per key (it is informational; one write per request would be waste). */
const TOUCH_EVERY_MS = 60_000;
const lastTouched = new WeakMap<object, Map<string, number>>();

export async function authenticate(
  deps: Pick<ApiKeyDeps, 'store' | 'hasher' | 'clock'>,
  presented: string | undefined,
): Promise<Principal> {
  if (presented === undefined || presented === '') {
    throw new AegisError('UNAUTHENTICATED', 'this request needs an API key', {
      hint: 'send "Authorization: Bearer aegis_…" (the CLI reads AEGIS_API_KEY)',
    });
  }
  if (!looksLikeApiKey(presented)) {
    throw new AegisError('UNAUTHENTICATED', `the API key is malformed (keys look like ${KEY_PREFIX}…)`, {
      hint: 'check AEGIS_API_KEY; create keys with `aegis keys create`',
    });
  }
  const record = await deps.store.findKeyByHash(deps.hasher.sha256Hex(presented));
  if (record === undefined) {
    throw new AegisError('UNAUTHENTICATED', `unknown API key ${presented.slice(0, 10)}…`, {
      hint: 'ask an admin for a key (`aegis keys create`)',
    });
  }
  if (record.revokedAt !== null) {
    throw new AegisError(
      'UNAUTHENTICATED',
      `API key ${record.id} (${record.name}) was revoked at ${record.revokedAt}`,
      {
        hint: 'ask an admin for a new key',
      },
    );
  }
  const now = deps.clock.now();
  let touched = lastTouched.get(deps.store);
  if (touched === undefined) {
    touched = new Map();
    lastTouched.set(deps.store, touched);
  }
  if (now - (touched.get(record.id) ?? 0) > TOUCH_EVERY_MS) {
    touched.set(record.id, now);
    void deps.store.touchKey(record.id, new Date(now).toISOString()).catch(() => {});
  }
  return { id: record.id, name: record.name, scopes: record.scopes, rateLimit: record.rateLimit };
}

export interface CreateKeyRequest {
  readonly name: string;
  readonly scopes: readonly Scope[];
  readonly rateLimit?: RateLimit | null;
}

/** Creates a key; the answer holds the key text — the only time it exists outside the caller's hands. */
export async function createApiKey(
  deps: ApiKeyDeps,
  principal: Principal,
  request: CreateKeyRequest,
): Promise<{ key: string; record: ApiKeyView }> {
  requireScope(principal, 'admin', 'creating API keys');
  const name = request.name.trim();
  if (name === '' || name.length > 100) {
    throw new AegisError('USAGE', 'name: a key needs a name of 1 to 100 characters', {
      hint: 'say who or what uses it, e.g. "ci-deployer"',
    });
  }
  const key = `${KEY_PREFIX}${deps.random.hex128()}${deps.random.hex128()}`;
  const record: ApiKeyRecord = {
    id: deps.ids.keyId(),
    name,
    hash: deps.hasher.sha256Hex(key),
    prefix: key.slice(0, 10),
    scopes: [...request.scopes],
    rateLimit: request.rateLimit ?? null,
    createdAt: new Date(deps.clock.now()).toISOString(),
    revokedAt: null,
    lastUsedAt: null,
  };
  await deps.store.createKey(record);
  deps.audit.append(AUDIT_KINDS.apiKeyCreated, null, {
    id: record.id,
    name,
    scopes: [...record.scopes],
    by: principal.id,
  });
  await deps.audit.flush();
  return { key, record: viewOf(record) };
}

export async function listApiKeys(
  deps: Pick<ApiKeyDeps, 'store'>,
  principal: Principal,
): Promise<readonly ApiKeyView[]> {
  requireScope(principal, 'admin', 'listing API keys');
  return (await deps.store.listKeys()).map(viewOf);
}

export async function revokeApiKey(deps: ApiKeyDeps, principal: Principal, id: string): Promise<ApiKeyView> {
  requireScope(principal, 'admin', 'revoking API keys');
  const record = await deps.store.revokeKey(id, new Date(deps.clock.now()).toISOString());
  deps.audit.append(AUDIT_KINDS.apiKeyRevoked, null, { id, by: principal.id });
  await deps.audit.flush();
  return viewOf(record);
}

/**
 * A fresh server has no keys: make one admin key for the operator. Returns it (to print once and save 0600), or
 * undefined when any key exists already.
 */
export async function ensureFirstAdminKey(
  deps: ApiKeyDeps,
): Promise<{ key: string; record: ApiKeyView } | undefined> {
  if ((await deps.store.listKeys()).length > 0) return undefined;
  const bootstrap: Principal = {
    id: 'bootstrap',
    name: 'first server start',
    scopes: ['admin'],
    rateLimit: null,
  };
  return createApiKey(deps, bootstrap, { name: 'admin (created at first start)', scopes: ['admin'] });
}
