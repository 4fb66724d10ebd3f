/**
 * The egress proxy's options, its hooks (the TLS upgrade and the secrets hooks) and the event it reports. See
 * proxy.ts for what the proxy does with them.
 */

import { lookup } from 'node:dns/promises';
import type { NetworkDecisionEvent } from '../../app/ports.ts';
import { AegisError } from '../../domain/errors.ts';
import type { NetworkPolicy } from '../../domain/policy/network-rules.ts';

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

/** One plain-HTTP response being scrubbed (see `HttpResponseScrubber`). */
export interface ResponseScrub {
  /** A header name or value, or the status message, as Node's parser decodes them (latin1: one char per byte). */
  text(text: string): string;
  /** The next body bytes (decoded if they had a `Content-Encoding`); returns what may go to the client now. */
  push(chunk: Buffer): Buffer;
  /** The rest of the body, once the upstream's body has ended. */
  end(): Buffer;
}

/**
 * ── RESPONSE SCRUBBING (the secrets hook's response half) ─────────────────────────────────────────────────────
 * When set, every plain-HTTP response — from any host, not only bound ones — passes through a `ResponseScrub`
 * before anything of it reaches the client: the status message, every header name and value (a header whose name
 * changes is dropped), and the body as a stream. Requests go upstream with `Accept-Encoding: identity`; a body that
 * still comes back with a `Content-Encoding` is decoded (gzip, x-gzip, deflate, br; zstd where node:zlib has it)
 * and forwarded decoded, without `Content-Encoding`; any other coding is refused with 502 (the decision event
 * carries `error: "unscrubbable-encoding: <coding>"`). A scrubbed body is sent chunked (`Content-Length` dropped,
 * and digests such as `Content-MD5` with it, since the bytes may change). Responses without a body (HEAD, 1xx,
 * 204, 304) keep their framing headers. Throwing (e.g. the ledger is unavailable) cuts the response.
 * CONNECT and SOCKS5 streams are opaque and never scrubbed. Default: none (responses are piped unchanged).
 */
export interface HttpResponseScrubber {
  /** Called once per response, with the request head as it was sent upstream. */
  begin(head: HttpRequestHead): ResponseScrub;
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
  /** Plain-HTTP response scrubbing (see `HttpResponseScrubber`). @default none: responses are piped unchanged */
  readonly scrubHttpResponse?: HttpResponseScrubber;
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

export interface CompiledProxyOptions {
  readonly execution: string;
  readonly socketPath: string | undefined;
  readonly onDecision: (event: EgressDecisionEvent) => void;
  readonly resolve: Resolver;
  readonly rewriteHttpRequest: HttpRequestRewriter;
  readonly rewriteHttpBody: HttpBodyRewriter | undefined;
  readonly scrubHttpResponse: HttpResponseScrubber | undefined;
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
    scrubHttpResponse: options.scrubHttpResponse,
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
