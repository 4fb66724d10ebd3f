/**
 * Server budgets (`llm.budgets.keys.<id>` / `llm.budgets.agents.<name>`): shared by every execution of a key or an
 * agent, enforced by the gateway, persisted in the store (a restart — a new gateway over the same SQLite file —
 * does not reset them), reset only when their window rolls over.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { SqliteStore } from '../src/adapters/store/sqlite/store.ts';
import { type LlmCallRecord, LlmGateway, type LlmProvider } from '../src/app/llm-gateway.ts';
import type { LlmSpendStore } from '../src/app/ports.ts';
import { isAegisError } from '../src/domain/errors.ts';
import type { LlmRequest } from '../src/domain/llm/canonical.ts';
import { compileLlmConfig, LlmConfig, type LlmSettings } from '../src/domain/llm/config.ts';

const DAY = 86_400_000;

/** An upstream answering 10 input / 5 output tokens. */
const provider: LlmProvider = {
  call: async (route) => ({
    kind: 'complete',
    response: {
      id: 'r',
      model: route.model,
      content: [{ type: 'text', text: 'ok' }],
      stopReason: 'stop',
      usage: { inputTokens: 10, outputTokens: 5 },
    },
  }),
};

function settings(budgets: Record<string, unknown>): LlmSettings {
  return compileLlmConfig(
    LlmConfig.parse({
      providers: { up: { kind: 'openai', baseUrl: 'http://127.0.0.1:9/v1' } },
      models: { default: { provider: 'up', model: 'm-1' } },
      prices: { default: { input: 1000, output: 2000 } },
      recordContent: false,
      budgets,
    }),
  );
}

const request: LlmRequest = {
  model: 'default',
  system: null,
  messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }] as unknown as LlmRequest['messages'],
  tools: [],
  toolChoice: null,
  maxTokens: null,
  temperature: null,
  topP: null,
  stop: [],
  stream: false,
};

describe('server LLM budgets across executions', () => {
  let dir: string;
  let store: SqliteStore;
  let wall: number;
  let calls: LlmCallRecord[];
  let exhausted: { executionId: string; budget: string; rule?: string }[];

  const gateway = (s: LlmSettings, spend: LlmSpendStore = store) =>
    new LlmGateway({
      settings: s,
      providers: { openai: provider, anthropic: provider },
      secrets: { get: async () => '' },
      newToken: () => `t${Math.random().toString(36).slice(2)}`,
      onCall: (r) => calls.push(r),
      onBudgetExhausted: (executionId, budget, rule) =>
        exhausted.push({ executionId, budget, ...(rule ? { rule } : {}) }),
      now: () => performance.now(),
      sleep: async () => {},
      spend,
      wallNow: () => wall,
    });

  const grant = (g: LlmGateway, executionId: string, requestedBy: string | null, agent = 'a1') =>
    g.issue({
      executionId,
      agent,
      models: ['default'],
      budget: { tokens: null, calls: null, usd: null },
      requestedBy,
    });

  const refusal = async (g: LlmGateway, token: string) => {
    try {
      await g.call(token, request, 'chat');
    } catch (error) {
      assert.ok(isAegisError(error));
      return error;
    }
    assert.fail('the call was not refused');
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-llm-budgets-'));
    store = SqliteStore.open(join(dir, 'aegis.db'));
    wall = 10 * DAY + 1000;
    calls = [];
    exhausted = [];
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a key budget spans executions, survives a restart, and leaves other keys alone', async () => {
    const s = settings({ keys: { key_A: { calls: 3 } } });
    const g1 = gateway(s);
    await g1.call(grant(g1, 'ex_1', 'key_A'), request, 'chat');
    await g1.call(grant(g1, 'ex_1b', 'key_A'), request, 'chat');
    await g1.flushSpend();
    assert.deepEqual(await store.getLlmSpend('key:key_A', 0), { calls: 2, tokens: 30, usd: 0.04 });

    // Restart: a new process (gateway) over the same database file.
    await store.close();
    store = SqliteStore.open(join(dir, 'aegis.db'));
    const g2 = gateway(s);
    const t3 = grant(g2, 'ex_2', 'key_A');
    await g2.call(t3, request, 'chat');
    const error = await refusal(g2, t3);
    assert.equal(error.code, 'RATE_LIMITED');
    assert.match(error.message, /LLM calls budget llm\.budgets\.keys\.key_A is exhausted/);
    assert.deepEqual(error.details.llm, { kind: 'budget', status: 429 });
    assert.deepEqual(exhausted, [{ executionId: 'ex_2', budget: 'calls', rule: 'llm.budgets.keys.key_A' }]);
    assert.equal(calls.at(-1)?.status, 'budget');
    // A fresh execution of the same key is refused at once; another key, or `aegis run` (no key), is not.
    await refusal(g2, grant(g2, 'ex_3', 'key_A'));
    await g2.call(grant(g2, 'ex_4', 'key_B'), request, 'chat');
    await g2.call(grant(g2, 'ex_5', null), request, 'chat');
  });

  it('an agent budget counts tokens and usd of every execution of that agent; a window rollover resets it', async () => {
    const g = gateway(settings({ agents: { a1: { tokens: 40, window: '24h' } } }));
    await g.call(grant(g, 'ex_1', 'key_A'), request, 'chat');
    await g.call(grant(g, 'ex_2', 'key_B'), request, 'chat');
    // 30 of 40 tokens spent: the next call may ask for 10 at most.
    let asked: number | null | undefined;
    const g2 = new LlmGateway({
      settings: settings({ agents: { a1: { tokens: 40, window: '24h' } } }),
      providers: {
        openai: {
          call: async (route, req, key, signal) => {
            asked = req.maxTokens;
            return provider.call(route, req, key, signal);
          },
        },
        anthropic: provider,
      },
      secrets: { get: async () => '' },
      newToken: () => `t${Math.random()}`,
      now: () => performance.now(),
      sleep: async () => {},
      spend: store,
      wallNow: () => wall,
    });
    await g.flushSpend();
    await g2.call(grant(g2, 'ex_3', null), request, 'chat');
    assert.equal(asked, 10);
    await g2.flushSpend();
    const refused = await refusal(g, grant(g, 'ex_4', null));
    assert.match(refused.message, /tokens budget llm\.budgets\.agents\.a1/);
    // Another agent is not charged.
    await g.call(grant(g, 'ex_5', null, 'a2'), request, 'chat');
    // Next day: a new window.
    wall += DAY;
    await g.call(grant(g, 'ex_6', null), request, 'chat');
  });

  it('a usd budget refuses once the priced spend reaches it', async () => {
    // Each call costs (10 * 1000 + 5 * 2000) / 1e6 = 0.02 USD.
    const g = gateway(settings({ keys: { key_A: { usd: 0.05 } } }));
    const t = grant(g, 'ex_1', 'key_A');
    for (let i = 0; i < 3; i++) await g.call(t, request, 'chat');
    await g.flushSpend();
    assert.match((await refusal(g, t)).message, /usd budget/);
  });

  it('refuses to start without a spend store when budgets are configured', () => {
    assert.throws(
      () =>
        new LlmGateway({
          settings: settings({ keys: { key_A: { calls: 1 } } }),
          providers: { openai: provider, anthropic: provider },
          secrets: { get: async () => '' },
          newToken: () => 't',
          now: () => 0,
          sleep: async () => {},
        }),
      /no spend store/,
    );
  });
});
