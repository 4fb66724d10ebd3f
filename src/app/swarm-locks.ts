/**
 * Swarm locks (issue 16, docs/adr/0144-swarm-bus-and-locks.md): `lock(name, {ttl, wait})` → a lease with a fencing
 * token.
 *
 *  - Mutual exclusion lives in the `LockStore` (one row per lock, taken under a row lock on PostgreSQL), so two
 *    nodes never both hold a lock. The token is the row's counter: it only grows, so a resource that remembers the
 *    highest token it saw (or asks `checkFence`) rejects a holder whose lease was lost.
 *  - Waiters queue FIFO in the store; a waiter refreshes its place while it waits, so a crashed waiter stops
 *    blocking the queue after `WAITER_TTL_MS`. Waits time out (CONFLICT): two agents waiting on each other's lock
 *    both give up — no deadlock outlives the shorter wait.
 *  - A lease ends on `release`, when its ttl passes (the next acquirer takes it over: `expired` entry), when its
 *    holder execution ends (`executionEnded`, called by runAgent) and when the holder's node dies (the cluster
 *    sweeper settles its executions, which ends them).
 *  - Locks are the swarm's (scope `swarm:<root id>`); `global: true` asks for the scope shared by every swarm,
 *    granted only by `spec.swarm.locks.global`. Every acquire, release, expiry and refusal is a `swarm.lock` entry.
 */
import { AUDIT_KINDS } from '../domain/audit/entry.ts';
import { AegisError } from '../domain/errors.ts';
import type { AuditLog, Clock } from './ports.ts';
import {
  type BusStore,
  checkTopic,
  requireSwarm,
  type SwarmCaller,
  type SwarmSignals,
  SwarmWakeups,
} from './swarm-bus.ts';

export interface LockLease {
  readonly scope: string;
  readonly name: string;
  /** The fencing token: larger than every token this lock had before. */
  readonly token: number;
  /** The holding execution. */
  readonly holder: string;
  readonly node: string | null;
  readonly expiresAt: string;
}

export type AcquireOutcome =
  | {
      readonly acquired: true;
      readonly lease: LockLease;
      /** The lease this one replaced because its ttl had passed. */
      readonly expired?: { readonly holder: string; readonly token: number };
    }
  | {
      readonly acquired: false;
      /** When the current lease ends (a waiter need not look again before), null when it is free. */
      readonly heldUntil: string | null;
    };

export interface AcquireRequest {
  readonly scope: string;
  readonly name: string;
  readonly holder: string;
  readonly node: string | null;
  /** This wait's place in the queue (unique per call). */
  readonly waiter: string;
  readonly at: string;
  readonly ttlMs: number;
  /** The waiter's place is kept until then unless it asks again (it does, while it waits). */
  readonly waiterUntil: string;
}

/** Port: lock rows and their FIFO queues (PostgreSQL in a cluster, SQLite on one node, memory in tests). */
export interface LockStore {
  /**
   * Queues `waiter` (or refreshes its place) and grants the lock when it is free — no holder, or a lease that ended
   * before `at` — and `waiter` is the oldest queued waiter whose place is still kept at `at`. Granting increments
   * the token and removes the waiter. Atomic: concurrent callers (any node) never both get it.
   */
  acquireLock(request: AcquireRequest): Promise<AcquireOutcome>;
  /** Removes `waiter` from the queue (gave up). */
  leaveLockQueue(scope: string, name: string, waiter: string): Promise<void>;
  /** Extends the lease while `holder` still holds it under `token`; undefined otherwise. */
  renewLock(
    scope: string,
    name: string,
    token: number,
    holder: string,
    at: string,
    ttlMs: number,
  ): Promise<LockLease | undefined>;
  /** Ends the lease when `holder` still holds it under `token`; false otherwise. */
  releaseLock(scope: string, name: string, token: number, holder: string): Promise<boolean>;
  /** Ends every lease `holder` holds (its execution ended); returns them. */
  releaseLocksOf(holder: string): Promise<readonly LockLease[]>;
  /** The lock's current token and lease (holder null when free); undefined for a lock never taken. */
  lockState(
    scope: string,
    name: string,
  ): Promise<{ token: number; holder: string | null; expiresAt: string | null } | undefined>;
  /** Every lock ever taken in `scope`, by name (`aegis swarm show`). */
  listLocks(scope: string): Promise<readonly LockView[]>;
}

/** A lock as `aegis swarm show` shows it: holder null when free. */
export interface LockView {
  readonly name: string;
  readonly token: number;
  readonly holder: string | null;
  readonly node: string | null;
  readonly expiresAt: string | null;
}

/** Both halves of the swarm's persistent state, as one store implements them. */
export type SwarmStore = BusStore & LockStore;

