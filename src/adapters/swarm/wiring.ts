/** The swarm's in-sandbox routes for a composition root (main-server.ts): the handler and fresh tokens. */
import { randomBytes } from 'node:crypto';
import type { SwarmWiring } from '../../app/swarm.ts';
import { createSwarmHandler } from './http-handler.ts';

export function swarmWiring(): Omit<SwarmWiring, 'host'> {
  return {
    handlerFor: createSwarmHandler,
    newToken: () => `aegis_tk_${randomBytes(24).toString('hex')}`,
  };
}
