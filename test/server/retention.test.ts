/**
 * Retention on a real server (issue 15 item 6): `aegis server --retain` says what it keeps; POST /v1/admin/prune
 * (admin only, through the CLI's `aegis prune --server`) removes a finished execution, checkpoints the ledger, and
 * the execution's audit lookup then says at which checkpoint it was pruned.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AUDIT_KINDS } from '../../src/domain/audit/entry.ts';
import { loadConfig, openAuditContext, replicationStateFile } from '../../src/main.ts';
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

describe('retention on a server', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;

  before(async () => {
    dirs = serverDirs();
    server = await startServerProcess({ dirs, args: ['--retain', '30d', '--retain-logs', '7d'] });
  });
  after(async () => {
    await server?.stop();
    await killServers();
    dirs?.cleanup();
  });

  it('says which policy it applies', async () => {
    // Printed right after the "listening on" line the harness waits for.
    await pollUntil('the retention line', () =>
      /retention: executions 30d, logs 7d, sandboxes 30d, ledger 30d/.test(server.stderr()),
    );
  });

  it('prunes a finished execution on demand, checkpoints the ledger, and names the checkpoint in audit lookups', async () => {
    const env = { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey };
    const deployed = await cli(['deploy', 'examples/hello-python/agent.yaml'], env);
    assert.equal(deployed.code, 0, deployed.stderr);
    const run = await apiCall(server.url, server.adminKey, 'POST', '/v1/executions?wait=60s', {
      agent: 'hello-python',
      input: { name: 'x' },
    });
    assert.equal(run.json['status'], 'succeeded', run.text);
    const id = String(run.json['id']);

    const created = await apiCall(server.url, server.adminKey, 'POST', '/v1/keys', {
      name: 'r',
      scopes: ['read', 'execute', 'deploy'],
    });
    const notAdmin = await apiCall(server.url, String(created.json['key']), 'POST', '/v1/admin/prune', {
      olderThan: '1s',
    });
    assert.equal(notAdmin.status, 403, notAdmin.text);
    const bad = await apiCall(server.url, server.adminKey, 'POST', '/v1/admin/prune', {
      olderThan: '30 days',
    });
    assert.equal(bad.status, 400, bad.text);
    assert.match(bad.text, /olderThan/);

    // The execution finished moments ago: poll a dry run until a 1 s window covers it.
    await pollUntil(
      'the execution to be older than 1 s',
      async () => {
        const dry = await apiCall(server.url, server.adminKey, 'POST', '/v1/admin/prune', {
          olderThan: '1s',
          dryRun: true,
        });
        return (dry.json['removed'] as { executions: number }).executions === 1;
      },
      20_000,
      200,
    );
    const pruned = await cli(['prune', '--older-than', '1s', '-o', 'json'], env);
    assert.equal(pruned.code, 0, pruned.stderr);
    const report = JSON.parse(pruned.stdout);
    assert.equal(report.removed.executions, 1);
    assert.ok(report.removed.ledgerEntries > 0, pruned.stdout);
    assert.equal(report.checkpoints.length, 1);

    const audit = await apiCall(server.url, server.adminKey, 'GET', `/v1/executions/${id}/audit`);
    assert.equal(audit.status, 404);
    assert.match(
      audit.text,
      new RegExp(`execution ${id} was pruned: .*checkpoint ${report.checkpoints[0].seq}`),
    );
    const metrics = await fetch(`${server.url}/metrics`, {
      headers: { authorization: `Bearer ${server.adminKey}` },
    });
    assert.match(await metrics.text(), /aegis_retention_pruned_rows_total\{what="executions"\} 1/);
  });
});

describe('attacker: pruning a cluster node ledger it has not shipped yet (ADR 0116)', () => {
  it('`aegis prune` keeps the entries after the seq the replicator shipped to PostgreSQL', async () => {
    // A cluster node whose replication fell behind (PostgreSQL down, or cut off on purpose): its state file says
    // it shipped through seq 4. Dropping the rest locally would remove them from the cluster ledger for good (never
    // shipped; the archive stays on this host only) and halt replication (the chain would no longer continue).
    const dirs = serverDirs();
    try {
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        AEGIS_HOME: dirs.home,
        AEGIS_AUDIT_WITNESS_DIR: join(dirs.home, '..', 'witness'),
        AEGIS_NODE_KEY_FILE: join(dirs.home, '..', 'keys', 'node-ed25519.pem'),
        AEGIS_DATABASE_URL: '',
        AEGIS_SERVER: '',
      };
      const ctx = openAuditContext(loadConfig(env), { writer: true });
      for (let i = 0; i < 10; i++) {
        ctx.audit.append(AUDIT_KINDS.edgeRefused, 'ex_prune_test', {
          node: null,
          reason: `r${i}`,
          from: 'test',
        });
      }
      await ctx.audit.flush();
      const entries = await ctx.audit.list('ex_prune_test');
      const shipped = entries.find((e) => e.seq === 4);
      assert.ok(shipped, `entries: ${entries.map((e) => e.seq).join(',')}`);
      const stateFile = replicationStateFile(ctx.witness);
      mkdirSync(dirname(stateFile), { recursive: true });
      writeFileSync(stateFile, `${JSON.stringify({ node: 'node-a', seq: 4, hash: shipped.hash })}\n`);
      await ctx.audit.close();

      // Poll a dry run until a 1 s window covers the entries (no sleeps), then prune for real.
      await pollUntil('the entries to be older than 1 s', async () => {
        const dry = await cli(['prune', '--older-than', '1s', '--dry-run', '-o', 'json'], env);
        return dry.code === 0 && JSON.parse(dry.stdout).removed.ledgerEntries > 0;
      });
      const pruned = await cli(['prune', '--older-than', '1s', '-o', 'json'], env);
      assert.equal(pruned.code, 0, pruned.stderr);
      const report = JSON.parse(pruned.stdout);
      assert.ok(report.removed.ledgerEntries <= 4, `only shipped entries are pruned: ${pruned.stdout}`);
      assert.ok(
        report.kept.some((k: { reason: string }) => /not yet shipped to the cluster ledger/.test(k.reason)),
        pruned.stdout,
      );
      // Entry 5 (the first not shipped) is still in the local ledger, for the replicator to ship.
      const after = openAuditContext(loadConfig(env));
      const seqs = (await after.audit.list('ex_prune_test')).map((e) => e.seq);
      await after.audit.close();
      assert.ok(seqs.includes(5), `seq 5 is kept: ${seqs.join(',')}`);
    } finally {
      dirs.cleanup();
    }
  });
});
