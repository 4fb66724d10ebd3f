/**
 * Live sandboxes on the sandbox runtime: the orchestrator's end of the exec agent's channel
 * (shims/live-agent.cjs, docs/adr/0051-live-sandbox-exec-agent.md).
 *
 * The agent is the sandbox's command; its stdin/stdout are the channel, framed as: u32be length of the rest, u32be
 * header length, JSON header, body bytes. Everything the agent says is untrusted (a process in the sandbox can
 * reach the same pipes): frames are size-capped, ids must be ours, and a malformed frame ends the sandbox.
 */
import type net from 'node:net';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type {
  LiveCommandEvents,
  LiveCommandSpec,
  LiveFileEntry,
  LivePathPolicy,
  LiveProcess,
  LivePty,
  LivePtyEvents,
  LivePtySpec,
  LiveSession,
  LiveUsage,
} from '../../../app/ports.ts';
import { AegisError } from '../../../domain/errors.ts';
import type { CgroupStats } from './cgroups.ts';
import { SHIM_DIR_INSIDE } from './prewarm.ts';

export const LIVE_AGENT = 'live-agent.cjs';
export const LIVE_AGENT_INSIDE = `${SHIM_DIR_INSIDE}/${LIVE_AGENT}`;
/** The PTY helper beside the agent (docs/adr/0068-live-sandbox-pty.md). */
export const LIVE_PTY_HELPER = 'live-pty.py';
export const LIVE_PTY_HELPER_INSIDE = `${SHIM_DIR_INSIDE}/${LIVE_PTY_HELPER}`;
/** The agent's source file on the host (docker and gvisor bind it read-only; the sandbox runtime copies it). */
export const LIVE_AGENT_SOURCE = join(import.meta.dirname, 'shims', LIVE_AGENT);
/** Largest frame either side sends (file chunks are 256 KiB, output chunks 64 KiB). */
const MAX_FRAME_BYTES = 4 * 1024 * 1024;
const UPLOAD_CHUNK_BYTES = 256 * 1024;
/** File bytes received from the agent and not yet taken by the client; a download further behind is abandoned. */
export const DOWNLOAD_QUEUE_BYTES = 8 * 1024 * 1024;
/** Chunks (256 KiB each in the agent) a download may have in flight before the client takes one. */
const DOWNLOAD_WINDOW = 8;

export interface LiveAttachment {
  readonly input: Writable;
  readonly output: Readable;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stats(): CgroupStats;
  freeze(): Promise<void>;
  thaw(): Promise<void>;
  kill(): void;
  /** A socket connected to 127.0.0.1:port inside the sandbox's netns (docs/adr/0069-live-sandbox-ports.md). */
  connect?(port: number): Promise<net.Socket>;
}

interface Header {
  readonly id: number;
  readonly t: string;
  readonly [key: string]: unknown;
}

type Waiter = (header: Header, body: Buffer) => void;

export function encodeFrame(header: object, body?: Uint8Array): Buffer {
  const h = Buffer.from(JSON.stringify(header), 'utf8');
  const b = body ?? new Uint8Array(0);
  const prefix = Buffer.alloc(8);
  prefix.writeUInt32BE(4 + h.length + b.length, 0);
  prefix.writeUInt32BE(h.length, 4);
  return Buffer.concat([prefix, h, b]);
}

/** Maps the agent's refusal onto an AegisError (the agent's words are shown, never trusted for control). */
function agentError(header: Header, path: string | undefined): AegisError {
  const code = String(header['code'] ?? 'EIO');
  const message = String(header['message'] ?? 'failed').slice(0, 500);
  const where = path === undefined ? '' : ` (${path})`;
  if (
    code === 'EACCES_POLICY' ||
    code === 'ELOOP' ||
    code === 'EACCES' ||
    code === 'EPERM' ||
    code === 'EROFS'
  ) {
    return new AegisError('POLICY_DENIED', `the sandbox refused it${where}: ${message}`, {
      hint: 'files are reachable under /workspace, /tmp and the paths the manifest grants (read grants read-only)',
    });
  }
  if (code === 'ENOENT') return new AegisError('NOT_FOUND', `no such file or directory${where}`);
  if (code === 'EFBIG') {
    return new AegisError('PAYLOAD_TOO_LARGE', `file over the sandbox's size cap${where}: ${message}`);
  }
  if (code === 'EEXIST' || code === 'ENOTEMPTY' || code === 'EISDIR' || code === 'ENOTDIR') {
    return new AegisError('CONFLICT', `${code}${where}: ${message}`);
  }
  return new AegisError('USAGE', `${code}${where}: ${message}`);
}

