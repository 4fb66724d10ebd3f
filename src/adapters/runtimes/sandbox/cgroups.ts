/**
 * Kernel resource limits for one sandbox, on cgroup v1 (this build machine: "hybrid", v1 controllers plus an
 * empty v2 tree) and cgroup v2 (most production hosts). The runtime creates a group per execution, sets limits,
 * moves the sandbox's init into it before the agent's first instruction, reads which limits were hit, kills the
 * whole tree, and removes the group.
 *
 * Layout (see docs/adr/0004-cgroups-v1-and-v2.md):
 * - v2:     <v2 root>/<parent>/<name>            memory.max, memory.swap.max, pids.max, cpu.max, cgroup.kill
 * - v1:     <ctrl mount>/<own path>/aegis/<name> for memory, pids, cpu (+ cpuacct for usage)
 * - hybrid: v1 as above, plus a membership-only group in the v2 tree so `cgroup.kill` kills the tree atomically
 * - live sandboxes also get the v1 `freezer` group (v2: `cgroup.freeze` is always there) for pause/resume
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AegisError } from '../../../domain/errors.ts';

export interface CgroupLimits {
  readonly memoryBytes: number;
  readonly pids: number;
  readonly cpuMillis: number;
}

export interface CgroupStats {
  /** Processes the kernel OOM-killed inside the group. */
  readonly oomKills: number;
  /** Times a fork/clone was refused because pids.max was reached. */
  readonly pidsLimitHits: number;
  /** Periods in which the CPU quota throttled the group. */
  readonly cpuThrottledPeriods: number;
  readonly memoryPeakBytes: number | null;
  readonly cpuUsageNs: number | null;
  /** Memory charged to the group now (null: unreadable; absent: this runtime does not read it). */
  readonly memoryBytes?: number | null;
  /** Processes (tasks) in the group now. */
  readonly pids?: number | null;
}

export interface SandboxCgroup {
  /** Every directory created for this sandbox (persisted so a later start can remove them). */
  readonly paths: readonly string[];
  join(pid: number): void;
  stats(): CgroupStats;
  /** SIGKILLs every process in the group. */
  kill(): void;
  /** Stops every process of the group (cgroup freezer) and resolves once the kernel reports it frozen. */
  freeze(): Promise<void>;
  /** Lets a frozen group run again. */
  thaw(): Promise<void>;
  /** Kills what is left and removes the group directories, polling until the kernel lets go. */
  destroy(deadlineMs?: number): Promise<void>;
}

export interface CgroupCreateOptions {
  /** Also make the v1 `freezer` group (pause/resume of live sandboxes). v2 always has `cgroup.freeze`. */
  readonly freezer?: boolean;
}

/** How long the kernel gets to report a group frozen or thawed. */
const FREEZE_DEADLINE_MS = 10_000;

async function waitFor(what: string, done: () => boolean): Promise<void> {
  const deadline = Date.now() + FREEZE_DEADLINE_MS;
  while (!done()) {
    if (Date.now() > deadline) {
      throw new AegisError('RUNTIME_UNAVAILABLE', `the kernel did not report the group ${what} in time`);
    }
    await sleep(5);
  }
}

export interface CgroupLayout {
  readonly mode: 'v1' | 'v2' | 'hybrid' | 'none';
  /** Mount point per v1 controller (memory, pids, cpu, cpuacct, freezer…). */
  readonly v1Mounts: Readonly<Record<string, string>>;
  /** This process's path inside each v1 hierarchy. */
  readonly v1OwnPaths: Readonly<Record<string, string>>;
  /** Mount point of the v2 (unified) tree, if any. */
  readonly v2Mount: string | undefined;
  /** Controllers available in the v2 tree (empty on hybrid). */
  readonly v2Controllers: readonly string[];
}

const NEEDED_CONTROLLERS = ['memory', 'pids', 'cpu'] as const;

