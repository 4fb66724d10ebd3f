/**
 * Cortex on a real `aegis server` (issue 17): a declarative agent's first execution is indexed when it ends; a second
 * execution with a paraphrased input gets that memory recalled into its prompt (seen in what the scripted model
 * received), with the ids and scores in its trajectory and the ids in the ledger. A code agent that prints its
 * secret placeholder and the secret's value leaves nothing secret in memory. Agents play the attacker through the
 * real in-sandbox SDKs: one without spec.memory is refused (Python, MemoryDenied, audited); another with its own
 * memory cannot see or forget the first agent's memories (Node).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { FileSecretStore } from '../../src/adapters/secrets/file-secret-store.ts';
import { hostSkipReason } from '../adversarial/harness.ts';
import { type ScriptedLlm, startScriptedLlm } from '../support/scripted-llm.ts';
import {
  apiCall,
  cli,
  killServers,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

interface Execution {
  id: string;
  status: string;
  reason: string | null;
  output: unknown;
}
interface Entry {
  kind: string;
  data: Record<string, unknown>;
}

const SECRET = 'sk-memtest-4b1d9e7c2a60f835';
const skip = hostSkipReason();

const LEAKY_PY = `
import os, sys
print("my key is", os.environ["API_KEY"])
print("the value:", sys.stdin.read().strip())
print("all good")
`;

const NOMEM_PY = `
import aegis
try:
    aegis.memory.store("hello")
    print("stored")
except aegis.MemoryDenied as e:
    print("denied:", str(e)[:60])
`;

const ATTACKER_MJS = `
import aegis from 'aegis';
const target = aegis.input();
const found = await aegis.memory.search('rotate the billing database password', 20, undefined);
const filtered = await aegis.memory.search('billing', 20, { executionId: target.executionId });
let override = 'accepted';
try { await aegis.memory.search('billing', 5, { agent: 'helper' }); } catch (e) { override = e.name; }
const forgot = await aegis.memory.forget(target.memoryId);
console.log(JSON.stringify({ found: found.map((m) => m.agent), filtered: filtered.length, override, forgot }));
`;

describe('Cortex end to end: indexing, recall in the prompt, redaction, scopes', { skip }, () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let upstream: ScriptedLlm;
  const work = mkdtempSync(join(tmpdir(), 'aegis-memory-'));
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
  const exec = async (agent: string, input: unknown): Promise<Execution> => {
    const ran = await cli(['exec', '--wait', agent, '--input', JSON.stringify(input), '-o', 'json'], env());
    assert.ok(ran.stdout.trim().startsWith('{'), ran.stderr + ran.stdout + server.stderr());
    return JSON.parse(ran.stdout) as Execution;
  };
  const api = (method: string, path: string, body?: unknown) =>
    apiCall(server.url, server.adminKey, method, path, body);
  const auditOf = async (id: string): Promise<Entry[]> => {
    const shown = await cli(['audit', 'show', id, '-o', 'json'], env());
    assert.equal(shown.code, 0, shown.stderr);
    const parsed = JSON.parse(shown.stdout) as Entry[] | { entries: Entry[] };
    return Array.isArray(parsed) ? parsed : parsed.entries;
  };
  const logsOf = async (id: string) =>
    ((await api('GET', `/v1/executions/${id}/logs`)).json.lines as { text: string }[])
      .map((line) => line.text)
      .join('\n');

  before(async () => {
    upstream = await startScriptedLlm();
    dirs = serverDirs();
    const keyFile = join(work, 'secrets.key');
    const secrets = new FileSecretStore({ home: dirs.home, keyFile });
    await secrets.set('UPSTREAM_KEY', 'sk-upstream-test');
    await secrets.set('API_KEY', SECRET);
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
    server = await startServerProcess({ dirs, env: { AEGIS_SECRETS_KEY_FILE: keyFile } });
    await deploy('helper', {
      security: { resources: { timeout: '2m' } },
      llm: { models: ['default'], budget: { calls: 5 } },
      memory: { index: ['input', 'output'], recall: { k: 3, threshold: 0.05 } },
      task: { instruction: 'You are the ops helper.', promptTemplate: 'Question: {{input}}' },
    });
    const code = (language: string, entrypoint: string) => ({
      runtime: { language, entrypoint },
      security: { network: { allow: [] }, resources: { timeout: '60s' } },
    });
    await deploy(
      'leaky',
      {
        ...code('python', 'main.py'),
        secrets: [{ name: 'API_KEY', env: 'API_KEY', hosts: ['api.example.com'] }],
        memory: { index: ['input', 'output', 'logs'] },
      },
      { 'main.py': LEAKY_PY },
    );
    await deploy(
      'nomem',
      { ...code('python', 'main.py'), llm: { models: ['default'] } },
      { 'main.py': NOMEM_PY },
    );
    await deploy('bravo', { ...code('node', 'main.mjs'), memory: {} }, { 'main.mjs': ATTACKER_MJS });
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    await upstream?.close();
    dirs?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  let firstId = '';
  let memoryId = '';

  it('execution 1 is indexed; execution 2 (paraphrased) gets it recalled into its prompt', async () => {
    upstream.script({ text: 'Run `vault rotate billing-db`, then restart the billing service.' });
    const first = await exec('helper', 'How do I rotate the database password of the billing service?');
    assert.equal(first.status, 'succeeded', JSON.stringify(first) + server.stderr());
    firstId = first.id;
    const listed = await api('GET', '/v1/agents/helper/memories');
    assert.equal(listed.status, 200, listed.text);
    const memories = listed.json.memories as {
      id: string;
      executionId: string;
      outcome: string;
      text: string;
    }[];
    assert.equal(memories.length, 1);
    assert.equal(memories[0]?.executionId, first.id);
    assert.equal(memories[0]?.outcome, 'succeeded');
    assert.match(memories[0]?.text ?? '', /vault rotate billing-db/);
    memoryId = memories[0]?.id ?? '';

    upstream.script({ text: 'Same as last time.' });
    const second = await exec('helper', 'what is the procedure to rotate the billing service DB password');
    assert.equal(second.status, 'succeeded', JSON.stringify(second));
    const request = upstream.requests.at(-1)?.body as { messages: { role: string; content: unknown }[] };
    const system = JSON.stringify(request.messages.filter((m) => m.role === 'system'));
    assert.match(system, /You are the ops helper/);
    assert.match(system, /vault rotate billing-db/, 'the memory of execution 1 is in the prompt');
    assert.ok(system.includes(memoryId), 'the prompt names the memory id');
    // Trajectory: ids and scores; ledger: the ids, never the text.
    assert.match(await logsOf(second.id), new RegExp(`"step":"recall".*${memoryId}`));
    const entries = await auditOf(second.id);
    const search = entries.find((e) => e.kind === 'memory.search');
    assert.deepEqual(search?.data.ids, [memoryId]);
    assert.ok(!JSON.stringify(entries).includes('vault rotate'), 'memory text in the ledger');
    assert.ok(
      entries.some((e) => e.kind === 'memory.store'),
      'execution 2 is indexed too',
    );
  });

  it('an agent that prints its placeholder and its secret value leaves nothing secret in memory', async () => {
    const ran = await cli(
      ['exec', '--wait', 'leaky', '--input', JSON.stringify(SECRET), '-o', 'json'],
      env(),
    );
    const leaky = JSON.parse(ran.stdout) as Execution;
    assert.equal(leaky.status, 'succeeded', ran.stderr);
    const listed = await api('GET', '/v1/agents/leaky/memories');
    assert.ok(listed.text.includes('all good'), listed.text);
    assert.ok(!listed.text.includes(SECRET), listed.text);
    assert.ok(!/aegis-secret:API_KEY:[0-9a-f]{32}/.test(listed.text), listed.text);
    for (const query of [SECRET, 'my key is', 'the value']) {
      const found = await api('POST', '/v1/agents/leaky/memories/search', { query, k: 10, threshold: 0 });
      assert.equal(found.status, 200, found.text);
      assert.ok(!found.text.includes(SECRET) && !found.text.includes('aegis-secret:'), found.text);
    }
  });

  it('an agent without spec.memory is refused by the Python SDK (MemoryDenied) and the refusal is audited', async () => {
    const refused = await exec('nomem', null);
    assert.equal(refused.status, 'succeeded', JSON.stringify(refused));
    assert.match(await logsOf(refused.id), /denied: agent nomem has no memory/);
    const denied = (await auditOf(refused.id)).filter((e) => e.kind === 'api.denied');
    assert.deepEqual(
      denied.map((e) => [e.data.path, e.data.rule]),
      [['/v1/memory/store', 'spec.memory']],
    );
  });

  it("agent B (Node SDK) cannot see, filter into, override into or forget agent A's memories", async () => {
    const attack = await exec('bravo', { executionId: firstId, memoryId });
    assert.equal(attack.status, 'succeeded', JSON.stringify(attack));
    assert.deepEqual(attack.output, { found: [], filtered: 0, override: 'MemoryDenied', forgot: false });
    const still = await api('GET', '/v1/agents/helper/memories');
    assert.ok(still.text.includes(memoryId), 'A still has its memory');
    const entries = await auditOf(attack.id);
    assert.ok(entries.some((e) => e.kind === 'api.denied' && e.data.rule === 'spec.memory'));
    assert.ok(entries.some((e) => e.kind === 'memory.forget' && e.data.found === false));
  });

  it('operators: a forgotten memory is gone (a second forget is 404); a bad search body is 400', async () => {
    const forgot = await api('DELETE', `/v1/agents/helper/memories/${memoryId}`);
    assert.equal(forgot.status, 200, forgot.text);
    const again = await api('DELETE', `/v1/agents/helper/memories/${memoryId}`);
    assert.equal(again.status, 404);
    const bad = await api('POST', '/v1/agents/helper/memories/search', { query: '' });
    assert.equal(bad.status, 400);
  });
});
