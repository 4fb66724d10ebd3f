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
 *
 * Modules: options.ts (options, hooks, the event), core.ts (the shared decision and dial path), http.ts (plain-HTTP
 * forwarding), connect.ts (CONNECT tunnels), socks5-handler.ts and socks5.ts (SOCKS5). This file owns the
 * listeners, protocol detection and shutdown.
 */

import { chmod, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { AegisError } from '../../domain/errors.ts';
import type { NetworkPolicy } from '../../domain/policy/network-rules.ts';
import { handleConnect } from './connect.ts';
import { endAndClose, errorCode, malformed, ProxyCore, plainResponse, pseudoDecision } from './core.ts';
import { handleHttpRequest } from './http.ts';
import { type EgressProxyOptions, withDefaults } from './options.ts';
import { AUTH_NO_ACCEPTABLE, SOCKS_VERSION, SOCKS4_VERSION } from './socks5.ts';
import { handleSocks5 } from './socks5-handler.ts';

export {
  type EgressDecisionEvent,
  type EgressProtocol,
  type EgressProxyOptions,
  type HttpBodyRewriter,
  type HttpRequestHead,
  type HttpRequestRewriter,
  type HttpResponseScrubber,
  type HttpTlsUpgrade,
  MAX_BUFFERED_BODY_BYTES,
  type Resolver,
  type ResponseScrub,
  systemResolve,
  withDefaults,
} from './options.ts';

export class EgressProxy {
  readonly #core: ProxyCore;
  readonly #server: net.Server;
  readonly #http: http.Server;
  readonly #clients = new Set<net.Socket>();
  readonly #served = new Set<net.Server>();
  #closing: Promise<void> | undefined;
  #listening = false;

  constructor(options: EgressProxyOptions) {
    const compiled = withDefaults(options);
    this.#core = new ProxyCore(compiled, options.policy);
    // allowHalfOpen: a client that half-closes after its request still gets the response through a tunnel.
    this.#server = net.createServer({ allowHalfOpen: true }, (socket) => this.#onConnection(socket));
    this.#http = http.createServer({
      maxHeaderSize: this.#core.options.maxHeaderBytes,
      // The URL's authority decides the destination; a missing Host header is not an error here.
      requireHostHeader: false,
      headersTimeout: this.#core.options.handshakeTimeoutMs,
      requestTimeout: 0,
      keepAliveTimeout: 5_000,
      connectionsCheckingInterval: Math.min(1_000, this.#core.options.handshakeTimeoutMs),
    });
    // This server never listens: connections are handed to it after protocol detection. Node starts the timer that
    // enforces headersTimeout (slow-loris heads) on 'listening', so start it explicitly; close() stops it.
    this.#http.emit('listening');
    this.#http.timeout = this.#core.options.idleTimeoutMs;
    this.#http.on('request', (req, res) => {
      const attempt = this.#core.begin('http', String(req.url).slice(0, 512));
      handleHttpRequest(this.#core, attempt, req, res).catch((error: unknown) => {
        this.#core.internalError(attempt, error, res.socket);
        if (!res.headersSent && res.socket && !res.socket.destroyed) {
          res.shouldKeepAlive = false;
          res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
          res.end('network: internal error in the egress proxy\n');
        } else res.destroy();
      });
    });
    this.#http.on('connect', (req, socket, head) => {
      const attempt = this.#core.begin('connect', String(req.url).slice(0, 512));
      handleConnect(this.#core, attempt, req, socket as net.Socket, head).catch((error: unknown) => {
        this.#core.internalError(attempt, error, socket as net.Socket);
      });
    });
    this.#http.on('upgrade', (req, socket) => this.#onUpgrade(req, socket as net.Socket));
    this.#http.on('clientError', (error, socket) => this.#onClientError(error, socket as net.Socket));
  }

  get socketPath(): string | undefined {
    return this.#core.options.socketPath;
  }

  /** Connections currently open (clients of the proxy). */
  get connections(): number {
    return this.#clients.size;
  }

  /** Starts listening; the socket is made mode 0666 so the unprivileged forwarder can connect. */
  async listen(): Promise<void> {
    if (this.#listening || this.#closing)
      throw new AegisError('INTERNAL', 'egress proxy: listen() called twice');
    const socketPath = this.#core.options.socketPath;
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
    this.#core.policy = policy;
  }

  /** Stops listening, cuts every open connection (their events are still emitted), removes the socket. */
  close(): Promise<void> {
    this.#core.closing = true;
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
    for (const socket of this.#core.upstreams) socket.destroy();
    await Promise.all([closed, ...served]);
    await this.#core.drained();
    // Only a socket this proxy created: a failed listen() must not remove another proxy's socket.
    if (this.#listening && this.#core.options.socketPath !== undefined)
      await rm(this.#core.options.socketPath, { force: true });
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
    const overLimit = this.#clients.size > this.#core.options.maxConnections;
    const onTimeout = () => socket.destroy();
    socket.setTimeout(this.#core.options.handshakeTimeoutMs);
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
      else if (first[0] === SOCKS_VERSION) void handleSocks5(this.#core, socket);
      else if (first[0] === SOCKS4_VERSION) this.#refuseSocks4(socket);
      else this.#http.emit('connection', socket);
    });
  }

  #refuseOverLimit(socket: net.Socket, firstByte: number): void {
    const attempt = this.#core.begin(firstByte === SOCKS_VERSION ? 'socks5' : 'http', '');
    attempt.decision = pseudoDecision(
      'connection-limit',
      `too many concurrent connections through the egress proxy (limit ${this.#core.options.maxConnections})`,
    );
    if (firstByte === SOCKS_VERSION) endAndClose(socket, Buffer.from([SOCKS_VERSION, AUTH_NO_ACCEPTABLE]));
    else endAndClose(socket, plainResponse(503, `network: ${attempt.decision.reason}`));
    this.#core.finish(attempt);
  }

  #refuseSocks4(socket: net.Socket): void {
    const attempt = this.#core.begin('socks5', '');
    attempt.decision = pseudoDecision('unsupported', 'SOCKS4 is not supported; use SOCKS5 (socks5h://)');
    endAndClose(socket, Buffer.from([0x00, 0x5b, 0, 0, 0, 0, 0, 0]));
    this.#core.finish(attempt);
  }

  #onUpgrade(req: http.IncomingMessage, socket: net.Socket): void {
    const attempt = this.#core.begin('http', String(req.url).slice(0, 512));
    attempt.decision = pseudoDecision(
      'unsupported',
      'Upgrade (e.g. WebSocket) through plain-HTTP proxying is not supported; tunnel it with CONNECT',
    );
    endAndClose(socket, plainResponse(501, `network: ${attempt.decision.reason}`));
    this.#core.finish(attempt);
  }

  #onClientError(error: Error, socket: net.Socket): void {
    const code = errorCode(error);
    const known: Record<string, [number, string]> = {
      HPE_HEADER_OVERFLOW: [431, `request head exceeds ${this.#core.options.maxHeaderBytes} bytes`],
      ERR_HTTP_REQUEST_TIMEOUT: [
        408,
        `no complete request head within ${this.#core.options.handshakeTimeoutMs} ms`,
      ],
      ERR_HTTP_HEADERS_TIMEOUT: [
        408,
        `no complete request head within ${this.#core.options.handshakeTimeoutMs} ms`,
      ],
    };
    const [status, why] =
      known[code] ?? (code.startsWith('HPE_') ? [400, `not an HTTP request (${code})`] : [0, '']);
    if (status === 0) {
      socket.destroy();
      return;
    }
    const attempt = this.#core.begin('http', '');
    attempt.decision = malformed(why);
    if (socket.writable) endAndClose(socket, plainResponse(status, `network: ${attempt.decision.reason}`));
    else socket.destroy();
    this.#core.finish(attempt);
  }
}
