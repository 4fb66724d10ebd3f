/**
 * The swarm message bus (issue 16, docs/adr/0144-swarm-bus-and-locks.md): `publish(topic, message)` and
 * `subscribe(topic, {after})` within one swarm — a root execution and its descendants.
 *
 *  - The swarm is the caller's, never a parameter: an agent reaches only its own swarm's topics.
 *  - Messages are persisted (the `BusStore`), numbered 1, 2, 3… per (swarm, topic) in commit order, so a subscriber
 *    that remembers the last id it handled resumes after it (a restart loses nothing) and drops ids it has seen
 *    (delivery is at-least-once: the same id may come twice, never out of order).
 *  - Size and rate are bounded by the publisher's `spec.swarm.bus`; every publish (and every refusal) is a
 *    `swarm.message` ledger entry with the topic, sender, size and sha256 — never the content.
 *  - An agent without `spec.swarm` is refused (PERMISSION_DENIED, audited by the caller's `onDenied`).
 */
import { AUDIT_KINDS, type Sha256Hex } from '../domain/audit/entry.ts';
import { TokenBuckets } from '../domain/auth/token-bucket.ts';
import { AegisError } from '../domain/errors.ts';
import type { SwarmSpec } from '../domain/manifest/compiled.ts';
import type { AuditLog, Clock, ClusterTopic } from './ports.ts';

/** One stored message. `seq` is its id within (swarm, topic): 1, 2, 3… in commit order. */
export interface SwarmMessage {
  readonly swarm: string;
  readonly topic: string;
  readonly seq: number;
  /** The sending execution. */
  readonly sender: string;
  /** The message as JSON text. */
  readonly body: string;
  readonly sizeBytes: number;
  readonly digest: string;
  readonly publishedAt: string;
}

/** Port: where messages live (PostgreSQL in a cluster, SQLite on one node, memory in tests). */
export interface BusStore {
  /**
   * Appends a message to (swarm, topic) with the next seq of that topic. Two concurrent appends to one topic get
   * different seqs, and the one with the lower seq is visible first (a reader never sees seq n+1 without n).
   */
  appendMessage(message: Omit<SwarmMessage, 'seq'>): Promise<SwarmMessage>;
  /** Messages of (swarm, topic) with seq > afterSeq, in seq order, at most `limit`. */
  readMessages(
    swarm: string,
    topic: string,
    afterSeq: number,
    limit: number,
  ): Promise<readonly SwarmMessage[]>;
  /** The swarm's last `limit` messages over all its topics, oldest first (`aegis swarm show`). */
  recentMessages(swarm: string, limit: number): Promise<readonly SwarmMessage[]>;
}

/** Port: wake-ups across nodes (ClusterStore.signal/onSignal: LISTEN/NOTIFY on PostgreSQL). Best effort. */
export interface SwarmSignals {
  signal(topic: ClusterTopic, id: string): Promise<void>;
  onSignal(listener: (topic: ClusterTopic, id: string) => void): () => void;
}

/** Who is calling: an execution, its agent's `spec.swarm`, and the swarm it belongs to (its root's id). */
export interface SwarmCaller {
  readonly executionId: string;
  readonly agent: string;
  /** `rootId ?? id` of the execution. */
  readonly swarmId: string;
  readonly swarm: SwarmSpec | undefined;
  /** The node running it (cluster), or null. */
  readonly nodeId: string | null;
}

export interface SwarmBusDeps {
  readonly store: BusStore;
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly sha256Hex: Sha256Hex;
  readonly signals?: SwarmSignals;
  /** A subscriber waiting for messages re-reads at least this often (signals are best effort). @default 1000 */
  readonly pollMs?: number;
}

