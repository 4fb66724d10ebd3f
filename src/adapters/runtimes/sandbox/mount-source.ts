/**
 * Opening a host path to mount, race-free. Checking a path and then handing bubblewrap the same *string* lets
 * anyone who can rename things along the path swap in a different object (a symlink to /proc) between the check
 * and the mount. So the object is opened once, component by component from `/` with O_PATH|O_NOFOLLOW (Node has
 * no openat: `/proc/self/fd/<dirfd>/<name>` resolves the name in exactly the directory already opened), every
 * opened object is checked, and bubblewrap gets the descriptor (`--ro-bind-fd`/`--bind-fd`; Debian's 0.8.0 carries
 * the upstream 0.10.0 backport). bubblewrap mounts `/proc/self/fd/N` — a magic link to the object itself, not a
 * path walk — and then compares the mounted root with fstat(N), dying with "Race condition binding dirfd" on a
 * mismatch. What is mounted is what was checked. docs/adr/0014-mount-sources-by-descriptor.md.
 */
import { closeSync, constants, fstatSync, openSync, readlinkSync, type Stats, statfsSync } from 'node:fs';
import { AegisError } from '../../../domain/errors.ts';
import { forbiddenFilesystem } from '../../../domain/filesystem-policy.ts';
import { isWithin } from '../../../domain/paths.ts';
import { permits, type SandboxUser } from './host.ts';

/** O_PATH (Linux, all architectures Node supports): a handle on the object itself, no read/write access. */
export const O_PATH = 0o10000000;

export interface MountSource {
  /** O_PATH descriptor of the object (close-on-exec in this process; passed to bubblewrap as a stdio slot). */
  readonly fd: number;
  /** The real path that was walked and that the descriptor resolves to. */
  readonly path: string;
  readonly stat: Stats;
}

export interface OpenMountSourceOptions {
  readonly user: SandboxUser;
  /** Directories along the path that lie within this one need the sandbox user's search permission. @default '/' */
  readonly searchFrom?: string;
  /** Names the source in errors (`spec.security.filesystem.read[0]`, `the agent directory`). */
  readonly what: string;
}

/** A refusal because the path was replaced between its realpath and the walk (or during the walk). */
export function changedWhileChecked(what: string, path: string, detail: string): AegisError {
  return new AegisError(
    'POLICY_DENIED',
    `${what}: ${path} changed while being checked (${detail}); nothing was mounted`,
    {
      problems: [{ path: what, message: `${path} changed while being checked` }],
      hint: 'something renamed or replaced the path while the sandbox was being prepared — if another agent can write to a parent directory of this grant, grant a directory it cannot rename instead; otherwise retry',
    },
  );
}

/**
 * Opens `realPath` (already realpath'd: absolute, no `.`/`..`, no symlinks) component by component. Refuses a
 * component that is a symlink or has vanished (the path changed since its realpath), an object that is neither a
 * directory nor a regular file, an object on a kernel pseudo filesystem (proc, sysfs, …), and a directory along
 * the way (within `searchFrom`) the sandbox user cannot search. The caller owns the returned descriptor.
 */
export function openMountSource(realPath: string, options: OpenMountSourceOptions): MountSource {
  const { user, what } = options;
  const searchFrom = options.searchFrom ?? '/';
  const names = realPath.split('/').filter((name) => name !== '');
  let fd = openSync('/', O_PATH | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  let walked = '/';
  try {
    for (const name of names) {
      const dir = fstatSync(fd);
      if (!dir.isDirectory()) throw changedWhileChecked(what, realPath, `${walked} is no longer a directory`);
      if (isWithin(walked, searchFrom) && !permits(dir.mode, dir.uid, dir.gid, user, 0o1)) {
        throw new AegisError(
          'RUNTIME_UNAVAILABLE',
          `${what}: the sandbox user ${user.name} (uid ${user.uid}) cannot reach ${realPath}: ${walked} (mode ${(dir.mode & 0o777).toString(8)}) is not searchable`,
          { hint: `make it searchable: chmod o+x ${walked}` },
        );
      }
      let next: number;
      try {
        next = openSync(`/proc/self/fd/${fd}/${name}`, O_PATH | constants.O_NOFOLLOW);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') {
          throw changedWhileChecked(what, realPath, `${walked === '/' ? '' : walked}/${name} is gone`);
        }
        throw error;
      }
      closeSync(fd);
      fd = next;
      walked = walked === '/' ? `/${name}` : `${walked}/${name}`;
      if (fstatSync(fd).isSymbolicLink()) {
        throw changedWhileChecked(what, realPath, `${walked} is now a symlink`);
      }
    }
    const stat = fstatSync(fd);
    const resolved = readlinkSync(`/proc/self/fd/${fd}`);
    if (resolved !== realPath) {
      throw changedWhileChecked(what, realPath, `the opened object is now at ${resolved}`);
    }
    if (!stat.isDirectory() && !stat.isFile()) {
      throw new AegisError(
        'POLICY_DENIED',
        `${what}: ${realPath} is neither a directory nor a regular file (devices, sockets and FIFOs are never mounted)`,
        {
          problems: [{ path: what, message: `${realPath} is a special file` }],
          hint: 'grant a directory or a regular file',
        },
      );
    }
    const filesystem = forbiddenFilesystem(statfsSync(`/proc/self/fd/${fd}`).type);
    if (filesystem !== undefined) {
      throw new AegisError(
        'POLICY_DENIED',
        `${what}: ${realPath} lies on a ${filesystem} filesystem, a view of the host kernel that is never mounted into a sandbox`,
        {
          problems: [{ path: what, message: `${realPath} is on ${filesystem}` }],
          hint: 'grant a directory on a regular filesystem that holds only what the agent needs',
        },
      );
    }
    return { fd, path: realPath, stat };
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

/** Whether the sandbox user may read (or read and write) the opened object, by its mode bits. */
export function userMay(stat: Stats, user: SandboxUser, access: 'read' | 'write'): boolean {
  const bits = (access === 'write' ? 0o6 : 0o4) | (stat.isDirectory() ? 0o1 : 0);
  return permits(stat.mode, stat.uid, stat.gid, user, bits);
}
