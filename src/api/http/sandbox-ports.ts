/**
 * `/v1/sandboxes/{id}/ports/{port}/…` — a live sandbox's exposed port through the server, HTTP and WebSocket
 * (docs/adr/0069-live-sandbox-ports.md). The use-case checks key, owner and `spec.security.network.expose` and
 * hands back a socket connected to 127.0.0.1:port *inside* the sandbox's netns; this file speaks HTTP over it.
 *
 * What the sandbox's server sees: the request with the `/v1/sandboxes/{id}/ports/{port}` prefix removed, without
 * the caller's Authorization header (the rest is the caller's own request and passes), hop-by-hop
 * headers dropped, `Host: 127.0.0.1:port`, and `X-Forwarded-Prefix` / `X-Forwarded-Host` / `X-Forwarded-Proto`.
 * One upstream connection per request (no pooling across callers). Every connection is a `sandbox.port` entry.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { LiveSandboxes } from '../../app/live-sandboxes.ts';
import type { Principal } from '../../domain/auth/api-key.ts';
import { AegisError } from '../../domain/errors.ts';

/** Matches `/v1/sandboxes/{id}/ports/{port}` and what follows. */
export const PORT_PATH = /^\/v1\/sandboxes\/([^/?#]+)\/ports\/([^/?#]+)(\/[^#]*|\?[^#]*)?$/;

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  // The caller's AEGIS key is for AEGIS: it never reaches code in the sandbox.
  'authorization',
]);

/** Requests whose URL `routeByHost` rewrote: the sandbox's server sees them at `/`, with no prefix. */
const hostRouted = new WeakSet<object>();

/** envd's port in E2B's `<port>-<id>.<domain>` Hosts: left to the E2B layer (src/api/e2b/). */
const E2B_ENVD_PORT = 49983;

/**
 * Host-header routing of exposed ports (`aegis server --sandbox-domain D`): a request for Host
 * `<port>-<sandbox id>.D` (the id's `sb_` may be written `sb-`, since `_` is not valid in a hostname) is the request
 * for `/v1/sandboxes/<id>/ports/<port>` + its own path — for dev servers that must live at `/`. Rewrites
 * `request.url` before routing (plain requests and upgrades alike); the key is still required in the
 * Authorization header. Returns the rewriter, or a no-op without a domain.
 */
export function routeByHost(domain: string | undefined): (request: IncomingMessage) => void {
  if (domain === undefined || domain === '') return () => {};
  const suffix = `.${domain.toLowerCase()}`;
  return (request) => {
    if (hostRouted.has(request)) return;
    const raw = request.headers.host ?? (request.headers as Record<string, unknown>)[':authority'];
    if (typeof raw !== 'string') return;
    const host = raw.toLowerCase().replace(/:\d+$/, '');
    if (!host.endsWith(suffix)) return;
    const match = /^(\d{1,5})-(sb[_-][a-z0-9]{1,64})$/.exec(host.slice(0, -suffix.length));
    if (!match || Number(match[1]) === E2B_ENVD_PORT) return;
    const id = `sb_${match[2]!.slice(3)}`;
    const path = request.url?.startsWith('/') ? request.url : `/${request.url ?? ''}`;
    request.url = `/v1/sandboxes/${id}/ports/${match[1]}${path}`;
    hostRouted.add(request);
  };
}

export function portOf(raw: string): number {
  const port = Number(raw);
  if (!/^\d{1,5}$/.test(raw) || port < 1 || port > 65535) {
    throw new AegisError('USAGE', `port ${raw.slice(0, 20)} is not a port number (1-65535)`, {
      problems: [{ path: 'params.port', message: 'not a port' }],
    });
  }
  return port;
}

/** Headers for the sandbox's server: the caller's, minus hop-by-hop and Authorization, plus forwarding info. */
function upstreamHeaders(
  request: IncomingMessage,
  id: string,
  port: number,
): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  const named = new Set(
    String(request.headers.connection ?? '')
      .split(',')
      .map((name) => name.trim().toLowerCase()),
  );
  for (const [name, value] of Object.entries(request.headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name)) continue;
    headers[name] = value;
  }
  headers['host'] = `127.0.0.1:${port}`;
  if (!hostRouted.has(request)) headers['x-forwarded-prefix'] = `/v1/sandboxes/${id}/ports/${port}`;
  if (request.headers.host !== undefined) headers['x-forwarded-host'] = request.headers.host;
  headers['x-forwarded-proto'] = 'http';
  return headers;
}

