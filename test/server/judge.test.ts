/**
 * The `judge` validator on a real `aegis server` (issue 14, docs/adr/0094-judge-validator.md): a declarative agent's
 * answers are scored by another *deployed* agent — a Python code agent printing `{"score": …}` — run as an execution
 * of its own through the same queue, requested by the same key. The server runs with `--max-concurrent 1`: the
 * judged execution lends its slot to its judge (no deadlock). The first answer scores 0.4 (below 0.7): the failure
 * names the judge and is fed back to the model; the second scores 0.9 and passes. A judge that has a judge validator
 * of its own is refused (judges nest one deep), and a judge whose output is no score fails the validation.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { FileSecretStore } from '../../src/adapters/secrets/file-secret-store.ts';
import { type ScriptedLlm, startScriptedLlm } from '../support/scripted-llm.ts';
import {
  cli,
  killServers,
  pollUntil,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

interface Entry {
  kind: string;
  subject?: string;
  data: Record<string, unknown>;
}
interface Execution {
  id: string;
  status: string;
  reason: string | null;
  output: unknown;
}

/** The judge: a code agent; its output (last stdout line) is the score. "precise" answers score 0.9. */
const GRADER_PY = `
import json, sys
judged = json.load(sys.stdin)
with open("/tmp/seen.json", "w") as f:
    json.dump(judged, f)
answer = json.dumps(judged.get("output"))
if "precise" in answer:
    print(json.dumps({"score": 0.9}))
else:
    print(json.dumps({"score": 0.4, "reason": "too vague for " + str(judged.get("input"))}))
`;

/** A judge that never answers in time. */
const SLOW_PY = `import time\ntime.sleep(300)\n`;

/** A judge whose output is not a score. */
const MUTE_PY = `print('"looks fine"')\n`;

