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
