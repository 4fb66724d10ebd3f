/**
 * The swarm bus and locks wired for a composition root (main-server.ts): both over the server's store (PostgreSQL:
 * shared by every node; SQLite: one node), woken across nodes by its signals (LISTEN/NOTIFY).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { AuditLog, Clock } from '../../app/ports.ts';
import type { SwarmWiring } from '../../app/swarm-access.ts';
import { SwarmBus, type SwarmSignals } from '../../app/swarm-bus.ts';
import { SwarmLocks, type SwarmStore } from '../../app/swarm-locks.ts';
import { createSwarmHandler } from './http-handler.ts';

export interface SwarmParts {
  readonly store: SwarmStore;
  readonly signals: SwarmSignals;
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly nodeId: string | null;
  /** The swarm of an execution (its root's id); until executions record their root, the execution itself. */
  readonly swarmOf?: (executionId: string) => Promise<string>;
}

export function swarmWiring(parts: SwarmParts): SwarmWiring {
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
    swarmOf: parts.swarmOf ?? (async (id) => id),
    nodeId: parts.nodeId,
    handlerFor: createSwarmHandler,
    newToken: () => `aegis_tk_${randomBytes(24).toString('hex')}`,
  };
}
