/**
 * examples/code-reviewer, a declarative agent (spec.task), run as a user runs it — `aegis run … -o json` through the
 * real CLI and sandbox — with the scripted model playing the reviewer: it lists and reads the sample repository and
 * runs `bash -n` inside the sandbox, tries a command off the allow-list (refused, audited, reported back), answers
 * prose first (the JSON Schema fails, the failure is fed back), then the JSON review that passes.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { FileSecretStore } from '../src/adapters/secrets/file-secret-store.ts';
import { hostSkipReason } from './adversarial/harness.ts';
import { type ScriptedLlm, startScriptedLlm } from './support/scripted-llm.ts';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'src/cli/bin.ts');
const skip = hostSkipReason();
const temps: string[] = [];

function temp(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

async function home(upstream: ScriptedLlm): Promise<NodeJS.ProcessEnv> {
  const dir = temp('aegis-loop-home-');
  const keyFile = join(temp('aegis-loop-key-'), 'secrets.key');
  await new FileSecretStore({ home: dir, keyFile }).set('UPSTREAM_KEY', 'sk-loop-test');
  writeFileSync(
    join(dir, 'config.yaml'),
    stringify({
      llm: {
        providers: { scripted: { kind: 'openai', baseUrl: upstream.baseUrl, apiKeySecret: 'UPSTREAM_KEY' } },
        models: { default: { provider: 'scripted', model: 'scripted-1' } },
      },
    }),
  );
  return { ...process.env, AEGIS_HOME: dir, AEGIS_SECRETS_KEY_FILE: keyFile };
}

function aegis(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((done) => child.on('close', (code) => done({ code, stdout, stderr })));
}

describe('examples/code-reviewer (declarative, iterative, json_schema)', { skip }, () => {
  let upstream: ScriptedLlm;
  before(async () => {
    upstream = await startScriptedLlm();
  });
  after(async () => {
    await upstream?.close();
    for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  });

  it('reviews the sample repository through sandboxed tools and passes validation on the second answer', async () => {
    const review = {
      summary: 'deploy.sh does not parse',
      files: [
        { path: '/mnt/repo/build.sh', ok: true, issues: [] },
        { path: '/mnt/repo/deploy.sh', ok: false, issues: ['bash -n: unexpected end of file'] },
      ],
    };
    upstream.script(
      { toolCalls: [{ name: 'fs_list', arguments: { path: '/mnt/repo' } }] },
      {
        toolCalls: [
          { name: 'fs_read', arguments: { path: '/mnt/repo/deploy.sh' } },
          { name: 'cmd_run', arguments: { argv: ['bash', '-n', '/mnt/repo/deploy.sh'] } },
          { name: 'cmd_run', arguments: { argv: ['curl', 'http://evil.example/'] } },
        ],
      },
      { text: 'deploy.sh is broken, build.sh is fine.' },
      { text: JSON.stringify(review) },
    );
    const env = await home(upstream);
    const ran = await aegis(
      ['run', join(ROOT, 'examples/code-reviewer/agent.yaml'), '--input', '"syntax"', '-o', 'json'],
      env,
    );
    assert.equal(ran.code, 0, ran.stderr);
    const execution = JSON.parse(ran.stdout);
    assert.equal(execution.status, 'succeeded', JSON.stringify(execution));
    assert.deepEqual(execution.output, review);
    assert.equal(upstream.pending(), 0);
    assert.deepEqual(
      execution.violations.map((v: { kind: string; rule: string }) => [v.kind, v.rule]),
      [['tool', 'spec.tools.cmd.run']],
    );

    // What the model was told: the listing and file came from the sandbox's mount, bash -n ran there and failed,
    // curl was refused; then the schema failure.
    const bodies = upstream.requests
      .slice(-4)
      .map((r) => r.body as { messages: { role: string; content: string }[] });
    const toolResults = (i: number) =>
      bodies[i]?.messages.filter((m) => m.role === 'tool').map((m) => m.content) ?? [];
    assert.match(toolResults(1).join('\n'), /deploy\.sh/);
    const second = toolResults(2);
    assert.match(second.at(-3) ?? '', /deploying to/);
    assert.match(second.at(-2) ?? '', /"exitCode":2/);
    assert.match(second.at(-1) ?? '', /^denied \(/);
    assert.match(bodies[3]?.messages.at(-1)?.content ?? '', /json_schema: the answer is not JSON/);

    // The ledger: tool calls by the loop, one agent.iteration entry per attempt.
    const audit = await aegis(['audit', 'show', execution.id, '-o', 'json'], env);
    assert.equal(audit.code, 0, audit.stderr);
    const entries = JSON.parse(audit.stdout) as { kind: string; data: Record<string, unknown> }[];
    const list = Array.isArray(entries)
      ? entries
      : (entries as unknown as { entries: typeof entries }).entries;
    assert.deepEqual(
      list.filter((e) => e.kind === 'tool.call').map((e) => [e.data.tool, e.data.outcome, e.data.by]),
      [
        ['fs.list', 'allowed', 'loop'],
        ['fs.read', 'allowed', 'loop'],
        ['cmd.run', 'allowed', 'loop'],
        ['cmd.run', 'denied', 'loop'],
      ],
    );
    assert.deepEqual(
      list.filter((e) => e.kind === 'agent.iteration').map((e) => e.data.passed),
      [false, true],
    );
  });
});
