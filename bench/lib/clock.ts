/**
 * The one clock every timestamp in the benchmark is taken with: wall-clock milliseconds since the epoch, with
 * sub-millisecond resolution. Agents inside sandboxes stamp their first line with the same kernel clock
 * (CLOCK_REALTIME: Python's time.time_ns(), Node's performance.timeOrigin + performance.now()), so harness and
 * agent timestamps can be subtracted directly.
 */

export function wallNowMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Offset between the system's realtime clock (Date.now(), which NTP may slew) and `wallNowMs()` (the process's
 * time origin plus a monotonic clock), estimated over `sampleMs` of busy sampling. Date.now() truncates to whole
 * milliseconds, so the maximum of (Date.now() - wallNowMs()) approaches the true offset from below. Measured at the
 * start and end of a run, the difference is the drift of the harness clock against the clock agents stamp with.
 */
export function realtimeOffsetMs(sampleMs = 20): number {
  const until = performance.now() + sampleMs;
  let best = Number.NEGATIVE_INFINITY;
  while (performance.now() < until) {
    const offset = Date.now() - wallNowMs();
    if (offset > best) best = offset;
  }
  return best;
}