export interface SubscribeOptions {
  /** The last id handled (a message seq); only later messages come. @default 0 */
  readonly after?: number;
  /** At most this many messages. @default 100 */
  readonly limit?: number;
  /** Wait up to this long for a first message (long-poll); 0 answers at once. @default 0 */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface Delivered {
  readonly id: number;
  readonly topic: string;
  readonly sender: string;
  readonly message: unknown;
  readonly publishedAt: string;
}

/** A message as `aegis swarm show` lists it (the content stays with its subscribers). */
export interface MessageView {
  readonly topic: string;
  readonly id: number;
  readonly sender: string;
  readonly sizeBytes: number;
  readonly digest: string;
  readonly publishedAt: string;
}

const TOPIC = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/;
export const MAX_SUBSCRIBE_LIMIT = 1000;
export const MAX_SUBSCRIBE_WAIT_MS = 60_000;

/** The key a swarm's topic is signalled under. */
export function topicKey(swarm: string, topic: string): string {
  return `bus:${swarm}:${topic}`;
}

export function checkTopic(topic: unknown, what = 'topic'): string {
  if (typeof topic !== 'string' || !TOPIC.test(topic))
    throw new AegisError('USAGE', `${what} must be 1–128 characters of letters, digits and . _ : / -`, {
      hint: 'e.g. "results" or "tasks/research"',
      details: { field: what },
    });
  return topic;
}

/** The caller's spec.swarm, or PERMISSION_DENIED (reported through `onDenied` first). */
export function requireSwarm(
  caller: SwarmCaller,
  op: string,
  onDenied?: (op: string, reason: string) => void,
): SwarmSpec {
  if (caller.swarm !== undefined) return caller.swarm;
  const reason = `agent ${caller.agent} has no swarm: aegis.swarm.${op} needs spec.swarm in its manifest`;
  onDenied?.(op, reason);
  throw new AegisError('PERMISSION_DENIED', reason, {
    hint: 'add `swarm: {}` under spec in agent.yaml (docs: spec.swarm) and deploy again',
    details: { rule: 'spec.swarm' },
  });
}

export class SwarmBus {
  readonly #deps: SwarmBusDeps;
  readonly #buckets = new TokenBuckets();
  readonly #wakeups: SwarmWakeups;

  constructor(deps: SwarmBusDeps) {
    this.#deps = deps;
    this.#wakeups = new SwarmWakeups(deps.clock, deps.signals);
  }

  /** Publishes `message` (any JSON value) to the caller's swarm's `topic`; returns its id (seq). */
  async publish(
    caller: SwarmCaller,
    topic: string,
    message: unknown,
    onDenied?: (op: string, reason: string) => void,
  ): Promise<{ id: number; topic: string; sizeBytes: number; digest: string }> {
    const spec = requireSwarm(caller, 'publish', onDenied);
    checkTopic(topic);
    const { audit, clock, sha256Hex, store } = this.#deps;
    const body = JSON.stringify(message ?? null);
    const sizeBytes = new TextEncoder().encode(body).length;
    const refuse = (code: 'PAYLOAD_TOO_LARGE' | 'RATE_LIMITED', reason: string, hint: string): never => {
      audit.append(AUDIT_KINDS.swarmMessage, caller.executionId, {
        swarm: caller.swarmId,
        topic,
        sizeBytes,
        refused: reason,
      });
      throw new AegisError(code, reason, { hint, details: { rule: 'spec.swarm.bus', topic } });
    };
    if (sizeBytes > spec.bus.maxMessageBytes)
      refuse(
        'PAYLOAD_TOO_LARGE',
        `a message of ${sizeBytes} bytes is over spec.swarm.bus.maxMessageBytes (${spec.bus.maxMessageBytes})`,
        'send a smaller message (a reference, a summary), or raise spec.swarm.bus.maxMessageBytes',
      );
    const rate = spec.bus.ratePerSecond;
    const decision = this.#buckets.take(caller.executionId, { perSecond: rate, burst: rate }, clock.now());
    if (!decision.allowed)
      refuse(
        'RATE_LIMITED',
        `over spec.swarm.bus.ratePerSecond (${rate} messages a second); retry in ${decision.retryAfterMs} ms`,
        'publish less often, batch messages, or raise spec.swarm.bus.ratePerSecond',
      );
    const digest = sha256Hex(body);
    const stored = await store.appendMessage({
      swarm: caller.swarmId,
      topic,
      sender: caller.executionId,
      body,
      sizeBytes,
      digest,
      publishedAt: new Date(clock.now()).toISOString(),
    });
    audit.append(AUDIT_KINDS.swarmMessage, caller.executionId, {
      swarm: caller.swarmId,
      topic,
      id: stored.seq,
      sizeBytes,
      digest,
    });
    this.#wakeups.wake(topicKey(caller.swarmId, topic));
    this.#deps.signals?.signal('swarm', topicKey(caller.swarmId, topic)).catch(() => {});
    return { id: stored.seq, topic, sizeBytes, digest };
  }

