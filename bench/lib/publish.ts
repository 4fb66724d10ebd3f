/** Writing results: raw JSON under bench/results/, generated sections of docs/PERFORMANCE.md. */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** Writes via a temp file and a rename, so an interrupted run never leaves half a file. */
export function writeFileAtomic(file: string, content: string): void {
  mkdirSync(dirname(file), { recursive: true });
  const temp = `${file}.${process.pid}.tmp`;
  writeFileSync(temp, content);
  renameSync(temp, file);
}

/**
 * Merges `scenarios` into the result file: a later run of one scenario on the same day and host replaces that
 * scenario's entry and keeps the others.
 */
export function writeResults(
  file: string,
  header: Record<string, unknown>,
  scenarios: Record<string, unknown>,
): void {
  let previous: { scenarios?: Record<string, unknown> } = {};
  if (existsSync(file)) {
    try {
      previous = JSON.parse(readFileSync(file, 'utf8')) as typeof previous;
    } catch {
      previous = {};
    }
  }
  const merged = { ...header, scenarios: { ...(previous.scenarios ?? {}), ...scenarios } };
  writeFileAtomic(file, `${JSON.stringify(merged, null, 1)}\n`);
}

export function markers(name: string): { begin: string; end: string } {
  return { begin: `<!-- bench:${name}:begin -->`, end: `<!-- bench:${name}:end -->` };
}

/**
 * Replaces the text between a section's markers. Returns false (and changes nothing) when the markers are not in
 * the document, so hand-written prose is never overwritten by accident.
 */
export function replaceSection(document: string, name: string, content: string): string | undefined {
  const { begin, end } = markers(name);
  const start = document.indexOf(begin);
  const stop = document.indexOf(end);
  if (start === -1 || stop === -1 || stop < start) return undefined;
  return `${document.slice(0, start + begin.length)}\n${content.trim()}\n${document.slice(stop)}`;
}
