/**
 * Child processes for the scenarios: spawn with extra fds, wait, read the first-line timestamp an agent printed.
 * Also the named durations one measured run returns (`Metrics`) and a `Variant` (one thing measured per round).
 */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { wallNowMs } from './clock.ts';

const ROOT = resolve(import.meta.dirname, '../..');
/** The trivial Python and Node agents the start-latency, density, api and peers scenarios measure. */
export const FIXTURES = join(ROOT, 'bench/fixtures/start-latency');

export type Language = 'python' | 'node';

/** Named durations of one run, in ms. */
export type Metrics = Record<string, number>;

export interface Variant {
  readonly id: string;
  run(): Promise<Metrics>;
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes

export interface ChildRun {
  readonly startedAt: number;
  readonly spawnReturnedAt: number;
  readonly exitedAt: number;
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** How to start bwrap: its argv, and the bytes to write into extra child fds (seccomp program, `--args` data). */
export interface Launch {
  readonly argv: readonly string[];
  readonly writes: Readonly<Record<number, Buffer>>;
}

/** stdio for a child: pipes for 0–2, for each fd in `pipes`, and 'ignore' in between. */
export function stdioFor(pipes: readonly number[]): ('pipe' | 'ignore')[] {
  const stdio: ('pipe' | 'ignore')[] = ['pipe', 'pipe', 'pipe'];
  for (let fd = 3; fd <= Math.max(2, ...pipes); fd++) stdio.push(pipes.includes(fd) ? 'pipe' : 'ignore');
  return stdio;
}

export function writeAll(child: ChildProcess, writes: Readonly<Record<number, Buffer>>): void {
  for (const [fd, data] of Object.entries(writes)) {
    const pipe = (child.stdio as unknown as (Readable | Writable | null)[])[Number(fd)] as Writable;
    pipe.on('error', () => {});
    pipe.end(data);
  }
}

/** Spawns, writes `writes` to the child's extra fds, closes stdin, waits for close. */
export function runChild(
  file: string,
  args: readonly string[],
  options: SpawnOptions,
  writes: Readonly<Record<number, Buffer>> = {},
): Promise<ChildRun> {
  return new Promise((resolveRun, reject) => {
    const startedAt = wallNowMs();
    const child = spawn(file, args, { ...options, stdio: stdioFor(Object.keys(writes).map(Number)) });
    const spawnReturnedAt = wallNowMs();
    let exitedAt = Number.NaN;
    let stdout = '';
    let stderr = '';
    child.once('error', reject);
    child.once('exit', () => {
      exitedAt = wallNowMs();
    });
    writeAll(child, writes);
    child.stdin!.on('error', () => {});
    child.stdin!.end();
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('close', (code) => resolveRun({ startedAt, spawnReturnedAt, exitedAt, code, stdout, stderr }));
  });
}

/** The first-line timestamp an agent printed as its (last) stdout line. */
export function firstLineOf(output: unknown, context: string): number {
  const value = (output as { firstLineMs?: unknown } | null)?.firstLineMs;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new Error(`${context}: no firstLineMs in the agent's output (${JSON.stringify(output)})`);
  }
  return value;
}

export function parseLastLine(stdout: string): unknown {
  const lines = stdout.split('\n').filter((line) => line.trim() !== '');
  try {
    return JSON.parse(lines[lines.length - 1] ?? 'null') as unknown;
  } catch {
    return null;
  }
}

export function checkExit(run: ChildRun, what: string): void {
  if (run.code !== 0) {
    throw new Error(`${what} exited with ${run.code}: ${(run.stderr || run.stdout).trim().slice(0, 2000)}`);
  }
}
