/**
 * Live sandboxes through a real `aegis server` on the docker and gvisor runtimes (issue 12: "on docker/gvisor once
 * the runtimes issue has landed"): an agent whose manifest says `isolation: docker|gvisor` gets its sandbox there
 * (the record and `sandbox.created` say so); exec streams with stdin, files round-trip, pause stops its CPU — and
 * after `kill -9` of the server with a live and a paused sandbox, the restart records both `orchestrator-restarted`
 * and leaves no container, runsc process or cgroup behind.
 *
 * Runtimes this host cannot run skip with the conformance suite's reason (under CI they are required).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CONFORMANCE_RUNTIMES, testDockerSocket } from '../conformance/runtimes.ts';
import { findCgroupDirs, processWithMarker } from '../support/host-state.ts';
import { apiCall, cli, killServers, pollUntil, serverDirs, startServerProcess } from './harness.ts';

const call = apiCall;

/** Containers of this engine labelled with `id` (docker names them by execution). */
function containersOf(id: string): string[] {
  const socket = testDockerSocket();
  const listed = spawnSync(
    'curl',
    [
      '-sf',
      '--unix-socket',
      socket,
      `http://docker/containers/json?all=1&filters=${encodeURIComponent(JSON.stringify({ label: [`aegis.execution=${id}`] }))}`,
    ],
    { encoding: 'utf8' },
  );
  if (listed.status !== 0) return [];
  return (JSON.parse(listed.stdout || '[]') as { Id: string }[]).map((c) => c.Id);
}

for (const runtime of CONFORMANCE_RUNTIMES.filter((r) => r.name !== 'sandbox')) {
  const missing = runtime.skipReason();
  const required = process.env['CI'] === 'true';
  describe(`live sandboxes through the server on ${runtime.name}`, {
    skip: missing && !required ? missing : false,
  }, () => {
    after(() => killServers());

    it('exec, files and pause on the agent runtime; kill -9 of the server reaps them on restart', async () => {
      if (missing)
        throw new Error(`the ${runtime.name} runtime is required under CI but cannot run: ${missing}`);
      const dirs = serverDirs();
      const agentDir = mkdtempSync(join(tmpdir(), `aegis-live-${runtime.name}-`));
      try {
        writeFileSync(
          join(agentDir, 'agent.yaml'),
          `apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: live-${runtime.name} }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n  isolation: ${runtime.name}\n  security:\n    resources: { memory: 256Mi, timeout: 10m }\n`,
        );
        writeFileSync(join(agentDir, 'main.sh'), 'echo unused\n');
        const dockerEnv = { AEGIS_DOCKER_HOST: `unix://${testDockerSocket()}` };
        let server = await startServerProcess({ dirs, env: dockerEnv });
        const key = server.adminKey;
        const deployed = await cli(['deploy', agentDir], {
          ...server.env,
          AEGIS_SERVER: server.url,
          AEGIS_API_KEY: key,
        });
        assert.equal(deployed.code, 0, deployed.stderr);
        const ids: string[] = [];
        for (let i = 0; i < 2; i++) {
          const created = await call(server.url, key, 'POST', '/v1/sandboxes', {
            agent: `live-${runtime.name}`,
          });
          assert.equal(created.status, 201, created.text);
          assert.equal(created.json['runtime'], runtime.name, 'the sandbox runs where the manifest says');
          ids.push(created.json['id'] as string);
        }
        const [live, paused] = ids as [string, string];

        const echoed = await call(server.url, key, 'POST', `/v1/sandboxes/${live}/commands`, {
          cmd: ['sh', '-c', 'cat; id -u'],
          stdin: 'through stdin\n',
        });
        assert.equal(echoed.status, 200, echoed.text);
        assert.match(echoed.json['stdout'] as string, /^through stdin\n[1-9]\d*\n$/, 'not root');
        const body = `payload-${runtime.name}`;
        const put = await fetch(`${server.url}/v1/sandboxes/${live}/files?path=/workspace/f.txt`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/octet-stream' },
          body,
        });
        assert.equal(put.status, 201, await put.text());
        const got = await fetch(`${server.url}/v1/sandboxes/${live}/files?path=/workspace/f.txt`, {
          headers: { authorization: `Bearer ${key}` },
        });
        assert.equal(await got.text(), body);

        const marker = `aegis-live-${runtime.name}-${process.pid}-${Date.now()}`;
        const bg = await call(server.url, key, 'POST', `/v1/sandboxes/${live}/commands`, {
          cmd: ['sh', '-c', `exec -a ${marker} sleep 300`],
          background: true,
        });
        assert.equal(bg.status, 201, bg.text);
        assert.equal((await call(server.url, key, 'POST', `/v1/sandboxes/${paused}/pause`)).status, 200);
        const audit = (
          (await call(server.url, key, 'GET', `/v1/sandboxes/${live}/audit`)).json['entries'] as {
            kind: string;
            data: Record<string, unknown>;
          }[]
        ).find((e) => e.kind === 'sandbox.created');
        assert.equal(audit?.data['runtime'], runtime.name);

        await server.kill9();
        server = await startServerProcess({ dirs, env: dockerEnv });
        for (const id of ids) {
          const view = await call(server.url, key, 'GET', `/v1/sandboxes/${id}`);
          assert.equal(view.status, 200, view.text);
          assert.equal(view.json['status'], 'terminated');
          assert.equal(view.json['reason'], 'orchestrator-restarted');
          await pollUntil(`the cgroups of ${id} to be reaped`, () =>
            findCgroupDirs(id).length === 0 ? true : undefined,
          );
          if (runtime.name === 'docker') {
            await pollUntil(`the container of ${id} to be removed`, () =>
              containersOf(id).length === 0 ? true : undefined,
            );
          }
        }
        // gVisor's sandboxed processes are not host processes; docker's are — either way none is left.
        await pollUntil('the background command to be gone', () =>
          processWithMarker(marker) ? undefined : true,
        );
        assert.equal(await server.stop(), 0);
      } finally {
        await killServers();
        dirs.cleanup();
        rmSync(agentDir, { recursive: true, force: true });
      }
    });
  });
}
