import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { type ScriptedLlm, startScriptedLlm } from '../../test/support/scripted-llm.ts';
import { AnthropicProvider } from '../adapters/llm/anthropic.ts';
import { OpenAiProvider } from '../adapters/llm/openai.ts';
import { parseManifestText } from '../adapters/manifest/yaml-loader.ts';
import { AegisError } from '../domain/errors.ts';
import { jsonSchemaViolation } from '../domain/loop/json-schema.ts';
import { type CompiledAgent, compileManifest } from '../domain/manifest/compiled.ts';
import {
  type AgentLoopDeps,
  gatewayModel,
  gatewayTools,
  type LoopJudge,
  type LoopStep,
  runAgentLoop,
} from './agent-loop.ts';
import { ManualClock } from './fakes/manual-clock.ts';
import { MemoryAuditLog } from './fakes/memory-audit-log.ts';
import { LlmGateway } from './llm-gateway.ts';
import type { LiveCommandEvents, LiveCommandSpec, LiveSession } from './ports.ts';
import { ToolGateway } from './tools.ts';

const sha256Hex = (text: string) => createHash('sha256').update(text).digest('hex');

/** A sandbox over an in-memory file map; `bash -n` fails (exit 2) on files containing "((", else exit 0. */
function fakeSession() {
  const files = new Map<string, string>();
  const ran: string[][] = [];
  const session = {
    async exec(spec: LiveCommandSpec, events: LiveCommandEvents) {
      ran.push([...spec.argv]);
      const target = files.get(spec.argv.at(-1) ?? '') ?? '';
      const code = spec.argv[0] === 'bash' && target.includes('((') ? 2 : 0;
      queueMicrotask(() => {
        if (code !== 0) events.onOutput('stderr', new TextEncoder().encode('syntax error near "(("'));
        events.onExit(code, null);
      });
      return { pid: 1, writeStdin: async () => {}, kill: async () => {} };
    },
    async writeFile(path: string, chunks: AsyncIterable<Uint8Array>) {
      let text = '';
      for await (const chunk of chunks) text += new TextDecoder().decode(chunk);
      files.set(path, text);
      return { bytes: text.length };
    },
    async readFile(path: string) {
      const text = files.get(path);
      if (text === undefined) throw new AegisError('NOT_FOUND', `no file ${path}`);
      const bytes = new TextEncoder().encode(text);
      return {
        size: bytes.length,
        chunks: (async function* () {
          yield bytes;
        })(),
      };
    },
    async list() {
      return [];
    },
  } as unknown as LiveSession;
  return { session, files, ran };
}

function declarative(
  execution: string,
  tools = '[fs.read, fs.write, {name: cmd.run, allow: ["bash -n *"]}]',
) {
  const yaml = `apiVersion: aegis.dev/v1
kind: Agent
metadata: {name: looper}
spec:
  llm: {models: [default]}
  tools: ${tools}
  task:
    instruction: You check shell scripts.
    promptTemplate: "Check this: {{input}}"
  execution: ${execution}
`;
  return compileManifest(parseManifestText(yaml, 'agent.yaml', '/tmp/looper').manifest, '/tmp/looper');
}

let upstream: ScriptedLlm;
let llm: LlmGateway;

before(async () => {
  upstream = await startScriptedLlm();
  llm = new LlmGateway({
    settings: {
      models: {
        default: {
          alias: 'default',
          provider: 'scripted',
          kind: 'openai',
          baseUrl: upstream.baseUrl,
          apiKeySecret: null,
          model: 'up-gpt',
          maxTokens: 256,
          price: null,
        },
      },
      timeoutMs: 10_000,
      retries: 0,
      maxRetryDelayMs: 1000,
      recordContent: false,
    },
    providers: { openai: new OpenAiProvider(), anthropic: new AnthropicProvider() },
    secrets: { get: async () => '' },
    newToken: () => randomBytes(24).toString('base64url'),
    now: () => performance.now(),
    sleep: async () => {},
  });
});

after(() => upstream.close());

