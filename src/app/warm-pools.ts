/**
 * Warm pools: per deployed revision, keep `spec.scaling.warm` sandboxes spawned ahead of time (Warm: prepared, the
 * interpreter started) so an execution only hands over its task. Each instance serves one execution and is
 * destroyed (the runtime's contract); the pool refills in the background.
 *
 * - Scale to zero: a pool with no execution for `idleTimeout` retires its instances; the next execution starts
 *   cold and wakes the pool up again.
 * - Capacity: warm + spawning + busy sandboxes stay within `maxSandboxes`; refills wait for room, and an execution
 *   that must start cold can evict a warm instance of another pool (`makeRoom`).
 * - Drain: on redeploy/rollback (other revisions of the agent), delete, and shutdown.
 * - A warm instance that dies is noticed by the maintenance tick, audited (`instance.retired`, reason `died`) and
 *   replaced.
 * - Agents with secrets are never pooled: their placeholders are per execution.
 */
import { AUDIT_KINDS } from '../domain/audit/entry.ts';
import type { RetireReason } from '../domain/instance.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import type { AuditLog, Clock, InstanceBinding, InstanceId, Runtime, Timer } from './ports.ts';

export interface PoolMetrics {
  /** An instance entered a state (`warm` when spawned into a pool, `retired` when it left unused). */
  poolTransition(to: 'warm' | 'retired', reason?: RetireReason): void;
}

export interface WarmPoolsDeps {
  readonly runtime: Runtime;
  readonly audit: AuditLog;
  readonly clock: Clock;
  /** A fresh pool instance id (`wp_…`). */
  readonly newId: () => string;
  readonly metrics?: PoolMetrics;
  /** Sandboxes busy with executions right now (they count against capacity). */
  readonly busy: () => number;
  /** Where background failures go (a pool refill that failed); never thrown. */
  readonly log?: (entry: Record<string, unknown>) => void;
}

export interface WarmPoolsOptions {
  /** All sandboxes on this node: warm + spawning + busy. */
  readonly maxSandboxes: number;
  /** Overrides every agent's `spec.scaling.warm` (server config). */
  readonly warmOverride?: number;
  /** Overrides every agent's idle timeout (server config). */
  readonly idleTimeoutMsOverride?: number;
  /** How often dead instances and idle pools are checked. @default 1000 */
  readonly maintenanceMs?: number;
}

interface Pool {
  readonly key: string;
  readonly agent: CompiledAgent;
  readonly revision: number;
  readonly target: number;
  readonly idleTimeoutMs: number;
  readonly warm: InstanceId[];
  spawning: number;
  lastUsedAt: number;
  /** Scaled to zero for idleness: no refills until the next execution. */
  asleep: boolean;
  /** Consecutive spawn failures (backoff; a broken agent must not spin). */
  failures: number;
  nextAttemptAt: number;
}

export interface PoolView {
  readonly agent: string;
  readonly revision: number;
  readonly target: number;
  readonly warm: number;
  readonly spawning: number;
  /** `warm` when instances are ready, `cold` when none (scaled to zero, or not filled yet). */
  readonly state: 'warm' | 'cold';
  readonly idleTimeoutMs: number;
  readonly lastUsedAt: string;
}

export function poolKey(agent: string, revision: number): string {
  return `${agent}@${revision}`;
}

export class WarmPools {
  readonly #deps: WarmPoolsDeps;
  readonly #options: WarmPoolsOptions;
  readonly #pools = new Map<string, Pool>();
  readonly #timer: Timer;
  #closed = false;

