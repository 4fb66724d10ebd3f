/**
 * The egress proxy: one per execution, the only way out of a sandbox's network namespace.
 *
 * It listens on a unix socket and speaks three protocols on it, told apart by the first byte: SOCKS5 (0x05;
 * no-auth, CONNECT only), HTTP CONNECT tunnels, and plain-HTTP forward proxying (absolute-form requests, sent
 * upstream in origin-form). For every connection attempt it
 *
 * 1. decides from the name alone when it can (a name no rule could allow is never looked up: no DNS exfiltration);
 * 2. resolves the name itself (injectable `resolve`), checks **every** answer against the policy
 *    (`domain/policy/network-rules.ts`: deny first, special addresses refused unless an IP/CIDR rule names them);
 * 3. dials **exactly** the address it checked — never a second lookup, so DNS rebinding can't swap it;
 * 4. reports one `EgressDecisionEvent` (denied: at once; allowed: when the connection closes, with byte counts).
 *
 * Plain-HTTP requests each get their own upstream connection (`Connection: close`), so a keep-alive client
 * connection never carries a request to a host other than the one it was checked for.
 */

import { lookup } from 'node:dns/promises';
import { chmod, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import type { NetworkDecisionEvent } from '../../app/ports.ts';
import { AegisError } from '../../domain/errors.ts';
import { formatIp, parseIp } from '../../domain/policy/ip.ts';
import {
  evaluate,
  evaluateName,
  evaluateResolved,
  formatHostPort,
  type NetworkDecision,
  type NetworkPolicy,
  parseHost,
  violationMessage,
} from '../../domain/policy/network-rules.ts';
import {
  ADDRESS_TYPE,
  AUTH_NO_ACCEPTABLE,
  AUTH_NONE,
  COMMAND,
  COMMAND_NAMES,
  REPLY,
  reply,
  replyForError,
  SOCKS_VERSION,
  SOCKS4_VERSION,
} from './socks5.ts';
import { parseAuthority, parseHttpTarget } from './target.ts';

export type EgressProtocol = 'http' | 'connect' | 'socks5';

/** Resolves a host name to addresses (any family). Must not connect anywhere. */
export type Resolver = (host: string) => Promise<string[]>;

/**
 * One connection attempt and what became of it — destined for the audit ledger. The fields the use-case layer
 * sees are the port's `NetworkDecisionEvent`; the proxy adds who asked and when.
 */
export interface EgressDecisionEvent extends NetworkDecisionEvent {
  readonly execution: string;
  readonly protocol: EgressProtocol;
  /** ISO-8601. */
  readonly startedAt: string;
  readonly endedAt: string;
}

/** A plain-HTTP request head on its way upstream. */
export interface HttpRequestHead {
  readonly method: string;
  /** The checked destination: the name asked for (or the IP literal) and port. */
  readonly host: string;
  readonly port: number;
  /** Origin-form: `/path?query`. */
  readonly path: string;
  /** In order, duplicates kept; hop-by-hop and `Proxy-*` headers already removed, `Host` set. */
  readonly headers: readonly (readonly [name: string, value: string])[];
  /**
   * True when the proxy sends this request upstream over TLS (the TLS upgrade, see `HttpTlsUpgrade`): the hop to
   * `host:port` is encrypted and the server's certificate is verified for `host` before anything is sent.
   */
  readonly tls?: boolean;
}

/**
 * ── TLS UPGRADE (for the secrets hook) ─────────────────────────────────────────────────────────────────────────
 * Asked for every plain-HTTP request before the policy check, with the destination as it would be upgraded: the
 * normalised host and the *upstream* port (443 when the agent's URL used the default port 80, otherwise the port
 * as given). When it says yes, the proxy evaluates the network policy against that upstream `host:port`, connects
 * to exactly the checked address, performs a TLS handshake verifying the certificate for `host` (SNI = host; system
 * CAs unless `tlsCa`), and only then sends the (rewritten) request, with `head.tls` true. A handshake failure is a
 * 502 and the request — with any injected value — is never sent. Default: never upgrade.
 */
export type HttpTlsUpgrade = (destination: { readonly host: string; readonly port: number }) => boolean;

/**
 * ── SECRETS HOOK ────────────────────────────────────────────────────────────────────────────────────────────
 * Called for every *allowed plain-HTTP* request after the policy check and before its head goes upstream. The
 * secrets step will plug in here: when `head.host` is bound to a secret, replace the placeholder the agent sent
 * (e.g. in `Authorization`) with the real value, so the secret never enters the sandbox. CONNECT and SOCKS5
 * streams are opaque (usually TLS) and never pass through it. Throwing refuses the request with 502. When the
 * request is upgraded to TLS (see HttpTlsUpgrade), `head.port` is the upstream port and `head.tls` is true.
 * Default: the head unchanged.
 */
export type HttpRequestRewriter = (head: HttpRequestHead) => HttpRequestHead | Promise<HttpRequestHead>;

/**
 * The body half of the SECRETS HOOK. For an allowed plain-HTTP request with a `Content-Length` body (no
 * `Transfer-Encoding`), after `rewriteHttpRequest`: when `wants(head)` says yes the proxy buffers the whole body
 * (never more than `MAX_BUFFERED_BODY_BYTES`; the hook's own cap is expressed through `wants`), passes it to
 * `rewrite`, and sends the returned head and body upstream, with `Content-Length` set to the returned body's length.
 * Otherwise — chunked or length-less bodies, bodies over the cap, `wants` false — the body streams upstream
 * unchanged and the hook never sees it. Throwing (from either) refuses the request with 502.
 */
export interface HttpBodyRewriter {
  wants(head: HttpRequestHead): boolean;
  rewrite(
    head: HttpRequestHead,
    body: Buffer,
  ): { head: HttpRequestHead; body: Buffer } | Promise<{ head: HttpRequestHead; body: Buffer }>;
}

/** The proxy never buffers a request body larger than this, whatever `HttpBodyRewriter.wants` says. */
export const MAX_BUFFERED_BODY_BYTES = 16 * 1024 * 1024;

export interface EgressProxyOptions {
  /** The execution this proxy serves; stamped on every event. */
  readonly execution: string;
  /**
   * Unix socket `listen()` listens on. Its directory must exist (the caller creates and protects it). Optional when
   * the proxy only `serve()`s listeners created elsewhere (the sandbox runtime's in-netns socket).
   */
  readonly socketPath?: string;
  readonly policy: NetworkPolicy;
  readonly onDecision: (event: EgressDecisionEvent) => void;
  /** @default dns.lookup(host, {all: true}) — both families, the host's resolver configuration */
  readonly resolve?: Resolver;
  /** Plain-HTTP request head rewriting (the secrets hook). @default identity */
  readonly rewriteHttpRequest?: HttpRequestRewriter;
  /** Plain-HTTP Content-Length body rewriting (the secrets hook's body half). @default none: bodies stream */
  readonly rewriteHttpBody?: HttpBodyRewriter;
  /** Which plain-HTTP requests go upstream over TLS (see `HttpTlsUpgrade`). @default none */
  readonly upgradeHttpToTls?: HttpTlsUpgrade;
  /** Trusted CA certificates (PEM) for upgraded requests. @default the system's CAs (Node's default store) */
  readonly tlsCa?: string | Buffer | readonly (string | Buffer)[];
  /** Concurrent client connections; more are answered with 503 / SOCKS failure. @default 256 */
  readonly maxConnections?: number;
  /** Largest HTTP request head (request line + headers) and SOCKS handshake. @default 65536 (64 KiB) */
  readonly maxHeaderBytes?: number;
  /** Time a client has to say where it wants to go (SOCKS handshake, HTTP request head). @default 10000 */
  readonly handshakeTimeoutMs?: number;
  /** A tunnel or request with no traffic either way for this long is cut. @default 300000 (5 min) */
  readonly idleTimeoutMs?: number;
  /** Connecting to the destination. @default 10000 */
  readonly connectTimeoutMs?: number;
  /** One name resolution. @default 5000 */
  readonly resolveTimeoutMs?: number;
  /** Wall clock, ms since epoch. @default Date.now */
  readonly now?: () => number;
}

interface CompiledProxyOptions {
  readonly execution: string;
  readonly socketPath: string | undefined;
  readonly onDecision: (event: EgressDecisionEvent) => void;
  readonly resolve: Resolver;
  readonly rewriteHttpRequest: HttpRequestRewriter;
  readonly rewriteHttpBody: HttpBodyRewriter | undefined;
  readonly upgradeHttpToTls: HttpTlsUpgrade | undefined;
  readonly tlsCa: string | Buffer | readonly (string | Buffer)[] | undefined;
  readonly maxConnections: number;
  readonly maxHeaderBytes: number;
  readonly handshakeTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly resolveTimeoutMs: number;
  readonly now: () => number;
}

/** The host's resolver: every address of both families, in the resolver's order. */
export const systemResolve: Resolver = async (host) =>
  (await lookup(host, { all: true, order: 'verbatim' })).map((entry) => entry.address);

/** Longest unix socket path Linux accepts (sun_path is 108 bytes including the NUL). */
const MAX_SOCKET_PATH_BYTES = 107;

export function withDefaults(options: EgressProxyOptions): CompiledProxyOptions {
  const positive = (value: number | undefined, fallback: number, name: string): number => {
    const result = value ?? fallback;
    if (!Number.isInteger(result) || result <= 0) {
      throw new AegisError('USAGE', `egress proxy option ${name} must be a positive integer, got ${value}`);
    }
    return result;
  };
  if (options.socketPath !== undefined && Buffer.byteLength(options.socketPath) > MAX_SOCKET_PATH_BYTES) {
    throw new AegisError(
      'INTERNAL',
      `egress proxy socket path is longer than ${MAX_SOCKET_PATH_BYTES} bytes: ${options.socketPath}`,
      { hint: 'use a shorter scratch directory' },
    );
  }
  return {
    execution: options.execution,
    socketPath: options.socketPath,
    onDecision: options.onDecision,
    resolve: options.resolve ?? systemResolve,
    rewriteHttpRequest: options.rewriteHttpRequest ?? ((head) => head),
    rewriteHttpBody: options.rewriteHttpBody,
    upgradeHttpToTls: options.upgradeHttpToTls,
    tlsCa: options.tlsCa,
    maxConnections: positive(options.maxConnections, 256, 'maxConnections'),
    maxHeaderBytes: positive(options.maxHeaderBytes, 64 * 1024, 'maxHeaderBytes'),
    handshakeTimeoutMs: positive(options.handshakeTimeoutMs, 10_000, 'handshakeTimeoutMs'),
    idleTimeoutMs: positive(options.idleTimeoutMs, 300_000, 'idleTimeoutMs'),
    connectTimeoutMs: positive(options.connectTimeoutMs, 10_000, 'connectTimeoutMs'),
    resolveTimeoutMs: positive(options.resolveTimeoutMs, 5_000, 'resolveTimeoutMs'),
    now: options.now ?? Date.now,
  };
}

// ---------------------------------------------------------------------------------------------------------------

interface Attempt {
  readonly protocol: EgressProtocol;
  readonly startedAtMs: number;
  requested: string;
  host: string | null;
  port: number;
  resolved: string[];
  address: string | null;
  decision: NetworkDecision | undefined;
  error: string | undefined;
  upstream: net.Socket | undefined;
  done: boolean;
}

function pseudoDecision(rule: string, reason: string): NetworkDecision {
  return { verdict: 'deny', rule, reason, basis: 'malformed' };
}

function malformed(why: string): NetworkDecision {
  return pseudoDecision('malformed', `malformed: ${why}`);
}

function errorCode(error: unknown): string {
  if (error && typeof error === 'object' && 'code' in error && typeof error.code === 'string')
    return error.code;
  return error instanceof Error ? error.message : String(error);
}

/** Headers that describe one hop, not the request (RFC 9110 §7.6.1), plus the proxy's own. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authorization',
  'proxy-authenticate',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Pairs from a raw header list, without hop-by-hop headers and those the Connection header names. */
function endToEndHeaders(raw: readonly string[]): [string, string][] {
  const pairs: [string, string][] = [];
  for (let index = 0; index + 1 < raw.length; index += 2) pairs.push([raw[index]!, raw[index + 1]!]);
  const named = new Set(
    pairs
      .filter(([name]) => name.toLowerCase() === 'connection')
      .flatMap(([, value]) => value.split(','))
      .map((token) => token.trim().toLowerCase()),
  );
  return pairs.filter(([name]) => !HOP_BY_HOP.has(name.toLowerCase()) && !named.has(name.toLowerCase()));
}

function plainResponse(status: number, body: string, extra: Record<string, string> = {}): string {
  const text = `${body}\n`;
  const headers = {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(text)),
    Connection: 'close',
    ...extra,
  };
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  return `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n${lines.join('')}\r\n${text}`;
}

