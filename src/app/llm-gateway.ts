/**
 * Use-case: the LLM gateway. An agent holds only a per-execution token; the gateway maps it to a grant (execution,
 * allowed aliases, budget), resolves the alias to an upstream provider and model from the operator's config, adds
 * the real API key (from the secret store) on the upstream request only, retries 429/5xx/network failures with
 * backoff honouring Retry-After, and accounts tokens, calls and USD against the budget. Every call — refusals
 * included — is reported through `onCall` (the `llm.call` ledger entry).
 *
 * Protocol-agnostic: requests and responses are in the canonical form (domain/llm/canonical.ts); the HTTP handler
 * (adapters/llm/http-handler.ts) parses and renders the three wire protocols.
 */
import { AegisError } from '../domain/errors.ts';
import type { LlmRequest, LlmResponse, LlmStreamEvent } from '../domain/llm/canonical.ts';
import { StreamAccumulator, textOf } from '../domain/llm/canonical.ts';
import type { LlmSettings, ModelRoute } from '../domain/llm/config.ts';
import type { LlmBudgetSpec } from '../domain/manifest/compiled.ts';
import { type BudgetOwners, LlmServerBudgets } from './llm-server-budgets.ts';
import type { LlmSpendStore } from './ports.ts';

export type LlmUpstreamResult =
  | { readonly kind: 'complete'; readonly response: LlmResponse }
  | { readonly kind: 'stream'; readonly events: AsyncIterable<LlmStreamEvent> };

/** Port: one upstream family (OpenAI-compatible, Anthropic). Throws `UpstreamError` when the upstream refuses. */
export interface LlmProvider {
  call(
    route: ModelRoute,
    request: LlmRequest,
    apiKey: string | null,
    signal: AbortSignal,
  ): Promise<LlmUpstreamResult>;
}

