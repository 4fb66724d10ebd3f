/**
 * In-process notifications about executions: "new log lines are stored" and "the status changed". Followers (SSE,
 * gRPC streams, `wait`) re-read the store when woken, so a missed or coalesced notification costs latency, never a
 * line; they also poll on a timer for executions another process runs.
 */
import type { Clock } from './ports.ts';

export type ExecutionEvent = 'logs' | 'status';
type Listener = (event: ExecutionEvent) => void;

export class ExecutionEvents {
  readonly #listeners = new Map<string, Set<Listener>>();
  readonly #clock: Pick<Clock, 'setTimeout'>;

  constructor(clock: Pick<Clock, 'setTimeout'>) {
    this.#clock = clock;
  }

  /** Returns the unsubscribe function. */
  subscribe(executionId: string, listener: Listener): () => void {
    let set = this.#listeners.get(executionId);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(executionId, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.#listeners.delete(executionId);
    };
  }

  emit(executionId: string, event: ExecutionEvent): void {
    const set = this.#listeners.get(executionId);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        listener(event);
      } catch {
        // A listener's failure is its own; others still hear the event.
      }
    }
  }

  /** Resolves at the next event for `executionId`, after `timeoutMs`, or when `signal` aborts — whichever is first. */
  next(executionId: string, timeoutMs: number, signal?: AbortSignal): Promise<ExecutionEvent | 'timeout'> {
    return new Promise((resolve) => {
      let unsubscribe = () => {};
      const done = (value: ExecutionEvent | 'timeout') => {
        timer.cancel();
        unsubscribe();
        signal?.removeEventListener('abort', onAbort);
        resolve(value);
      };
      const onAbort = () => done('timeout');
      const timer = this.#clock.setTimeout(() => done('timeout'), timeoutMs);
      unsubscribe = this.subscribe(executionId, done);
      if (signal?.aborted) done('timeout');
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
