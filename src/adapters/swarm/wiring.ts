/** The swarm's in-sandbox routes for a composition root (main-server.ts): the handler and fresh tokens. */
import { randomBytes } from 'node:crypto';
import type { SwarmWiring } from '../../app/swarm.ts';
import { AegisError } from '../../domain/errors.ts';
import { createSwarmHandler } from './http-handler.ts';

export function swarmWiring(): Omit<SwarmWiring, 'host'> {
  return {
    handlerFor: createSwarmHandler,
    newToken: () => `aegis_tk_${randomBytes(24).toString('hex')}`,
  };
}

/**
 * `aegis run`'s swarm routes: there is no queue or deployed agents to start a child from, so a spawn is refused
 * (403 swarm_denied, the SDKs raise SwarmDenied) with a hint, rather than a bare 404 on an unknown route.
 */
export function localSwarmWiring(): SwarmWiring {
  return {
    ...swarmWiring(),
    host: {
      spawnChild: async (_parent, request) => {
        throw new AegisError(
          'PERMISSION_DENIED',
          `spawn ${request.agent.slice(0, 100)} refused: \`aegis run\` cannot spawn children — spawning needs an AEGIS server`,
          {
            hint: 'deploy the parent and its children (aegis deploy) and run the parent on `aegis server` (aegis exec)',
            details: { rule: 'aegis run' },
          },
        );
      },
      waitFor: async (id) => {
        throw new AegisError('NOT_FOUND', `execution ${id.slice(0, 80)} is not a child of this execution`);
      },
      getExecution: async () => undefined,
    },
  };
}
