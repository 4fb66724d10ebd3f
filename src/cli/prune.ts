/**
 * `aegis prune [--older-than 30d] [--dry-run] [-o json]`: removes finished executions, their logs, ended sandbox
 * records and — under a signed checkpoint with an archive — old ledger entries, locally on $AEGIS_HOME or on a
 * server (`--server`, POST /v1/admin/prune, admin key). Prints what it removed and what it kept and why.
 */

import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { readReplicationState } from '../adapters/audit/ledger-replicator.ts';
import type { PruneReport } from '../app/retention.ts';
import { prune } from '../app/retention.ts';
import { AegisError } from '../domain/errors.ts';
import { parseRetention, retentionPolicy } from '../domain/retention.ts';
import { formatBytes } from '../domain/units.ts';
import { openAuditContext, openLocalStore, replicationStateFile, systemClock } from '../main.ts';
import { EXIT, type OutputFormat, outputOption, printJson } from './output.ts';
import { withServer } from './remote/connect.ts';
import { addServerOptions, serverFrom } from './remote/index.ts';

interface PruneFlags {
  olderThan?: string;
  logsOlderThan?: string;
  auditOlderThan?: string;
  dryRun?: boolean;
  output: OutputFormat;
  server?: string;
  apiKeyFile?: string;
}

function window(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const parsed = parseRetention(text);
  if (!parsed.ok) throw new AegisError('USAGE', `${flag}: ${parsed.error}`, { hint: 'e.g. 30d, 12h, 2w' });
  return parsed.value;
}

async function commandPrune(flags: PruneFlags): Promise<number> {
  const executionsMs = window(flags.olderThan, '--older-than');
  const logsMs = window(flags.logsOlderThan, '--logs-older-than');
  const auditMs = window(flags.auditOlderThan, '--audit-older-than');
  if (serverFrom(flags.server) !== undefined) {
    return withServer(flags, async ({ client }) => {
      const report = await client.prune({
        ...(flags.olderThan === undefined ? {} : { olderThan: flags.olderThan }),
        ...(flags.logsOlderThan === undefined ? {} : { logsOlderThan: flags.logsOlderThan }),
        ...(flags.auditOlderThan === undefined ? {} : { auditOlderThan: flags.auditOlderThan }),
        ...(flags.dryRun ? { dryRun: true } : {}),
      });
      return print(report, flags.output);
    });
  }
  if (executionsMs === undefined && logsMs === undefined && auditMs === undefined) {
    throw new AegisError(
      'USAGE',
      'aegis prune needs --older-than (or --logs-older-than / --audit-older-than)',
      {
        hint: 'e.g. aegis prune --older-than 30d --dry-run; nothing is ever pruned by default',
      },
    );
  }
  const policy = retentionPolicy({
    ...(executionsMs === undefined ? {} : { executionsMs }),
    ...(logsMs === undefined ? {} : { logsMs }),
    ...(auditMs === undefined ? {} : { auditMs }),
  });
  const store = openLocalStore();
  try {
    const { audit, witness } = openAuditContext(undefined, { writer: true });
    try {
      const shipped = shippedThroughSeq(replicationStateFile(witness));
      const report = await prune(
        { store, audit, clock: systemClock },
        {
          policy,
          dryRun: flags.dryRun === true,
          by: 'local',
          ...(shipped === undefined ? {} : { ledgerShippedThroughSeq: shipped }),
        },
      );
      return print(report, flags.output);
    } finally {
      await audit.close();
    }
  } finally {
    await store.close();
  }
}

/**
 * A cluster node's home (ADR 0116): how far its replicator shipped the ledger to PostgreSQL — entries after that
 * must stay until shipped. A state file that cannot be read, or a node configured for a cluster that never shipped,
 * keeps everything (0). undefined: not a cluster node.
 */
function shippedThroughSeq(stateFile: string): number | undefined {
  if (existsSync(stateFile)) return readReplicationState(stateFile)?.seq ?? 0;
  return (process.env['AEGIS_DATABASE_URL'] ?? '') === '' ? undefined : 0;
}

function print(report: PruneReport, output: OutputFormat): number {
  if (output === 'json') {
    printJson(report);
    return EXIT.ok;
  }
  const r = report.removed;
  const verb = report.dryRun ? 'would remove' : 'removed';
  const lines = [
    `${verb}: ${r.executions} execution(s), ${r.logLines} log line(s) (${formatBytes(r.logBytes)})` +
      `${r.logsOfExecutions > 0 ? ` incl. the logs of ${r.logsOfExecutions} kept execution(s)` : ''}, ` +
      `${r.sandboxes} sandbox record(s), ${r.ledgerEntries} ledger entr${r.ledgerEntries === 1 ? 'y' : 'ies'}`,
    ...report.checkpoints.map(
      (c) =>
        `ledger checkpoint at seq ${c.seq}: entries ${c.fromSeq}–${c.seq} archived in audit-archive/${c.archive}`,
    ),
    ...(report.reclaimedBytes === null
      ? []
      : [`space given back: ${formatBytes(Math.max(0, report.reclaimedBytes))}`]),
    ...report.kept.map((k) => `kept (${k.what}): ${k.reason}`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  return EXIT.ok;
}

export function registerPruneCommand(
  program: Command,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  addServerOptions(program.command('prune'))
    .description(
      'remove finished executions, logs, ended sandboxes and (under a signed checkpoint) ledger entries older than a window',
    )
    .option('--older-than <window>', 'e.g. 30d, 12h, 2w (with --server: default the server --retain policy)')
    .option('--logs-older-than <window>', 'logs only (the execution records stay): default --older-than')
    .option('--audit-older-than <window>', 'ledger entries: default --older-than')
    .option('--dry-run', 'count only; remove nothing')
    .addOption(outputOption())
    .action((flags: PruneFlags) => run(() => commandPrune(flags)));
}
