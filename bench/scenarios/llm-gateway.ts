/**
 * LLM gateway overhead (issue 13): the same OpenAI Chat Completions calls made directly to the scripted upstream
 * (test/support/scripted-llm.ts, on loopback) and through the gateway (token check, canonical parse/render, key from
 * the secret store, budget accounting, the `llm.call` record), interleaved call by call in one run so both see the
 * same machine. Reports the added latency of a non-streamed call and the added time to first token of a streamed
 * one, p50 and p99. The gateway is served on a loopback listener, as in its handler tests: the in-sandbox socket
 * hop (the netns listener) is not in these numbers.
 *
 * Standalone: `node bench/scenarios/llm-gateway.ts [--quick]`.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLlmWiring } from '../../src/adapters/llm/wiring.ts';
import type { LlmSettings } from '../../src/domain/llm/config.ts';
import { startScriptedLlm } from '../../test/support/scripted-llm.ts';
import { type ChatTarget, timeChat, timeFirstToken } from '../lib/llm-client.ts';
import type { BenchOptions, Scenario, ScenarioReport } from '../lib/scenario.ts';
import { formatMs, roundSummary, type Summary, summarize } from '../lib/stats.ts';
import { renderMarkdown, renderText, type Table } from '../lib/table.ts';

export interface LlmGatewayBenchResult {
  readonly calls: number;
  readonly direct: { readonly chat: Summary; readonly firstToken: Summary };
  readonly gateway: { readonly chat: Summary; readonly firstToken: Summary };
  /** gateway − direct, per percentile. */
  readonly added: {
    readonly chatP50: number;
    readonly chatP99: number;
    readonly firstTokenP50: number;
    readonly firstTokenP99: number;
  };
}

export async function runLlmGatewayBench(opts: {
  calls: number;
  warmup: number;
}): Promise<LlmGatewayBenchResult> {
  const upstream = await startScriptedLlm();
  const key = 'sk-bench-upstream';
  const settings: LlmSettings = {
    models: {
      default: {
        alias: 'default',
        provider: 'scripted',
        kind: 'openai',
        baseUrl: upstream.baseUrl,
        apiKeySecret: 'UPSTREAM_KEY',
        model: 'scripted-1',
        maxTokens: 256,
        price: { input: 1, output: 2 },
      },
    },
    timeoutMs: 10_000,
    retries: 0,
    maxRetryDelayMs: 0,
    recordContent: false,
  };
  const llm = createLlmWiring({ settings, secrets: { get: async () => key } });
  const token = llm.gateway.issue({
    executionId: 'ex_bench',
    agent: 'bench',
    models: ['default'],
    budget: { tokens: null, calls: null, usd: null },
  });
  const handler = llm.handlerFor?.(token) ?? llm.handler;
  const server: Server = createServer(handler as unknown as Parameters<typeof createServer>[1]);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const gatewayUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  const direct: ChatTarget = { baseUrl: upstream.baseUrl, apiKey: key, model: 'scripted-1' };
  const viaGateway: ChatTarget = { baseUrl: gatewayUrl, apiKey: token, model: 'default' };
  const samples = {
    directChat: [] as number[],
    gatewayChat: [] as number[],
    directFt: [] as number[],
    gatewayFt: [] as number[],
  };
  try {
    for (let i = 0; i < opts.warmup + opts.calls; i++) {
      const keep = i >= opts.warmup;
      const text = `bench ${i} hello there`;
      // Alternate which goes first, so neither always rides the other's warm caches.
      const order = i % 2 === 0 ? [direct, viaGateway] : [viaGateway, direct];
      for (const target of order) {
        const chat = await timeChat(target, text);
        const ft = await timeFirstToken(target, text);
        if (!keep) continue;
        if (target === direct) {
          samples.directChat.push(chat);
          samples.directFt.push(ft);
        } else {
          samples.gatewayChat.push(chat);
          samples.gatewayFt.push(ft);
        }
      }
    }
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    llm.gateway.revoke(token);
    await upstream.close();
  }
  const d = { chat: summarize(samples.directChat), firstToken: summarize(samples.directFt) };
  const g = { chat: summarize(samples.gatewayChat), firstToken: summarize(samples.gatewayFt) };
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  return {
    calls: opts.calls,
    direct: { chat: roundSummary(d.chat), firstToken: roundSummary(d.firstToken) },
    gateway: { chat: roundSummary(g.chat), firstToken: roundSummary(g.firstToken) },
    added: {
      chatP50: r3(g.chat.p50 - d.chat.p50),
      chatP99: r3(g.chat.p99 - d.chat.p99),
      firstTokenP50: r3(g.firstToken.p50 - d.firstToken.p50),
      firstTokenP99: r3(g.firstToken.p99 - d.firstToken.p99),
    },
  };
}

const signed = (ms: number) => `${ms >= 0 ? '+' : ''}${formatMs(ms)}`;

function table(r: LlmGatewayBenchResult): Table {
  const row = (what: string, direct: Summary, gateway: Summary, p50: number, p99: number) => [
    what,
    `${formatMs(direct.p50)} / ${formatMs(direct.p99)}`,
    `${formatMs(gateway.p50)} / ${formatMs(gateway.p99)}`,
    `${signed(p50)} / ${signed(p99)}`,
  ];
  return {
    headers: [
      `Chat Completions, ${r.calls} calls each`,
      'direct p50 / p99 (ms)',
      'via gateway p50 / p99 (ms)',
      'added p50 / p99 (ms)',
    ],
    rows: [
      row('non-streamed call, total', r.direct.chat, r.gateway.chat, r.added.chatP50, r.added.chatP99),
      row(
        'streamed call, time to first token',
        r.direct.firstToken,
        r.gateway.firstToken,
        r.added.firstTokenP50,
        r.added.firstTokenP99,
      ),
    ],
  };
}

/** `npm run bench -- llm-gateway`: `runs` × 5 calls per variant (quick: 20 × 5). */
export const llmGateway: Scenario = {
  name: 'llm-gateway',
  description:
    'LLM gateway added latency per call and streaming time-to-first-token vs the upstream directly',
  async run(options: BenchOptions): Promise<ScenarioReport> {
    const calls = options.runs * 5;
    options.log(`llm-gateway: ${calls} calls per variant, interleaved`);
    const r = await runLlmGatewayBench({ calls, warmup: Math.max(10, options.warmup * 4) });
    const t = table(r);
    return {
      text: `${renderText(t)}\n`,
      docs: [{ marker: 'llm-gateway', markdown: renderMarkdown(t) }],
      raw: r,
    };
  },
};

if (import.meta.main) {
  const quick = process.argv.includes('--quick');
  const r = await runLlmGatewayBench({ calls: quick ? 100 : 500, warmup: quick ? 12 : 20 });
  process.stdout.write(`${renderText(table(r))}\n`);
}
