/**
 * What the SQLite and PostgreSQL stores share: the column lists and joins of one relational schema (both migrate to
 * the same tables and column names), list-limit clamping and how a value becomes a JSON column. Row decoding stays
 * with each store: SQLite hands back JSON as text and integers as numbers, node-postgres parses json columns and
 * returns bigint counts as strings.
 */
import { type ExecutionStatus, MAX_EXECUTIONS_LIST } from '../../domain/execution.ts';

export const DEFAULT_LIST_LIMIT = 50;
export const UNFINISHED_STATUSES: readonly ExecutionStatus[] = ['created', 'queued', 'running'];

/** What an execution is inserted with (createExecution), in this order. */
export const INSERT_COLUMNS =
  'id, agent_name, agent_version, agent_revision, runtime, status, exit_code, reason, input_json, output_json, ' +
  'violations_json, created_at, started_at, finished_at, duration_ms, owner_json, usage_json, placement_json, priority, ' +
  'parent_id, root_id, authority_json';

/** What an execution is read with: the inserted columns and the node that holds it (ADR 0101). */
export const COLUMNS = `${INSERT_COLUMNS}, node_id`;

/** Statuses a claimed execution can be in (a node holds it; `queued` until its holder starts it). */
export const CLAIMED_STATUSES: readonly ExecutionStatus[] = ['queued', 'created', 'running'];

/** The columns of the `nodes` table, in NodeRecord order. */
export const NODE_COLUMNS =
  'id, kind, state, labels_json, runtimes_json, capacity, host, version, started_at, heartbeat_at, lease_expires_at, epoch';

export const REVISION_COLUMNS =
  'agent, revision, version, digest, size_bytes, description, created_at, deployed_by';

/** An agent joined with its active revision and its revision count. */
export const SUMMARY_SELECT =
  'SELECT a.name, a.active_revision, a.created_at AS agent_created_at, a.updated_at AS agent_updated_at, ' +
  '(SELECT COUNT(*) FROM agent_revisions c WHERE c.agent = a.name) AS revision_count, ' +
  'r.agent, r.revision, r.version, r.digest, r.size_bytes, r.description, r.created_at, r.deployed_by ' +
  'FROM agents a JOIN agent_revisions r ON r.agent = a.name AND r.revision = a.active_revision';

export const KEY_COLUMNS =
  'id, name, hash, prefix, scopes_json, rate_json, created_at, revoked_at, last_used_at';

/** `undefined` (and anything else JSON can't represent at top level) is stored as SQL NULL. */
export function toJson(value: unknown): string | null {
  return value === undefined ? null : (JSON.stringify(value) ?? null);
}

/** A caller's list size, clamped to [0, MAX_EXECUTIONS_LIST] (a page and its look-ahead); the default when absent. */
export function listLimit(limit: number | undefined): number {
  if (limit === undefined || Number.isNaN(limit)) return DEFAULT_LIST_LIMIT;
  return Math.min(MAX_EXECUTIONS_LIST, Math.max(0, Math.trunc(limit)));
}
