/**
 * Retention: removes what a policy no longer keeps — finished executions and their logs, ended live-sandbox records
 * and, under signed checkpoints, old ledger entries — and reports what it removed and what it kept and why.
 *
 * Used by `aegis prune` (local, or POST /v1/admin/prune) and by a server's `--retain` policy (hourly and at start).
 * Batched: each store call removes at most `batchSize` executions (or one ledger checkpoint of `ledgerBatch`
 * entries), and `deps.yieldToIo` runs between batches, so a big backlog never holds the store or the event loop for
 * long. Never removes a non-terminal execution (the stores' contract) nor a ledger entry of one still running.
 */
import type { Checkpoint } from '../domain/audit/checkpoint.ts';
import { AUDIT_KINDS } from '../domain/audit/entry.ts';
import { type AgentRetention, cutoff, formatRetention, type RetentionPolicy } from '../domain/retention.ts';
import type { AuditLog, Clock, PruneBatch, PrunedRows, Store } from './ports.ts';

export interface RetentionDeps {
  readonly store: Pick<
    Store,
    'pruneExecutions' | 'pruneLogs' | 'pruneSandboxes' | 'listUnfinished' | 'listSandboxes' | 'reclaimSpace'
  >;
  readonly audit: AuditLog;
  readonly clock: Pick<Clock, 'now'>;
  /** Agents with their own `spec.retention` (by name). @default none */
  readonly agentRetention?: () => Promise<ReadonlyMap<string, AgentRetention>>;
  /** Lets other work run between batches (the composition root passes setImmediate). @default none */
  readonly yieldToIo?: () => Promise<void>;
}

export interface PruneRequest {
  readonly policy: RetentionPolicy;
  readonly dryRun: boolean;
  /** Who asked: an API key id, `local`, or `retention-policy`. */
  readonly by: string;
  /** Executions (or sandboxes) per store call. @default 200 */
  readonly batchSize?: number;
  /** Ledger entries per checkpoint (one archive each). @default 100_000 */
  readonly ledgerBatch?: number;
  /** A cluster node: the newest ledger seq shipped to PostgreSQL; later entries are kept. @default no limit */
  readonly ledgerShippedThroughSeq?: number;
  /** Give freed space back to the file system afterwards (SQLite). @default true */
  readonly reclaim?: boolean;
}

export interface PruneKept {
  readonly what: 'executions' | 'logs' | 'sandboxes' | 'ledger';
  readonly reason: string;
}

export interface PruneReport {
  readonly dryRun: boolean;
  /** Cutoffs applied (ISO); null: kept forever. */
  readonly before: {
    readonly executions: string | null;
    readonly logs: string | null;
    readonly sandboxes: string | null;
    readonly audit: string | null;
  };
  readonly removed: {
    readonly executions: number;
    readonly logLines: number;
    readonly logBytes: number;
    /** Executions whose logs alone were removed (their records stay). */
    readonly logsOfExecutions: number;
    readonly sandboxes: number;
    readonly ledgerEntries: number;
  };
  /** Ledger checkpoints written by this prune. */
  readonly checkpoints: readonly Pick<
    Checkpoint,
    'seq' | 'fromSeq' | 'count' | 'archive' | 'archiveSha256'
  >[];
  readonly kept: readonly PruneKept[];
  /** Bytes the SQLite files shrank by (null: nothing reclaimed, or the engine returns none — PostgreSQL). */
  readonly reclaimedBytes: number | null;
}

const ZERO: PrunedRows = { executions: 0, logLines: 0, logBytes: 0 };

