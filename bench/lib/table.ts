/** Tables for the terminal (aligned plain text) and for docs (GitHub markdown). */

export type Align = 'left' | 'right';

export interface Table {
  readonly headers: readonly string[];
  readonly rows: readonly (readonly string[])[];
  /** Per column; default: first column left, the rest right. */
  readonly align?: readonly Align[];
}

function alignOf(table: Table, column: number): Align {
  return table.align?.[column] ?? (column === 0 ? 'left' : 'right');
}

export function renderText(table: Table): string {
  const widths = table.headers.map((header, column) =>
    Math.max(header.length, ...table.rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, column) =>
        alignOf(table, column) === 'left' ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!),
      )
      .join('  ')
      .trimEnd();
  return [line(table.headers), widths.map((w) => '-'.repeat(w)).join('  '), ...table.rows.map(line)].join(
    '\n',
  );
}

export function renderMarkdown(table: Table): string {
  const escapeCell = (cell: string) => cell.replaceAll('|', '\\|');
  const rule = table.headers.map((_, column) => (alignOf(table, column) === 'left' ? ':---' : '---:'));
  return [table.headers, rule, ...table.rows]
    .map((row) => `| ${row.map(escapeCell).join(' | ')} |`)
    .join('\n');
}