function setup(agent: CompiledAgent, judge?: LoopJudge) {
  const audit = new MemoryAuditLog();
  const sandbox = fakeSession();
  const executionId = `exe_${randomBytes(4).toString('hex')}`;
  const token = llm.issue({ executionId, agent: agent.name, models: ['default'], budget: agent.llm!.budget });
  const tools = new ToolGateway({ audit, clock: new ManualClock(), sha256Hex });
  const steps: LoopStep[] = [];
  const deps: AgentLoopDeps = {
    model: gatewayModel(llm, token),
    tools: gatewayTools(tools, { id: executionId, agent, session: sandbox.session, env: {}, by: 'loop' }),
    jsonSchema: jsonSchemaViolation,
    audit,
    sha256Hex,
    onStep: (step) => steps.push(step),
    ...(judge ? { judge } : {}),
  };
  const seen = upstream.requests.length;
  const requests = () =>
    upstream.requests.slice(seen).map(
      (r) =>
        r.body as {
          messages: { role: string; content: unknown }[];
          tools?: { function: { name: string } }[];
        },
    );
  return { audit, sandbox, executionId, deps, steps, requests };
}

describe('the declarative agent loop (spec.task)', () => {
  it('writes, reads and checks a file through the tool gateway, fails json_schema once, passes on the feedback', async () => {
    const agent = declarative(`
    mode: iterative
    maxIterations: 3
    validation:
      - {exit_code: 0}
      - {json_schema: {type: object, required: [verdict], properties: {verdict: {enum: [ok, bad]}}}}`);
    const { audit, sandbox, executionId, deps, steps, requests } = setup(agent);
    upstream.script(
      { toolCalls: [{ name: 'fs_write', arguments: { path: '/workspace/a.sh', content: 'echo hi\n' } }] },
      {
        toolCalls: [
          { name: 'fs_read', arguments: { path: '/workspace/a.sh' } },
          { name: 'cmd_run', arguments: { argv: ['bash', '-n', '/workspace/a.sh'] } },
        ],
      },
      { text: 'The script looks fine.' },
      { text: '{"verdict": "ok"}' },
    );
    const outcome = await runAgentLoop(deps, { executionId, task: agent.task!, input: 'a.sh' });

    assert.deepEqual(outcome, {
      status: 'succeeded',
      output: { verdict: 'ok' },
      reason: null,
      iterations: 2,
    });
    assert.equal(upstream.pending(), 0);
    assert.equal(sandbox.files.get('/workspace/a.sh'), 'echo hi\n');
    assert.deepEqual(sandbox.ran, [['bash', '-n', '/workspace/a.sh']]);
    const sent = requests();
    assert.deepEqual(
      sent[0]?.tools?.map((t) => t.function.name),
      ['fs_read', 'fs_write', 'cmd_run'],
    );
    assert.equal(sent[0]?.messages[0]?.role, 'system');
    assert.equal(sent[0]?.messages[1]?.content, 'Check this: a.sh');
    // The file's content came back to the model as the fs.read result.
    assert.ok(sent[2]?.messages.some((m) => m.role === 'tool' && String(m.content).includes('echo hi')));
    // The failed verdict was fed back as a user message.
    const feedback = sent[3]?.messages.at(-1);
    assert.equal(feedback?.role, 'user');
    assert.match(
      String(feedback?.content),
      /did not pass validation:\n- json_schema: the answer is not JSON/,
    );

    const calls = audit.entries.filter((e) => e.kind === 'tool.call');
    assert.deepEqual(
      calls.map((e) => [e.data.tool, e.data.outcome, e.data.by]),
      [
        ['fs.write', 'allowed', 'loop'],
        ['fs.read', 'allowed', 'loop'],
        ['cmd.run', 'allowed', 'loop'],
      ],
    );
    const iterations = audit.entries.filter((e) => e.kind === 'agent.iteration');
    assert.deepEqual(
      iterations.map((e) => [e.execution, e.data.iteration, e.data.passed, e.data.verdicts]),
      [
        [
          executionId,
          1,
          false,
          [
            { validator: 'exit_code', passed: true },
            { validator: 'json_schema', passed: false },
          ],
        ],
        [
          executionId,
          2,
          true,
          [
            { validator: 'exit_code', passed: true },
            { validator: 'json_schema', passed: true },
          ],
        ],
      ],
    );
    // The ledger holds digests, not the answer.
    assert.equal(iterations[1]?.data.answerDigest, sha256Hex('{"verdict": "ok"}'));
    assert.ok(!JSON.stringify(iterations).includes('verdict\\"'));
    // The trajectory: model answers, tool calls with results, verdicts.
    assert.deepEqual(
      steps.map((s) => s.step),
      ['model', 'tool', 'model', 'tool', 'tool', 'model', 'verdict', 'model', 'verdict'],
    );
  });

  it('refuses a command off the allow-list and a path outside the sandbox, audits both, and tells the model', async () => {
    const agent = declarative('{mode: iterative, maxIterations: 2}');
    const { audit, sandbox, executionId, deps, requests } = setup(agent);
    upstream.script(
      {
        toolCalls: [
          { name: 'cmd_run', arguments: { argv: ['rm', '-rf', '/workspace'] } },
          { name: 'fs_read', arguments: { path: '/etc/shadow' } },
        ],
      },
      { text: 'done' },
    );
    const outcome = await runAgentLoop(deps, { executionId, task: agent.task!, input: 'x' });

    assert.equal(outcome.status, 'succeeded');
    assert.deepEqual(sandbox.ran, [], 'nothing ran in the sandbox');
    const denied = audit.entries.filter((e) => e.kind === 'tool.call' && e.data.outcome === 'denied');
    assert.deepEqual(
      denied.map((e) => [e.data.tool, e.data.violation, e.execution]),
      [
        ['cmd.run', 'tool', executionId],
        ['fs.read', 'tool', executionId],
      ],
    );
    const results = requests()[1]?.messages.filter((m) => m.role === 'tool') ?? [];
    assert.equal(results.length, 2);
    for (const result of results) assert.match(String(result.content), /^denied \(/);
  });

  it('ends failed with reason validation when maxIterations answers all fail', async () => {
    const agent = declarative('{mode: iterative, maxIterations: 2, validation: [{regex: "^APPROVED"}]}');
    const { audit, executionId, deps } = setup(agent);
    upstream.script({ text: 'maybe' }, { text: 'still maybe' });
    const outcome = await runAgentLoop(deps, { executionId, task: agent.task!, input: 'x' });

    assert.equal(outcome.status, 'failed');
    assert.equal(outcome.iterations, 2);
    assert.equal(outcome.output, 'still maybe');
    assert.match(outcome.reason ?? '', /^validation: regex: the answer does not match \/\^APPROVED\//);
    assert.equal(audit.entries.filter((e) => e.kind === 'agent.iteration' && !e.data.passed).length, 2);
  });

  it('one-shot mode tries once', async () => {
    const agent = declarative('{mode: one-shot, maxIterations: 5, validation: [{regex: "^APPROVED"}]}');
    const { executionId, deps } = setup(agent);
    upstream.script({ text: 'no' });
    const outcome = await runAgentLoop(deps, { executionId, task: agent.task!, input: 'x' });
    assert.deepEqual([outcome.status, outcome.iterations], ['failed', 1]);
  });

  it("gates success on a judge agent's score", async () => {
    const agent = declarative(
      '{mode: iterative, maxIterations: 3, validation: [{judge: {agent: grader, threshold: 0.7}}]}',
    );
    const asked: unknown[] = [];
    const scores = [{ score: 0.4, reason: 'too vague' }, { score: 0.9 }];
    const judge: LoopJudge = {
      async run(name, input) {
        assert.equal(name, 'grader');
        asked.push(input);
        return { status: 'succeeded', output: scores.shift() };
      },
    };
    const { executionId, deps, requests } = setup(agent, judge);
    upstream.script({ text: 'short' }, { text: 'a long, precise answer' });
    const outcome = await runAgentLoop(deps, { executionId, task: agent.task!, input: 'q' });

    assert.deepEqual(
      [outcome.status, outcome.output, outcome.iterations],
      ['succeeded', 'a long, precise answer', 2],
    );
    const instruction = agent.task!.instruction;
    assert.deepEqual(asked, [
      { output: 'short', task: instruction, input: 'q' },
      { output: 'a long, precise answer', task: instruction, input: 'q' },
    ]);
    assert.match(
      String(requests()[1]?.messages.at(-1)?.content),
      /judge grader scored 0.4, below 0.7 — too vague/,
    );
  });
});
