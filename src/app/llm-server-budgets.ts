/**
 * Budgets across executions (`llm.budgets.keys.<keyId>`, `llm.budgets.agents.<name>` in the server config): every
 * execution requested by one API key, or of one agent, draws on the same tokens/calls/USD over a fixed window
 * aligned to the Unix epoch (or forever). The spend is kept in the store (LlmSpendStore), so a restart does not
 * reset it, and servers sharing one PostgreSQL share it.
 *
 * Checked before each call against the store (after this process's own pending writes land); added after each call
 * that reached an upstream. Like spec.llm.budget, calls already in flight when a limit is reached still complete.
 */
import type { LlmSettings, ServerBudget } from '../domain/llm/config.ts';
import type { LlmBudgetName } from './llm-gateway.ts';
import type { LlmSpend, LlmSpendStore } from './ports.ts';

/** Who a call is charged to, besides its execution. */
export interface BudgetOwners {
  /** The API key id that requested the execution (`local` for the unix socket); null: `aegis run`. */
  readonly requestedBy: string | null;
  readonly agent: string;
}

export interface ServerBudgetCheck {
  /** The first exhausted budget, or null. */
  readonly exhausted: { readonly rule: string; readonly budget: LlmBudgetName } | null;
  /** Fewest tokens left over the applicable budgets; null: no token limit applies. */
  readonly tokensLeft: number | null;
}

export interface LlmServerBudgetsOptions {
  readonly budgets: NonNullable<LlmSettings['budgets']>;
  readonly store: LlmSpendStore;
  /** Wall-clock ms (windows are aligned to the epoch). */
  readonly nowMs: () => number;
  /** A spend that could not be persisted (it is lost; the call itself already happened). */
  readonly onError?: (error: unknown) => void;
}

interface Applicable {
  readonly scope: string;
  readonly budget: ServerBudget;
}

export class LlmServerBudgets {
  readonly #o: LlmServerBudgetsOptions;
  /** Last write per scope+window: a check waits for it, so sequential calls see each other's spend. */
  readonly #pending = new Map<string, Promise<void>>();

  constructor(options: LlmServerBudgetsOptions) {
    this.#o = options;
  }

  #applicable(owners: BudgetOwners): Applicable[] {
    const out: Applicable[] = [];
    const key = owners.requestedBy === null ? undefined : this.#o.budgets.keys[owners.requestedBy];
    if (key !== undefined) out.push({ scope: `key:${owners.requestedBy}`, budget: key });
    const agent = this.#o.budgets.agents[owners.agent];
    if (agent !== undefined) out.push({ scope: `agent:${owners.agent}`, budget: agent });
    return out;
  }

  #windowStart(budget: ServerBudget): number {
    if (budget.windowMs === null) return 0;
    const now = this.#o.nowMs();
    return now - (now % budget.windowMs);
  }

  /** True when any server budget applies to these owners (the gateway skips the store otherwise). */
  applies(owners: BudgetOwners): boolean {
    return this.#applicable(owners).length > 0;
  }

  async check(owners: BudgetOwners): Promise<ServerBudgetCheck> {
    let tokensLeft: number | null = null;
    for (const { scope, budget } of this.#applicable(owners)) {
      const window = this.#windowStart(budget);
      await this.#pending.get(`${scope}\0${window}`);
      const spent = await this.#o.store.getLlmSpend(scope, window);
      const left = {
        calls: budget.calls === null ? null : budget.calls - spent.calls,
        tokens: budget.tokens === null ? null : budget.tokens - spent.tokens,
        usd: budget.usd === null ? null : budget.usd - spent.usd,
      };
      const exhausted: LlmBudgetName | null =
        left.calls !== null && left.calls <= 0
          ? 'calls'
          : left.tokens !== null && left.tokens <= 0
            ? 'tokens'
            : left.usd !== null && left.usd <= 1e-9
              ? 'usd'
              : null;
      if (exhausted !== null) return { exhausted: { rule: budget.rule, budget: exhausted }, tokensLeft: 0 };
      if (left.tokens !== null)
        tokensLeft = tokensLeft === null ? left.tokens : Math.min(tokensLeft, left.tokens);
    }
    return { exhausted: null, tokensLeft };
  }

  /** Charges one finished call to every applicable budget (persisted in the background, in order per scope). */
  add(owners: BudgetOwners, delta: LlmSpend): void {
    for (const { scope, budget } of this.#applicable(owners)) {
      const window = this.#windowStart(budget);
      const key = `${scope}\0${window}`;
      const previous = this.#pending.get(key) ?? Promise.resolve();
      const write = previous
        .then(() => this.#o.store.addLlmSpend(scope, window, delta))
        .catch((error: unknown) => this.#o.onError?.(error));
      this.#pending.set(key, write);
      void write.then(() => {
        if (this.#pending.get(key) === write) this.#pending.delete(key);
      });
    }
  }

  /** Resolves once every charge made so far is in the store. */
  async flush(): Promise<void> {
    await Promise.all([...this.#pending.values()]);
  }
}
