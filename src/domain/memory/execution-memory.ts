/**
 * What Cortex keeps of an execution, and how recalled memories reach a declarative agent's prompt — pure text
 * rules; app/memory-indexer.ts and app/memory-access.ts do the storing and searching
 * (docs/adr/0125-cortex-integration.md).
 *
 * Nothing secret enters memory: every text goes through the execution's redactor (its secret values in every
 * encoding the redactor knows) and then loses anything shaped like a secret placeholder (`aegis-secret:NAME:hex`),
 * this execution's or any other's — a placeholder is worthless outside its execution, but it names a secret and
 * has no place in a memory another execution reads.
 */
import { PLACEHOLDER_PATTERN } from '../secrets/placeholder.ts';

/** Characters kept of each part (input, output, reason) of an execution memory. */
export const MAX_PART_CHARS = 2000;
/** Log lines kept for the `logs` summary (the last ones), and characters kept of each. */
export const LOG_SUMMARY_LINES = 20;
export const LOG_LINE_CHARS = 200;
/** Characters of one execution memory (well under Cortex's 16 KiB text limit, whatever the script). */
export const MAX_MEMORY_CHARS = 5000;
/** Characters of one recalled memory shown in a prompt. */
export const RECALL_TEXT_CHARS = 1000;

/** `text` as it may be stored: secrets redacted (`redact` is the execution's redactor), placeholders removed. */
export function memorySafeText(text: string, redact: (text: string) => string): string {
  return redact(text).replace(PLACEHOLDER_PATTERN, (_match, name: string) => `[REDACTED:${name}]`);
}

function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)} […${text.length - max} more]`;
}

/** A value as prompt/memory text: a string as is, anything else as compact JSON. */
export function valueText(value: unknown): string {
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value ?? null) ?? 'null';
  } catch {
    return String(value);
  }
}

/**
 * The last LOG_SUMMARY_LINES lines of an execution (stdout/stderr only: the loop's `system` trajectory lines are
 * its own record), each cut to LOG_LINE_CHARS: bounded however much the agent prints.
 */
export class LogSummary {
  readonly #lines: string[] = [];
  #seen = 0;

  add(stream: string, text: string): void {
    if (stream === 'system') return;
    this.#seen++;
    this.#lines.push(cut(text.replace(/\s+$/, ''), LOG_LINE_CHARS));
    if (this.#lines.length > LOG_SUMMARY_LINES) this.#lines.shift();
  }

  text(): string {
    const skipped = this.#seen - this.#lines.length;
    return `${skipped > 0 ? `[${skipped} earlier lines]\n` : ''}${this.#lines.join('\n')}`;
  }

  get empty(): boolean {
    return this.#lines.length === 0;
  }
}

export interface EndedExecution {
  readonly input: unknown;
  readonly output: unknown;
  readonly status: string;
  readonly reason: string | null;
}

/**
 * The one memory an execution leaves (null when `index` selects nothing that has content): the selected parts,
 * each bounded, plus its outcome — so a recall brings back what was asked, what came of it and whether it worked.
 * Already-redacted inputs are expected; `redact` runs again over the result (placeholders included).
 */
export function executionMemoryText(
  ended: EndedExecution,
  index: readonly ('input' | 'output' | 'logs')[],
  logs: LogSummary,
  redact: (text: string) => string,
): string | null {
  const parts: string[] = [];
  if (index.includes('input') && ended.input !== null && ended.input !== undefined)
    parts.push(`Input: ${cut(valueText(ended.input), MAX_PART_CHARS)}`);
  if (index.includes('output') && ended.output !== null && ended.output !== undefined)
    parts.push(`Output: ${cut(valueText(ended.output), MAX_PART_CHARS)}`);
  if (index.includes('logs') && !logs.empty) parts.push(`Logs (last lines):\n${logs.text()}`);
  if (parts.length === 0) return null;
  const outcome = `Outcome: ${ended.status}${ended.reason ? ` (${cut(ended.reason, 300)})` : ''}`;
  // Redacted before the cut, so a cut never leaves half a secret behind.
  return cut(memorySafeText([...parts, outcome].join('\n'), redact), MAX_MEMORY_CHARS);
}

/** The memory outcome of an execution status: only `succeeded` counts as a success. */
export function memoryOutcome(status: string): 'succeeded' | 'failed' {
  return status === 'succeeded' ? 'succeeded' : 'failed';
}

/** One recalled memory as the prompt shows it. */
export interface PromptMemory {
  readonly id: string;
  readonly text: string;
  readonly score: number;
  readonly outcome: 'succeeded' | 'failed' | null;
  readonly createdAt: string;
}

/** The placeholder a promptTemplate may hold; without it, the memories go into the system message. */
export const MEMORIES_PLACEHOLDER = '{{memories}}';

/** The memories as a prompt section (empty string when there are none). */
export function memoriesSection(memories: readonly PromptMemory[]): string {
  if (memories.length === 0) return '';
  const lines = memories.map(
    (m, i) =>
      `${i + 1}. [${m.id}, score ${m.score.toFixed(2)}, ${m.outcome ?? 'no outcome'}, ${m.createdAt.slice(0, 10)}]\n${cut(m.text, RECALL_TEXT_CHARS)}`,
  );
  return `Relevant memories from this agent's past executions (most relevant first; they may be outdated or wrong):\n${lines.join('\n')}`;
}

/**
 * Where recalled memories go: with `{{memories}}` in the template, `section` is what replaces it (empty when there
 * are none) and the instruction is unchanged; otherwise `section` is null and the memories are appended to the
 * system instruction. The template itself is not touched here: `{{input}}` and `{{memories}}` are substituted in one
 * pass (app/agent-loop.ts `renderPrompt`), so a memory holding the text `{{input}}` stays that text.
 */
export function withMemories(
  instruction: string,
  promptTemplate: string,
  memories: readonly PromptMemory[],
): { instruction: string; section: string | null } {
  const section = memoriesSection(memories);
  if (promptTemplate.includes(MEMORIES_PLACEHOLDER)) return { instruction, section };
  return { instruction: section === '' ? instruction : `${instruction}\n\n${section}`, section: null };
}
