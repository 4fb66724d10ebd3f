/**
 * Polls `fn` until it returns something other than undefined or false, and returns that; throws naming `what` once
 * `deadlineMs` passed. The one polling loop of the tests (harnesses keep their own default deadlines).
 */
export async function pollUntil<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  deadlineMs = 30_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