  constructor(deps: WarmPoolsDeps, options: WarmPoolsOptions) {
    this.#deps = deps;
    this.#options = options;
    this.#timer = deps.clock.setInterval(() => void this.#maintain(), options.maintenanceMs ?? 1000, {
      background: true,
    });
  }

  /** Pool size for an agent after server overrides; 0 for agents that can't be pooled. */
  targetFor(agent: CompiledAgent): number {
    if (agent.secrets.length > 0) return 0;
    // Nor agents with spec.llm: their gateway token is per execution (issued before spawn).
    if (agent.llm !== null) return 0;
    return this.#options.warmOverride ?? agent.scaling.warm;
  }

  /** Makes sure a revision's pool exists (and wakes it); no-op for agents with no warm target. */
  ensure(agent: CompiledAgent, revision: number): void {
    if (this.#closed) return;
    const key = poolKey(agent.name, revision);
    let pool = this.#pools.get(key);
    if (pool === undefined) {
      const target = this.targetFor(agent);
      if (target === 0) return;
      pool = {
        key,
        agent,
        revision,
        target,
        idleTimeoutMs: this.#options.idleTimeoutMsOverride ?? agent.scaling.idleTimeoutMs,
        warm: [],
        spawning: 0,
        lastUsedAt: this.#deps.clock.now(),
        asleep: false,
        failures: 0,
        nextAttemptAt: 0,
      };
      this.#pools.set(key, pool);
    }
    pool.asleep = false;
    this.#refill(pool);
  }

  /**
   * A warm instance of this revision bound to the execution, or undefined (none ready: start cold). Wakes the pool
   * and refills it in the background either way — or, with `refill: 'later'`, leaves the refill to the caller's
   * `ensure` once the taken instance runs: a spawn holds the event loop for milliseconds (preparing the sandbox,
   * forking bwrap), which must not come between a warm instance and its release.
   */
  take(
    agent: CompiledAgent,
    revision: number,
    binding: InstanceBinding,
    options: { readonly refill?: 'now' | 'later' } = {},
  ): InstanceId | undefined {
    const refillNow = options.refill !== 'later';
    const pool = this.#pools.get(poolKey(agent.name, revision));
    if (pool === undefined) {
      if (refillNow) this.ensure(agent, revision);
      return undefined;
    }
    pool.lastUsedAt = this.#deps.clock.now();
    pool.asleep = false;
    let taken: InstanceId | undefined;
    while (taken === undefined && pool.warm.length > 0) {
      const id = pool.warm.shift()!;
      if (this.#deps.runtime.status(id) !== 'warm' || this.#deps.runtime.bind === undefined) {
        void this.#retire(pool, id, 'died');
        continue;
      }
      try {
        this.#deps.runtime.bind(id, binding);
        taken = id;
      } catch {
        void this.#retire(pool, id, 'died');
      }
    }
    if (refillNow) this.#refill(pool);
    return taken;
  }

  /** Frees one sandbox slot for a cold start when the node is full, by retiring a warm instance. */
  async makeRoom(): Promise<void> {
    if (this.#live() < this.#options.maxSandboxes) return;
    let victim: Pool | undefined;
    for (const pool of this.#pools.values()) {
      if (pool.warm.length > 0 && (victim === undefined || pool.lastUsedAt < victim.lastUsedAt))
        victim = pool;
    }
    const id = victim?.warm.pop();
    if (victim !== undefined && id !== undefined) await this.#retire(victim, id, 'over-capacity');
  }

  /** Retires the pools of `agent` except `keepRevision` (redeploy/rollback), or all of them (delete). */
  async drainAgent(agent: string, reason: RetireReason, keepRevision?: number): Promise<void> {
    const work: Promise<void>[] = [];
    for (const pool of [...this.#pools.values()]) {
      if (pool.agent.name !== agent || pool.revision === keepRevision) continue;
      this.#pools.delete(pool.key);
      for (const id of pool.warm.splice(0)) work.push(this.#retire(pool, id, reason));
    }
    await Promise.all(work);
  }

  /** Shutdown: no more refills; every warm instance retired. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#timer.cancel();
    const work: Promise<void>[] = [];
    for (const pool of this.#pools.values()) {
      for (const id of pool.warm.splice(0)) work.push(this.#retire(pool, id, 'shutdown'));
    }
    this.#pools.clear();
    await Promise.all(work);
  }

  warmCount(): number {
    let n = 0;
    for (const pool of this.#pools.values()) n += pool.warm.length;
    return n;
  }

  view(agent?: string): PoolView[] {
    return [...this.#pools.values()]
      .filter((pool) => agent === undefined || pool.agent.name === agent)
      .map((pool) => ({
        agent: pool.agent.name,
        revision: pool.revision,
        target: pool.target,
        warm: pool.warm.length,
        spawning: pool.spawning,
        state: pool.warm.length > 0 ? 'warm' : 'cold',
        idleTimeoutMs: pool.idleTimeoutMs,
        lastUsedAt: new Date(pool.lastUsedAt).toISOString(),
      }));
  }

  #live(): number {
    let spawning = 0;
    for (const pool of this.#pools.values()) spawning += pool.spawning;
    return this.warmCount() + spawning + this.#deps.busy();
  }

  #refill(pool: Pool): void {
    if (this.#closed || pool.asleep) return;
    const now = this.#deps.clock.now();
    if (now < pool.nextAttemptAt) return;
    while (
      pool.warm.length + pool.spawning < pool.target &&
      this.#live() < this.#options.maxSandboxes &&
      this.#pools.get(pool.key) === pool
    ) {
      pool.spawning++;
      void this.#spawnOne(pool);
    }
  }

  async #spawnOne(pool: Pool): Promise<void> {
    const { runtime, audit, newId } = this.#deps;
    const poolId = newId();
    let id: InstanceId | undefined;
    try {
      id = await runtime.spawn({ executionId: poolId, agent: pool.agent, prewarm: true });
      pool.failures = 0;
    } catch (error) {
      pool.failures++;
      // 1 s, 2 s, 4 s … up to a minute between attempts for an agent whose sandbox can't start.
      pool.nextAttemptAt = this.#deps.clock.now() + Math.min(60_000, 1000 * 2 ** (pool.failures - 1));
      this.#deps.log?.({
        level: 'warn',
        msg: 'warm pool spawn failed',
        pool: pool.key,
        error: error instanceof Error ? error.message : String(error),
      });
    } finally {
      pool.spawning--;
    }
    if (id === undefined) return;
    if (this.#closed || this.#pools.get(pool.key) !== pool || pool.asleep) {
      await runtime.terminate(id).catch(() => {});
      return;
    }
    pool.warm.push(id);
    this.#deps.metrics?.poolTransition('warm');
    try {
      audit.append(AUDIT_KINDS.instanceWarm, null, {
        instance: id,
        agent: pool.agent.name,
        revision: pool.revision,
      });
    } catch {
      // The ledger refusing is noticed by the next execution (fail closed there); a warm instance runs nothing.
    }
  }

  async #retire(pool: Pool, id: InstanceId, reason: RetireReason): Promise<void> {
    await this.#deps.runtime.terminate(id).catch(() => {});
    this.#deps.metrics?.poolTransition('retired', reason);
    try {
      this.#deps.audit.append(AUDIT_KINDS.instanceRetired, null, {
        instance: id,
        agent: pool.agent.name,
        revision: pool.revision,
        reason,
      });
    } catch {
      // see #spawnOne
    }
  }

  async #maintain(): Promise<void> {
    if (this.#closed) return;
    const now = this.#deps.clock.now();
    for (const pool of this.#pools.values()) {
      for (const id of [...pool.warm]) {
        if (this.#deps.runtime.status(id) === 'warm') continue;
        pool.warm.splice(pool.warm.indexOf(id), 1);
        await this.#retire(pool, id, 'died');
      }
      if (!pool.asleep && now - pool.lastUsedAt >= pool.idleTimeoutMs) {
        pool.asleep = true;
        for (const id of pool.warm.splice(0)) await this.#retire(pool, id, 'idle');
        continue;
      }
      this.#refill(pool);
    }
  }
}
