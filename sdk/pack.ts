/**
 * packAgent(dir): the `.tar.gz` bundle of an agent directory (the one holding agent.yaml), ready for
 * `AegisClient.deploy` — in-process, with tar-stream and node:zlib, no shell `tar`.
 *
 * The same bundle, byte for byte, as the CLI's packer (src/adapters/bundle/pack.ts; test/sdk-pack.test.ts checks it),
 * so the same files give the same digest whoever packed them: entries in byte order of their paths, directories as
 * `dir/` mode 0755, files 0644 (0755 when any execute bit is set), mtime 0, uid/gid 0, no user or group names; gzip
 * level 9, no name, mtime 0, OS byte Unix.
 *
 * What the server would refuse is refused here first, so a user learns before uploading: symbolic links, sockets,
 * FIFOs and devices (USAGE, naming the path), names the server refuses, and the caps (PAYLOAD_TOO_LARGE).
 *
 * `.aegisignore` lists what to leave out, one pattern per line (a subset of `.gitignore`): `#` comments, `*` and `?`
 * within a segment, `**` across segments, a leading or inner `/` anchors to the agent directory, a trailing `/`
 * matches directories only, `!` re-includes (the last match wins; nothing inside a left-out directory comes back).
 * `.git` and `node_modules/.cache` are always left out.
 */
import { createHash } from 'node:crypto';
import { constants, type Dirent, type Stats } from 'node:fs';
import { lstat, open, readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createGzip } from 'node:zlib';
import * as tar from 'tar-stream';
import { IgnoreRules } from './aegisignore.ts';
import { AegisApiError } from './errors.ts';

/** The server's default bundle caps; a server may be configured lower or higher. */
export interface BundleLimits {
  /** The `.tar.gz` itself. @default 64 MiB */
  readonly maxBundleBytes: number;
  /** All files together, unpacked. @default 256 MiB */
  readonly maxUnpackedBytes: number;
  /** One file. @default 64 MiB */
  readonly maxFileBytes: number;
  /** Files and directories. @default 10_000 */
  readonly maxEntries: number;
}

const MiB = 1024 * 1024;
export const DEFAULT_BUNDLE_LIMITS: BundleLimits = Object.freeze({
  maxBundleBytes: 64 * MiB,
  maxUnpackedBytes: 256 * MiB,
  maxFileBytes: 64 * MiB,
  maxEntries: 10_000,
});

export interface PackAgentOptions {
  /** Caps to check before uploading; unset fields keep DEFAULT_BUNDLE_LIMITS. */
  readonly limits?: Partial<BundleLimits>;
}

export interface PackedAgent {
  /** The `.tar.gz` bytes. */
  readonly bytes: Uint8Array;
  /** Regular files in the bundle. */
  readonly files: number;
  /** Lowercase hex SHA-256 of `bytes`. */
  readonly digest: string;
}

interface Entry {
  /** Relative, `/`-separated, no trailing `/`. */
  readonly path: string;
  readonly absolute: string;
  readonly type: 'file' | 'directory';
  readonly size: number;
  readonly mode: number;
}

const DIR_MODE = 0o755;
const MAX_SEGMENT_BYTES = 255;
const MAX_PATH_BYTES = 4096;
/** Gzip header byte 9: 3 = Unix, whatever platform packed it. */
const GZIP_OS_BYTE = 9;
const GZIP_OS_UNIX = 3;

/** Packs the agent directory `dir` (it must hold agent.yaml) into a deployable `.tar.gz`. */
export async function packAgent(dir: string, options: PackAgentOptions = {}): Promise<PackedAgent> {
  const limits = { ...DEFAULT_BUNDLE_LIMITS, ...definedOnly(options.limits ?? {}) };
  const root = resolve(dir);
  await requireManifest(root);
  const ignore = new IgnoreRules(await readIgnoreFile(root));
  const entries = await plan(root, ignore, limits);
  if (!entries.some((entry) => entry.path === 'agent.yaml')) {
    throw failure('USAGE', `${join(root, '.aegisignore')} leaves out agent.yaml`, {
      hint: 'a bundle must hold its manifest; remove the pattern that matches agent.yaml',
    });
  }
  const bytes = await archive(entries, limits);
  return {
    bytes,
    files: entries.filter((entry) => entry.type === 'file').length,
    digest: createHash('sha256').update(bytes).digest('hex'),
  };
}

function definedOnly(limits: Partial<BundleLimits>): Partial<BundleLimits> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(limits)) {
    if (value === undefined) continue;
    if (!Number.isSafeInteger(value) || value <= 0) {
      throw failure('USAGE', `bundle limit ${key} must be a positive integer, got ${String(value)}`, {});
    }
    out[key] = value;
  }
  return out;
}

function failure(code: string, message: string, details: Record<string, unknown>, cause?: unknown) {
  return new AegisApiError({ code, status: 0, message, details, cause });
}

function errno(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | null)?.code;
}

