/**
 * Edges in a cluster (ADR 0134): two `aegis server` processes on one real PostgreSQL and one real `aegis edge join`
 * connected to node-a. The edge is a row of the registry seen through node-b (kind edge, labels, runtimes, capacity,
 * live; dead after the edge grace once it is gone); an agent placed on its labels, submitted through node-b — which
 * started before the edge was enrolled and has no connection to it — runs on the edge, claimed by node-a on its
 * behalf, not on node-b. An edge connected to node-b and revoked through node-a is cut by node-b at once (the `edge`
 * cluster signal), not on node-b's next periodic edge refresh, made minutes long here.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
  ROOT,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

// biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field by the assertions
type Json = any;

const temps: string[] = [];
let edge: ChildProcess | undefined;
let revokedEdge: ChildProcess | undefined;
after(async () => {
  for (const child of [edge, revokedEdge]) {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
  }
  await killServers();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755); // the sandbox user reads bundles unpacked under the edge's data dir
  temps.push(dir);
  return dir;
}

function agentDir(): string {
  const dir = tempDir('aegis-edge-cluster-agent-');
  writeFileSync(
    join(dir, 'agent.yaml'),
    `apiVersion: aegis.dev/v1
kind: Agent
metadata: { name: plant-job, version: 0.1.0 }
spec:
  runtime: { language: python, entrypoint: main.py }
  placement:
    labels: { site: plant }
`,
  );
  writeFileSync(join(dir, 'main.py'), 'import json\nprint(json.dumps({"ran": "edge"}))\n');
  return join(dir, 'agent.yaml');
}

/** Servers node-a and node-b on one database, sharing node-a's admin key; `viaA` is the CLI's environment for a. */
async function twoServers(databaseUrl: string, args: readonly string[]) {
  const dirs = [serverDirs(), serverDirs()];
  const a: ServerProcess = await startServerProcess({
    dirs: dirs[0]!,
    databaseUrl,
    args: ['--node-id', 'node-a', ...args],
  });
  writeFileSync(join(dirs[1]!.home, 'admin.key'), `${a.adminKey}\n`, { mode: 0o600 });
  const b: ServerProcess = await startServerProcess({
    dirs: dirs[1]!,
    databaseUrl,
    args: ['--node-id', 'node-b', ...args],
  });
  const key = a.adminKey;
  return { a, b, key, viaA: { ...a.env, AEGIS_SERVER: a.url, AEGIS_API_KEY: key } };
}

const missing = postgresMissing();

