/**
 * HTTP/1.1 Upgrade requests (WebSocket) of the live-sandbox API, taken from the server before routing: the
 * terminal (`GET /v1/sandboxes/{id}/pty`, sandbox-pty.ts) and exposed ports (`/v1/sandboxes/{id}/ports/{port}/…`,
 * sandbox-ports.ts). Authenticated like every route (Authorization header; the unix socket is the local user);
 * a refusal is a plain HTTP answer with the usual JSON error body, and the socket is closed.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { AegisError } from '../../domain/errors.ts';
import type { ApiContext } from '../context.ts';
import { errorBody, httpStatusOf, type ServerPath, toAegisError } from '../errors.ts';
import { PORT_PATH, portOf, proxyPortUpgrade } from './sandbox-ports.ts';
import { servePty } from './sandbox-pty.ts';
import { transportOf } from './transport.ts';

const PTY_PATH = /^\/v1\/sandboxes\/([^/?#]+)\/pty$/;
/** Edge nodes connect here (adapters/runtimes/edge/hub.ts, ADR 0108); they authenticate in the protocol. */
const EDGE_PATH = '/v1/edge/connect';

/** The server's shouldUpgradeCallback: only these paths are upgraded; any other Upgrade is an ordinary request. */
export function isSandboxUpgrade(request: IncomingMessage): boolean {
  const path = (request.url ?? '').split('?')[0] ?? '';
  return PTY_PATH.test(path) || PORT_PATH.test(request.url ?? '') || path === EDGE_PATH;
}
/** Largest message a terminal client may send (keystrokes and pastes). */
const MAX_PTY_MESSAGE_BYTES = 1024 * 1024;

export interface SandboxUpgradeOptions {
  readonly ctx: ApiContext;
  readonly serverPaths: readonly ServerPath[];
  /** Errors that are not the caller's (INTERNAL) go to the server log. */
  readonly log: (entry: Record<string, unknown>) => void;
}

function refuse(socket: Duplex, error: AegisError, serverPaths: readonly ServerPath[]): void {
  if (socket.destroyed) return;
  const status = httpStatusOf(error);
  const body = JSON.stringify(errorBody(error, serverPaths));
  socket.end(
    `HTTP/1.1 ${status} ${status === 404 ? 'Not Found' : 'Error'}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** The `upgrade` listener of the HTTP/1.1 server. */
export function sandboxUpgradeHandler(
  options: SandboxUpgradeOptions,
): (request: IncomingMessage, socket: Duplex, head: Buffer) => void {
  const { ctx, serverPaths, log } = options;
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_PTY_MESSAGE_BYTES,
    perMessageDeflate: false,
  });
  return (request, socket, head) => {
    socket.on('error', () => {});
    void (async () => {
      const url = new URL(request.url ?? '/', 'http://aegis.invalid');
      if (url.pathname === EDGE_PATH) {
        if (ctx.edge === undefined)
          throw new AegisError('RUNTIME_UNAVAILABLE', 'this server takes no edge nodes');
        ctx.edge.handleUpgrade(request, socket, head);
        return;
      }
      const pty = PTY_PATH.exec(url.pathname);
      const port = pty ? null : PORT_PATH.exec(request.url ?? '');
      if (!pty && !port) {
        throw new AegisError('NOT_FOUND', `no WebSocket endpoint ${url.pathname}`, {
          hint: 'WebSockets: GET /v1/sandboxes/{id}/pty and /v1/sandboxes/{id}/ports/{port}/…',
        });
      }
      const principal = await ctx.gate.admit({
        transport: transportOf(socket),
        authorization: request.headers.authorization,
      });
      const sandboxes = ctx.sandboxes;
      if (!sandboxes) throw new AegisError('RUNTIME_UNAVAILABLE', 'this server does not run live sandboxes');
      if (pty) {
        if (request.method !== 'GET' || String(request.headers.upgrade).toLowerCase() !== 'websocket') {
          throw new AegisError('USAGE', 'the terminal is a WebSocket: GET with Upgrade: websocket');
        }
        await servePty(sandboxes, principal, decodeURIComponent(pty[1]!), url.searchParams, {
          wss,
          request,
          socket,
          head,
        });
        return;
      }
      const match = { id: decodeURIComponent(port![1]!), port: portOf(port![2]!), rest: port![3] };
      await proxyPortUpgrade(sandboxes, principal, match, request, socket, head);
    })().catch((error: unknown) => {
      const aegis = toAegisError(error);
      if (aegis.code === 'INTERNAL') {
        log({
          level: 'error',
          msg: 'upgrade failed',
          url: request.url,
          error: String((error as Error)?.stack ?? error),
        });
      }
      refuse(socket, aegis, serverPaths);
    });
  };
}
