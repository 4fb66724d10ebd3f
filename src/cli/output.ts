/**
 * How every `aegis` command prints, local or against a server — one place for: exit codes (derived from
 * ERROR_CODES), `-o json` (the REST shapes of /openapi.json; an error is the REST error body on stdout), the table
 * printer, an execution's one-line outcome, log lines, `-q`/`-v`, and colour (only on a TTY, never with NO_COLOR).
 */
import { Option } from 'commander';
import { errorBody } from '../api/errors.ts';
import type { ErrorBody, Execution, LogLine } from '../api/http/schemas.ts';
import { AegisError, ERROR_CODES, type ErrorCodeInfo, formatError, isAegisError } from '../domain/errors.ts';
import { isTerminal } from '../domain/execution.ts';

/** Process exit codes. Error exits come from ERROR_CODES (README: exit codes); these are the rest. */
export const EXIT = {
  ok: 0,
  /** The agent ran and did not succeed (failed, timeout, oom, killed). */
  agentFailed: 1,
  usage: ERROR_CODES.USAGE.exitCode,
  hostUnable: ERROR_CODES.RUNTIME_UNAVAILABLE.exitCode,
  auditTampered: ERROR_CODES.AUDIT_TAMPERED.exitCode,
  /** sysexits EX_TEMPFAIL: try again later (also RATE_LIMITED, QUEUE_FULL, UNAVAILABLE; `exec --wait` ran out). */
  tempFail: ERROR_CODES.UNAVAILABLE.exitCode,
  internal: ERROR_CODES.INTERNAL.exitCode,
  /** 128 + SIGINT. */
  interrupted: 130,
} as const;

/** The exit code of an error code (a code this CLI does not know — from a newer server — is internal). */
export function exitCodeOf(code: string): number {
  const info = (ERROR_CODES as Readonly<Record<string, ErrorCodeInfo | undefined>>)[code];
  return info?.exitCode ?? EXIT.internal;
}

export type OutputFormat = 'text' | 'table' | 'json';

export const outputOption = () =>
  new Option('-o, --output <format>', 'output format: text (table is the same) or json (the REST shapes)')
    .choices(['text', 'table', 'json'])
    .default('text');

interface Settings {
  quiet: boolean;
  verbose: boolean;
  color: boolean;
  json: boolean;
}

const settings: Settings = { quiet: false, verbose: false, color: true, json: false };

/** `-o json` anywhere on the command line (known before commander parses, so even usage errors print as JSON). */
export function wantsJson(argv: readonly string[]): boolean {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return false;
    if ((arg === '-o' || arg === '--output') && argv[i + 1] === 'json') return true;
    if (arg === '-ojson' || arg === '--output=json' || arg === '-o=json') return true;
  }
  return false;
}

export function configureOutput(next: Partial<Settings>): void {
  Object.assign(settings, next);
}

export function isQuiet(): boolean {
  return settings.quiet;
}

/** NO_COLOR (no-color.org): present and not empty disables colour. */
export function colorAllowed(stream: NodeJS.WriteStream): boolean {
  const noColor = process.env['NO_COLOR'];
  return settings.color && stream.isTTY === true && (noColor === undefined || noColor === '');
}

const paint = (open: number, close: number) => (text: string, stream: NodeJS.WriteStream) =>
  colorAllowed(stream) ? `\x1b[${open}m${text}\x1b[${close}m` : text;
export const green = paint(32, 39);
export const red = paint(31, 39);
export const yellow = paint(33, 39);
export const dim = paint(2, 22);

/** Progress and notes for people: stderr, dropped with -q. */
export function note(text: string): void {
  if (!settings.quiet) process.stderr.write(`${text}\n`);
}

/** Details only -v asks for: stderr. */
export function debug(text: string): void {
  if (settings.verbose) process.stderr.write(`${dim(text, process.stderr)}\n`);
}

