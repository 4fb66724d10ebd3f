/**
 * Two `aegis server` processes (node-a, node-b) on one PostgreSQL: the registry through either node
 * (GET /v1/nodes, `aegis nodes ls`), and work that crosses nodes — submit via A, cancel and follow via B.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  apiCall,
  cli,
  freshDatabase,
  killServers,
  pollUntil,
  postgresMissing,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

const temps: string[] = [];
after(async () => {
  await killServers();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

function agentDir(name: string, script: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-cn-agent-'));
  temps.push(dir);
  writeFileSync(
    join(dir, 'agent.yaml'),
    `apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: ${name} }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n`,
  );
  writeFileSync(join(dir, 'main.sh'), script);
  return join(dir, 'agent.yaml');
}

const missing = postgresMissing();

describe('a two-node cluster', {
  skip: missing && process.env['AEGIS_SKIP_POSTGRES'] === '1' ? missing : false,
}, () => {
  it('lists both nodes through either node; work submitted via A is followed and cancelled via B', async () => {
    if (missing) throw new Error(missing);
    const db = (await freshDatabase())!;
    const dirs = [serverDirs(), serverDirs()];
    const servers: ServerProcess[] = [];
    try {
      servers.push(
        await startServerProcess({
          dirs: dirs[0]!,
          databaseUrl: db.url,
          args: ['--node-id', 'node-a', '--label', 'zone=a'],
        }),
      );
      writeFileSync(join(dirs[1]!.home, 'admin.key'), `${servers[0]!.adminKey}\n`, { mode: 0o600 });
      servers.push(
        await startServerProcess({ dirs: dirs[1]!, databaseUrl: db.url, args: ['--node-id', 'node-b'] }),
      );
      const [a, b] = servers as [ServerProcess, ServerProcess];
      const key = a.adminKey;

      const listed = await apiCall(b.url, key, 'GET', '/v1/nodes');
      assert.equal(listed.status, 200, listed.text);
      const nodes = listed.json['nodes'] as Record<string, unknown>[];
      assert.deepEqual(
        nodes.map((n) => [n['id'], n['kind'], n['state']]),
        [
          ['node-a', 'server', 'live'],
          ['node-b', 'server', 'live'],
        ],
      );
      assert.deepEqual(nodes[0]!['labels'], { zone: 'a' });
      assert.equal(nodes[0]!['running'], 0);
      assert.ok((nodes[0]!['capacity'] as number) > 0);
      assert.ok((nodes[0]!['epoch'] as number) >= 1);
      assert.ok(typeof nodes[0]!['heartbeatAgeMs'] === 'number');

      const env = { ...a.env, AEGIS_SERVER: a.url, AEGIS_API_KEY: key };
      const json = await cli(['nodes', 'ls', '-o', 'json'], env);
      assert.equal(json.code, 0, json.stderr);
      assert.deepEqual(
        (JSON.parse(json.stdout) as { nodes: { id: string }[] }).nodes.map((n) => n.id),
        ['node-a', 'node-b'],
      );
      const table = await cli(['nodes', 'ls'], env);
      assert.equal(table.code, 0, table.stderr);
      assert.match(
        table.stdout,
        /^ID\s+KIND\s+STATE\s+HOST\s+LABELS\s+RUNTIMES\s+RUNNING\s+HEARTBEAT\s+EPOCH/m,
      );
      assert.match(table.stdout, /^node-a\s+server\s+live\s+\S+\s+zone=a\s+\S+\s+0\/\d+\s+[\d.]+s\s+\d+/m);

      // Work across nodes: submitted via A, it runs wherever it is claimed; B follows its logs and cancels.
      for (const [name, script] of [
        ['ticker', 'for i in 1 2 3 4 5; do echo "tick $i"; sleep 0.2; done\necho \'{"ok":true}\'\n'],
        ['sleeper', 'echo started\nsleep 120\n'],
      ] as const) {
        const deployed = await cli(['deploy', agentDir(name, script)], env);
        assert.equal(deployed.code, 0, deployed.stderr);
      }
      const ticker = await apiCall(a.url, key, 'POST', '/v1/executions', { agent: 'ticker', input: {} });
      assert.equal(ticker.status, 202, ticker.text);
      const envB = { ...b.env, AEGIS_SERVER: b.url, AEGIS_API_KEY: key };
      const followed = await cli(['logs', '-f', ticker.json['id'] as string], envB);
      assert.equal(followed.code, 0, followed.stderr);
      assert.match(followed.stdout, /tick 1[\s\S]*tick 5/);
      const done = await apiCall(b.url, key, 'GET', `/v1/executions/${ticker.json['id'] as string}?wait=60s`);
      assert.equal(done.json['status'], 'succeeded', done.text);
      // Operators see which node ran it: `node` on the REST shape and in `aegis ps -o json`.
      assert.ok(['node-a', 'node-b'].includes(done.json['node'] as string), done.text);
      const ps = await cli(['ps', '-o', 'json'], envB);
      assert.equal(ps.code, 0, ps.stderr);
      const psRows = (JSON.parse(ps.stdout) as { executions: { id: string; node: string | null }[] })
        .executions;
      assert.equal(psRows.find((e) => e.id === ticker.json['id'])?.node, done.json['node']);

      const sleeper = await apiCall(a.url, key, 'POST', '/v1/executions', { agent: 'sleeper', input: {} });
      const id = sleeper.json['id'] as string;
      await pollUntil('the sleeper to run', async () => {
        const r = await apiCall(b.url, key, 'GET', `/v1/executions/${id}`);
        return r.json['status'] === 'running' ? r : undefined;
      });
      const cancelled = await apiCall(b.url, key, 'POST', `/v1/executions/${id}/cancel`);
      assert.equal(cancelled.status, 200, cancelled.text);
      assert.equal(cancelled.json['status'], 'killed', cancelled.text);
    } finally {
      for (const server of servers) await server.stop();
      await db.drop();
      for (const d of dirs) d.cleanup();
    }
  });
});
