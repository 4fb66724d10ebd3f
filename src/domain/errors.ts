/**
 * One error family for all of AEGIS. Every failure a user can see is an AegisError with a stable `code`;
 * `ERROR_CODES` is the one table that maps each code to the CLI exit code, the HTTP status and the gRPC code.
 */

export type ErrorCode =
  | 'MANIFEST_INVALID'
  | 'USAGE'
  | 'NOT_FOUND'
  | 'RUNTIME_UNAVAILABLE'
  | 'LIMIT_UNENFORCEABLE'
  | 'POLICY_DENIED'
  | 'AUDIT_TAMPERED'
  | 'CONFLICT'
  | 'FENCED'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'UNAUTHENTICATED'
  | 'PERMISSION_DENIED'
  | 'RATE_LIMITED'
  | 'QUEUE_FULL'
  | 'UNAVAILABLE'
  | 'INTERNAL';

/** gRPC status codes (grpc/doc/statuscodes.md) by name; Connect uses the same numbers. */
export const GRPC = {
  invalidArgument: 3,
  notFound: 5,
  alreadyExists: 6,
  permissionDenied: 7,
  resourceExhausted: 8,
  failedPrecondition: 9,
  aborted: 10,
  internal: 13,
  unavailable: 14,
  dataLoss: 15,
  unauthenticated: 16,
} as const;

export interface ErrorCodeInfo {
  /** Process exit code of the CLI when this error ends a command. */
  readonly exitCode: number;
  /** HTTP status of the REST API's error response. */
  readonly httpStatus: number;
  /** gRPC / Connect status code (see `GRPC`). */
  readonly grpcCode: number;
  /** True when the same request may succeed later unchanged (clients retry these, honouring Retry-After). */
  readonly retryable: boolean;
  /** One-line description for docs. */
  readonly summary: string;
}

export const ERROR_CODES: Readonly<Record<ErrorCode, ErrorCodeInfo>> = {
  MANIFEST_INVALID: {
    exitCode: 2,
    httpStatus: 400,
    grpcCode: GRPC.invalidArgument,
    retryable: false,
    summary: 'agent.yaml (or the one in a bundle) failed validation',
  },
  USAGE: {
    exitCode: 2,
    httpStatus: 400,
    grpcCode: GRPC.invalidArgument,
    retryable: false,
    summary: 'bad flag, body, query or bundle (not gzip/tar, `../`, links, …)',
  },
  NOT_FOUND: {
    exitCode: 2,
    httpStatus: 404,
    grpcCode: GRPC.notFound,
    retryable: false,
    summary: 'no such agent, revision, execution, key, secret or file',
  },
  CONFLICT: {
    exitCode: 2,
    httpStatus: 409,
    grpcCode: GRPC.failedPrecondition,
    retryable: false,
    summary:
      'the request contradicts the current state (e.g. cancelling a finished execution, deleting an agent that is running)',
  },
  FENCED: {
    exitCode: 75,
    httpStatus: 409,
    grpcCode: GRPC.aborted,
    retryable: false,
    summary:
      'a cluster node lost its claim on an execution (its lease expired and another node took over): its write was refused',
  },
  PAYLOAD_TOO_LARGE: {
    exitCode: 2,
    httpStatus: 413,
    grpcCode: GRPC.resourceExhausted,
    retryable: false,
    summary: 'a JSON body over 1 MiB, or a bundle or a file in it over its cap',
  },
  UNSUPPORTED_MEDIA_TYPE: {
    exitCode: 2,
    httpStatus: 415,
    grpcCode: GRPC.invalidArgument,
    retryable: false,
    summary:
      'a request body of a Content-Type the route does not take (JSON routes take application/json, deploys application/gzip)',
  },
  RUNTIME_UNAVAILABLE: {
    exitCode: 3,
    httpStatus: 503,
    grpcCode: GRPC.failedPrecondition,
    retryable: false,
    summary: 'this host cannot run the requested isolation (`aegis doctor` says why)',
  },
  LIMIT_UNENFORCEABLE: {
    exitCode: 3,
    httpStatus: 503,
    grpcCode: GRPC.failedPrecondition,
    retryable: false,
    summary: 'this host cannot enforce a requested limit — AEGIS refuses rather than run weaker',
  },
  POLICY_DENIED: {
    exitCode: 2,
    httpStatus: 403,
    grpcCode: GRPC.permissionDenied,
    retryable: false,
    summary:
      'a security rule refuses it (a protected host path, secrets or outside host paths in a non-admin deploy)',
  },
  AUDIT_TAMPERED: {
    exitCode: 4,
    httpStatus: 409,
    grpcCode: GRPC.dataLoss,
    retryable: false,
    summary: 'the audit ledger (or an export of it) failed verification: entries or heads were altered',
  },
  UNAUTHENTICATED: {
    exitCode: 77,
    httpStatus: 401,
    grpcCode: GRPC.unauthenticated,
    retryable: false,
    summary: 'no API key, or one that is unknown or revoked',
  },
  PERMISSION_DENIED: {
    exitCode: 77,
    httpStatus: 403,
    grpcCode: GRPC.permissionDenied,
    retryable: false,
    summary: "the API key's scopes do not allow this operation",
  },
  RATE_LIMITED: {
    exitCode: 75,
    httpStatus: 429,
    grpcCode: GRPC.resourceExhausted,
    retryable: true,
    summary: 'this API key is over its request rate; retry after the time given',
  },
  QUEUE_FULL: {
    exitCode: 75,
    httpStatus: 429,
    grpcCode: GRPC.resourceExhausted,
    retryable: true,
    summary: 'the execution queue is full; nothing was created — retry later',
  },
  UNAVAILABLE: {
    exitCode: 75,
    httpStatus: 503,
    grpcCode: GRPC.unavailable,
    retryable: true,
    summary: 'the server is starting, shutting down or unreachable',
  },
  INTERNAL: {
    exitCode: 70,
    httpStatus: 500,
    grpcCode: GRPC.internal,
    retryable: false,
    summary: 'a bug in AEGIS',
  },
};