/** An upstream failure: HTTP status (null: network error or timeout) and the Retry-After it asked for. */
export class UpstreamError extends Error {
  readonly status: number | null;
  readonly retryAfterMs: number | null;
  constructor(
    message: string,
    status: number | null,
    retryAfterMs: number | null = null,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'UpstreamError';
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

export interface LlmGrant {
  readonly executionId: string;
  readonly agent: string;
  readonly models: readonly string[];
  readonly budget: LlmBudgetSpec;
  /** The API key id that requested the execution (server budgets `llm.budgets.keys`); null/absent: none. */
  readonly requestedBy?: string | null;
}

export interface LlmUsageTotals {
  readonly calls: number;
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly usd: number;
}

export type LlmBudgetName = 'tokens' | 'calls' | 'usd';

export interface LlmBudgetLeft {
  readonly tokens: number | null;
  readonly calls: number | null;
  readonly usd: number | null;
}

/** One `llm.call` ledger entry. Prompts and completions only with `recordContent`. */
export interface LlmCallRecord {
  readonly executionId: string;
  readonly agent: string;
  readonly alias: string;
  readonly provider: string | null;
  readonly upstreamModel: string | null;
  /** The upstream's API family (`openai`, `anthropic`): OpenTelemetry's `gen_ai.provider.name`. Null when refused before routing. */
  readonly system: 'openai' | 'anthropic' | null;
  /** The model the upstream said answered (null when nothing came back). */
  readonly responseModel: string | null;
  /** `chat`, `responses` or `messages`: what the agent spoke. */
  readonly protocol: string;
  readonly stream: boolean;
  /** `ok`, `denied` (alias not granted), `budget` (refused: exhausted), `error` (upstream/timeout/invalid). */
  readonly status: 'ok' | 'denied' | 'budget' | 'error';
  readonly error: string | null;
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly usd: number;
  readonly latencyMs: number;
  readonly attempts: number;
  readonly budgetLeft: LlmBudgetLeft;
  readonly prompt?: unknown;
  readonly completion?: string;
}

/** What a call record knows before the call ends. */
type CallMeta = Pick<
  LlmCallRecord,
  'executionId' | 'agent' | 'alias' | 'provider' | 'upstreamModel' | 'protocol' | 'stream'
>;

export interface LlmGatewayOptions {
  readonly settings: LlmSettings;
  readonly providers: Readonly<Record<'openai' | 'anthropic', LlmProvider>>;
  /** Resolves `apiKeySecret` names (the sealed secret store). */
  readonly secrets: { get(name: string): Promise<string> };
  /** A fresh unguessable token (≥128 bits). */
  readonly newToken: () => string;
  readonly onCall?: (record: LlmCallRecord) => void;
  /**
   * Called once per execution when a budget is used up (the execution should end with reason `budget`). `rule`
   * names a server budget (`llm.budgets.keys.<id>`); absent: the execution's own spec.llm.budget.
   */
  readonly onBudgetExhausted?: (executionId: string, budget: LlmBudgetName, rule?: string) => void;
  /** Where the server budgets' spend is kept (required for `settings.budgets` to be enforced). */
  readonly spend?: LlmSpendStore;
  /** Wall-clock ms, for budget windows. @default Date.now */
  readonly wallNow?: () => number;
  /** A server-budget spend that could not be persisted. */
  readonly onSpendError?: (error: unknown) => void;
  /** Monotonic ms (the Clock port's reading; latencies are differences). */
  readonly now: () => number;
  /** Waits between retries. */
  readonly sleep: (ms: number) => Promise<void>;
}

interface GrantState {
  readonly grant: LlmGrant;
  calls: number;
  inputTokens: number;
  outputTokens: number;
  usd: number;
  exhausted: LlmBudgetName | null;
}

function ownersOf(grant: LlmGrant): BudgetOwners {
  return { requestedBy: grant.requestedBy ?? null, agent: grant.agent };
}

export function llmError(
  code: 'UNAUTHENTICATED' | 'PERMISSION_DENIED' | 'RATE_LIMITED' | 'UNAVAILABLE' | 'USAGE',
  message: string,
  llm: {
    kind: 'auth' | 'denied' | 'budget' | 'rate' | 'upstream' | 'timeout' | 'invalid';
    status: number;
    retryAfterS?: number;
  },
  hint?: string,
): AegisError {
  return new AegisError(code, message, { details: { llm }, ...(hint ? { hint } : {}) });
}

export class LlmGateway {
  readonly #o: LlmGatewayOptions;
  readonly #grants = new Map<string, GrantState>();
  readonly #byExecution = new Map<string, GrantState>();
  readonly #now: () => number;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #server: LlmServerBudgets | undefined;

  constructor(options: LlmGatewayOptions) {
    this.#o = options;
    this.#now = options.now;
    this.#sleep = options.sleep;
    const budgets = options.settings.budgets;
    if (budgets && (Object.keys(budgets.keys).length > 0 || Object.keys(budgets.agents).length > 0)) {
      if (options.spend === undefined) {
        throw new AegisError('INTERNAL', 'llm.budgets are configured but the gateway has no spend store');
      }
      this.#server = new LlmServerBudgets({
        budgets,
        store: options.spend,
        nowMs: options.wallNow ?? Date.now,
        ...(options.onSpendError ? { onError: options.onSpendError } : {}),
      });
    }
  }

  /** Resolves once every server-budget charge made so far is persisted. */
  async flushSpend(): Promise<void> {
    await this.#server?.flush();
  }

  /** Issues the token an execution's agent uses as its API key. Revoke it when the execution ends. */
  issue(grant: LlmGrant): string {
    const token = `aegis-llm-${this.#o.newToken()}`;
    const state: GrantState = { grant, calls: 0, inputTokens: 0, outputTokens: 0, usd: 0, exhausted: null };
    this.#grants.set(token, state);
    this.#byExecution.set(grant.executionId, state);
    return token;
  }

