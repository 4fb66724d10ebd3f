/**
 * Token-bucket rate limiting, pure: the caller passes the time. Each bucket holds up to `burst` tokens and refills
 * at `perSecond`; a request takes one token or is told how long until one is available.
 */
import type { RateLimit } from './api-key.ts';

export type RateDecision =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly retryAfterMs: number };

interface Bucket {
  tokens: number;
  atMs: number;
  limit: RateLimit;
}

export class TokenBuckets {
  readonly #buckets = new Map<string, Bucket>();
  /** Buckets untouched this long are forgotten (they would be full again anyway). */
  readonly #idleMs: number;

  constructor(options: { idleMs?: number } = {}) {
    this.#idleMs = options.idleMs ?? 10 * 60_000;
  }

  take(key: string, limit: RateLimit, nowMs: number): RateDecision {
    let bucket = this.#buckets.get(key);
    if (
      bucket === undefined ||
      bucket.limit.perSecond !== limit.perSecond ||
      bucket.limit.burst !== limit.burst
    ) {
      bucket = { tokens: limit.burst, atMs: nowMs, limit };
      this.#buckets.set(key, bucket);
    }
    const elapsedMs = Math.max(0, nowMs - bucket.atMs);
    bucket.tokens = Math.min(limit.burst, bucket.tokens + (elapsedMs / 1000) * limit.perSecond);
    bucket.atMs = nowMs;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { allowed: true };
    }
    const retryAfterMs = Math.ceil(((1 - bucket.tokens) / limit.perSecond) * 1000);
    return { allowed: false, retryAfterMs };
  }

  /** Drops buckets idle for longer than `idleMs`; call now and then. */
  sweep(nowMs: number): void {
    for (const [key, bucket] of this.#buckets) {
      if (nowMs - bucket.atMs > this.#idleMs) this.#buckets.delete(key);
    }
  }
}