/** A problem located in a user's input: a manifest file position and/or a JSON path. */
export interface Problem {
  readonly message: string;
  /** JSON path like `spec.resources.memory` (empty for document-level problems). */
  readonly path: string;
  readonly file?: string;
  readonly line?: number;
  readonly column?: number;
  /** What to do instead, when we can say. */
  readonly hint?: string;
}

export interface AegisErrorOptions {
  readonly cause?: unknown;
  readonly problems?: readonly Problem[];
  readonly details?: Readonly<Record<string, unknown>>;
  /** What the user can do about it. */
  readonly hint?: string;
}

export class AegisError extends Error {
  readonly code: ErrorCode;
  readonly problems: readonly Problem[];
  readonly details: Readonly<Record<string, unknown>>;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: AegisErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AegisError';
    this.code = code;
    this.problems = options.problems ?? [];
    this.details = options.details ?? {};
    this.hint = options.hint;
  }

  get exitCode(): number {
    return ERROR_CODES[this.code].exitCode;
  }
}

export function isAegisError(value: unknown): value is AegisError {
  return value instanceof AegisError;
}

/** `file:line:col` (or just the JSON path) for one problem — the prefix every located message starts with. */
export function formatProblemLocation(problem: Problem): string {
  const at =
    problem.file !== undefined
      ? `${problem.file}${problem.line !== undefined ? `:${problem.line}:${problem.column ?? 1}` : ''}`
      : '';
  const path = problem.path === '' ? '' : problem.path;
  if (at && path) return `${at} (${path})`;
  return at || path || '<document>';
}

export function formatProblem(problem: Problem): string {
  const hint = problem.hint ? `\n    hint: ${problem.hint}` : '';
  return `${formatProblemLocation(problem)}: ${problem.message}${hint}`;
}

/** Human rendering of any error for the CLI: message, located problems, hint. */
export function formatError(error: unknown): string {
  if (!isAegisError(error)) {
    const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
    return `internal error: ${message}`;
  }
  const lines = [`error[${error.code}]: ${error.message}`];
  for (const problem of error.problems) lines.push(`  ${formatProblem(problem)}`);
  if (error.hint) lines.push(`  hint: ${error.hint}`);
  return lines.join('\n');
}
