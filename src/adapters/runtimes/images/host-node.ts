/**
 * The host's Node inside a custom image, for the exec agent of a live sandbox (live-agent.cjs): an image need not
 * hold Node, or the glibc this Node was linked against. So the Node binary, its dynamic loader and the libraries it
 * needs (as `ldd` lists them) are bound read-only under /opt/aegis/hostlib, and Node is started *through* that
 * loader with `--library-path` — the image's own programs (the commands the agent runs) keep the image's libc,
 * since nothing is set in the environment. The same files on both runtimes that take images (docker, gvisor).
 */
import { execFileSync } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { basename } from 'node:path';
import { AegisError } from '../../../domain/errors.ts';
import { NODE_INSIDE } from '../sandbox/environment.ts';

/** Where the loader and libraries go inside the image. */
export const HOST_LIB_INSIDE = '/opt/aegis/hostlib';

export interface HostNodeInImage {
  /** argv that starts Node (append the script and its arguments). */
  readonly argv: readonly string[];
  /** Read-only binds: host path → path inside. */
  readonly binds: Readonly<Record<string, string>>;
}

const cache = new Map<string, HostNodeInImage>();

/** Parses `ldd` output: the loader and every `name => /path` library. */
export function parseLdd(text: string): { loader: string | undefined; libraries: Record<string, string> } {
  let loader: string | undefined;
  const libraries: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const linked = /^\s*(\S+)\s+=>\s+(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (linked) {
      libraries[linked[1]!] = linked[2]!;
      continue;
    }
    const direct = /^\s*(\/\S*ld-linux\S*)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (direct) loader = direct[1]!;
  }
  return { loader, libraries };
}

export function hostNodeInImage(nodeBinary: string): HostNodeInImage {
  const node = realpathSync(nodeBinary);
  const known = cache.get(node);
  if (known) return known;
  let text: string;
  try {
    text = execFileSync('ldd', [node], { encoding: 'utf8', timeout: 10_000 });
  } catch (error) {
    throw new AegisError('RUNTIME_UNAVAILABLE', `cannot list the libraries of ${node} (ldd failed)`, {
      cause: error,
      hint: 'install libc-bin (Debian), which provides ldd',
    });
  }
  const { loader, libraries } = parseLdd(text);
  if (loader === undefined) {
    throw new AegisError('RUNTIME_UNAVAILABLE', `${node} names no dynamic loader; cannot run it in an image`);
  }
  const binds: Record<string, string> = { [node]: NODE_INSIDE };
  const loaderInside = `${HOST_LIB_INSIDE}/${basename(loader)}`;
  binds[realpathSync(loader)] = loaderInside;
  for (const [name, path] of Object.entries(libraries))
    binds[realpathSync(path)] = `${HOST_LIB_INSIDE}/${name}`;
  const found: HostNodeInImage = {
    argv: [loaderInside, '--library-path', HOST_LIB_INSIDE, NODE_INSIDE],
    binds,
  };
  cache.set(node, found);
  return found;
}
