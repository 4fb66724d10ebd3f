/**
 * Swarm spawn on the in-sandbox API (127.0.0.1:3129 inside each sandbox, same token as the other routes; ADR 0140):
 *
 *   POST /v1/swarm/spawn           {agent, input?, wait?, timeout?}   → {id, agent, status, done, reason, output}
 *   GET  /v1/swarm/children/{id}                                      → the same, for a child of this execution
 *
 * A refusal (canSpawn, maxChildren, maxDepth, budget.executions) is 403 `{error: {type: 'swarm_denied', code:
 * 'swarm_denied', message}}` (the SDKs raise SwarmDenied). Any other path goes to `next`.
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { InSandboxHandler } from '../../app/ports.ts';
import type { InSandboxSwarm } from '../../app/swarm.ts';
import { AegisError, ERROR_CODES } from '../../domain/errors.ts';

const MAX_BODY_BYTES = 64 * 1024;
const PREFIX = '/v1/swarm';

function send(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  response.end(text);
}

function fail(response: ServerResponse, error: unknown): void {
  if (error instanceof AegisError) {
    const denied = error.code === 'PERMISSION_DENIED';
    send(response, ERROR_CODES[error.code].httpStatus, {
      error: {
        type: denied ? 'swarm_denied' : error.code,
        code: denied ? 'swarm_denied' : error.code,
        message: error.hint ? `${error.message} (${error.hint})` : error.message,
      },
    });
    return;
  }
  send(response, 500, {
    error: { type: 'INTERNAL', code: 'INTERNAL', message: 'internal error in the AEGIS swarm API' },
  });
}

function tokenMatches(request: IncomingMessage, token: string): boolean {
  const header = request.headers.authorization ?? '';
  const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

async function readJson(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES)
      throw new AegisError('PAYLOAD_TOO_LARGE', `a spawn request body is at most ${MAX_BODY_BYTES} bytes`, {
        hint: 'pass a smaller input (a reference to data, not the data)',
      });
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text === '' ? '{}' : text);
  } catch {
    throw new AegisError('USAGE', 'the body is not JSON');
  }
}

export function createSwarmHandler(
  token: string,
  swarm: InSandboxSwarm,
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
      const child = /^\/v1\/swarm\/children\/([A-Za-z0-9_-]{1,100})$/.exec(path);
      if (request.method === 'POST' && path === `${PREFIX}/spawn`) {
        send(response, 200, await swarm.spawn(await readJson(request)));
      } else if (request.method === 'GET' && child !== null) {
        send(response, 200, await swarm.child(child[1] as string));
      } else {
        throw new AegisError(
          'USAGE',
          `${String(request.method)} ${path.slice(0, 200)} is not a swarm route`,
          {
            hint: 'POST /v1/swarm/spawn or GET /v1/swarm/children/{id}',
          },
        );
      }
    } catch (error) {
      fail(response, error);
    }
  };
  return ((request: IncomingMessage, response: ServerResponse) => {
    void handle(request, response).catch(() => response.destroy());
  }) as unknown as InSandboxHandler;
}
