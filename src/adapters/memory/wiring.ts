/**
 * Cortex wired for a composition root (main-server.ts, cli/main.ts): the Cortex use-case over an embedder and a
 * vector store, its in-sandbox handler, and the share grants. The embedder and the store come from the Cortex core
 * (adapters/cortex/); until a persistent store is chosen there, callers pass what they have.
 */
import { randomBytes } from 'node:crypto';
import { Cortex } from '../../app/cortex.ts';
import type { MemoryGrants, MemoryWiring } from '../../app/memory-access.ts';
import type { AuditLog, Clock, Embedder, MemoryIds, VectorStore } from '../../app/ports.ts';
import { nodeHasher } from '../audit/node-key.ts';
import { createMemoryHandler } from './http-handler.ts';

export interface CortexParts {
  readonly embedder: Embedder;
  readonly store: VectorStore;
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly ids: MemoryIds;
}

export function openCortex(parts: CortexParts): Cortex {
  return new Cortex({ ...parts, hasher: nodeHasher });
}

export function memoryWiring(cortex: Cortex, grants?: MemoryGrants): MemoryWiring {
  return {
    cortex,
    ...(grants === undefined ? {} : { grants }),
    handlerFor: createMemoryHandler,
    newToken: () => `aegis_tk_${randomBytes(24).toString('hex')}`,
  };
}
