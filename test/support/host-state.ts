/** What a sandbox can leave on the host — processes, cgroup directories — for tests that check nothing is left. */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export function processWithMarker(marker: string): boolean {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = readFileSafe(`/proc/${pid}/cmdline`);
      if (cmdline.includes(marker)) return true;
    } catch {
      // raced with exit
    }
  }
  return false;
}

function readFileSafe(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

export function findCgroupDirs(name: string): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    if (depth > 6) return;
    let entries: import('node:fs').Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      if (!entry.isDirectory()) continue;
      const path = join(dir, entry.name);
      if (isStartOf(entry.name, name)) found.push(path);
      else walk(path, depth + 1);
    }
  };
  for (const controller of ['memory', 'pids', 'cpu', 'unified']) walk(join('/sys/fs/cgroup', controller), 0);
  if (found.length === 0) walk('/sys/fs/cgroup', 0);
  return found;
}

/** A runtime names each start's host resources `<execution id>.<8 hex>` (older ones: the bare id). */
function isStartOf(entry: string, executionId: string): boolean {
  return (
    entry === executionId ||
    (/^\.[0-9a-f]{8}$/.test(entry.slice(executionId.length)) && entry.startsWith(executionId))
  );
}

/** The scratch dirs of an execution's starts under the sandbox runtime's scratch root. */
export function scratchDirsOf(executionId: string, root = '/run/aegis/sandboxes'): string[] {
  try {
    return readdirSync(root)
      .filter((entry) => isStartOf(entry, executionId))
      .map((entry) => join(root, entry));
  } catch {
    return [];
  }
}
