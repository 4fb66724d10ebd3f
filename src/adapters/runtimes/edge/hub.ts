/**
 * The server's end of the edge protocol (docs/adr/0108-edge-node-protocol.md): accepts the WebSocket each edge opens
 * to `GET /v1/edge/connect`, authenticates it (app/edge-nodes.ts), sends it the executions placed on it and turns
 * its sequenced reports back into the callbacks runAgent gave the Runtime (logs, egress decisions, the result).
 *
 * Exactly-once effect: an edge's reports carry (boot, seq); the hub processes each seq of a boot once and acks it
 * (cumulative); a result is taken once per execution. An edge that disconnects keeps running; its executions wait
 * `graceMs` for it to come back, then fail `node-lost`, and anything it reports about them later is refused.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import type { EdgeNodes } from '../../../app/edge-nodes.ts';
import type { InstanceSpec, TaskInput, TaskOutput } from '../../../app/ports.ts';
import { type EdgeBody, EdgeFrame, EdgeHello, type ServerFrame } from '../../../domain/edge/protocol.ts';
import { type EdgeNodeRecord, matchesPlacement } from '../../../domain/edge/records.ts';
import { AegisError, isAegisError } from '../../../domain/errors.ts';
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';

export interface EdgeHubOptions {
  readonly nodes: EdgeNodes;
  /** How long executions wait for a disconnected edge before they fail `node-lost`. @default 30 000 */
  readonly graceMs?: number;
  /** The first frame must arrive this soon after connecting. @default 10 000 */
  readonly helloTimeoutMs?: number;
  readonly log: (entry: Record<string, unknown>) => void;
  /** Told when an edge connects here (after its handshake): the cluster registry lists it (app/edge-registry.ts). */
  readonly onConnected?: (edge: ConnectedEdge) => void;
}

/** An edge connected to this server: its record and the capacity it declared on connecting. */
export interface ConnectedEdge {
  readonly record: EdgeNodeRecord;
  readonly capacity: number;
}

/** Largest frame an edge may send (a log line is ≤ 256 KiB). */
const MAX_EDGE_FRAME_BYTES = 1024 * 1024;

interface Connection {
  readonly ws: WebSocket;
  readonly from: string;
  /** Reports refused on this connection so far. */
  refusals: number;
}

/** Refused reports of one connection that get a ledger entry each (the rest go to the server log only). */
const MAX_REFUSALS_AUDITED = 32;

interface NodeState {
  record: EdgeNodeRecord;
  conn: Connection | undefined;
  /** The edge process's boot id and the highest seq of it processed (acked). */
  boot: string | null;
  acked: number;
  capacity: number;
}

/** One execution placed on an edge, from spawn until its result (or loss). */
interface Assignment {
  readonly executionId: string;
  readonly nodeId: string;
  readonly spec: InstanceSpec;
  task: TaskInput | undefined;
  run: Extract<ServerFrame, { t: 'run' }> | undefined;
  accepted: boolean;
  done: boolean;
  grace: NodeJS.Timeout | undefined;
  resolve: (output: TaskOutput) => void;
  readonly result: Promise<TaskOutput>;
}

