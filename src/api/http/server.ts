/**
 * The orchestrator's network face: one Fastify app serving REST (/v1, /openapi.json, /healthz, /readyz, /metrics
 * — the last with the `read` scope)
 * and gRPC / gRPC-Web / Connect (aegis.v1.*) on the same TCP port, and the same app on a unix socket for the local
 * user.
 *
 * One port for HTTP/1.1 and cleartext HTTP/2: Node's h2c server can't fall back to HTTP/1.1, so each connection's
 * first bytes are read — the HTTP/2 preface (`PRI * HTTP/2.0`) goes to an http2 server, anything else to an http
 * server; both call the same Fastify handler. ADR 0011 has the details.
 */
import { once } from 'node:events';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { dirname } from 'node:path';
import { Duplex } from 'node:stream';
import { createContextValues } from '@connectrpc/connect';
import { fastifyConnectPlugin } from '@connectrpc/connect-fastify';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { PrometheusMetrics } from '../../adapters/metrics/prometheus.ts';
import { followLogs } from '../../app/follow-logs.ts';
import { requireScope } from '../../domain/auth/api-key.ts';
import { AegisError } from '../../domain/errors.ts';
import type { ApiContext } from '../context.ts';
import { registerE2b } from '../e2b/index.ts';
import {
  errorBody,
  httpStatusOf,
  requestValidationError,
  retryAfterSeconds,
  type ServerPath,
  toAegisError,
} from '../errors.ts';
import { registerReflection } from '../grpc/reflection.ts';
import { kTransport, registerGrpcServices } from '../grpc/services.ts';
import { registerMcpRoutes } from './mcp-route.ts';
import { buildOpenApi } from './openapi.ts';
import { executionView, ROUTES, type Route } from './routes.ts';
import { routeByHost } from './sandbox-ports.ts';
import { sandboxRoutes } from './sandbox-routes.ts';
import { isSandboxUpgrade, sandboxUpgradeHandler } from './sandbox-upgrade.ts';
import * as S from './schemas.ts';
import { transportOf, unixSockets } from './transport.ts';

export interface HttpApiOptions {
  /** Host-header routing of exposed ports: `<port>-<sandbox id>.<sandboxDomain>` (sandbox-ports.ts). */
  readonly sandboxDomain?: string;
  /** Cap of JSON request bodies. @default 1 MiB */
  readonly jsonBodyLimitBytes?: number;
  /** Cap of bundle uploads (the AgentBundles limit). */
  readonly bundleLimitBytes: number;
  readonly metrics: PrometheusMetrics;
  readonly version: string;
  /** Where to write one line per request and errors. @default stderr, JSON lines */
  readonly log?: (entry: Record<string, unknown>) => void;
  /** SSE heartbeat interval. @default 15 s */
  readonly heartbeatMs?: number;
}

export interface ListenOptions {
  readonly host: string;
  readonly port: number;
  /** Unix socket path (created 0600; its directory 0700 when we create it). */
  readonly socketPath?: string;
}

export interface RunningApi {
  readonly app: FastifyInstance;
  /** `http://127.0.0.1:8088` */
  readonly url: string;
  readonly port: number;
  readonly socketPath: string | undefined;
  /** Stops listening, ends open streams, closes connections. */
  close(): Promise<void>;
}

/** The transport of a request, h1 or h2: unix sockets and unix h2 sessions are marked on accept. */
function requestTransport(raw: FastifyRequest['raw']): 'tcp' | 'unix' {
  const stream = (raw as { stream?: { session?: object } }).stream;
  if (stream?.session !== undefined) return transportOf(stream.session);
  return transportOf(raw.socket);
}

/** A Duplex over a socket whose first chunk was already read (http2 reads the native handle otherwise). */
function replaySocket(socket: net.Socket, first: Buffer): Duplex {
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk, encoding, callback) {
      socket.write(chunk, encoding, callback);
    },
    final(callback) {
      socket.end(callback);
    },
    destroy(error, callback) {
      socket.destroy(error ?? undefined);
      callback(error);
    },
  });
  duplex.push(first);
  socket.on('data', (chunk) => {
    if (!duplex.push(chunk)) socket.pause();
  });
  socket.on('end', () => duplex.push(null));
  socket.on('error', (error) => duplex.destroy(error));
  socket.on('close', () => duplex.destroy());
  Object.assign(duplex, {
    remoteAddress: socket.remoteAddress,
    remotePort: socket.remotePort,
    remoteFamily: socket.remoteFamily,
  });
  return duplex;
}

interface Listeners {
  readonly tcp: net.Server;
  readonly unix: net.Server;
  readonly connections: Set<net.Socket>;
  readonly h1: http.Server;
}

