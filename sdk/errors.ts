/**
 * Every failure the SDK reports is an AegisApiError: the server's `{error: {code, message, details}}` with the HTTP
 * status, or — with `status` 0 — a request that never got an answer (unreachable server, bad `server` option).
 */

/** A located problem in a request (a JSON path, and a file position when the problem is in a bundle's agent.yaml). */
export interface ApiProblem {
  readonly path: string;
  readonly message: string;
  readonly file?: string;
  readonly line?: number;
  readonly column?: number;
  readonly hint?: string;
}

/** Codes a client may retry unchanged, after `retryAfterMs` when given. */
const RETRYABLE_CODES = new Set(['RATE_LIMITED', 'QUEUE_FULL', 'UNAVAILABLE']);

export interface AegisApiErrorInit {
  readonly code: string;
  readonly message: string;
  /** HTTP status; 0 when no answer came back. */
  readonly status: number;
  readonly details?: Record<string, unknown>;
  /** From the `Retry-After` header when `details.retryAfterMs` is absent. */
  readonly retryAfterMs?: number;
  readonly cause?: unknown;
}

export class AegisApiError extends Error {
  /** Stable error code (`NOT_FOUND`, `QUEUE_FULL`, …), or `UNAVAILABLE` when the server could not be reached. */
  readonly code: string;
  /** HTTP status of the answer; 0 when there was none. */
  readonly status: number;
  /** The error body's `details`, as sent. */
  readonly details: Readonly<Record<string, unknown>>;
  /** What to do about it, when the server said. */
  readonly hint: string | undefined;
  /** Located problems (JSON path, file:line:col), for invalid requests and manifests. */
  readonly problems: readonly ApiProblem[];
  /** How long to wait before retrying, when the server said (details.retryAfterMs, else Retry-After). */
  readonly retryAfterMs: number | undefined;

  constructor(init: AegisApiErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'AegisApiError';
    this.code = init.code;
    this.status = init.status;
    this.details = init.details ?? {};
    const hint = this.details['hint'];
    this.hint = typeof hint === 'string' ? hint : undefined;
    this.problems = problemsOf(this.details['problems']);
    const ms = this.details['retryAfterMs'];
    this.retryAfterMs = typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 ? ms : init.retryAfterMs;
  }

  /** True when the same request may succeed later (rate limited, queue full, server unavailable). */
  get retryable(): boolean {
    return RETRYABLE_CODES.has(this.code);
  }
}

export function isAegisApiError(value: unknown): value is AegisApiError {
  return value instanceof AegisApiError;
}

function problemsOf(value: unknown): ApiProblem[] {
  if (!Array.isArray(value)) return [];
  const out: ApiProblem[] = [];
  for (const item of value) {
    if (typeof item !== 'object' || item === null) continue;
    const p = item as Record<string, unknown>;
    if (typeof p['message'] !== 'string') continue;
    out.push({
      path: typeof p['path'] === 'string' ? p['path'] : '',
      message: p['message'],
      ...(typeof p['file'] === 'string' ? { file: p['file'] } : {}),
      ...(typeof p['line'] === 'number' ? { line: p['line'] } : {}),
      ...(typeof p['column'] === 'number' ? { column: p['column'] } : {}),
      ...(typeof p['hint'] === 'string' ? { hint: p['hint'] } : {}),
    });
  }
  return out;
}

/** The code an error answer without an AEGIS error body stands for (e.g. from a proxy in front of the server). */
export function codeForStatus(status: number): string {
  switch (status) {
    case 400:
      return 'USAGE';
    case 401:
      return 'UNAUTHENTICATED';
    case 403:
      return 'PERMISSION_DENIED';
    case 404:
      return 'NOT_FOUND';
    case 409:
      return 'CONFLICT';
    case 413:
      return 'PAYLOAD_TOO_LARGE';
    case 415:
      return 'UNSUPPORTED_MEDIA_TYPE';
    case 429:
      return 'RATE_LIMITED';
    case 502:
    case 503:
    case 504:
      return 'UNAVAILABLE';
    default:
      return 'INTERNAL';
  }
}