export interface SwarmLocksDeps {
  readonly store: LockStore;
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly signals?: SwarmSignals;
  /** A waiter asks again at least this often (signals are best effort). @default 500 */
  readonly pollMs?: number;
}

export interface LockOptions {
  /** The lease's length; renew before it passes. */
  readonly ttlMs: number;
  /** How long to wait for the lock; 0: only take it if it is free now. */
  readonly waitMs: number;
  /** The lock every swarm shares (needs spec.swarm.locks.global). @default false */
  readonly global?: boolean;
  readonly signal?: AbortSignal;
}

/** A crashed waiter stops blocking the queue this long after it last asked. */
export const WAITER_TTL_MS = 3000;
export const MAX_LOCK_TTL_MS = 3_600_000;
export const MAX_LOCK_WAIT_MS = 600_000;

export function lockKey(scope: string, name: string): string {
  return `lock:${scope}:${name}`;
}

export class SwarmLocks {
  readonly #deps: SwarmLocksDeps;
  readonly #wakeups: SwarmWakeups;
  #waits = 0;

  constructor(deps: SwarmLocksDeps) {
    this.#deps = deps;
    this.#wakeups = new SwarmWakeups(deps.clock, deps.signals);
  }

  /** The scope a caller's lock lives in; PERMISSION_DENIED (audited) for a global lock it was not granted. */
  scopeOf(
    caller: SwarmCaller,
    op: string,
    name: string,
    global: boolean,
    onDenied?: (op: string, reason: string) => void,
  ): string {
    const spec = requireSwarm(caller, op, onDenied);
    checkTopic(name, 'name');
    if (!global) return `swarm:${caller.swarmId}`;
    if (spec.locks.global) return 'global';
    const reason = `agent ${caller.agent} may not take global locks (spec.swarm.locks.global is false)`;
    this.#audit(caller, { swarm: caller.swarmId, name, event: 'refused', reason });
    onDenied?.(op, reason);
    throw new AegisError('PERMISSION_DENIED', reason, {
      hint: 'take the lock without global (it is shared by your swarm), or set spec.swarm.locks.global: true',
      details: { rule: 'spec.swarm.locks.global' },
    });
  }

