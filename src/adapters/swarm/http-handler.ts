/**
 * The swarm on the in-sandbox API (127.0.0.1:3129 inside each sandbox, same token as the other routes), one chain
 * for every `/v1/swarm/*` route. Spawn (ADR 0140):
 *
 *   POST /v1/swarm/spawn           {agent, input?, wait?, timeout?}   → {id, agent, status, done, reason, output}
 *   GET  /v1/swarm/children/{id}                                      → the same, for a child of this execution
 *
 * Bus and locks (ADR 0144), shared by the whole swarm (the root and its descendants):
 *
 *   POST /v1/swarm/publish   {topic, message}                     → {id, topic, sizeBytes, digest}
 *   POST /v1/swarm/subscribe {topic, after?, limit?, timeout?}     → {messages: [{id, topic, sender, message}], cursor}
 *   POST /v1/swarm/lock      {name, ttl?, wait?, global?}          → {name, token, expiresAt}   (409 when the wait ran out)
 *   POST /v1/swarm/unlock    {name, token, global?}                → {name, released: true}     (409 FENCED when stale)
 *   POST /v1/swarm/renew     {name, token, ttl?, global?}          → {name, token, expiresAt}
 *   POST /v1/swarm/fence     {name, token, global?}                → {valid, current}
 *
 * Seconds on the wire. A refusal of policy is 403 `{error: {type: 'swarm_denied', code: 'swarm_denied', message}}`
 * (the SDKs raise SwarmDenied). Any path outside `/v1/swarm` goes to `next`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { InSandboxHandler } from '../../app/ports.ts';
import type { InSandboxSwarm } from '../../app/swarm.ts';
import { BUS_OPS, type BusOp } from '../../app/swarm-bus-access.ts';
import { AegisError, ERROR_CODES } from '../../domain/errors.ts';
import { readJsonBody, sendJson as send, bearerMatches as tokenMatches } from '../in-sandbox/http-common.ts';

/** A spawn request carries an input (a reference to data, not the data). */
const MAX_SPAWN_BODY_BYTES = 64 * 1024;
/** A message is at most 1 MiB (spec.swarm.bus.maxMessageBytes' ceiling) plus its envelope. */
const MAX_BUS_BODY_BYTES = 1_048_576 + 4096;
const PREFIX = '/v1/swarm';
const CHILD = /^\/v1\/swarm\/children\/([A-Za-z0-9_-]{1,100})$/;

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
    // A spawn wait, a long-poll or a lock wait ends when the agent hangs up.
    const gone = new AbortController();
    response.on('close', () => gone.abort());
    try {
      const op = path.slice(PREFIX.length + 1);
      const child = CHILD.exec(path);
      let answer: unknown;
      if (request.method === 'POST' && op === 'spawn') {
        const body = await readJsonBody(
          request,
          MAX_SPAWN_BODY_BYTES,
          'swarm request',
          'pass a reference to data, not the data',
        );
        answer = await swarm.spawn(body);
      } else if (request.method === 'GET' && child !== null) {
        answer = await swarm.child(child[1] as string);
      } else if (request.method === 'POST' && BUS_OPS.includes(op as BusOp)) {
        const body = await readJsonBody(
          request,
          MAX_BUS_BODY_BYTES,
          'swarm request',
          'publish a reference or a summary instead',
        );
        answer = await swarm[op as BusOp](body, gone.signal);
      } else {
        throw new AegisError(
          'USAGE',
          `${String(request.method)} ${path.slice(0, 200)} is not a swarm route`,
          {
            hint: `POST ${PREFIX}/{spawn,${BUS_OPS.join(',')}} or GET ${PREFIX}/children/{id}`,
          },
        );
      }
      if (!response.destroyed) send(response, 200, answer);
    } catch (error) {
      if (!response.destroyed) fail(response, error);
    }
  };
  return ((request: IncomingMessage, response: ServerResponse) => {
    void handle(request, response).catch(() => response.destroy());
  }) as unknown as InSandboxHandler;
}
