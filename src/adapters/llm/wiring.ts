/**
 * Builds the orchestrator's one LLM gateway: providers, the sealed secret store for provider keys, the handler the
 * runtimes serve inside each sandbox (127.0.0.1:3129), and the event router runAgent subscribes to per execution.
 * `observe` sees every call (metrics, traces) after the router.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { type LlmCallRecord, LlmGateway } from '../../app/llm-gateway.ts';
import { LlmEventRouter, type LlmWiring } from '../../app/llm-wiring.ts';
import type { LlmSpendStore } from '../../app/ports.ts';
import type { LlmSettings } from '../../domain/llm/config.ts';
import { AnthropicProvider } from './anthropic.ts';
import { createLlmHandler } from './http-handler.ts';
import { OpenAiProvider } from './openai.ts';

export interface LlmWiringOptions {
  readonly settings: LlmSettings;
  /** Where `apiKeySecret` names resolve (the FileSecretStore). */
  readonly secrets: { get(name: string): Promise<string> };
  /** Also told every call (metrics, OpenTelemetry). */
  readonly observe?: (record: LlmCallRecord) => void;
  /** Where `llm.budgets` spend is persisted (the Store); required when the config has budgets. */
  readonly spend?: LlmSpendStore;
  /** A budget spend that could not be persisted. */
  readonly onSpendError?: (error: unknown) => void;
}

export function createLlmWiring(options: LlmWiringOptions): LlmWiring {
  const events = new LlmEventRouter();
  const gateway = new LlmGateway({
    settings: options.settings,
    providers: { openai: new OpenAiProvider(), anthropic: new AnthropicProvider() },
    secrets: options.secrets,
    newToken: () => randomBytes(32).toString('base64url'),
    onCall: (record) => {
      events.onCall(record);
      options.observe?.(record);
    },
    onBudgetExhausted: events.onBudgetExhausted,
    ...(options.spend ? { spend: options.spend } : {}),
    ...(options.onSpendError ? { onSpendError: options.onSpendError } : {}),
    now: () => performance.now(),
    sleep: (ms) => sleep(ms),
  });
  const wrap =
    (handle: ReturnType<typeof createLlmHandler>) => (req: IncomingMessage, res: ServerResponse) => {
      handle(req, res).catch(() => res.destroy());
    };
  const handler = wrap(createLlmHandler(gateway));
  const handlerFor = (token: string) =>
    wrap(
      createLlmHandler(gateway, {
        onlyToken: token,
        onDenied: (method, path) => {
          const executionId = gateway.executionOf(token);
          if (executionId !== undefined) events.onPathDenied(executionId, method, path);
        },
      }),
    );
  return { gateway, handler, handlerFor, events };
}