/**
 * Sends a last message and closes: keeps reading (so unread input can't turn the close into a reset that loses
 * the message), and destroys the socket if the client does not close its side soon.
 */
function endAndClose(socket: net.Socket, data: string | Buffer): void {
  socket.setTimeout(1_000, () => socket.destroy());
  socket.resume();
  socket.end(data);
}

/** Buffers a socket's bytes for a handshake parser; `release` hands back what was read beyond it. */
class ByteReader {
  #buffer = Buffer.alloc(0);
  #waiting: { size: number; resolve: (bytes: Buffer) => void; reject: (error: Error) => void } | undefined;
  #failure: Error | undefined;
  readonly #socket: net.Socket;
  readonly #limit: number;

  constructor(socket: net.Socket, limit: number) {
    this.#socket = socket;
    this.#limit = limit;
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onEnd);
  }

  #onData = (chunk: Buffer): void => {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    // A handshake needs a few hundred bytes; anything beyond the limit waits in the kernel (backpressure) until
    // the tunnel is up, instead of piling up here while the destination is resolved and dialled.
    if (this.#buffer.length > this.#limit) this.#socket.pause();
    this.#drain();
  };

  #onEnd = (): void => this.fail(new Error('connection closed during the SOCKS5 handshake'));

  fail(error: Error): void {
    this.#failure ??= error;
    this.#drain();
  }

  #drain(): void {
    const waiting = this.#waiting;
    if (!waiting) return;
    if (this.#buffer.length >= waiting.size) {
      this.#waiting = undefined;
      const bytes = this.#buffer.subarray(0, waiting.size);
      this.#buffer = this.#buffer.subarray(waiting.size);
      waiting.resolve(bytes);
    } else if (this.#failure) {
      this.#waiting = undefined;
      waiting.reject(this.#failure);
    }
  }

  read(size: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.#waiting = { size, resolve, reject };
      this.#drain();
    });
  }

  release(): Buffer {
    this.#socket.off('data', this.#onData);
    this.#socket.off('end', this.#onEnd);
    this.#socket.off('close', this.#onEnd);
    this.#socket.pause();
    const rest = this.#buffer;
    this.#buffer = Buffer.alloc(0);
    return rest;
  }
}

