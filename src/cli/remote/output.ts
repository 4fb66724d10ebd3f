/** How the server commands print: JSON on stdout, tables, an execution's one-line outcome, log lines. */
import { Option } from 'commander';
import type { Execution, LogLine } from '../../../sdk/index.ts';
import { isTerminal } from '../../domain/execution.ts';

export const outputOption = () =>
  new Option('-o, --output <format>', 'output format (table is the same as text)')
    .choices(['text', 'table', 'json'])
    .default('text');

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Columns as wide as their widest cell, two spaces apart; the last column is not padded. */
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

export function agentLabel(execution: Execution): string {
  const { name, version, revision } = execution.agent;
  return revision === null ? `${name}@${version}` : `${name}@${revision} (${version})`;
}

export function describeExecution(execution: Execution): string {
  const terminal = isTerminal(execution.status);
  const mark = execution.status === 'succeeded' ? '✓' : terminal ? '✗' : '…';
  const duration = execution.durationMs === null ? '' : ` in ${execution.durationMs} ms`;
  const reason = execution.reason ? ` — ${execution.reason}` : '';
  return `${mark} ${agentLabel(execution)} ${execution.status}${duration}${reason} (${execution.id})`;
}

/** Like `aegis run`: stdout lines to stdout (stderr with JSON output), the rest to stderr, system lines marked. */
export function printLogLine(line: LogLine, json: boolean): void {
  const target = json || line.stream !== 'stdout' ? process.stderr : process.stdout;
  target.write(line.stream === 'system' ? `[aegis] ${line.text}\n` : `${line.text}\n`);
}

/** The end of `exec --wait`, as `aegis run` prints it; 0 when it succeeded, 1 otherwise. */
export function printResult(execution: Execution, json: boolean): number {
  if (json) {
    printJson(execution);
  } else {
    for (const violation of execution.violations) process.stderr.write(`  ! ${violation.message}\n`);
    if (execution.output !== null && execution.output !== undefined) {
      process.stdout.write(`${JSON.stringify(execution.output, null, 2)}\n`);
    }
    process.stderr.write(`${describeExecution(execution)}\n`);
  }
  return execution.status === 'succeeded' ? 0 : 1; // EXIT_OK : EXIT_AGENT_FAILED
}

export function shortDigest(digest: string): string {
  return `sha256:${digest.slice(0, 12)}…`;
}