/** Reads /proc/self/mountinfo and /proc/self/cgroup. */
export function detectCgroupLayout(procRoot = '/proc'): CgroupLayout {
  const v1Mounts: Record<string, string> = {};
  let v2Mount: string | undefined;
  const mountinfo = readFileSync(join(procRoot, 'self/mountinfo'), 'utf8');
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const mountPoint = left.split(' ')[4];
    const [fsType, , superOptions] = right.split(' ');
    if (!mountPoint) continue;
    if (fsType === 'cgroup2' && v2Mount === undefined) v2Mount = mountPoint;
    if (fsType === 'cgroup' && superOptions) {
      for (const option of superOptions.split(',')) {
        if (['memory', 'pids', 'cpu', 'cpuacct', 'freezer', 'cpuset', 'blkio', 'devices'].includes(option)) {
          v1Mounts[option] ??= mountPoint;
        }
      }
    }
  }
  const v1OwnPaths: Record<string, string> = {};
  for (const line of readFileSync(join(procRoot, 'self/cgroup'), 'utf8').split('\n')) {
    const match = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!match?.[1]) continue;
    for (const controller of match[1].split(',')) v1OwnPaths[controller] = match[2] ?? '/';
  }
  let v2Controllers: string[] = [];
  if (v2Mount) {
    try {
      v2Controllers = readFileSync(join(v2Mount, 'cgroup.controllers'), 'utf8')
        .trim()
        .split(/\s+/)
        .filter(Boolean);
    } catch {
      v2Controllers = [];
    }
  }
  const hasV1 = NEEDED_CONTROLLERS.every((c) => v1Mounts[c] !== undefined);
  const hasV2 = v2Mount !== undefined && NEEDED_CONTROLLERS.every((c) => v2Controllers.includes(c));
  const mode = hasV2 ? 'v2' : hasV1 ? (v2Mount ? 'hybrid' : 'v1') : 'none';
  return { mode, v1Mounts, v1OwnPaths, v2Mount, v2Controllers };
}

function readNumber(file: string): number | null {
  try {
    const value = Number(readFileSync(file, 'utf8').trim());
    return Number.isFinite(value) ? value : null;
  } catch {
    return null;
  }
}

/** `key value` files such as memory.events, pids.events, cpu.stat, memory.oom_control. */
function readKeyed(file: string): Record<string, number> {
  const out: Record<string, number> = {};
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const [key, value] = line.trim().split(/\s+/);
      if (key && value !== undefined) out[key] = Number(value);
    }
  } catch {
    // group already gone: report zeros
  }
  return out;
}

