/**
 * Facts about the host the sandbox runtime needs: which uid sandboxes run as, whether that uid can reach a
 * path (bubblewrap binds paths *as* that uid), where interpreters live.
 */
import { existsSync, lstatSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

export interface SandboxUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  /** False when the orchestrator is not root and sandboxes run as the orchestrator's own uid. */
  readonly dedicated: boolean;
}

export const SANDBOX_USER_NAME = 'aegis-sandbox';
const NOBODY = 65534;

/**
 * Root spawns sandboxes as the `aegis-sandbox` system user (created by scripts/setup.sh), else as `nobody`.
 * Never as root: bubblewrap run by root maps the sandbox's root to host root on bind mounts.
 */
export function resolveSandboxUser(env: NodeJS.ProcessEnv = process.env): SandboxUser {
  const myUid = process.getuid?.() ?? NOBODY;
  if (myUid !== 0) {
    return { name: 'self', uid: myUid, gid: process.getgid?.() ?? myUid, dedicated: false };
  }
  const override = env['AEGIS_SANDBOX_UID'];
  if (override !== undefined && /^\d+$/.test(override) && Number(override) !== 0) {
    const uid = Number(override);
    return { name: `uid ${uid}`, uid, gid: uid, dedicated: true };
  }
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const [name, , uid, gid] = line.split(':');
      if (name === SANDBOX_USER_NAME && uid && gid && Number(uid) !== 0) {
        return { name, uid: Number(uid), gid: Number(gid), dedicated: true };
      }
    }
  } catch {
    // fall through to nobody
  }
  return { name: 'nobody', uid: NOBODY, gid: NOBODY, dedicated: true };
}

export type Access = 'read' | 'write' | 'traverse';

export interface Reachability {
  readonly ok: boolean;
  /** The first path component that blocks access, and why. */
  readonly blockedAt?: string;
  readonly reason?: string;
}

/** Whether `user` has all of `bits` (0o4 read, 0o2 write, 0o1 search) on an object, by its mode bits alone. */
export function permits(
  mode: number,
  ownerUid: number,
  ownerGid: number,
  user: SandboxUser,
  bits: number,
): boolean {
  if (user.uid === 0) return true;
  if (ownerUid === user.uid) return ((mode >> 6) & bits) === bits;
  if (ownerGid === user.gid) return ((mode >> 3) & bits) === bits;
  return (mode & bits) === bits;
}

/**
 * Can `user` reach `path` with mode bits alone? (Conservative: ACLs are not consulted, so an ACL grant is
 * reported as blocked; the error message says how to grant access with plain modes.)
 */
export function reachable(path: string, user: SandboxUser, access: Access): Reachability {
  const ancestors: string[] = [];
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    ancestors.unshift(dir);
    if (dir === '/') break;
  }
  for (const dir of ancestors) {
    const st = statSync(dir);
    if (!permits(st.mode, st.uid, st.gid, user, 0o1)) {
      return {
        ok: false,
        blockedAt: dir,
        reason: `${dir} (mode ${(st.mode & 0o777).toString(8)}) is not searchable`,
      };
    }
  }
  const st = statSync(path);
  const want =
    (access === 'write' ? 0o2 : 0) | (access === 'traverse' ? 0o1 : 0o4) | (st.isDirectory() ? 0o1 : 0);
  if (!permits(st.mode, st.uid, st.gid, user, want)) {
    const verb = access === 'write' ? 'writable' : 'readable';
    return {
      ok: false,
      blockedAt: path,
      reason: `${path} (mode ${(st.mode & 0o777).toString(8)}, owner uid ${st.uid}) is not ${verb}`,
    };
  }
  return { ok: true };
}

/** Debian merged /usr: /bin, /lib, /lib64, /sbin are symlinks into /usr. */
export function hostHasMergedUsr(): boolean {
  try {
    return lstatSync('/bin').isSymbolicLink() && lstatSync('/lib').isSymbolicLink();
  } catch {
    return false;
  }
}

/** /etc files an interpreter needs; only those present on the host are bound. */
export const ETC_FILES = [
  '/etc/ld.so.cache',
  '/etc/ld.so.conf',
  '/etc/ld.so.conf.d',
  '/etc/localtime',
  '/etc/alternatives',
  '/etc/ssl/certs',
  '/etc/ca-certificates',
  '/etc/mime.types',
];

export function presentEtcFiles(): string[] {
  return ETC_FILES.filter((file) => existsSync(file));
}
