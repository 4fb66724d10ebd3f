/**
 * Unpacks an uploaded `.tar.gz` bundle — hostile until proven otherwise. Nothing is sanitised: an entry that breaks
 * a rule rejects the whole bundle (USAGE naming the entry, or PAYLOAD_TOO_LARGE naming the cap) and leaves nothing
 * on disk.
 *
 * - Streaming: gunzip → tar-stream, with backpressure; every inflated byte is counted as it comes out of zlib.
 *   Declared file sizes are checked against the caps at the header, before any content is inflated, and bytes that
 *   are not file content (headers, padding, the zero blocks a bomb is made of) get a small allowance per entry, so a
 *   gzip bomb stops after about a MiB of inflating, not after all of it.
 * - Entries: regular files and directories only (links, devices and FIFOs are refused, never skipped); relative
 *   `/`-separated paths without `..`, empty or `.` segments, backslashes, NUL, control characters or invalid UTF-8;
 *   at most 255 bytes a segment and 4096 in all; one leading `./` is allowed (and a `./` root entry); each path at
 *   most once (`a`, `a/` and `./a` are the same path). Parent directories an archive leaves implicit are created
 *   and count towards the entry cap.
 * - Writing: into a fresh temp directory next to `destDir` (same filesystem), every file opened with
 *   O_CREAT|O_EXCL|O_NOFOLLOW (nothing can be redirected or overwritten), modes set explicitly (umask-proof): files
 *   0644, or 0755 when the tar mode has any execute bit — never setuid, setgid or sticky — directories 0755, so an
 *   unprivileged sandbox user can read the tree. Files and directories are fsynced, then the temp directory is
 *   renamed to `destDir` in one step. If `destDir` exists by then (a concurrent unpack of the same content won),
 *   ours is discarded and the call succeeds. On any error the temp directory is removed.
 * - `agent.yaml` must be a regular file at the root.
 */
