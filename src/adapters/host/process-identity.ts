/** Identity of orchestrator processes via /proc: pid plus kernel start time, so a reused pid is not "alive". */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { ProcessIdentity } from '../../app/ports.ts';

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); undefined if the process is gone. */
export function processStartTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[19]);
    return Number.isFinite(ticks) ? ticks : undefined;
  } catch {
    return undefined;
  }
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
    return processStartTicks(owner.pid) === owner.startTicks;
  }
}
