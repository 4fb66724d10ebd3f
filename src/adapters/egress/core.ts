/**
 * The egress proxy's shared decision and dial path, used by every protocol (http.ts, connect.ts, socks5-handler.ts):
 * an `Attempt` per connection attempt, the policy decision (`decide`: name first, then every resolved address),
 * dialling exactly the checked address (`dial`), the TLS upgrade's handshake (`secure`), byte tunnels (`tunnel`),
 * and the one `EgressDecisionEvent` each attempt ends with (`finish`).
 */

import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
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
import type { CompiledProxyOptions, EgressDecisionEvent, EgressProtocol } from './options.ts';

export interface Attempt {
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

export function pseudoDecision(rule: string, reason: string): NetworkDecision {
  return { verdict: 'deny', rule, reason, basis: 'malformed' };
}

export function malformed(why: string): NetworkDecision {
  return pseudoDecision('malformed', `malformed: ${why}`);
}

export function errorCode(error: unknown): string {
  if (error && typeof error === 'object' && 'code' in error && typeof error.code === 'string')
    return error.code;
  return error instanceof Error ? error.message : String(error);
}

export function plainResponse(status: number, body: string, extra: Record<string, string> = {}): string {
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
export function endAndClose(socket: net.Socket, data: string | Buffer): void {
  socket.setTimeout(1_000, () => socket.destroy());
  socket.resume();
  socket.end(data);
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

/** State shared by the protocol handlers of one proxy: options, policy, open attempts and upstream sockets. */
export class ProxyCore {
  readonly options: CompiledProxyOptions;
  /** The rules for connections that start from now on. */
  policy: NetworkPolicy;
  /** Set once `close()` was called: no new dials, open ones are cut. */
  closing = false;
  readonly upstreams = new Set<net.Socket>();
  readonly #attempts = new Set<Attempt>();
  #onDrained: (() => void) | undefined;

  constructor(options: CompiledProxyOptions, policy: NetworkPolicy) {
    this.options = options;
    this.policy = policy;
  }

  /** Resolves once every attempt has been reported. */
  drained(): Promise<void> {
    if (this.#attempts.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => (this.#onDrained = resolve));
  }

  begin(protocol: EgressProtocol, requested: string): Attempt {
    const attempt: Attempt = {
      protocol,
      startedAtMs: this.options.now(),
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

  finish(attempt: Attempt): void {
    if (attempt.done) return;
    attempt.done = true;
    this.#attempts.delete(attempt);
    const decision = attempt.decision ?? malformed('request ended before a destination was given');
    const upstream = attempt.upstream;
    const event: EgressDecisionEvent = {
      execution: this.options.execution,
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
      endedAt: new Date(this.options.now()).toISOString(),
    };
    if (this.#attempts.size === 0) this.#onDrained?.();
    try {
      this.options.onDecision(event);
    } catch (error) {
      // A failing audit sink is a bug to surface loudly, not something a connection handler may swallow.
      setImmediate(() => {
        throw error;
      });
    }
  }

  /** Fills host, resolved, address and decision. Never throws. */
  async decide(attempt: Attempt, hostText: string, port: number): Promise<void> {
    attempt.port = port;
    attempt.requested = formatHostPort(hostText, port);
    attempt.host = hostText; // as asked; replaced by the normalised form once it parses
    const host = parseHost(hostText);
    if (!host.ok) {
      attempt.decision = malformed(host.error);
      return;
    }
    const policy = this.policy;
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
        this.options.resolve(name),
        this.options.resolveTimeoutMs,
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
  dial(attempt: Attempt): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      if (this.closing) {
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
      this.upstreams.add(socket);
      socket.once('close', () => this.upstreams.delete(socket));
      const onTimeout = () =>
        socket.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }));
      socket.setTimeout(this.options.connectTimeoutMs);
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
  secure(attempt: Attempt, socket: net.Socket, host: string): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const ca = this.options.tlsCa;
      const secure = tls.connect({
        socket,
        host,
        ...(net.isIP(host) === 0 ? { servername: host } : {}),
        ...(ca !== undefined ? { ca: ca as string | Buffer | (string | Buffer)[] } : {}),
        rejectUnauthorized: true,
        ALPNProtocols: ['http/1.1'],
      });
      attempt.upstream = secure;
      this.upstreams.add(secure);
      secure.once('close', () => {
        this.upstreams.delete(secure);
        socket.destroy();
      });
      const timer = setTimeout(
        () => fail(Object.assign(new Error('TLS handshake timed out'), { code: 'ETIMEDOUT' })),
        this.options.connectTimeoutMs,
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
  tunnel(client: net.Socket, upstream: net.Socket, attempt: Attempt): void {
    const cut = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.setTimeout(this.options.idleTimeoutMs);
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
      if (this.closing) attempt.error ??= 'proxy-closed';
      this.finish(attempt);
    });
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  }

  /** A bug (or a hook failure) while handling a request: cut it and report it as an error, never crash the proxy. */
  internalError(attempt: Attempt, error: unknown, client: net.Socket | null): void {
    attempt.error = `internal: ${error instanceof Error ? error.message : String(error)}`;
    attempt.decision ??= malformed('the proxy failed while handling the request');
    const upstream = attempt.upstream;
    if (upstream && !upstream.destroyed) {
      upstream.once('close', () => this.finish(attempt));
      upstream.destroy();
    } else this.finish(attempt);
    if (client && attempt.protocol !== 'http') client.destroy();
  }

  denyResponse(attempt: Attempt, decision: NetworkDecision): string {
    const status = decision.basis === 'malformed' ? 400 : decision.basis === 'unresolvable' ? 502 : 403;
    const message = violationMessage(decision, {
      host: attempt.host ?? attempt.requested,
      port: attempt.port,
    });
    return plainResponse(status, message, { 'X-Aegis-Rule': decision.rule });
  }

  dialFailure(attempt: Attempt): { status: number; message: string } {
    return {
      status: attempt.error === 'ETIMEDOUT' ? 504 : 502,
      message: `network: connect to ${formatHostPort(attempt.address ?? '?', attempt.port)} (${attempt.requested}) failed: ${attempt.error}`,
    };
  }
}