describe('judge validator: a deployed agent scores a declarative agent on a real server', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let upstream: ScriptedLlm;
  const work = mkdtempSync(join(tmpdir(), 'aegis-judge-'));

  const env = () => ({ ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey });
  const deploy = async (name: string, spec: Record<string, unknown>, files: Record<string, string> = {}) => {
    const dir = join(work, name);
    mkdirSync(dir, { recursive: true });
    for (const [file, text] of Object.entries(files)) writeFileSync(join(dir, file), text);
    writeFileSync(
      join(dir, 'agent.yaml'),
      stringify({ apiVersion: 'aegis.dev/v1', kind: 'Agent', metadata: { name, version: '1.0.0' }, spec }),
    );
    const deployed = await cli(['deploy', dir], env());
    assert.equal(deployed.code, 0, deployed.stderr);
  };
  const declarative = (judge: string, maxIterations: number) => ({
    security: { resources: { timeout: '3m' } },
    llm: { models: ['default'], budget: { calls: 10 } },
    task: { instruction: 'Answer precisely.', promptTemplate: 'Question: {{input}}' },
    execution: {
      mode: 'iterative',
      maxIterations,
      validation: [{ judge: { agent: judge, threshold: 0.7 } }],
    },
  });
  const exec = async (agent: string, input: unknown): Promise<Execution> => {
    const ran = await cli(['exec', '--wait', agent, '--input', JSON.stringify(input), '-o', 'json'], env());
    assert.ok(ran.stdout.trim().startsWith('{'), ran.stderr + ran.stdout + server.stderr());
    return JSON.parse(ran.stdout) as Execution;
  };
  const api = async (path: string, body?: unknown) => {
    const res = await fetch(`${server.url}${path}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: {
        authorization: `Bearer ${server.adminKey}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    assert.ok(res.status < 300, `${path}: ${res.status}`);
    return (await res.json()) as Record<string, unknown>;
  };
  type Listed = Execution & { agent: { name: string } };
  const executionsOf = async (agent: string) =>
    ((await api(`/v1/executions?agent=${agent}&limit=10`)).executions as Listed[]).filter(
      (e) => e.agent.name === agent,
    );
  const auditOf = async (id: string) => {
    const shown = await cli(['audit', 'show', id, '-o', 'json'], env());
    assert.equal(shown.code, 0, shown.stderr);
    const parsed = JSON.parse(shown.stdout) as Entry[] | { entries: Entry[] };
    return Array.isArray(parsed) ? parsed : parsed.entries;
  };

  before(async () => {
    upstream = await startScriptedLlm();
    dirs = serverDirs();
    const keyFile = join(work, 'secrets.key');
    await new FileSecretStore({ home: dirs.home, keyFile }).set('UPSTREAM_KEY', 'sk-judge-test');
    writeFileSync(
      join(dirs.home, 'config.yaml'),
      stringify({
        llm: {
          providers: {
            scripted: { kind: 'openai', baseUrl: upstream.baseUrl, apiKeySecret: 'UPSTREAM_KEY' },
          },
          models: { default: { provider: 'scripted', model: 'scripted-1' } },
        },
      }),
    );
    server = await startServerProcess({
      dirs,
      env: { AEGIS_SECRETS_KEY_FILE: keyFile },
      args: ['--max-concurrent', '1'],
    });
    const code = (entrypoint: string) => ({
      runtime: { language: 'python', entrypoint },
      security: { network: { allow: [] }, resources: { timeout: '60s' } },
    });
    await deploy('grader', code('main.py'), { 'main.py': GRADER_PY });
    await deploy('mute', code('main.py'), { 'main.py': MUTE_PY });
    await deploy(
      'slow',
      { ...code('main.py'), security: { network: { allow: [] }, resources: { timeout: '10m' } } },
      { 'main.py': SLOW_PY },
    );
    await deploy('slow-judged', declarative('slow', 1));
    await deploy('answerer', declarative('grader', 3));
    await deploy('mute-judged', declarative('mute', 1));
    // A declarative judge that itself has a judge validator (refused when it runs as a judge).
    await deploy('meta-grader', declarative('grader', 1));
    await deploy('meta-judged', declarative('meta-grader', 1));
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    await upstream?.close();
    dirs?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('fails the first answer on a 0.4 score (reason names the judge), passes the second on 0.9', async () => {
    upstream.script({ text: 'short' }, { text: 'a long, precise answer' });
    const execution = await exec('answerer', 'why is the sky blue?');
    assert.equal(execution.status, 'succeeded', JSON.stringify(execution) + server.stderr());
    assert.equal(execution.output, 'a long, precise answer');
    assert.equal(upstream.pending(), 0);

    // The model was told why: the judge's name, its score, the threshold and its reason.
    const second = upstream.requests.at(-1)?.body as { messages: { role: string; content: string }[] };
    assert.match(
      second.messages.at(-1)?.content ?? '',
      /judge: judge grader scored 0\.4, below 0\.7 — too vague for why is the sky blue\?/,
    );

    // The ledger: two iterations with the judge's verdicts; each judge run an execution of its own, requested by
    // the same key as the judged one and marked as its judge.
    const entries = await auditOf(execution.id);
    assert.deepEqual(
      entries.filter((e) => e.kind === 'agent.iteration').map((e) => [e.data.passed, e.data.verdicts]),
      [
        [false, [{ validator: 'judge', passed: false }]],
        [true, [{ validator: 'judge', passed: true }]],
      ],
    );
    const requestedBy = entries.find((e) => e.kind === 'execution.created')?.data.requestedBy;
    assert.equal(typeof requestedBy, 'string');
    const listed = (await api('/v1/executions?agent=grader&limit=10')).executions as Execution[];
    const judges = listed.filter(
      (e) => (e as unknown as { agent: { name: string } }).agent.name === 'grader',
    );
    assert.equal(judges.length, 2, JSON.stringify(listed));
    for (const judge of judges) {
      assert.equal(judge.status, 'succeeded');
      assert.deepEqual((judge as unknown as { input: unknown }).input, {
        output: (judge.output as { score: number }).score === 0.9 ? 'a long, precise answer' : 'short',
        task: 'Answer precisely.',
        input: 'why is the sky blue?',
      });
      const created = (await auditOf(judge.id)).find((e) => e.kind === 'execution.created');
      assert.equal(created?.data.judgeOf, execution.id);
      assert.equal(created?.data.requestedBy, requestedBy);
    }
    // The trajectory in the logs shows the verdicts.
    const logs = await cli(['logs', execution.id], env());
    assert.match(logs.stdout + logs.stderr, /"step":"verdict".*"passed":false.*judge grader scored 0\.4/);
  });

  it('`aegis run` (local, no deployed agents) refuses a judge validator before anything runs', async () => {
    const ran = await cli(['run', join(work, 'answerer', 'agent.yaml'), '--input', '"q"'], {
      ...server.env,
      AEGIS_HOME: join(work, 'local-home'),
    });
    assert.equal(ran.code, 3, ran.stderr);
    assert.match(ran.stderr, /judge \(agent grader\), which `aegis run` cannot run/);
    assert.match(ran.stderr, /deploy both and run it on `aegis server`/);
  });

  it('a judge whose output is not a score fails the validation with a clear reason', async () => {
    upstream.script({ text: 'an answer' });
    const execution = await exec('mute-judged', 'q');
    assert.equal(execution.status, 'failed', JSON.stringify(execution));
    assert.match(
      execution.reason ?? '',
      /^validation: judge: judge mute gave no score: its output "looks fine" is not a score 0–1/,
    );
  });

  it('attack: a judge with a judge of its own is refused (judges nest one deep) and the judged run fails', async () => {
    // The judged agent answers; its judge (declarative) answers too, then its own judge validator is refused.
    upstream.script({ text: 'an answer' }, { text: '{"score": 1}' });
    const execution = await exec('meta-judged', 'q');
    assert.equal(execution.status, 'failed', JSON.stringify(execution));
    assert.match(execution.reason ?? '', /judge meta-grader gave no score: its execution ended failed/);
    const listed = (await api('/v1/executions?agent=meta-grader&limit=10')).executions as Execution[];
    const judge = listed.find(
      (e) => (e as unknown as { agent: { name: string } }).agent.name === 'meta-grader',
    );
    assert.equal(judge?.status, 'failed');
    assert.match(
      judge?.reason ?? '',
      /judge grader not run: execution .* is itself a judge .*nest at most 1 deep/,
    );
    // grader never ran for it: only the first test's two runs exist.
    const graders = (await api('/v1/executions?agent=grader&limit=10')).executions as Execution[];
    assert.equal(
      graders.filter((e) => (e as unknown as { agent: { name: string } }).agent.name === 'grader').length,
      2,
    );
  });

  it('cancelling the judged execution cancels its judge', async () => {
    upstream.script({ text: 'an answer' });
    const judged = (await api('/v1/executions', {
      agent: 'slow-judged',
      input: 'q',
    })) as unknown as Execution;
    const judge = await pollUntil(
      'the judge running',
      async () => (await executionsOf('slow')).find((e) => e.status === 'running'),
      60_000,
    );
    await api(`/v1/executions/${judged.id}/cancel`, {});
    const ended = await pollUntil(
      'the judge ended',
      async () => {
        const record = (await executionsOf('slow')).find((e) => e.id === judge.id);
        return record && record.status !== 'running' ? record : undefined;
      },
      60_000,
    );
    assert.equal(ended.status, 'killed', JSON.stringify(ended));
    const final = (await api(`/v1/executions/${judged.id}`)) as unknown as Execution;
    assert.equal(final.status, 'killed', JSON.stringify(final));
  });
});