export async function prune(deps: RetentionDeps, request: PruneRequest): Promise<PruneReport> {
  const now = deps.clock.now();
  const { policy, dryRun } = request;
  const limit = request.batchSize ?? 200;
  const overrides = (await deps.agentRetention?.()) ?? new Map<string, AgentRetention>();
  const kept: PruneKept[] = [];
  const before = {
    executions: cutoff(now, policy.executionsMs),
    logs: cutoff(now, policy.logsMs),
    sandboxes: cutoff(now, policy.sandboxesMs),
    audit: cutoff(now, policy.auditMs),
  };

  const drain = async (
    step: (batch: PruneBatch) => Promise<PrunedRows>,
    base: Omit<PruneBatch, 'limit' | 'dryRun'>,
  ) => {
    let total = ZERO;
    for (;;) {
      const got = await step({ ...base, limit, dryRun });
      total = {
        executions: total.executions + got.executions,
        logLines: total.logLines + got.logLines,
        logBytes: total.logBytes + got.logBytes,
      };
      if (dryRun || got.executions < limit) return total;
      await deps.yieldToIo?.();
    }
  };
  const add = (a: PrunedRows, b: PrunedRows): PrunedRows => ({
    executions: a.executions + b.executions,
    logLines: a.logLines + b.logLines,
    logBytes: a.logBytes + b.logBytes,
  });

  // Executions (records and logs): the policy for everyone without an override, then each override.
  const withOwn = (field: keyof AgentRetention) => [...overrides].filter(([, r]) => r[field] !== undefined);
  let executions = ZERO;
  const ownExecutions = withOwn('executionsMs');
  if (before.executions !== null) {
    executions = await drain((b) => deps.store.pruneExecutions(b), {
      before: before.executions,
      exceptAgents: ownExecutions.map(([name]) => name),
    });
  } else {
    kept.push({
      what: 'executions',
      reason: 'the policy keeps executions forever (no --retain / --older-than)',
    });
  }
  for (const [agent, own] of ownExecutions) {
    executions = add(
      executions,
      await drain((b) => deps.store.pruneExecutions(b), {
        before: cutoff(now, own.executionsMs)!,
        agents: [agent],
      }),
    );
    kept.push({
      what: 'executions',
      reason: `agent ${agent} keeps its executions ${formatRetention(own.executionsMs!)} (spec.retention)`,
    });
  }
  // Logs of executions whose records stay (those past the executions window went with them above; `notBefore`
  // keeps a dry run from counting them twice).
  let logs = ZERO;
  const ownLogs = withOwn('logsMs');
  const notBefore = (executionsCutoff: string | null) =>
    executionsCutoff === null ? {} : { notBefore: executionsCutoff };
  if (before.logs !== null) {
    logs = await drain((b) => deps.store.pruneLogs(b), {
      before: before.logs,
      exceptAgents: ownLogs.map(([name]) => name),
      ...notBefore(before.executions),
    });
  }
  for (const [agent, own] of ownLogs) {
    const ownExecutionsMs = overrides.get(agent)?.executionsMs;
    const executionsCutoff = ownExecutionsMs === undefined ? before.executions : cutoff(now, ownExecutionsMs);
    logs = add(
      logs,
      await drain((b) => deps.store.pruneLogs(b), {
        before: cutoff(now, own.logsMs)!,
        agents: [agent],
        ...notBefore(executionsCutoff),
      }),
    );
  }
  const unfinished = await deps.store.listUnfinished();
  if (unfinished.length > 0) {
    kept.push({
      what: 'executions',
      reason: `${unfinished.length} execution(s) not finished (created, queued or running) are never pruned`,
    });
  }

  let sandboxes = 0;
  if (before.sandboxes !== null) {
    for (;;) {
      const n = await deps.store.pruneSandboxes({ before: before.sandboxes, limit, dryRun });
      sandboxes += n;
      if (dryRun || n < limit) break;
      await deps.yieldToIo?.();
    }
  }
  const liveSandboxes = await deps.store.listSandboxes({ unfinished: true });

  // The ledger: never silently — each step is a signed checkpoint with an archive (domain/audit/checkpoint.ts).
  let ledgerEntries = 0;
  const checkpoints: PruneReport['checkpoints'][number][] = [];
  if (before.audit !== null && deps.audit.checkpoint !== undefined) {
    const keep = [...unfinished.map((e) => e.id), ...liveSandboxes.map((s) => s.id)];
    for (;;) {
      const outcome = await deps.audit.checkpoint({
        before: before.audit,
        keep,
        dryRun,
        ...(request.ledgerBatch === undefined ? {} : { maxEntries: request.ledgerBatch }),
        ...(request.ledgerShippedThroughSeq === undefined
          ? {}
          : { shippedThroughSeq: request.ledgerShippedThroughSeq }),
      });
      ledgerEntries += outcome.entries;
      const cp = outcome.checkpoint;
      if (cp !== undefined) {
        checkpoints.push({
          seq: cp.seq,
          fromSeq: cp.fromSeq,
          count: cp.count,
          archive: cp.archive,
          archiveSha256: cp.archiveSha256,
        });
      }
      if (outcome.kept !== undefined && !outcome.more) kept.push({ what: 'ledger', reason: outcome.kept });
      if (dryRun || !outcome.more || outcome.entries === 0) break;
      await deps.yieldToIo?.();
    }
  } else if (before.audit !== null) {
    kept.push({ what: 'ledger', reason: 'this ledger cannot be checkpointed, so none of it is pruned' });
  } else {
    kept.push({ what: 'ledger', reason: 'the policy keeps the ledger forever' });
  }

  const removedAnything = executions.executions + logs.executions + sandboxes + ledgerEntries > 0;
  let reclaimedBytes: number | null = null;
  if (!dryRun && removedAnything) {
    deps.audit.append(AUDIT_KINDS.retentionPruned, null, {
      executions: executions.executions,
      logLines: executions.logLines + logs.logLines,
      logBytes: executions.logBytes + logs.logBytes,
      sandboxes,
      ledgerEntries,
      before,
      by: request.by,
    });
    await deps.audit.flush();
    if (request.reclaim !== false) {
      const sizes = [await deps.store.reclaimSpace?.(), await deps.audit.reclaimSpace?.()].filter(
        (r) => r !== undefined,
      );
      reclaimedBytes =
        sizes.length === 0 ? null : sizes.reduce((sum, r) => sum + r.beforeBytes - r.afterBytes, 0);
    }
  }
  return {
    dryRun,
    before,
    removed: {
      executions: executions.executions,
      logLines: executions.logLines + logs.logLines,
      logBytes: executions.logBytes + logs.logBytes,
      logsOfExecutions: logs.executions,
      sandboxes,
      ledgerEntries,
    },
    checkpoints,
    kept,
    reclaimedBytes,
  };
}
