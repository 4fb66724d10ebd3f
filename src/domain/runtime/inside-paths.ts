/**
 * Paths inside every sandbox's default root that both the runtimes (which bind them) and the use-cases (which run
 * commands at them, e.g. a code agent started through a live session) must agree on.
 */

/** The host's Node, bound read-only. */
export const NODE_INSIDE = '/opt/aegis/bin/node';

/** The interpreter each language runs on in the default root (the host's /usr view; node bound at NODE_INSIDE). */
export const HOST_INTERPRETERS: Readonly<Record<'python' | 'node' | 'bash', string>> = {
  python: '/usr/bin/python3',
  node: NODE_INSIDE,
  bash: '/usr/bin/bash',
};