describe('an edge in a two-server cluster', {
  skip: missing && process.env['AEGIS_SKIP_POSTGRES'] === '1' ? missing : false,
}, () => {
  it('is listed by the other server, placement there sends its work to it, and it is dead after the grace', async () => {
    if (missing) throw new Error(missing);
    const db = (await freshDatabase())!;
    try {
      const { a, b, key, viaA } = await twoServers(db.url, ['--lease', '3s', '--edge-grace', '4s']);
      const deployed = await cli(['deploy', agentDir()], viaA);
      assert.equal(deployed.code, 0, deployed.stderr);

      // Enrolled through node-a after node-b started.
      const created = await cli(['edge', 'token', 'create', '--label', 'site=plant', '-o', 'json'], viaA);
      assert.equal(created.code, 0, created.stderr);
      const token = JSON.parse(created.stdout).token as string;
      let log = '';
      edge = spawn(
        process.execPath,
        [
          join(ROOT, 'src/cli/bin.ts'),
          'edge',
          'join',
          a.url,
          '--capacity',
          '3',
          '--token',
          token,
          '--data-dir',
          tempDir('aegis-edge-cluster-data-'),
        ],
        { cwd: ROOT, env: { ...process.env }, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      edge.stdout!.on('data', (d) => (log += d));
      edge.stderr!.on('data', (d) => (log += d));

      // node-b lists it: kind edge, its labels, runtimes and capacity, live (heartbeated by node-a).
      const listed: Json = await pollUntil('node-b lists the edge live', async () => {
        const nodes = ((await apiCall(b.url, key, 'GET', '/v1/nodes')).json as Json).nodes as Json[];
        return nodes.find((n) => n.kind === 'edge' && n.state === 'live');
      });
      assert.deepEqual(listed.labels, { site: 'plant' });
      assert.deepEqual(listed.runtimes, ['sandbox']);
      assert.equal(listed.capacity, 3);
      assert.equal(listed.host, 'via node-a');
      const shown = await cli(['nodes', 'ls'], { ...b.env, AEGIS_SERVER: b.url, AEGIS_API_KEY: key });
      assert.equal(shown.code, 0, shown.stderr);
      assert.match(shown.stdout, new RegExp(`${listed.id}\\s+edge\\s+live`));

      // Submitted through node-b, which holds no connection to the edge: recorded for the edge, run there.
      const submitted = await apiCall(b.url, key, 'POST', '/v1/executions', { agent: 'plant-job' });
      assert.equal(submitted.status, 202, submitted.text);
      const id = submitted.json['id'] as string;
      const done: Json = await pollUntil(
        `execution ${id} to end (edge log: ${log.slice(-500)})`,
        async () => {
          const got = (await apiCall(b.url, key, 'GET', `/v1/executions/${id}`)).json as Json;
          return ['succeeded', 'failed', 'timeout', 'oom', 'killed'].includes(got.status) ? got : undefined;
        },
        90_000,
      );
      assert.equal(done.status, 'succeeded', JSON.stringify(done));
      assert.equal(done.runtime, 'edge');
      assert.deepEqual(done.output, { ran: 'edge' });

      // Gone: no server heartbeats it any more; after the grace a sweep declares it dead.
      const exited = new Promise((resolve) => edge!.once('exit', resolve));
      edge.kill('SIGKILL');
      await exited;
      await pollUntil(
        'the edge declared dead after the grace',
        async () => {
          const nodes = ((await apiCall(b.url, key, 'GET', '/v1/nodes')).json as Json).nodes as Json[];
          return nodes.find((n) => n.id === listed.id)?.state === 'dead';
        },
        60_000,
      );
    } finally {
      await killServers();
      await db.drop();
    }
  });

  it('attacker: an edge revoked through one server is cut at once by the server holding its connection; audited there', async () => {
    if (missing) throw new Error(missing);
    const db = (await freshDatabase())!;
    try {
      // Each server also reloads the edge list every min(lease, edge grace)/3 — 10 minutes here, far beyond the
      // deadline below: only the revocation's cluster signal can explain a prompt cut on node-b.
      const { a, b, key, viaA } = await twoServers(db.url, ['--lease', '30m', '--edge-grace', '30m']);

      const created = await cli(['edge', 'token', 'create', '--label', 'site=plant', '-o', 'json'], viaA);
      assert.equal(created.code, 0, created.stderr);
      let log = '';
      const child = spawn(
        process.execPath,
        [
          join(ROOT, 'src/cli/bin.ts'),
          'edge',
          'join',
          b.url,
          '--token',
          JSON.parse(created.stdout).token as string,
          '--data-dir',
          tempDir('aegis-edge-cluster-data-'),
        ],
        { cwd: ROOT, env: { ...process.env }, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      revokedEdge = child;
      child.stdout!.on('data', (d) => (log += d));
      child.stderr!.on('data', (d) => (log += d));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      const connected: Json = await pollUntil(`the edge connected to node-b (edge log: ${log})`, async () => {
        const nodes = ((await apiCall(b.url, key, 'GET', '/v1/edge/nodes')).json as Json).nodes as Json[];
        return nodes.find((n) => n.connected);
      });

      // Revoked through node-a, which holds no connection to it.
      const revoked = await cli(['edge', 'revoke', connected.id], viaA);
      assert.equal(revoked.code, 0, revoked.stderr);

      // node-b cuts it: the edge process learns it on its open connection and stops.
      await pollUntil(
        `the revoked edge cut off by node-b (edge log: ${log.slice(-500)})`,
        () => child.exitCode !== null || child.signalCode !== null,
        60_000,
      );
      assert.notEqual(await exited, 0);
      assert.match(log, /revoked/);
      const seenByB = ((await apiCall(b.url, key, 'GET', '/v1/edge/nodes')).json as Json).nodes as Json[];
      assert.equal(seenByB.find((n) => n.id === connected.id)?.connected, false);
      // Audited on node-b's ledger (node-a's edge.revoked says it held no connection).
      const ledgerOf = async (server: ServerProcess): Promise<Json[]> => {
        const out = join(tempDir('aegis-edge-cluster-audit-'), 'export.jsonl');
        const exported = await cli(['audit', 'export', '--out', out], server.env);
        assert.equal(exported.code, 0, exported.stderr);
        return readFileSync(out, 'utf8')
          .split('\n')
          .filter((line) => line !== '')
          .map((line) => JSON.parse(line))
          .map((record) => record.entry ?? record);
      };
      await pollUntil('the cut audited on node-b', async () =>
        (await ledgerOf(b)).some(
          (e) =>
            e.kind === 'edge.refused' &&
            e.data?.node === connected.id &&
            /revoked .*through another server/.test(e.data.reason),
        ),
      );
      const revokedEntry = await pollUntil('the revocation audited on node-a', async () =>
        (await ledgerOf(a)).find((e) => e.kind === 'edge.revoked' && e.data?.node === connected.id),
      );
      assert.equal(revokedEntry.data.connected, false);
    } finally {
      await killServers();
      await db.drop();
    }
  });
});
