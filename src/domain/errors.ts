/**
 * One error family for all of AEGIS. Every failure a user can see is an AegisError with a stable `code`;
 * `ERROR_CODES` maps each code to the CLI exit code (and, later, HTTP status / gRPC code) in one place.
 */

export type ErrorCode =
  | 'MANIFEST_INVALID'
  | 'USAGE'
  | 'NOT_FOUND'
  | 'RUNTIME_UNAVAILABLE'
  | 'LIMIT_UNENFORCEABLE'
  | 'POLICY_DENIED'
  | 'AUDIT_TAMPERED'
  | 'INTERNAL';

export interface ErrorCodeInfo {
  /** Process exit code of the CLI when this error ends a command. */
  readonly exitCode: number;
  /** HTTP status for the API (used from the server issue on). */
  readonly httpStatus: number;
  /** One-line description for docs. */
  readonly summary: string;
}

export const ERROR_CODES: Readonly<Record<ErrorCode, ErrorCodeInfo>> = {
  MANIFEST_INVALID: { exitCode: 2, httpStatus: 400, summary: 'agent.yaml failed validation' },
  USAGE: { exitCode: 2, httpStatus: 400, summary: 'bad command-line usage or request' },
  NOT_FOUND: { exitCode: 2, httpStatus: 404, summary: 'no such execution, agent or file' },
  RUNTIME_UNAVAILABLE: {
    exitCode: 3,
    httpStatus: 503,
    summary: 'this host cannot run the requested isolation',
  },
  LIMIT_UNENFORCEABLE: {
    exitCode: 3,
    httpStatus: 503,
    summary: 'this host cannot enforce a requested limit',
  },
  POLICY_DENIED: { exitCode: 2, httpStatus: 403, summary: 'the request breaks a security rule' },
  AUDIT_TAMPERED: {
    exitCode: 4,
    httpStatus: 409,
    summary: 'the audit ledger (or an export of it) failed verification: entries or heads were altered',
  },
  INTERNAL: { exitCode: 70, httpStatus: 500, summary: 'a bug in AEGIS' },
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
