/**
 * Usage on the execution record, end to end through a real `aegis server` (issue 13): the server reads its providers
 * from $AEGIS_HOME/config.yaml and the provider key from its sealed secret store; a deployed Python agent with
 * `spec.llm` calls the scripted upstream twice through the in-sandbox API. The execution then carries
 * `usage.llm {calls, inputTokens, outputTokens, usd}` in REST, `aegis exec -o json`, `aegis ps` (table and JSON) and
 * gRPC, and /metrics counts the calls in aegis_llm_calls_total.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { stringify } from 'yaml';
import { FileSecretStore } from '../../src/adapters/secrets/file-secret-store.ts';
import { ExecutionService } from '../../src/api/grpc/gen/aegis/v1/executions_pb.ts';
import { type ScriptedLlm, startScriptedLlm } from '../support/scripted-llm.ts';
import {
  cli,
  killServers,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

const KEY = `sk-REAL-usage-${process.pid}`;
/** USD per million tokens, as in config.yaml; the scripted upstream answers 10 input / 5 output tokens per call. */
const PRICE = { input: 3, output: 15 };
const EXPECTED = { calls: 2, inputTokens: 20, outputTokens: 10, usd: (20 * 3 + 10 * 15) / 1e6 };

const AGENT = `import aegis
first = aegis.llm.chat([{"role": "user", "content": "one"}])
second = aegis.llm.chat([{"role": "user", "content": "two"}], stream=True)
aegis.output({"first": first["content"], "second": "".join(second)})
`;

describe('usage.llm on executions run by aegis server', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let upstream: ScriptedLlm;
  let agentDir = '';
  let keyDir = '';

  before(async () => {
    upstream = await startScriptedLlm();
    dirs = serverDirs();
    keyDir = mkdtempSync(join(tmpdir(), 'aegis-llm-usage-key-'));
    const keyFile = join(keyDir, 'secrets.key');
    await new FileSecretStore({ home: dirs.home, keyFile }).set('UPSTREAM_KEY', KEY);
    writeFileSync(
      join(dirs.home, 'config.yaml'),
      stringify({
        llm: {
          providers: {
            scripted: { kind: 'openai', baseUrl: upstream.baseUrl, apiKeySecret: 'UPSTREAM_KEY' },
          },
          models: { default: { provider: 'scripted', model: 'scripted-1' } },
          prices: { default: PRICE },
        },
      }),
    );
    server = await startServerProcess({ dirs, env: { AEGIS_SECRETS_KEY_FILE: keyFile } });

    agentDir = mkdtempSync(join(tmpdir(), 'aegis-llm-usage-agent-'));
    mkdirSync(agentDir, { recursive: true });
    writeFileSync(join(agentDir, 'main.py'), AGENT);
    writeFileSync(
      join(agentDir, 'agent.yaml'),
      stringify({
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name: 'llm-usage', version: '1.0.0' },
        spec: {
          runtime: { language: 'python', entrypoint: 'main.py' },
          isolation: 'sandbox',
          security: { network: { allow: [] }, resources: { timeout: '30s' } },
          llm: { models: ['default'] },
        },
      }),
    );
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    await upstream?.close();
    dirs?.cleanup();
    for (const dir of [agentDir, keyDir]) if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cliEnv = () => ({ ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey });
  const api = async (path: string) => {
    const res = await fetch(`${server.url}${path}`, {
      headers: { authorization: `Bearer ${server.adminKey}` },
    });
    assert.equal(res.status, 200, path);
    return res;
  };

  it('records usage.llm and shows it in REST, the CLI, gRPC and /metrics', async () => {
    const deployed = await cli(['deploy', agentDir], cliEnv());
    assert.equal(deployed.code, 0, deployed.stderr);

    const exec = await cli(['exec', '--wait', 'llm-usage', '-o', 'json'], cliEnv());
    assert.equal(exec.code, 0, exec.stderr + exec.stdout + server.stderr());
    const execution = JSON.parse(exec.stdout) as {
      id: string;
      status: string;
      output: unknown;
      usage: { llm: typeof EXPECTED | null };
    };
    assert.equal(execution.status, 'succeeded');
    assert.deepEqual(execution.output, { first: 'echo: one', second: 'echo: two' });
    assert.deepEqual(execution.usage, { llm: EXPECTED });
    // The upstream saw the real key on both calls.
    assert.equal(upstream.requests.length, 2);
    for (const seen of upstream.requests) assert.equal(seen.headers.authorization, `Bearer ${KEY}`);

    const rest = (await (await api(`/v1/executions/${execution.id}`)).json()) as typeof execution;
    assert.deepEqual(rest.usage, { llm: EXPECTED });

    const ps = await cli(['ps', '-o', 'json'], cliEnv());
    assert.equal(ps.code, 0, ps.stderr);
    const listed = (JSON.parse(ps.stdout) as { executions: (typeof execution)[] }).executions;
    assert.deepEqual(listed.find((e) => e.id === execution.id)?.usage, { llm: EXPECTED });
    const table = await cli(['ps'], cliEnv());
    assert.match(table.stdout, /\bLLM\b/);
    assert.match(table.stdout, new RegExp(`${execution.id}.*2 calls 20/10 tok \\$0\\.00021`));

    const grpc = createClient(ExecutionService, createGrpcTransport({ baseUrl: server.url }));
    const got = await grpc.getExecution(
      { id: execution.id },
      { headers: { authorization: `Bearer ${server.adminKey}` } },
    );
    assert.equal(got.usage?.llm?.calls, 2n);
    assert.equal(got.usage?.llm?.inputTokens, 20n);
    assert.equal(got.usage?.llm?.outputTokens, 10n);
    assert.equal(got.usage?.llm?.usd, EXPECTED.usd);

    const metrics = await (await api('/metrics')).text();
    assert.match(metrics, /^aegis_llm_calls_total\{alias="default",status="ok"\} 2$/m);
  });

  it('an agent without spec.llm has usage.llm null', async () => {
    const plain = mkdtempSync(join(tmpdir(), 'aegis-llm-usage-plain-'));
    try {
      writeFileSync(join(plain, 'main.py'), 'print("no model")\n');
      writeFileSync(
        join(plain, 'agent.yaml'),
        stringify({
          apiVersion: 'aegis.dev/v1',
          kind: 'Agent',
          metadata: { name: 'llm-usage-none', version: '1.0.0' },
          spec: { runtime: { language: 'python', entrypoint: 'main.py' }, isolation: 'sandbox' },
        }),
      );
      assert.equal((await cli(['deploy', plain], cliEnv())).code, 0);
      const ran = await cli(['exec', '--wait', '-o', 'json', 'llm-usage-none'], cliEnv());
      assert.equal(ran.code, 0, ran.stderr);
      assert.deepEqual((JSON.parse(ran.stdout) as { usage: unknown }).usage, { llm: null });
    } finally {
      rmSync(plain, { recursive: true, force: true });
    }
  });
});
