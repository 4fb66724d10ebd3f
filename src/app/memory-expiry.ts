/**
 * Deletes expired memories (spec.memory.ttl) on the server: once at start, then every `intervalMs`. Expired memories
 * are never recalled or listed meanwhile (the stores filter by time); the sweep frees their rows. Each sweep that
 * deletes something is one `memory.forget` ledger entry with the count (Cortex.forgetExpired), never the ids' texts.
 */
import type { Cortex } from './cortex.ts';
import type { Clock } from './ports.ts';

export interface MemoryExpiry {
  /** One sweep now (a sweep already running is joined, not doubled); resolves with the count deleted. */
  sweep(): Promise<number>;
  /** Stops the timer and waits for a sweep in flight. */
  stop(): Promise<void>;
}

export function startMemoryExpiry(
  cortex: Pick<Cortex, 'forgetExpired'>,
  clock: Pick<Clock, 'setInterval'>,
  options: { readonly intervalMs: number; readonly onError: (error: unknown) => void },
): MemoryExpiry {
  let running: Promise<number> | undefined;
  const sweep = () => {
    running ??= cortex.forgetExpired().finally(() => {
      running = undefined;
    });
    return running;
  };
  const tick = () => {
    sweep().catch(options.onError);
  };
  tick();
  const timer = clock.setInterval(tick, options.intervalMs, { background: true });
  return {
    sweep,
    async stop() {
      timer.cancel();
      await running?.catch(() => 0);
    },
  };
}
