/**
 * A minimal Docker Engine API client over the daemon's unix socket, on `node:http` (docs/adr/0034-docker-engine-api-
 * over-node-http.md): JSON requests, a streamed request body (image import), and the hijacked attach stream
 * (stdin in, multiplexed stdout/stderr out). Only what the `docker` runtime uses; nothing here knows about agents.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, realpathSync } from 'node:fs';
import http from 'node:http';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AegisError } from '../../../domain/errors.ts';

/** API version pinned: Docker 20.10 speaks 1.41; newer engines still answer it. */
const API = '/v1.41';

export interface EngineAnswer {
  readonly status: number;
  readonly body: unknown;
}

export interface DockerEngineOptions {
  /** Path of the daemon's unix socket. @default /var/run/docker.sock (or DOCKER_HOST's unix:// path) */
  readonly socketPath?: string;
  /** @default 60000 */
  readonly timeoutMs?: number;
}

/**
 * The Engine's socket: AEGIS_DOCKER_HOST, else DOCKER_HOST (unix:// URLs), else the system daemon's
 * /var/run/docker.sock when it exists, else the private engine `npm run setup -- --runtimes docker` starts on a
 * host without systemd (scripts/test-dockerd.sh: /tmp/aegis-test-dockerd-<hash of this checkout>/docker.sock).
 */
export function defaultDockerSocket(env: NodeJS.ProcessEnv = process.env): string {
  const host = env['AEGIS_DOCKER_HOST'] ?? env['DOCKER_HOST'];
  if (host?.startsWith('unix://')) return host.slice('unix://'.length);
  const system = '/var/run/docker.sock';
  if (existsSync(system)) return system;
  const privateSocket = join(checkoutEngineDir(), 'docker.sock');
  return existsSync(privateSocket) ? privateSocket : system;
}

/** scripts/test-dockerd.sh's default DIR for this checkout (the same hash of the checkout's real path). */
export function checkoutEngineDir(): string {
  let checkout = join(import.meta.dirname, '..', '..', '..', '..');
  try {
    checkout = realpathSync(checkout);
  } catch {
    // keep the joined path
  }
  const hash = createHash('sha256').update(checkout).digest('hex').slice(0, 12);
  return `/tmp/aegis-test-dockerd-${hash}`;
}

export class DockerEngine {
  readonly socketPath: string;
  private readonly timeoutMs: number;

  constructor(options: DockerEngineOptions = {}) {
    this.socketPath = options.socketPath ?? defaultDockerSocket();
    this.timeoutMs = options.timeoutMs ?? 60_000;
  }

  private unreachable(error: Error): AegisError {
    return new AegisError(
      'RUNTIME_UNAVAILABLE',
      `the Docker Engine does not answer on ${this.socketPath}: ${error.message}`,
      {
        cause: error,
        hint: 'start dockerd (tests: bash scripts/test-dockerd.sh start) and point AEGIS_DOCKER_HOST=unix://<socket> at it',
      },
    );
  }

