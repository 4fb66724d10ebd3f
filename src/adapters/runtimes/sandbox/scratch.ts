/**
 * Scratch and I/O files: the per-instance scratch dir (state.json for the reaper, input.json, output.json), where
 * output.json lives so its size is bounded, and their removal.
 */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  mkdtempSync,
  renameSync,
  rmdirSync,
  rmSync,
  statfsSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { AegisError } from '../../../domain/errors.ts';

/** statfs f_type of tmpfs (linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;
/** Where output files go when the scratch root is not tmpfs. */
export const SHM_ROOT = '/dev/shm';

export interface ScratchState {
  /** The execution served (a pool id such as `wp_…` until a pooled instance is bound). */
  readonly executionId: string;
  /**
   * The id the instance was spawned under, when bound since. The scratch dir and cgroups are named by the spawn id
   * plus a per-start suffix (`<id>.<8 hex>`), so two starts of one execution never share them.
   */
  readonly spawnedAs?: string;
  readonly owner: { host: string; pid: number; startTicks: number };
  readonly cgroupPaths: readonly string[];
  /** Output dir outside the scratch dir, if any (removed with it). */
  readonly outputDir?: string;
  readonly createdAt: string;
}

export function onTmpfs(path: string): boolean {
  try {
    return statfsSync(path).type === TMPFS_MAGIC;
  } catch {
    return false;
  }
}

/**
 * output.json is the one host file the agent writes (bound read-write). On tmpfs its pages are shmem charged to the
 * sandbox's memory cgroup, so the memory limit bounds it; on a disk-backed scratch root (here /run is ext4) the
 * pages are written back and reclaimed, and an agent could fill the host's disk through it. So it always lives on
 * tmpfs: in the scratch dir when that is tmpfs, else in a fresh private dir under /dev/shm. Returns that extra dir.
 */
export function outputDirFor(scratchDir: string): string | undefined {
  if (onTmpfs(scratchDir)) return undefined;
  if (!onTmpfs(SHM_ROOT)) {
    throw new AegisError(
      'LIMIT_UNENFORCEABLE',
      `neither the scratch dir ${scratchDir} nor ${SHM_ROOT} is a tmpfs: the size of the agent's output file could not be bounded`,
      { hint: 'point AEGIS_SCRATCH_DIR at a tmpfs (e.g. a directory under /run or /dev/shm)' },
    );
  }
  const dir = mkdtempSync(join(SHM_ROOT, 'aegis-output-'));
  chmodSync(dir, 0o711);
  return dir;
}

/**
 * Replaced by rename, never rewritten in place: another process's reaper treats an unparsable state.json older than a
 * minute as abandoned, and bind() rewrites it on instances that may have idled in a pool for longer.
 */
export function writeScratchState(dir: string, state: ScratchState): void {
  const partial = join(dir, 'state.json.partial');
  writeFileSync(partial, JSON.stringify(state), { mode: 0o600 });
  renameSync(partial, join(dir, 'state.json'));
}

/**
 * What spawn() puts in a scratch dir (an agent copy, if any, is left to the recursive fallback). state.json last: a
 * crash mid-removal leaves a dir that still names its owner (or an empty one), both reaped at once.
 */
export const SCRATCH_FILES = ['input.json', 'output.json', 'state.json'];

/**
 * Removes a dir this runtime made by unlinking the files it knows of and rmdir — a few syscalls instead of a
 * recursive walk on every execution; anything else in it (an agent copy, a partial state.json) falls back to rm -rf.
 * The dirs are root-owned and not writable by the sandbox, so nothing in them was swapped for a symlink.
 */
export function removeDir(dir: string, files: readonly string[]): void {
  try {
    for (const name of files) {
      try {
        unlinkSync(join(dir, name));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    rmdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The name of one start's scratch dir, cgroups (and, for runsc and Docker, container): the execution (or pool) id and a
 * random per-start suffix. Two starts of one execution on one host (a fenced-out node and the node that took the
 * execution over) must never share them: the fenced one's teardown would remove the new holder's.
 */
export function spawnNameFor(executionId: string): string {
  return `${executionId}.${randomBytes(4).toString('hex')}`;
}

/** The execution id a start's name carries (names without the suffix, from older versions, are the id). */
export function executionOfSpawnName(name: string): string {
  return name.replace(/\.[0-9a-f]{8}$/, '');
}
