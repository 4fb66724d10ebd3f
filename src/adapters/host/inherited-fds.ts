/**
 * File descriptors this process inherited without close-on-exec would be inherited in turn by every child — bwrap
 * passes them on into the sandbox, so an agent could read or write whatever its orchestrator's parent left open
 * (a shell's pipe, a CI runner's log). Node's and libuv's own descriptors are all O_CLOEXEC, so at process start
 * every descriptor ≥ 3 without that flag is one we inherited and don't use: close it.
 */
import { closeSync, readdirSync, readFileSync } from 'node:fs';

const O_CLOEXEC = 0o2000000;

/** Closes inherited non-close-on-exec descriptors ≥ 3 (keeping Node's IPC channel); returns the ones closed. */
export function closeInheritedDescriptors(): number[] {
  const keep = new Set([0, 1, 2]);
  const channel = process.env['NODE_CHANNEL_FD'];
  if (channel !== undefined && channel !== '') keep.add(Number(channel));
  let names: string[];
  try {
    names = readdirSync('/proc/self/fd');
  } catch {
    return []; // no procfs: nothing we can inspect
  }
  const closed: number[] = [];
  for (const name of names) {
    const fd = Number(name);
    if (!Number.isInteger(fd) || keep.has(fd)) continue;
    let flags: string | undefined;
    try {
      flags = /^flags:\s*([0-7]+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
    } catch {
      continue; // the directory listing's own descriptor, already gone
    }
    if (flags === undefined || (Number.parseInt(flags, 8) & O_CLOEXEC) !== 0) continue;
    try {
      closeSync(fd);
      closed.push(fd);
    } catch {
      // not ours to close after all
    }
  }
  return closed;
}