async function requireManifest(root: string): Promise<void> {
  const file = join(root, 'agent.yaml');
  let stats: Stats;
  try {
    stats = await lstat(file);
  } catch (error) {
    if (errno(error) === 'ENOENT' || errno(error) === 'ENOTDIR') {
      throw failure(
        'NOT_FOUND',
        `no agent.yaml in ${root}`,
        { hint: 'pass the agent directory, the one that holds agent.yaml' },
        error,
      );
    }
    throw failure('USAGE', `cannot read ${file}: ${(error as Error).message}`, {}, error);
  }
  if (stats.isSymbolicLink()) {
    throw failure('USAGE', `${file} is a symbolic link; bundles cannot contain links`, {
      hint: 'replace the link with a copy of the manifest',
    });
  }
  if (!stats.isFile()) {
    throw failure('USAGE', `${file} is not a regular file`, {
      hint: 'agent.yaml must be the manifest file at the root of the agent directory',
    });
  }
}

async function readIgnoreFile(root: string): Promise<string> {
  const file = join(root, '.aegisignore');
  let stats: Stats;
  try {
    stats = await lstat(file);
  } catch (error) {
    if (errno(error) === 'ENOENT') return '';
    throw failure('USAGE', `cannot read ${file}: ${(error as Error).message}`, {}, error);
  }
  if (!stats.isFile()) {
    throw failure('USAGE', `${file} is not a regular file`, {
      hint: '.aegisignore must be a plain text file (a link is not followed)',
    });
  }
  return readFile(file, 'utf8');
}

/** Why `path` cannot name a bundle entry (the server's rules), or undefined when it can. */
export function entryPathProblem(path: string): string | undefined {
  if (path === '') return 'the path is empty';
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) return `the path is longer than ${MAX_PATH_BYTES} bytes`;
  if (path.startsWith('/')) return 'the path is absolute';
  if (path.includes('\\')) return 'the path contains a backslash';
  if (path.includes('\u0000')) return 'the path contains a NUL byte';
  if (path.includes('\ufffd')) return 'the path is not valid UTF-8';
  if (/[\u0000-\u001f\u007f-\u009f]/.test(path)) return 'the path contains a control character';
  for (const segment of path.split('/')) {
    if (segment === '..') return 'the path has a ".." segment';
    if (segment === '' || segment === '.') return 'the path has an empty or "." segment';
    if (Buffer.byteLength(segment) > MAX_SEGMENT_BYTES) {
      return `a path segment is longer than ${MAX_SEGMENT_BYTES} bytes`;
    }
  }
  return undefined;
}