/** Rejects when `promise` takes longer than `ms`. */
function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(Object.assign(new Error(`${what} timed out`), { code: 'ETIMEDOUT' })),
      ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------------------------

export class EgressProxy {
  readonly #options: CompiledProxyOptions;
  #policy: NetworkPolicy;
  readonly #server: net.Server;
  readonly #http: http.Server;
  readonly #clients = new Set<net.Socket>();
  readonly #upstreams = new Set<net.Socket>();
  readonly #attempts = new Set<Attempt>();
  readonly #served = new Set<net.Server>();
  #onDrained: (() => void) | undefined;
  #closing: Promise<void> | undefined;
  #listening = false;

  constructor(options: EgressProxyOptions) {
    this.#options = withDefaults(options);
    this.#policy = options.policy;
    // allowHalfOpen: a client that half-closes after its request still gets the response through a tunnel.
    this.#server = net.createServer({ allowHalfOpen: true }, (socket) => this.#onConnection(socket));
    this.#http = http.createServer({
      maxHeaderSize: this.#options.maxHeaderBytes,
      // The URL's authority decides the destination; a missing Host header is not an error here.
      requireHostHeader: false,
      headersTimeout: this.#options.handshakeTimeoutMs,
      requestTimeout: 0,
      keepAliveTimeout: 5_000,
      connectionsCheckingInterval: Math.min(1_000, this.#options.handshakeTimeoutMs),
    });
    // This server never listens: connections are handed to it after protocol detection. Node starts the timer that
    // enforces headersTimeout (slow-loris heads) on 'listening', so start it explicitly; close() stops it.
    this.#http.emit('listening');
    this.#http.timeout = this.#options.idleTimeoutMs;
    this.#http.on('request', (req, res) => {
      const attempt = this.#begin('http', String(req.url).slice(0, 512));
      this.#onHttpRequest(attempt, req, res).catch((error: unknown) => {
        this.#internalError(attempt, error, res.socket);
        if (!res.headersSent && res.socket && !res.socket.destroyed) {
          res.shouldKeepAlive = false;
          res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
          res.end('network: internal error in the egress proxy\n');
        } else res.destroy();
      });
    });
    this.#http.on('connect', (req, socket, head) => {
      const attempt = this.#begin('connect', String(req.url).slice(0, 512));
      this.#onConnect(attempt, req, socket as net.Socket, head).catch((error: unknown) => {
        this.#internalError(attempt, error, socket as net.Socket);
      });
    });
    this.#http.on('upgrade', (req, socket) => this.#onUpgrade(req, socket as net.Socket));
    this.#http.on('clientError', (error, socket) => this.#onClientError(error, socket as net.Socket));
  }

  get socketPath(): string | undefined {
    return this.#options.socketPath;
  }

  /** Connections currently open (clients of the proxy). */
  get connections(): number {
    return this.#clients.size;
  }

  /** Starts listening; the socket is made mode 0666 so the unprivileged forwarder can connect. */
  async listen(): Promise<void> {
    if (this.#listening || this.#closing)
      throw new AegisError('INTERNAL', 'egress proxy: listen() called twice');
    const socketPath = this.#options.socketPath;
    if (socketPath === undefined)
      throw new AegisError('INTERNAL', 'egress proxy: listen() without socketPath');
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error) =>
        reject(
          new AegisError('INTERNAL', `egress proxy cannot listen on ${socketPath}: ${errorCode(error)}`, {
            cause: error,
            hint: 'the caller creates a fresh, empty per-execution directory for the socket',
          }),
        );
      this.#server.once('error', onError);
      this.#server.listen(socketPath, () => {
        this.#server.off('error', onError);
        resolve();
      });
    });
    this.#listening = true;
    await chmod(socketPath, 0o666);
  }

  /**
   * Also serves the connections of another listener — e.g. a TCP socket on 127.0.0.1:3128 created inside the
   * sandbox's network namespace and handed to the orchestrator — exactly like those of the unix socket. Create it
   * with `allowHalfOpen: true`. The proxy owns it from now on: `close()` closes it.
   */
  serve(server: net.Server): void {
    if (this.#closing) throw new AegisError('INTERNAL', 'egress proxy: serve() after close()');
    this.#served.add(server);
    server.on('connection', (socket: net.Socket) => this.#onConnection(socket));
  }

  /** Replaces the rules for connections that start from now on; open ones keep the decision they got. */
  setPolicy(policy: NetworkPolicy): void {
    this.#policy = policy;
  }

  /** Stops listening, cuts every open connection (their events are still emitted), removes the socket. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    const closed = this.#listening
      ? new Promise<void>((resolve) => this.#server.close(() => resolve()))
      : Promise.resolve();
    const served = [...this.#served].map(
      (server) =>
        new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve())),
    );
    this.#http.close();
    for (const socket of this.#clients) socket.destroy();
    for (const socket of this.#upstreams) socket.destroy();
    await Promise.all([closed, ...served]);
    if (this.#attempts.size > 0) await new Promise<void>((resolve) => (this.#onDrained = resolve));
    // Only a socket this proxy created: a failed listen() must not remove another proxy's socket.
    if (this.#listening && this.#options.socketPath !== undefined)
      await rm(this.#options.socketPath, { force: true });
  }

  // -------------------------------------------------------------------------------------------------------------
  // Attempts and decisions.

  #begin(protocol: EgressProtocol, requested: string): Attempt {
    const attempt: Attempt = {
      protocol,
      startedAtMs: this.#options.now(),
      requested,
      host: null,
      port: 0,
      resolved: [],
      address: null,
      decision: undefined,
      error: undefined,
      upstream: undefined,
      done: false,
    };
    this.#attempts.add(attempt);
    return attempt;
  }

  #finish(attempt: Attempt): void {
    if (attempt.done) return;
    attempt.done = true;
    this.#attempts.delete(attempt);
    const decision = attempt.decision ?? malformed('request ended before a destination was given');
    const upstream = attempt.upstream;
    const event: EgressDecisionEvent = {
      execution: this.#options.execution,
      requested: attempt.requested,
      host: attempt.host,
      resolved: attempt.resolved,
      address: attempt.address,
      port: attempt.port,
      protocol: attempt.protocol,
      rule: decision.rule,
      verdict: decision.verdict,
      reason: decision.reason,
      message:
        attempt.port === 0
          ? `network: refused ${attempt.protocol} request${attempt.requested ? ` for ${attempt.requested}` : ''} — ${decision.reason}`
          : violationMessage(decision, { host: attempt.host ?? attempt.requested, port: attempt.port }),
      ...(attempt.error !== undefined ? { error: attempt.error } : {}),
      bytesUp: upstream?.bytesWritten ?? 0,
      bytesDown: upstream?.bytesRead ?? 0,
      startedAt: new Date(attempt.startedAtMs).toISOString(),
      endedAt: new Date(this.#options.now()).toISOString(),
    };
    if (this.#attempts.size === 0) this.#onDrained?.();
    try {
      this.#options.onDecision(event);
    } catch (error) {
      // A failing audit sink is a bug to surface loudly, not something a connection handler may swallow.
      setImmediate(() => {
        throw error;
      });
    }
  }

  /** Fills host, resolved, address and decision. Never throws. */
  async #decide(attempt: Attempt, hostText: string, port: number): Promise<void> {
    attempt.port = port;
    attempt.requested = formatHostPort(hostText, port);
    attempt.host = hostText; // as asked; replaced by the normalised form once it parses
    const host = parseHost(hostText);
    if (!host.ok) {
      attempt.decision = malformed(host.error);
      return;
    }
    const policy = this.#policy;
    if (host.kind === 'ip') {
      const address = formatIp(host.ip);
      attempt.host = address;
      attempt.resolved = [address];
      attempt.decision = evaluate(policy, { address, port });
      if (attempt.decision.verdict === 'allow') attempt.address = address;
      return;
    }
    const name = host.name;
    attempt.host = name;
    const early = evaluateName(policy, { host: name, port });
    if (early) {
      attempt.decision = early;
      return;
    }
    let answers: string[];
    try {
      answers = await withTimeout(
        this.#options.resolve(name),
        this.#options.resolveTimeoutMs,
        `resolving ${name}`,
      );
    } catch (error) {
      attempt.decision = {
        verdict: 'deny',
        rule: 'unresolvable',
        basis: 'unresolvable',
        reason: `${name} did not resolve (${errorCode(error)})`,
      };
      return;
    }
    attempt.resolved = answers.map((answer) => {
      const parsed = parseIp(answer);
      return parsed.ok ? formatIp(parsed.ip) : answer;
    });
    const result = evaluateResolved(policy, { host: name, addresses: answers, port });
    attempt.decision = result.decision;
    attempt.address = result.address ?? null;
  }

  /** Connects to the checked address (an IP literal: no lookup happens here). */
  #dial(attempt: Attempt): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      if (this.#closing) {
        reject(Object.assign(new Error('proxy closed'), { code: 'proxy-closed' }));
        return;
      }
      const socket = net.connect({
        host: attempt.address!,
        port: attempt.port,
        allowHalfOpen: true,
        noDelay: true,
      });
      attempt.upstream = socket;
      this.#upstreams.add(socket);
      socket.once('close', () => this.#upstreams.delete(socket));
      const onTimeout = () =>
        socket.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }));
      socket.setTimeout(this.#options.connectTimeoutMs);
      socket.once('timeout', onTimeout);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.setTimeout(0);
        socket.off('timeout', onTimeout);
        socket.off('error', reject);
        resolve(socket);
      });
    });
  }

  /**
   * TLS over a connected upstream socket (the TLS upgrade): verifies the certificate for `host` (SNI unless `host`
   * is an IP literal) and resolves only once the handshake is complete, so nothing is written before that.
   */
  #secure(attempt: Attempt, socket: net.Socket, host: string): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const ca = this.#options.tlsCa;
      const secure = tls.connect({
        socket,
        host,
        ...(net.isIP(host) === 0 ? { servername: host } : {}),
        ...(ca !== undefined ? { ca: ca as string | Buffer | (string | Buffer)[] } : {}),
        rejectUnauthorized: true,
        ALPNProtocols: ['http/1.1'],
      });
      attempt.upstream = secure;
      this.#upstreams.add(secure);
      secure.once('close', () => {
        this.#upstreams.delete(secure);
        socket.destroy();
      });
      const timer = setTimeout(
        () => fail(Object.assign(new Error('TLS handshake timed out'), { code: 'ETIMEDOUT' })),
        this.#options.connectTimeoutMs,
      );
      const fail = (error: Error) => {
        clearTimeout(timer);
        secure.off('secureConnect', onSecure);
        secure.destroy();
        socket.destroy();
        reject(error);
      };
      const onSecure = () => {
        clearTimeout(timer);
        secure.off('error', fail);
        resolve(secure);
      };
      secure.once('error', fail);
      secure.once('secureConnect', onSecure);
    });
  }

  /** Pipes bytes both ways until either side closes, errors or idles out; then reports the attempt. */
  #tunnel(client: net.Socket, upstream: net.Socket, attempt: Attempt): void {
    const cut = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.setTimeout(this.#options.idleTimeoutMs);
      socket.on('timeout', () => {
        attempt.error ??= 'idle-timeout';
        cut();
      });
      socket.on('error', (error) => {
        attempt.error ??= errorCode(error);
        cut();
      });
      socket.on('close', cut);
    }
    upstream.once('close', () => {
      if (this.#closing) attempt.error ??= 'proxy-closed';
      this.#finish(attempt);
    });
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  }

  // -------------------------------------------------------------------------------------------------------------
  // Connections: protocol detection.

  #onConnection(socket: net.Socket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    this.#clients.add(socket);
    socket.once('close', () => this.#clients.delete(socket));
    socket.on('error', () => socket.destroy());
    const overLimit = this.#clients.size > this.#options.maxConnections;
    const onTimeout = () => socket.destroy();
    socket.setTimeout(this.#options.handshakeTimeoutMs);
    socket.once('timeout', onTimeout);
    socket.once('readable', () => {
      const first = socket.read(1) as Buffer | null;
      if (first === null) {
        socket.destroy(); // ended before saying anything: not an attempt
        return;
      }
      socket.off('timeout', onTimeout);
      socket.setTimeout(0);
      socket.unshift(first);
      if (overLimit) this.#refuseOverLimit(socket, first[0]!);
      else if (first[0] === SOCKS_VERSION) void this.#onSocks(socket);
      else if (first[0] === SOCKS4_VERSION) this.#refuseSocks4(socket);
      else this.#http.emit('connection', socket);
    });
  }

  #refuseOverLimit(socket: net.Socket, firstByte: number): void {
    const attempt = this.#begin(firstByte === SOCKS_VERSION ? 'socks5' : 'http', '');
    attempt.decision = pseudoDecision(
      'connection-limit',
      `too many concurrent connections through the egress proxy (limit ${this.#options.maxConnections})`,
    );
    if (firstByte === SOCKS_VERSION) endAndClose(socket, Buffer.from([SOCKS_VERSION, AUTH_NO_ACCEPTABLE]));
    else endAndClose(socket, plainResponse(503, `network: ${attempt.decision.reason}`));
    this.#finish(attempt);
  }

  #refuseSocks4(socket: net.Socket): void {
    const attempt = this.#begin('socks5', '');
    attempt.decision = pseudoDecision('unsupported', 'SOCKS4 is not supported; use SOCKS5 (socks5h://)');
    endAndClose(socket, Buffer.from([0x00, 0x5b, 0, 0, 0, 0, 0, 0]));
    this.#finish(attempt);
  }

  // -------------------------------------------------------------------------------------------------------------
  // SOCKS5.

  async #onSocks(client: net.Socket): Promise<void> {
    const attempt = this.#begin('socks5', '');
    const reader = new ByteReader(client, this.#options.maxHeaderBytes);
    const onTimeout = () =>
      reader.fail(new Error(`no complete SOCKS5 request within ${this.#options.handshakeTimeoutMs} ms`));
    client.setTimeout(this.#options.handshakeTimeoutMs);
    client.on('timeout', onTimeout);
    client.resume();
    const refuse = (code: number, decision: NetworkDecision) => {
      attempt.decision = decision;
      endAndClose(client, reply(code));
      this.#finish(attempt);
    };
    try {
      const greeting = await reader.read(2);
      const methods = await reader.read(greeting[1]!);
      if (!methods.includes(AUTH_NONE)) {
        attempt.decision = malformed(
          'no acceptable SOCKS5 authentication method (only "no authentication" is offered)',
        );
        endAndClose(client, Buffer.from([SOCKS_VERSION, AUTH_NO_ACCEPTABLE]));
        this.#finish(attempt);
        return;
      }
      client.write(Buffer.from([SOCKS_VERSION, AUTH_NONE]));

      const head = await reader.read(4);
      const [version, command, reserved, addressType] = head as unknown as [number, number, number, number];
      if (version !== SOCKS_VERSION || reserved !== 0) {
        refuse(
          REPLY.generalFailure,
          malformed(`bad SOCKS5 request header (version ${version}, reserved ${reserved})`),
        );
        return;
      }
      let host: string;
      if (addressType === ADDRESS_TYPE.ipv4) {
        host = [...(await reader.read(4))].join('.');
      } else if (addressType === ADDRESS_TYPE.ipv6) {
        const bytes = await reader.read(16);
        host = formatIp({
          family: 6,
          value: bytes.reduce((value, byte) => (value << 8n) | BigInt(byte), 0n),
        });
      } else if (addressType === ADDRESS_TYPE.domain) {
        const [length] = await reader.read(1);
        host = (await reader.read(length!)).toString('latin1');
      } else {
        refuse(
          REPLY.addressTypeNotSupported,
          malformed(`SOCKS5 address type ${addressType} is not supported`),
        );
        return;
      }
      const port = (await reader.read(2)).readUInt16BE(0);
      attempt.requested = formatHostPort(host, port);
      attempt.port = port;
      if (command !== COMMAND.connect) {
        attempt.host = host;
        refuse(
          REPLY.commandNotSupported,
          pseudoDecision(
            'unsupported',
            `SOCKS5 ${COMMAND_NAMES[command!] ?? `command ${command}`} is not supported (only CONNECT)`,
          ),
        );
        return;
      }
      if (port === 0) {
        refuse(REPLY.generalFailure, malformed('port 0'));
        return;
      }

      await this.#decide(attempt, host, port);
      if (this.#closing) {
        attempt.error = 'proxy-closed';
        client.destroy();
        this.#finish(attempt);
        return;
      }
      const decision = attempt.decision!;
      if (decision.verdict === 'deny') {
        const code =
          decision.basis === 'unresolvable'
            ? REPLY.hostUnreachable
            : decision.basis === 'malformed'
              ? REPLY.generalFailure
              : REPLY.notAllowedByRuleset;
        refuse(code, decision);
        return;
      }
      let upstream: net.Socket;
      try {
        upstream = await this.#dial(attempt);
      } catch (error) {
        attempt.error = errorCode(error);
        endAndClose(client, reply(replyForError(attempt.error)));
        this.#finish(attempt);
        return;
      }
      client.off('timeout', onTimeout);
      client.setTimeout(0);
      const rest = reader.release();
      if (client.destroyed) {
        upstream.destroy();
        upstream.once('close', () => this.#finish(attempt));
        return;
      }
      client.write(reply(REPLY.succeeded));
      if (rest.length > 0) upstream.write(rest);
      this.#tunnel(client, upstream, attempt);
    } catch (error) {
      attempt.decision ??= malformed(error instanceof Error ? error.message : String(error));
      client.destroy();
      if (attempt.upstream) attempt.upstream.destroy();
      this.#finish(attempt);
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // HTTP: CONNECT tunnels.

  async #onConnect(
    attempt: Attempt,
    req: http.IncomingMessage,
    client: net.Socket,
    head: Buffer,
  ): Promise<void> {
    const target = parseAuthority(req.url ?? '');
    if (!target.ok) {
      attempt.decision = malformed(`CONNECT target ${target.error}`);
      endAndClose(client, plainResponse(400, `network: ${attempt.decision.reason}`));
      this.#finish(attempt);
      return;
    }
    await this.#decide(attempt, target.host, target.port);
    if (this.#closing) {
      attempt.error = 'proxy-closed';
      client.destroy();
      this.#finish(attempt);
      return;
    }
    const decision = attempt.decision!;
    if (decision.verdict === 'deny') {
      endAndClose(client, this.#denyResponse(attempt, decision));
      this.#finish(attempt);
      return;
    }
    let upstream: net.Socket;
    try {
      upstream = await this.#dial(attempt);
    } catch (error) {
      attempt.error = errorCode(error);
      const failure = this.#dialFailure(attempt);
      endAndClose(client, plainResponse(failure.status, failure.message));
      this.#finish(attempt);
      return;
    }
    if (client.destroyed) {
      upstream.destroy();
      upstream.once('close', () => this.#finish(attempt));
      return;
    }
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length > 0) upstream.write(head);
    this.#tunnel(client, upstream, attempt);
  }

  /** A bug (or a hook failure) while handling a request: cut it and report it as an error, never crash the proxy. */
  #internalError(attempt: Attempt, error: unknown, client: net.Socket | null): void {
    attempt.error = `internal: ${error instanceof Error ? error.message : String(error)}`;
    attempt.decision ??= malformed('the proxy failed while handling the request');
    const upstream = attempt.upstream;
    if (upstream && !upstream.destroyed) {
      upstream.once('close', () => this.#finish(attempt));
      upstream.destroy();
    } else this.#finish(attempt);
    if (client && attempt.protocol !== 'http') client.destroy();
  }

  #denyResponse(attempt: Attempt, decision: NetworkDecision): string {
    const status = decision.basis === 'malformed' ? 400 : decision.basis === 'unresolvable' ? 502 : 403;
    const message = violationMessage(decision, {
      host: attempt.host ?? attempt.requested,
      port: attempt.port,
    });
    return plainResponse(status, message, { 'X-Aegis-Rule': decision.rule });
  }

  #dialFailure(attempt: Attempt): { status: number; message: string } {
    return {
      status: attempt.error === 'ETIMEDOUT' ? 504 : 502,
      message: `network: connect to ${formatHostPort(attempt.address ?? '?', attempt.port)} (${attempt.requested}) failed: ${attempt.error}`,
    };
  }

  // -------------------------------------------------------------------------------------------------------------
  // HTTP: plain forward proxying.

  async #onHttpRequest(attempt: Attempt, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const respond = (status: number, body: string, extra: Record<string, string> = {}) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // A request the proxy could not understand ends the connection; a refusal leaves it open for the next one.
      if (status === 400) res.shouldKeepAlive = false;
      res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', ...extra });
      res.end(`${body}\n`);
    };
    const target = parseHttpTarget(req.url ?? '');
    if (!target.ok) {
      attempt.decision = malformed(target.error);
      respond(400, `network: ${attempt.decision.reason}`);
      this.#finish(attempt);
      return;
    }
    // ── TLS UPGRADE: see HttpTlsUpgrade. The policy is evaluated against the upstream host:port. ──
    let upgrade = false;
    let upstreamPort = target.port;
    const upgradeHook = this.#options.upgradeHttpToTls;
    const parsedHost = parseHost(target.host);
    if (upgradeHook && parsedHost.ok) {
      const normalised = parsedHost.kind === 'ip' ? formatIp(parsedHost.ip) : parsedHost.name;
      const port = target.port === 80 ? 443 : target.port;
      try {
        upgrade = upgradeHook({ host: normalised, port }) === true;
      } catch (error) {
        attempt.requested = formatHostPort(target.host, target.port);
        attempt.host = normalised;
        attempt.port = target.port;
        attempt.decision = pseudoDecision(
          'tls-upgrade',
          'the proxy failed deciding whether to upgrade to TLS',
        );
        attempt.error = `rewrite-failed: ${errorCode(error)}`;
        respond(502, `network: request to ${attempt.requested} refused by the proxy: ${errorCode(error)}`);
        this.#finish(attempt);
        return;
      }
      if (upgrade) upstreamPort = port;
    }
    await this.#decide(attempt, target.host, upstreamPort);
    const decision = attempt.decision!;
    if (this.#closing || decision.verdict === 'deny') {
      if (this.#closing) attempt.error = 'proxy-closed';
      else {
        const status = decision.basis === 'malformed' ? 400 : decision.basis === 'unresolvable' ? 502 : 403;
        respond(
          status,
          violationMessage(decision, { host: attempt.host ?? target.host, port: upstreamPort }),
          {
            'X-Aegis-Rule': decision.rule,
          },
        );
      }
      this.#finish(attempt);
      return;
    }

    const headers = endToEndHeaders(req.rawHeaders).filter(([name]) => name.toLowerCase() !== 'host');
    headers.unshift(['Host', target.authority]);
    if (req.headers['transfer-encoding'] !== undefined) headers.push(['Transfer-Encoding', 'chunked']);
    headers.push(['Connection', 'close']);
    let requestHead: HttpRequestHead = {
      method: req.method ?? 'GET',
      host: attempt.host!,
      port: upstreamPort,
      path: target.path,
      headers,
      ...(upgrade ? { tls: true } : {}),
    };
    try {
      // ── SECRETS HOOK: see HttpRequestRewriter. ──
      requestHead = await this.#options.rewriteHttpRequest(requestHead);
    } catch (error) {
      attempt.error = `rewrite-failed: ${errorCode(error)}`;
      respond(502, `network: request to ${attempt.requested} refused by the proxy: ${errorCode(error)}`);
      this.#finish(attempt);
      return;
    }

    // ── SECRETS HOOK (body): see HttpBodyRewriter. Buffered before dialling; otherwise the body streams below. ──
    let body: Buffer | undefined;
    const bodyHook = this.#options.rewriteHttpBody;
    const declared =
      req.headers['transfer-encoding'] === undefined
        ? Number(req.headers['content-length'] ?? 'NaN')
        : Number.NaN;
    if (bodyHook && Number.isSafeInteger(declared) && declared > 0 && declared <= MAX_BUFFERED_BODY_BYTES) {
      let wanted: boolean;
      try {
        wanted = bodyHook.wants(requestHead);
      } catch (error) {
        attempt.error = `rewrite-failed: ${errorCode(error)}`;
        respond(502, `network: request to ${attempt.requested} refused by the proxy: ${errorCode(error)}`);
        this.#finish(attempt);
        return;
      }
      if (wanted) {
        let raw: Buffer;
        try {
          raw = await this.#readBody(req, declared);
        } catch (error) {
          attempt.error = this.#closing ? 'proxy-closed' : errorCode(error);
          res.destroy();
          this.#finish(attempt);
          return;
        }
        try {
          const rewritten = await bodyHook.rewrite(requestHead, raw);
          body = rewritten.body;
          // Whatever the hook returned, the length sent is the length of the body sent (no smuggling by mistake).
          const headers = rewritten.head.headers.filter(([name]) => name.toLowerCase() !== 'content-length');
          headers.push(['Content-Length', String(body.length)]);
          requestHead = { ...rewritten.head, headers };
        } catch (error) {
          attempt.error = `rewrite-failed: ${errorCode(error)}`;
          respond(502, `network: request to ${attempt.requested} refused by the proxy: ${errorCode(error)}`);
          this.#finish(attempt);
          return;
        }
        if (this.#closing) {
          attempt.error = 'proxy-closed';
          res.destroy();
          this.#finish(attempt);
          return;
        }
      }
    }

    let upstream: net.Socket;
    try {
      upstream = await this.#dial(attempt);
    } catch (error) {
      attempt.error = errorCode(error);
      const failure = this.#dialFailure(attempt);
      respond(failure.status, failure.message);
      this.#finish(attempt);
      return;
    }
    if (upgrade) {
      const raw = upstream;
      try {
        upstream = await this.#secure(attempt, raw, attempt.host!);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        attempt.error = `tls: ${errorCode(error)}`;
        respond(
          502,
          `network: TLS to ${attempt.requested} (${formatHostPort(attempt.address ?? '?', attempt.port)}) failed, nothing was sent: ${message}`,
        );
        if (raw.destroyed) this.#finish(attempt);
        else raw.once('close', () => this.#finish(attempt));
        return;
      }
    }
    upstream.once('close', () => {
      if (this.#closing) attempt.error ??= 'proxy-closed';
      this.#finish(attempt);
    });
    if (res.closed || !res.socket || res.socket.destroyed) {
      upstream.destroy();
      return;
    }
    upstream.setTimeout(this.#options.idleTimeoutMs, () => {
      attempt.error ??= 'idle-timeout';
      upstream.destroy();
      res.destroy();
    });

    const upstreamRequest = http.request({
      method: requestHead.method,
      path: requestHead.path,
      headers: requestHead.headers.flat(),
      setHost: false,
      // No agent: with `createConnection` and no agent, the request runs on exactly this socket (no pooling).
      createConnection: () => upstream,
    });
    upstreamRequest.on('response', (upstreamResponse) => {
      try {
        res.writeHead(
          upstreamResponse.statusCode ?? 502,
          upstreamResponse.statusMessage,
          endToEndHeaders(upstreamResponse.rawHeaders).flat(),
        );
      } catch (error) {
        attempt.error = `bad-response: ${errorCode(error)}`;
        upstream.destroy();
        respond(502, `network: ${attempt.requested} sent a response the proxy cannot forward`);
        return;
      }
      upstreamResponse.pipe(res);
    });
    upstreamRequest.on('error', (error) => {
      attempt.error ??= errorCode(error);
      respond(502, `network: request to ${attempt.requested} failed: ${attempt.error}`);
      upstream.destroy();
    });
    // The client went away, or the response is complete: this upstream connection is never reused.
    res.once('close', () => upstream.destroy());
    if (body) upstreamRequest.end(body);
    else req.pipe(upstreamRequest);
  }

  /** A complete Content-Length request body; rejects if the client goes away or goes quiet for the idle timeout. */
  #readBody(req: http.IncomingMessage, length: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let settled = false;
      const fail = (error: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(error);
      };
      const timer = setTimeout(
        () => fail(Object.assign(new Error('idle-timeout'), { code: 'idle-timeout' })),
        this.#options.idleTimeoutMs,
      );
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > length) {
          fail(Object.assign(new Error('body-too-long'), { code: 'body-too-long' }));
          return;
        }
        chunks.push(chunk);
        timer.refresh();
      });
      req.once('end', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(Buffer.concat(chunks, size));
      });
      req.once('error', (error) => fail(error));
      req.once('close', () => fail(Object.assign(new Error('client-closed'), { code: 'client-closed' })));
    });
  }

  #onUpgrade(req: http.IncomingMessage, socket: net.Socket): void {
    const attempt = this.#begin('http', String(req.url).slice(0, 512));
    attempt.decision = pseudoDecision(
      'unsupported',
      'Upgrade (e.g. WebSocket) through plain-HTTP proxying is not supported; tunnel it with CONNECT',
    );
    endAndClose(socket, plainResponse(501, `network: ${attempt.decision.reason}`));
    this.#finish(attempt);
  }

  #onClientError(error: Error, socket: net.Socket): void {
    const code = errorCode(error);
    const known: Record<string, [number, string]> = {
      HPE_HEADER_OVERFLOW: [431, `request head exceeds ${this.#options.maxHeaderBytes} bytes`],
      ERR_HTTP_REQUEST_TIMEOUT: [
        408,
        `no complete request head within ${this.#options.handshakeTimeoutMs} ms`,
      ],
      ERR_HTTP_HEADERS_TIMEOUT: [
        408,
        `no complete request head within ${this.#options.handshakeTimeoutMs} ms`,
      ],
    };
    const [status, why] =
      known[code] ?? (code.startsWith('HPE_') ? [400, `not an HTTP request (${code})`] : [0, '']);
    if (status === 0) {
      socket.destroy();
      return;
    }
    const attempt = this.#begin('http', '');
    attempt.decision = malformed(why);
    if (socket.writable) endAndClose(socket, plainResponse(status, `network: ${attempt.decision.reason}`));
    else socket.destroy();
    this.#finish(attempt);
  }
}