function sniffingListeners(
  routed: http.RequestListener,
  route: (request: http.IncomingMessage) => void,
): Listeners {
  // Host-routed ports (--sandbox-domain) are rewritten to their path before anything routes them.
  const handler: http.RequestListener = (request, response) => {
    route(request);
    routed(request, response);
  };
  // WebSocket upgrades of the live-sandbox API only (sandbox-upgrade.ts); any other Upgrade stays a request.
  const h1 = http.createServer(
    {
      shouldUpgradeCallback: (request) => {
        route(request);
        return isSandboxUpgrade(request);
      },
    },
    handler,
  );
  const h2tcp = http2.createServer(
    {},
    handler as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
  );
  const h2unix = http2.createServer(
    {},
    handler as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
  );
  h2unix.on('session', (session) => unixSockets.add(session));
  h1.keepAliveTimeout = 65_000;
  const connections = new Set<net.Socket>();
  const accept = (unix: boolean) => (socket: net.Socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
    if (unix) unixSockets.add(socket);
    socket.once('data', (first: Buffer) => {
      socket.pause();
      if (first.subarray(0, 3).toString('latin1') === 'PRI') {
        (unix ? h2unix : h2tcp).emit('connection', replaySocket(socket, first));
      } else {
        socket.unshift(first);
        h1.emit('connection', socket);
        socket.resume();
      }
    });
  };
  return { tcp: net.createServer(accept(false)), unix: net.createServer(accept(true)), connections, h1 };
}

/** Reads and drops what is left of a request body, up to `maxBytes` or 5 s; then gives up (the socket closes). */
function discardBody(raw: FastifyRequest['raw'], maxBytes: number): Promise<void> {
  if (raw.complete || raw.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    let seen = 0;
    const done = () => {
      clearTimeout(timer);
      raw.off('data', onData);
      resolve();
    };
    const onData = (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > maxBytes) done();
    };
    const timer = setTimeout(done, 5000);
    raw.on('data', onData);
    raw.once('end', done);
    raw.once('error', done);
    raw.resume();
  });
}

function sendError(reply: FastifyReply, error: AegisError, serverPaths: readonly ServerPath[]): FastifyReply {
  const retry = retryAfterSeconds(error);
  if (retry !== undefined) void reply.header('retry-after', String(retry));
  return reply.code(httpStatusOf(error)).type('application/json').send(errorBody(error, serverPaths));
}

/** Maps Fastify's own errors (body parsing, limits, media types) onto AegisErrors. */
function fastifyErrorToAegis(error: unknown): AegisError {
  const code = (error as { code?: string }).code;
  const message = (error as Error).message;
  switch (code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AegisError('PAYLOAD_TOO_LARGE', 'the request body is over its size cap', {
        hint: 'JSON bodies are capped at 1 MiB; bundles at the server bundle cap (see GET /openapi.json)',
      });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AegisError('UNSUPPORTED_MEDIA_TYPE', `unsupported Content-Type: ${message}`, {
        hint: 'send JSON bodies as application/json and bundles as application/gzip',
      });
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AegisError('USAGE', 'the JSON body is empty', { hint: 'send a JSON object, e.g. {}' });
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new AegisError('USAGE', 'Content-Length does not match the body');
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new AegisError('USAGE', 'a path parameter of the URL is longer than 100 characters', {
        hint: 'names and ids are at most 100 characters; GET /openapi.json lists the API',
      });
    case 'FST_ERR_BAD_URL':
      return new AegisError('USAGE', 'the URL is malformed (bad percent-encoding?)', {
        hint: 'percent-encode path parameters as UTF-8',
      });
    default:
      break;
  }
  if (error instanceof SyntaxError || code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
    return new AegisError('USAGE', `the body is not valid JSON: ${message}`, {
      problems: [{ path: 'body', message }],
      hint: 'send a JSON object with Content-Type: application/json',
    });
  }
  return toAegisError(error);
}

/** application/json, with or without parameters (charset); Fastify also parses text/plain, which JSON routes refuse. */
function isJsonMediaType(contentType: string | undefined): boolean {
  return contentType?.split(';')[0]?.trim().toLowerCase() === 'application/json';
}

function parsePart(part: 'params' | 'query' | 'body', schema: Route['params'], value: unknown): unknown {
  if (schema === undefined) return value;
  const result = schema.safeParse(value ?? (part === 'body' ? undefined : {}));
  if (!result.success) throw requestValidationError(part, result.error);
  return result.data;
}

