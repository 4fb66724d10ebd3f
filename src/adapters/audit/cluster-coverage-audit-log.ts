/**
 * This node's ledger, except that `lifecycleCoverage` answers for the whole cluster: the local ledger's lifecycle
 * entries merged with every node's replicated ones (postgres-cluster-ledger.ts). Recovery on one node consults it, so
 * it never records `execution.recovered` for an execution another node created or finished — which `verify
 * --cluster` would rightly report as a second settlement (ADR 0116).
 */
import type { AuditLog } from '../../app/ports.ts';
import type { AuditDataByKind, AuditEntry, AuditKind } from '../../domain/audit/entry.ts';
import type { AuditExportRecord } from '../../domain/audit/export-format.ts';
import type { LifecycleCoverage } from '../../domain/audit/store-check.ts';
import type { AuditVerification } from '../../domain/audit/verify.ts';
import type { PostgresClusterLedger } from './postgres-cluster-ledger.ts';

export class ClusterCoverageAuditLog implements AuditLog {
  readonly #local: AuditLog;
  readonly #cluster: Pick<PostgresClusterLedger, 'lifecycleCoverage'>;

  constructor(local: AuditLog, cluster: Pick<PostgresClusterLedger, 'lifecycleCoverage'>) {
    this.#local = local;
    this.#cluster = cluster;
  }

  append<K extends AuditKind>(kind: K, execution: string | null, data: AuditDataByKind[K]): AuditEntry {
    return this.#local.append(kind, execution, data);
  }

  flush(): Promise<void> {
    return this.#local.flush();
  }

  durable(): Promise<void> {
    return this.#local.durable();
  }

  /** Local first (flushed), then the cluster's: an entry in either counts. */
  async lifecycleCoverage(): Promise<ReadonlyMap<string, LifecycleCoverage>> {
    const local = await this.#local.lifecycleCoverage();
    const merged = new Map<string, LifecycleCoverage>();
    for (const [id, c] of local) merged.set(id, { ...c });
    const cluster = await this.#cluster.lifecycleCoverage();
    for (const [id, c] of cluster) {
      const m = merged.get(id);
      if (m === undefined) merged.set(id, { ...c });
      else {
        m.created ||= c.created;
        m.finished ||= c.finished;
        m.recovered ||= c.recovered;
        m.recoveredTerminal ||= c.recoveredTerminal;
      }
    }
    return merged;
  }

  list(executionId: string): Promise<readonly AuditEntry[]> {
    return this.#local.list(executionId);
  }

  verify(): Promise<AuditVerification> {
    return this.#local.verify();
  }

  export(): AsyncIterable<AuditExportRecord> {
    return this.#local.export();
  }

  close(): Promise<void> {
    return this.#local.close();
  }
}
