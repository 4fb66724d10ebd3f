/**
 * The swarm bus and locks on the in-sandbox API (127.0.0.1:3129 inside each sandbox, same token as the other routes):
 *
 *   POST /v1/swarm/publish   {topic, message}                     → {id, topic, sizeBytes, digest}
 *   POST /v1/swarm/subscribe {topic, after?, limit?, timeout?}     → {messages: [{id, topic, sender, message}], cursor}
 *   POST /v1/swarm/lock      {name, ttl?, wait?, global?}          → {name, token, expiresAt}   (409 when the wait ran out)
 *   POST /v1/swarm/unlock    {name, token, global?}                → {name, released: true}     (409 FENCED when stale)
 *   POST /v1/swarm/renew     {name, token, ttl?, global?}          → {name, token, expiresAt}
 *   POST /v1/swarm/fence     {name, token, global?}                → {valid, current}
 *
 * Seconds on the wire. A refusal of policy is 403 `{error: {code: 'swarm_denied'}}` (the SDKs raise SwarmDenied).
 * Any other path — `/v1/swarm/spawn` included — goes to `next`.
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { InSandboxHandler } from '../../app/ports.ts';
import { type InSandboxSwarm, SWARM_OPS, type SwarmOp } from '../../app/swarm-access.ts';
import { AegisError, ERROR_CODES } from '../../domain/errors.ts';

/** A message is at most 1 MiB (spec.swarm.bus.maxMessageBytes' ceiling) plus its envelope. */
const MAX_BODY_BYTES = 1_048_576 + 4096;
const PREFIX = '/v1/swarm/';

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
    const code = error.code === 'PERMISSION_DENIED' ? 'swarm_denied' : error.code;
    send(response, ERROR_CODES[error.code].httpStatus, {
      error: { type: code, code, message: error.hint ? `${error.message} (${error.hint})` : error.message },
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
      throw new AegisError('PAYLOAD_TOO_LARGE', `a swarm request body is at most ${MAX_BODY_BYTES} bytes`, {
        hint: 'publish a reference or a summary instead',
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
    const op = path.startsWith(PREFIX) ? path.slice(PREFIX.length) : '';
    if (!SWARM_OPS.includes(op as SwarmOp)) {
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
    // A long-poll or a lock wait ends when the agent hangs up.
    const gone = new AbortController();
    response.on('close', () => gone.abort());
    try {
      if (request.method !== 'POST')
        throw new AegisError('USAGE', `${String(request.method)} ${path} is not a swarm route`, {
          hint: `POST ${PREFIX}{${SWARM_OPS.join(',')}}`,
        });
      const body = await readJson(request);
      const answer = await swarm[op as SwarmOp](body, gone.signal);
      if (!response.destroyed) send(response, 200, answer);
    } catch (error) {
      if (!response.destroyed) fail(response, error);
    }
  };
  return ((request: IncomingMessage, response: ServerResponse) => {
    void handle(request, response).catch(() => response.destroy());
  }) as unknown as InSandboxHandler;
}
