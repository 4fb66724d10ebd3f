/**
 * The swarm wired for a composition root (main-server.ts): one `/v1/swarm/*` handler chain (spawn, children, bus,
 * locks), and the bus and locks over the server's store (PostgreSQL: shared by every node; SQLite: one node), woken
 * across nodes by its signals (LISTEN/NOTIFY). The spawning host is added by app/executions.ts.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { AuditLog, Clock } from '../../app/ports.ts';
import type { SwarmWiring } from '../../app/swarm.ts';
import { SwarmBus, type SwarmSignals } from '../../app/swarm-bus.ts';
import { SwarmLocks, type SwarmStore } from '../../app/swarm-locks.ts';
import { AegisError } from '../../domain/errors.ts';
import { createSwarmHandler } from './http-handler.ts';

export interface SwarmParts {
  readonly store: SwarmStore;
  readonly signals: SwarmSignals;
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly nodeId: string | null;
  /** The swarm of an execution: its root's id (`swarmIdOf(record)`), so a parent and its children share. */
  readonly swarmOf: (executionId: string) => Promise<string>;
}

export function swarmWiring(parts: SwarmParts): Omit<SwarmWiring, 'host'> {
  const { store, signals, audit, clock } = parts;
  return {
    bus: new SwarmBus({
      store,
      audit,
      clock,
      signals,
      sha256Hex: (text) => createHash('sha256').update(text).digest('hex'),
    }),
    locks: new SwarmLocks({ store, audit, clock, signals }),
    swarmOf: parts.swarmOf,
    nodeId: parts.nodeId,
    handlerFor: createSwarmHandler,
    newToken: () => `aegis_tk_${randomBytes(24).toString('hex')}`,
  };
}

/**
 * `aegis run`'s swarm routes: there is no queue or deployed agents to start a child from, so a spawn is refused
 * (403 swarm_denied, the SDKs raise SwarmDenied) with a hint, rather than a bare 404 on an unknown route. The bus
 * and locks work, in the local store (a run is its own swarm).
 */
export function localSwarmWiring(parts: SwarmParts): SwarmWiring {
  return {
    ...swarmWiring(parts),
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
