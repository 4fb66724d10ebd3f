/**
 * The edge node process (`aegis edge join`, docs/adr/0108-edge-node-protocol.md): holds an Ed25519 key in its data
 * dir, opens ONE outbound WebSocket to its server, runs the executions the server sends with its local runtime (the
 * sandbox runtime, as `aegis run` does) from the bundle it receives (digest checked, unpacked in the data dir), and
 * reports logs, egress decisions and results as sequenced messages it keeps until acked and replays after a
 * reconnect. After its own restart it reports what its data dir holds and adopts or reaps as the server says.
 *
 * Data dir: `key/node-ed25519.pem` (0600, in a 0700 dir the sandbox may not mount), `node.json` (id, server),
 * `bundles/<digest>/` (unpacked), `executions/<id>/{job.json,result.json}` (until the result is acked).
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
} from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import type { AgentBundles, NetworkDecisionEvent, Runtime, TaskOutput } from '../../../app/ports.ts';
import {
  challengeText,
  type EdgeBody,
  type EdgeHello,
  Outbox,
  ServerFrame,
} from '../../../domain/edge/protocol.ts';
import { AegisError, ERROR_CODES, type ErrorCode } from '../../../domain/errors.ts';

export interface EdgeNodeOptions {
  /** `http(s)://host:port` of the server. */
  readonly server: string;
  readonly dataDir: string;
  /** Enrolment token; needed only on the first join of an empty data dir. */
  readonly token?: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly runtimes: readonly string[];
  readonly capacity: number;
  /** The local runtime (a RuntimeRouter over the sandbox runtime, as `aegis run` builds it). */
  readonly runtime: Runtime;
  /** Unpacks bundles under the data dir. */
  readonly bundles: AgentBundles;
  readonly log: (line: string) => void;
  /** Reconnect backoff bounds. @default 100 ms … 2 s */
  readonly backoffMs?: { readonly min: number; readonly max: number };
}

interface NodeFile {
  readonly nodeId: string;
  readonly server: string;
}

interface Running {
  readonly abort: AbortController;
}

/** Loads the node key, creating it (0600) on first use. */
export function loadOrCreateNodeKey(dataDir: string): { privatePem: string; publicPem: string } {
  const dir = join(dataDir, 'key');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'node-ed25519.pem');
  if (!existsSync(file)) {
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  }
  const key = createPrivateKey(readFileSync(file));
  return {
    privatePem: String(key.export({ type: 'pkcs8', format: 'pem' })),
    publicPem: String(createPublicKey(key).export({ type: 'spki', format: 'pem' })),
  };
}

export class EdgeNode {
  readonly #o: EdgeNodeOptions;
  readonly #boot = randomBytes(8).toString('hex');
  readonly #outbox = new Outbox();
  /** seq of each `finished`/`lost`/`refused` report → its execution: acked, its directory goes. */
  readonly #settledAt = new Map<number, string>();
  readonly #running = new Map<string, Running>();
  readonly #queue: (() => void)[] = [];
  #active = 0;
  #ws: WebSocket | undefined;
  #welcomed = false;
  #nodeId: string | undefined;
  #stopped = false;
  #fatal: ((error: AegisError) => void) | undefined;
  readonly #key: { privatePem: string; publicPem: string };

  constructor(options: EdgeNodeOptions) {
    this.#o = options;
    mkdirSync(join(options.dataDir, 'executions'), { recursive: true, mode: 0o700 });
    this.#key = loadOrCreateNodeKey(options.dataDir);
    const file = this.#nodeFile();
    if (file !== undefined) this.#nodeId = file.nodeId;
    if (this.#nodeId === undefined && !options.token) {
      throw new AegisError('USAGE', `${options.dataDir} holds no enrolled edge yet: pass --token`, {
        hint: 'an admin creates one with `aegis edge token create`',
      });
    }
  }

  get nodeId(): string | undefined {
    return this.#nodeId;
  }

