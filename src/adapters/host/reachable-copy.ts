/**
 * A file another uid can read. bubblewrap binds as the sandbox uid and the egress helper runs as uid 65534; neither
 * can traverse a checkout under /root or /home (mode 700). So when `user` cannot reach `source`, it gets a copy in a
 * root-owned directory searchable by everyone (0711), named by the source's size and mtime (a new Node version is a
 * new file) and written atomically, so concurrent orchestrators agree. One copy per process and source.
 */
import { chmodSync, cpSync, existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { AegisError } from '../../domain/errors.ts';
import { reachable, type SandboxUser } from '../runtimes/sandbox/host.ts';

const copies = new Map<string, string>();

/** The host's `nobody`, which the egress helper runs as. */
export const NOBODY: SandboxUser = { name: 'uid 65534', uid: 65534, gid: 65534, dedicated: true };

export function reachableCopy(source: string, label: string, user: SandboxUser, dir: string): string {
  const key = `${user.uid}:${source}:${dir}`;
  const known = copies.get(key);
  if (known !== undefined) return known;
  let path = source;
  if (!reachable(source, user, 'read').ok) {
    mkdirSync(dir, { recursive: true, mode: 0o711 });
    const st = statSync(source);
    // The extension stays last: Node decides a script's module type by it.
    path = join(dir, `${label}-${st.size}-${Math.trunc(st.mtimeMs)}${extname(source)}`);
    if (!existsSync(path)) {
      const partial = `${path}.${process.pid}.tmp`;
      cpSync(source, partial);
      chmodSync(partial, 0o755);
      renameSync(partial, path);
    }
    const reach = reachable(path, user, 'read');
    if (!reach.ok) {
      throw new AegisError('RUNTIME_UNAVAILABLE', `${user.name} cannot read ${label}: ${reach.reason}`, {
        hint: `install AEGIS in a directory readable by ${user.name}, or set AEGIS_NODE_BINARY`,
      });
    }
  }
  copies.set(key, path);
  return path;
}
