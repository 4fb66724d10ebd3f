/**
 * Adversarial + end to end: agents that call models through the in-sandbox API (issue 13). Real sandboxes, real
 * clients — the Python `aegis` SDK, the official `openai` npm package (Chat Completions and Responses, streaming and
 * not) and `@anthropic-ai/sdk`, vendored into the agent's dir — against the scripted upstreams on the host's
 * loopback. The upstream sees the real key; the sandbox never does: not in its env, files, /proc, nor in the agent
 * process's memory (scanned from outside through /proc/<pid>/mem). The agent plays the attacker too: it guesses
 * another token, calls an ungranted alias, and runs out of budget.
 */
import assert from 'node:assert/strict';
import { closeSync, cpSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { createLlmWiring } from '../../src/adapters/llm/wiring.ts';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import type { LlmCallRecord } from '../../src/app/llm-gateway.ts';
import type { LlmWiring } from '../../src/app/llm-wiring.ts';
import { runAgent } from '../../src/app/run-agent.ts';
import type { LlmSettings, ModelRoute } from '../../src/domain/llm/config.ts';
import { type ScriptedLlm, startScriptedLlm } from '../support/scripted-llm.ts';
import { Harness, hostSkipReason, processesOfExecution, REPO_ROOT, type Report } from './harness.ts';

const skip = hostSkipReason();
const OPENAI_KEY = `sk-REAL-openai-${process.pid}-7f3a9c1e5b`;
const ANTHROPIC_KEY = `sk-ant-REAL-${process.pid}-2d8e4f6a0c`;

let h: Harness;
let upstream: ScriptedLlm;
let llm: LlmWiring;
let settings: LlmSettings;
const observed: LlmCallRecord[] = [];

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

interface LlmAgent {
  readonly name: string;
  readonly language: 'python' | 'node';
  readonly code: string;
  readonly models: readonly string[];
  readonly budget?: Record<string, number>;
  readonly vendor?: readonly string[];
  readonly allow?: readonly string[];
}

async function run(
  spec: LlmAgent,
  options: {
    onLog?: (text: string, id: string) => void;
    signal?: AbortSignal;
    llm?: LlmWiring;
    requestedBy?: string;
  } = {},
) {
  const dir = h.tempDir(`llm-${spec.name}`);
  const entrypoint = spec.language === 'python' ? 'main.py' : 'main.mjs';
  writeFileSync(join(dir, entrypoint), spec.code);
  for (const pkg of dependencyClosure(spec.vendor ?? [])) {
    cpSync(join(REPO_ROOT, 'node_modules', pkg), join(dir, 'node_modules', pkg), { recursive: true });
  }
  const manifest = {
    apiVersion: 'aegis.dev/v1',
    kind: 'Agent',
    metadata: { name: spec.name, version: '1.0.0' },
    spec: {
      runtime: { language: spec.language, entrypoint },
      isolation: 'sandbox',
      security: {
        network: { allow: [...(spec.allow ?? [])], deny: [] },
        resources: { timeout: '30s' },
      },
      llm: { models: [...spec.models], ...(spec.budget ? { budget: spec.budget } : {}) },
    },
  };
  writeFileSync(join(dir, 'agent.yaml'), stringify(manifest));
  const { agent } = await loadManifestFile(join(dir, 'agent.yaml'));
  let id = '';
  const logs: string[] = [];
  const record = await runAgent(
    { ...h.ctx, llm: options.llm ?? llm },
    {
      agent,
      input: null,
      ...(options.requestedBy ? { requestedBy: options.requestedBy } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      onCreated: (created) => {
        id = created;
      },
      onLog: (_stream, text) => {
        logs.push(text);
        options.onLog?.(text, id);
      },
    },
  );
  return { record, logs, output: record.output as Report };
}

/** The ledger entries of one execution, by kind. */
async function entries(executionId: string, kind: string): Promise<Report[]> {
  const all = await h.ctx.audit.list(executionId);
  return all.filter((entry) => entry.kind === kind).map((entry) => entry.data as Report);
}

const PY_ATTACKER = `
import json, os, glob, urllib.request, urllib.error
import aegis

def status_of(path, body, token):
    req = urllib.request.Request(os.environ["AEGIS_API_URL"] + path, data=json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code

token = os.environ["AEGIS_TOKEN"]
out = {"sdk": aegis.__file__, "env": dict(os.environ)}
out["chat"] = aegis.llm.chat([{"role": "user", "content": "hi from python"}], model="default")
out["stream"] = "".join(aegis.llm.chat([{"role": "user", "content": "streamed"}], stream=True))
try:
    aegis.llm.chat([{"role": "user", "content": "x"}], model="smart")
    out["smart"] = "answered"
except aegis.PermissionDenied as e:
    out["smart"] = "denied: " + str(e)
guess = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
out["guessed_token"] = status_of("/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": "x"}]}, guess)
out["unknown_path"] = status_of("/v1/tools/run", {}, token)
seen = []
for path in ["/proc/self/environ", "/proc/1/environ", "/proc/self/cmdline"] + glob.glob("/run/aegis/*") + glob.glob("/agent/*") + glob.glob("/opt/aegis/sdk/python/aegis/*"):
    try:
        with open(path, "rb") as f:
            seen.append(f.read().decode("utf-8", "replace"))
    except Exception as e:
        seen.append(str(e))
out["files"] = seen
try:
    open("/opt/aegis/sdk/python/aegis/__init__.py", "a").write("# tampered")
    out["sdk_writable"] = True
except OSError as e:
    out["sdk_writable"] = False
aegis.output(out)
`;

describe('agents with spec.llm through the in-sandbox API', { skip }, () => {
  before(async () => {
    h = new Harness();
    upstream = await startScriptedLlm();
    await h.ctx.secrets.set('OPENAI_KEY', OPENAI_KEY);
    await h.ctx.secrets.set('ANTHROPIC_KEY', ANTHROPIC_KEY);
    settings = {
      models: {
        default: route('default', 'openai', 'up-gpt'),
        fast: route('fast', 'anthropic', 'up-claude'),
        smart: route('smart', 'openai', 'up-gpt-big'),
      },
      timeoutMs: 10_000,
      retries: 2,
      maxRetryDelayMs: 5_000,
      recordContent: false,
    };
    llm = createLlmWiring({ settings, secrets: h.ctx.secrets, observe: (r) => observed.push(r) });
  });
  after(async () => {
    await upstream?.close();
    await h?.close();
  });

  it('Python via `import aegis`: answers; the key never enters; a guessed token, an ungranted alias and an unknown path are refused and audited', async () => {
    upstream.requests.length = 0;
    const { record, output } = await run({
      name: 'llm-python',
      language: 'python',
      code: PY_ATTACKER,
      models: ['default', 'fast'],
    });
    assert.equal(record.status, 'succeeded', JSON.stringify(record));
    assert.equal(output.sdk, '/opt/aegis/sdk/python/aegis/__init__.py');
    assert.equal(output.chat.content, 'echo: hi from python');
    assert.equal(output.stream, 'echo: streamed');
    assert.match(output.smart, /^denied: .*not granted/);
    assert.equal(output.guessed_token, 401);
    assert.equal(output.unknown_path, 403);
    assert.equal(output.sdk_writable, false);
    assert.equal(output.env.OPENAI_BASE_URL, 'http://127.0.0.1:3129/v1');
    assert.equal(output.env.OPENAI_API_KEY, output.env.AEGIS_TOKEN);
    // The upstream got the real key; nothing the agent could read holds it.
    assert.ok(upstream.requests.length >= 2);
    for (const seen of upstream.requests) assert.equal(seen.headers.authorization, `Bearer ${OPENAI_KEY}`);
    const everything = JSON.stringify(output);
    assert.ok(!everything.includes(OPENAI_KEY) && !everything.includes(ANTHROPIC_KEY));
    assert.deepEqual(
      (await entries(record.id, 'api.denied')).map((e) => `${e.method} ${e.path}`),
      ['POST /v1/tools/run'],
    );
    // One llm.call per call: two answered, one denied (the guessed token has no execution to be audited under).
    const calls = await entries(record.id, 'llm.call');
    assert.deepEqual(
      calls.map((c) => `${c.alias}:${c.status}`),
      ['default:ok', 'default:ok', 'smart:denied'],
    );
    assert.equal(calls[0]!.upstreamModel, 'up-gpt');
    assert.equal(calls[0]!.inputTokens, 10);
    const finished = (await entries(record.id, 'execution.finished'))[0]!;
    assert.deepEqual(finished.llm, { calls: 2, inputTokens: 20, outputTokens: 10, usd: 0.00004 });
    // The token died with the instance.
    assert.throws(() => llm.gateway.models(output.env.AEGIS_TOKEN), /unknown or expired/);
    assert.equal((await h.ctx.audit.verify()).ok, true);
  });

  it('paths and methods the manifest does not grant are 403 and audited; a flood of them yields a bounded ledger', async () => {
    const probes = [
      ['GET', '/'],
      ['GET', '/metrics'],
      ['GET', '/v1/executions'],
      ['POST', '/v1/tools/run'],
      ['POST', '/v1/memory/put'],
      ['GET', '/v1/chat/completions'],
      ['DELETE', '/v1/models'],
      ['PUT', '/v1/messages'],
      ['POST', '/v1/../../etc/passwd'],
      ['POST', '/v1/chat/completions/../../admin'],
    ];
    const { record, output } = await run({
      name: 'llm-paths',
      language: 'python',
      models: ['default'],
      code: `
import http.client, json, os
import aegis
token = os.environ["AEGIS_TOKEN"]
probes = ${JSON.stringify(probes)}
def call(method, path, auth=True):
    c = http.client.HTTPConnection("127.0.0.1", 3129, timeout=10)
    c.request(method, path, body=b"{}" if method != "GET" else None,
              headers={"Authorization": "Bearer " + token} if auth else {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body.decode("utf-8", "replace")
out = {"probes": {}, "unauthenticated": None, "flood": []}
for method, path in probes:
    out["probes"][method + " " + path] = call(method, path)
out["unauthenticated"] = call("POST", "/v1/admin", auth=False)[0]
for i in range(200):
    out["flood"].append(call("GET", "/flood/%d" % i)[0])
out["still_works"] = aegis.llm.chat([{"role": "user", "content": "after"}])["content"]
aegis.output(out)
`,
    });
    assert.equal(record.status, 'succeeded', JSON.stringify(record));
    for (const [probe, [status, body]] of Object.entries(output.probes as Record<string, [number, string]>)) {
      assert.equal(status, 403, `${probe}: ${body}`);
      assert.match(body, /not granted/, probe);
    }
    assert.equal(output.unauthenticated, 403);
    assert.deepEqual(new Set(output.flood), new Set([403]));
    assert.equal(output.still_works, 'echo: after');
    // 10 probes + 1 unauthenticated + 200 flood = 211 refusals: 16 audited one by one, the rest in one count.
    const denied = await entries(record.id, 'api.denied');
    assert.equal(denied.length, 17);
    assert.deepEqual(
      denied.slice(0, 10).map((e) => `${e.method} ${e.path}`),
      probes.map(([m, p]) => `${m} ${p}`),
    );
    assert.deepEqual(
      denied.map((e) => e.nth).slice(0, 16),
      Array.from({ length: 16 }, (_, i) => i + 1),
    );
    assert.deepEqual(denied[16], { suppressed: 211 - 16, total: 211 });
    assert.equal((await h.ctx.audit.verify()).ok, true);
  });

  it('Node via the official openai package (Chat + Responses, streaming and not) and @anthropic-ai/sdk, with egress on too', async () => {
    upstream.requests.length = 0;
    const { record, output, logs } = await run({
      name: 'llm-node',
      language: 'node',
      vendor: ['openai', '@anthropic-ai/sdk'],
      allow: ['example.invalid:443'],
      models: ['default', 'fast'],
      code: `
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import aegis from 'aegis';
const openai = new OpenAI();
const anthropic = new Anthropic();
const out = {};
const chat = await openai.chat.completions.create({ model: 'default', messages: [{ role: 'user', content: 'chat' }] });
out.chat = chat.choices[0].message.content;
let streamed = '';
for await (const chunk of await openai.chat.completions.create({ model: 'default', stream: true, messages: [{ role: 'user', content: 'chat-stream' }] })) streamed += chunk.choices[0]?.delta?.content ?? '';
out.chatStream = streamed;
const resp = await openai.responses.create({ model: 'default', input: 'responses' });
out.responses = resp.output_text;
let rs = '';
for await (const ev of await openai.responses.create({ model: 'default', input: 'responses-stream', stream: true })) if (ev.type === 'response.output_text.delta') rs += ev.delta;
out.responsesStream = rs;
const msg = await anthropic.messages.create({ model: 'fast', max_tokens: 64, messages: [{ role: 'user', content: 'messages' }] });
out.messages = msg.content[0].text;
const ms = await anthropic.messages.stream({ model: 'fast', max_tokens: 64, messages: [{ role: 'user', content: 'messages-stream' }] }).finalMessage();
out.messagesStream = ms.content[0].text;
out.sdk = (await aegis.llm.chat([{ role: 'user', content: 'sdk' }])).content;
out.env = process.env;
aegis.output(out);
`,
    });
    assert.equal(record.status, 'succeeded', logs.join('\n'));
    assert.deepEqual(
      {
        chat: output.chat,
        chatStream: output.chatStream,
        responses: output.responses,
        responsesStream: output.responsesStream,
        messages: output.messages,
        messagesStream: output.messagesStream,
        sdk: output.sdk,
      },
      {
        chat: 'echo: chat',
        chatStream: 'echo: chat-stream',
        responses: 'echo: responses',
        responsesStream: 'echo: responses-stream',
        messages: 'echo: messages',
        messagesStream: 'echo: messages-stream',
        sdk: 'echo: sdk',
      },
    );
    const keys = upstream.requests.map((r) => r.headers.authorization ?? r.headers['x-api-key']);
    assert.ok(
      keys.every((k) => k === `Bearer ${OPENAI_KEY}` || k === ANTHROPIC_KEY),
      JSON.stringify(keys),
    );
    assert.ok(keys.includes(ANTHROPIC_KEY));
    assert.ok(!JSON.stringify(output).includes('sk-REAL') && !JSON.stringify(output).includes('sk-ant-REAL'));
    assert.equal((await entries(record.id, 'llm.call')).length, 7);
  });

  it("the agent process's memory, read from outside through /proc/<pid>/mem, holds its token but never the key", async () => {
    const controller = new AbortController();
    let scanned: { token: boolean; key: boolean; bytes: number } | undefined;
    const { record } = await run(
      {
        name: 'llm-memory',
        language: 'python',
        models: ['default'],
        code: `
import os, sys, time, aegis
reply = aegis.llm.chat([{"role": "user", "content": "remember"}])
print("scan-me", flush=True)
time.sleep(25)
`,
      },
      {
        signal: controller.signal,
        onLog: (text, id) => {
          if (text !== 'scan-me' || scanned) return;
          const token = llmTokenOf(id);
          scanned = { token: false, key: false, bytes: 0 };
          for (const proc of processesOfExecution(id, 'main.py')) {
            let found: { hits: boolean[]; bytes: number };
            try {
              found = scanMemory(proc.pid, [token, OPENAI_KEY]);
            } catch (error) {
              // A short-lived process of the sandbox (not the agent) may be gone between listing and reading.
              if (['ESRCH', 'ENOENT'].includes((error as NodeJS.ErrnoException).code ?? '')) continue;
              throw error;
            }
            scanned.bytes += found.bytes;
            scanned.token ||= found.hits[0]!;
            scanned.key ||= found.hits[1]!;
          }
          controller.abort('scanned');
        },
      },
    );
    assert.equal(record.status, 'killed');
    assert.ok(scanned && scanned.bytes > 0, 'the agent process was not found or its memory not read');
    assert.equal(scanned.token, true, 'the scan must see what the agent does hold (its token)');
    assert.equal(scanned.key, false, 'the provider key is in the agent process memory');
  });

  it('a spent budget refuses the call and ends the execution with reason budget and a budget violation', async () => {
    const { record } = await run({
      name: 'llm-budget',
      language: 'python',
      models: ['default'],
      budget: { calls: 2 },
      code: `
import aegis
for i in range(5):
    try:
        aegis.llm.chat([{"role": "user", "content": f"call {i}"}])
        print(f"call {i} ok", flush=True)
    except aegis.AegisError as e:
        print(f"call {i} refused: {type(e).__name__}", flush=True)
import time
time.sleep(20)
aegis.output({"survived": True})
`,
    });
    assert.equal(record.status, 'killed');
    assert.match(record.reason ?? '', /^budget: the LLM calls budget/);
    assert.deepEqual(
      record.violations.filter((v) => v.kind === 'budget').map((v) => v.rule),
      ['spec.llm.budget.calls'],
    );
    assert.notDeepEqual(record.output, { survived: true });
    const calls = await entries(record.id, 'llm.call');
    assert.deepEqual(
      calls.map((c) => c.status),
      ['ok', 'ok', 'budget'],
    );
    assert.deepEqual(calls[2]!.budgetLeft, { tokens: null, calls: 0, usd: null });
    assert.equal((await h.ctx.audit.verify()).ok, true);
  });

  it("a server budget per API key spans executions: the key's next execution that exceeds it ends with reason budget", async () => {
    const rule = 'llm.budgets.keys.key_hostile';
    const keyed = createLlmWiring({
      settings: {
        ...settings,
        budgets: {
          keys: { key_hostile: { rule, calls: 3, tokens: null, usd: null, windowMs: null } },
          agents: {},
        },
      },
      secrets: h.ctx.secrets,
      spend: h.ctx.store,
    });
    // Each execution has a generous spec.llm.budget of its own; only the key's shared budget can stop it.
    const spender = (name: string) => ({
      name,
      language: 'python' as const,
      models: ['default'],
      budget: { calls: 100 },
      code: `
import aegis
done = 0
for i in range(2):
    aegis.llm.chat([{"role": "user", "content": f"call {i}"}])
    done += 1
aegis.output({"done": done})
`,
    });
    const first = await run(spender('llm-key-1'), { llm: keyed, requestedBy: 'key_hostile' });
    assert.equal(first.record.status, 'succeeded', JSON.stringify(first.record));
    // Another key is not charged for it.
    const other = await run(spender('llm-key-other'), { llm: keyed, requestedBy: 'key_other' });
    assert.equal(other.record.status, 'succeeded', JSON.stringify(other.record));
    // The same key, another agent, a fresh execution: its second call would be the key's 4th.
    const second = await run(spender('llm-key-2'), { llm: keyed, requestedBy: 'key_hostile' });
    assert.equal(second.record.status, 'killed');
    assert.match(
      second.record.reason ?? '',
      /^budget: the LLM calls budget \(llm\.budgets\.keys\.key_hostile\)/,
    );
    assert.deepEqual(
      second.record.violations.filter((v) => v.kind === 'budget').map((v) => v.rule),
      [`${rule}.calls`],
    );
    assert.deepEqual(
      (await entries(second.record.id, 'llm.call')).map((c) => c.status),
      ['ok', 'budget'],
    );
    const spent = await h.ctx.store.getLlmSpend('key:key_hostile', 0);
    assert.deepEqual([spent.calls, spent.tokens], [3, 45]);
    assert.ok(Math.abs(spent.usd - 0.00006) < 1e-12, String(spent.usd));
  });
});

/** `packages` and everything they depend on, as installed in the repo's (flat) node_modules. */
function dependencyClosure(packages: readonly string[]): string[] {
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    const manifest = JSON.parse(
      readFileSync(join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8'),
    ) as { dependencies?: Record<string, string> };
    for (const dep of Object.keys(manifest.dependencies ?? {})) visit(dep);
  };
  for (const name of packages) visit(name);
  return [...seen];
}

/** The gateway token of a running execution, from the agent's environment (read from the host). */
function llmTokenOf(executionId: string): string {
  for (const proc of processesOfExecution(executionId, 'main.py')) {
    const env = readFileSync(`/proc/${proc.pid}/environ`, 'latin1').split('\0');
    const line = env.find((e) => e.startsWith('AEGIS_TOKEN='));
    if (line) return line.slice('AEGIS_TOKEN='.length);
  }
  throw new Error(`no agent process of ${executionId} holds AEGIS_TOKEN`);
}

/** Reads every readable mapping of `pid` and reports which needles occur. */
function scanMemory(pid: number, needles: readonly string[]): { hits: boolean[]; bytes: number } {
  const hits = needles.map(() => false);
  let bytes = 0;
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) r/.exec(line);
      if (!m || line.includes('[vvar]') || line.includes('[vsyscall]')) continue;
      const start = Number.parseInt(m[1]!, 16);
      const length = Number.parseInt(m[2]!, 16) - start;
      if (length > 256 * 1024 * 1024) continue;
      const buffer = Buffer.alloc(length);
      try {
        const read = readSync(fd, buffer, 0, length, start);
        bytes += read;
        const text = buffer.subarray(0, read).toString('latin1');
        needles.forEach((needle, i) => {
          if (text.includes(needle)) hits[i] = true;
        });
      } catch {
        // unreadable mapping (guard pages)
      }
    }
  } finally {
    closeSync(fd);
  }
  return { hits, bytes };
}
