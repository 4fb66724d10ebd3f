/** Pure POSIX path helpers (no I/O), so the domain can reason about paths without importing node:fs. */

export function isAbsolute(path: string): boolean {
  return path.startsWith('/');
}

/** Resolves `.`/`..` segments lexically. `..` above the root stays at the root. */
export function normalize(path: string): string {
  const absolute = isAbsolute(path);
  const out: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') {
      if (out.length > 0 && out[out.length - 1] !== '..') out.pop();
      else if (!absolute) out.push('..');
      continue;
    }
    out.push(segment);
  }
  const joined = out.join('/');
  return absolute ? `/${joined}` : joined || '.';
}

export function resolve(base: string, path: string): string {
  return normalize(isAbsolute(path) ? path : `${base}/${path}`);
}

/** True when `path` is `ancestor` or inside it (both absolute and normalized). */
export function isWithin(path: string, ancestor: string): boolean {
  if (ancestor === '/') return true;
  return path === ancestor || path.startsWith(`${ancestor}/`);
}
