/**
 * What a live sandbox holds on the host, read from /proc and the cgroup tree: its process tree (bwrap's monitor, the
 * sandbox init, the agent's interpreter), each process's proportional set size, the memory charged to its cgroup,
 * and the host's memory in use. Linux only; every reader tolerates a process that exits while it looks.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

function tryRead(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** Direct children of a process (all its threads' children). */
export function childrenOf(pid: number): number[] {
  const text = tryRead(`/proc/${pid}/task/${pid}/children`);
  return text === undefined ? [] : text.trim().split(/\s+/).filter(Boolean).map(Number);
}

/** `pid` and every descendant, parents before children. */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length && out.length < 4096; i++) out.push(...childrenOf(out[i]!));
  return out;
}

export function commandOf(pid: number): string {
  return tryRead(`/proc/${pid}/comm`)?.trim() ?? '?';
}

/** Path of the process's executable as the host sees it (undefined when it is gone or unreadable). */
export function executableOf(pid: number): string | undefined {
  return tryRead(`/proc/${pid}/cmdline`)?.split('\0')[0];
}

export interface ProcessMemory {
  readonly pid: number;
  readonly command: string;
  /** Proportional set size: private pages plus each shared page divided among its sharers, bytes. */
  readonly pssBytes: number;
  readonly rssBytes: number;
  /** Pages only this process maps (clean + dirty), bytes. */
  readonly privateBytes: number;
  /** The process's path in the v1 memory hierarchy, or its v2 path. */
  readonly memoryCgroup: string | undefined;
}

/** From /proc/<pid>/smaps_rollup; undefined when the process is gone. */
export function processMemory(pid: number): ProcessMemory | undefined {
  const rollup = tryRead(`/proc/${pid}/smaps_rollup`);
  if (rollup === undefined) return undefined;
  const kib = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(rollup)?.[1] ?? 0) * 1024;
  const cgroups = tryRead(`/proc/${pid}/cgroup`)?.split('\n') ?? [];
  const memoryLine =
    cgroups.find((line) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(line)) ??
    cgroups.find((line) => line.startsWith('0::'));
  return {
    pid,
    command: commandOf(pid),
    pssBytes: kib('Pss'),
    rssBytes: kib('Rss'),
    privateBytes: kib('Private_Clean') + kib('Private_Dirty'),
    memoryCgroup: memoryLine?.slice(memoryLine.indexOf(':', memoryLine.indexOf(':') + 1) + 1),
  };
}

/** CPU ticks (user + system) a process used so far; 0 when it is gone. */
export function cpuTicksOf(pid: number): number {
  const stat = tryRead(`/proc/${pid}/stat`);
  if (stat === undefined) return 0;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
}

export interface CgroupMemory {
  readonly dir: string;
  readonly version: 1 | 2;
  /** v1 memory.usage_in_bytes / v2 memory.current: everything charged to the group, kernel memory included. */
  readonly usageBytes: number;
  /** Anonymous memory (heap, stacks) of the group's processes. */
  readonly anonBytes: number;
  /** Page cache charged to the group (files it read first, shmem included). */
  readonly fileBytes: number;
  /** tmpfs / shared memory, part of fileBytes. */
  readonly shmemBytes: number;
  /** usage − anon − file: kernel objects charged to it (page tables, slab, stacks), when accounted. */
  readonly kernelBytes: number;
}

function keyed(text: string | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of (text ?? '').split('\n')) {
    const [key, value] = line.split(' ');
    if (key && value !== undefined) out[key] = Number(value);
  }
  return out;
}

/** The memory group among a sandbox's cgroup directories: v1 `memory.usage_in_bytes` or v2 `memory.current`. */
export function memoryCgroupDir(paths: readonly string[]): string | undefined {
  return (
    paths.find((dir) => existsSync(join(dir, 'memory.usage_in_bytes'))) ??
    paths.find((dir) => existsSync(join(dir, 'memory.current')))
  );
}

export function cgroupMemory(dir: string): CgroupMemory | undefined {
  const v1 = tryRead(join(dir, 'memory.usage_in_bytes'));
  if (v1 !== undefined) {
    const stat = keyed(tryRead(join(dir, 'memory.stat')));
    const anon = stat['total_rss'] ?? stat['rss'] ?? 0;
    const file = stat['total_cache'] ?? stat['cache'] ?? 0;
    const usage = Number(v1.trim());
    return {
      dir,
      version: 1,
      usageBytes: usage,
      anonBytes: anon,
      fileBytes: file,
      shmemBytes: stat['total_shmem'] ?? stat['shmem'] ?? 0,
      kernelBytes: Math.max(0, usage - anon - file),
    };
  }
  const v2 = tryRead(join(dir, 'memory.current'));
  if (v2 === undefined) return undefined;
  const stat = keyed(tryRead(join(dir, 'memory.stat')));
  const usage = Number(v2.trim());
  const anon = stat['anon'] ?? 0;
  const file = stat['file'] ?? 0;
  return {
    dir,
    version: 2,
    usageBytes: usage,
    anonBytes: anon,
    fileBytes: file,
    shmemBytes: stat['shmem'] ?? 0,
    kernelBytes: stat['kernel'] ?? Math.max(0, usage - anon - file),
  };
}

/** Host memory in use, bytes: MemTotal − MemAvailable (/proc/meminfo). */
export function hostMemoryUsedBytes(): number {
  const text = tryRead('/proc/meminfo') ?? '';
  const kib = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return kib('MemTotal') - kib('MemAvailable');
}

/** Waits until the processes used no CPU for `quietMs` (polled), or `deadlineMs` passed; returns whether quiet. */
export async function waitIdle(
  pids: () => readonly number[],
  quietMs = 300,
  deadlineMs = 10_000,
): Promise<boolean> {
  const total = () => pids().reduce((sum, pid) => sum + cpuTicksOf(pid), 0);
  const until = performance.now() + deadlineMs;
  let last = total();
  let quietSince = performance.now();
  while (performance.now() < until) {
    await new Promise((done) => setTimeout(done, 50));
    const now = total();
    if (now !== last) {
      last = now;
      quietSince = performance.now();
    } else if (performance.now() - quietSince >= quietMs) {
      return true;
    }
  }
  return false;
}
