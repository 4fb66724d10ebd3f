/**
 * Errors at the API edge: anything thrown becomes an AegisError, then `{error: {code, message, details}}` with the
 * HTTP status from ERROR_CODES. Unknown errors are INTERNAL and their text stays in the server log, not the answer.
 */
import { ZodError } from 'zod';
import { AegisError, ERROR_CODES, isAegisError, type Problem } from '../domain/errors.ts';
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

export function errorBody(error: AegisError): ErrorBody {
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