import { constants } from 'node:fs';
import { chmod, type FileHandle, mkdir, mkdtemp, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { createGunzip } from 'node:zlib';
import * as tar from 'tar-stream';
import type { BundleLimits } from '../../app/ports.ts';
import { AegisError } from '../../domain/errors.ts';
import { DIR_MODE, fileMode, formatBytes, MAX_PATH_BYTES, pathProblem, showEntry } from './rules.ts';

export interface UnpackResult {
  /** Regular files written. */
  readonly files: number;
  /** Their total size. */
  readonly unpackedBytes: number;
}

export interface UnpackOptions {
  /**
   * Runs on the complete unpacked tree (in its temp directory) before it is moved into place; throwing rejects the
   * bundle like any other problem (the temp directory is removed, `destDir` never appears).
   */
  readonly check?: (dir: string) => Promise<void>;
}

/**
 * Bytes of tar structure (header, pax records, padding) allowed per entry on top of file contents; a pax header for
 * a 4096-byte path needs about 6 KiB.
 */
const OVERHEAD_BYTES_PER_ENTRY = 8 * 1024;
/** Plus this much for the end-of-archive blocks, record padding and what sits unparsed in the stream buffers. */
const OVERHEAD_SLACK_BYTES = 1024 * 1024;
const BLOCK = 512;
const SYNC_CONCURRENCY = 32;
const END_OF_ARCHIVE_BYTES = 2 * BLOCK;

const REPACK_HINT =
  'a bundle is the agent directory (the one holding agent.yaml) packed by the AEGIS client, which applies the same rules';

type Kind = 'file' | 'dir' | 'implicit-dir';

export async function unpackBundle(
  bytes: Uint8Array,
  destDir: string,
  limits: BundleLimits,
  options: UnpackOptions = {},
): Promise<UnpackResult> {
  if (bytes.byteLength > limits.maxBundleBytes) {
    throw new AegisError(
      'PAYLOAD_TOO_LARGE',
      `the bundle is ${formatBytes(bytes.byteLength)}; bundles are capped at ${formatBytes(limits.maxBundleBytes)}`,
      {
        details: { sizeBytes: bytes.byteLength, capBytes: limits.maxBundleBytes },
        hint: 'leave build outputs, data and caches out with .aegisignore',
      },
    );
  }
  if (bytes.byteLength < 18 || bytes[0] !== 0x1f || bytes[1] !== 0x8b || bytes[2] !== 8) {
    throw new AegisError('USAGE', 'the bundle is not a gzip file', { hint: REPACK_HINT });
  }
  const dest = resolve(destDir);
  let tmp: string;
  try {
    tmp = await mkdtemp(join(dirname(dest), `.${basename(dest)}.tmp-`));
  } catch (error) {
    throw ioError(`cannot create a temporary directory next to ${dest}`, error);
  }
  try {
    await chmod(tmp, DIR_MODE);
    const extraction = new Extraction(tmp, limits);
    const result = await extraction.run(bytes);
    await options.check?.(tmp);
    await extraction.sync();
    try {
      await rename(tmp, dest);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
      // Another unpack of the same content got there first; its tree is as good as ours.
      await rm(tmp, { recursive: true, force: true });
      return result;
    }
    await syncDirectory(dirname(dest));
    return result;
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    if (error instanceof AegisError) throw error;
    throw ioError(`cannot unpack the bundle into ${dest}`, error);
  }
}

function ioError(message: string, error: unknown): AegisError {
  return new AegisError('INTERNAL', `${message}: ${(error as Error).message}`, { cause: error });
}

function entryError(name: string, problem: string, hint = REPACK_HINT): AegisError {
  return new AegisError('USAGE', `bundle entry ${showEntry(name)}: ${problem}`, {
    details: { entry: name },
    hint,
  });
}

const TYPE_NAMES: Readonly<Record<string, string>> = {
  link: 'a hard link',
  symlink: 'a symbolic link',
  'character-device': 'a character device',
  'block-device': 'a block device',
  fifo: 'a FIFO',
  'contiguous-file': 'a contiguous file (type 7)',
};

/** One extraction into one fresh directory. */
class Extraction {
  readonly #root: string;
  readonly #limits: BundleLimits;
  /** Canonical path → what it is on disk. */
  readonly #kinds = new Map<string, Kind>();
  /** Every directory created, the root first. */
  readonly #dirs: string[];
  /** Every file written. */
  readonly #filePaths: string[] = [];
  #archiveEntries = 0;
  #diskEntries = 0;
  #files = 0;
  /** Sum of declared file sizes so far (checked against the cap before any content is inflated). */
  #declaredBytes = 0;
  #writtenBytes = 0;
  /** Bytes out of gunzip so far. */
  #inflatedBytes = 0;
  /** Offset in the tar stream where the last entry's data (rounded up to a block) ends. */
  #lastEntryEnd = 0;
  #sawRootEntry = false;

  constructor(root: string, limits: BundleLimits) {
    this.#root = root;
    this.#limits = limits;
    this.#dirs = [root];
  }

  run(bytes: Uint8Array): Promise<UnpackResult> {
    return new Promise<UnpackResult>((resolvePromise, rejectPromise) => {
      const gunzip = createGunzip();
      const extract = tar.extract();
      let settled = false;
      let current: Promise<void> | undefined;

      const fail = (error: AegisError): void => {
        if (settled) return;
        settled = true;
        gunzip.destroy();
        extract.destroy();
        // Wait for the entry being written so nothing touches the tree after the caller removes it.
        void (current ?? Promise.resolve()).catch(() => {}).then(() => rejectPromise(error));
      };

      extract.on('entry', (header, stream, next) => {
        // Errors reach the writer through iteration (or the length check); an 'error' event emitted before it starts
        // iterating must not go unhandled.
        stream.on('error', () => {});
        if (settled) return;
        current = this.#entry(header, stream).then(
          () => {
            current = undefined;
            if (!settled) next();
          },
          (error: unknown) => {
            current = undefined;
            fail(error instanceof AegisError ? error : ioError('cannot write a bundle entry', error));
          },
        );
      });
      extract.on('error', (error: Error) => fail(tarError(error)));
      extract.on('finish', () => {
        if (settled) return;
        try {
          this.#finish();
        } catch (error) {
          fail(error as AegisError);
          return;
        }
        settled = true;
        resolvePromise({ files: this.#files, unpackedBytes: this.#writtenBytes });
      });

      gunzip.on('data', (chunk: Buffer) => {
        if (settled) return;
        this.#inflatedBytes += chunk.byteLength;
        const overhead = this.#inflatedBytes - this.#declaredBytes;
        const allowance = OVERHEAD_BYTES_PER_ENTRY * (this.#archiveEntries + 1) + OVERHEAD_SLACK_BYTES;
        if (overhead > allowance) {
          fail(
            new AegisError(
              'PAYLOAD_TOO_LARGE',
              `the bundle inflates to far more than its files: ${formatBytes(overhead)} of tar data beyond ` +
                `the contents of its ${this.#archiveEntries} entries (allowed: ${formatBytes(allowance)})`,
              { details: { inflatedBytes: this.#inflatedBytes, capBytes: allowance }, hint: REPACK_HINT },
            ),
          );
          return;
        }
        if (!extract.write(chunk)) gunzip.pause();
      });
      extract.on('drain', () => gunzip.resume());
      gunzip.on('end', () => {
        if (!settled) extract.end(undefined);
      });
      gunzip.on('error', (error: NodeJS.ErrnoException) => {
        const truncated = error.code === 'Z_BUF_ERROR';
        fail(
          new AegisError(
            'USAGE',
            truncated
              ? 'the bundle is truncated (the gzip stream ends early)'
              : `the bundle is not valid gzip: ${error.message}`,
            { cause: error, details: { inflatedBytes: this.#inflatedBytes }, hint: REPACK_HINT },
          ),
        );
      });

      gunzip.end(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    });
  }

  /** After the last entry: the archive must end properly and hold agent.yaml. */
  #finish(): void {
    if (this.#inflatedBytes - this.#lastEntryEnd < END_OF_ARCHIVE_BYTES) {
      throw new AegisError('USAGE', 'the bundle is truncated: its tar archive has no end-of-archive marker', {
        details: { inflatedBytes: this.#inflatedBytes },
        hint: REPACK_HINT,
      });
    }
    const manifest = this.#kinds.get('agent.yaml');
    if (manifest === undefined) {
      throw new AegisError('USAGE', 'the bundle has no agent.yaml at its root', {
        hint: 'pack the agent directory itself — the one that holds agent.yaml — not its parent',
      });
    }
    if (manifest !== 'file') {
      throw entryError('agent.yaml', 'agent.yaml must be a regular file, not a directory');
    }
  }

  async #entry(header: tar.Header, stream: AsyncIterable<unknown>): Promise<void> {
    const limits = this.#limits;
    const raw = header.name;
    this.#archiveEntries++;
    if (this.#archiveEntries > limits.maxEntries) throw this.#tooManyEntries(raw);

    const type = header.type;
    if (type !== 'file' && type !== 'directory') {
      const what = (type && TYPE_NAMES[type]) ?? `of unsupported type ${JSON.stringify(type ?? null)}`;
      const target = header.linkname ? ` (to ${showEntry(header.linkname)})` : '';
      throw entryError(
        raw,
        `is ${what}${target}; bundles hold only regular files and directories`,
        type === 'link' || type === 'symlink'
          ? 'replace the link with a copy of its target before packing'
          : REPACK_HINT,
      );
    }
    const size = header.size ?? 0;
    const offset = (header as { byteOffset?: number }).byteOffset;
    if (typeof offset === 'number') this.#lastEntryEnd = offset + Math.ceil(size / BLOCK) * BLOCK;

    const path = this.#canonical(raw, type);
    if (path === '.') {
      if (this.#sawRootEntry) throw entryError(raw, 'appears more than once (duplicate entry)');
      this.#sawRootEntry = true;
      if (size !== 0) throw entryError(raw, 'a directory entry must not carry data');
      return;
    }
    const existing = this.#kinds.get(path);
    if (existing !== undefined && !(existing === 'implicit-dir' && type === 'directory')) {
      throw entryError(raw, `appears more than once (duplicate of ${showEntry(path)})`);
    }
    await this.#parents(raw, path);

    if (type === 'directory') {
      if (size !== 0) throw entryError(raw, 'a directory entry must not carry data');
      if (existing === undefined) await this.#mkdir(raw, path);
      this.#kinds.set(path, 'dir');
      return;
    }

    if (size > limits.maxFileBytes) {
      throw new AegisError(
        'PAYLOAD_TOO_LARGE',
        `bundle entry ${showEntry(raw)} is ${formatBytes(size)}; files are capped at ${formatBytes(limits.maxFileBytes)}`,
        {
          details: {
            entry: raw,
            sizeBytes: size,
            capBytes: limits.maxFileBytes,
            inflatedBytes: this.#inflatedBytes,
          },
        },
      );
    }
    if (this.#declaredBytes + size > limits.maxUnpackedBytes) {
      throw new AegisError(
        'PAYLOAD_TOO_LARGE',
        `the bundle unpacks to more than ${formatBytes(limits.maxUnpackedBytes)} (the cap), reached at entry ${showEntry(raw)}`,
        { details: { entry: raw, capBytes: limits.maxUnpackedBytes, inflatedBytes: this.#inflatedBytes } },
      );
    }
    this.#declaredBytes += size;
    this.#countDiskEntry(raw);
    this.#kinds.set(path, 'file');
    await this.#writeFile(raw, path, size, fileMode(header.mode), stream);
    this.#files++;
  }

  /** The entry's path without `./` prefix or trailing `/`; `.` for the root entry. Throws USAGE for a bad name. */
  #canonical(raw: string, type: 'file' | 'directory'): string {
    if (Buffer.byteLength(raw) > MAX_PATH_BYTES + 3) {
      throw entryError(raw, `the path is longer than ${MAX_PATH_BYTES} bytes`);
    }
    if (raw.startsWith('/')) throw entryError(raw, 'the path is absolute');
    let path = raw;
    if (path.endsWith('/')) {
      if (type !== 'directory') throw entryError(raw, 'a file entry must not end with "/"');
      path = path.slice(0, -1);
    }
    if (path === '.' || path === '') {
      if (type !== 'directory') throw entryError(raw, 'the archive root must be a directory');
      return '.';
    }
    if (path.startsWith('./')) path = path.slice(2);
    const problem = pathProblem(path);
    if (problem) throw entryError(raw, problem);
    return path;
  }

  /** Creates the directories above `path` that the archive has not created yet; refuses a file as a parent. */
  async #parents(raw: string, path: string): Promise<void> {
    const segments = path.split('/');
    for (let i = 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join('/');
      const kind = this.#kinds.get(parent);
      if (kind === 'file') throw entryError(raw, `its parent ${showEntry(parent)} is a file`);
      if (kind !== undefined) continue;
      await this.#mkdir(raw, parent);
      this.#kinds.set(parent, 'implicit-dir');
    }
  }

  async #mkdir(raw: string, path: string): Promise<void> {
    this.#countDiskEntry(raw);
    const absolute = join(this.#root, path);
    await mkdir(absolute, { mode: DIR_MODE });
    await chmod(absolute, DIR_MODE);
    this.#dirs.push(absolute);
  }

  #countDiskEntry(raw: string): void {
    this.#diskEntries++;
    if (this.#diskEntries > this.#limits.maxEntries) throw this.#tooManyEntries(raw);
  }

  #tooManyEntries(raw: string): AegisError {
    return new AegisError(
      'PAYLOAD_TOO_LARGE',
      `the bundle has more than ${this.#limits.maxEntries} entries (files and directories; the cap), at entry ${showEntry(raw)}`,
      {
        details: { entry: raw, cap: this.#limits.maxEntries },
        hint: 'leave build outputs, data and caches out with .aegisignore',
      },
    );
  }

  async #writeFile(
    raw: string,
    path: string,
    size: number,
    mode: number,
    stream: AsyncIterable<unknown>,
  ): Promise<void> {
    const absolute = join(this.#root, path);
    const handle = await open(
      absolute,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      mode,
    );
    try {
      await handle.chmod(mode);
      let written = 0;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        written += chunk.byteLength;
        if (written > size) throw entryError(raw, 'holds more data than its header declares');
        await writeAll(handle, chunk, written - chunk.byteLength);
      }
      if (written !== size) {
        throw new AegisError('USAGE', `the bundle is truncated inside entry ${showEntry(raw)}`, {
          details: { entry: raw },
          hint: REPACK_HINT,
        });
      }
      this.#writtenBytes += written;
      this.#filePaths.push(absolute);
    } finally {
      await handle.close();
    }
  }

  /**
   * fsyncs every file, then every directory, so the tree is on disk before it is renamed into place (a crash must
   * not leave empty files under a digest). Many at a time: the filesystem commits concurrent syncs together.
   */
  async sync(): Promise<void> {
    await forEachConcurrently(this.#filePaths, SYNC_CONCURRENCY, (path) =>
      syncPath(path, constants.O_RDONLY),
    );
    await forEachConcurrently(this.#dirs, SYNC_CONCURRENCY, syncDirectory);
  }
}

async function writeAll(handle: FileHandle, chunk: Buffer, position: number): Promise<void> {
  let offset = 0;
  while (offset < chunk.byteLength) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.byteLength - offset, position + offset);
    offset += bytesWritten;
  }
}

function syncDirectory(dir: string): Promise<void> {
  return syncPath(dir, constants.O_RDONLY | constants.O_DIRECTORY);
}

async function syncPath(path: string, flags: number): Promise<void> {
  const handle = await open(path, flags | constants.O_NOFOLLOW);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function forEachConcurrently<T>(
  items: readonly T[],
  concurrency: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

function tarError(error: Error): AegisError {
  if (error instanceof AegisError) return error;
  const message = error.message;
  if (/unexpected end of data/i.test(message)) {
    return new AegisError('USAGE', 'the bundle is truncated: its tar archive ends inside an entry', {
      cause: error,
      hint: REPACK_HINT,
    });
  }
  return new AegisError('USAGE', `the bundle is not a valid tar archive: ${message}`, {
    cause: error,
    hint: REPACK_HINT,
  });
}