  revoke(token: string): void {
    const state = this.#grants.get(token);
    this.#grants.delete(token);
    if (state && this.#byExecution.get(state.grant.executionId) === state) {
      this.#byExecution.delete(state.grant.executionId);
    }
  }

  /** The execution a live token belongs to. */
  executionOf(token: string): string | undefined {
    return this.#grants.get(token)?.grant.executionId;
  }

  usage(executionId: string): LlmUsageTotals | undefined {
    const s = this.#byExecution.get(executionId);
    return s && { calls: s.calls, inputTokens: s.inputTokens, outputTokens: s.outputTokens, usd: s.usd };
  }

  /** The aliases a token may call (for `GET /v1/models`). */
  models(token: string | null): readonly string[] {
    return this.#authenticate(token).grant.models.filter(
      (alias) => this.#o.settings.models[alias] !== undefined,
    );
  }

  #authenticate(token: string | null): GrantState {
    const state = token === null ? undefined : this.#grants.get(token);
    if (state === undefined) {
      throw llmError(
        'UNAUTHENTICATED',
        token === null
          ? 'no API key: send the AEGIS_TOKEN of this execution'
          : 'unknown or expired AEGIS token',
        { kind: 'auth', status: 401 },
        'use the token AEGIS put in OPENAI_API_KEY / ANTHROPIC_API_KEY / AEGIS_TOKEN',
      );
    }
    return state;
  }

  #left(s: GrantState): LlmBudgetLeft {
    const b = s.grant.budget;
    return {
      tokens: b.tokens === null ? null : Math.max(0, b.tokens - s.inputTokens - s.outputTokens),
      calls: b.calls === null ? null : Math.max(0, b.calls - s.calls),
      usd: b.usd === null ? null : Math.max(0, Math.round((b.usd - s.usd) * 1e6) / 1e6),
    };
  }

  #exhausted(s: GrantState): LlmBudgetName | null {
    const left = this.#left(s);
    if (left.calls === 0) return 'calls';
    if (left.tokens === 0) return 'tokens';
    if (left.usd === 0) return 'usd';
    return null;
  }

  /**
   * Makes one model call for the holder of `token`. Throws AegisError (details.llm says the kind and HTTP status)
   * for refusals and upstream failures; a stream's failures surface from its iterator.
   */
  async call(token: string | null, request: LlmRequest, protocol: string): Promise<LlmUpstreamResult> {
    const s = this.#authenticate(token);
    const started = this.#now();
    const base = {
      executionId: s.grant.executionId,
      agent: s.grant.agent,
      alias: request.model,
      protocol,
      stream: request.stream,
    };
    const refuse = (status: LlmCallRecord['status'], error: AegisError, route: ModelRoute | null): never => {
      this.#record(
        s,
        { ...base, provider: route?.provider ?? null, upstreamModel: route?.model ?? null },
        status,
        error.message,
        null,
        started,
        0,
        request,
      );
      throw error;
    };
    const route = this.#o.settings.models[request.model];
    if (!s.grant.models.includes(request.model) || route === undefined) {
      const granted = s.grant.models.join(', ');
      refuse(
        'denied',
        llmError(
          'PERMISSION_DENIED',
          route === undefined && s.grant.models.includes(request.model)
            ? `model alias "${request.model}" is granted but not configured on this server`
            : `model "${request.model}" is not granted to agent ${s.grant.agent}`,
          { kind: 'denied', status: 403 },
          `ask for one of: ${granted} (spec.llm.models)`,
        ),
        route ?? null,
      );
    }
    const r = route as ModelRoute;
    const exhausted = s.exhausted ?? this.#exhausted(s);
    if (exhausted !== null) {
      refuse(
        'budget',
        llmError(
          'RATE_LIMITED',
          `LLM ${exhausted} budget of this execution is exhausted`,
          { kind: 'budget', status: 429 },
          'raise spec.llm.budget, or do with fewer calls',
        ),
        r,
      );
    }
    const owners = ownersOf(s.grant);
    let serverTokensLeft: number | null = null;
    if (this.#server?.applies(owners)) {
      const server = await this.#server.check(owners);
      if (server.exhausted !== null) {
        const { rule, budget } = server.exhausted;
        if (s.exhausted === null) {
          s.exhausted = budget;
          this.#o.onBudgetExhausted?.(s.grant.executionId, budget, rule);
        }
        refuse(
          'budget',
          llmError(
            'RATE_LIMITED',
            `LLM ${budget} budget ${rule} is exhausted`,
            { kind: 'budget', status: 429 },
            `the operator sets it in the server config (${rule}); it is shared across executions`,
          ),
          r,
        );
      }
      serverTokensLeft = server.tokensLeft;
    }
    const left = this.#left(s);
    const tokensLeft =
      left.tokens === null
        ? serverTokensLeft
        : serverTokensLeft === null
          ? left.tokens
          : Math.min(left.tokens, serverTokensLeft);
    const upstreamRequest: LlmRequest =
      tokensLeft !== null
        ? { ...request, maxTokens: Math.min(request.maxTokens ?? r.maxTokens, tokensLeft) }
        : request;
    const apiKey = r.apiKeySecret === null ? null : await this.#o.secrets.get(r.apiKeySecret);
    const provider = this.#o.providers[r.kind];
    const meta = { ...base, provider: r.provider, upstreamModel: r.model };
    let attempts = 0;
    let result: LlmUpstreamResult;
    for (;;) {
      attempts++;
      try {
        result = await provider.call(
          r,
          upstreamRequest,
          apiKey,
          AbortSignal.timeout(this.#o.settings.timeoutMs),
        );
        break;
      } catch (error) {
        const mapped = this.#mapUpstream(error);
        const retryable = mapped.retryable && attempts <= this.#o.settings.retries;
        const wait =
          mapped.retryAfterMs ?? Math.min(250 * 2 ** (attempts - 1), 8000) * (0.5 + Math.random() / 2);
        if (!retryable || wait > this.#o.settings.maxRetryDelayMs) {
          this.#record(s, meta, 'error', mapped.error.message, null, started, attempts, request);
          throw mapped.error;
        }
        await this.#sleep(wait);
      }
    }
    if (result.kind === 'complete') {
      this.#record(s, meta, 'ok', null, result.response, started, attempts, request);
      return result;
    }
    return { kind: 'stream', events: this.#meter(s, meta, result.events, started, attempts, request) };
  }

  async *#meter(
    s: GrantState,
    meta: CallMeta,
    events: AsyncIterable<LlmStreamEvent>,
    started: number,
    attempts: number,
    request: LlmRequest,
  ): AsyncGenerator<LlmStreamEvent> {
    const acc = new StreamAccumulator();
    let done = false;
    try {
      for await (const event of events) {
        acc.add(event);
        yield event;
      }
      if (!acc.ended) throw new UpstreamError('upstream stream ended before the response was complete', 502);
      done = true;
      this.#record(s, meta, 'ok', null, acc.response(), started, attempts, request);
    } catch (error) {
      done = true;
      const mapped = this.#mapUpstream(error);
      this.#record(s, meta, 'error', mapped.error.message, acc.response(), started, attempts, request);
      throw mapped.error;
    } finally {
      // The client went away mid-stream: still account what was produced.
      if (!done)
        this.#record(
          s,
          meta,
          'error',
          'client closed the stream',
          acc.response(),
          started,
          attempts,
          request,
        );
    }
  }

  #mapUpstream(error: unknown): { error: AegisError; retryable: boolean; retryAfterMs: number | null } {
    if (error instanceof AegisError) return { error, retryable: false, retryAfterMs: null };
    if (error instanceof UpstreamError) {
      const st = error.status;
      if (st === null) {
        return {
          error: llmError(
            'UNAVAILABLE',
            `upstream unreachable: ${error.message}`,
            { kind: 'upstream', status: 502 },
            'check llm.providers.*.baseUrl in the server config',
          ),
          retryable: true,
          retryAfterMs: null,
        };
      }
      if (st === 429) {
        const retryAfterS = error.retryAfterMs === null ? undefined : Math.ceil(error.retryAfterMs / 1000);
        return {
          error: llmError('RATE_LIMITED', `upstream rate limit: ${error.message}`, {
            kind: 'rate',
            status: 429,
            ...(retryAfterS ? { retryAfterS } : {}),
          }),
          retryable: true,
          retryAfterMs: error.retryAfterMs,
        };
      }
      if (st >= 500) {
        return {
          error: llmError('UNAVAILABLE', `upstream error ${st}: ${error.message}`, {
            kind: 'upstream',
            status: 502,
          }),
          retryable: true,
          retryAfterMs: error.retryAfterMs,
        };
      }
      if (st === 401 || st === 403) {
        return {
          error: llmError(
            'UNAVAILABLE',
            `upstream refused the server's credentials (${st})`,
            { kind: 'upstream', status: 502 },
            'the operator should check the provider key (aegis secret set …)',
          ),
          retryable: false,
          retryAfterMs: null,
        };
      }
      return {
        error: llmError('USAGE', `upstream rejected the request (${st}): ${error.message}`, {
          kind: 'invalid',
          status: 400,
        }),
        retryable: false,
        retryAfterMs: null,
      };
    }
    const name = (error as Error | undefined)?.name;
    if (name === 'TimeoutError' || name === 'AbortError') {
      return {
        error: llmError(
          'UNAVAILABLE',
          `upstream did not answer within ${this.#o.settings.timeoutMs} ms`,
          { kind: 'timeout', status: 504 },
          'raise llm.timeout in the server config',
        ),
        retryable: true,
        retryAfterMs: null,
      };
    }
    return {
      error: llmError('UNAVAILABLE', `upstream call failed: ${(error as Error)?.message ?? String(error)}`, {
        kind: 'upstream',
        status: 502,
      }),
      retryable: true,
      retryAfterMs: null,
    };
  }

  #record(
    s: GrantState,
    meta: CallMeta,
    status: LlmCallRecord['status'],
    error: string | null,
    response: LlmResponse | null,
    started: number,
    attempts: number,
    request: LlmRequest,
  ): void {
    const inputTokens = response?.usage.inputTokens ?? 0;
    const outputTokens = response?.usage.outputTokens ?? 0;
    const route = this.#o.settings.models[meta.alias];
    const price = route?.price ?? null;
    const usd = price === null ? 0 : (inputTokens * price.input + outputTokens * price.output) / 1e6;
    if (attempts > 0) {
      s.calls++;
      s.inputTokens += inputTokens;
      s.outputTokens += outputTokens;
      s.usd += usd;
      this.#server?.add(ownersOf(s.grant), { calls: 1, tokens: inputTokens + outputTokens, usd });
    }
    const record: LlmCallRecord = {
      ...meta,
      system: meta.provider === null ? null : (route?.kind ?? null),
      responseModel: response?.model || null,
      status,
      error,
      inputTokens,
      outputTokens,
      usd,
      latencyMs: Math.round((this.#now() - started) * 1000) / 1000,
      attempts,
      budgetLeft: this.#left(s),
      ...(this.#o.settings.recordContent
        ? {
            prompt: { system: request.system, messages: request.messages },
            completion: response ? textOf(response.content) : '',
          }
        : {}),
    };
    this.#o.onCall?.(record);
    if (s.exhausted === null) {
      const now = this.#exhausted(s);
      if (now !== null) {
        s.exhausted = now;
        this.#o.onBudgetExhausted?.(s.grant.executionId, now);
      }
    }
  }
}
