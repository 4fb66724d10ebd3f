/**
 * E2B's data plane, the HTTP half: `GET /files` (download), `POST /files` (upload: multipart form, or the raw bytes
 * with Content-Type application/octet-stream) and `GET /health`, on the LiveSandboxes use-case like the REST file
 * routes (same path checks, caps, ledger entries). Mounted under `/e2b/envd`.
 */
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { LiveSandboxes } from '../../app/live-sandboxes.ts';
import type { Principal } from '../../domain/auth/api-key.ts';
import { AegisError } from '../../domain/errors.ts';
import { sandboxPath } from '../../domain/live-sandbox.ts';
import type { ApiContext } from '../context.ts';
import type { TransportOf } from './index.ts';
import { checkUser, E2bUnsupported, e2bErrorBody, e2bPrincipal, sandboxIdOf } from './shared.ts';

/**
 * A multipart upload is parsed in memory (the web `Request.formData()`), so it is capped well below the file cap;
 * the SDK streams bigger files as application/octet-stream (`useOctetStream: true`, or a stream as data).
 */
export const MAX_MULTIPART_BYTES = 64 * 1024 * 1024;

async function* capped(source: AsyncIterable<Uint8Array>, max: number): AsyncIterable<Uint8Array> {
  let seen = 0;
  for await (const chunk of source) {
    seen += chunk.length;
    if (seen > max) {
      throw new AegisError('PAYLOAD_TOO_LARGE', `a multipart upload over ${max} bytes`, {
        hint: 'send big files as application/octet-stream (files.write(path, data, { useOctetStream: true }))',
      });
    }
    yield chunk;
  }
}

function single(query: unknown, name: string): string | undefined {
  const value = (query as Record<string, unknown> | undefined)?.[name];
  return typeof value === 'string' ? value : undefined;
}

export function e2bFileRoutes(ctx: ApiContext, transportOf: TransportOf) {
  const live = (): LiveSandboxes => {
    if (!ctx.sandboxes)
      throw new AegisError('RUNTIME_UNAVAILABLE', 'this server does not run live sandboxes');
    return ctx.sandboxes;
  };
  const begin = async (request: FastifyRequest) => {
    const principal = await e2bPrincipal(ctx, transportOf(request.raw), request.headers);
    checkUser(request.headers, single(request.query, 'username'));
    return { principal, id: sandboxIdOf(request.headers) };
  };

  /** envd creates a written file's missing parent directories: so does this layer (a `mkdir` in the ledger). */
  const ensureParent = async (principal: Principal, id: string, rawPath: unknown): Promise<void> => {
    const path = sandboxPath(rawPath, 'query.path');
    const parent = path.slice(0, path.lastIndexOf('/'));
    if (parent === '') return;
    const exists = await live()
      .stat(principal, id, parent)
      .then(
        () => true,
        (error: unknown) => {
          if (error instanceof AegisError && error.code === 'NOT_FOUND') return false;
          throw error;
        },
      );
    if (!exists) await live().mkdir(principal, id, parent);
  };

  return async function plugin(app: FastifyInstance): Promise<void> {
    // Upload bodies stay streams, local to this plugin.
    app.removeContentTypeParser(['application/octet-stream']);
    app.addContentTypeParser(['application/octet-stream', 'multipart/form-data'], (_request, payload, done) =>
      done(null, payload),
    );
    app.setErrorHandler(async (error, _request, reply) => {
      if (error instanceof E2bUnsupported) return reply.code(501).send({ code: 501, message: error.message });
      const { status, body } = e2bErrorBody(error, ctx.serverPaths ?? []);
      return reply.code(status).send(body);
    });

    // envd answers 204 while it runs; here: the orchestrator is up (no sandbox named, no key needed).
    app.get('/health', async (_request, reply) => reply.code(204).send());

    app.get('/files', async (request, reply) => {
      const { principal, id } = await begin(request);
      const file = await live().download(principal, id, single(request.query, 'path'));
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(file.size) });
      try {
        for await (const chunk of file.chunks) {
          if (!res.write(chunk)) await Promise.race([once(res, 'drain'), once(res, 'close'), file.abandoned]);
          if (res.destroyed) break;
        }
      } catch {
        res.destroy(); // the promised length can't be kept: a truncated body, never a short file
      } finally {
        res.end();
      }
      return reply;
    });

    app.post('/files', async (request, reply) => {
      const { principal, id } = await begin(request);
      const type = (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
      const raw = request.body as IncomingMessage;
      if (type === 'application/octet-stream') {
        await ensureParent(principal, id, single(request.query, 'path'));
        const written = await live().upload(principal, id, single(request.query, 'path'), raw);
        return reply.send([writeInfo(written.path)]);
      }
      if (type !== 'multipart/form-data') {
        throw new AegisError(
          'UNSUPPORTED_MEDIA_TYPE',
          `POST /files takes multipart/form-data or application/octet-stream, got ${type || 'none'}`,
        );
      }
      const form = await new Request('http://e2b.invalid/files', {
        method: 'POST',
        headers: { 'content-type': String(request.headers['content-type']) },
        body: Readable.toWeb(Readable.from(capped(raw, MAX_MULTIPART_BYTES))) as ReadableStream<Uint8Array>,
        duplex: 'half',
      } as RequestInit)
        .formData()
        .catch((error: unknown) => {
          if (error instanceof AegisError) throw error;
          throw new AegisError('USAGE', `the multipart body could not be read: ${(error as Error).message}`);
        });
      const written: ReturnType<typeof writeInfo>[] = [];
      const queryPath = single(request.query, 'path');
      for (const part of form.getAll('file')) {
        if (typeof part === 'string') throw new AegisError('USAGE', 'a "file" part without a file name');
        const path = queryPath ?? part.name;
        const bytes = new Uint8Array(await part.arrayBuffer());
        await ensureParent(principal, id, path);
        const result = await live().upload(
          principal,
          id,
          path,
          (async function* () {
            yield bytes;
          })(),
        );
        written.push(writeInfo(result.path));
      }
      if (written.length === 0) throw new AegisError('USAGE', 'no "file" part in the multipart body');
      return reply.send(written);
    });
  };
}

function writeInfo(path: string) {
  return { name: path.split('/').at(-1) ?? path, type: 'file', path };
}
