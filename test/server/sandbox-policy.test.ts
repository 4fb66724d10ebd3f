/**
 * A live sandbox carries the whole manifest policy, as an execution does (issue 12: "every command, file operation
 * and connection in such a sandbox is checked by the manifest's policy and written to the ledger"):
 *   - egress: allowed and denied connections from a command are `network.connect` entries of the sandbox;
 *   - secrets: the sandbox holds only a placeholder; the bound host gets the value, which is never in the
 *     sandbox's env or in command output, even when the host reflects it; each injection is a `secret.use` entry;
 *   - spec.llm: the in-sandbox API answers with a token of the sandbox's own; each call is an `llm.call` entry and a
 *     spent budget ends the sandbox with reason `budget`;
 *   - output is decoded across chunk boundaries (a UTF-8 character split between two reads survives) and a stream
 *     resumed past its end returns instead of hanging.
 * All against a real `aegis server` with a sealed secret store and a scripted model upstream on loopback.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { FileSecretStore } from '../../src/adapters/secrets/file-secret-store.ts';
import { type ScriptedLlm, startScriptedLlm } from '../support/scripted-llm.ts';
import {
  apiCall,
  cli,
  killServers,
  pollUntil,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

const SECRET = `sk-live-${randomBytes(12).toString('hex')}`;
const UPSTREAM_KEY = `sk-upstream-${randomBytes(12).toString('hex')}`;

interface Entry {
  kind: string;
  data: Record<string, unknown>;
}

describe('live sandboxes carry the manifest policy: egress audit, secrets, spec.llm', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let upstream: ScriptedLlm;
  let bound: Server;
  let boundPort = 0;
  let deniedPort = 0;
  const seenAuth: string[] = [];
  const work = mkdtempSync(join(tmpdir(), 'aegis-live-policy-'));

  const call = (method: string, path: string, body?: unknown) =>
    apiCall(server.url, server.adminKey, method, path, body);

  const auditOf = async (id: string) =>
    (await call('GET', `/v1/sandboxes/${id}/audit`)).json['entries'] as Entry[];
  /** Runs `cmd` to its end; returns its stdout and exit code. */
  const run = async (id: string, cmd: string | string[]) => {
    const done = await call('POST', `/v1/sandboxes/${id}/commands`, { cmd });
    assert.equal(done.status, 200, done.text);
    const command = done.json['command'] as { id: string; exitCode: number | null };
    return {
      commandId: command.id,
      stdout: done.json['stdout'] as string,
      stderr: done.json['stderr'] as string,
      exitCode: command.exitCode,
    };
  };
  const deploy = async (name: string, spec: Record<string, unknown>) => {
    const dir = join(work, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'main.sh'), 'echo unused\n');
    writeFileSync(
      join(dir, 'agent.yaml'),
      stringify({
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name },
        spec: { runtime: { language: 'bash', entrypoint: 'main.sh' }, ...spec },
      }),
    );
    const deployed = await cli(['deploy', dir], {
      ...server.env,
      AEGIS_SERVER: server.url,
      AEGIS_API_KEY: server.adminKey,
    });
    assert.equal(deployed.code, 0, deployed.stderr);
  };
  const create = async (agent: string) => {
    const created = await call('POST', '/v1/sandboxes', { agent });
    assert.equal(created.status, 201, created.text);
    return created.json['id'] as string;
  };

  before(async () => {
    upstream = await startScriptedLlm();
    // The bound host reflects the Authorization header it received (a hostile or careless upstream).
    bound = createServer((request, response) => {
      const auth = String(request.headers['authorization'] ?? '');
      seenAuth.push(auth);
      response.end(`you sent: ${auth}\n`);
    });
    await new Promise<void>((resolve) => bound.listen(0, '127.0.0.1', resolve));
    boundPort = (bound.address() as AddressInfo).port;
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    deniedPort = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));

    dirs = serverDirs();
    const keyFile = join(work, 'secrets.key');
    const secrets = new FileSecretStore({ home: dirs.home, keyFile });
    await secrets.set('API', SECRET);
    await secrets.set('UPSTREAM_KEY', UPSTREAM_KEY);
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
    await deploy('live-net', {
      security: {
        network: { allow: [`127.0.0.1:${boundPort}`] },
        resources: { timeout: '5m' },
      },
      secrets: [{ name: 'API', env: 'API_TOKEN', hosts: [`127.0.0.1:${boundPort}`] }],
    });
    await deploy('live-llm', {
      security: { network: { allow: [] }, resources: { timeout: '5m' } },
      llm: { models: ['default'], budget: { calls: 2 } },
    });
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    await upstream?.close();
    await new Promise<void>((resolve) => (bound ? bound.close(() => resolve()) : resolve()));
    dirs?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('attack: egress from a command is decided by the policy and every connection is in the ledger', async () => {
    const id = await create('live-net');
    const py = (port: number) =>
      `import urllib.request\ntry:\n    print(urllib.request.urlopen("http://127.0.0.1:${port}/x", timeout=10).status)\nexcept Exception as e:\n    print("refused", e)\n`;
    const allowed = await run(id, ['python3', '-c', py(boundPort)]);
    assert.match(allowed.stdout, /^200/, allowed.stdout + allowed.stderr);
    const denied = await run(id, ['python3', '-c', py(deniedPort)]);
    assert.match(denied.stdout, /refused/, denied.stdout + denied.stderr);
    const connects = await pollUntil(
      'network.connect entries for the sandbox',
      async () => {
        const entries = (await auditOf(id)).filter((e) => e.kind === 'network.connect');
        return entries.length >= 2 ? entries : undefined;
      },
      30_000,
    );
    assert.ok(connects.some((e) => e.data['verdict'] === 'allow' && e.data['port'] === boundPort));
    assert.ok(connects.some((e) => e.data['verdict'] === 'deny' && e.data['port'] === deniedPort));
    await call('DELETE', `/v1/sandboxes/${id}`);
  });

  it('attack: a secret is a placeholder inside; the bound host gets the value; its reflection never reaches output', async () => {
    const id = await create('live-net');
    const env = await run(id, ['sh', '-c', 'echo "$API_TOKEN"; cat /proc/self/environ | tr "\\0" "\\n"']);
    assert.equal(env.exitCode, 0);
    assert.ok(!env.stdout.includes(SECRET), 'the value is not in the sandbox environment');
    const placeholder = env.stdout.split('\n')[0]!;
    assert.ok(placeholder.length > 0 && placeholder !== SECRET);
    const script = `import os, urllib.request\nreq = urllib.request.Request("http://127.0.0.1:${boundPort}/r", headers={"Authorization": "Bearer " + os.environ["API_TOKEN"]})\nprint(urllib.request.urlopen(req, timeout=10).read().decode())\n`;
    const reflected = await run(id, ['python3', '-c', script]);
    assert.equal(reflected.exitCode, 0, reflected.stderr);
    assert.ok(
      seenAuth.includes(`Bearer ${SECRET}`),
      `the bound host got the value: ${JSON.stringify(seenAuth)}`,
    );
    assert.ok(!reflected.stdout.includes(SECRET), `no value in the output: ${reflected.stdout}`);
    const entries = await pollUntil(
      'a secret.use entry',
      async () => {
        const all = await auditOf(id);
        return all.some((e) => e.kind === 'secret.use') ? all : undefined;
      },
      30_000,
    );
    const use = entries.find((e) => e.kind === 'secret.use')!;
    assert.equal(use.data['name'], 'API');
    assert.equal(use.data['injected'], true);
    assert.ok(!JSON.stringify(entries).includes(SECRET), 'the ledger holds no value');
    await call('DELETE', `/v1/sandboxes/${id}`);
  });

  it('spec.llm: the in-sandbox API works in a live sandbox, each call is audited, a spent budget ends it', async () => {
    const id = await create('live-llm');
    const env = await run(id, ['sh', '-c', 'echo "$OPENAI_BASE_URL"; echo "$AEGIS_TOKEN" | wc -c']);
    assert.match(env.stdout, /^http:\/\/127\.0\.0\.1:3129\/v1\n/);
    assert.ok(!env.stdout.includes(UPSTREAM_KEY));
    const chat = `import json, os, urllib.request
body = json.dumps({"model": "default", "messages": [{"role": "user", "content": "hi"}]}).encode()
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", data=body, headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "content-type": "application/json"})
try:
    print(json.loads(urllib.request.urlopen(req, timeout=20).read())["choices"][0]["message"]["content"])
except urllib.error.HTTPError as e:
    print("status", e.code)
`;
    for (let i = 0; i < 2; i++) {
      const answer = await run(id, ['python3', '-c', chat]);
      assert.match(answer.stdout, /echo: hi/, answer.stdout + answer.stderr);
    }
    await run(id, ['python3', '-c', chat]); // the third call is over the budget of 2
    const ended = await pollUntil(
      'the sandbox ended by its budget',
      async () => {
        const view = await call('GET', `/v1/sandboxes/${id}`);
        return view.json['status'] === 'terminated' ? view.json : undefined;
      },
      30_000,
    );
    assert.equal(ended['reason'], 'budget');
    const calls = (await auditOf(id)).filter((e) => e.kind === 'llm.call');
    assert.equal(calls.filter((e) => e.data['status'] === 'ok').length, 2);
    assert.ok(calls.some((e) => e.data['status'] === 'budget'));
    for (const seen of upstream.requests) assert.equal(seen.headers.authorization, `Bearer ${UPSTREAM_KEY}`);
  });

  it('output: a UTF-8 character split between reads survives; a stream resumed past its end returns', async () => {
    const id = await create('live-net');
    // "é" is two bytes; the first goes out, a pause, then the second: two reads on our side.
    const split = await run(id, ['sh', '-c', "printf '\\303'; sleep 0.3; printf '\\251\\n'"]);
    assert.equal(split.stdout, 'é\n');
    const beyond = await Promise.race([
      call('GET', `/v1/sandboxes/${id}/commands/${split.commandId}/events?follow=true&after=1000`),
      new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 15_000).unref()),
    ]);
    assert.notEqual(beyond, 'hung', 'a follow past the end returns');
    await call('DELETE', `/v1/sandboxes/${id}`);
  });
});
