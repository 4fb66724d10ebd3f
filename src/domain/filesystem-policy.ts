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

/** `extra` adds deployment-specific paths (the orchestrator's own data dir, its sockets). */
export function checkMountSource(realSource: string, extra: readonly string[] = []): ForbiddenCheck {
  const source = normalize(realSource);
  for (const protectedPath of [...ALWAYS_FORBIDDEN, ...extra.map(normalize)]) {
    if (isWithin(source, protectedPath) || isWithin(protectedPath, source)) {
      return { forbidden: true, protectedPath };
    }
  }
  return { forbidden: false };
}
