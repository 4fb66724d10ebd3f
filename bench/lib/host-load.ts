/**
 * How much CPU other programs took while a benchmark ran, so a run on a busy host says so.
 *
 * A snapshot reads every process's CPU time (/proc/<pid>/stat: utime + stime + cutime + cstime, the last two
 * covering children it reaped) except this process, its ancestors and descendants, kernel threads and stray sandbox
 * inits. The difference between two snapshots is other programs' CPU time in between: processes that lived through
 * the window by their delta, those born in it in full, short-lived ones through the parent that reaped them (except
 * pid 1, see cpuSnapshot). Host-wide /proc/stat can't tell: every sandbox leaves some namespace teardown to kernel
 * threads, and much of its CPU time is charged to pid 1, so an idle host would read as busy.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export interface CpuSnapshot {
  readonly atMs: number;
  /** pid → [start time, CPU ticks, command name] of other programs' processes. */
  readonly processes: ReadonlyMap<number, readonly [number, number, string]>;
}

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

interface ProcStat {
  readonly command: string;
  readonly ppid: number;
  readonly startTime: number;
  /** utime + stime: the process's own CPU time, in clock ticks. */
  readonly ownTicks: number;
  /** cutime + cstime: CPU time of children it waited for, in clock ticks. */
  readonly childTicks: number;
}

function readStat(pid: number): ProcStat | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // After the command name, field n of /proc/<pid>/stat is at index n − 3.
    const fields = stat
      .slice(stat.lastIndexOf(')') + 2)
      .split(' ')
      .map(Number);
    const command = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    return {
      command,
      ppid: fields[1] ?? 0,
      startTime: fields[19] ?? 0,
      ownTicks: (fields[11] ?? 0) + (fields[12] ?? 0),
      childTicks: (fields[13] ?? 0) + (fields[14] ?? 0),
    };
  } catch {
    return undefined; // exited while we looked
  }
}

/** CPU time a live process has used, ms: its own (user + system) and that of the children it reaped. */
export function processCpuMs(pid: number): { own: number; children: number } {
  const stat = readStat(pid);
  if (stat === undefined) throw new Error(`no process ${pid}`);
  const msPerTick = 1000 / clockTicks();
  return { own: stat.ownTicks * msPerTick, children: stat.childTicks * msPerTick };
}

export function cpuSnapshot(): CpuSnapshot {
  clockTicks();
  const stats = new Map<number, ProcStat>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readStat(Number(name));
    if (stat) stats.set(Number(name), stat);
  }
  const ours = (pid: number): boolean => {
    for (let current = pid, hops = 0; current > 1 && hops < 64; hops++) {
      if (current === process.pid) return true;
      current = stats.get(current)?.ppid ?? 0;
    }
    return false;
  };
  // Our ancestors (npm, a shell) only wait for us.
  const ancestors = new Set<number>();
  for (let current = stats.get(process.pid)?.ppid ?? 0, hops = 0; current > 1 && hops < 64; hops++) {
    ancestors.add(current);
    current = stats.get(current)?.ppid ?? 0;
  }
  const processes = new Map<number, readonly [number, number, string]>();
  for (const [pid, stat] of stats) {
    const kernelThread = pid === 2 || stat.ppid === 2;
    // Children's time is left out for pid 1: bwrap's monitor exits as soon as the sandbox's init reports the
    // agent's exit status, so that init is reaped by the host's pid 1, which is charged our sandboxes.
    const ticks = stat.ownTicks + (pid === 1 ? 0 : stat.childTicks);
    // A sandbox init outliving its bwrap monitor (see above) is ours too.
    if (!kernelThread && !ours(pid) && !ancestors.has(pid) && stat.command !== 'bwrap')
      processes.set(pid, [stat.startTime, ticks, stat.command]);
  }
  return { atMs: performance.now(), processes };
}

export interface OtherWork {
  /** Average number of CPUs other programs kept busy. */
  readonly cpus: number;
  /** The busiest of them: command name and CPU seconds. */
  readonly top: readonly { readonly command: string; readonly cpuSeconds: number }[];
}

/** What other programs did between two snapshots. */
export function otherWork(from: CpuSnapshot, to: CpuSnapshot): OtherWork {
  const seconds = (to.atMs - from.atMs) / 1000;
  const byCommand = new Map<string, number>();
  let ticks = 0;
  for (const [pid, [startTime, now, command]] of to.processes) {
    const before = from.processes.get(pid);
    const used = before && before[0] === startTime ? now - before[1] : now;
    if (used <= 0) continue;
    ticks += used;
    byCommand.set(command, (byCommand.get(command) ?? 0) + used);
  }
  const top = [...byCommand]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 5)
    .map(([command, used]) => ({ command, cpuSeconds: Math.round((used / clockTicks()) * 100) / 100 }));
  return { cpus: seconds > 0 ? ticks / clockTicks() / seconds : 0, top };
}

/** Host-wide CPU time from /proc/stat, in clock ticks summed over all CPUs: busy (not idle or iowait) and total. */
export function hostCpuTicks(): { busy: number; total: number } {
  const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '')
    .trim()
    .split(/\s+/)
    .slice(1, 9)
    .map(Number);
  const total = fields.reduce((sum, value) => sum + value, 0);
  return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0), total };
}
