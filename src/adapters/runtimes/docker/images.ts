/**
 * Images for the `docker` runtime, made locally (no registry is assumed anywhere):
 *   - `importRootfs`: a Dockerfile-free directory (a root filesystem) → an image, through the Engine API's
 *     `POST /images/create?fromSrc=-` with a tar stream (what `docker import` does). `aegis image build` uses it.
 *   - `ensureBaseImage`: the default rootfs of language agents without `spec.runtime.image`: an image FROM scratch
 *     holding only the synthesised /etc files and empty mount points; the runtime binds the host's /usr (and the
 *     few /etc files an interpreter needs) read-only over it — the same view of the host the `sandbox` runtime gives.
 */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { pack } from 'tar-stream';
import { AegisError } from '../../../domain/errors.ts';
import { type DockerEngine, engineMessage } from './engine.ts';

export type TarEntry =
  | { readonly type: 'dir'; readonly name: string; readonly mode: number }
  | { readonly type: 'file'; readonly name: string; readonly mode: number; readonly content: Buffer }
  | { readonly type: 'symlink'; readonly name: string; readonly target: string };

/** An image reference: `name[:tag]`, lowercase, as Docker accepts it. */
const IMAGE_REF =
  /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$/;

export function checkImageRef(ref: string): { repo: string; tag: string } {
  if (!IMAGE_REF.test(ref)) {
    throw new AegisError('USAGE', `"${ref}" is not an image name`, {
      hint: 'use name[:tag] in lowercase, e.g. my-agent:1',
    });
  }
  const colon = ref.lastIndexOf(':');
  return colon === -1
    ? { repo: ref, tag: 'latest' }
    : { repo: ref.slice(0, colon), tag: ref.slice(colon + 1) };
}

/** Every entry under `dir` (sorted, so the same tree gives the same tar), root-owned in the image. */
export function entriesOfDir(dir: string): TarEntry[] {
  const out: TarEntry[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const relPath = rel === '' ? name : `${rel}/${name}`;
      const full = join(dir, relPath);
      const st = lstatSync(full);
      if (st.isSymbolicLink()) out.push({ type: 'symlink', name: relPath, target: readlinkSync(full) });
      else if (st.isDirectory()) {
        out.push({ type: 'dir', name: relPath, mode: st.mode & 0o7777 });
        walk(relPath);
      } else if (st.isFile()) {
        out.push({ type: 'file', name: relPath, mode: st.mode & 0o7777, content: readFileSync(full) });
      }
      // sockets, fifos and devices are left out: an image holds none
    }
  };
  walk('');
  return out;
}

function tarStream(entries: readonly TarEntry[]) {
  const tar = pack();
  for (const entry of entries) {
    const common = { name: entry.name, uid: 0, gid: 0, mtime: new Date(0) };
    if (entry.type === 'dir') tar.entry({ ...common, type: 'directory', mode: entry.mode });
    else if (entry.type === 'symlink')
      tar.entry({ ...common, type: 'symlink', linkname: entry.target, mode: 0o777 });
    else tar.entry({ ...common, type: 'file', mode: entry.mode }, entry.content);
  }
  tar.finalize();
  return tar;
}

/** Imports `entries` as image `ref` (replacing the tag if it exists); returns the image id. */
export async function importEntries(
  engine: DockerEngine,
  entries: readonly TarEntry[],
  ref: string,
): Promise<string> {
  const { repo, tag } = checkImageRef(ref);
  const answer = await engine.request(
    'POST',
    `/images/create?fromSrc=-&repo=${encodeURIComponent(repo)}&tag=${encodeURIComponent(tag)}`,
    tarStream(entries),
  );
  const text = typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body);
  if (answer.status !== 200 || /"error"/.test(text)) {
    throw new AegisError(
      'RUNTIME_UNAVAILABLE',
      `importing image ${ref}: the Docker Engine answered ${answer.status}: ${engineMessage(answer.body)}`,
    );
  }
  const id = await imageId(engine, `${repo}:${tag}`);
  if (id === undefined)
    throw new AegisError('RUNTIME_UNAVAILABLE', `image ${ref} was imported but is not listed`);
  return id;
}

/** `aegis image build <dir>`: the directory is the image's root filesystem. */
export function importRootfs(engine: DockerEngine, dir: string, ref: string): Promise<string> {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(dir);
  } catch {
    throw new AegisError('USAGE', `${dir} does not exist`, {
      hint: 'give a directory holding the root filesystem of the image',
    });
  }
  if (!st.isDirectory())
    throw new AegisError('USAGE', `${dir} is not a directory`, {
      hint: 'give a directory holding the root filesystem of the image',
    });
  return importEntries(engine, entriesOfDir(dir), ref);
}

/** The image id of `ref` in the local engine, or undefined when it has none. */
export async function imageId(engine: DockerEngine, ref: string): Promise<string | undefined> {
  const answer = await engine.request('GET', `/images/${encodeURIComponent(ref)}/json`);
  if (answer.status === 404) return undefined;
  if (answer.status !== 200) {
    throw new AegisError(
      'RUNTIME_UNAVAILABLE',
      `inspecting image ${ref}: the Docker Engine answered ${answer.status}: ${engineMessage(answer.body)}`,
    );
  }
  return (answer.body as { Id: string }).Id;
}

/** Mount points the base image holds (the runtime mounts over them). */
const BASE_DIRS = [
  'agent',
  'workspace',
  'tmp',
  'run',
  'run/aegis',
  'opt',
  'opt/aegis',
  'opt/aegis/bin',
  'usr',
];
const BASE_DIRS_ROOT_ONLY = ['proc', 'dev', 'sys', 'etc'];

/** The base image's files: /etc (passwd naming the agent's uid), mount points, merged-/usr symlinks. */
export function baseImageEntries(etc: Readonly<Record<string, string>>, mergedUsr: boolean): TarEntry[] {
  const entries: TarEntry[] = [];
  for (const dir of [...BASE_DIRS_ROOT_ONLY, ...BASE_DIRS]) {
    entries.push({ type: 'dir', name: dir, mode: dir === 'tmp' ? 0o1777 : 0o755 });
  }
  for (const [path, content] of Object.entries(etc)) {
    entries.push({ type: 'file', name: path.replace(/^\//, ''), mode: 0o644, content: Buffer.from(content) });
  }
  for (const link of ['bin', 'lib', 'lib64', 'sbin']) {
    if (mergedUsr) entries.push({ type: 'symlink', name: link, target: `usr/${link}` });
    else entries.push({ type: 'dir', name: link, mode: 0o755 });
  }
  return entries.sort((a, b) => a.name.localeCompare(b.name));
}

/** Makes the base image once (its tag is the digest of its content) and returns its reference. */
export async function ensureBaseImage(
  engine: DockerEngine,
  etc: Readonly<Record<string, string>>,
  mergedUsr: boolean,
): Promise<string> {
  const entries = baseImageEntries(etc, mergedUsr);
  const digest = createHash('sha256').update(JSON.stringify(entries)).digest('hex').slice(0, 16);
  const ref = `aegis-base:${digest}`;
  if ((await imageId(engine, ref)) === undefined) await importEntries(engine, entries, ref);
  return ref;
}
