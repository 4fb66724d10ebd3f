/**
 * The egress proxy's plain-HTTP forward proxying: an absolute-form request is decided on its authority (after the
 * TLS upgrade hook chose the upstream port), rewritten by the secrets hooks, and sent upstream in origin-form on its
 * own connection (`Connection: close`), so a keep-alive client connection never carries a request to a host other
 * than the one it was checked for.
 */

import http from 'node:http';
import type net from 'node:net';
import { formatIp } from '../../domain/policy/ip.ts';
import { formatHostPort, parseHost, violationMessage } from '../../domain/policy/network-rules.ts';
import { type Attempt, errorCode, malformed, type ProxyCore, pseudoDecision } from './core.ts';
import { type HttpRequestHead, MAX_BUFFERED_BODY_BYTES, type ResponseScrub } from './options.ts';
import { forwardScrubbed } from './response-scrub.ts';
import { parseHttpTarget } from './target.ts';

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

export async function handleHttpRequest(
  core: ProxyCore,
  attempt: Attempt,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
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
    core.finish(attempt);
    return;
  }
  // ── TLS UPGRADE: see HttpTlsUpgrade. The policy is evaluated against the upstream host:port. ──
  let upgrade = false;
  let upstreamPort = target.port;
  const upgradeHook = core.options.upgradeHttpToTls;
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
      attempt.decision = pseudoDecision('tls-upgrade', 'the proxy failed deciding whether to upgrade to TLS');
      attempt.error = `rewrite-failed: ${errorCode(error)}`;
      respond(502, `network: request to ${attempt.requested} refused by the proxy: ${errorCode(error)}`);
      core.finish(attempt);
      return;
    }
    if (upgrade) upstreamPort = port;
  }
  await core.decide(attempt, target.host, upstreamPort);
  const decision = attempt.decision!;
  if (core.closing || decision.verdict === 'deny') {
    if (core.closing) attempt.error = 'proxy-closed';
    else {
      const status = decision.basis === 'malformed' ? 400 : decision.basis === 'unresolvable' ? 502 : 403;
      respond(status, violationMessage(decision, { host: attempt.host ?? target.host, port: upstreamPort }), {
        'X-Aegis-Rule': decision.rule,
      });
    }
    core.finish(attempt);
    return;
  }

  const scrubber = core.options.scrubHttpResponse;
  const headers = endToEndHeaders(req.rawHeaders).filter(
    ([name]) =>
      name.toLowerCase() !== 'host' && !(scrubber !== undefined && name.toLowerCase() === 'accept-encoding'),
  );
  headers.unshift(['Host', target.authority]);
  // ── RESPONSE SCRUBBING: see HttpResponseScrubber. A body the proxy need not decode is the cheapest to scrub. ──
  if (scrubber !== undefined) headers.push(['Accept-Encoding', 'identity']);
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
    requestHead = await core.options.rewriteHttpRequest(requestHead);
  } catch (error) {
    attempt.error = `rewrite-failed: ${errorCode(error)}`;
    respond(502, `network: request to ${attempt.requested} refused by the proxy: ${errorCode(error)}`);
    core.finish(attempt);
    return;
  }

  // ── SECRETS HOOK (body): see HttpBodyRewriter. Buffered before dialling; otherwise the body streams below. ──
  let body: Buffer | undefined;
  const bodyHook = core.options.rewriteHttpBody;
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
      core.finish(attempt);
      return;
    }
    if (wanted) {
      let raw: Buffer;
      try {
        raw = await readBody(core, req, declared);
      } catch (error) {
        attempt.error = core.closing ? 'proxy-closed' : errorCode(error);
        res.destroy();
        core.finish(attempt);
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
        core.finish(attempt);
        return;
      }
      if (core.closing) {
        attempt.error = 'proxy-closed';
        res.destroy();
        core.finish(attempt);
        return;
      }
    }
  }

  let upstream: net.Socket;
  try {
    upstream = await core.dial(attempt);
  } catch (error) {
    attempt.error = errorCode(error);
    const failure = core.dialFailure(attempt);
    respond(failure.status, failure.message);
    core.finish(attempt);
    return;
  }
  if (upgrade) {
    const raw = upstream;
    try {
      upstream = await core.secure(attempt, raw, attempt.host!);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      attempt.error = `tls: ${errorCode(error)}`;
      respond(
        502,
        `network: TLS to ${attempt.requested} (${formatHostPort(attempt.address ?? '?', attempt.port)}) failed, nothing was sent: ${message}`,
      );
      if (raw.destroyed) core.finish(attempt);
      else raw.once('close', () => core.finish(attempt));
      return;
    }
  }
  // The attempt is reported once the upstream connection closed — and, for a scrubbed response, once its body
  // pipeline settled too, so a decoding or scrubbing error is in the event.
  let unsettled = 1;
  const settle = () => {
    if (--unsettled > 0) return;
    if (core.closing) attempt.error ??= 'proxy-closed';
    core.finish(attempt);
  };
  upstream.once('close', settle);
  if (res.closed || !res.socket || res.socket.destroyed) {
    upstream.destroy();
    return;
  }
  upstream.setTimeout(core.options.idleTimeoutMs, () => {
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
    if (scrubber !== undefined) {
      let scrub: ResponseScrub;
      try {
        scrub = scrubber.begin(requestHead);
      } catch (error) {
        attempt.error = `scrub-failed: ${errorCode(error)}`;
        upstream.destroy();
        respond(502, `network: the response from ${attempt.requested} cannot be checked for secrets`);
        return;
      }
      unsettled++;
      forwardScrubbed({
        onSettled: settle,
        attempt,
        scrub,
        request: requestHead,
        upstreamResponse,
        headers: endToEndHeaders(upstreamResponse.rawHeaders),
        res,
        upstream,
        respond,
      });
      return;
    }
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
function readBody(core: ProxyCore, req: http.IncomingMessage, length: number): Promise<Buffer> {
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
      core.options.idleTimeoutMs,
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
