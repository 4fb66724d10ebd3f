/**
 * API keys and what they may do. A key is `aegis_` + 64 hex digits (256 random bits); only its SHA-256
 * is stored — a plain hash is right for secrets with this much entropy (no dictionary to slow down). The key text
 * is shown once, when it is created.
 */
import { AegisError } from '../errors.ts';

export const SCOPES = ['admin', 'deploy', 'execute', 'read'] as const;
export type Scope = (typeof SCOPES)[number];

/**
 * What each scope grants. `admin` implies every other scope and alone manages keys; `deploy` and `execute` each
 * imply `read` (you can see what you deployed or ran).
 */
const IMPLIES: Readonly<Record<Scope, readonly Scope[]>> = {
  admin: ['admin', 'deploy', 'execute', 'read'],
  deploy: ['deploy', 'read'],
  execute: ['execute', 'read'],
  read: ['read'],
};

export function hasScope(granted: readonly Scope[], required: Scope): boolean {
  return granted.some((scope) => IMPLIES[scope].includes(required));
}

export const KEY_PREFIX = 'aegis_';
const KEY_BODY = /^[A-Za-z0-9_-]{32,}$/;

export function looksLikeApiKey(text: string): boolean {
  return text.startsWith(KEY_PREFIX) && KEY_BODY.test(text.slice(KEY_PREFIX.length));
}

export interface RateLimit {
  /** Sustained requests per second. */
  readonly perSecond: number;
  /** Requests allowed at once above the sustained rate. */
  readonly burst: number;
}

export interface ApiKeyRecord {
  /** `key_` + sortable id; safe to show and log. */
  readonly id: string;
  readonly name: string;
  /** Lowercase hex SHA-256 of the whole key text. */
  readonly hash: string;
  /** First 10 characters of the key (`aegis_AbCd`), so a person can tell keys apart. */
  readonly prefix: string;
  readonly scopes: readonly Scope[];
  /** Overrides the server's default per-key rate. */
  readonly rateLimit: RateLimit | null;
  readonly createdAt: string;
  readonly revokedAt: string | null;
  readonly lastUsedAt: string | null;
}

/** Who is making a request: a key, or the local user over the trusted unix socket. */
export interface Principal {
  /** Key id, or `local` for the unix socket. */
  readonly id: string;
  readonly name: string;
  readonly scopes: readonly Scope[];
  readonly rateLimit: RateLimit | null;
}

export const LOCAL_PRINCIPAL: Principal = {
  id: 'local',
  name: 'local user (unix socket)',
  scopes: ['admin'],
  rateLimit: null,
};

export function requireScope(principal: Principal, required: Scope, action: string): void {
  if (hasScope(principal.scopes, required)) return;
  throw new AegisError(
    'PERMISSION_DENIED',
    `${action} needs the "${required}" scope; key ${principal.id} (${principal.name}) has ${principal.scopes.join(', ') || 'none'}`,
    {
      hint: `ask an admin for a key with "${required}" (aegis keys create --scope ${required})`,
      details: { required, granted: [...principal.scopes] },
    },
  );
}

/** Parses `--scope` values / API bodies: a non-empty list of known scopes, each once. */
export function parseScopes(values: readonly string[], where: string): Scope[] {
  if (values.length === 0) {
    throw new AegisError('USAGE', `${where}: at least one scope is required`, {
      hint: `one or more of ${SCOPES.join(', ')}`,
    });
  }
  const out: Scope[] = [];
  for (const value of values) {
    if (!(SCOPES as readonly string[]).includes(value)) {
      throw new AegisError('USAGE', `${where}: unknown scope "${value}"`, {
        hint: `scopes are ${SCOPES.join(', ')}`,
      });
    }
    if (!out.includes(value as Scope)) out.push(value as Scope);
  }
  return out;
}

/** `10/s`, `600/m`, optionally with `,burst=N`. */
export function parseRateLimit(text: string, where: string): RateLimit {
  const match = /^(\d+(?:\.\d+)?)\/(s|m|h)(?:,burst=(\d+))?$/.exec(text.trim());
  if (!match) {
    throw new AegisError('USAGE', `${where}: "${text}" is not a rate`, {
      hint: 'write requests per second, minute or hour, e.g. 20/s, 600/m or 20/s,burst=40',
    });
  }
  const per = { s: 1, m: 60, h: 3600 }[match[2] as 's' | 'm' | 'h'];
  const perSecond = Number(match[1]) / per;
  if (!(perSecond > 0)) throw new AegisError('USAGE', `${where}: the rate must be above zero`);
  const burst = match[3] === undefined ? Math.max(1, Math.ceil(perSecond * 2)) : Number(match[3]);
  if (burst < 1) throw new AegisError('USAGE', `${where}: burst must be at least 1`);
  return { perSecond, burst };
}