function readPids(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function killPids(dir: string): void {
  for (const pid of readPids(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** rmdir that waits for exiting tasks to leave (EBUSY) — the sandbox init may still be reaping. */
export async function removeCgroupDir(dir: string, deadlineMs = 5000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  for (let attempt = 0; ; attempt++) {
    try {
      rmdirSync(dir);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || Date.now() > deadline) throw error;
      if (attempt > 2) killPids(dir);
      await new Promise((resolve) => setTimeout(resolve, Math.min(2 ** attempt, 50)));
    }
  }
}

function write(dir: string, file: string, value: string): void {
  try {
    writeFileSync(join(dir, file), value);
  } catch (error) {
    throw new AegisError(
      'LIMIT_UNENFORCEABLE',
      `cannot set ${file}=${value} in ${dir}: ${(error as Error).message}`,
      {
        cause: error,
        hint: 'run the orchestrator as root, or delegate a cgroup to it and set AEGIS_CGROUP_PARENT',
      },
    );
  }
}

function makeDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (error) {
    const why = (error as Error).message;
    throw new AegisError(
      'LIMIT_UNENFORCEABLE',
      `memory, pids and CPU limits cannot be enforced: cannot create cgroup ${dir}: ${why}`,
      {
        cause: error,
        hint: 'run the orchestrator as root (like dockerd), or delegate a cgroup subtree and set AEGIS_CGROUP_PARENT',
      },
    );
  }
}

const CPU_PERIOD_US = 100_000;

export interface CgroupDriverOptions {
  /** Sub-path under which sandbox groups are created. @default "aegis" */
  readonly parent?: string;
}

export class CgroupDriver {
  readonly layout: CgroupLayout;
  readonly parent: string;

  constructor(layout: CgroupLayout, options: CgroupDriverOptions = {}) {
    this.layout = layout;
    this.parent = (options.parent ?? 'aegis').replace(/^\/+|\/+$/g, '');
  }

  /** Throws LIMIT_UNENFORCEABLE naming what is missing, instead of letting a sandbox run without limits. */
  assertUsable(): void {
    if (this.layout.mode === 'none') {
      const missing = NEEDED_CONTROLLERS.filter(
        (c) => !this.layout.v1Mounts[c] && !this.layout.v2Controllers.includes(c),
      );
      throw new AegisError(
        'LIMIT_UNENFORCEABLE',
        `this host has no usable cgroup controllers for: ${missing.join(', ')} — memory, pids and CPU limits cannot be enforced`,
        {
          hint: 'mount cgroup v2 (or the v1 memory, pids and cpu controllers); `aegis doctor` shows what is present',
        },
      );
    }
  }

  /** Directory of the sandbox's group in each hierarchy, keyed by role. */
  private dirsFor(
    name: string,
    options: CgroupCreateOptions,
  ): { v1: Record<string, string>; v2: string | undefined } {
    const { layout } = this;
    const v1: Record<string, string> = {};
    if (layout.mode === 'v1' || layout.mode === 'hybrid') {
      const controllers = [...NEEDED_CONTROLLERS, 'cpuacct', ...(options.freezer ? ['freezer'] : [])];
      for (const controller of controllers) {
        const mount = layout.v1Mounts[controller];
        if (!mount) continue;
        // Nest under our own group so the host's budget for the orchestrator also bounds its sandboxes.
        const own = layout.v1OwnPaths[controller] ?? '/';
        v1[controller] = join(mount, own, this.parent, name);
      }
    }
    const v2 = layout.v2Mount ? join(layout.v2Mount, this.parent, name) : undefined;
    return { v1, v2 };
  }

  /**
   * Every directory `create(name)` may make, in its order (a superset of the created group's `paths`: the hybrid
   * kill group is listed even where making it fails). Lets the runtime record them before anything exists.
   */
  plannedPaths(name: string, options: CgroupCreateOptions = {}): string[] {
    if (this.layout.mode === 'none') return [];
    const { v1, v2 } = this.dirsFor(name, options);
    if (this.layout.mode === 'v2') return [v2!];
    return [...Object.values(v1), ...(v2 ? [v2] : [])];
  }

  create(name: string, limits: CgroupLimits, options: CgroupCreateOptions = {}): SandboxCgroup {
    this.assertUsable();
    const { v1, v2 } = this.dirsFor(name, options);
    const created: string[] = [];
    try {
      if (this.layout.mode === 'v2') {
        const parentDir = join(this.layout.v2Mount!, this.parent);
        if (!existsSync(parentDir)) makeDir(parentDir);
        enableV2Controllers(this.layout.v2Mount!, this.parent);
        makeDir(v2!);
        created.push(v2!);
        write(v2!, 'memory.max', String(limits.memoryBytes));
        if (existsSync(join(v2!, 'memory.swap.max'))) write(v2!, 'memory.swap.max', '0');
        write(v2!, 'pids.max', String(limits.pids));
        write(v2!, 'cpu.max', `${Math.round((limits.cpuMillis * CPU_PERIOD_US) / 1000)} ${CPU_PERIOD_US}`);
        return new V2Cgroup(v2!, created);
      }
      for (const [controller, dir] of Object.entries(v1)) {
        makeDir(dir);
        created.push(dir);
        if (controller === 'memory') {
          write(dir, 'memory.limit_in_bytes', String(limits.memoryBytes));
          // With swap accounting, cap memory+swap at the same value so swap can't extend the limit.
          if (existsSync(join(dir, 'memory.memsw.limit_in_bytes'))) {
            write(dir, 'memory.memsw.limit_in_bytes', String(limits.memoryBytes));
          } else {
            write(dir, 'memory.swappiness', '0');
          }
        } else if (controller === 'pids') {
          write(dir, 'pids.max', String(limits.pids));
        } else if (controller === 'cpu') {
          write(dir, 'cpu.cfs_period_us', String(CPU_PERIOD_US));
          write(dir, 'cpu.cfs_quota_us', String(Math.round((limits.cpuMillis * CPU_PERIOD_US) / 1000)));
        }
      }
      let killDir: string | undefined;
      if (v2) {
        // Hybrid: a membership-only v2 group gives an atomic cgroup.kill for the whole tree.
        try {
          makeDir(v2);
          created.push(v2);
          killDir = existsSync(join(v2, 'cgroup.kill')) ? v2 : undefined;
        } catch {
          killDir = undefined;
        }
      }
      return new V1Cgroup(v1, killDir, created);
    } catch (error) {
      for (const dir of created.reverse()) {
        try {
          rmdirSync(dir);
        } catch {
          // best effort; the reaper retries
        }
      }
      throw error;
    }
  }
}

function enableV2Controllers(mount: string, parent: string): void {
  // Controllers must be enabled in every ancestor's subtree_control down to the sandbox's parent.
  let dir = mount;
  for (const segment of ['', ...parent.split('/')]) {
    dir = segment ? join(dir, segment) : dir;
    const enabled = readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8');
    const missing = NEEDED_CONTROLLERS.filter((c) => !enabled.split(/\s+/).includes(c));
    if (missing.length === 0) continue;
    try {
      writeFileSync(join(dir, 'cgroup.subtree_control'), missing.map((c) => `+${c}`).join(' '));
    } catch (error) {
      throw new AegisError(
        'LIMIT_UNENFORCEABLE',
        `cannot enable ${missing.join(', ')} controllers in ${dir}: ${(error as Error).message}`,
        {
          cause: error,
          hint:
            (error as NodeJS.ErrnoException).code === 'EBUSY'
              ? 'that cgroup holds processes; point AEGIS_CGROUP_PARENT at a delegated, empty subtree'
              : 'run as root or delegate a cgroup subtree (systemd: Delegate=yes) and set AEGIS_CGROUP_PARENT',
        },
      );
    }
  }
}

class V2Cgroup implements SandboxCgroup {
  readonly paths: readonly string[];
  private readonly dir: string;

  constructor(dir: string, paths: readonly string[]) {
    this.dir = dir;
    this.paths = paths;
  }

  join(pid: number): void {
    write(this.dir, 'cgroup.procs', String(pid));
  }

  stats(): CgroupStats {
    const memoryEvents = readKeyed(join(this.dir, 'memory.events'));
    const pidsEvents = readKeyed(join(this.dir, 'pids.events'));
    const cpuStat = readKeyed(join(this.dir, 'cpu.stat'));
    return {
      oomKills: memoryEvents['oom_kill'] ?? 0,
      pidsLimitHits: pidsEvents['max'] ?? 0,
      cpuThrottledPeriods: cpuStat['nr_throttled'] ?? 0,
      memoryPeakBytes: readNumber(join(this.dir, 'memory.peak')),
      cpuUsageNs: cpuStat['usage_usec'] === undefined ? null : cpuStat['usage_usec'] * 1000,
      memoryBytes: readNumber(join(this.dir, 'memory.current')),
      pids: readNumber(join(this.dir, 'pids.current')),
    };
  }

  kill(): void {
    try {
      writeFileSync(join(this.dir, 'cgroup.kill'), '1');
    } catch {
      killPids(this.dir);
    }
  }

  async freeze(): Promise<void> {
    write(this.dir, 'cgroup.freeze', '1');
    await waitFor('frozen', () => readKeyed(join(this.dir, 'cgroup.events'))['frozen'] === 1);
  }

  async thaw(): Promise<void> {
    write(this.dir, 'cgroup.freeze', '0');
    await waitFor('thawed', () => readKeyed(join(this.dir, 'cgroup.events'))['frozen'] !== 1);
  }

  async destroy(deadlineMs?: number): Promise<void> {
    this.kill();
    await removeCgroupDir(this.dir, deadlineMs);
  }
}

class V1Cgroup implements SandboxCgroup {
  readonly paths: readonly string[];
  private readonly dirs: Record<string, string>;
  private readonly killDir: string | undefined;

  constructor(dirs: Record<string, string>, killDir: string | undefined, paths: readonly string[]) {
    this.dirs = dirs;
    this.killDir = killDir;
    this.paths = paths;
  }

  join(pid: number): void {
    // Order matters little (the process is blocked), but the memory/pids limits go first.
    for (const dir of Object.values(this.dirs)) write(dir, 'cgroup.procs', String(pid));
    if (this.killDir) write(this.killDir, 'cgroup.procs', String(pid));
  }

  stats(): CgroupStats {
    const memory = this.dirs['memory'];
    const pids = this.dirs['pids'];
    const cpu = this.dirs['cpu'];
    const cpuacct = this.dirs['cpuacct'];
    return {
      oomKills: memory ? (readKeyed(join(memory, 'memory.oom_control'))['oom_kill'] ?? 0) : 0,
      pidsLimitHits: pids ? (readKeyed(join(pids, 'pids.events'))['max'] ?? 0) : 0,
      cpuThrottledPeriods: cpu ? (readKeyed(join(cpu, 'cpu.stat'))['nr_throttled'] ?? 0) : 0,
      memoryPeakBytes: memory ? readNumber(join(memory, 'memory.max_usage_in_bytes')) : null,
      cpuUsageNs: cpuacct ? readNumber(join(cpuacct, 'cpuacct.usage')) : null,
      memoryBytes: memory ? readNumber(join(memory, 'memory.usage_in_bytes')) : null,
      pids: pids ? readNumber(join(pids, 'pids.current')) : null,
    };
  }

  kill(): void {
    this.#killOnly();
    // A v1-frozen task acts on SIGKILL only once thawed.
    const freezer = this.dirs['freezer'];
    if (freezer) {
      try {
        writeFileSync(join(freezer, 'freezer.state'), 'THAWED');
      } catch {
        // gone already
      }
    }
  }

  #killOnly(): void {
    if (this.killDir) {
      try {
        writeFileSync(join(this.killDir, 'cgroup.kill'), '1');
        return;
      } catch {
        // fall through to per-pid kill
      }
    }
    const pids = this.dirs['pids'] ?? Object.values(this.dirs)[0];
    if (pids) killPids(pids);
  }

  #freezer(): string {
    const dir = this.dirs['freezer'];
    if (!dir) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        'this sandbox has no cgroup freezer, so it cannot be paused',
        {
          hint: 'mount the cgroup v1 freezer controller (or use cgroup v2); `aegis doctor` shows what is present',
        },
      );
    }
    return dir;
  }

  async freeze(): Promise<void> {
    const dir = this.#freezer();
    write(dir, 'freezer.state', 'FROZEN');
    // v1 can stay FREEZING when a task was not freezable at that instant (gVisor's ptrace-traced stubs, a task
    // mid-fork): writing FROZEN again retries the tasks left, so it is rewritten every 100 ms while waiting.
    let last = Date.now();
    try {
      await waitFor('frozen', () => {
        if (readFileSync(join(dir, 'freezer.state'), 'utf8').trim() === 'FROZEN') return true;
        if (Date.now() - last >= 100) {
          last = Date.now();
          write(dir, 'freezer.state', 'FROZEN');
        }
        return false;
      });
    } catch (error) {
      // Never leave a half-frozen group behind a failed pause.
      try {
        write(dir, 'freezer.state', 'THAWED');
      } catch {
        // the group is gone
      }
      throw error;
    }
  }

  async thaw(): Promise<void> {
    const dir = this.#freezer();
    write(dir, 'freezer.state', 'THAWED');
    await waitFor('thawed', () => readFileSync(join(dir, 'freezer.state'), 'utf8').trim() === 'THAWED');
  }

  async destroy(deadlineMs?: number): Promise<void> {
    this.kill();
    const errors: unknown[] = [];
    for (const dir of [...(this.killDir ? [this.killDir] : []), ...Object.values(this.dirs)]) {
      try {
        await removeCgroupDir(dir, deadlineMs);
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length > 0) throw errors[0];
  }
}

/** Removes leftover group directories recorded by a dead orchestrator (deepest first). */
export async function removeCgroupPaths(paths: readonly string[]): Promise<void> {
  // A paused live sandbox: v1-frozen tasks act on SIGKILL only once thawed (v2 kills frozen groups itself), so
  // thaw first — before waiting for any of its groups to empty.
  for (const dir of paths) {
    if (!existsSync(join(dir, 'freezer.state'))) continue;
    try {
      writeFileSync(join(dir, 'freezer.state'), 'THAWED');
    } catch {
      // emptied meanwhile
    }
  }
  for (const dir of [...paths].reverse()) {
    if (!existsSync(dir)) continue;
    try {
      writeFileSync(join(dir, 'cgroup.kill'), '1');
    } catch {
      killPids(dir);
    }
    await removeCgroupDir(dir);
  }
}