export function warn(text: string): void {
  process.stderr.write(`${yellow('warning:', process.stderr)} ${text}\n`);
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** The one table printer: columns as wide as their widest cell, two spaces apart; the last column not padded. */
export function printTable(header: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = header.map((title, i) =>
    Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  process.stdout.write(`${[line(header), ...rows.map(line)].join('\n')}\n`);
}

/** The `LLM` column of `aegis ps`: `3 calls 1.2k/345 tok $0.0043`, or `-` (no `spec.llm`, or not ended). */
export function llmUsageCell(usage: Execution['usage']): string {
  const llm = usage.llm;
  if (llm === null) return '-';
  const tokens = (n: number) =>
    n >= 10_000 ? `${(n / 1000).toFixed(0)}k` : n >= 1000 ? `${(n / 1000).toFixed(1)}k` : `${n}`;
  const usd = llm.usd > 0 ? ` $${llm.usd < 0.01 ? llm.usd.toPrecision(2) : llm.usd.toFixed(2)}` : '';
  return `${llm.calls} call${llm.calls === 1 ? '' : 's'} ${tokens(llm.inputTokens)}/${tokens(llm.outputTokens)} tok${usd}`;
}

export function agentLabel(execution: Execution): string {
  const { name, version, revision } = execution.agent;
  return revision === null ? `${name}@${version}` : `${name}@${revision} (${version})`;
}

export function describeExecution(execution: Execution): string {
  const terminal = isTerminal(execution.status);
  const err = process.stderr;
  const mark = execution.status === 'succeeded' ? green('✓', err) : terminal ? red('✗', err) : '…';
  const duration = execution.durationMs === null ? '' : ` in ${execution.durationMs} ms`;
  const reason = execution.reason ? ` — ${execution.reason}` : '';
  return `${mark} ${agentLabel(execution)} ${execution.status}${duration}${reason} ${dim(`(${execution.id})`, err)}`;
}

/** Like `aegis run`: stdout lines to stdout (stderr with JSON output), the rest to stderr, system lines marked. */
export function printLogLine(line: Pick<LogLine, 'stream' | 'text'>, json: boolean): void {
  const target = json || line.stream !== 'stdout' ? process.stderr : process.stdout;
  target.write(line.stream === 'system' ? `${dim('[aegis]', target)} ${line.text}\n` : `${line.text}\n`);
}

/** The end of `run` and `exec --wait`: the Execution (JSON), or output + outcome; 0 when it succeeded, else 1. */
export function printResult(execution: Execution, json: boolean): number {
  if (json) {
    printJson(execution);
  } else {
    for (const violation of execution.violations) process.stderr.write(`  ! ${violation.message}\n`);
    if (execution.output !== null && execution.output !== undefined) {
      process.stdout.write(`${JSON.stringify(execution.output, null, 2)}\n`);
    }
    if (!settings.quiet || execution.status !== 'succeeded')
      process.stderr.write(`${describeExecution(execution)}\n`);
  }
  return execution.status === 'succeeded' ? EXIT.ok : EXIT.agentFailed;
}

export function shortDigest(digest: string): string {
  return `sha256:${digest.slice(0, 12)}…`;
}

/** An error as the REST API would answer it: `{"error": {code, message, details}}`. */
export function errorBodyOf(error: unknown): ErrorBody {
  if (isAegisError(error)) return errorBody(error);
  const remote = error as { name?: string; code?: unknown; message?: unknown; details?: unknown };
  if (remote?.name === 'AegisApiError' && typeof remote.code === 'string') {
    return {
      error: {
        code: remote.code,
        message: String(remote.message),
        details: { ...(remote.details as Record<string, unknown>) },
      },
    };
  }
  const message = error instanceof Error ? error.message : String(error);
  return errorBody(new AegisError('INTERNAL', `internal error: ${message}`));
}

/**
 * Reports an error that ends a command and returns its exit code: with `-o json` the REST error body on stdout
 * (its only output); always, `error[CODE]: message`, located problems and a hint on stderr.
 */
export function reportError(error: unknown, text: string = formatError(error)): number {
  const body = errorBodyOf(error);
  if (settings.json) printJson(body);
  process.stderr.write(`${text.replace(/^error\[/, `${red('error', process.stderr)}[`)}\n`);
  return exitCodeOf(body.error.code);
}
