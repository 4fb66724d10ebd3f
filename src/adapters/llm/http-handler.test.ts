/**
 * The gateway end to end on loopback: the official `openai` and `@anthropic-ai/sdk` clients (holding only an
 * execution token) → handler → scripted upstreams (holding the real keys).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { promisify } from 'node:util';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { type ScriptedLlm, startScriptedLlm } from '../../../test/support/scripted-llm.ts';
import { type LlmBudgetName, type LlmCallRecord, LlmGateway } from '../../app/llm-gateway.ts';
import type { LlmSettings, ModelRoute } from '../../domain/llm/config.ts';
import { AnthropicProvider } from './anthropic.ts';
import { createLlmHandler } from './http-handler.ts';
import { OpenAiProvider } from './openai.ts';

const KEYS: Record<string, string> = { OPENAI_KEY: 'sk-REAL-openai-123', ANTHROPIC_KEY: 'sk-ant-REAL-456' };

let upstream: ScriptedLlm;
let server: Server;
let url: string;
let gateway: LlmGateway;
let calls: LlmCallRecord[];
let exhausted: { executionId: string; budget: LlmBudgetName }[];
let sleeps: number[];

function route(alias: string, kind: 'openai' | 'anthropic', model: string): ModelRoute {
  return {
    alias,
    provider: kind,
    kind,
    baseUrl: upstream.baseUrl,
    apiKeySecret: kind === 'openai' ? 'OPENAI_KEY' : 'ANTHROPIC_KEY',
    model,
    maxTokens: 256,
    price: { input: 1, output: 2 },
  };
}

before(async () => {
  upstream = await startScriptedLlm();
  const settings: LlmSettings = {
    models: {
      default: route('default', 'openai', 'up-gpt'),
      fast: route('fast', 'anthropic', 'up-claude'),
      smart: route('smart', 'openai', 'up-gpt-big'),
    },
    timeoutMs: 10_000,
    retries: 2,
    maxRetryDelayMs: 30_000,
    recordContent: false,
  };
  gateway = new LlmGateway({
    settings,
    providers: { openai: new OpenAiProvider(), anthropic: new AnthropicProvider() },
    secrets: { get: async (name) => KEYS[name] ?? '' },
    newToken: () => randomBytes(24).toString('base64url'),
    onCall: (record) => calls.push(record),
    onBudgetExhausted: (executionId, budget) => exhausted.push({ executionId, budget }),
    now: () => performance.now(),
    sleep: async (ms) => {
      sleeps.push(ms);
    },
  });
  const handler = createLlmHandler(gateway);
  server = createServer((req, res) => void handler(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await upstream.close();
});

beforeEach(() => {
  calls = [];
  exhausted = [];
  sleeps = [];
  upstream.requests.length = 0;
});

function grant(
  models = ['default', 'fast'],
  budget: { tokens: number | null; calls: number | null; usd: number | null } = {
    tokens: null,
    calls: null,
    usd: null,
  },
) {
  return gateway.issue({
    executionId: `ex_${randomBytes(4).toString('hex')}`,
    agent: 'demo',
    models,
    budget,
  });
}
const openai = (token: string) => new OpenAI({ apiKey: token, baseURL: `${url}/v1`, maxRetries: 0 });
const anthropic = (token: string) => new Anthropic({ apiKey: token, baseURL: url, maxRetries: 0 });
const WEATHER_TOOL = {
  type: 'function' as const,
  function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } },
};

describe('LLM gateway through the official SDKs', () => {
  it('Chat Completions: the upstream sees the real key and model, the client only its token', async () => {
    const token = grant();
    const reply = await openai(token).chat.completions.create({
      model: 'default',
      messages: [{ role: 'user', content: 'hi' }],
    });
    assert.equal(reply.choices[0]?.message.content, 'echo: hi');
    assert.deepEqual(reply.usage, { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 });
    assert.equal(upstream.requests.length, 1);
    assert.equal(upstream.requests[0]?.headers.authorization, `Bearer ${KEYS.OPENAI_KEY}`);
    assert.equal(upstream.requests[0]?.body.model, 'up-gpt');
    assert.ok(
      !JSON.stringify(upstream.requests[0]?.headers).includes(token),
      'the token never goes upstream',
    );
    assert.equal(calls.length, 1);
    assert.equal(calls[0]?.status, 'ok');
    assert.equal(calls[0]?.alias, 'default');
    assert.equal(calls[0]?.upstreamModel, 'up-gpt');
    assert.equal(calls[0]?.inputTokens, 10);
    assert.equal(calls[0]?.usd, (10 * 1 + 5 * 2) / 1e6);
    assert.equal(calls[0]?.prompt, undefined, 'no content recorded unless the operator enables it');
  });

  it('Chat Completions streaming with a tool call assembles the arguments', async () => {
    const stream = await openai(grant()).chat.completions.create({
      model: 'default',
      messages: [{ role: 'user', content: 'weather in Paris?' }],
      tools: [WEATHER_TOOL],
      stream: true,
      stream_options: { include_usage: true },
    });
    let args = '';
    let name = '';
    let finish: string | null = null;
    let usage: unknown;
    for await (const chunk of stream) {
      const call = chunk.choices[0]?.delta.tool_calls?.[0];
      if (call?.function?.name) name = call.function.name;
      args += call?.function?.arguments ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(name, 'get_weather');
    assert.deepEqual(JSON.parse(args), { city: 'Paris' });
    assert.equal(finish, 'tool_calls');
    assert.deepEqual(usage, { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 });
    assert.equal(upstream.requests[0]?.body.stream, true);
    assert.equal(calls[0]?.outputTokens, 5);
  });

  it('Responses, plain and streaming', async () => {
    const client = openai(grant());
    const response = await client.responses.create({
      model: 'default',
      input: 'hello',
      instructions: 'be brief',
    });
    assert.equal(response.output_text, 'echo: hello');
    assert.equal(response.usage?.total_tokens, 15);
    const upstreamMessages = upstream.requests[0]?.body.messages as { role: string }[];
    assert.equal(upstreamMessages[0]?.role, 'system');

    const stream = await client.responses.create({ model: 'fast', input: 'streamed', stream: true });
    let text = '';
    let completed: string | undefined;
    for await (const event of stream) {
      if (event.type === 'response.output_text.delta') text += event.delta;
      if (event.type === 'response.completed') completed = event.response.output_text ?? 'completed';
    }
    assert.equal(text, 'echo: streamed');
    assert.ok(completed !== undefined);
    assert.equal(upstream.requests[1]?.path, '/v1/messages', 'fast is an Anthropic upstream: translated');
  });

  it('Anthropic Messages via @anthropic-ai/sdk, native and translated to an OpenAI upstream, streaming', async () => {
    const client = anthropic(grant());
    const native = await client.messages.create({
      model: 'fast',
      max_tokens: 100,
      messages: [{ role: 'user', content: 'bonjour' }],
    });
    assert.deepEqual(native.content, [{ type: 'text', text: 'echo: bonjour' }]);
    assert.equal(upstream.requests[0]?.headers['x-api-key'], KEYS.ANTHROPIC_KEY);
    assert.equal(upstream.requests[0]?.body.model, 'up-claude');

    const translated = await client.messages
      .stream({
        model: 'default',
        max_tokens: 100,
        messages: [{ role: 'user', content: 'weather please' }],
        tools: [
          { name: 'get_weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } },
        ],
      })
      .finalMessage();
    assert.equal(upstream.requests[1]?.path, '/v1/chat/completions');
    assert.equal(translated.stop_reason, 'tool_use');
    const block = translated.content[0];
    assert.equal(block?.type, 'tool_use');
    assert.deepEqual(block?.type === 'tool_use' ? block.input : null, { city: 'Paris' });
    assert.equal(translated.usage.output_tokens, 5);
  });

  it('a tool result round-trips across families', async () => {
    const reply = await openai(grant()).chat.completions.create({
      model: 'fast',
      messages: [
        { role: 'user', content: 'weather?' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [
            {
              id: 'call_9',
              type: 'function',
              function: { name: 'get_weather', arguments: '{"city":"Oslo"}' },
            },
          ],
        },
        { role: 'tool', tool_call_id: 'call_9', content: 'sunny' },
      ],
    });
    assert.equal(reply.choices[0]?.message.content, 'echo: tool:sunny');
    const sent = upstream.requests[0]?.body.messages as { role: string; content: { type: string }[] }[];
    assert.deepEqual(
      sent.map((m) => [m.role, m.content.map((b) => b.type)]),
      [
        ['user', ['text']],
        ['assistant', ['tool_use']],
        ['user', ['tool_result']],
      ],
    );
  });

  it('attack: a model alias not granted is 403 in each protocol, audited, and never reaches upstream', async () => {
    const token = grant(['default']);
    await assert.rejects(
      openai(token).chat.completions.create({ model: 'smart', messages: [{ role: 'user', content: 'x' }] }),
      (error: unknown) => error instanceof OpenAI.PermissionDeniedError && /not granted/.test(error.message),
    );
    await assert.rejects(
      anthropic(token).messages.create({
        model: 'fast',
        max_tokens: 5,
        messages: [{ role: 'user', content: 'x' }],
      }),
      (error: unknown) => error instanceof Anthropic.PermissionDeniedError,
    );
    assert.equal(upstream.requests.length, 0);
    assert.deepEqual(
      calls.map((c) => [c.alias, c.status]),
      [
        ['smart', 'denied'],
        ['fast', 'denied'],
      ],
    );
  });

  it('attack: a guessed or missing token is 401', async () => {
    await assert.rejects(
      openai('aegis-llm-guess').chat.completions.create({
        model: 'default',
        messages: [{ role: 'user', content: 'x' }],
      }),
      (error: unknown) => error instanceof OpenAI.AuthenticationError,
    );
    assert.equal(upstream.requests.length, 0);
  });

  it("attack: a sandbox's endpoint refuses another execution's token (a leaked token spends nothing there)", async () => {
    const mine = grant(['default']);
    const theirs = grant(['default']);
    const own = createLlmHandler(gateway, { onlyToken: mine });
    const sandboxServer = createServer((req, res) => void own(req, res));
    await new Promise<void>((resolve) => sandboxServer.listen(0, '127.0.0.1', resolve));
    const sandboxUrl = `http://127.0.0.1:${(sandboxServer.address() as AddressInfo).port}/v1`;
    try {
      await assert.rejects(
        new OpenAI({ apiKey: theirs, baseURL: sandboxUrl, maxRetries: 0 }).chat.completions.create({
          model: 'default',
          messages: [{ role: 'user', content: 'x' }],
        }),
        (error: unknown) => error instanceof OpenAI.AuthenticationError,
      );
      assert.equal(upstream.requests.length, 0);
      const ok = await new OpenAI({ apiKey: mine, baseURL: sandboxUrl }).chat.completions.create({
        model: 'default',
        messages: [{ role: 'user', content: 'x' }],
      });
      assert.ok(ok.choices.length > 0);
    } finally {
      sandboxServer.closeAllConnections();
      await new Promise((resolve) => sandboxServer.close(resolve));
    }
  });

  it('attack: without a valid token the body is never read (an endless upload gets its 401 at once)', async () => {
    const { request } = await import('node:http');
    const status = await new Promise<number>((resolveStatus, reject) => {
      const req = request(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: 'Bearer aegis-llm-guess', 'content-type': 'application/json' },
      });
      req.on('response', (response) => {
        response.resume();
        resolveStatus(response.statusCode ?? 0);
        req.destroy();
      });
      req.on('error', (error) =>
        (error as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(error),
      );
      req.write('{"model": "default", "messages": ['); // and never ends the body
    });
    assert.equal(status, 401);
    assert.equal(upstream.requests.length, 0);
  });

  it('a spent budget is a 429 the SDKs raise at once (no retries), reported once', async () => {
    const token = grant(['default'], { tokens: null, calls: 2, usd: null });
    const client = new OpenAI({ apiKey: token, baseURL: `${url}/v1` }); // default retries on: x-should-retry stops them
    for (let i = 0; i < 2; i++) {
      await client.chat.completions.create({ model: 'default', messages: [{ role: 'user', content: 'x' }] });
    }
    assert.deepEqual(
      exhausted.map((e) => e.budget),
      ['calls'],
    );
    await assert.rejects(
      client.chat.completions.create({ model: 'default', messages: [{ role: 'user', content: 'x' }] }),
      (error: unknown) => error instanceof OpenAI.RateLimitError && error.code === 'budget_exhausted',
    );
    assert.equal(upstream.requests.length, 2);
    assert.equal(calls.at(-1)?.status, 'budget');
    assert.deepEqual(calls.at(-1)?.budgetLeft, { tokens: null, calls: 0, usd: null });
    assert.equal(exhausted.length, 1);
  });

  it('a token budget caps max_tokens upstream', async () => {
    const token = grant(['default'], { tokens: 20, calls: null, usd: null });
    await openai(token).chat.completions.create({
      model: 'default',
      max_tokens: 500,
      messages: [{ role: 'user', content: 'x' }],
    });
    assert.equal(upstream.requests[0]?.body.max_tokens, 20);
  });

  it('retries an upstream 429 after its Retry-After, once recorded', async () => {
    upstream.failNext(429, { 'retry-after': '1' });
    const reply = await openai(grant()).chat.completions.create({
      model: 'default',
      messages: [{ role: 'user', content: 'again' }],
    });
    assert.equal(reply.choices[0]?.message.content, 'echo: again');
    assert.deepEqual(sleeps, [1000]);
    assert.equal(upstream.requests.length, 2);
    assert.equal(calls.length, 1);
    assert.equal(calls[0]?.attempts, 2);
  });

  it('maps persistent upstream failures to a clear error, never a hang', async () => {
    upstream.failNext(503, {}, 3);
    await assert.rejects(
      anthropic(grant()).messages.create({
        model: 'fast',
        max_tokens: 5,
        messages: [{ role: 'user', content: 'x' }],
      }),
      (error: unknown) =>
        error instanceof Anthropic.APIError &&
        error.status === 502 &&
        /upstream error 503/.test(error.message),
    );
    assert.equal(upstream.requests.length, 3);
    assert.equal(calls[0]?.status, 'error');
  });
});

const SDK = resolve(import.meta.dirname, '../../../sdk/in-sandbox');
const run = promisify(execFile);

describe('in-sandbox SDKs against the gateway', () => {
  it('Python `import aegis`: input, llm.chat (plain and streamed), output, typed budget error', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'aegis-sdk-py-'));
    try {
      await writeFile(join(dir, 'in.json'), '{"q": "ping"}');
      const script = [
        'import aegis',
        'q = aegis.input()["q"]',
        'r = aegis.llm.chat([{"role": "user", "content": q}])',
        'streamed = "".join(aegis.llm.chat([{"role": "user", "content": "s"}], stream=True))',
        'try:',
        '    aegis.llm.chat([{"role": "user", "content": "x"}])',
        '    kind = None',
        'except aegis.BudgetExceeded as e:',
        '    kind = type(e).__name__',
        'aegis.log("done")',
        'aegis.output({"content": r["content"], "streamed": streamed, "error": kind})',
      ].join('\n');
      const token = grant(['default'], { tokens: null, calls: 2, usd: null });
      const env = {
        PATH: process.env.PATH ?? '',
        PYTHONPATH: join(SDK, 'python'),
        AEGIS_API_URL: url,
        AEGIS_TOKEN: token,
        AEGIS_INPUT_FILE: join(dir, 'in.json'),
        AEGIS_OUTPUT_FILE: join(dir, 'out.json'),
      };
      const { stderr } = await run('python3', ['-c', script], { env });
      assert.match(stderr, /done/);
      assert.deepEqual(JSON.parse(await readFile(join(dir, 'out.json'), 'utf8')), {
        content: 'echo: ping',
        streamed: 'echo: s',
        error: 'BudgetExceeded',
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("Node `import aegis from 'aegis'`: llm.chat with tools, streaming, typed 403", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'aegis-sdk-node-'));
    try {
      await mkdir(join(dir, 'node_modules'));
      await symlink(join(SDK, 'node/aegis'), join(dir, 'node_modules/aegis'));
      await writeFile(
        join(dir, 'agent.mjs'),
        [
          "import aegis, { PermissionDenied } from 'aegis';",
          "const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }];",
          "const r = await aegis.llm.chat([{ role: 'user', content: 'weather?' }], { tools });",
          "let streamed = '';",
          "for await (const t of await aegis.llm.chat([{ role: 'user', content: 'n' }], { stream: true })) streamed += t;",
          'let denied = null;',
          "try { await aegis.llm.chat([{ role: 'user', content: 'x' }], { model: 'smart' }); } catch (e) { denied = e instanceof PermissionDenied ? e.status : String(e); }",
          'aegis.output({ tool: r.toolCalls[0].function.name, streamed, denied });',
        ].join('\n'),
      );
      const env = {
        PATH: process.env.PATH ?? '',
        AEGIS_API_URL: url,
        AEGIS_TOKEN: grant(['default']),
        AEGIS_OUTPUT_FILE: join(dir, 'out.json'),
      };
      await run(process.execPath, [join(dir, 'agent.mjs')], { env, cwd: dir });
      assert.deepEqual(JSON.parse(await readFile(join(dir, 'out.json'), 'utf8')), {
        tool: 'get_weather',
        streamed: 'echo: n',
        denied: 403,
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
