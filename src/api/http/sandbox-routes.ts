/**
 * REST routes of live sandboxes (app/live-sandboxes.ts): JSON routes, command events over Server-Sent Events
 * (resumable with Last-Event-ID), and raw streaming file upload/download. Registered as one Fastify plugin so its
 * raw-body parser stays local to these routes.
 */
import { once } from 'node:events';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { CommandEvent, LiveSandboxes } from '../../app/live-sandboxes.ts';
import type { Principal } from '../../domain/auth/api-key.ts';
import { AegisError } from '../../domain/errors.ts';
import { parseDuration } from '../../domain/units.ts';
import type { ApiContext } from '../context.ts';
import { errorBody, requestValidationError, type ServerPath, toAegisError } from '../errors.ts';
import { PORT_METHODS, portOf, proxyPortRequest } from './sandbox-ports.ts';
import { CreateSandboxBody, ExecBody, KillBody, MoveBody, PathBody } from './sandbox-schemas.ts';

/** Output gathered for a non-streaming, foreground exec. */
const MAX_COLLECTED_CHARS = 4 * 1024 * 1024;

function parse<T>(schema: z.ZodType<T>, part: 'body' | 'query', value: unknown): T {
  const result = schema.safeParse(value ?? {});
  if (!result.success) throw requestValidationError(part, result.error);
  return result.data;
}

function durationMs(value: string | number | undefined | null, where: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  const parsed = parseDuration(value);
  if (!parsed.ok)
    throw new AegisError('USAGE', `${where}: ${parsed.error}`, { hint: 'e.g. "30s", "10m", "1h"' });
  return parsed.value;
}

export interface SandboxRouteOptions {
  readonly ctx: ApiContext;
  readonly principalOf: (request: FastifyRequest) => Promise<Principal>;
  readonly serverPaths: readonly ServerPath[];
  /** Open streams, aborted when the server closes. */
  readonly streams: Set<AbortController>;
}