/** Walks the directory, applies .aegisignore, refuses what the server would refuse and checks the caps. */
async function plan(root: string, ignore: IgnoreRules, limits: BundleLimits): Promise<Entry[]> {
  const entries: Entry[] = [];
  const ignoreHint = `leave build outputs, data and caches out of the bundle with ${join(root, '.aegisignore')}`;
  let unpackedBytes = 0;
  const walk = async (relDir: string): Promise<void> => {
    const absDir = relDir === '' ? root : join(root, relDir);
    let children: Dirent[];
    try {
      children = await readdir(absDir, { withFileTypes: true });
    } catch (error) {
      throw failure('USAGE', `cannot list ${absDir}: ${(error as Error).message}`, {}, error);
    }
    for (const child of children) {
      const path = relDir === '' ? child.name : `${relDir}/${child.name}`;
      const absolute = join(root, path);
      let stats: Stats;
      try {
        stats = await lstat(absolute); // lstat, not the Dirent type: a link must be seen as a link
      } catch (error) {
        throw failure(
          'USAGE',
          `cannot read ${JSON.stringify(path)}: ${(error as Error).message}`,
          {
            path: absolute,
            hint: 'give it a UTF-8 name, or deploy again once nothing is changing the agent directory',
          },
          error,
        );
      }
      if (ignore.ignores(path, stats.isDirectory())) continue;
      if (stats.isSymbolicLink()) {
        throw failure('USAGE', `${path} is a symbolic link; bundles cannot contain links`, {
          path: absolute,
          hint: `add "/${path}" to ${join(root, '.aegisignore')} or replace the link with a copy of its target`,
        });
      }
      if (!stats.isFile() && !stats.isDirectory()) {
        throw failure(
          'USAGE',
          `${path} is a ${specialKind(stats)}; bundles hold only files and directories`,
          {
            path: absolute,
            hint: `add "/${path}" to ${join(root, '.aegisignore')}`,
          },
        );
      }
      const problem = entryPathProblem(path);
      if (problem) {
        throw failure('USAGE', `${JSON.stringify(path)} cannot be bundled: ${problem}`, {
          path: absolute,
          hint: `rename it, or add it to ${join(root, '.aegisignore')}`,
        });
      }
      if (entries.length >= limits.maxEntries) {
        throw failure(
          'PAYLOAD_TOO_LARGE',
          `the agent directory has more than ${limits.maxEntries} files and directories (the cap), at ${path}`,
          { path: absolute, cap: limits.maxEntries, hint: ignoreHint },
        );
      }
      if (stats.isDirectory()) {
        entries.push({ path, absolute, type: 'directory', size: 0, mode: DIR_MODE });
        await walk(path);
        continue;
      }
      if (stats.size > limits.maxFileBytes) {
        throw failure(
          'PAYLOAD_TOO_LARGE',
          `${path} is ${stats.size} bytes; files in a bundle are capped at ${limits.maxFileBytes} bytes`,
          { path: absolute, sizeBytes: stats.size, capBytes: limits.maxFileBytes, hint: ignoreHint },
        );
      }
      unpackedBytes += stats.size;
      if (unpackedBytes > limits.maxUnpackedBytes) {
        throw failure(
          'PAYLOAD_TOO_LARGE',
          `the agent directory holds more than ${limits.maxUnpackedBytes} bytes of files (the cap), reached at ${path}`,
          { path: absolute, capBytes: limits.maxUnpackedBytes, hint: ignoreHint },
        );
      }
      const mode = (stats.mode & 0o111) !== 0 ? 0o755 : 0o644;
      entries.push({ path, absolute, type: 'file', size: stats.size, mode });
    }
  };
  await walk('');
  // A directory sorts before what it holds (its path is a prefix of theirs).
  return entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

function specialKind(stats: Stats): string {
  if (stats.isSocket()) return 'socket';
  if (stats.isFIFO()) return 'FIFO';
  if (stats.isCharacterDevice()) return 'character device';
  if (stats.isBlockDevice()) return 'block device';
  return 'special file';
}

async function archive(entries: readonly Entry[], limits: BundleLimits): Promise<Uint8Array> {
  const pack = tar.pack();
  const gzip = createGzip({ level: 9 });
  const chunks: Buffer[] = [];
  let compressedBytes = 0;
  gzip.on('data', (chunk: Buffer) => {
    compressedBytes += chunk.byteLength;
    // Past the cap keep draining (so nothing stalls) but stop holding on to the bytes.
    if (compressedBytes <= limits.maxBundleBytes) chunks.push(chunk);
  });
  const compressed = new Promise<void>((done, fail) => {
    gzip.on('end', done);
    gzip.on('error', fail);
    pack.on('error', fail);
  });
  compressed.catch(() => {});
  pack.on('data', (chunk: unknown) => {
    if (!gzip.write(chunk as Buffer)) pack.pause();
  });
  gzip.on('drain', () => pack.resume());
  pack.on('end', () => gzip.end());
  try {
    for (const entry of entries) {
      const content = entry.type === 'file' ? await readEntry(entry) : undefined;
      await new Promise<void>((done, fail) => {
        const header: Partial<tar.Header> & { name: string } = {
          // tar-stream does not mark directories itself; `dir/` is what tar(1) writes and expects.
          name: entry.type === 'directory' ? `${entry.path}/` : entry.path,
          type: entry.type,
          size: content?.byteLength ?? 0,
          mode: entry.mode,
          mtime: new Date(0),
          uid: 0,
          gid: 0,
          uname: '',
          gname: '',
        };
        const callback = (error?: Error | null) => (error ? fail(error) : done());
        if (content === undefined) pack.entry(header, callback);
        else pack.entry(header, content, callback);
      });
    }
    pack.finalize();
    await compressed;
  } catch (error) {
    pack.destroy();
    gzip.destroy();
    throw error;
  }
  if (compressedBytes > limits.maxBundleBytes) {
    throw failure(
      'PAYLOAD_TOO_LARGE',
      `the bundle is ${compressedBytes} bytes compressed; bundles are capped at ${limits.maxBundleBytes} bytes`,
      {
        sizeBytes: compressedBytes,
        capBytes: limits.maxBundleBytes,
        hint: 'leave build outputs, data and caches out of the bundle with .aegisignore',
      },
    );
  }
  const bytes = new Uint8Array(Buffer.concat(chunks, compressedBytes));
  bytes[GZIP_OS_BYTE] = GZIP_OS_UNIX;
  return bytes;
}

/** Reads one file without following links; refuses it if it is no longer the regular file of the size planned. */
async function readEntry(entry: Entry): Promise<Buffer> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(entry.absolute, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    throw failure('USAGE', `cannot read ${entry.absolute}: ${(error as Error).message}`, {}, error);
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile() || stats.size !== entry.size) throw changed(entry);
    const content = Buffer.alloc(entry.size);
    let position = 0;
    while (position < entry.size) {
      const { bytesRead } = await handle.read(content, position, entry.size - position, position);
      if (bytesRead === 0) throw changed(entry);
      position += bytesRead;
    }
    if ((await handle.read(Buffer.alloc(1), 0, 1, position)).bytesRead !== 0) throw changed(entry);
    return content;
  } finally {
    await handle.close();
  }
}

function changed(entry: Entry): AegisApiError {
  return failure('USAGE', `${entry.path} changed while it was being packed`, {
    path: entry.absolute,
    hint: 'deploy again once nothing is writing to the agent directory',
  });
}