  /** One request; `body` is JSON-encoded, or streamed when it is a Readable. */
  request(method: string, path: string, body?: unknown, contentType?: string): Promise<EngineAnswer> {
    return new Promise((resolve, reject) => {
      const streamed = body !== undefined && typeof (body as Readable).pipe === 'function';
      const payload = body === undefined || streamed ? undefined : Buffer.from(JSON.stringify(body));
      const req = http.request(
        {
          socketPath: this.socketPath,
          method,
          path: `${API}${path}`,
          headers: {
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
            ...(streamed ? { 'content-type': contentType ?? 'application/x-tar' } : {}),
          },
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            if ((res.headers['content-type'] ?? '').includes('application/json') && text !== '') {
              try {
                parsed = JSON.parse(text);
              } catch {
                parsed = text; // image import streams several JSON objects: the caller reads the text
              }
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', (error) => reject(this.unreachable(error)));
      if (streamed) (body as Readable).pipe(req);
      else req.end(payload);
    });
  }

  /** GETs `path` into `file` (created 0600, must not exist): a large answer (an image export) never sits in memory. */
  download(path: string, file: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = http.request(
        { socketPath: this.socketPath, method: 'GET', path: `${API}${path}`, timeout: this.timeoutMs },
        (res) => {
          if (res.statusCode !== 200) {
            const chunks: Buffer[] = [];
            res.on('data', (chunk: Buffer) => chunks.push(chunk));
            res.on('end', () =>
              reject(
                new AegisError(
                  'RUNTIME_UNAVAILABLE',
                  `GET ${path}: the Docker Engine answered ${res.statusCode}: ${Buffer.concat(chunks).toString('utf8').trim()}`,
                ),
              ),
            );
            return;
          }
          pipeline(res, createWriteStream(file, { flags: 'wx', mode: 0o600 })).then(resolve, reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', (error) => reject(this.unreachable(error)));
      req.end();
    });
  }

  /** Like `request`, but a status outside 2xx (and not in `accept`) is an AegisError naming the daemon's message. */
  async call(
    method: string,
    path: string,
    body?: unknown,
    options: { readonly accept?: readonly number[]; readonly what?: string } = {},
  ): Promise<EngineAnswer> {
    const answer = await this.request(method, path, body);
    if ((answer.status >= 200 && answer.status < 300) || options.accept?.includes(answer.status))
      return answer;
    throw new AegisError(
      'RUNTIME_UNAVAILABLE',
      `${options.what ?? `${method} ${path}`}: the Docker Engine answered ${answer.status}: ${engineMessage(answer.body)}`,
    );
  }

  async ping(): Promise<boolean> {
    try {
      return (await this.request('GET', '/_ping')).status === 200;
    } catch {
      return false;
    }
  }

  /**
   * Attaches to a created container's stdin, stdout and stderr (before it starts, so nothing is missed): the
   * daemon hijacks the connection (101 UPGRADED); returns the raw socket. Frames are demultiplexed by `demux`.
   */
  attach(id: string): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const req = http.request({
        socketPath: this.socketPath,
        method: 'POST',
        path: `${API}/containers/${id}/attach?stream=1&stdin=1&stdout=1&stderr=1`,
        headers: { connection: 'Upgrade', upgrade: 'tcp' },
      });
      req.on('upgrade', (_res, socket, head) => {
        if (head.length > 0) socket.unshift(head);
        resolve(socket);
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          reject(
            new AegisError(
              'RUNTIME_UNAVAILABLE',
              `attaching to container ${id}: the Docker Engine answered ${res.statusCode}: ${Buffer.concat(chunks).toString('utf8').trim()}`,
            ),
          ),
        );
      });
      req.on('error', (error) => reject(this.unreachable(error)));
      req.end();
    });
  }
}

/** The daemon's `{"message": …}`, or the text it sent. */
export function engineMessage(body: unknown): string {
  if (body !== null && typeof body === 'object' && 'message' in body) {
    return String((body as { message: unknown }).message);
  }
  return String(body).trim() || '(no message)';
}

/**
 * Splits Docker's multiplexed attach stream (non-TTY): frames of an 8-byte header — stream (1 stdout, 2 stderr),
 * three zero bytes, a big-endian u32 length — then the payload. Calls `onData` per payload; resolves at end.
 */
export function demux(
  stream: Readable,
  onData: (which: 'stdout' | 'stderr', chunk: Buffer) => void,
): Promise<void> {
  return new Promise((resolve) => {
    let pending: Buffer = Buffer.alloc(0);
    stream.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 8) {
        const size = pending.readUInt32BE(4);
        if (pending.length < 8 + size) break;
        const which = pending[0] === 2 ? 'stderr' : 'stdout';
        onData(which, pending.subarray(8, 8 + size));
        pending = pending.subarray(8 + size);
      }
    });
    stream.on('end', () => resolve());
    stream.on('close', () => resolve());
    stream.on('error', () => resolve());
  });
}
