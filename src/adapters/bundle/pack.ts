// Packs an agent directory (the one holding agent.yaml) into the `.tar.gz` a deploy uploads.
//
// The output is deterministic — the same files give the same bytes and so the same digest: entries in byte order
// of their paths (relative to the agent directory, directories as `dir/`), mtime 0, uid/gid 0, empty uname/gname,
// files 0644 (0755 when any execute bit is set), directories 0755, gzip level 9 with no name, mtime 0 and the OS
// byte set to Unix. (Another zlib could compress differently; the same AEGIS build always gives the same bytes.)
//
// The rules the server enforces (rules.ts, unpack.ts) are checked here first, so a user learns before uploading:
// symbolic links, sockets, FIFOs and devices are refused (USAGE naming the path), so are names the server would
// refuse, and the caps give PAYLOAD_TOO_LARGE naming the file and the cap.
//
// `.aegisignore` in the agent directory lists what to leave out, one pattern per line — a subset of `.gitignore`:
//   - blank lines and lines starting with `#` are skipped; trailing spaces are dropped; there are no `\` escapes
//   - `*` matches anything except `/`, `?` one character except `/`; `[...]` classes are not supported (literal)
//   - `**` as a whole segment: `**/x` is x at any depth, `a/**` everything inside a, `a/**/b` b in a or any
//     directory below it; elsewhere `**` is the same as `*`
//   - a pattern with a `/` at the start or in the middle is anchored to the agent directory (`/build` is only the
//     top-level build, `src/gen` only that one); without one it matches a name at any depth (`*.log`)
//   - a trailing `/` matches directories only (`cache/`)
//   - `!` re-includes what an earlier pattern left out; the last matching pattern wins. As with git, nothing inside
//     a left-out directory can be re-included: the packer does not look inside it.
// `.git` and `node_modules/.cache` (at any depth) are always left out, whatever `!` says. `.aegisignore` itself is
// packed unless it lists itself.
import { constants, type Dirent } from 'node:fs';
import { type FileHandle, lstat, open, readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createGzip } from 'node:zlib';
import * as tar from 'tar-stream';
import type { BundleLimits } from '../../app/ports.ts';
import { AegisError } from '../../domain/errors.ts';
import { IgnoreRules } from './aegisignore.ts';
import { bundleLimits, DIR_MODE, fileMode, formatBytes, pathProblem, sha256Hex } from './rules.ts';

export interface PackOptions {
  /** Caps to check before uploading; unset fields take `DEFAULT_BUNDLE_LIMITS`. Use the server's own caps. */
  readonly limits?: Partial<BundleLimits>;
}

export interface PackedBundle {
  /** The `.tar.gz` bytes. */
  readonly bytes: Uint8Array;
  /** Regular files in the bundle. */
  readonly files: number;
  /** Lowercase hex SHA-256 of `bytes`. */
  readonly digest: string;
}

interface PlannedEntry {
  /** Relative, `/`-separated, no trailing `/`. */
  readonly path: string;
  readonly absolute: string;
  readonly type: 'file' | 'directory';
  readonly size: number;
  readonly mode: number;
}

const READ_CHUNK_BYTES = 256 * 1024;
/** Gzip header byte 9: 3 = Unix, whatever platform packed it. */
const GZIP_OS_BYTE = 9;
const GZIP_OS_UNIX = 3;

export async function packAgentDir(dir: string, options: PackOptions = {}): Promise<PackedBundle> {
  const limits = bundleLimits(options.limits);
  const root = resolve(dir);
  await requireManifest(root);
  const ignore = new IgnoreRules(await readIgnoreFile(root));
  const entries = await plan(root, ignore, limits);
  if (!entries.some((entry) => entry.path === 'agent.yaml')) {
    throw new AegisError('USAGE', `${join(root, '.aegisignore')} leaves out agent.yaml`, {
      hint: 'a bundle must hold its manifest; remove the pattern that matches agent.yaml',
    });
  }
  const bytes = await writeArchive(entries, limits);
  return { bytes, files: entries.filter((entry) => entry.type === 'file').length, digest: sha256Hex(bytes) };
}