class LiveChannel implements LiveSession {
  readonly #attachment: LiveAttachment;
  readonly #waiters = new Map<number, Waiter>();
  #nextId = 1;
  #pending: Buffer = Buffer.alloc(0);
  #closed = false;
  readonly closed: Promise<{ code: number | null; signal: string | null }>;

  constructor(attachment: LiveAttachment) {
    this.#attachment = attachment;
    attachment.output.on('data', (chunk: Buffer) => this.#onData(chunk));
    this.closed = attachment.exited.then((exit) => {
      this.#closed = true;
      const gone: Header = { id: 0, t: 'err', code: 'ESHUTDOWN', message: 'the sandbox ended' };
      for (const waiter of [...this.#waiters.values()]) waiter(gone, Buffer.alloc(0));
      this.#waiters.clear();
      return exit;
    });
  }

  #onData(chunk: Buffer): void {
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    while (this.#pending.length >= 8) {
      const rest = this.#pending.readUInt32BE(0);
      const headerLength = this.#pending.readUInt32BE(4);
      if (rest > MAX_FRAME_BYTES || headerLength > rest - 4) {
        this.#protocolError();
        return;
      }
      if (this.#pending.length < 4 + rest) return;
      let header: Header;
      try {
        header = JSON.parse(this.#pending.subarray(8, 8 + headerLength).toString('utf8')) as Header;
      } catch {
        this.#protocolError();
        return;
      }
      const body = this.#pending.subarray(8 + headerLength, 4 + rest);
      this.#pending = this.#pending.subarray(4 + rest);
      if (typeof header !== 'object' || header === null || typeof header.id !== 'number') {
        this.#protocolError();
        return;
      }
      this.#waiters.get(header.id)?.(header, body);
    }
  }

  #protocolError(): void {
    this.#pending = Buffer.alloc(0);
    this.#attachment.kill();
  }

  #send(header: object, body?: Uint8Array): Promise<void> {
    if (this.#closed) throw new AegisError('CONFLICT', 'the sandbox has ended');
    const input = this.#attachment.input;
    if (input.write(encodeFrame(header, body))) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        input.off('drain', done);
        input.off('close', done);
        resolve();
      };
      input.once('drain', done);
      input.once('close', done);
    });
  }