  /** Takes the lock, waiting up to `waitMs` in FIFO order; CONFLICT (audited `refused`) when the wait runs out. */
  async lock(
    caller: SwarmCaller,
    name: string,
    options: LockOptions,
    onDenied?: (op: string, reason: string) => void,
  ): Promise<LockLease> {
    const scope = this.scopeOf(caller, 'lock', name, options.global === true, onDenied);
    const ttlMs = bounded(options.ttlMs, 1, MAX_LOCK_TTL_MS, 'ttl');
    const waitMs = bounded(options.waitMs, 0, MAX_LOCK_WAIT_MS, 'wait');
    const { clock, store } = this.#deps;
    const waiter = `${caller.executionId}#${++this.#waits}`;
    const deadline = clock.now() + waitMs;
    const key = lockKey(scope, name);
    for (;;) {
      const now = clock.now();
      const outcome = await store.acquireLock({
        scope,
        name,
        holder: caller.executionId,
        node: caller.nodeId,
        waiter,
        at: iso(now),
        ttlMs,
        waiterUntil: iso(Math.min(deadline, now + WAITER_TTL_MS)),
      });
      if (outcome.acquired) {
        if (outcome.expired !== undefined)
          this.#audit(caller, {
            swarm: caller.swarmId,
            scope,
            name,
            event: 'expired',
            token: outcome.expired.token,
            holder: outcome.expired.holder,
          });
        this.#audit(caller, {
          swarm: caller.swarmId,
          scope,
          name,
          event: 'acquired',
          token: outcome.lease.token,
        });
        return outcome.lease;
      }
      const remaining = deadline - clock.now();
      if (remaining <= 0 || options.signal?.aborted) {
        await store.leaveLockQueue(scope, name, waiter);
        // The next in line may be free to go now.
        this.#notify(key);
        this.#audit(caller, {
          swarm: caller.swarmId,
          scope,
          name,
          event: 'refused',
          reason: 'wait timed out',
        });
        throw new AegisError('CONFLICT', `lock ${name} is held by another execution; waited ${waitMs} ms`, {
          hint: 'wait longer (wait=…), or retry later; a holder that died loses it when its ttl passes',
          details: { lock: name },
        });
      }
      const untilExpiry =
        outcome.heldUntil === null ? remaining : Math.max(1, Date.parse(outcome.heldUntil) - clock.now() + 1);
      await this.#wakeups.waitFor(
        key,
        Math.min(remaining, this.#deps.pollMs ?? 500, untilExpiry),
        options.signal,
      );
    }
  }

  /** Extends the lease; FENCED when the caller no longer holds `name` under `token`. */
  async renew(
    caller: SwarmCaller,
    name: string,
    token: number,
    options: { ttlMs: number; global?: boolean },
    onDenied?: (op: string, reason: string) => void,
  ): Promise<LockLease> {
    const scope = this.scopeOf(caller, 'renew', name, options.global === true, onDenied);
    const ttlMs = bounded(options.ttlMs, 1, MAX_LOCK_TTL_MS, 'ttl');
    const lease = await this.#deps.store.renewLock(
      scope,
      name,
      token,
      caller.executionId,
      iso(this.#deps.clock.now()),
      ttlMs,
    );
    if (lease === undefined) throw fenced(name, token);
    return lease;
  }

  /** Ends the lease; FENCED when the caller no longer holds `name` under `token` (it expired and was taken). */
  async release(
    caller: SwarmCaller,
    name: string,
    token: number,
    options: { global?: boolean } = {},
    onDenied?: (op: string, reason: string) => void,
  ): Promise<void> {
    const scope = this.scopeOf(caller, 'unlock', name, options.global === true, onDenied);
    const released = await this.#deps.store.releaseLock(scope, name, token, caller.executionId);
    if (!released) {
      this.#audit(caller, {
        swarm: caller.swarmId,
        scope,
        name,
        event: 'refused',
        token,
        reason: 'stale token',
      });
      throw fenced(name, token);
    }
    this.#audit(caller, { swarm: caller.swarmId, scope, name, event: 'released', token });
    this.#notify(lockKey(scope, name));
  }

  /**
   * Whether `token` is the current lease of `name` (held, not expired): what a resource asks before it accepts a
   * write from a lock holder. A stale token (lost, expired, released) is false; `current` is the lock's latest.
   */
  async checkFence(
    caller: SwarmCaller,
    name: string,
    token: number,
    options: { global?: boolean } = {},
    onDenied?: (op: string, reason: string) => void,
  ): Promise<{ valid: boolean; current: number }> {
    const scope = this.scopeOf(caller, 'fence', name, options.global === true, onDenied);
    return this.checkScopedFence(scope, name, token);
  }

  /** `checkFence` for a scope already resolved (`swarm:<id>` or `global`). */
  async checkScopedFence(
    scope: string,
    name: string,
    token: number,
  ): Promise<{ valid: boolean; current: number }> {
    const state = await this.#deps.store.lockState(scope, name);
    if (state === undefined) return { valid: false, current: 0 };
    const live =
      state.holder !== null &&
      state.expiresAt !== null &&
      Date.parse(state.expiresAt) >= this.#deps.clock.now();
    return { valid: live && state.token === token, current: state.token };
  }

  /** The execution ended (any way): its leases end, audited, and their waiters are woken. */
  async executionEnded(executionId: string): Promise<number> {
    const released = await this.#deps.store.releaseLocksOf(executionId);
    for (const lease of released) {
      this.#deps.audit.append(AUDIT_KINDS.swarmLock, executionId, {
        scope: lease.scope,
        name: lease.name,
        event: 'released',
        token: lease.token,
        reason: 'holder ended',
      });
      this.#notify(lockKey(lease.scope, lease.name));
    }
    return released.length;
  }

  /** The swarm's locks for `aegis swarm show` (a lease past its expiry shows as free). */
  async ofSwarm(swarmId: string): Promise<readonly LockView[]> {
    const now = new Date(this.#deps.clock.now()).toISOString();
    return (await this.#deps.store.listLocks(`swarm:${swarmId}`)).map((lock) =>
      lock.expiresAt !== null && lock.expiresAt < now
        ? { ...lock, holder: null, node: null, expiresAt: null }
        : lock,
    );
  }

  close(): void {
    this.#wakeups.close();
  }

  #audit(caller: SwarmCaller, data: Record<string, string | number>): void {
    this.#deps.audit.append(AUDIT_KINDS.swarmLock, caller.executionId, data);
  }

  #notify(key: string): void {
    this.#wakeups.wake(key);
    this.#deps.signals?.signal('swarm', key).catch(() => {});
  }
}

function fenced(name: string, token: number): AegisError {
  return new AegisError(
    'FENCED',
    `lock ${name}: token ${token} is not held any more (expired, taken or released)`,
    {
      hint: 'take the lock again; anything done under the old token must be checked with its fencing token',
      details: { lock: name, token },
    },
  );
}

function bounded(value: number, min: number, max: number, field: string): number {
  if (!Number.isFinite(value) || value < min || value > max)
    throw new AegisError('USAGE', `${field} must be between ${min} and ${max} ms, got ${String(value)}`, {
      details: { field },
    });
  return Math.floor(value);
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