/** What follows the prefix: always starts with `/`. */
function upstreamPath(rest: string | undefined): string {
  if (rest === undefined || rest === '') return '/';
  return rest.startsWith('?') ? `/${rest}` : rest;
}

/** Methods proxied to a sandbox's port (documented in /openapi.json one by one). */
export const PORT_METHODS = ['GET', 'POST', 'PUT', 'DELETE'] as const;

/**
 * Plain HTTP: one request through a fresh connection into the sandbox. `hijack` is called once the connection is
 * open: from then on this function answers (a refusal before it throws, for the route's error handler).
 */
export async function proxyPortRequest(
  sandboxes: Pick<LiveSandboxes, 'connectPort'>,
  principal: Principal,
  match: { id: string; port: number; rest: string | undefined },
  request: IncomingMessage,
  response: ServerResponse,
  hijack: () => void,
): Promise<void> {
  const path = upstreamPath(match.rest);
  const { socket, finish } = await sandboxes.connectPort(principal, match.id, match.port, {
    method: request.method ?? 'GET',
    path,
    websocket: false,
  });
  hijack();
  const upstreamSocket = socket as unknown as net.Socket;
  await new Promise<void>((resolve) => {
    let status: number | null = null;
    const done = (error?: Error) => {
      finish({ status, ...(error ? { error: error.message } : {}) });
      upstreamSocket.destroy();
      resolve();
    };
    const upstream = http.request({
      method: request.method,
      path,
      headers: { ...upstreamHeaders(request, match.id, match.port), connection: 'close' },
      createConnection: () => upstreamSocket,
    });
    upstream.once('response', (answer) => {
      status = answer.statusCode ?? null;
      const headers: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(answer.headers)) {
        if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
      }
      response.writeHead(answer.statusCode ?? 502, answer.statusMessage, headers);
      answer.pipe(response);
      answer.once('end', () => done());
      answer.once('error', (error) => done(error));
      response.once('close', () => done());
    });
    upstream.once('error', (error) => {
      if (!response.headersSent) {
        response.writeHead(502, { 'content-type': 'application/json' });
        response.end(
          JSON.stringify({
            error: {
              code: 'UNAVAILABLE',
              message: `the sandbox's server on port ${match.port} failed: ${error.message}`,
            },
          }),
        );
      } else response.destroy();
      done(error);
    });
    request.pipe(upstream);
    request.once('error', () => upstream.destroy());
  });
}

/**
 * WebSocket (any Upgrade): the handshake is forwarded as written (prefix stripped, Authorization dropped) and then
 * bytes are spliced both ways — the sandbox's server answers the handshake itself.
 */
export async function proxyPortUpgrade(
  sandboxes: LiveSandboxes,
  principal: Principal,
  match: { id: string; port: number; rest: string | undefined },
  request: IncomingMessage,
  client: Duplex,
  head: Buffer,
): Promise<void> {
  const path = upstreamPath(match.rest);
  const { socket, finish } = await sandboxes.connectPort(principal, match.id, match.port, {
    method: request.method ?? 'GET',
    path,
    websocket: true,
  });
  const upstream = socket as unknown as net.Socket;
  const headers = upstreamHeaders(request, match.id, match.port);
  headers['connection'] = 'Upgrade';
  if (request.headers.upgrade !== undefined) headers['upgrade'] = request.headers.upgrade;
  const lines = [`${request.method} ${path} HTTP/1.1`];
  for (const [name, value] of Object.entries(headers)) {
    for (const one of Array.isArray(value) ? value : [value])
      lines.push(`${name}: ${one.replace(/[\r\n]/g, '')}`);
  }
  let status: number | null = null;
  let first = true;
  upstream.on('data', (chunk: Buffer) => {
    if (first) {
      first = false;
      const line = /^HTTP\/1\.[01] (\d{3})/.exec(chunk.subarray(0, 16).toString('latin1'));
      status = line ? Number(line[1]) : null;
    }
  });
  let ended = false;
  const end = (error?: Error) => {
    if (ended) return;
    ended = true;
    upstream.destroy();
    client.destroy();
    finish({ status, ...(error ? { error: error.message } : {}) });
  };
  upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
  if (head.length > 0) upstream.write(head);
  upstream.pipe(client);
  client.pipe(upstream);
  upstream.resume();
  upstream.once('close', () => end());
  client.once('close', () => end());
  upstream.once('error', (error) => end(error));
  client.once('error', (error) => end(error));
}
