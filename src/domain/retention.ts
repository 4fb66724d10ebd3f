/**
 * Retention: how long finished executions, their logs, ended live-sandbox records and ledger entries are kept.
 *
 * Nothing is pruned unless a policy says so (the default keeps everything forever). A server takes the policy from
 * `aegis server --retain 30d [--retain-logs 7d] [--retain-audit 90d]`; an agent may override the executions and
 * logs windows for its own executions with `spec.retention` (manifest). `aegis prune --older-than 30d` applies a
 * one-off policy. Pure: the use-case (app/retention.ts) turns a policy and "now" into cutoffs.
 */
import { type ParseResult, parseDuration } from './units.ts';

/** A window in ms; `null` keeps forever. */
export interface RetentionPolicy {
  /** Finished executions (and their logs) older than this are removed. */
  readonly executionsMs: number | null;
  /** Logs of finished executions older than this are removed (the execution record stays). @default executionsMs */
  readonly logsMs: number | null;
  /** Ended live-sandbox records older than this are removed. @default executionsMs */
  readonly sandboxesMs: number | null;
  /**
   * Ledger entries older than this are checkpointed (signed head + archive) and dropped. @default executionsMs —
   * never entries of an execution or sandbox that is still running.
   */
  readonly auditMs: number | null;
}

export const KEEP_FOREVER: RetentionPolicy = {
  executionsMs: null,
  logsMs: null,
  sandboxesMs: null,
  auditMs: null,
};

/** An agent's own windows (`spec.retention`), compiled; an absent field follows the server's policy. */
export interface AgentRetention {
  readonly executionsMs?: number;
  readonly logsMs?: number;
}

const DAY_MS = 86_400_000;

/**
 * A retention window: `30d`, `2w`, `12h`, `90m`, `45s` (a bare number is seconds, as everywhere). `forever` is
 * refused here (leave the option out instead), so a typo never silently keeps or drops everything.
 */
export function parseRetention(input: string | number): ParseResult {
  if (typeof input === 'string') {
    const match = /^\s*(\d+(?:\.\d+)?)\s*([dw])\s*$/.exec(input);
    if (match) {
      const value = Math.round(Number(match[1]) * (match[2] === 'w' ? 7 * DAY_MS : DAY_MS));
      return value > 0 ? { ok: true, value } : { ok: false, error: `"${input}" must be greater than zero` };
    }
  }
  const parsed = parseDuration(input);
  if (!parsed.ok) {
    return { ok: false, error: `${parsed.error.replace('use ms, s, m or h', 'use s, m, h, d or w')}` };
  }
  return parsed;
}

/** Fills the defaults: logs, sandboxes and the ledger follow the executions window unless given. */
export function retentionPolicy(input: Partial<RetentionPolicy>): RetentionPolicy {
  const executionsMs = input.executionsMs ?? null;
  return {
    executionsMs,
    logsMs: input.logsMs ?? executionsMs,
    sandboxesMs: input.sandboxesMs ?? executionsMs,
    auditMs: input.auditMs ?? executionsMs,
  };
}

/** True when the policy removes nothing. */
export function keepsEverything(policy: RetentionPolicy): boolean {
  return (
    policy.executionsMs === null &&
    policy.logsMs === null &&
    policy.sandboxesMs === null &&
    policy.auditMs === null
  );
}

/** `now - window` as an ISO timestamp, or null for "forever". */
export function cutoff(nowMs: number, windowMs: number | null | undefined): string | null {
  return windowMs === null || windowMs === undefined ? null : new Date(nowMs - windowMs).toISOString();
}

/** `30d`, `12h`, `90m`, `45s` — the shortest exact spelling (days, not weeks) of a window, for reports. */
export function formatRetention(ms: number): string {
  for (const [unit, size] of [
    ['d', DAY_MS],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
