/**
 * Process supervision and log lines: waiting on the runtime's child (its exit, its readiness messages), splitting
 * its stdout/stderr into bounded log lines, capping the total logged, and reading the agent's output.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import type { Readable } from 'node:stream';
import type { TaskInput } from '../../../app/ports.ts';
import { formatBytes } from '../../../domain/units.ts';

export const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
export const MAX_LINE_BYTES = 64 * 1024;
export const MAX_LOG_BYTES = 32 * 1024 * 1024;

/** The process has exited (its 'exit' event may still be queued). */
export function exitedAlready(proc: ChildProcess): boolean {
  return proc.exitCode !== null || proc.signalCode !== null;
}

/** Resolves when the prewarm shim reports it is ready (one `r` on the go socket). */
export function readReady(stream: Readable): Promise<void> {
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      if (!chunk.includes(0x72)) return;
      stream.off('data', onData);
      stream.off('error', reject);
      resolve();
    };
    stream.on('data', onData);
    stream.once('error', reject);
  });
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** bwrap writes `{"child-pid": N, …}` to --info-fd once the sandbox init exists. */
export function readInfoPid(stream: Readable): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const match = /"child-pid"\s*:\s*(\d+)/.exec(text);
      if (match) {
        stream.off('data', onData);
        stream.resume();
        resolve(Number(match[1]));
      }
    };
    stream.on('data', onData);
    stream.once('error', reject);
  });
}

/** Feeds bytes, calls `onLine` per complete line (long lines split at MAX_LINE_BYTES); `end` flushes the rest. */
export function lineSplitter(onLine: (text: string) => void): { push(data: Buffer): void; end(): void } {
  const decoder = new TextDecoder();
  let pending = '';
  return {
    push(data) {
      pending += decoder.decode(data, { stream: true });
      let index = pending.indexOf('\n');
      while (index !== -1) {
        onLine(pending.slice(0, index).replace(/\r$/, ''));
        pending = pending.slice(index + 1);
        index = pending.indexOf('\n');
      }
      while (pending.length > MAX_LINE_BYTES) {
        onLine(pending.slice(0, MAX_LINE_BYTES));
        pending = pending.slice(MAX_LINE_BYTES);
      }
    },
    end() {
      pending += decoder.decode();
      if (pending !== '') onLine(pending);
      pending = '';
    },
  };
}

/** Calls `onLine` for each complete line of `stream` (long lines are split at MAX_LINE_BYTES). */
export function splitLines(stream: Readable, onLine: (text: string) => void): Promise<void> {
  return new Promise((resolve) => {
    const lines = lineSplitter(onLine);
    queueMicrotask(() => stream.resume());
    stream.on('data', (chunk: Buffer) => lines.push(chunk));
    stream.on('end', () => {
      lines.end();
      resolve();
    });
    stream.on('error', () => resolve());
  });
}

/**
 * The log sink of one execution: remembers the last non-empty stdout line (the output fallback) and stops passing
 * lines on after MAX_LOG_BYTES, saying so once. `observe` sees every line, dropped or not.
 */
export function createLogSink(
  onLog: TaskInput['onLog'],
  observe?: (stream: 'stdout' | 'stderr', text: string) => void,
): { log: (stream: 'stdout' | 'stderr', text: string) => void; lastStdoutLine: () => string | undefined } {
  let lastStdoutLine: string | undefined;
  let loggedBytes = 0;
  let truncated = false;
  const log = (stream: 'stdout' | 'stderr', text: string) => {
    if (stream === 'stdout' && text.trim() !== '') lastStdoutLine = text;
    observe?.(stream, text);
    loggedBytes += text.length;
    if (loggedBytes > MAX_LOG_BYTES) {
      if (!truncated)
        onLog('stderr', `[aegis] log output exceeded ${formatBytes(MAX_LOG_BYTES)}; further lines dropped`);
      truncated = true;
      return;
    }
    onLog(stream, text);
  };
  return { log, lastStdoutLine: () => lastStdoutLine };
}

/** The agent's output: output.json when it holds JSON (capped at MAX_OUTPUT_BYTES), else the last stdout line if it is JSON, else null. */
export function collectOutput(
  outputFile: string,
  lastStdoutLine: string | undefined,
  onLog: TaskInput['onLog'],
): unknown {
  try {
    const size = statSync(outputFile).size;
    if (size > MAX_OUTPUT_BYTES) {
      onLog(
        'system',
        `output.json is ${formatBytes(size)}; outputs are capped at ${formatBytes(MAX_OUTPUT_BYTES)} — ignored`,
      );
      return null;
    }
    if (size > 0) {
      const text = readFileSync(outputFile, 'utf8');
      try {
        return JSON.parse(text) as unknown;
      } catch (error) {
        onLog('system', `/run/aegis/output.json is not valid JSON (${(error as Error).message}); ignored`);
        return null;
      }
    }
  } catch {
    // no output file: fall back to stdout
  }
  if (lastStdoutLine !== undefined) {
    try {
      return JSON.parse(lastStdoutLine) as unknown;
    } catch {
      return null;
    }
  }
  return null;
}
