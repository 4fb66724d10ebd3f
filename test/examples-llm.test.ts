/**
 * The model-using examples, run as a user runs them — `aegis run … -o json` through the real CLI and sandbox — against
 * the scripted upstream (issue 13): examples/openai-chat with the unmodified `openai` npm client (copied from the
 * repo's node_modules into a temp copy of the example, as `npm install --prefix examples/openai-chat` would), and
 * the email-summarizer's agent-llm.yaml, which asks the model for its summary and keeps its deterministic rules when
 * no model is configured. The home's config.yaml names the upstream; its key sits in the sealed secret store.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { FileSecretStore } from '../src/adapters/secrets/file-secret-store.ts';
import { hostSkipReason } from './adversarial/harness.ts';
import { type ScriptedLlm, startScriptedLlm } from './support/scripted-llm.ts';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'src/cli/bin.ts');
const KEY = `sk-REAL-examples-${process.pid}`;
const skip = hostSkipReason();

const temps: string[] = [];
function temp(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

interface Home {
  readonly env: NodeJS.ProcessEnv;
}

/** A fresh AEGIS_HOME; with `upstream`, config.yaml routes `default` to it and the secret store holds its key. */
async function home(upstream?: ScriptedLlm): Promise<Home> {
  const dir = temp('aegis-examples-home-');
  const keyFile = join(temp('aegis-examples-key-'), 'secrets.key');
  if (upstream) {
    await new FileSecretStore({ home: dir, keyFile }).set('UPSTREAM_KEY', KEY);
    writeFileSync(
      join(dir, 'config.yaml'),
      stringify({
        llm: {
          providers: {
            scripted: { kind: 'openai', baseUrl: upstream.baseUrl, apiKeySecret: 'UPSTREAM_KEY' },
          },
          models: { default: { provider: 'scripted', model: 'scripted-1' } },
          prices: { default: { input: 1, output: 2 } },
        },
      }),
    );
  }
  return { env: { ...process.env, AEGIS_HOME: dir, AEGIS_SECRETS_KEY_FILE: keyFile } };
}

interface Run {
  readonly code: number | null;
  readonly stderr: string;
  // biome-ignore lint/suspicious/noExplicitAny: the Execution JSON, checked field by field
  readonly json: any;
}

function aegisRun(manifest: string, at: Home, input?: unknown): Promise<Run> {
  const args = [
    CLI,
    'run',
    manifest,
    '-o',
    'json',
    ...(input === undefined ? [] : ['--input', JSON.stringify(input)]),
  ];
  const child = spawn(process.execPath, args, { cwd: ROOT, env: at.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((done) =>
    child.on('close', (code) => {
      let json: unknown = null;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = { unparsed: stdout };
      }
      done({ code, stderr, json });
    }),
  );
}

/** A temp copy of examples/openai-chat; with `vendor`, openai copied in as `npm install --prefix` would. */
function openaiChatCopy(vendor: boolean): string {
  const dir = temp('aegis-openai-chat-');
  cpSync(join(ROOT, 'examples/openai-chat'), dir, {
    recursive: true,
    filter: (src) => !src.includes('node_modules'),
  });
  if (vendor) {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'node_modules/openai/package.json'), 'utf8')) as {
      dependencies?: Record<string, string>;
    };
    // openai has no runtime dependencies; if it gains some, this copy (and the README's install line) must follow.
    assert.deepEqual(Object.keys(pkg.dependencies ?? {}), []);
    mkdirSync(join(dir, 'node_modules'), { recursive: true });
    cpSync(join(ROOT, 'node_modules/openai'), join(dir, 'node_modules/openai'), { recursive: true });
  }
  return dir;
}

describe('examples that call models', { skip }, () => {
  let upstream: ScriptedLlm;
  before(async () => {
    upstream = await startScriptedLlm();
  });
  after(async () => {
    await upstream?.close();
    for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  });

  it('openai-chat: the unmodified openai client answers (plain and streamed) through the gateway', async () => {
    upstream.requests.length = 0;
    const dir = openaiChatCopy(true);
    const ran = await aegisRun(join(dir, 'agent.yaml'), await home(upstream), { question: 'what is AEGIS?' });
    assert.equal(ran.code, 0, `${ran.stderr}\n${JSON.stringify(ran.json)}`);
    assert.equal(ran.json.status, 'succeeded');
    assert.equal(ran.json.output.answer, 'echo: what is AEGIS?');
    assert.equal(ran.json.output.streamed, 'echo: what is AEGIS?');
    assert.deepEqual(ran.json.usage, { llm: { calls: 2, inputTokens: 20, outputTokens: 10, usd: 40 / 1e6 } });
    assert.deepEqual(
      upstream.requests.map((r) => [r.path, r.body.model, r.body.stream === true, r.headers.authorization]),
      [
        ['/v1/chat/completions', 'scripted-1', false, `Bearer ${KEY}`],
        ['/v1/chat/completions', 'scripted-1', true, `Bearer ${KEY}`],
      ],
    );
  });

  it('openai-chat without `npm install` says how to install the client', async () => {
    const ran = await aegisRun(join(openaiChatCopy(false), 'agent.yaml'), await home(upstream));
    assert.notEqual(ran.code, 0);
    assert.equal(ran.json.status, 'failed');
    assert.match(ran.stderr, /npm install --prefix examples\/openai-chat/);
  });

  it('email-summarizer agent-llm.yaml: the model writes the summary; the rules stay in rule_summary', async () => {
    upstream.requests.length = 0;
    const ran = await aegisRun(join(ROOT, 'examples/email-summarizer/agent-llm.yaml'), await home(upstream));
    assert.equal(ran.code, 0, `${ran.stderr}\n${JSON.stringify(ran.json)}`);
    const output = ran.json.output;
    assert.equal(output.summarizer, 'llm');
    assert.match(output.summary, /^echo: Mailbox:\n- 2025-03-17T08:42:10\+00:00 from Maya Chen: URGENT/);
    assert.match(output.rule_summary, /^14 messages from 12 senders/);
    assert.equal(output.counts.urgent, 4);
    assert.equal(ran.json.usage.llm.calls, 1);
    assert.equal(upstream.requests.length, 1);
    assert.equal(upstream.requests[0]?.headers.authorization, `Bearer ${KEY}`);
  });

  it('email-summarizer agent-llm.yaml with no model configured falls back to the deterministic digest', async () => {
    const ran = await aegisRun(join(ROOT, 'examples/email-summarizer/agent-llm.yaml'), await home());
    assert.equal(ran.code, 0, `${ran.stderr}\n${JSON.stringify(ran.json)}`);
    assert.equal(ran.json.output.summarizer, 'deterministic');
    assert.match(ran.json.output.summary, /^14 messages from 12 senders/);
    assert.equal(ran.json.output.rule_summary, undefined);
    assert.match(ran.stderr, /the model did not answer .*; using the deterministic summary/);
  });

  it('agent.yaml and agent-llm.yaml differ only in spec.llm', async () => {
    const { parse } = await import('yaml');
    const plain = parse(readFileSync(join(ROOT, 'examples/email-summarizer/agent.yaml'), 'utf8'));
    const withModel = parse(readFileSync(join(ROOT, 'examples/email-summarizer/agent-llm.yaml'), 'utf8'));
    assert.deepEqual(withModel.spec.llm, { models: ['default'], budget: { calls: 3, tokens: 20000 } });
    delete withModel.spec.llm;
    assert.deepEqual(withModel, plain);
  });
});
