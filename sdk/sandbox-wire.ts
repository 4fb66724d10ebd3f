/** Wire shapes of live sandboxes (POST /v1/sandboxes …; src/app/live-sandboxes.ts on the server). */

export interface CreateSandboxOptions {
  /** `name` or `name@revision` of a deployed agent: its manifest is the sandbox's policy. */
  readonly agent: string;
  /** Lifetime, e.g. `10m` (default: the manifest's timeout). */
  readonly timeout?: string;
  /** Ended after this long without API calls or running commands, e.g. `5m`. */
  readonly idleTimeout?: string;
  readonly metadata?: Readonly<Record<string, string>>;
  readonly env?: Readonly<Record<string, string>>;
}

export interface Sandbox {
  readonly id: string;
  readonly agent: { readonly name: string; readonly revision: number; readonly version: string };
  readonly runtime: string;
  readonly status: 'running' | 'paused' | 'terminated';
  readonly reason: string | null;
  readonly createdAt: string;
  readonly expiresAt: string;
  readonly idleTimeoutMs: number | null;
  readonly metadata: Readonly<Record<string, string>>;
  readonly owner: string;
  readonly usage: {
    cpuUsageNs: number | null;
    memoryPeakBytes: number | null;
    oomKills: number;
    memoryBytes: number | null;
    pids: number | null;
  } | null;
}

export interface RunCommandOptions {
  /** argv, or a string for `/bin/sh -c`. */
  readonly cmd: readonly string[] | string;
  readonly cwd?: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly stdin?: string;
  readonly keepStdin?: boolean;
  /** Per-command timeout, e.g. `30s`. */
  readonly timeout?: string;
}

export interface SandboxCommand {
  readonly id: string;
  readonly pid: number;
  readonly argv: readonly string[];
  readonly status: 'running' | 'exited';
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  readonly startedAt: string;
  readonly durationMs: number | null;
}

export interface CommandResult {
  readonly command: SandboxCommand;
  readonly stdout: string;
  readonly stderr: string;
}

export interface SandboxFileEntry {
  readonly path: string;
  readonly name: string;
  readonly type: 'file' | 'dir' | 'symlink' | 'other';
  readonly size: number;
  readonly mode: number;
  readonly modifiedAt: string;
}

/** One event of a command's stream (`GET /v1/sandboxes/{id}/commands/{command}/events`), by `seq`. */
export type SandboxCommandEvent =
  | { readonly seq: number; readonly type: 'stdout' | 'stderr'; readonly data: string }
  | {
      readonly seq: number;
      readonly type: 'exit';
      readonly exitCode: number | null;
      readonly signal: string | null;
      readonly timedOut: boolean;
    };
