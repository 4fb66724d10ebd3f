/**
 * Warm pools on a real server and the real sandbox: a pooled execution runs in a sandbox built before it existed
 * (and never in one used before), the pool refills, drains on redeploy, replaces a pooled sandbox killed from
 * outside, and scales to zero after its idle timeout.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { AgentService } from '../../src/api/grpc/gen/aegis/v1/agents_pb.ts';
import { findCgroupDirs } from '../support/host-state.ts';
import { BIN, cli, killServers, pollUntil, ROOT, serverDirs, startServerProcess } from './harness.ts';

const temps: string[] = [];
after(async () => {
  await killServers();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

function agentDir(name: string, scaling: string, version = '1.0.0'): string {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-pool-agent-'));
  temps.push(dir);
  writeFileSync(
    join(dir, 'agent.yaml'),
    `apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: ${name}, version: ${version} }\nspec:\n  runtime: { language: python, entrypoint: main.py }\n  scaling: ${scaling}\n`,
  );
  writeFileSync(join(dir, 'main.py'), 'import json, os\nprint(json.dumps({"pid": os.getpid()}))\n');
  return join(dir, 'agent.yaml');
}

describe('warm pools on aegis server', () => {
  it('pooled executions run in pre-built sandboxes; pools refill, drain on redeploy, replace the dead, scale to zero', async () => {
    const dirs = serverDirs();
    try {
      const server = await startServerProcess({ dirs });
      const key = server.adminKey;
      const env = { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: key };
      const call = async (method: string, path: string, body?: unknown) => {
        const response = await fetch(`${server.url}${path}`, {
          method,
          headers: {
            authorization: `Bearer ${key}`,
            ...(body ? { 'content-type': 'application/json' } : {}),
          },
          ...(body ? { body: JSON.stringify(body) } : {}),
        });
        // biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field below
        return (await response.json()) as Record<string, any>;
      };
      const pool = async (name: string) => (await call('GET', `/v1/agents/${name}`))['pools'][0];
      const metric = async (pattern: RegExp) => {
        const text = await (
          await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${key}` } })
        ).text();
        return Number(pattern.exec(text)?.[1] ?? 0);
      };
      const warmInstances = () => {
        const out = spawnSync(process.execPath, [BIN, 'audit', 'export'], {
          cwd: ROOT,
          env: { ...server.env },
          encoding: 'utf8',
        });
        return out.stdout
          .split('\n')
          .filter((line) => line.includes('"instance.warm"'))
          .map((line) => JSON.parse(line).data.instance as string);
      };

      const manifest = agentDir('pooled', '{ warm: 1 }');
      assert.equal((await cli(['deploy', manifest], env)).code, 0);
      await pollUntil('the pool to fill', async () =>
        (await pool('pooled'))?.warm === 1 ? true : undefined,
      );
      // An export holds the signed prefix of the ledger; the server signs a head within ~1 s of an append.
      const warmInstancesExported = (count: number) =>
        pollUntil(`${count} instance.warm entries in a signed export`, () => {
          const instances = warmInstances();
          return instances.length >= count ? instances : undefined;
        });
      const prebuilt = await warmInstancesExported(1);
      assert.equal(prebuilt.length, 1);
      // The same view over gRPC (Connect protocol here).
      const agents = createClient(
        AgentService,
        createConnectTransport({
          baseUrl: server.url,
          httpVersion: '1.1',
          interceptors: [
            (next) => async (request) => {
              request.header.set('authorization', `Bearer ${key}`);
              return await next(request);
            },
          ],
        }),
      );
      const viaGrpc = await agents.getAgent({ name: 'pooled' });
      assert.equal(viaGrpc.pools.length, 1);
      assert.equal(viaGrpc.pools[0]!.warm, 1);
      assert.equal(viaGrpc.pools[0]!.state, 'warm');
      assert.equal(viaGrpc.pools[0]!.target, 1);

      // A pooled execution runs in the instance that was Warm before it was created.
      const run = await call('POST', '/v1/executions?wait=60s', { agent: 'pooled' });
      assert.equal(run['status'], 'succeeded', JSON.stringify(run));
      const audit = await call('GET', `/v1/executions/${run['id']}/audit`);
      const started = audit['entries'].find((entry: { kind: string }) => entry.kind === 'execution.started');
      assert.equal(started.data.warm, true);
      assert.equal(started.data.instance, prebuilt[0]);

      // It refills with a new instance; the next execution gets that one, never the used one.
      await pollUntil('refill', async () => ((await pool('pooled'))?.warm === 1 ? true : undefined));
      const second = await call('POST', '/v1/executions?wait=60s', { agent: 'pooled' });
      const secondAudit = await call('GET', `/v1/executions/${second['id']}/audit`);
      const secondStart = secondAudit['entries'].find(
        (e: { kind: string }) => e.kind === 'execution.started',
      );
      assert.equal(secondStart.data.warm, true);
      assert.notEqual(secondStart.data.instance, started.data.instance, 'no instance is ever reused');

      // A pooled sandbox killed from outside is noticed, audited and replaced.
      await pollUntil('refill', async () => ((await pool('pooled'))?.warm === 1 ? true : undefined));
      // Three so far: the first, and one refill after each of the two executions.
      const victim = (await warmInstancesExported(3)).at(-1)!.replace(/^sbx_/, '');
      const groups = findCgroupDirs(victim);
      assert.ok(groups.length > 0, `cgroups of ${victim}`);
      const pids = readFileSync(join(groups[0]!, 'cgroup.procs'), 'utf8').trim().split('\n').filter(Boolean);
      assert.ok(pids.length > 0);
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error; // one already gone with its parent
        }
      }
      await pollUntil('the death to be noticed', async () =>
        (await metric(/aegis_pool_instance_transitions_total\{to="retired",reason="died"\} (\d+)/)) >= 1
          ? true
          : undefined,
      );
      await pollUntil('a replacement', async () => ((await pool('pooled'))?.warm === 1 ? true : undefined));

      // Redeploy drains the old revision's pool and fills the new one.
      assert.equal((await cli(['deploy', agentDir('pooled', '{ warm: 1 }', '2.0.0')], env)).code, 0);
      await pollUntil('the new revision pooled', async () => {
        const pools = (await call('GET', '/v1/agents/pooled'))['pools'] as {
          revision: number;
          warm: number;
        }[];
        return pools.length === 1 && pools[0]!.revision === 2 && pools[0]!.warm === 1 ? true : undefined;
      });
      assert.ok(
        (await metric(/aegis_pool_instance_transitions_total\{to="retired",reason="redeployed"\} (\d+)/)) >=
          1,
      );

      // Scale to zero after the agent's idle timeout; the next execution starts cold and wakes the pool.
      assert.equal((await cli(['deploy', agentDir('sleepy', '{ warm: 1, idleTimeout: 1s }')], env)).code, 0);
      await pollUntil('sleepy to scale to zero', async () => {
        const current = await pool('sleepy');
        return current?.state === 'cold' &&
          (await metric(/aegis_pool_instance_transitions_total\{to="retired",reason="idle"\} (\d+)/)) >= 1
          ? true
          : undefined;
      });
      const cold = await call('POST', '/v1/executions?wait=60s', { agent: 'sleepy' });
      assert.equal(cold['status'], 'succeeded');
      const coldAudit = await call('GET', `/v1/executions/${cold['id']}/audit`);
      const coldStart = coldAudit['entries'].find((e: { kind: string }) => e.kind === 'execution.started');
      assert.equal(coldStart.data.warm, undefined, 'a scaled-to-zero pool means a cold start');
      await pollUntil('sleepy to wake', async () => ((await pool('sleepy'))?.warm === 1 ? true : undefined));

      assert.equal(await server.stop(), 0);
      assert.match(server.stderr(), /stopped: /);
    } finally {
      await killServers();
      dirs.cleanup();
    }
  });
});