  /**
   * Messages of the caller's swarm's `topic` after `options.after`, oldest first; with `timeoutMs` it waits up to
   * that long for the first one (long-poll). `cursor` is the id to pass as `after` next time.
   */
  async subscribe(
    caller: SwarmCaller,
    topic: string,
    options: SubscribeOptions = {},
    onDenied?: (op: string, reason: string) => void,
  ): Promise<{ messages: Delivered[]; cursor: number }> {
    requireSwarm(caller, 'subscribe', onDenied);
    checkTopic(topic);
    const after = options.after ?? 0;
    if (!Number.isSafeInteger(after) || after < 0)
      throw new AegisError('USAGE', `after must be a message id (a whole number ≥ 0), got ${String(after)}`, {
        details: { field: 'after' },
      });
    const limit = Math.min(Math.max(1, Math.floor(options.limit ?? 100)), MAX_SUBSCRIBE_LIMIT);
    const timeoutMs = Math.min(Math.max(0, options.timeoutMs ?? 0), MAX_SUBSCRIBE_WAIT_MS);
    const key = topicKey(caller.swarmId, topic);
    const deadline = this.#deps.clock.now() + timeoutMs;
    for (;;) {
      const found = await this.#deps.store.readMessages(caller.swarmId, topic, after, limit);
      const remaining = deadline - this.#deps.clock.now();
      if (found.length > 0 || remaining <= 0 || options.signal?.aborted) {
        return {
          messages: found.map((m) => ({
            id: m.seq,
            topic: m.topic,
            sender: m.sender,
            message: JSON.parse(m.body) as unknown,
            publishedAt: m.publishedAt,
          })),
          cursor: found.at(-1)?.seq ?? after,
        };
      }
      await this.#wakeups.waitFor(key, Math.min(remaining, this.#deps.pollMs ?? 1000), options.signal);
    }
  }

  /** The swarm's last `limit` messages, for `aegis swarm show`: who sent what where — size and digest, no content. */
  async recent(swarmId: string, limit = 100): Promise<readonly MessageView[]> {
    return (await this.#deps.store.recentMessages(swarmId, limit)).map((m) => ({
      topic: m.topic,
      id: m.seq,
      sender: m.sender,
      sizeBytes: m.sizeBytes,
      digest: m.digest,
      publishedAt: m.publishedAt,
    }));
  }

  /** Stops listening for signals. */
  close(): void {
    this.#wakeups.close();
  }
}

/**
 * Waiters by key (a topic, a lock), shared by the bus and the locks: woken by this process, or by a cluster `swarm`
 * signal naming the key (subscribed on the first wait).
 */
export class SwarmWakeups {
  readonly #clock: Clock;
  readonly #signals: SwarmSignals | undefined;
  readonly #waiters = new Map<string, Set<() => void>>();
  #unsubscribe: (() => void) | undefined;

  constructor(clock: Clock, signals: SwarmSignals | undefined) {
    this.#clock = clock;
    this.#signals = signals;
  }

  wake(key: string): void {
    const waiting = this.#waiters.get(key);
    if (waiting === undefined) return;
    this.#waiters.delete(key);
    for (const wake of waiting) wake();
  }

  /** Resolves on a wake for `key`, after `ms`, or on abort — whichever comes first. */
  waitFor(key: string, ms: number, signal?: AbortSignal): Promise<void> {
    if (this.#unsubscribe === undefined && this.#signals !== undefined) {
      this.#unsubscribe = this.#signals.onSignal((topic, id) => {
        if (topic === 'swarm') this.wake(id);
      });
    }
    const waiters = this.#waiters;
    const clock = this.#clock;
    return new Promise((resolve) => {
      let set = waiters.get(key);
      if (set === undefined) {
        set = new Set();
        waiters.set(key, set);
      }
      const done = () => {
        timer.cancel();
        waiters.get(key)?.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      set.add(done);
      const timer = clock.setTimeout(done, ms);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  /** Stops listening for signals. */
  close(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
  }
}