export async function buildHttpApi(
  ctx: ApiContext,
  options: HttpApiOptions,
): Promise<{ app: FastifyInstance; listeners: Listeners }> {
  const log = options.log ?? ((entry) => process.stderr.write(`${JSON.stringify(entry)}\n`));
  const serverPaths = ctx.serverPaths ?? [];
  let listeners: Listeners | undefined;
  const app = Fastify({
    logger: false,
    bodyLimit: options.jsonBodyLimitBytes ?? 1024 * 1024,
    return503OnClosing: true,
    // The router's own refusals (a path parameter over maxParamLength, a malformed URL) answer in our error format,
    // bounded like every other error, instead of Fastify's default that echoes the whole URL.
    frameworkErrors: (error, _request, reply) => {
      void sendError(reply, fastifyErrorToAegis(error), serverPaths);
    },
    serverFactory: (handler) => {
      listeners = sniffingListeners(handler, routeByHost(options.sandboxDomain));
      return listeners.tcp as unknown as http.Server;
    },
  });
  const streams = new Set<AbortController>();
  app.addHook('onClose', async () => {
    for (const controller of streams) controller.abort();
  });

  app.addContentTypeParser(
    ['application/gzip', 'application/x-gzip', 'application/octet-stream'],
    { parseAs: 'buffer', bodyLimit: options.bundleLimitBytes },
    (_request, body, done) => done(null, body),
  );

  app.setErrorHandler(async (error, request, reply) => {
    const aegis = fastifyErrorToAegis(error);
    // A client still sending an oversized body would see its write fail (EPIPE) instead of our 413: read and
    // discard a bounded amount first, so it gets the answer.
    if (aegis.code === 'PAYLOAD_TOO_LARGE') await discardBody(request.raw, 16 * 1024 * 1024);
    if (aegis.code === 'INTERNAL') {
      log({
        level: 'error',
        msg: 'request failed',
        method: request.method,
        url: request.url,
        error: String((error as Error).stack ?? error),
      });
    }
    return sendError(reply, aegis, serverPaths);
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(
      reply,
      new AegisError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`, {
        hint: 'GET /openapi.json lists the API',
      }),
      serverPaths,
    ),
  );
  app.addHook('onResponse', async (request, reply) => {
    options.metrics.httpRequest(request.method, request.routeOptions.url ?? 'unmatched', reply.statusCode);
  });

  const principalOf = (request: FastifyRequest) =>
    ctx.gate.admit({
      transport: requestTransport(request.raw),
      authorization: request.headers.authorization,
    });

  const signalOf = (request: FastifyRequest) => {
    const controller = new AbortController();
    request.raw.once('close', () => controller.abort());
    return controller;
  };

  registerMcpRoutes(app, ctx, { principalOf, version: options.version, log });

  for (const route of ROUTES) {
    if (route.streaming) continue;
    const bundle = route.body === 'bundle';
    app.route({
      method: route.method,
      url: route.path,
      ...(bundle ? { bodyLimit: options.bundleLimitBytes } : {}),
      handler: async (request, reply) => {
        const principal = await principalOf(request);
        const params = parsePart('params', route.params, request.params) as Record<string, string>;
        const query = parsePart('query', route.query, request.query) as Record<string, unknown>;
        let body: unknown = request.body;
        if (bundle) {
          if (!(body instanceof Uint8Array)) {
            throw new AegisError(
              'UNSUPPORTED_MEDIA_TYPE',
              `the body must be the bundle bytes with Content-Type: application/gzip, got ${request.headers['content-type'] ?? 'none'}`,
              {
                hint: 'the CLI does this for you: aegis deploy path/to/agent.yaml',
              },
            );
          }
        } else if (route.body !== undefined) {
          if (body !== undefined && !isJsonMediaType(request.headers['content-type'])) {
            throw new AegisError(
              'UNSUPPORTED_MEDIA_TYPE',
              `${route.method} ${route.path} takes a JSON body, got Content-Type: ${request.headers['content-type']}`,
              { hint: 'send a JSON object with Content-Type: application/json' },
            );
          }
          body = parsePart('body', route.body, body ?? (route.method === 'POST' ? {} : undefined));
        }
        const controller = signalOf(request);
        const result = await route.handler(ctx, {
          principal,
          params,
          query,
          body,
          headers: request.headers,
          signal: controller.signal,
        });
        for (const [name, value] of Object.entries(result.headers ?? {})) void reply.header(name, value);
        reply.code(result.status);
        return result.body === undefined ? reply.send() : reply.send(result.body);
      },
    });
  }

  // Logs: paged JSON, or Server-Sent Events when following.
  app.get('/v1/executions/:id/logs', async (request, reply) => {
    const principal = await principalOf(request);
    const { id } = parsePart('params', S.ExecutionId, request.params) as { id: string };
    const query = parsePart('query', S.LogsQuery, request.query) as {
      after?: number;
      limit?: number;
      follow?: string;
    };
    await ctx.executions.get(principal, id); // read scope + NOT_FOUND
    const lastEventId = request.headers['last-event-id'];
    const resumeAt =
      typeof lastEventId === 'string' && /^\d+$/.test(lastEventId) ? Number(lastEventId) : undefined;
    const afterSeq = resumeAt ?? query.after ?? 0;
    const wantsStream =
      query.follow === 'true' ||
      query.follow === '1' ||
      (request.headers.accept ?? '').includes('text/event-stream');
    if (!wantsStream) {
      const lines = await ctx.store.readLogs(id, { afterSeq, limit: query.limit ?? 1000 });
      const record = await ctx.executions.get(principal, id);
      return reply.send({ lines, status: record.status, nextAfter: lines.at(-1)?.seq ?? afterSeq });
    }
    const controller = new AbortController();
    streams.add(controller);
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no',
    });
    const write = async (text: string) => {
      if (!res.write(text)) await Promise.race([once(res, 'drain'), once(res, 'close')]);
    };
    request.raw.once('close', () => controller.abort());
    res.once('close', () => controller.abort());
    const heartbeat = setInterval(
      () => void write(': ping\n\n').catch(() => {}),
      options.heartbeatMs ?? 15_000,
    );
    try {
      await write('retry: 1000\n\n');
      for await (const item of followLogs(ctx, id, { afterSeq, follow: true, signal: controller.signal })) {
        if (controller.signal.aborted) break;
        if (item.type === 'line') {
          await write(`id: ${item.line.seq}\nevent: log\ndata: ${JSON.stringify(item.line)}\n\n`);
        } else {
          await write(`event: end\ndata: ${JSON.stringify(executionView(item.execution))}\n\n`);
        }
      }
    } catch (error) {
      const aegis = toAegisError(error);
      await write(`event: error\ndata: ${JSON.stringify(errorBody(aegis, serverPaths))}\n\n`).catch(() => {});
    } finally {
      clearInterval(heartbeat);
      streams.delete(controller);
      res.end();
    }
    return reply;
  });

  await app.register(sandboxRoutes({ ctx, principalOf, serverPaths, streams }));
  listeners?.h1.on('upgrade', sandboxUpgradeHandler({ ctx, serverPaths, log }));
  await registerE2b(app, ctx, requestTransport); // E2B-compatible API under /e2b (docs/E2B.md)

  const openapi = buildOpenApi({ version: options.version });
  app.get('/openapi.json', async (_request, reply) => reply.send(openapi));
  app.get('/healthz', async (_request, reply) => reply.send({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    if (!ctx.ready()) {
      return reply.code(503).send({ status: ctx.executions.stats().accepting ? 'starting' : 'draining' });
    }
    return reply.send({ status: 'ok' });
  });
  // Metrics describe the node's load and every agent's traffic: they need the `read` scope like the rest of the
  // API (Prometheus sends a key with `authorization: {credentials_file: …}`); only /healthz and /readyz are open.
  app.get('/metrics', async (request, reply) => {
    requireScope(await principalOf(request), 'read', 'reading metrics');
    return reply.type(options.metrics.contentType()).send(await options.metrics.text());
  });

  await app.register(fastifyConnectPlugin, {
    routes: (router) => {
      registerGrpcServices(router, ctx);
      registerReflection(router);
    },
    readMaxBytes: options.bundleLimitBytes + 64 * 1024,
    contextValues: (request: FastifyRequest) =>
      createContextValues().set(kTransport, requestTransport(request.raw)),
  });
  await app.ready();
  if (listeners === undefined) throw new AegisError('INTERNAL', 'the HTTP server factory did not run');
  return { app, listeners };
}

export async function listenHttpApi(
  ctx: ApiContext,
  options: HttpApiOptions,
  listen: ListenOptions,
): Promise<RunningApi> {
  const { app, listeners } = await buildHttpApi(ctx, options);
  await app.listen({ host: listen.host, port: listen.port });
  const address = listeners.tcp.address() as net.AddressInfo;
  if (listen.socketPath !== undefined) {
    const dir = dirname(listen.socketPath);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    rmSync(listen.socketPath, { force: true });
    // Created with a umask so the socket is never reachable by others, even for an instant.
    const previous = process.umask(0o177);
    try {
      listeners.unix.listen(listen.socketPath);
      await once(listeners.unix, 'listening');
    } finally {
      process.umask(previous);
    }
    chmodSync(listen.socketPath, 0o600);
  }
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    app,
    url: `http://${host}:${address.port}`,
    port: address.port,
    socketPath: listen.socketPath,
    async close() {
      listeners.unix.close();
      const closing = app.close();
      // Idle keep-alive and finished streams would hold close() open: end them after a short grace.
      const timer = setTimeout(() => {
        for (const socket of listeners.connections) socket.destroy();
      }, 2000);
      await closing;
      clearTimeout(timer);
      for (const socket of listeners.connections) socket.destroy();
      if (listen.socketPath !== undefined) rmSync(listen.socketPath, { force: true });
    },
  };
}