async function requireManifest(root: string): Promise<void> {
  const file = join(root, 'agent.yaml');
  let stats: Awaited<ReturnType<typeof lstat>>;
  try {
    stats = await lstat(file);
  } catch (error) {
    if (
      (error as NodeJS.ErrnoException).code === 'ENOENT' ||
      (error as NodeJS.ErrnoException).code === 'ENOTDIR'
    ) {
      throw new AegisError('NOT_FOUND', `no agent.yaml in ${root}`, {
        cause: error,
        hint: 'pass the agent directory, the one that holds agent.yaml (e.g. `examples/hello-python`)',
      });
    }
    throw new AegisError('USAGE', `cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  if (stats.isSymbolicLink()) {
    throw new AegisError('USAGE', `${file} is a symbolic link; bundles cannot contain links`, {
      hint: 'replace the link with a copy of the manifest',
    });
  }
  if (!stats.isFile()) {
    throw new AegisError('USAGE', `${file} is not a regular file`, {
      hint: 'agent.yaml must be the manifest file at the root of the agent directory',
    });
  }
}

async function readIgnoreFile(root: string): Promise<string> {
  const file = join(root, '.aegisignore');
  try {
    const stats = await lstat(file);
    if (!stats.isFile()) {
      throw new AegisError('USAGE', `${file} is not a regular file`, {
        hint: '.aegisignore must be a plain text file (a link is not followed)',
      });
    }
    return await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return '';
    if (error instanceof AegisError) throw error;
    throw new AegisError('USAGE', `cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
}

/** Walks the directory, applies .aegisignore, refuses what the server would refuse and checks the caps. */
async function plan(root: string, ignore: IgnoreRules, limits: BundleLimits): Promise<PlannedEntry[]> {
  const entries: PlannedEntry[] = [];
  let unpackedBytes = 0;
  const walk = async (relDir: string): Promise<void> => {
    const absDir = relDir === '' ? root : join(root, relDir);
    let children: Dirent[];
    try {
      children = await readdir(absDir, { withFileTypes: true });
    } catch (error) {
      throw new AegisError('USAGE', `cannot list ${absDir}: ${(error as Error).message}`, { cause: error });
    }
    for (const child of children) {
      const path = relDir === '' ? child.name : `${relDir}/${child.name}`;
      const absolute = join(root, path);
      // lstat, not the Dirent type: a link must be seen as a link.
      let stats: Awaited<ReturnType<typeof lstat>>;
      try {
        stats = await lstat(absolute);
      } catch (error) {
        // Gone since it was listed, or a name that is not UTF-8 (Node cannot pass it back to the system).
        throw new AegisError('USAGE', `cannot read ${JSON.stringify(path)}: ${(error as Error).message}`, {
          cause: error,
          details: { path: absolute },
          hint: 'give it a UTF-8 name, or deploy again once nothing is changing the agent directory',
        });
      }
      if (ignore.ignores(path, stats.isDirectory())) continue;
      if (stats.isSymbolicLink()) {
        throw new AegisError('USAGE', `${path} is a symbolic link; bundles cannot contain links`, {
          details: { path: absolute },
          hint: `add "/${path}" to ${join(root, '.aegisignore')} or replace the link with a copy of its target`,
        });
      }
      if (!stats.isFile() && !stats.isDirectory()) {
        throw new AegisError(
          'USAGE',
          `${path} is a ${specialKind(stats)}; bundles hold only files and directories`,
          {
            details: { path: absolute },
            hint: `add "/${path}" to ${join(root, '.aegisignore')}`,
          },
        );
      }
      const problem = pathProblem(path);
      if (problem) {
        throw new AegisError('USAGE', `${JSON.stringify(path)} cannot be bundled: ${problem}`, {
          details: { path: absolute },
          hint: `rename it, or add it to ${join(root, '.aegisignore')}`,
        });
      }
      if (entries.length >= limits.maxEntries) {
        throw new AegisError(
          'PAYLOAD_TOO_LARGE',
          `the agent directory has more than ${limits.maxEntries} files and directories (the cap), at ${path}`,
          { details: { path: absolute, cap: limits.maxEntries }, hint: ignoreHint(root) },
        );
      }
      if (stats.isDirectory()) {
        entries.push({ path, absolute, type: 'directory', size: 0, mode: DIR_MODE });
        await walk(path);
        continue;
      }
      if (stats.size > limits.maxFileBytes) {
        throw new AegisError(
          'PAYLOAD_TOO_LARGE',
          `${path} is ${formatBytes(stats.size)}; files in a bundle are capped at ${formatBytes(limits.maxFileBytes)}`,
          {
            details: { path: absolute, sizeBytes: stats.size, capBytes: limits.maxFileBytes },
            hint: ignoreHint(root),
          },
        );
      }
      unpackedBytes += stats.size;
      if (unpackedBytes > limits.maxUnpackedBytes) {
        throw new AegisError(
          'PAYLOAD_TOO_LARGE',
          `the agent directory holds more than ${formatBytes(limits.maxUnpackedBytes)} of files (the cap), reached at ${path}`,
          { details: { path: absolute, capBytes: limits.maxUnpackedBytes }, hint: ignoreHint(root) },
        );
      }
      entries.push({ path, absolute, type: 'file', size: stats.size, mode: fileMode(stats.mode) });
    }
  };
  await walk('');
  // A directory always sorts before what it holds (its path is a prefix of theirs).
  return entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

function specialKind(stats: Awaited<ReturnType<typeof lstat>>): string {
  if (stats.isSocket()) return 'socket';
  if (stats.isFIFO()) return 'FIFO';
  if (stats.isCharacterDevice()) return 'character device';
  if (stats.isBlockDevice()) return 'block device';
  return 'special file';
}

function ignoreHint(root: string): string {
  return `leave build outputs, data and caches out of the bundle with ${join(root, '.aegisignore')}`;
}

async function writeArchive(entries: readonly PlannedEntry[], limits: BundleLimits): Promise<Uint8Array> {
  const pack = tar.pack();
  const gzip = createGzip({ level: 9 });
  const chunks: Buffer[] = [];
  let compressedBytes = 0;
  gzip.on('data', (chunk: Buffer) => {
    compressedBytes += chunk.byteLength;
    // Past the cap keep draining (so nothing stalls) but stop holding on to the bytes.
    if (compressedBytes <= limits.maxBundleBytes) chunks.push(chunk);
  });
  const compressed = new Promise<void>((resolvePromise, reject) => {
    gzip.on('end', resolvePromise);
    gzip.on('error', reject);
    pack.on('error', reject);
  });
  compressed.catch(() => {});
  pack.on('data', (chunk: unknown) => {
    if (!gzip.write(chunk as Buffer)) pack.pause();
  });
  gzip.on('drain', () => pack.resume());
  pack.on('end', () => gzip.end());

  try {
    for (const entry of entries) {
      if (entry.type === 'directory') await addEntry(pack, header(entry, 0));
      else await addFile(pack, entry);
    }
    pack.finalize();
    await compressed;
  } catch (error) {
    pack.destroy();
    gzip.destroy();
    throw error;
  }
  if (compressedBytes > limits.maxBundleBytes) {
    throw new AegisError(
      'PAYLOAD_TOO_LARGE',
      `the bundle is ${formatBytes(compressedBytes)} compressed; bundles are capped at ${formatBytes(limits.maxBundleBytes)}`,
      { details: { sizeBytes: compressedBytes, capBytes: limits.maxBundleBytes }, hint: ignoreHintGeneric },
    );
  }
  const bytes = new Uint8Array(Buffer.concat(chunks, compressedBytes));
  bytes[GZIP_OS_BYTE] = GZIP_OS_UNIX;
  return bytes;
}

type EntryHeader = Partial<tar.Header> & { name: string };

const ignoreHintGeneric = 'leave build outputs, data and caches out of the bundle with .aegisignore';

function header(entry: PlannedEntry, size: number): EntryHeader {
  return {
    // tar-stream does not mark directories itself; `dir/` is what tar(1) writes and expects.
    name: entry.type === 'directory' ? `${entry.path}/` : entry.path,
    type: entry.type,
    size,
    mode: entry.mode,
    mtime: new Date(0),
    uid: 0,
    gid: 0,
    uname: '',
    gname: '',
  };
}

function addEntry(pack: tar.Pack, headers: EntryHeader): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    pack.entry(headers, (error) => (error ? reject(error) : resolvePromise()));
  });
}

