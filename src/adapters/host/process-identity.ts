/**
 * Identity of orchestrator processes via /proc: pid plus kernel start time, so a reused pid is not "alive"; and a
 * process that is exiting or already dead (a zombie its parent has not reaped yet) is not alive either.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { ProcessIdentity } from '../../app/ports.ts';

/** PF_EXITING in field 9 (flags) of /proc/<pid>/stat: the kernel is tearing the process down (include/linux/sched.h). */
const PF_EXITING = 0x4;

export interface ProcStat {
  /** Field 3: R, S, D, T, Z (zombie), X (dead), … */
  readonly state: string;
  /** Field 9, the kernel's PF_* flags. */
  readonly flags: number;
  /** Field 22: start time in clock ticks since boot. */
  readonly startTicks: number;
}

/** The fields of /proc/<pid>/stat we use; undefined if the process is gone (or the line is unreadable). */
export function readProcStat(pid: number): ProcStat | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'. fields[0] is field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = fields[0] ?? '';
  const flags = Number(fields[6]);
  const startTicks = Number(fields[19]);
  if (state === '' || !Number.isFinite(flags) || !Number.isFinite(startTicks)) return undefined;
  return { state, flags, startTicks };
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); undefined if the process is gone. */
export function processStartTicks(pid: number): number | undefined {
  return readProcStat(pid)?.startTicks;
}

/**
 * True when `pid` is the process that started at `startTicks` and it still runs: not a reused pid, not a zombie
 * (SIGKILLed, waiting for its parent to reap it — /proc keeps its stat, start time included, until then), not dead
 * and not exiting.
 */
export function isRunning(pid: number, startTicks: number): boolean {
  const stat = readProcStat(pid);
  if (stat === undefined || stat.startTicks !== startTicks) return false;
  if (stat.state === 'Z' || stat.state === 'X' || stat.state === 'x') return false;
  return (stat.flags & PF_EXITING) === 0;
}

export class ProcIdentity implements ProcessIdentity {
  private readonly self = {
    host: hostname(),
    pid: process.pid,
    startTicks: processStartTicks(process.pid) ?? 0,
  };

  current() {
    return this.self;
  }

  isAlive(owner: { host: string; pid: number; startTicks: number }): boolean {
    if (owner.host !== this.self.host) return true; // another machine's run: not ours to judge
    return isRunning(owner.pid, owner.startTicks);
  }
}
