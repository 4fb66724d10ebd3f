/**
 * How executions reach the LLM gateway: one gateway per orchestrator (built by the composition root), its node:http
 * handler (served inside each sandbox as the in-sandbox API), and a router that hands the gateway's process-wide
 * `onCall` / `onBudgetExhausted` reports to the execution they belong to (runAgent subscribes per execution).
 */
import type { LlmBudgetName, LlmCallRecord, LlmGateway } from './llm-gateway.ts';
import type { InSandboxHandler } from './ports.ts';

export interface LlmExecutionListener {
  onCall(record: LlmCallRecord): void;
  /** `rule`: the server budget (llm.budgets.…) that ran out; absent: the execution's spec.llm.budget. */
  onBudgetExhausted(budget: LlmBudgetName, rule?: string): void;
  /** A request to the in-sandbox API for a path/method it does not serve (answered 403). */
  onPathDenied?(method: string, path: string): void;
}

/** Pass `onCall` / `onBudgetExhausted` of the gateway's options to this router's methods. */
export class LlmEventRouter {
  readonly #listeners = new Map<string, LlmExecutionListener>();

  /** Reports of `executionId` go to `listener` until the returned function is called. */
  subscribe(executionId: string, listener: LlmExecutionListener): () => void {
    this.#listeners.set(executionId, listener);
    return () => {
      if (this.#listeners.get(executionId) === listener) this.#listeners.delete(executionId);
    };
  }

  readonly onCall = (record: LlmCallRecord): void => {
    this.#listeners.get(record.executionId)?.onCall(record);
  };

  readonly onBudgetExhausted = (executionId: string, budget: LlmBudgetName, rule?: string): void => {
    this.#listeners.get(executionId)?.onBudgetExhausted(budget, rule);
  };

  readonly onPathDenied = (executionId: string, method: string, path: string): void => {
    this.#listeners.get(executionId)?.onPathDenied?.(method, path);
  };
}

export interface LlmWiring {
  readonly gateway: LlmGateway;
  /** `createLlmHandler(gateway)`: what the runtime serves on the agent's 127.0.0.1:3129. */
  readonly handler: InSandboxHandler;
  /** A handler that accepts only `token`: what one sandbox is served, so another execution's token is useless there. */
  readonly handlerFor?: (token: string) => InSandboxHandler;
  readonly events: LlmEventRouter;
}

/** The in-sandbox API's port and the environment an agent with `spec.llm` gets (the token is its only credential). */
export const IN_SANDBOX_API_URL = 'http://127.0.0.1:3129';

export function llmEnv(token: string): Record<string, string> {
  return {
    AEGIS_API_URL: IN_SANDBOX_API_URL,
    AEGIS_TOKEN: token,
    OPENAI_BASE_URL: `${IN_SANDBOX_API_URL}/v1`,
    OPENAI_API_KEY: token,
    ANTHROPIC_BASE_URL: IN_SANDBOX_API_URL,
    ANTHROPIC_API_KEY: token,
  };
}
