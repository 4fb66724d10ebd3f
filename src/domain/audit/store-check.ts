/**
 * Cross-check of the execution store against the ledger: every execution the store knows must have its
 * `execution.created` entry and, once it has ended, its `execution.finished` entry — or an `execution.recovered`
 * entry that recovery wrote after a crash lost them (with the final status when the execution had ended).
 */
import { TERMINAL_STATUSES } from '../execution.ts';
import { AUDIT_KINDS } from './entry.ts';

/** What the ledger holds about one execution's life. */
export interface LifecycleCoverage {
  created: boolean;
  finished: boolean;
  /** An `execution.recovered` entry exists. */
  recovered: boolean;
  /** An `execution.recovered` entry records a terminal status. */
  recoveredTerminal: boolean;
}

export const LIFECYCLE_KINDS: readonly string[] = [
  AUDIT_KINDS.executionCreated,
  AUDIT_KINDS.executionFinished,
  AUDIT_KINDS.executionRecovered,
];

const TERMINAL: ReadonlySet<string> = new Set(TERMINAL_STATUSES);

/** Folds one lifecycle entry into the coverage map. */
export function addCoverage(
  map: Map<string, LifecycleCoverage>,
  execution: string,
  kind: string,
  status: unknown,
): void {
  let c = map.get(execution);
  if (c === undefined) {
    c = { created: false, finished: false, recovered: false, recoveredTerminal: false };
    map.set(execution, c);
  }
  if (kind === AUDIT_KINDS.executionCreated) c.created = true;
  else if (kind === AUDIT_KINDS.executionFinished) c.finished = true;
  else if (kind === AUDIT_KINDS.executionRecovered) {
    c.recovered = true;
    if (typeof status === 'string' && TERMINAL.has(status)) c.recoveredTerminal = true;
  }
}

/** The lifecycle entries the ledger lacks for an execution in `status`: `created`, `finished`, both or none. */
export function missingEntries(
  status: string,
  coverage: LifecycleCoverage | undefined,
): ('created' | 'finished')[] {
  const missing: ('created' | 'finished')[] = [];
  if (!(coverage?.created || coverage?.recovered)) missing.push('created');
  if (TERMINAL.has(status) && !(coverage?.finished || coverage?.recoveredTerminal)) missing.push('finished');
  return missing;
}
