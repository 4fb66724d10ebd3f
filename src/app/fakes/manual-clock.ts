/**
 * A `Clock` whose time only moves when a test says so: `advance(ms)` fires the timers that fall due, in order, and
 * lets the work they start settle before the next one. Use-case tests that depend on time (warm-pool idle timeouts,
 * queue deadlines, maintenance ticks) are deterministic with it — no sleeps, no wall clock.
 */
import type { Clock, Timer } from '../ports.ts';

interface Pending {
  readonly seq: number;
  at: number;
  readonly every: number | undefined;
  readonly fn: () => void;
  cancelled: boolean;
}

/** Lets promise jobs and callbacks queued by them run: one turn of the event loop, a few times. */
export async function settle(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #pending: Pending[] = [];

  /** @param startMs the initial time, ms since epoch. @default 1_700_000_000_000 (2023-11-14) */
  constructor(startMs = 1_700_000_000_000) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    return this.#add(fn, ms, undefined);
  }

  setInterval(fn: () => void, ms: number): Timer {
    return this.#add(fn, ms, Math.max(1, ms));
  }

  /** Timers not yet fired or cancelled. */
  get pendingTimers(): number {
    return this.#pending.filter((timer) => !timer.cancelled).length;
  }

  /**
   * Moves time forward by `ms`, firing every timer that falls due in time order (an interval as often as it is due),
   * and settling after each so the async work a timer starts runs before the next fires.
   */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    for (;;) {
      const next = this.#pending
        .filter((timer) => !timer.cancelled && timer.at <= target)
        .sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (next === undefined) break;
      this.#now = Math.max(this.#now, next.at);
      if (next.every === undefined) next.cancelled = true;
      else next.at += next.every;
      this.#prune();
      next.fn();
      await settle();
    }
    this.#now = target;
    await settle();
  }

  #add(fn: () => void, ms: number, every: number | undefined): Timer {
    const timer: Pending = { seq: this.#seq++, at: this.#now + Math.max(0, ms), every, fn, cancelled: false };
    this.#pending.push(timer);
    return {
      cancel: () => {
        timer.cancelled = true;
        this.#prune();
      },
    };
  }

  #prune(): void {
    for (let i = this.#pending.length - 1; i >= 0; i--) {
      if (this.#pending[i]!.cancelled) this.#pending.splice(i, 1);
    }
  }
}