  /**
   * Reaps what a previous process left, then connects and serves until `stop()` (resolves) or the server refuses
   * this edge for good (rejects: revoked, bad or used token).
   */
  async run(): Promise<void> {
    const reaped = await this.#o.runtime.reapOrphans();
    if (reaped.length > 0) this.#o.log(`reaped ${reaped.length} orphaned instance(s) of a previous run`);
    const backoff = this.#o.backoffMs ?? { min: 100, max: 2000 };
    let delay = backoff.min;
    await new Promise<void>((resolve, reject) => {
      this.#fatal = (error) => {
        this.#stopped = true;
        reject(error);
      };
      const connect = () => {
        if (this.#stopped) return resolve();
        const ws = new WebSocket(`${this.#o.server.replace(/^http/, 'ws')}/v1/edge/connect`, {
          maxPayload: 256 * 1024 * 1024,
          perMessageDeflate: false,
        });
        this.#ws = ws;
        this.#welcomed = false;
        ws.on('message', (data) => {
          try {
            if (this.#onFrame(ws, String(data))) delay = backoff.min;
          } catch (error) {
            this.#o.log(`frame failed: ${String(error)}`);
          }
        });
        ws.on('error', () => {});
        ws.on('close', () => {
          if (this.#ws === ws) this.#ws = undefined;
          if (this.#welcomed) this.#o.log('disconnected; reconnecting');
          this.#welcomed = false;
          if (this.#stopped) return resolve();
          setTimeout(connect, delay);
          delay = Math.min(backoff.max, delay * 2);
        });
      };
      this.#stopResolve = resolve;
      connect();
    });
  }

  #stopResolve: (() => void) | undefined;

  /**
   * Stops serving: kills running instances, gives their `finished` (killed) reports up to `deadlineMs` to be acked,
   * then closes the connection. What is not acked by then the server settles after its grace (`node-lost`).
   */
  async stop(deadlineMs = 5000): Promise<void> {
    for (const running of this.#running.values()) running.abort.abort('the edge node is stopping');
    const until = Date.now() + deadlineMs;
    while ((this.#running.size > 0 || this.#outbox.size > 0) && this.#welcomed && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    this.#stopped = true;
    this.#ws?.close();
    this.#stopResolve?.();
  }

  // ── frames ────────────────────────────────────────────────────────────────────────────────────────────────────

  /** Returns true on welcome (the connection is up). */
  #onFrame(ws: WebSocket, text: string): boolean {
    const parsed = ServerFrame.safeParse(JSON.parse(text));
    if (!parsed.success) {
      this.#o.log(`ignored a malformed frame from the server: ${parsed.error.message.slice(0, 200)}`);
      return false;
    }
    const frame = parsed.data;
    switch (frame.t) {
      case 'challenge': {
        const signature = (nodeId: string | null) =>
          sign(null, Buffer.from(challengeText(frame.nonce, nodeId)), this.#key.privatePem).toString(
            'base64',
          );
        const hello: EdgeHello =
          this.#nodeId === undefined
            ? {
                t: 'enrol',
                token: this.#o.token ?? '',
                publicKeyPem: this.#key.publicPem,
                signature: signature(null),
                labels: { ...this.#o.labels },
                runtimes: [...this.#o.runtimes],
                capacity: this.#o.capacity,
                boot: this.#boot,
              }
            : {
                t: 'auth',
                nodeId: this.#nodeId,
                signature: signature(this.#nodeId),
                boot: this.#boot,
                capacity: this.#o.capacity,
              };
        ws.send(JSON.stringify(hello));
        return false;
      }
      case 'welcome': {
        if (this.#nodeId === undefined) {
          this.#nodeId = frame.nodeId;
          writeFileSync(
            join(this.#o.dataDir, 'node.json'),
            `${JSON.stringify({ nodeId: frame.nodeId, server: this.#o.server } satisfies NodeFile)}\n`,
            { mode: 0o600 },
          );
          this.#o.log(`enrolled as ${frame.nodeId}`);
        }
        this.#welcomed = true;
        this.#o.log(`connected to ${this.#o.server} as ${frame.nodeId}`);
        if (frame.boot === this.#boot) this.#acked(frame.acked);
        for (const entry of this.#outbox.replay()) this.#transmit(entry);
        ws.send(
          JSON.stringify({
            t: 'inventory',
            executions: this.#held().map((id) => ({
              id,
              finished: existsSync(join(this.#dir(id), 'result.json')),
            })),
          }),
        );
        return true;
      }
      case 'error': {
        // The server refused the handshake (revoked, bad or used token, no edges taken): retrying cannot help.
        this.#o.log(`server refused this edge: ${frame.code}: ${frame.message}`);
        const code = frame.code in ERROR_CODES ? (frame.code as ErrorCode) : 'UNAUTHENTICATED';
        this.#fatal?.(new AegisError(code, frame.message));
        return false;
      }
      case 'ack':
        this.#acked(frame.seq);
        return false;
      case 'run':
        this.#onRun(frame);
        return false;
      case 'cancel':
        this.#running.get(frame.id)?.abort.abort(frame.reason);
        return false;
      case 'reconcile':
        this.#onReconcile(frame.adopt, frame.reap);
        return false;
    }
  }

  #acked(seq: number): void {
    this.#outbox.ack(seq);
    for (const [at, id] of this.#settledAt) {
      if (at > seq) continue;
      this.#settledAt.delete(at);
      rmSync(this.#dir(id), { recursive: true, force: true });
    }
  }

  #report(body: EdgeBody): void {
    const entry = this.#outbox.push(body);
    if (body.t === 'finished' || body.t === 'lost' || body.t === 'refused')
      this.#settledAt.set(entry.seq, body.id);
    this.#transmit(entry);
  }

  #transmit(entry: { seq: number; body: EdgeBody }): void {
    const ws = this.#ws;
    if (ws === undefined || !this.#welcomed || ws.readyState !== WebSocket.OPEN) return; // replayed on welcome
    ws.send(JSON.stringify({ t: 'msg', seq: entry.seq, boot: this.#boot, body: entry.body }));
  }

  #onReconcile(adopt: readonly string[], reap: readonly string[]): void {
    for (const id of reap) {
      this.#running.get(id)?.abort.abort('reaped: the server no longer waits for it');
      rmSync(this.#dir(id), { recursive: true, force: true });
      this.#o.log(`reaped ${id}`);
    }
    for (const id of adopt) {
      if (this.#running.has(id) || this.#reportedThisBoot.has(id)) continue; // this process runs or ran it
      const resultFile = join(this.#dir(id), 'result.json');
      if (existsSync(resultFile)) {
        // Result replay: it finished before this process restarted; the server takes it once.
        const result = JSON.parse(readFileSync(resultFile, 'utf8')) as Extract<
          EdgeBody,
          { t: 'finished' }
        >['result'];
        this.#report({ t: 'finished', id, result });
        this.#o.log(`adopted ${id}: replayed its result`);
      } else {
        this.#report({ t: 'lost', id, reason: 'the edge restarted while it ran (the instance was reaped)' });
        this.#o.log(`adopted ${id}: it was running when this edge restarted; reported lost`);
      }
    }
  }

  readonly #reportedThisBoot = new Set<string>();

  #onRun(frame: Extract<ServerFrame, { t: 'run' }>): void {
    const dir = this.#dir(frame.id);
    if (existsSync(dir) || this.#reportedThisBoot.has(frame.id)) {
      this.#report({ t: 'accepted', id: frame.id }); // a resend after a reconnect: it is ours already
      return;
    }
    const bytes = Buffer.from(frame.bundle, 'base64');
    const digest = createHash('sha256').update(bytes).digest('hex');
    if (digest !== frame.digest) {
      this.#report({
        t: 'refused',
        id: frame.id,
        reason: `bundle digest mismatch: expected ${frame.digest}, got ${digest}`,
      });
      return;
    }
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(
      join(dir, 'job.json'),
      JSON.stringify({ id: frame.id, agent: frame.agent, digest: frame.digest, input: frame.input }),
    );
    this.#reportedThisBoot.add(frame.id);
    this.#report({ t: 'accepted', id: frame.id });
    const abort = new AbortController();
    this.#running.set(frame.id, { abort });
    const start = () => void this.#execute(frame, bytes, abort.signal);
    if (this.#active < this.#o.capacity) start();
    else this.#queue.push(start);
  }

  async #execute(
    frame: Extract<ServerFrame, { t: 'run' }>,
    bytes: Buffer,
    signal: AbortSignal,
  ): Promise<void> {
    this.#active++;
    const id = frame.id;
    try {
      if (signal.aborted) throw new AegisError('USAGE', String(signal.reason));
      const agent = await this.#o.bundles.open(frame.digest, bytes);
      const instance = await this.#o.runtime.spawn({
        executionId: id,
        agent,
        onNetworkDecision: (event: NetworkDecisionEvent) =>
          this.#report({ t: 'network', id, event: { ...event, resolved: [...event.resolved] } }),
      });
      this.#report({ t: 'started', id, instance });
      const output: TaskOutput = await this.#o.runtime.execute(instance, {
        input: frame.input ?? null,
        onLog: (stream, text) => this.#report({ t: 'log', id, stream, text: text.slice(0, 256 * 1024) }),
        signal,
      });
      const result = {
        status: output.status,
        exitCode: output.exitCode,
        reason: output.reason,
        output: output.output,
        limitsHit: [...output.limitsHit],
        violations: output.violations.map((v) => ({ ...v })),
        releasedAtMs: output.releasedAtMs,
        finishedAtMs: output.finishedAtMs,
      };
      // On disk first: a restart before the ack replays it (adopt).
      if (existsSync(this.#dir(id)))
        writeFileSync(join(this.#dir(id), 'result.json'), JSON.stringify(result));
      this.#report({ t: 'finished', id, result });
    } catch (error) {
      this.#report({ t: 'refused', id, reason: error instanceof Error ? error.message : String(error) });
    } finally {
      this.#running.delete(id);
      this.#active--;
      this.#queue.shift()?.();
    }
  }

  #held(): string[] {
    try {
      return readdirSync(join(this.#o.dataDir, 'executions'));
    } catch {
      return [];
    }
  }

  #dir(id: string): string {
    if (!/^[A-Za-z0-9_.-]{1,100}$/.test(id) || id.startsWith('.')) {
      throw new AegisError('USAGE', `execution id ${JSON.stringify(id)} is not a safe name`);
    }
    return join(this.#o.dataDir, 'executions', id);
  }

  #nodeFile(): NodeFile | undefined {
    const file = join(this.#o.dataDir, 'node.json');
    if (!existsSync(file)) return undefined;
    return JSON.parse(readFileSync(file, 'utf8')) as NodeFile;
  }
}
