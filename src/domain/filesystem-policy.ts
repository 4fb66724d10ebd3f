/**
 * Which host paths may never be exposed to an agent, whatever its manifest says. The runtime resolves symlinks
 * and `..` first (realpath), then asks this module about the real path.
 */
import { isWithin, normalize } from './paths.ts';

/** Host paths that are never mountable, nor any ancestor of them (mounting `/etc` would expose `/etc/shadow`). */
export const ALWAYS_FORBIDDEN = [
  '/etc/shadow',
  '/etc/gshadow',
  '/etc/sudoers',
  '/etc/ssh',
  '/root',
  '/home',
  '/proc',
  '/sys',
  '/dev',
  '/boot',
  '/var/run/docker.sock',
  '/run/docker.sock',
  '/run/containerd',
  '/var/lib/docker',
  '/var/lib/containerd',
  '/run/runc',
  '/run/aegis',
];

export interface ForbiddenCheck {
  readonly forbidden: boolean;
  /** The protected path the source equals, lies within, or contains. */
  readonly protectedPath?: string;
}

/**
 * `extra` adds deployment-specific paths (the orchestrator's own data dir, its sockets).
 *
 * `ownDir` is the (real) directory of the agent being started: an agent's own directory is never a protected path
 * to itself. A protected path that strictly contains `ownDir` (a clone under /root or /home, a bundle under the
 * server's data dir) is not held against `ownDir` itself nor against a source inside it; a protected path that
 * `ownDir` equals or contains still is (an agent directory of `/root` grants nothing of `/root`).
 */
export function checkMountSource(
  realSource: string,
  extra: readonly string[] = [],
  ownDir?: string,
): ForbiddenCheck {
  const source = normalize(realSource);
  const own = ownDir === undefined ? undefined : normalize(ownDir);
  const insideOwn = own !== undefined && isWithin(source, own);
  for (const protectedPath of [...ALWAYS_FORBIDDEN, ...extra.map(normalize)]) {
    const holdsOwnDir = own !== undefined && own !== protectedPath && isWithin(own, protectedPath);
    if (insideOwn && holdsOwnDir) continue;
    if (isWithin(source, protectedPath) || isWithin(protectedPath, source)) {
      return { forbidden: true, protectedPath };
    }
  }
  return { forbidden: false };
}

/**
 * Kernel and pseudo filesystems a mount source may never live on, by statfs f_type (linux/magic.h): they are
 * views of the host kernel (or of devices), not data. Checked on the opened object, so a grant that was swapped
 * for (or bind-mounted over by) one of them is refused whatever its path says. devtmpfs reports tmpfs's magic, so
 * `/dev` is refused by path (ALWAYS_FORBIDDEN) and device nodes by file type.
 */
export const FORBIDDEN_FILESYSTEMS: Readonly<Record<number, string>> = {
  40864: 'proc',
  1650812274: 'sysfs',
  7377: 'devpts',
  2613483: 'cgroup',
  1667723888: 'cgroup2',
  1684170528: 'debugfs',
  1953653091: 'tracefs',
  1935894131: 'securityfs',
  3405662737: 'bpf',
  1650812272: 'configfs',
  1634035564: 'pstore',
  3730735588: 'efivarfs',
  1112100429: 'binfmt_misc',
  1853056627: 'nsfs',
  4185718668: 'selinuxfs',
  1702057283: 'fusectl',
  427819522: 'mqueue',
  391: 'autofs',
};

/** The name of the forbidden filesystem of statfs type `type`, or undefined when a mount may live on it. */
export function forbiddenFilesystem(type: number | bigint): string | undefined {
  return FORBIDDEN_FILESYSTEMS[Number(type)];
}
