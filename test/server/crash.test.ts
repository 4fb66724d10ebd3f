/**
 * kill -9 of the server with executions running and queued, then a restart: nothing is lost (every execution is
 * accounted for — the running one `failed` with reason orchestrator-restarted, the queued ones run to the end) and
 * nothing is orphaned (no sandbox process, cgroup or scratch directory survives).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { findCgroupDirs, processWithMarker, scratchDirsOf } from '../support/host-state.ts';
import {
  cli,
  freshDatabase,
  killServers,
  pollUntil,
  postgresMissing,
  serverDirs,
  startServerProcess,
} from './harness.ts';

const temps: string[] = [];
after(async () => {
  await killServers();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

async function call(url: string, key: string, method: string, path: string, body?: unknown) {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

for (const backend of ['sqlite', 'postgres'] as const) {
  const missing = backend === 'postgres' ? postgresMissing() : false;
  describe(`crash recovery on ${backend}`, {
    skip: missing && process.env['AEGIS_SKIP_POSTGRES'] === '1' ? missing : false,
  }, () => {
    it('kill -9 with executions running and queued, restart: nothing lost, nothing orphaned', async () => {
      if (missing) throw new Error(missing);
      const db = backend === 'postgres' ? await freshDatabase() : undefined;
      const dirs = serverDirs();
      try {
        const marker = `aegis-crash-marker-${process.pid}-${Date.now()}`;
        const agent = mkdtempSync(join(tmpdir(), 'aegis-crash-agent-'));
        temps.push(agent);
        writeFileSync(
          join(agent, 'agent.yaml'),
          'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: sleeper }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n',
        );
        // Sleeps as long as the input says; the marker names its process so the test can look for survivors.
        writeFileSync(
          join(agent, 'main.sh'),
          `read -r input\nseconds=$(echo "$input" | tr -dc 0-9)\necho "sleeping $seconds"\nexec -a ${marker} sleep "$seconds"\n`,
        );
        const options = { dirs, args: ['--max-concurrent', '1'], ...(db ? { databaseUrl: db.url } : {}) };
        let server = await startServerProcess(options);
        const key = server.adminKey;
        const deployed = await cli(['deploy', join(agent, 'agent.yaml')], {
          ...server.env,
          AEGIS_SERVER: server.url,
          AEGIS_API_KEY: key,
        });
        assert.equal(deployed.code, 0, deployed.stderr);

        const running = await call(server.url, key, 'POST', '/v1/executions', {
          agent: 'sleeper',
          input: 300,
        });
        const queuedA = await call(server.url, key, 'POST', '/v1/executions', { agent: 'sleeper', input: 0 });
        const queuedB = await call(server.url, key, 'POST', '/v1/executions', { agent: 'sleeper', input: 1 });
        const runningId = running.json['id'] as string;
        await pollUntil('the first execution to run', async () =>
          (await call(server.url, key, 'GET', `/v1/executions/${runningId}`)).json['status'] === 'running' &&
          processWithMarker(marker)
            ? true
            : undefined,
        );
        assert.equal(
          (await call(server.url, key, 'GET', `/v1/executions/${queuedA.json['id']}`)).json['status'],
          'queued',
        );
        assert.ok(findCgroupDirs(runningId).length > 0, 'the running sandbox has cgroups');

        await server.kill9();
        // --die-with-parent takes the sandbox's processes down with the server.
        await pollUntil('sandbox processes to die', () => (processWithMarker(marker) ? undefined : true));

        server = await startServerProcess(options);
        assert.match(
          server.stderr(),
          // Queued executions need no requeue: they wait in the shared queue for any node (ADR 0101).
          /recovered after a restart: 0 queued execution\(s\) queued again, 1 running/,
        );
        const failed = await call(server.url, key, 'GET', `/v1/executions/${runningId}`);
        assert.equal(failed.json['status'], 'failed');
        assert.match(failed.json['reason'] as string, /^orchestrator-restarted/);
        for (const queued of [queuedA, queuedB]) {
          const id = queued.json['id'] as string;
          const final = await call(server.url, key, 'GET', `/v1/executions/${id}?wait=60s`);
          assert.equal(final.json['status'], 'succeeded', JSON.stringify(final.json));
        }
        const all = await call(server.url, key, 'GET', '/v1/executions?agent=sleeper');
        assert.equal((all.json['executions'] as unknown[]).length, 3, 'every execution is accounted for');
        assert.deepEqual(findCgroupDirs(runningId), [], 'cgroups of the crashed sandbox reaped');
        assert.deepEqual(scratchDirsOf(runningId), [], 'scratch dir reaped');
        const audit = await call(server.url, key, 'GET', `/v1/executions/${runningId}/audit`);
        const kinds = (audit.json['entries'] as { kind: string }[]).map((e) => e.kind);
        assert.equal(kinds.at(-1), 'execution.recovered');
        assert.equal(await server.stop(), 0);
      } finally {
        await killServers();
        await db?.drop();
        dirs.cleanup();
      }
    });
  });
}

describe('ledger durability under kill -9', () => {
  // One `aegis audit show` per acknowledged execution (~50 CLI starts): minutes on a loaded host.
  it('three kill -9s of a loaded server: every acknowledged execution has its entries; a deleted one is named', {
    timeout: 360_000,
  }, async () => {
    const dirs = serverDirs();
    try {
      const agent = mkdtempSync(join(tmpdir(), 'aegis-crash-ledger-'));
      temps.push(agent);
      writeFileSync(
        join(agent, 'agent.yaml'),
        'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: quick }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n',
      );
      writeFileSync(join(agent, 'main.sh'), 'read -r input\necho "$input"\n');
      const options = { dirs, args: ['--max-concurrent', '2', '--max-queued', '1000'] };
      let server = await startServerProcess(options);
      const key = server.adminKey;
      const env = { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: key };
      assert.equal((await cli(['deploy', join(agent, 'agent.yaml')], env)).code, 0);
      const acknowledged: string[] = [];
      for (let round = 0; round < 3; round++) {
        // Load: a stream of submissions in flight, and the kill lands in the middle of it.
        let stop = false;
        const submitters = Array.from({ length: 4 }, async () => {
          while (!stop) {
            try {
              const r = await call(server.url, key, 'POST', '/v1/executions', {
                agent: 'quick',
                input: round,
              });
              if (r.status === 202 || r.status === 200) acknowledged.push(r.json['id'] as string);
            } catch {
              return; // the server died under us
            }
          }
        });
        await pollUntil('a few acknowledged executions this round', () =>
          acknowledged.length >= (round + 1) * 15 ? true : undefined,
        );
        await server.kill9();
        stop = true;
        await Promise.all(submitters);
        server = await startServerProcess(options);
      }
      // Let the requeued ones finish, then stop cleanly.
      await pollUntil('the queue to drain', async () => {
        const list = await call(server.url, key, 'GET', '/v1/executions?limit=1000');
        const open = (list.json['executions'] as { status: string }[]).filter(
          (e) => e.status === 'queued' || e.status === 'running',
        );
        return open.length === 0 ? true : undefined;
      });
      assert.equal(await server.stop(), 0);

      const verify = await cli(['audit', 'verify', '--store', '-o', 'json'], server.env);
      assert.equal(verify.code, 0, `${verify.stdout}\n${verify.stderr}`);
      const show = async (id: string) => {
        const r = await cli(['audit', 'show', id, '-o', 'json'], server.env);
        return r.code === 0 ? (JSON.parse(r.stdout) as { kind: string; seq: number }[]) : [];
      };
      for (const id of acknowledged) {
        const kinds = (await show(id)).map((e) => e.kind);
        assert.ok(
          kinds.includes('execution.created') || kinds.includes('execution.recovered'),
          `${id} acknowledged but has no execution.created: ${kinds.join(', ')}`,
        );
        assert.ok(
          kinds.includes('execution.finished') || kinds.includes('execution.recovered'),
          `${id} ended but has no execution.finished: ${kinds.join(', ')}`,
        );
      }

      // A deliberately deleted entry is reported, naming the execution.
      const victim = acknowledged[0]!;
      const created = (await show(victim)).find((e) => e.kind === 'execution.created')!;
      const db = new DatabaseSync(join(server.home, 'audit.db'));
      try {
        db.exec('DROP TRIGGER audit_entries_append_only_delete');
        db.exec(`DELETE FROM audit_entries WHERE seq = ${created.seq}`);
      } finally {
        db.close();
      }
      const broken = await cli(['audit', 'verify', '--store'], server.env);
      assert.equal(broken.code, 4, broken.stdout);
      assert.match(broken.stderr, new RegExp(`entry seq ${created.seq} is missing`));
    } finally {
      await killServers();
      dirs.cleanup();
    }
  });
});
