/**
 * Fine-grained timestamps from the benchmark side, without touching the code under test: methods of live adapter
 * instances are wrapped (`wrapMethod`), and child processes are observed through Node's `child_process`
 * diagnostics channel (`watchChildren`). A trace is active only between `begin()` and `end()`, so wrapped objects
 * cost a few property reads when no sample is being traced.
 */
import type { ChildProcess } from 'node:child_process';
import diagnostics from 'node:diagnostics_channel';
import { readFileSync, readlinkSync, statSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { wallNowMs } from './clock.ts';

export type Marks = Record<string, number>;

export class Tracer {
  private marks: Marks | undefined;
  private readonly calls = new Map<string, number>();

  get active(): boolean {
    return this.marks !== undefined;
  }

  begin(): void {
    this.marks = {};
    this.calls.clear();
  }

  end(): Marks {
    const marks = this.marks ?? {};
    this.marks = undefined;
    return marks;
  }

  /** Records `name` once per trace (the first occurrence wins); `at` defaults to now. */
  mark(name: string, at: number = wallNowMs()): void {
    if (this.marks && !(name in this.marks)) this.marks[name] = at;
  }

  /** `label#1`, `label#2`, … — which call of a wrapped method this is within the current trace. */
  private nextCall(label: string): string {
    const n = (this.calls.get(label) ?? 0) + 1;
    this.calls.set(label, n);
    return `${label}#${n}`;
  }

  /**
   * Replaces `target[key]` (a method, sync or async) on that one object with a wrapper that marks
   * `<label>#<n>:start` before and `<label>#<n>:end` after each call, and hands the result to `after`.
   */
  wrapMethod<T extends object>(
    target: T,
    key: keyof T & string,
    label: string,
    after?: (result: unknown) => void,
  ) {
    const slot = target as unknown as Record<string, (...args: unknown[]) => unknown>;
    const original = slot[key];
    if (typeof original !== 'function') throw new Error(`${label}: ${key} is not a method`);
    const tracer = this;
    slot[key] = function (this: unknown, ...args: unknown[]) {
      if (!tracer.active) return original.apply(this, args);
      const call = tracer.nextCall(label);
      tracer.mark(`${call}:start`);
      const result = original.apply(this, args);
      if (result instanceof Promise) {
        return result.then((value: unknown) => {
          tracer.mark(`${call}:end`);
          after?.(value);
          return value;
        });
      }
      tracer.mark(`${call}:end`);
      after?.(result);
      return result;
    };
  }

  /**
   * While a trace is active, marks around every child process whose file is `file`: `spawn()#n:start` (just before
   * the synchronous fork/exec), `spawn()#n:end` (it returned), `fd<k>-data#n` (first bytes on the parent's end
   * of child fd k, for each k in `watchFds`) and `exit#n`. Returns an unsubscribe function.
   */
  watchChildren(file: string, watchFds: readonly number[] = []): () => void {
    const onChild = (message: unknown) => {
      if (!this.active) return;
      const child = (message as { process: ChildProcess }).process;
      // Published from the ChildProcess constructor; the fork/exec happens in its spawn() method, called next.
      const internal = child as unknown as { spawn: (options: unknown) => unknown };
      const original = internal.spawn;
      const tracer = this;
      internal.spawn = function (this: ChildProcess, options: unknown) {
        const startedAt = wallNowMs();
        const result = original.call(this, options);
        const endedAt = wallNowMs();
        if (this.spawnfile === file && tracer.active) {
          const call = tracer.nextCall('spawn()');
          tracer.mark(`${call}:start`, startedAt);
          tracer.mark(`${call}:end`, endedAt);
          const n = call.slice(call.indexOf('#') + 1);
          for (const fd of watchFds) {
            const stream = this.stdio[fd] as Readable | null | undefined;
            // The code under test attaches its own 'data' listener in the same tick, so nothing is lost.
            stream?.once('data', () => tracer.mark(`fd${fd}-data#${n}`));
          }
          this.once('exit', () => tracer.mark(`exit#${n}`));
        }
        return result;
      };
    };
    diagnostics.subscribe('child_process', onChild);
    return () => diagnostics.unsubscribe('child_process', onChild);
  }
}

export interface CapturedSpawn {
  /** argv as spawned, argv[0] included. */
  readonly argv: string[];
  /** Bytes the parent wrote to each extra pipe (fd ≥ 3) of the child: the seccomp program, `--args` data. */
  readonly pipes: Record<number, Buffer>;
}

/** Runs `fn` and returns what the first child process started with file `file` meanwhile was given. */
export async function captureSpawn<T>(
  file: string,
  fn: () => Promise<T>,
): Promise<{ result: T; captured: CapturedSpawn | undefined }> {
  let captured: { argv: string[]; pipes: Record<number, Buffer> } | undefined;
  const onChild = (message: unknown) => {
    const child = (message as { process: ChildProcess }).process;
    const internal = child as unknown as { spawn: (options: unknown) => unknown };
    const original = internal.spawn;
    internal.spawn = function (this: ChildProcess, options: unknown) {
      // Extra fds handed over as open files (the runtime's seccomp program) are read before the caller closes them.
      const given: Record<number, Buffer> = {};
      const { file: spawned, stdio } = options as { file?: string; stdio?: unknown[] };
      if (spawned === file && captured === undefined) {
        (stdio ?? []).forEach((entry, fd) => {
          // Only regular files and pipes: directories (--bind-fd sources) are recorded by their path instead.
          if (fd >= 3 && typeof entry === 'number') {
            const source = `/proc/self/fd/${entry}`;
            given[fd] = statSync(source).isDirectory()
              ? Buffer.from(`dir:${readlinkSync(source)}`)
              : readFileSync(source);
          }
        });
      }
      const result = original.call(this, options);
      if (this.spawnfile !== file || captured !== undefined) return result;
      const pipes: Record<number, Buffer> = { ...given };
      captured = { argv: [...this.spawnargs], pipes };
      this.stdio.forEach((stream, fd) => {
        if (fd < 3 || !stream || typeof (stream as Writable).write !== 'function') return;
        const writable = stream as Writable;
        const record = (chunk: unknown) => {
          if (typeof chunk === 'string' || chunk instanceof Uint8Array) {
            pipes[fd] = Buffer.concat([pipes[fd] ?? Buffer.alloc(0), Buffer.from(chunk as Uint8Array)]);
          }
        };
        const write = writable.write.bind(writable) as (...args: unknown[]) => boolean;
        const end = writable.end.bind(writable) as (...args: unknown[]) => Writable;
        writable.write = ((...args: unknown[]) => {
          record(args[0]);
          return write(...args);
        }) as Writable['write'];
        writable.end = ((...args: unknown[]) => {
          if (typeof args[0] !== 'function') record(args[0]);
          return end(...args);
        }) as Writable['end'];
      });
      return result;
    };
  };
  diagnostics.subscribe('child_process', onChild);
  try {
    return { result: await fn(), captured };
  } finally {
    diagnostics.unsubscribe('child_process', onChild);
  }
}

/**
 * Calls `onSpawn` with every child process started with file `file` from now on, once it has a pid (e.g. to find
 * a runtime's bwrap processes without reaching into it). Returns an unsubscribe function.
 */
export function watchSpawns(file: string, onSpawn: (child: ChildProcess) => void): () => void {
  const onChild = (message: unknown) => {
    const child = (message as { process: ChildProcess }).process;
    const internal = child as unknown as { spawn: (options: unknown) => unknown };
    const original = internal.spawn;
    internal.spawn = function (this: ChildProcess, options: unknown) {
      const result = original.call(this, options);
      if (this.spawnfile === file && this.pid !== undefined) onSpawn(this);
      return result;
    };
  };
  diagnostics.subscribe('child_process', onChild);
  return () => diagnostics.unsubscribe('child_process', onChild);
}
