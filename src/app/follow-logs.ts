/**
 * Use-case: an execution's log lines from a sequence number on, and — when following — every later line until the
 * execution ends. SSE and gRPC `StreamLogs` are thin wrappers over this; resuming after a dropped connection is
 * `afterSeq` = the last seq received (SSE's Last-Event-ID).
 */
import { AegisError } from '../domain/errors.ts';
import { type ExecutionRecord, isTerminal, type LogLine } from '../domain/execution.ts';
import type { ExecutionEvents } from './execution-events.ts';
import type { Clock, ExecutionStore } from './ports.ts';

export type LogStreamItem =
  | { readonly type: 'line'; readonly line: LogLine }
  | { readonly type: 'end'; readonly execution: ExecutionRecord };

export interface FollowLogsOptions {
  readonly afterSeq?: number;
  /** Keep streaming until the execution ends (else stop after the lines stored now). */
  readonly follow: boolean;
  readonly signal?: AbortSignal;
  /** Re-read the store at least this often while following (executions run by another process). @default 500 */
  readonly pollMs?: number;
}

const PAGE = 500;

export async function* followLogs(
  deps: {
    readonly store: ExecutionStore;
    readonly events: ExecutionEvents;
    readonly clock: Pick<Clock, 'setTimeout'>;
  },
  executionId: string,
  options: FollowLogsOptions,
): AsyncGenerator<LogStreamItem> {
  const { store, events, clock } = deps;
  let afterSeq = options.afterSeq ?? 0;
  const first = await store.getExecution(executionId);
  if (first === undefined) {
    throw new AegisError('NOT_FOUND', `no execution ${executionId}`, {
      hint: 'list executions with `aegis ps` or GET /v1/executions',
    });
  }
  // Subscribed before the first read, so a batch stored between a read and the wait still wakes us.
  let woken = false;
  let wake: (() => void) | undefined;
  const unsubscribe = events.subscribe(executionId, () => {
    woken = true;
    wake?.();
  });
  try {
    for (;;) {
      woken = false;
      // Status first, then lines: a line stored before the execution turned terminal is always read after it.
      const record = await store.getExecution(executionId);
      for (;;) {
        const lines = await store.readLogs(executionId, { afterSeq, limit: PAGE });
        for (const line of lines) {
          afterSeq = line.seq;
          yield { type: 'line', line };
        }
        if (lines.length < PAGE) break;
      }
      if (record === undefined) return;
      if (!options.follow || isTerminal(record.status)) {
        yield { type: 'end', execution: record };
        return;
      }
      if (options.signal?.aborted) return;
      if (!woken) {
        await new Promise<void>((resolve) => {
          const timer = clock.setTimeout(done, options.pollMs ?? 500);
          function done() {
            timer.cancel();
            options.signal?.removeEventListener('abort', done);
            wake = undefined;
            resolve();
          }
          wake = done;
          options.signal?.addEventListener('abort', done, { once: true });
        });
      }
      if (options.signal?.aborted) return;
    }
  } finally {
    unsubscribe();
  }
}
