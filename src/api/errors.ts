/**
 * Errors at the API edge: anything thrown becomes an AegisError, then `{error: {code, message, details}}` with the
 * HTTP status from ERROR_CODES. Unknown errors are INTERNAL and their text stays in the server log, not the answer.
 *
 * What leaves the server is made safe here, in one place for REST, SSE and gRPC (`publicError`): an INTERNAL error
 * says only that it happened (its message may hold server paths or internals), every string is cut to a bounded
 * prefix (a hostile 900 KB name is not echoed back whole), and the server's own directories are named, not shown.
 */
import { ZodError } from 'zod';
import { AegisError, ERROR_CODES, isAegisError, type Problem } from '../domain/errors.ts';
import { boundText } from '../domain/input-bounds.ts';
import type { ErrorBody } from './http/schemas.ts';

/** `body.input.items[2]` from a zod path, prefixed by where the value came from. */
function jsonPath(prefix: string, path: readonly PropertyKey[]): string {
  let out = prefix;
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else if (typeof segment === 'string' && /^[A-Za-z_$][\w$]*$/.test(segment))
      out += out ? `.${segment}` : segment;
    else out += `[${JSON.stringify(String(segment))}]`;
  }
  return out;
}

/** A zod failure on part of a request (`body`, `query`, `params`) as a USAGE error listing every problem. */
export function requestValidationError(part: string, error: ZodError): AegisError {
  const problems: Problem[] = error.issues.flatMap((issue): Problem[] =>
    issue.code === 'unrecognized_keys'
      ? issue.keys.map((key) => ({ path: jsonPath(part, [...issue.path, key]), message: 'unknown field' }))
      : [{ path: jsonPath(part, issue.path), message: issue.message }],
  );
  const first = problems[0];
  return new AegisError(
    'USAGE',
    first ? `invalid request ${part}: ${first.path}: ${first.message}` : `invalid request ${part}`,
    { problems, hint: 'the API is described at GET /openapi.json' },
  );
}

export function toAegisError(error: unknown): AegisError {
  if (isAegisError(error)) return error;
  if (error instanceof ZodError) return requestValidationError('body', error);
  return new AegisError('INTERNAL', 'internal error; the server log has the details', { cause: error });
}

/** Longest message an API error carries; other strings (hints, problems, details) get less. */
export const MAX_ERROR_MESSAGE_CHARS = 1000;
const MAX_ERROR_FIELD_CHARS = 300;
const MAX_PROBLEMS = 20;
const INTERNAL_MESSAGE = 'internal error; the server log has the details';

/** A server directory that must not appear in answers, and the name shown instead (`$AEGIS_HOME`, `<bundles>`). */
export interface ServerPath {
  readonly path: string;
  readonly shownAs: string;
}

function redact(text: string, paths: readonly ServerPath[]): string {
  let out = text;
  for (const { path, shownAs } of paths) if (path.length > 1) out = out.replaceAll(path, shownAs);
  return out;
}

function safeValue(value: unknown, paths: readonly ServerPath[], depth: number): unknown {
  if (typeof value === 'string') return boundText(redact(value, paths), MAX_ERROR_FIELD_CHARS);
  if (value === null || typeof value !== 'object') return value;
  if (depth >= 4) return '…';
  if (Array.isArray(value)) return value.slice(0, MAX_PROBLEMS).map((v) => safeValue(v, paths, depth + 1));
  return Object.fromEntries(
    Object.entries(value)
      .slice(0, MAX_PROBLEMS)
      .map(([k, v]) => [boundText(k, 100), safeValue(v, paths, depth + 1)]),
  );
}

/**
 * The error as a client may see it: INTERNAL reduced to a generic message, server paths replaced by their names,
 * every string bounded. `serverPaths` longest first is not required: longer paths are replaced before their parents.
 */
export function publicError(error: AegisError, serverPaths: readonly ServerPath[] = []): AegisError {
  if (error.code === 'INTERNAL') return new AegisError('INTERNAL', INTERNAL_MESSAGE);
  const paths = [...serverPaths].sort((a, b) => b.path.length - a.path.length);
  const text = (value: string, max: number) => boundText(redact(value, paths), max);
  // Field by field in their original order (clients and tests read them as written).
  const problems = error.problems
    .slice(0, MAX_PROBLEMS)
    .map(
      (problem) =>
        Object.fromEntries(
          Object.entries(problem).map(([key, value]) => [
            key,
            typeof value === 'string' ? text(value, MAX_ERROR_FIELD_CHARS) : value,
          ]),
        ) as unknown as Problem,
    );
  return new AegisError(error.code, text(error.message, MAX_ERROR_MESSAGE_CHARS), {
    problems,
    details: safeValue(error.details, paths, 0) as Record<string, unknown>,
    ...(error.hint === undefined ? {} : { hint: text(error.hint, MAX_ERROR_FIELD_CHARS) }),
  });
}

/** The REST/SSE error body: the public form of the error (see `publicError`). */
export function errorBody(unsafe: AegisError, serverPaths: readonly ServerPath[] = []): ErrorBody {
  const error = publicError(unsafe, serverPaths);
  const details: Record<string, unknown> = { ...error.details };
  if (error.hint !== undefined) details['hint'] = error.hint;
  if (error.problems.length > 0) details['problems'] = error.problems;
  return { error: { code: error.code, message: error.message, details } };
}

export function httpStatusOf(error: AegisError): number {
  return ERROR_CODES[error.code].httpStatus;
}

/** Seconds for a Retry-After header, when the error says when to retry. */
export function retryAfterSeconds(error: AegisError): number | undefined {
  if (!ERROR_CODES[error.code].retryable) return undefined;
  const ms = error.details['retryAfterMs'];
  return typeof ms === 'number' ? Math.max(1, Math.ceil(ms / 1000)) : 1;
}