  /** One request, one reply (`ok` or `err`). */
  async #call(op: string, fields: object, path?: string): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    const reply = new Promise<Header>((resolve) => {
      this.#waiters.set(id, (header) => {
        this.#waiters.delete(id);
        resolve(header);
      });
    });
    await this.#send({ id, op, ...fields });
    const header = await reply;
    if (header.t !== 'ok') throw agentError(header, path);
    const result = header['result'];
    return typeof result === 'object' && result !== null ? (result as Record<string, unknown>) : {};
  }

  async init(policy: LivePathPolicy): Promise<void> {
    await this.#call('init', {
      readable: policy.readable,
      writable: policy.writable,
      maxFileBytes: policy.maxFileBytes,
    });
  }

  async exec(spec: LiveCommandSpec, events: LiveCommandEvents): Promise<LiveProcess> {
    const id = this.#nextId++;
    const started = new Promise<number>((resolve, reject) => {
      this.#waiters.set(id, (header, body) => {
        switch (header.t) {
          case 'started':
            resolve(Number(header['pid']));
            return;
          case 'out':
            events.onOutput(header['stream'] === 'stderr' ? 'stderr' : 'stdout', body);
            return;
          case 'exit':
            this.#waiters.delete(id);
            events.onExit(
              typeof header['code'] === 'number' ? header['code'] : null,
              typeof header['signal'] === 'string' ? header['signal'] : null,
            );
            return;
          default: {
            this.#waiters.delete(id);
            const error =
              header['code'] === 'ENOENT'
                ? new AegisError('NOT_FOUND', `no such command or cwd: ${spec.argv[0]} (cwd ${spec.cwd})`)
                : agentError(header, undefined);
            reject(error);
            events.onExit(null, 'ESHUTDOWN');
          }
        }
      });
    });
    await this.#send({ id, op: 'exec', argv: spec.argv, cwd: spec.cwd, env: spec.env, stdin: spec.stdin });
    const pid = await started;
    return {
      pid,
      writeStdin: async (chunk, eof) => {
        for (let offset = 0; offset < chunk.length || offset === 0; offset += UPLOAD_CHUNK_BYTES) {
          const part = chunk.subarray(offset, offset + UPLOAD_CHUNK_BYTES);
          const last = offset + UPLOAD_CHUNK_BYTES >= chunk.length;
          await this.#send({ id: this.#nextId++, op: 'stdin', target: id, eof: eof && last }, part);
          if (chunk.length === 0) break;
        }
      },
      kill: async (signal) => {
        await this.#call('kill', { target: id, signal });
      },
    };
  }

  async openPty(spec: LivePtySpec, events: LivePtyEvents): Promise<LivePty> {
    const id = this.#nextId++;
    const started = new Promise<number>((resolve, reject) => {
      this.#waiters.set(id, (header, body) => {
        switch (header.t) {
          case 'started':
            resolve(Number(header['pid']));
            return;
          case 'out':
            events.onOutput(body);
            return;
          case 'exit':
            this.#waiters.delete(id);
            events.onExit(
              typeof header['code'] === 'number' ? header['code'] : null,
              typeof header['signal'] === 'string' ? header['signal'] : null,
            );
            return;
          default: {
            this.#waiters.delete(id);
            reject(
              header['code'] === 'ENOPTY'
                ? new AegisError('RUNTIME_UNAVAILABLE', 'the sandbox has no python3 to run its PTY helper', {
                    hint: "a PTY needs /usr/bin/python3 on the host (its /usr is the sandbox's): apt-get install python3-minimal",
                  })
                : header['code'] === 'ENOENT'
                  ? new AegisError('NOT_FOUND', `no such cwd: ${spec.cwd}`)
                  : agentError(header, undefined),
            );
            events.onExit(null, 'ESHUTDOWN');
          }
        }
      });
    });
    await this.#send({
      id,
      op: 'exec',
      argv: spec.argv,
      cwd: spec.cwd,
      env: spec.env,
      stdin: true,
      pty: { cols: spec.cols, rows: spec.rows },
    });
    const pid = await started;
    return {
      pid,
      write: async (chunk) => {
        for (let offset = 0; offset < chunk.length; offset += UPLOAD_CHUNK_BYTES) {
          await this.#send(
            { id: this.#nextId++, op: 'stdin', target: id, eof: false },
            chunk.subarray(offset, offset + UPLOAD_CHUNK_BYTES),
          );
        }
      },
      resize: async (cols, rows) => {
        await this.#send({ id: this.#nextId++, op: 'resize', target: id, cols, rows });
      },
      kill: async (signal) => {
        await this.#call('kill', { target: id, signal });
      },
    };
  }

  async connectPort(port: number): Promise<net.Socket> {
    if (this.#closed) throw new AegisError('CONFLICT', 'the sandbox has ended');
    if (!this.#attachment.connect) {
      throw new AegisError('RUNTIME_UNAVAILABLE', 'this runtime cannot reach ports inside its sandboxes');
    }
    return this.#attachment.connect(port);
  }

  async stat(path: string): Promise<LiveFileEntry> {
    return entryOf(await this.#call('stat', { path }, path));
  }

  async list(path: string): Promise<readonly LiveFileEntry[]> {
    const result = await this.#call('list', { path }, path);
    const entries = Array.isArray(result['entries']) ? result['entries'] : [];
    return entries.slice(0, 10_000).map((e) => entryOf(e as Record<string, unknown>));
  }

  async mkdir(path: string): Promise<void> {
    await this.#call('mkdir', { path }, path);
  }

  async move(from: string, to: string): Promise<void> {
    await this.#call('move', { from, to }, from);
  }

  async remove(path: string): Promise<void> {
    await this.#call('remove', { path }, path);
  }

  async writeFile(path: string, chunks: AsyncIterable<Uint8Array>): Promise<{ bytes: number }> {
    const id = this.#nextId++;
    let resolveReply: (header: Header) => void = () => {};
    const arm = () =>
      new Promise<Header>((resolve) => {
        resolveReply = resolve;
      });
    let reply = arm();
    this.#waiters.set(id, (header) => resolveReply(header));
    try {
      await this.#send({ id, op: 'write-open', path });
      const opened = await reply;
      if (opened.t !== 'ok') throw agentError(opened, path);
      reply = arm();
      for await (const chunk of chunks) {
        for (let offset = 0; offset < chunk.length; offset += UPLOAD_CHUNK_BYTES) {
          await this.#send(
            { id: this.#nextId++, op: 'write-chunk', target: id },
            chunk.subarray(offset, offset + UPLOAD_CHUNK_BYTES),
          );
        }
      }
      const endId = this.#nextId++;
      const ended = new Promise<Header>((resolve) => {
        this.#waiters.set(endId, (header) => {
          this.#waiters.delete(endId);
          resolve(header);
        });
      });
      await this.#send({ id: endId, op: 'write-end', target: id });
      const done = await ended;
      if (done.t !== 'ok') throw agentError(done, path);
      const bytes = (done['result'] as Record<string, unknown> | undefined)?.['bytes'];
      return { bytes: typeof bytes === 'number' ? bytes : 0 };
    } finally {
      this.#waiters.delete(id);
    }
  }

  async readFile(
    path: string,
  ): Promise<{ size: number; chunks: AsyncIterable<Uint8Array>; abandoned: Promise<void> }> {
    const id = this.#nextId++;
    const queue: (Header & { body: Buffer })[] = [];
    let queuedBytes = 0;
    let overrun = false;
    let wake: () => void = () => {};
    let abandon: () => void = () => {};
    const abandoned = new Promise<void>((resolve) => (abandon = resolve));
    const waiters = this.#waiters;
    const post = (header: object) => {
      if (!this.#closed) this.#send(header).catch(() => {});
    };
    // Flow control: the agent sends DOWNLOAD_WINDOW chunks, then one more per chunk the client has taken
    // (read-credit) — the pipe is shared with every other operation, so it is never paused for one reader. An
    // agent that ignores its credit is cut off: past DOWNLOAD_QUEUE_BYTES queued the download is abandoned, the
    // waiter goes and further frames are dropped on arrival.
    waiters.set(id, (header, body) => {
      if (overrun) return;
      queuedBytes += body.length;
      if (queuedBytes > DOWNLOAD_QUEUE_BYTES) {
        overrun = true;
        waiters.delete(id);
        queue.length = 0;
        queuedBytes = 0;
        abandon();
      } else queue.push({ ...header, body: Buffer.from(body) });
      wake();
    });
    const next = async (): Promise<Header & { body: Buffer }> => {
      for (;;) {
        if (overrun) {
          throw new AegisError(
            'PAYLOAD_TOO_LARGE',
            `download of ${path} abandoned: the client fell over ${DOWNLOAD_QUEUE_BYTES} bytes behind`,
            { hint: 'read the response as it arrives, or retry from a faster link' },
          );
        }
        const frame = queue.shift();
        if (frame !== undefined) {
          queuedBytes -= frame.body.length;
          if (frame.t === 'data') post({ id: 0, op: 'read-credit', target: id, n: 1 });
          return frame;
        }
        await new Promise<void>((resolve) => (wake = resolve));
      }
    };
    let first: Header & { body: Buffer };
    try {
      await this.#send({ id, op: 'read', path, credit: DOWNLOAD_WINDOW });
      first = await next();
    } catch (error) {
      waiters.delete(id);
      throw error;
    }
    if (first.t !== 'ok') {
      waiters.delete(id);
      throw agentError(first, path);
    }
    const size = Number((first['result'] as Record<string, unknown>)['size'] ?? 0);
    async function* chunks(): AsyncIterable<Uint8Array> {
      let ended = false;
      try {
        for (;;) {
          const frame = await next();
          if (frame.t === 'data') yield frame.body;
          else if (frame.t === 'end') {
            ended = true;
            return;
          } else {
            ended = true;
            throw agentError(frame, path);
          }
        }
      } finally {
        waiters.delete(id);
        if (!ended) post({ id: 0, op: 'read-cancel', target: id }); // the client went away (or fell behind): the agent stops reading the file
      }
    }
    return { size, chunks: chunks(), abandoned };
  }

  usage(): LiveUsage {
    const stats = this.#attachment.stats();
    return {
      cpuUsageNs: stats.cpuUsageNs,
      memoryPeakBytes: stats.memoryPeakBytes,
      oomKills: stats.oomKills,
      memoryBytes: stats.memoryBytes ?? null,
      pids: stats.pids ?? null,
    };
  }

  pause(): Promise<void> {
    return this.#attachment.freeze();
  }

  resume(): Promise<void> {
    return this.#attachment.thaw();
  }

  kill(): void {
    this.#attachment.kill();
  }
}

function entryOf(raw: Record<string, unknown>): LiveFileEntry {
  const type = raw['type'];
  return {
    path: String(raw['path'] ?? ''),
    name: String(raw['name'] ?? ''),
    type: type === 'dir' || type === 'file' || type === 'symlink' ? type : 'other',
    size: Number(raw['size'] ?? 0),
    mode: Number(raw['mode'] ?? 0),
    modifiedAt: new Date(Number(raw['mtimeMs'] ?? 0)).toISOString(),
  };
}

/** Opens the channel of an attached live instance and tells its agent which paths it may touch. */
export async function openLiveSession(
  attachment: LiveAttachment,
  policy: LivePathPolicy,
): Promise<LiveSession> {
  const channel = new LiveChannel(attachment);
  await channel.init(policy);
  return channel;
}
