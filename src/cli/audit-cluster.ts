/**
 * `aegis audit … --cluster` (docs/adr/0116-cluster-ledger.md): the ledger of every node that shares this node's
 * PostgreSQL (AEGIS_DATABASE_URL), read directly from the database — so it works while servers are down.
 *
 *   aegis audit show <id> --cluster        entries of one execution from every node's chain (+ this node's tail)
 *   aegis audit export --cluster [--out]   one archive: every node's chain, heads and published key
 *   aegis audit verify --cluster           every chain with its node's key, cross-checked; this node's witness too
 *   aegis audit verify <archive>           the same, offline, on an archive
 */
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import {
  describeClusterProblems,
  verifyClusterArchiveFile,
  writeClusterArchive,
} from '../adapters/audit/cluster-archive-file.ts';
import { readReplicationState } from '../adapters/audit/ledger-replicator.ts';
import type { PostgresClusterLedger } from '../adapters/audit/postgres-cluster-ledger.ts';
import { systemClock } from '../adapters/clock/system-clock.ts';
import { loadNodeId } from '../adapters/host/node-id.ts';
import type { ClusterVerification } from '../domain/audit/cluster-archive.ts';
import { AegisError, formatError } from '../domain/errors.ts';
import { auditPaths, loadConfig, openAuditContext, replicationStateFile } from '../main.ts';
import { EXIT, type OutputFormat, printTable } from './output.ts';

function databaseUrl(what: string): string {
  const url = process.env['AEGIS_DATABASE_URL'];
  if (!url) {
    throw new AegisError(
      'USAGE',
      `${what} --cluster reads the cluster ledger in PostgreSQL, and AEGIS_DATABASE_URL is not set`,
      {
        hint: 'set AEGIS_DATABASE_URL to the database the servers share (postgres://USER:PASSWORD@HOST:PORT/DATABASE)',
      },
    );
  }
  return url;
}

async function openCluster(what: string): Promise<PostgresClusterLedger> {
  const { PostgresClusterLedger } = await import('../adapters/audit/postgres-cluster-ledger.ts');
  return PostgresClusterLedger.open(databaseUrl(what));
}

export async function commandAuditShowCluster(
  id: string,
  options: { output: OutputFormat },
): Promise<number> {
  const cluster = await openCluster('aegis audit show');
  const config = loadConfig();
  const { LedgerReplicator } = await import('../adapters/audit/ledger-replicator.ts');
  const { audit, nodeKey } = openAuditContext(config);
  // This node's entries not shipped yet come from its own ledger (read only: nothing is shipped from here).
  const local = new LedgerReplicator({
    node: loadNodeId(config.home, process.env['AEGIS_NODE_ID']),
    ledgerFile: auditPaths(config).ledger,
    cluster,
    signer: nodeKey,
    clock: systemClock,
  });
  try {
    const entries = await local.list(id);
    if (entries.length === 0) {
      throw new AegisError('NOT_FOUND', `no audit entries for execution ${id} on any node`, {
        hint: '`aegis ps` lists executions',
      });
    }
    if (options.output === 'json') {
      process.stdout.write(`${JSON.stringify(entries)}\n`);
      return EXIT.ok;
    }
    printTable(
      ['NODE', 'SEQ', 'TIME', 'KIND', 'DATA'],
      entries.map((e) => [e.node, String(e.seq), e.ts, e.kind, JSON.stringify(e.data)]),
    );
    return EXIT.ok;
  } finally {
    await local.stop();
    await audit.close();
    await cluster.close();
  }
}

export async function commandAuditExportCluster(options: { out?: string }): Promise<number> {
  const cluster = await openCluster('aegis audit export');
  const out =
    options.out === undefined ? process.stdout : createWriteStream(options.out, { mode: 0o600, flags: 'w' });
  let counts: { nodes: number; entries: number; heads: number };
  try {
    counts = await writeClusterArchive(cluster, out, new Date(systemClock.now()).toISOString());
    if (out !== process.stdout) {
      out.end();
      await once(out, 'finish');
    }
  } catch (error) {
    if (out !== process.stdout) out.destroy();
    throw error;
  } finally {
    await cluster.close();
  }
  process.stderr.write(
    `exported ${counts.nodes} nodes' chains: ${counts.entries} entries and ${counts.heads} signed heads` +
      `${options.out ? ` to ${options.out}` : ''} (verify: aegis audit verify ${options.out ?? '<file>'})\n`,
  );
  return EXIT.ok;
}

/** `verify --cluster` (archive undefined) or `verify <archive>`. */
export async function commandAuditVerifyCluster(
  archive: string | undefined,
  options: { output: OutputFormat },
): Promise<number> {
  let result: ClusterVerification;
  let what: string;
  if (archive !== undefined) {
    result = await verifyClusterArchiveFile(archive);
    what = `the cluster archive ${archive}`;
  } else {
    const cluster = await openCluster('aegis audit verify');
    const config = loadConfig();
    const { audit, witness } = openAuditContext(config);
    try {
      // What this node knows outside the database: the heads its witness recorded up to what it shipped.
      const shipped = readReplicationState(replicationStateFile(witness));
      const local =
        shipped === undefined
          ? undefined
          : {
              node: shipped.node,
              shipped: { seq: shipped.seq, hash: shipped.hash },
              witnessed: witness.read().filter((h) => h.seq <= shipped.seq),
            };
      result = await cluster.verify({ nowMs: systemClock.now(), ...(local ? { local } : {}) });
    } finally {
      await audit.close();
      await cluster.close();
    }
    what = 'the cluster ledger';
  }
  const problems = describeClusterProblems(result);
  if (options.output === 'json') {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    for (const n of result.nodes) {
      const r = n.result;
      process.stdout.write(
        r.ok
          ? `✓ node ${n.node}: ${r.entries} entries, ${r.heads} signed heads (newest at seq ${r.signedThroughSeq}), key ${n.keyId}\n`
          : `✗ node ${n.node}: ${r.problem} at seq ${r.firstBadSeq}\n`,
      );
    }
  }
  if (result.ok) {
    if (options.output !== 'json') {
      process.stdout.write(
        `✓ ${what} is intact: ${result.nodes.length} node${result.nodes.length === 1 ? '' : 's'}, ` +
          `${result.executions} executions cross-checked, no contradictions\n`,
      );
    }
    return EXIT.ok;
  }
  const error = new AegisError(
    'AUDIT_TAMPERED',
    `${what} failed verification: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n  ${problems.join('\n  ')}`,
    {
      details: { problems: problems.length },
      hint: "each line names the node and seq; compare with that node's own ledger (`aegis audit verify` there)",
    },
  );
  if (options.output === 'json') {
    process.stderr.write(`${formatError(error)}\n`);
    return EXIT.auditTampered;
  }
  throw error;
}