export function sandboxRoutes(options: SandboxRouteOptions) {
  const { ctx, principalOf, serverPaths, streams } = options;
  const live = (): LiveSandboxes => {
    if (!ctx.sandboxes) {
      throw new AegisError('RUNTIME_UNAVAILABLE', 'this server does not run live sandboxes');
    }
    return ctx.sandboxes;
  };
  const idOf = (request: FastifyRequest) => (request.params as { id: string }).id;
  const pathQuery = (request: FastifyRequest) => (request.query as { path?: unknown }).path;

  async function sse(
    request: FastifyRequest,
    reply: FastifyReply,
    events: (signal: AbortSignal) => AsyncIterable<CommandEvent>,
  ): Promise<FastifyReply> {
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
    try {
      await write('retry: 1000\n\n');
      for await (const event of events(controller.signal)) {
        if (controller.signal.aborted) break;
        await write(`id: ${event.seq}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
      }
    } catch (error) {
      const body = errorBody(toAegisError(error), serverPaths);
      await write(`event: error\ndata: ${JSON.stringify(body)}\n\n`).catch(() => {});
    } finally {
      streams.delete(controller);
      res.end();
    }
    return reply;
  }

  const lastEventId = (request: FastifyRequest): number => {
    const header = request.headers['last-event-id'];
    if (typeof header === 'string' && /^\d{1,15}$/.test(header)) return Number(header);
    const after = (request.query as { after?: unknown }).after;
    return typeof after === 'string' && /^\d{1,15}$/.test(after) ? Number(after) : 0;
  };

  return async function plugin(app: FastifyInstance): Promise<void> {
    // Raw bodies of these routes are streams (uploads, stdin), not buffers: local to this plugin.
    app.removeContentTypeParser(['application/octet-stream']);
    app.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload));

    app.post('/v1/sandboxes', async (request, reply) => {
      const principal = await principalOf(request);
      const body = parse(CreateSandboxBody, 'body', request.body);
      const timeoutMs = durationMs(body.timeout, 'body.timeout');
      const idleTimeoutMs = durationMs(body.idleTimeout, 'body.idleTimeout');
      const view = await live().create(principal, {
        agent: body.agent,
        ...(timeoutMs === undefined ? {} : { timeoutMs }),
        ...(idleTimeoutMs === undefined ? {} : { idleTimeoutMs }),
        ...(body.metadata ? { metadata: body.metadata } : {}),
        ...(body.env ? { env: body.env } : {}),
      });
      return reply.code(201).send(view);
    });
    app.get('/v1/sandboxes', async (request, reply) => {
      const principal = await principalOf(request);
      return reply.send({ sandboxes: await live().listSandboxes(principal) });
    });
    app.get('/v1/sandboxes/:id', async (request, reply) => {
      const principal = await principalOf(request);
      return reply.send(await live().get(principal, idOf(request)));
    });
    app.delete('/v1/sandboxes/:id', async (request, reply) => {
      const principal = await principalOf(request);
      return reply.send(await live().kill(principal, idOf(request)));
    });

    app.post('/v1/sandboxes/:id/pause', async (request, reply) => {
      const principal = await principalOf(request);
      return reply.send(await live().pause(principal, idOf(request)));
    });
    app.post('/v1/sandboxes/:id/resume', async (request, reply) => {
      const principal = await principalOf(request);
      return reply.send(await live().resume(principal, idOf(request)));
    });

    app.get('/v1/sandboxes/:id/audit', async (request, reply) => {
      const principal = await principalOf(request);
      const view = await live().get(principal, idOf(request)); // read scope, ownership, NOT_FOUND
      return reply.send({ entries: await ctx.audit.list(view.id) });
    });

    // Tools (app/tools.ts): the same gateway, policy and tool.call entry as the agent's own aegis.tools.call.
    // The name is one path segment: `mcp:github%2Fsearch_issues` for an MCP tool.
    app.post('/v1/sandboxes/:id/tools/:name', async (request, reply) => {
      const principal = await principalOf(request);
      const name = (request.params as Record<string, string>)['name'] ?? '';
      const body = (request.body ?? {}) as Record<string, unknown>;
      const result = await live().callTool(principal, idOf(request), name, body['arguments'] ?? {});
      return reply.code(result.outcome === 'denied' ? 403 : 200).send(result);
    });

    // Commands.
    app.post('/v1/sandboxes/:id/commands', async (request, reply) => {
      const principal = await principalOf(request);
      const body = parse(ExecBody, 'body', request.body);
      const timeoutMs = durationMs(body.timeout, 'body.timeout');
      const id = idOf(request);
      const command = await live().exec(principal, id, {
        cmd: body.cmd,
        ...(body.cwd === undefined ? {} : { cwd: body.cwd }),
        ...(body.env === undefined ? {} : { env: body.env }),
        ...(body.stdin === undefined ? {} : { stdin: body.stdin }),
        ...(body.keepStdin === undefined ? {} : { keepStdin: body.keepStdin }),
        ...(timeoutMs === undefined ? {} : { timeoutMs }),
      });
      if (body.background) return reply.code(201).send(command);
      if ((request.headers.accept ?? '').includes('text/event-stream')) {
        return sse(request, reply, (signal) =>
          live().commandEvents(principal, id, command.id, { afterSeq: 0, follow: true, signal }),
        );
      }
      const controller = new AbortController();
      request.raw.once('close', () => controller.abort());
      let stdout = '';
      let stderr = '';
      for await (const event of live().commandEvents(principal, id, command.id, {
        afterSeq: 0,
        follow: true,
        signal: controller.signal,
      })) {
        if (event.type === 'stdout' && stdout.length < MAX_COLLECTED_CHARS) stdout += event.data;
        if (event.type === 'stderr' && stderr.length < MAX_COLLECTED_CHARS) stderr += event.data;
      }
      return reply.send({
        command: live().getCommand(principal, id, command.id),
        stdout: stdout.slice(0, MAX_COLLECTED_CHARS),
        stderr: stderr.slice(0, MAX_COLLECTED_CHARS),
      });
    });
    app.get('/v1/sandboxes/:id/commands', async (request, reply) => {
      const principal = await principalOf(request);
      return reply.send({ commands: live().listCommands(principal, idOf(request)) });
    });
    app.get('/v1/sandboxes/:id/commands/:command', async (request, reply) => {
      const principal = await principalOf(request);
      const { command } = request.params as { command: string };
      return reply.send(live().getCommand(principal, idOf(request), command));
    });
    app.get('/v1/sandboxes/:id/commands/:command/events', async (request, reply) => {
      const principal = await principalOf(request);
      const { command } = request.params as { command: string };
      const id = idOf(request);
      live().getCommand(principal, id, command); // NOT_FOUND before the stream opens
      const afterSeq = lastEventId(request);
      const follow = (request.query as { follow?: string }).follow !== 'false';
      return sse(request, reply, (signal) =>
        live().commandEvents(principal, id, command, { afterSeq, follow, signal }),
      );
    });
    app.post('/v1/sandboxes/:id/commands/:command/stdin', async (request, reply) => {
      const principal = await principalOf(request);
      const { command } = request.params as { command: string };
      const eof = (request.query as { eof?: string }).eof === 'true';
      const id = idOf(request);
      const body = request.body;
      if (
        body !== undefined &&
        body !== null &&
        typeof (body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === 'function'
      ) {
        for await (const chunk of body as AsyncIterable<Uint8Array>) {
          await live().writeStdin(principal, id, command, chunk, false);
        }
      }
      await live().writeStdin(principal, id, command, new Uint8Array(0), eof);
      return reply.code(204).send();
    });
    app.post('/v1/sandboxes/:id/commands/:command/kill', async (request, reply) => {
      const principal = await principalOf(request);
      const { command } = request.params as { command: string };
      const body = parse(KillBody, 'body', request.body);
      return reply.send(await live().killCommand(principal, idOf(request), command, body.signal));
    });

    // Files.
    app.put('/v1/sandboxes/:id/files', async (request, reply) => {
      const principal = await principalOf(request);
      const body = request.body as AsyncIterable<Uint8Array> | undefined;
      if (body === undefined || body === null || typeof body[Symbol.asyncIterator] !== 'function') {
        throw new AegisError(
          'USAGE',
          'the body must be the file bytes with Content-Type: application/octet-stream',
        );
      }
      return reply.code(201).send(await live().upload(principal, idOf(request), pathQuery(request), body));
    });
    app.get('/v1/sandboxes/:id/files', async (request, reply) => {
      const principal = await principalOf(request);
      const file = await live().download(principal, idOf(request), pathQuery(request));
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(file.size) });
      try {
        for await (const chunk of file.chunks) {
          // While the client drains, the runtime may abandon the download (it will not queue a whole file for a
          // slow reader): wake up then, so the next pull throws and the response is cut.
          if (!res.write(chunk)) await Promise.race([once(res, 'drain'), once(res, 'close'), file.abandoned]);
          if (res.destroyed) break;
        }
      } catch {
        res.destroy(); // the length promised can't be kept: the client sees a truncated body, not a short file
      } finally {
        res.end();
      }
      return reply;
    });
    app.get('/v1/sandboxes/:id/files/stat', async (request, reply) => {
      const principal = await principalOf(request);
      return reply.send(await live().stat(principal, idOf(request), pathQuery(request)));
    });
    app.get('/v1/sandboxes/:id/files/list', async (request, reply) => {
      const principal = await principalOf(request);
      return reply.send({ entries: await live().list(principal, idOf(request), pathQuery(request)) });
    });
    app.post('/v1/sandboxes/:id/files/mkdir', async (request, reply) => {
      const principal = await principalOf(request);
      const body = parse(PathBody, 'body', request.body);
      await live().mkdir(principal, idOf(request), body.path);
      return reply.code(204).send();
    });
    app.post('/v1/sandboxes/:id/files/move', async (request, reply) => {
      const principal = await principalOf(request);
      const body = parse(MoveBody, 'body', request.body);
      await live().move(principal, idOf(request), body.from, body.to);
      return reply.code(204).send();
    });
    app.delete('/v1/sandboxes/:id/files', async (request, reply) => {
      const principal = await principalOf(request);
      await live().remove(principal, idOf(request), pathQuery(request));
      return reply.code(204).send();
    });

    // The terminal is a WebSocket (sandbox-upgrade.ts takes the Upgrade before routing); a plain GET is told so.
    app.get('/v1/sandboxes/:id/pty', async (request) => {
      await principalOf(request);
      throw new AegisError('USAGE', 'GET /v1/sandboxes/{id}/pty is a WebSocket endpoint', {
        hint: 'connect with a WebSocket client (Upgrade: websocket), or run `aegis sandbox shell ID`',
      });
    });

    // Exposed ports, plain HTTP (WebSocket upgrades: sandbox-upgrade.ts). Bodies pass through unparsed.
    await app.register(async (ports) => {
      ports.removeAllContentTypeParsers();
      ports.addContentTypeParser('*', (_request, _payload, done) => done(null));
      const proxy = async (request: FastifyRequest, reply: FastifyReply) => {
        const principal = await principalOf(request);
        const params = request.params as { id: string; port: string; '*'?: string };
        const port = portOf(params.port);
        const query = request.raw.url?.includes('?')
          ? request.raw.url.slice(request.raw.url.indexOf('?'))
          : '';
        const match = { id: params.id, port, rest: `/${params['*'] ?? ''}${query}` };
        // Refusals (key, owner, unexposed port, nothing listening) answer as errors before anything is sent.
        await proxyPortRequest(live(), principal, match, request.raw, reply.raw, () => reply.hijack());
        return reply;
      };
      for (const url of ['/v1/sandboxes/:id/ports/:port', '/v1/sandboxes/:id/ports/:port/*']) {
        ports.route({ method: [...PORT_METHODS], url, handler: proxy });
      }
    });
  };
}
