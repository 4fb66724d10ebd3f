/**
 * Live sandboxes, the pure part: which paths a sandbox's file API may touch (from its manifest), and how a path
 * given to the API is checked before it goes anywhere. The runtime checks again from inside the sandbox (symlinks
 * resolve there, never on the host).
 */
import { AegisError } from './errors.ts';
import type { CompiledAgent } from './manifest/compiled.ts';

/** Writable in every sandbox (capped tmpfs). */
export const SANDBOX_WRITABLE_ROOTS = ['/workspace', '/tmp'] as const;

export function sandboxPathRoots(agent: Pick<CompiledAgent, 'mounts'>): {
  readable: string[];
  writable: string[];
} {
  const writable: string[] = [...SANDBOX_WRITABLE_ROOTS];
  const readable: string[] = ['/agent'];
  for (const mount of agent.mounts) (mount.writable ? writable : readable).push(mount.target);
  return { readable, writable };
}

/**
 * A path from the API, made absolute (relative paths are under /workspace) and normalised. Refuses `..`
 * components, NUL and empty paths rather than resolving them: a caller never means to climb out.
 */
export function sandboxPath(raw: unknown, where: string): string {
  if (typeof raw !== 'string' || raw.length === 0) {
    throw new AegisError('USAGE', `${where}: a path is required`, { hint: 'e.g. /workspace/notes.txt' });
  }
  if (raw.length > 4096 || raw.includes('\0')) {
    throw new AegisError('USAGE', `${where}: the path is longer than 4096 bytes or holds a NUL`);
  }
  const parts = raw.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) {
    throw new AegisError('POLICY_DENIED', `${where}: ${JSON.stringify(raw)} climbs with ".."`, {
      hint: 'name the file by its absolute path inside the sandbox, e.g. /workspace/out.txt',
    });
  }
  const absolute = raw.startsWith('/') ? `/${parts.join('/')}` : `/workspace/${parts.join('/')}`;
  return absolute.length > 1 && absolute.endsWith('/') ? absolute.slice(0, -1) : absolute;
}

/** Is `path` one of `roots` or below one? */
export function underRoots(path: string, roots: readonly string[]): boolean {
  return roots.some((root) => path === root || path.startsWith(root.endsWith('/') ? root : `${root}/`));
}

export type SandboxStatus = 'running' | 'paused' | 'terminated';

export interface SandboxUsage {
  readonly cpuUsageNs: number | null;
  readonly memoryPeakBytes: number | null;
  readonly oomKills: number;
  /** Memory charged now and processes now; null when unreadable or the sandbox has ended. */
  readonly memoryBytes: number | null;
  readonly pids: number | null;
}

/** The REST shape of a live sandbox. */
export interface SandboxView {
  readonly id: string;
  readonly agent: { readonly name: string; readonly revision: number; readonly version: string };
  readonly runtime: string;
  readonly status: SandboxStatus;
  readonly reason: string | null;
  readonly createdAt: string;
  readonly expiresAt: string;
  readonly idleTimeoutMs: number | null;
  readonly metadata: Readonly<Record<string, string>>;
  /** Id of the API key that created it. */
  readonly owner: string;
  readonly usage: SandboxUsage | null;
}

/**
 * Who holds a live sandbox: the cluster node (id + the epoch it registered under, ADR 0100/0101) and, for
 * diagnostics and records written before nodes existed, the orchestrator process. Ownership is the node id + epoch.
 */
export interface SandboxHolder {
  readonly host: string;
  readonly pid: number;
  readonly startTicks: number;
  /** The node holding it; absent in records written before the cluster (then host + pid decide). */
  readonly node?: string;
  /** That node's epoch when it last wrote the record: a node with a newer epoch is a later life of it. */
  readonly epoch?: number;
}

/** What the store keeps: the view, and who holds the sandbox (null once terminated). */
export interface SandboxRecord extends SandboxView {
  readonly holder: SandboxHolder | null;
}

/** The reason a restart records for a sandbox its crashed predecessor held. */
export const SANDBOX_RESTART_REASON = 'orchestrator-restarted';

/** The reason recorded for the sandboxes of a node the cluster declared dead (or that was fenced out). */
export function sandboxNodeLostReason(node: string): string {
  return `node-lost: node ${node} stopped heartbeating and was declared dead; its sandbox processes die with it or are reaped when it returns`;
}
