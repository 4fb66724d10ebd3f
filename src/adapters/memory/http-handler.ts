/**
 * Cortex on the in-sandbox API (127.0.0.1:3129 inside each sandbox, same token as the LLM and tool routes):
 *
 *   POST /v1/memory/store    {text, meta?}               → the memory {id, text, meta, createdAt, …}
 *   POST /v1/memory/search   {query, k?, filter?}        → {memories: [{id, text, score, similarity, …}]}
 *   POST /v1/memory/forget   {id}                        → {id, forgotten: true}   (404 when not its own)
 *
 * The scope is the execution's (app/memory-access.ts); a refusal is 403 `{error: {type: 'memory_denied', code:
 * 'memory_denied', message}}` (the SDKs raise MemoryDenied). Any other path goes to `next`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { InSandboxMemory } from '../../app/memory-access.ts';
import type { InSandboxHandler } from '../../app/ports.ts';
import { AegisError, ERROR_CODES } from '../../domain/errors.ts';
import { readJsonBody, sendJson as send, bearerMatches as tokenMatches } from '../in-sandbox/http-common.ts';

const MAX_BODY_BYTES = 64 * 1024;
const PREFIX = '/v1/memory';

function fail(response: ServerResponse, error: unknown): void {
  if (error instanceof AegisError) {
    const denied = error.code === 'PERMISSION_DENIED';
    send(response, ERROR_CODES[error.code].httpStatus, {
      error: {
        type: denied ? 'memory_denied' : error.code,
        code: denied ? 'memory_denied' : error.code,
        message: error.hint ? `${error.message} (${error.hint})` : error.message,
      },
    });
    return;
  }
  send(response, 500, {
    error: { type: 'INTERNAL', code: 'INTERNAL', message: 'internal error in the AEGIS memory API' },
  });
}

export function createMemoryHandler(
  token: string,
  memory: InSandboxMemory,
  next: InSandboxHandler | undefined,
): InSandboxHandler {
  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const path = (request.url ?? '/').split('?')[0] as string;
    if (path !== PREFIX && !path.startsWith(`${PREFIX}/`)) {
      if (next) (next as unknown as (q: IncomingMessage, r: ServerResponse) => void)(request, response);
      else
        send(response, 404, { error: { type: 'NOT_FOUND', code: 'NOT_FOUND', message: `no route ${path}` } });
      return;
    }
    if (!tokenMatches(request, token)) {
      send(response, 401, {
        error: { type: 'auth', code: 'invalid_token', message: 'missing or wrong AEGIS_TOKEN' },
      });
      return;
    }
    try {
      const op = path.slice(PREFIX.length + 1);
      if (request.method !== 'POST' || (op !== 'store' && op !== 'search' && op !== 'forget'))
        throw new AegisError(
          'USAGE',
          `${String(request.method)} ${path.slice(0, 200)} is not a memory route`,
          {
            hint: 'POST /v1/memory/store, /v1/memory/search or /v1/memory/forget',
          },
        );
      const body = await readJsonBody(
        request,
        MAX_BODY_BYTES,
        'memory request',
        'store a summary, or split the text into several memories',
      );
      send(response, 200, await memory[op](body));
    } catch (error) {
      fail(response, error);
    }
  };
  return ((request: IncomingMessage, response: ServerResponse) => {
    void handle(request, response).catch(() => response.destroy());
  }) as unknown as InSandboxHandler;
}
