/**
 * The orchestrator's LLM configuration (`llm:` in `$AEGIS_HOME/config.yaml` or `/etc/aegis/config.yaml`): which
 * upstream providers exist, which model aliases agents may ask for, prices and timeouts. API keys are never in the
 * file: `apiKeySecret` names an entry of the sealed secret store (`aegis secret set NAME`).
 *
 * Public form (zod, validated once at the edge by the config loader) → `compileLlmConfig` → `LlmSettings` with
 * normalised units. Inside, trust the types.
 */

import { z } from 'zod';
import { AegisError, type Problem } from '../errors.ts';
import { McpConfig } from '../mcp-config.ts';
import { MemoryConfig } from '../memory/config.ts';
import { SECRET_NAME_PATTERN } from '../secrets/secret-ref.ts';
import { parseDuration } from '../units.ts';

export const ALIAS_PATTERN = /^[a-z][a-z0-9-]{0,31}$/;

const DurationText = z
  .union([z.string(), z.number()])
  .superRefine((value, ctx) => {
    const result = parseDuration(value);
    if (!result.ok) ctx.addIssue({ code: 'custom', message: result.error });
  })
  .meta({ description: 'e.g. 30s, 2m' });

export const LlmProviderConfig = z.strictObject({
  kind: z.enum(['openai', 'anthropic']).meta({
    description:
      '`openai`: any OpenAI-compatible Chat Completions server (OpenAI, vLLM, Ollama, llama.cpp, LM Studio); `anthropic`: the Messages API.',
  }),
  baseUrl: z
    .url({
      protocol: /^https?$/,
      error: 'baseUrl must be an http:// or https:// URL, e.g. https://api.openai.com/v1',
    })
    .meta({ description: 'Up to and including the version segment, e.g. https://api.openai.com/v1' }),
  apiKeySecret: z
    .string()
    .regex(SECRET_NAME_PATTERN, 'a secret name: letters, digits and _, e.g. OPENAI_API_KEY')
    .optional()
    .meta({
      description: 'Name in the sealed secret store holding the API key. Omit for keyless local servers.',
    }),
});
export type LlmProviderConfig = z.infer<typeof LlmProviderConfig>;

export const LlmModelConfig = z.strictObject({
  provider: z.string().min(1).meta({ description: 'A key of llm.providers.' }),
  model: z.string().min(1).meta({ description: 'The upstream model name, e.g. gpt-4o-mini.' }),
  maxTokens: z.number().int().min(1).max(1_000_000).optional().meta({
    description: 'max_tokens sent upstream when the agent gives none (Anthropic requires one). @default 1024',
  }),
});

export const LlmPrice = z.strictObject({
  input: z.number().min(0).meta({ description: 'USD per 1M input tokens.' }),
  output: z.number().min(0).meta({ description: 'USD per 1M output tokens.' }),
});

/** A server-side budget: shared by every execution of one API key or one agent, over a window. */
export const LlmServerBudget = z
  .strictObject({
    tokens: z
      .number()
      .int()
      .min(0)
      .optional()
      .meta({ description: 'Input + output tokens. @default unlimited' }),
    calls: z.number().int().min(0).optional().meta({ description: 'Model calls. @default unlimited' }),
    usd: z.number().min(0).optional().meta({ description: 'USD at llm.prices. @default unlimited' }),
    window: DurationText.optional().meta({
      description:
        'Fixed window the limits apply to, aligned to the Unix epoch (e.g. 1h, 24h, 720h). @default none: the limits never reset',
    }),
  })
  .meta({
    description: 'Exhausting any limit refuses further calls and ends the calling execution (reason budget).',
  });
export type LlmServerBudget = z.infer<typeof LlmServerBudget>;

export const LlmBudgetsConfig = z.strictObject({
  keys: z
    .record(z.string().min(1), LlmServerBudget)
    .default({})
    .meta({ description: 'By API key id (key_…, as `aegis apikey ls` shows; `local` for the unix socket).' }),
  agents: z.record(z.string().min(1), LlmServerBudget).default({}).meta({ description: 'By agent name.' }),
});

export const LlmConfig = z.strictObject({
  providers: z
    .record(z.string().regex(ALIAS_PATTERN, 'provider names are lowercase, e.g. openai'), LlmProviderConfig)
    .default({}),
  models: z
    .record(
      z
        .string()
        .regex(ALIAS_PATTERN, 'aliases are lowercase letters, digits and -, e.g. default, fast, smart'),
      LlmModelConfig,
    )
    .default({}),
  prices: z
    .record(z.string(), LlmPrice)
    .default({})
    .meta({ description: 'By alias or upstream model name.' }),
  timeout: DurationText.optional().meta({
    description: 'Per upstream attempt, until the last byte. @default 60s',
  }),
  retries: z
    .number()
    .int()
    .min(0)
    .max(10)
    .optional()
    .meta({ description: 'Retries on 429/5xx/network errors. @default 2' }),
  maxRetryDelay: DurationText.optional().meta({
    description: 'Longest Retry-After honoured; a longer one fails the call at once. @default 30s',
  }),
  recordContent: z.boolean().default(false).meta({
    description: 'Record prompts and completions in the llm.call ledger entries (off: only counts).',
  }),
  budgets: LlmBudgetsConfig.optional().meta({
    description: 'Budgets across executions, per API key and per agent, persisted in the store.',
  }),
});
export type LlmConfig = z.infer<typeof LlmConfig>;