export class EdgeHub {
  readonly #options: EdgeHubOptions;
  readonly #graceMs: number;
  readonly #nodes = new Map<string, NodeState>();
  readonly #assignments = new Map<string, Assignment>();
  /** Executions that ended without their edge's result (lost, revoked): a late report is refused. */
  readonly #closed = new Map<string, string>();
  /** Executions whose result an edge delivered, by edge: a replay of it (after the edge restarted) is a no-op. */
  readonly #delivered = new Map<string, string>();
  readonly #wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_EDGE_FRAME_BYTES,
    perMessageDeflate: false,
  });

  constructor(options: EdgeHubOptions) {
    this.#options = options;
    this.#graceMs = options.graceMs ?? 30_000;
    options.nodes.onRevoked = (nodeId) => this.#revoked(nodeId);
  }

  /**
   * Seeds (and refreshes) the enrolled edges from the store: placement knows every edge of the cluster, also those
   * enrolled through another server; an edge revoked through another server and connected here is cut off (audited
   * as refused here: the revoking server's `edge.revoked` says `connected: false`). Returns the ids cut.
   */
  load(records: readonly EdgeNodeRecord[]): string[] {
    const cut: string[] = [];
    for (const record of records) {
      const state = this.#remember(record);
      if (record.revokedAt !== null && state.conn !== undefined) {
        this.#options.nodes.refused(
          record.id,
          `edge node was revoked at ${record.revokedAt} (through another server): its connection here is cut`,
          state.conn.from,
        );
        this.#revoked(record.id);
        cut.push(record.id);
      }
    }
    return cut;
  }

  /** The edges connected to this server now (unrevoked), for the cluster registry's heartbeat. */
  connectedEdges(): ConnectedEdge[] {
    const out: ConnectedEdge[] = [];
    for (const state of this.#nodes.values()) {
      if (state.conn !== undefined && state.record.revokedAt === null) {
        out.push({ record: state.record, capacity: state.capacity });
      }
    }
    return out;
  }

  #remember(record: EdgeNodeRecord): NodeState {
    let state = this.#nodes.get(record.id);
    if (state === undefined) {
      state = { record, conn: undefined, boot: null, acked: 0, capacity: record.capacity };
      this.#nodes.set(record.id, state);
    } else {
      state.record = record;
    }
    return state;
  }

  connected(nodeId: string): boolean {
    return this.#nodes.get(nodeId)?.conn !== undefined;
  }

  /** True when some enrolled, unrevoked edge carries every placement label of the agent. */
  places(agent: CompiledAgent): boolean {
    for (const state of this.#nodes.values()) {
      if (state.record.revokedAt === null && matchesPlacement(agent, state.record.labels)) return true;
    }
    return false;
  }

  /** The edge for `agent`: matching, unrevoked; connected ones first, then the least loaded relative to capacity. */
  #pick(agent: CompiledAgent): NodeState | undefined {
    const load = (id: string) =>
      [...this.#assignments.values()].filter((a) => a.nodeId === id && !a.done).length;
    const candidates = [...this.#nodes.values()].filter(
      (s) => s.record.revokedAt === null && matchesPlacement(agent, s.record.labels),
    );
    candidates.sort(
      (a, b) =>
        Number(b.conn !== undefined) - Number(a.conn !== undefined) ||
        load(a.record.id) / a.capacity - load(b.record.id) / b.capacity,
    );
    return candidates[0];
  }

  /** Places an execution on an edge (the Runtime's spawn). */
  assign(spec: InstanceSpec): { nodeId: string } {
    const state = this.#pick(spec.agent);
    if (state === undefined) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `no enrolled edge node carries the labels ${JSON.stringify(spec.agent.placement?.labels ?? {})}`,
        { hint: 'enrol one: `aegis edge token create --label k=v`, then `aegis edge join` on the edge host' },
      );
    }
    let resolve!: (output: TaskOutput) => void;
    const result = new Promise<TaskOutput>((r) => {
      resolve = r;
    });
    const assignment: Assignment = {
      executionId: spec.executionId,
      nodeId: state.record.id,
      spec,
      task: undefined,
      run: undefined,
      accepted: false,
      done: false,
      grace: undefined,
      resolve,
      result,
    };
    this.#assignments.set(spec.executionId, assignment);
    return { nodeId: state.record.id };
  }

  /** Sends the run frame (now, or when the edge is back) and resolves with the edge's result. */
  execute(
    executionId: string,
    task: TaskInput,
    bundle: { digest: string; bytes: Uint8Array },
  ): Promise<TaskOutput> {
    const a = this.#assignments.get(executionId);
    if (a === undefined) throw new AegisError('NOT_FOUND', `no edge instance for execution ${executionId}`);
    a.task = task;
    a.run = {
      t: 'run',
      id: executionId,
      agent: a.spec.agent.name,
      digest: bundle.digest,
      bundle: Buffer.from(bundle.bytes).toString('base64'),
      input: task.input ?? null,
    };
    const state = this.#nodes.get(a.nodeId)!;
    if (state.conn) this.#send(state.conn, a.run);
    else this.#startGrace(a);
    if (task.signal) {
      const onAbort = () => this.cancel(executionId, String(task.signal?.reason ?? 'cancelled'));
      if (task.signal.aborted) onAbort();
      else task.signal.addEventListener('abort', onAbort, { once: true });
    }
    return a.result.finally(() => {
      this.#assignments.delete(executionId);
    });
  }

  cancel(executionId: string, reason: string): void {
    const a = this.#assignments.get(executionId);
    if (a === undefined || a.done) return;
    const state = this.#nodes.get(a.nodeId);
    if (!a.accepted && a.run === undefined) {
      this.#finish(a, failed('killed', `cancelled before the edge started it: ${reason}`));
      return;
    }
    if (state?.conn) this.#send(state.conn, { t: 'cancel', id: executionId, reason });
  }

  /** Drops an assignment that never ran (spawned, then terminated). */
  forget(executionId: string): void {
    const a = this.#assignments.get(executionId);
    if (a !== undefined && a.run === undefined) {
      this.#finish(a, failed('killed', 'terminated before it ran'));
      this.#assignments.delete(executionId);
    }
  }

  status(executionId: string): 'warm' | 'hot' | undefined {
    const a = this.#assignments.get(executionId);
    if (a === undefined || a.done) return undefined;
    return a.run === undefined ? 'warm' : 'hot';
  }

  /**
   * What this server node claims from a cluster's shared queue on behalf of its connected edges (ADR 0101's
   * `claimExecutions`, ADR 0108): per connected, unrevoked edge its labels, the runtime `edge`, and its free capacity.
   * The claim is the server node's own (its id, epoch and fences): if the server dies, the cluster settles them.
   */
  claimRequests(): {
    readonly edge: string;
    readonly labels: Readonly<Record<string, string>>;
    readonly runtimes: readonly string[];
    readonly limit: number;
  }[] {
    const requests = [];
    for (const [id, state] of this.#nodes) {
      if (state.conn === undefined || state.record.revokedAt !== null) continue;
      const busy = [...this.#assignments.values()].filter((a) => a.nodeId === id && !a.done).length;
      const limit = state.capacity - busy;
      if (limit > 0) requests.push({ edge: id, labels: state.record.labels, runtimes: ['edge'], limit });
    }
    return requests;
  }

  /** Where `node` runs: `{id → connected}` for `aegis edge ls`. */
  view(): ReadonlyMap<string, { connected: boolean; running: number }> {
    const out = new Map<string, { connected: boolean; running: number }>();
    for (const [id, state] of this.#nodes) {
      const running = [...this.#assignments.values()].filter((a) => a.nodeId === id && !a.done).length;
      out.set(id, { connected: state.conn !== undefined, running });
    }
    return out;
  }

  close(): void {
    for (const state of this.#nodes.values()) state.conn?.ws.terminate();
    for (const a of this.#assignments.values()) if (a.grace) clearTimeout(a.grace);
    this.#wss.close();
  }

  // ── connections ──────────────────────────────────────────────────────────────────────────────────────────────

  /** The `upgrade` handler for `GET /v1/edge/connect` (no API key: the edge proves itself in the handshake). */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.#wss.handleUpgrade(request, socket, head, (ws) => {
      const from = `${request.socket.remoteAddress ?? '?'}:${request.socket.remotePort ?? '?'}`;
      void this.#serve({ ws, from, refusals: 0 });
    });
  }

  async #serve(conn: Connection): Promise<void> {
    const { ws } = conn;
    ws.on('error', () => {});
    const nonce = randomBytes(24).toString('hex');
    const first = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new AegisError('USAGE', 'no hello within the timeout')),
        this.#options.helloTimeoutMs ?? 10_000,
      );
      ws.once('message', (data) => {
        clearTimeout(timer);
        resolve(String(data));
      });
      ws.once('close', () => {
        clearTimeout(timer);
        reject(new AegisError('USAGE', 'closed before hello'));
      });
    });
    this.#send(conn, { t: 'challenge', nonce });
    let state: NodeState;
    let boot: string;
    try {
      const parsed = EdgeHello.safeParse(jsonOrNull(await first));
      if (!parsed.success) {
        this.#options.nodes.refused(null, 'malformed hello', conn.from);
        throw new AegisError('USAGE', 'the first frame must be enrol or auth (docs/adr/0108)');
      }
      const hello = parsed.data;
      boot = hello.boot;
      const record =
        hello.t === 'enrol'
          ? await this.#options.nodes.enrol(hello, nonce, conn.from, `edge_${randomBytes(8).toString('hex')}`)
          : await this.#options.nodes.authenticate(hello.nodeId, hello.signature, nonce, conn.from);
      state = this.#remember(record);
      state.capacity = hello.capacity;
    } catch (error) {
      const aegis = isAegisError(error)
        ? error
        : new AegisError('INTERNAL', 'edge handshake failed', { cause: error });
      if (aegis.code === 'INTERNAL')
        this.#options.log({ level: 'error', msg: 'edge handshake', error: String(error) });
      this.#send(conn, { t: 'error', code: aegis.code, message: aegis.message.slice(0, 4000) });
      ws.close(4401, aegis.code);
      return;
    }
    // One connection per edge: a newer one replaces the older (the key holder reconnected).
    state.conn?.ws.terminate();
    state.conn = conn;
    if (state.boot !== boot) {
      state.boot = boot;
      state.acked = 0;
    }
    const nodeId = state.record.id;
    this.#options.log({ level: 'info', msg: 'edge connected', node: nodeId, from: conn.from });
    this.#options.onConnected?.({ record: state.record, capacity: state.capacity });
    ws.on('message', (data) => {
      if (state.conn !== conn) return;
      try {
        this.#onFrame(state, conn, String(data));
      } catch (error) {
        this.#options.log({ level: 'error', msg: 'edge frame failed', node: nodeId, error: String(error) });
      }
    });
    ws.on('close', () => {
      if (state.conn !== conn) return;
      state.conn = undefined;
      this.#options.log({ level: 'info', msg: 'edge disconnected', node: nodeId });
      for (const a of this.#assignments.values()) if (a.nodeId === nodeId && !a.done) this.#startGrace(a);
    });
    this.#send(conn, { t: 'welcome', nodeId, boot, acked: state.acked });
  }

  #onFrame(state: NodeState, conn: Connection, text: string): void {
    const parsed = EdgeFrame.safeParse(jsonOrNull(text));
    if (!parsed.success) {
      this.#options.nodes.refused(state.record.id, 'malformed frame', conn.from);
      return;
    }
    const frame = parsed.data;
    if (frame.t === 'inventory') {
      this.#reconcile(state, conn, frame.executions);
      return;
    }
    if (frame.boot !== state.boot) return; // a report of an older connection's boot, already settled
    if (frame.seq <= state.acked) {
      this.#send(conn, { t: 'ack', seq: state.acked }); // a replay of what we have: exactly-once
      return;
    }
    state.acked = frame.seq;
    this.#apply(state, conn, frame.body);
    this.#send(conn, { t: 'ack', seq: frame.seq });
  }

  /** After a (re)connect: adopt what the server still waits for, reap the rest; (re)send unaccepted runs. */
  #reconcile(state: NodeState, conn: Connection, held: readonly { id: string; finished: boolean }[]): void {
    const nodeId = state.record.id;
    for (const a of this.#assignments.values()) {
      if (a.nodeId !== nodeId || a.done) continue;
      if (a.grace) {
        clearTimeout(a.grace);
        a.grace = undefined;
      }
    }
    const adopt: string[] = [];
    const reap: string[] = [];
    const heldIds = new Set<string>();
    for (const { id } of held) {
      heldIds.add(id);
      const a = this.#assignments.get(id);
      if (a !== undefined && a.nodeId === nodeId && !a.done) adopt.push(id);
      else reap.push(id);
    }
    this.#send(conn, { t: 'reconcile', adopt, reap });
    for (const a of this.#assignments.values()) {
      if (a.nodeId !== nodeId || a.done || heldIds.has(a.executionId) || a.run === undefined) continue;
      if (a.accepted) {
        // It had it, and no longer does (its data dir was wiped): nothing will come back.
        this.#finish(a, failed('failed', `node-lost: edge ${nodeId} no longer holds the execution`));
      } else {
        this.#send(conn, a.run);
      }
    }
  }

  #apply(state: NodeState, conn: Connection, body: EdgeBody): void {
    const nodeId = state.record.id;
    const a = this.#assignments.get(body.id);
    if (a === undefined && this.#delivered.get(body.id) === nodeId) return;
    if (a === undefined || a.nodeId !== nodeId) {
      const closed = a === undefined ? this.#closed.get(body.id) : undefined;
      // A late report of an execution that ended without it: its result is refused on the record; its
      // logs and decisions are dropped unrecorded (they would only repeat that).
      if (closed !== undefined && body.t !== 'finished') return;
      const reason =
        closed !== undefined
          ? `late ${body.t} for execution ${body.id} refused: it ended ${closed}`
          : `${body.t} for execution ${body.id}, which was not placed on this edge`;
      // At most MAX_REFUSALS_AUDITED per connection on the ledger (a flood can't grow it); all in the log.
      if (conn.refusals++ < MAX_REFUSALS_AUDITED) this.#options.nodes.refused(nodeId, reason, conn.from);
      this.#options.log({ level: 'warn', msg: 'edge report refused', node: nodeId, reason });
      return;
    }
    if (a.done) return; // a result replayed after a restart: taken once already
    switch (body.t) {
      case 'accepted':
        a.accepted = true;
        return;
      case 'started':
        a.accepted = true;
        return;
      case 'log':
        a.task?.onLog(body.stream, body.text);
        return;
      case 'network':
        a.spec.onNetworkDecision?.(stripUndefined(body.event));
        return;
      case 'finished': {
        const r = body.result;
        this.#finish(a, {
          status: r.status,
          exitCode: r.exitCode,
          reason: r.reason,
          output: r.output ?? null,
          limitsHit: r.limitsHit,
          violations: r.violations.map((v) => ({
            kind: v.kind as TaskOutput['violations'][number]['kind'],
            rule: v.rule,
            message: v.message,
            ...(v.count === undefined ? {} : { count: v.count }),
          })),
          releasedAtMs: r.releasedAtMs,
          finishedAtMs: r.finishedAtMs,
        });
        return;
      }
      case 'lost':
        this.#finish(a, failed('failed', `node-lost: ${body.reason}`));
        return;
      case 'refused':
        this.#finish(a, failed('failed', `edge ${nodeId} refused it: ${body.reason}`));
        return;
    }
  }

  #startGrace(a: Assignment): void {
    if (a.grace || a.done) return;
    a.grace = setTimeout(() => {
      a.grace = undefined;
      if (a.done || this.connected(a.nodeId)) return;
      this.#finish(
        a,
        failed('failed', `node-lost: edge ${a.nodeId} was away longer than ${this.#graceMs} ms`),
        'node-lost',
      );
    }, this.#graceMs);
    a.grace.unref?.();
  }

  #finish(a: Assignment, output: TaskOutput, closedAs?: string): void {
    if (a.done) return;
    a.done = true;
    if (a.grace) clearTimeout(a.grace);
    const ended = closedAs === undefined ? this.#delivered : this.#closed;
    ended.set(a.executionId, closedAs ?? a.nodeId);
    if (ended.size > 100_000) ended.delete(ended.keys().next().value as string);
    a.resolve(output);
  }

  /** Revocation: cut the connection now and fail what the edge held (its reports can no longer be trusted). */
  #revoked(nodeId: string): boolean {
    const state = this.#nodes.get(nodeId);
    if (state === undefined) return false;
    state.record = { ...state.record, revokedAt: state.record.revokedAt ?? new Date().toISOString() };
    const wasConnected = state.conn !== undefined;
    if (state.conn) {
      this.#send(state.conn, { t: 'error', code: 'UNAUTHENTICATED', message: 'this edge node was revoked' });
      state.conn.ws.terminate();
      state.conn = undefined;
    }
    for (const a of this.#assignments.values()) {
      if (a.nodeId === nodeId && !a.done) {
        this.#finish(a, failed('failed', `node-revoked: edge ${nodeId} was revoked`), 'node-revoked');
      }
    }
    return wasConnected;
  }

  #send(conn: Connection, frame: ServerFrame): void {
    if (conn.ws.readyState === conn.ws.OPEN) conn.ws.send(JSON.stringify(frame));
  }
}

function failed(status: TaskOutput['status'], reason: string): TaskOutput {
  const now = Date.now();
  return {
    status,
    exitCode: null,
    reason,
    output: null,
    limitsHit: [],
    violations: [],
    releasedAtMs: now,
    finishedAtMs: now,
  };
}

function jsonOrNull(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function stripUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
