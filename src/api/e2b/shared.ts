/**
 * What the E2B control plane (control.ts) and data plane (envd.ts, files.ts) share: how an E2B request's
 * credentials become an AEGIS principal, which sandbox a data-plane request is for, and E2B's error body.
 *
 * Credentials: the E2B API key *is* an AEGIS API key. The control plane sends it as `X-API-Key`; the data plane
 * sends the `envdAccessToken` that sandbox creation returned — which AEGIS sets to the very key that created (or
 * connected to) the sandbox — as `X-Access-Token`. Both go through the same gate (authentication, rate limit) as
 * the REST API, and every operation then through the LiveSandboxes use-case (scopes, ownership, policy, ledger).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { AegisError } from '../../domain/errors.ts';
import type { ApiContext } from '../context.ts';
import { httpStatusOf, publicError, type ServerPath, toAegisError } from '../errors.ts';

/** The envd version AEGIS reports: the SDK gates features on it (≥ 0.5.7: streamed octet-stream uploads, stdin close). */
export const ENVD_VERSION = '0.5.7';

type HeaderBag = IncomingHttpHeaders | Headers;

function header(headers: HeaderBag, name: string): string | undefined {
  if (headers instanceof Headers) return headers.get(name) ?? undefined;
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * The `Authorization` value the gate reads: from `X-API-Key` (control plane), `X-Access-Token` (data plane), or a
 * `Bearer` Authorization header. The data plane's `Authorization: Basic <user>:` names a sandbox user, not a key.
 */
export function authorizationOf(headers: HeaderBag): string | undefined {
  const key = header(headers, 'x-api-key') ?? header(headers, 'x-access-token');
  if (key !== undefined && key !== '') return `Bearer ${key}`;
  const authorization = header(headers, 'authorization');
  return authorization !== undefined && /^Bearer\s/i.test(authorization) ? authorization : undefined;
}

/** Credentials for `ctx.gate.admit`; a request with none is refused there (UNAUTHENTICATED). */
export async function e2bPrincipal(ctx: ApiContext, transport: 'tcp' | 'unix', headers: HeaderBag) {
  const authorization = authorizationOf(headers);
  if (authorization === undefined && transport === 'tcp') {
    throw new AegisError('UNAUTHENTICATED', 'no API key: send it as X-API-Key (E2B_API_KEY)', {
      hint: 'set E2B_API_KEY to an AEGIS API key (aegis keys create --name NAME --scope execute)',
    });
  }
  return ctx.gate.admit({ transport, authorization });
}

/**
 * The sandbox a data-plane request is for: the `E2b-Sandbox-Id` header the SDK sends with every envd call, or, with
 * host-based routing, the `<port>-<sandboxId>.<domain>` Host.
 */
export function sandboxIdOf(headers: HeaderBag): string {
  const id = header(headers, 'e2b-sandbox-id');
  if (id !== undefined && id !== '') return id;
  const host = header(headers, 'host') ?? header(headers, ':authority') ?? '';
  const match = /^\d+-([A-Za-z0-9_-]{1,128})\./.exec(host);
  if (match?.[1]) return match[1];
  throw new AegisError('USAGE', 'no sandbox named: the E2b-Sandbox-Id header is missing', {
    hint: 'point E2B_SANDBOX_URL at AEGIS (…/e2b/envd); the e2b SDK sends the header itself',
  });
}

/**
 * The sandbox user named by a data-plane call (`Authorization: Basic <user>:` or `?username=`). Every AEGIS command
 * runs as the sandbox's unprivileged user: asking for root is refused rather than silently downgraded.
 */
export function checkUser(headers: HeaderBag, username: unknown): void {
  let user = typeof username === 'string' ? username : undefined;
  const authorization = header(headers, 'authorization');
  const basic = authorization === undefined ? undefined : /^Basic\s+(\S+)$/i.exec(authorization);
  if (user === undefined && basic?.[1]) user = Buffer.from(basic[1], 'base64').toString('utf8').split(':')[0];
  if (user === 'root') {
    throw new AegisError('POLICY_DENIED', 'AEGIS sandboxes never run anything as root', {
      hint: 'drop `user: "root"`: commands and file operations run as the sandbox user',
    });
  }
}

/** E2B's error body `{code, message}` (the SDK reads both), from any error, in public form. */
export function e2bErrorBody(
  error: unknown,
  serverPaths: readonly ServerPath[] = [],
): { status: number; body: { code: number; message: string } } {
  const aegis = publicError(toAegisError(error), serverPaths);
  const status = httpStatusOf(aegis);
  const hint = aegis.hint === undefined ? '' : ` (${aegis.hint})`;
  return { status, body: { code: status, message: `${aegis.code}: ${aegis.message}${hint}` } };
}

/** A feature of E2B that AEGIS does not offer: HTTP 501 on the REST planes, Connect `unimplemented` on envd. */
export class E2bUnsupported extends Error {
  constructor(what: string) {
    super(`${what} is not implemented by AEGIS's E2B-compatible API (see docs/E2B.md)`);
    this.name = 'E2bUnsupported';
  }
}
