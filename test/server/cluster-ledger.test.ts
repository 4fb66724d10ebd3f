/**
 * The ledger in a cluster, end to end (ADR 0116): two `aegis server` processes (node-1, node-2) on one PostgreSQL,
 * each with its own home, key and witness. An execution run by node-1 is read through node-2; the CLI exports and
 * verifies the cluster; then node-2 writes a second finish of node-1's execution into its own, validly signed chain
 * — and `aegis audit verify --cluster` names the contradiction with both nodes' entries.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Ed25519NodeKey, nodeHasher } from '../../src/adapters/audit/node-key.ts';
import { SqliteAuditLedger } from '../../src/adapters/audit/sqlite-ledger.ts';
import { FileWitness } from '../../src/adapters/audit/witness.ts';
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

const missing = postgresMissing();

describe('cluster ledger across two servers', {
  skip: missing && process.env['AEGIS_SKIP_POSTGRES'] === '1' ? missing : false,
}, () => {
  it("reads one execution's entries through another node; verify --cluster catches a second finish", async () => {
    if (missing) throw new Error(missing);
    const db = (await freshDatabase())!;
    const dirs = [serverDirs(), serverDirs()];
    const servers: ServerProcess[] = [];
    try {
      servers.push(
        await startServerProcess({ dirs: dirs[0]!, databaseUrl: db.url, args: ['--node-id', 'node-1'] }),
      );
      // The admin key is in the shared store: node-2 creates none of its own, so it gets node-1's file.
      writeFileSync(join(dirs[1]!.home, 'admin.key'), `${servers[0]!.adminKey}\n`, { mode: 0o600 });
      servers.push(
        await startServerProcess({ dirs: dirs[1]!, databaseUrl: db.url, args: ['--node-id', 'node-2'] }),
      );
      const [one, two] = servers as [ServerProcess, ServerProcess];
      const key = one.adminKey;
      const agent = mkdtempSync(join(tmpdir(), 'aegis-cl-agent-'));
      temps.push(agent);
      writeFileSync(
        join(agent, 'agent.yaml'),
        'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: hello }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n',
      );
      writeFileSync(join(agent, 'main.sh'), 'echo \'{"ok":true}\'\n');
      const deployed = await cli(['deploy', join(agent, 'agent.yaml')], {
        ...one.env,
        AEGIS_SERVER: one.url,
        AEGIS_API_KEY: key,
      });
      assert.equal(deployed.code, 0, deployed.stderr);
      const submitted = await apiCall(one.url, key, 'POST', '/v1/executions', { agent: 'hello', input: {} });
      assert.equal(submitted.status, 202, submitted.text);
      const id = submitted.json['id'] as string;
      const done = await apiCall(one.url, key, 'GET', `/v1/executions/${id}?wait=60s`);
      const runBy = (done.json['node'] as string | undefined) ?? 'node-1';

      // node-2 answers with the entries from node-1's chain (shipped within about a second), each naming its node.
      type Entry = { node: string; kind: string; seq: number };
      const entries = await pollUntil('node-1 entries to be readable through node-2', async () => {
        const read = await apiCall(two.url, key, 'GET', `/v1/executions/${id}/audit`);
        const list = (read.json['entries'] ?? []) as Entry[];
        return list.some((e) => e.kind === 'execution.finished') ? list : undefined;
      });
      assert.ok(
        entries.every((e) => e.node === 'node-1' || e.node === runBy),
        JSON.stringify(entries),
      );
      assert.equal(entries.filter((e) => e.kind === 'execution.created').length, 1);

      const cliEnv = { ...two.env };
      const verified = await cli(['audit', 'verify', '--cluster'], cliEnv);
      assert.equal(verified.code, 0, verified.stdout + verified.stderr);
      assert.match(verified.stdout, /the cluster ledger is intact: 2 nodes/);
      const archive = join(agent, 'cluster.jsonl');
      const exported = await cli(['audit', 'export', '--cluster', '--out', archive], cliEnv);
      assert.equal(exported.code, 0, exported.stderr);
      const offline = await cli(['audit', 'verify', archive], cliEnv);
      assert.equal(offline.code, 0, offline.stdout + offline.stderr);

      // The attack: node-2 (its own key, its own valid chain) records that *it* finished node-1's execution.
      const home2 = two.home;
      const ledger = SqliteAuditLedger.open({
        file: join(home2, 'audit.db'),
        signer: new Ed25519NodeKey(two.env['AEGIS_NODE_KEY_FILE']!),
        hasher: nodeHasher,
        clock: { now: () => Date.now() },
        witness: new FileWitness({
          dir: two.env['AEGIS_AUDIT_WITNESS_DIR']!,
          ledgerFile: join(home2, 'audit.db'),
        }),
        writer: true,
      });
      ledger.append('execution.finished', id, {
        status: 'failed',
        exitCode: 1,
        reason: 'node-2 says so',
        durationMs: 1,
      });
      await ledger.close();
      const caught = await pollUntil(
        'node-2 to ship the forged finish and verify to fail',
        async () => {
          const result = await cli(['audit', 'verify', '--cluster'], cliEnv);
          return result.code === 4 ? result : undefined;
        },
        30_000,
        500,
      );
      assert.match(caught.stderr, new RegExp(`conflicting-finish: execution ${id}: 2 terminal entries`));
      assert.match(caught.stderr, /at node node-1 seq \d+.*at node node-2 seq \d+/);
      assert.match(caught.stderr, /finish-by-non-holder/);
    } finally {
      for (const server of servers) await server.stop();
      await db.drop();
      for (const d of dirs) d.cleanup();
    }
  });
});
