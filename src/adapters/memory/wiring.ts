/**
 * Cortex wired for a composition root (main-server.ts, cli/main.ts): the embedder the config names
 * (`memory.embedder`: feature hashing, or an OpenAI-compatible `/embeddings` provider of llm.providers), the vector
 * store (PostgreSQL when the server's store is, else SQLite `$AEGIS_HOME/cortex.db`), the Cortex use-case, its
 * in-sandbox handler and the share grants.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Cortex } from '../../app/cortex.ts';
import type { MemoryGrants, MemoryWiring } from '../../app/memory-access.ts';
import type { AuditLog, Clock, Embedder, MemoryIds, VectorStore } from '../../app/ports.ts';
import { AegisError } from '../../domain/errors.ts';
import type { LlmProviderConfig } from '../../domain/llm/config.ts';
import type { EmbedderChoice } from '../../domain/memory/config.ts';
import { nodeHasher } from '../audit/node-key.ts';
import { HashEmbedder } from '../cortex/hash-embedder.ts';
import { OpenAiEmbedder } from '../cortex/openai-embedder.ts';
import { SqliteVectorStore } from '../cortex/sqlite-vector-store.ts';
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

/**
 * The vector store of `home`: PostgreSQL at `databaseUrl` when given (the server's store is there: one database
 * to back up, memories shared by every node), else SQLite `$AEGIS_HOME/cortex.db`.
 */
export async function openVectorStore(home: string, databaseUrl?: string): Promise<VectorStore> {
  if (databaseUrl) {
    const { PostgresVectorStore } = await import('../cortex/postgres-vector-store.ts');
    return PostgresVectorStore.open(databaseUrl);
  }
  return SqliteVectorStore.open(join(home, 'cortex.db'));
}

/**
 * The embedder `choice` names. `openai:<provider>/<model>` embeds one probe to learn the dimension, so a provider
 * that cannot answer fails the start (UNAVAILABLE) rather than every store and recall later.
 */
export async function openEmbedder(
  choice: EmbedderChoice,
  providers: Readonly<Record<string, LlmProviderConfig>>,
  secrets: { get(name: string): Promise<string> },
): Promise<Embedder> {
  if (choice.kind === 'hash') return new HashEmbedder();
  const provider = providers[choice.provider];
  if (provider === undefined || provider.kind !== 'openai') {
    // compileMemoryConfig checked this; kept for callers that build a choice by hand.
    throw new AegisError('USAGE', `memory.embedder: no OpenAI-compatible provider "${choice.provider}"`);
  }
  const apiKey = provider.apiKeySecret === undefined ? null : await secrets.get(provider.apiKeySecret);
  try {
    return await OpenAiEmbedder.open({ baseUrl: provider.baseUrl, model: choice.model, apiKey });
  } catch (error) {
    if (!(error instanceof AegisError)) throw error;
    throw new AegisError(
      error.code,
      `memory.embedder openai:${choice.provider}/${choice.model}: ${error.message}`,
      {
        cause: error,
        hint: 'start the embeddings server, fix llm.providers in config.yaml, or set memory.embedder: hash (then `aegis memory reembed --all`)',
      },
    );
  }
}