export const AegisConfig = z.strictObject({
  llm: LlmConfig.optional(),
  /** MCP servers whose tools agents may be granted (domain/mcp-config.ts). */
  mcp: McpConfig.optional(),
  /** Agent memory (Cortex): the embedder, the expiry sweep (domain/memory/config.ts). */
  memory: MemoryConfig.optional(),
});
export type AegisConfig = z.infer<typeof AegisConfig>;

export interface ModelRoute {
  readonly alias: string;
  readonly provider: string;
  readonly kind: 'openai' | 'anthropic';
  readonly baseUrl: string;
  readonly apiKeySecret: string | null;
  readonly model: string;
  readonly maxTokens: number;
  /** USD per 1M tokens; null when the config has no price (usd budgets then count 0 for this model). */
  readonly price: { readonly input: number; readonly output: number } | null;
}

/** A compiled server budget (`llm.budgets.<scope>.<id>`); `windowMs` null: never resets. */
export interface ServerBudget {
  /** `llm.budgets.keys.key_…` or `llm.budgets.agents.<name>`: what errors and violations name. */
  readonly rule: string;
  readonly tokens: number | null;
  readonly calls: number | null;
  readonly usd: number | null;
  readonly windowMs: number | null;
}

export interface LlmSettings {
  readonly models: Readonly<Record<string, ModelRoute>>;
  /** Budgets across executions. @default none */
  readonly budgets?: {
    readonly keys: Readonly<Record<string, ServerBudget>>;
    readonly agents: Readonly<Record<string, ServerBudget>>;
  };
  /** Per attempt. @default 60 000 */
  readonly timeoutMs: number;
  /** @default 2 */
  readonly retries: number;
  /** @default 30 000 */
  readonly maxRetryDelayMs: number;
  readonly recordContent: boolean;
}

export const DEFAULT_LLM_TIMEOUT_MS = 60_000;

function ms(value: string | number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const result = parseDuration(value);
  return result.ok ? result.value : fallback; // validated by the schema already
}

/** Resolves aliases to their provider; problems carry JSON paths under `llm.` for the loader to locate. */
export function compileLlmConfig(config: LlmConfig | undefined): LlmSettings {
  const c = config ?? LlmConfig.parse({});
  const problems: Problem[] = [];
  const models: Record<string, ModelRoute> = {};
  for (const [alias, entry] of Object.entries(c.models)) {
    const provider = c.providers[entry.provider];
    if (provider === undefined) {
      const known = Object.keys(c.providers);
      problems.push({
        path: `llm.models.${alias}.provider`,
        message: `no provider "${entry.provider}" in llm.providers`,
        hint: known.length > 0 ? `use one of: ${known.join(', ')}` : 'add it under llm.providers',
      });
      continue;
    }
    const price = c.prices[alias] ?? c.prices[entry.model] ?? null;
    models[alias] = {
      alias,
      provider: entry.provider,
      kind: provider.kind,
      baseUrl: provider.baseUrl.replace(/\/+$/, ''),
      apiKeySecret: provider.apiKeySecret ?? null,
      model: entry.model,
      maxTokens: entry.maxTokens ?? 1024,
      price,
    };
  }
  if (problems.length > 0) {
    throw new AegisError('USAGE', `config has ${problems.length} problem(s)`, { problems });
  }
  return {
    models,
    timeoutMs: ms(c.timeout, DEFAULT_LLM_TIMEOUT_MS),
    retries: c.retries ?? 2,
    maxRetryDelayMs: ms(c.maxRetryDelay, 30_000),
    recordContent: c.recordContent,
    ...(c.budgets ? { budgets: compileBudgets(c.budgets) } : {}),
  };
}

function compileBudgets(budgets: z.infer<typeof LlmBudgetsConfig>): NonNullable<LlmSettings['budgets']> {
  const one = (rule: string, b: LlmServerBudget): ServerBudget => ({
    rule,
    tokens: b.tokens ?? null,
    calls: b.calls ?? null,
    usd: b.usd ?? null,
    windowMs: b.window === undefined ? null : ms(b.window, 0) || null,
  });
  const all = (scope: 'keys' | 'agents', entries: Record<string, LlmServerBudget>) =>
    Object.fromEntries(Object.entries(entries).map(([id, b]) => [id, one(`llm.budgets.${scope}.${id}`, b)]));
  return { keys: all('keys', budgets.keys), agents: all('agents', budgets.agents) };
}
