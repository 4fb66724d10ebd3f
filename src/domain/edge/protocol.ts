/**
 * The edge protocol (docs/adr/0108-edge-node-protocol.md): JSON text frames over one WebSocket the edge opens to
 * `GET /v1/edge/connect`. Pure: the frame schemas, the signed challenge text, and the edge's outbox (sequence
 * numbers, keep until acked, replay after a reconnect).
 *
 * Handshake: server `challenge{nonce}` → edge `enrol{token, publicKeyPem, …, signature}` (first time) or
 * `auth{nodeId, signature, …}` → server `welcome{nodeId, boot, acked}` (or `error` and close).
 * Then server → edge: `run`, `cancel`, `ack{seq}`, `reconcile{adopt, reap}`;
 * edge → server: `msg{seq, boot, body}` with body `accepted | started | log | network | finished | lost`, and
 * `inventory{executions}` once after each welcome.
 */
import { z } from 'zod';

const Labels = z.record(z.string().max(64), z.string().max(63));
const Id = z.string().min(1).max(100);

/** The text an edge signs to prove it holds its key: binds the nonce, the node and the purpose. */
export function challengeText(nonce: string, nodeId: string | null): string {
  return `aegis-edge-auth/v1\n${nonce}\n${nodeId ?? 'enrol'}`;
}

export const EdgeHello = z.discriminatedUnion('t', [
  z.object({
    t: z.literal('enrol'),
    token: z.string().min(1).max(200),
    publicKeyPem: z.string().min(1).max(2000),
    signature: z.string().min(1).max(200),
    labels: Labels,
    runtimes: z.array(z.string().max(32)).max(8),
    capacity: z.number().int().min(1).max(1024),
    boot: Id,
  }),
  z.object({
    t: z.literal('auth'),
    nodeId: Id,
    signature: z.string().min(1).max(200),
    boot: Id,
    capacity: z.number().int().min(1).max(1024),
  }),
]);
export type EdgeHello = z.infer<typeof EdgeHello>;

export const NetworkDecisionBody = z.object({
  requested: z.string().max(2000),
  host: z.string().max(500).nullable(),
  resolved: z.array(z.string().max(100)).max(64),
  address: z.string().max(100).nullable(),
  port: z.number().int().min(0).max(65535),
  protocol: z.string().max(20),
  rule: z.string().max(2000),
  verdict: z.enum(['allow', 'deny']),
  reason: z.string().max(2000),
  message: z.string().max(4000),
  error: z.string().max(2000).optional(),
  bytesUp: z.number().nonnegative(),
  bytesDown: z.number().nonnegative(),
});

export const TaskResultBody = z.object({
  status: z.enum(['succeeded', 'failed', 'timeout', 'oom', 'killed']),
  exitCode: z.number().int().nullable(),
  reason: z.string().max(4000).nullable(),
  output: z.unknown(),
  limitsHit: z.array(z.enum(['cpu', 'memory', 'pids', 'disk', 'timeout'])).max(8),
  violations: z
    .array(
      z.object({
        kind: z.string().max(40),
        rule: z.string().max(2000),
        message: z.string().max(4000),
        count: z.number().int().optional(),
      }),
    )
    .max(256),
  releasedAtMs: z.number(),
  finishedAtMs: z.number(),
});

/** What an edge reports; each is wrapped in a sequenced `msg`. */
export const EdgeBody = z.discriminatedUnion('t', [
  /** The run frame arrived and its bundle checked; the edge owns the execution now. */
  z.object({ t: z.literal('accepted'), id: Id }),
  z.object({ t: z.literal('started'), id: Id, instance: z.string().max(200) }),
  z.object({
    t: z.literal('log'),
    id: Id,
    stream: z.enum(['stdout', 'stderr', 'system']),
    text: z.string().max(256 * 1024),
  }),
  z.object({ t: z.literal('network'), id: Id, event: NetworkDecisionBody }),
  z.object({ t: z.literal('finished'), id: Id, result: TaskResultBody }),
  /** The edge restarted while it ran this one: its process is gone, no result will come. */
  z.object({ t: z.literal('lost'), id: Id, reason: z.string().max(2000) }),
  /** The edge could not start it (bundle digest mismatch, runtime refused, …). */
  z.object({ t: z.literal('refused'), id: Id, reason: z.string().max(4000) }),
]);
export type EdgeBody = z.infer<typeof EdgeBody>;

export const EdgeFrame = z.discriminatedUnion('t', [
  z.object({ t: z.literal('msg'), seq: z.number().int().min(1), boot: Id, body: EdgeBody }),
  /** After each welcome: the executions the edge holds (finished: it has their result on disk). */
  z.object({
    t: z.literal('inventory'),
    executions: z.array(z.object({ id: Id, finished: z.boolean() })).max(10_000),
  }),
]);
export type EdgeFrame = z.infer<typeof EdgeFrame>;

/** What the server sends. The edge trusts its server (it enrolled there), but parses strictly all the same. */
export const ServerFrame = z.discriminatedUnion('t', [
  z.object({ t: z.literal('challenge'), nonce: z.string().min(16).max(200) }),
  /** `acked`: the highest seq of this boot the server has processed (the edge drops those, replays the rest). */
  z.object({ t: z.literal('welcome'), nodeId: Id, boot: Id, acked: z.number().int().min(0) }),
  z.object({
    t: z.literal('error'),
    code: z.string().max(64),
    message: z.string().max(4000),
  }),
  z.object({
    t: z.literal('run'),
    id: Id,
    agent: z.string().max(200),
    digest: z.string().regex(/^[0-9a-f]{64}$/),
    /** The bundle (`.tar.gz`), base64. */
    bundle: z.string(),
    input: z.unknown(),
  }),
  z.object({ t: z.literal('cancel'), id: Id, reason: z.string().max(2000) }),
  z.object({ t: z.literal('ack'), seq: z.number().int().min(0) }),
  /** Answer to `inventory`: adopt (replay the result / keep reporting) or reap (forget, clean up). */
  z.object({ t: z.literal('reconcile'), adopt: z.array(Id), reap: z.array(Id) }),
]);
export type ServerFrame = z.infer<typeof ServerFrame>;

/**
 * The edge's outbox: every report gets the next seq and stays until the server acks it (cumulative acks); after a
 * reconnect, `replay` hands back what the server has not acked, in order. The server drops seqs it has processed.
 */
export class Outbox {
  #next = 1;
  readonly #pending: { seq: number; body: EdgeBody }[] = [];
  /** Most unacked reports kept; beyond it the oldest log lines are dropped (results never are). */
  readonly #maxPending: number;
  #droppedLogs = 0;

  constructor(maxPending = 100_000) {
    this.#maxPending = maxPending;
  }

  push(body: EdgeBody): { seq: number; body: EdgeBody } {
    const entry = { seq: this.#next++, body };
    this.#pending.push(entry);
    if (this.#pending.length > this.#maxPending) {
      const at = this.#pending.findIndex((e) => e.body.t === 'log');
      if (at >= 0) {
        this.#pending.splice(at, 1);
        this.#droppedLogs++;
      }
    }
    return entry;
  }

  /** Drops everything up to and including `seq`. */
  ack(seq: number): void {
    while (this.#pending.length > 0 && this.#pending[0]!.seq <= seq) this.#pending.shift();
  }

  replay(): readonly { seq: number; body: EdgeBody }[] {
    return [...this.#pending];
  }

  get size(): number {
    return this.#pending.length;
  }

  get droppedLogs(): number {
    return this.#droppedLogs;
  }
}
