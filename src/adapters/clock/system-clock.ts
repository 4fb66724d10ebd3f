/** The `Clock` port on the real wall clock and Node's timers. */
import type { Clock, Timer, TimerOptions } from '../../app/ports.ts';

function handle(timer: NodeJS.Timeout, options: TimerOptions | undefined): Timer {
  if (options?.background) timer.unref();
  return { cancel: () => clearTimeout(timer) };
}

export const systemClock: Clock = {
  now: () => performance.timeOrigin + performance.now(),
  setTimeout: (fn, ms, options) => handle(setTimeout(fn, ms), options),
  setInterval: (fn, ms, options) => handle(setInterval(fn, ms), options),
};