/** Streams one file into the archive; refuses it if it is no longer the regular file of the size planned. */
async function addFile(pack: tar.Pack, entry: PlannedEntry): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await open(
      entry.absolute,
      constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0),
    );
  } catch (error) {
    throw new AegisError('USAGE', `cannot read ${entry.absolute}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile() || stats.size !== entry.size) throw changedWhilePacking(entry);
    const done = new Promise<void>((resolvePromise, reject) => {
      const sink = pack.entry(header(entry, entry.size), (error) =>
        error ? reject(error) : resolvePromise(),
      );
      const copy = async () => {
        const buffer = Buffer.allocUnsafe(READ_CHUNK_BYTES);
        let position = 0;
        while (position < entry.size) {
          const { bytesRead } = await handle.read(
            buffer,
            0,
            Math.min(READ_CHUNK_BYTES, entry.size - position),
            position,
          );
          if (bytesRead === 0) throw changedWhilePacking(entry);
          position += bytesRead;
          if (!sink.write(Buffer.from(buffer.subarray(0, bytesRead)))) {
            await new Promise<void>((drained) => sink.once('drain', () => drained()));
          }
        }
        if ((await handle.read(Buffer.alloc(1), 0, 1, position)).bytesRead !== 0)
          throw changedWhilePacking(entry);
        sink.end(undefined);
      };
      copy().catch((error: unknown) => {
        sink.destroy(error as Error);
        reject(error);
      });
    });
    await done;
  } finally {
    await handle.close();
  }
}

function changedWhilePacking(entry: PlannedEntry): AegisError {
  return new AegisError('USAGE', `${entry.path} changed while it was being packed`, {
    details: { path: entry.absolute },
    hint: 'deploy again once nothing is writing to the agent directory',
  });
}
