/**
 * Unpacks image layers (tar, tar+gzip) into a root directory AEGIS owns, treating every entry as hostile input:
 *   - names are normalised; an absolute name or one with a `..` component is refused;
 *   - nothing is ever followed: every parent component is checked with lstat (a symlink there is refused — it is
 *     how an archive writes through a link it planted to a place outside the root), files are created with
 *     O_CREAT|O_EXCL|O_NOFOLLOW after whatever was at the path is removed (rm removes a link, never its target);
 *   - a hard link must name a regular file inside the root, reached the same way (no absolute or `..` target);
 *   - setuid/setgid and group/other write bits are dropped, device nodes and fifos are left out, everything is
 *     owned by the unpacking user (root): the tree is read-only for the agent's uid;
 *   - OCI whiteouts: `.wh.<name>` removes `<name>` of the lower layers, `.wh..wh..opq` empties its directory of
 *     what the lower layers put there;
 *   - a size and entry budget over all layers (a layer is a compression bomb too).
 * The caller unpacks into a private temporary directory and keeps it only when every digest matched (store.ts):
 * nothing here is trusted before that.
 */
import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  constants,
  createReadStream,
  createWriteStream,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { join } from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract, type Header } from 'tar-stream';
import { AegisError } from '../../../domain/errors.ts';

export interface UnpackBudget {
  /** Bytes of file content over all layers. @default 4 GiB */
  readonly maxBytes: number;
  /** Entries over all layers. @default 500 000 */
  readonly maxEntries: number;
}

export const DEFAULT_UNPACK_BUDGET: UnpackBudget = { maxBytes: 4 * 1024 ** 3, maxEntries: 500_000 };

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';
/** Dropped: setuid, setgid, group write, other write. The sticky bit stays. */
const DROPPED_MODE_BITS = 0o6022;

/** An archive entry AEGIS refuses: names the layer, the entry and what it tried. */
export function refusedEntry(what: string, entry: string, why: string): AegisError {
  return new AegisError('MANIFEST_INVALID', `image refused: ${what} entry "${entry}" ${why}`, {
    problems: [{ path: 'spec.runtime.image', message: `${what}: "${entry}" ${why}` }],
    hint: 'the image is unpacked with no-follow semantics; rebuild it without entries that leave its root',
  });
}

/** `name` as root-relative components; refused when absolute or holding `..`. */
export function entryComponents(name: string, what: string): string[] {
  if (name.startsWith('/')) throw refusedEntry(what, name, 'is an absolute path');
  const parts = name.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) throw refusedEntry(what, name, 'has a ".." component (it would leave the root)');
  return parts;
}

/** A readable that hashes what passes through it (sha256), for digests checked after the whole blob is read. */
export class HashingStream extends Transform {
  readonly #hash = createHash('sha256');
  override _transform(
    chunk: Buffer,
    _encoding: BufferEncoding,
    done: (error?: Error | null, data?: Buffer) => void,
  ) {
    this.#hash.update(chunk);
    done(null, chunk);
  }
  /** `sha256:<hex>` of everything that went through (call after the stream ended). */
  digest(): string {
    return `sha256:${this.#hash.digest('hex')}`;
  }
}

/** Unpacks layers in order into `root` (an empty directory only this process writes to). */
export class LayerUnpacker {
  readonly root: string;
  readonly #budget: UnpackBudget;
  #bytes = 0;
  #entries = 0;
  /** Entries left out (devices, fifos): reported, not fatal. */
  readonly dropped: string[] = [];

  constructor(root: string, budget: UnpackBudget = DEFAULT_UNPACK_BUDGET) {
    this.root = root;
    this.#budget = budget;
  }

  /**
   * Applies one layer read from `file` (opened once, no-follow). `gzip`: undefined sniffs the magic bytes.
   * Returns the sha256 of the file as read (the blob digest) and of the uncompressed tar (the config's
   * `rootfs.diff_ids` entry); the caller compares them and throws the tree away on a mismatch.
   */
  async apply(
    file: string,
    what: string,
    options: { whiteouts?: boolean } = {},
  ): Promise<{ digest: string; diffId: string }> {
    const whiteouts = options.whiteouts ?? true;
    const fd = openBlob(file, what);
    const head = Buffer.alloc(4);
    const headBytes = readSync(fd, head, 0, 4, 0);
    const gzip = headBytes >= 2 && head[0] === 0x1f && head[1] === 0x8b;
    if (headBytes >= 4 && head.readUInt32LE(0) === 0xfd2fb528) {
      closeSync(fd);
      throw new AegisError('MANIFEST_INVALID', `image refused: ${what} is zstd-compressed`, {
        problems: [{ path: 'spec.runtime.image', message: `${what}: zstd layers are not supported` }],
        hint: 'rebuild the image with gzip or uncompressed layers',
      });
    }
    const blob = new HashingStream();
    const plain = new HashingStream();
    const created = new Set<string>();
    const tar = extract();
    tar.on('entry', (header, stream, next) => {
      this.#entry(header, stream as unknown as Readable, what, whiteouts, created).then(
        () => next(),
        (error: unknown) => {
          stream.resume();
          tar.destroy(error as Error);
        },
      );
    });
    const input = createReadStream('', { fd, start: 0 });
    try {
      if (gzip) await pipeline(input, blob, createGunzip(), plain, tar);
      else await pipeline(input, blob, plain, tar);
    } catch (error) {
      if (error instanceof AegisError) throw error;
      throw new AegisError('MANIFEST_INVALID', `image refused: ${what} is not a readable tar archive`, {
        problems: [{ path: 'spec.runtime.image', message: `${what}: ${(error as Error).message}` }],
        cause: error,
      });
    }
    return { digest: blob.digest(), diffId: plain.digest() };
  }

  async #entry(
    header: Header,
    stream: Readable,
    what: string,
    whiteouts: boolean,
    created: Set<string>,
  ): Promise<void> {
    const parts = entryComponents(header.name, what);
    if (parts.length === 0) {
      stream.resume(); // the root itself: its mode is AEGIS's
      return;
    }
    if (++this.#entries > this.#budget.maxEntries) {
      throw new AegisError(
        'MANIFEST_INVALID',
        `image refused: more than ${this.#budget.maxEntries} entries`,
        {
          problems: [{ path: 'spec.runtime.image', message: 'too many entries' }],
        },
      );
    }
    const base = parts.at(-1)!;
    const parentParts = parts.slice(0, -1);
    const parent = this.#parentDir(parentParts, header.name, what);
    const rel = parts.join('/');
    if (whiteouts && base.startsWith(WHITEOUT)) {
      stream.resume();
      if (base === OPAQUE) {
        const prefix = parentParts.join('/');
        for (const child of readdirSync(parent)) {
          if (!created.has(prefix === '' ? child : `${prefix}/${child}`))
            rmSync(join(parent, child), { recursive: true, force: true });
        }
        return;
      }
      const hidden = base.slice(WHITEOUT.length);
      if (hidden === '' || hidden === '.' || hidden === '..')
        throw refusedEntry(what, header.name, 'is a whiteout of nothing');
      rmSync(join(parent, hidden), { recursive: true, force: true });
      return;
    }
    const path = join(parent, base);
    const mode = (header.mode ?? 0o644) & 0o7777 & ~DROPPED_MODE_BITS;
    created.add(rel);
    switch (header.type) {
      case 'directory': {
        stream.resume();
        const existing = lstatOr(path);
        if (existing?.isDirectory()) chmodSync(path, mode);
        else {
          if (existing) rmSync(path, { recursive: true, force: true });
          mkdirSync(path, { mode });
          chmodSync(path, mode); // past the umask
        }
        return;
      }
      case 'file':
      case 'contiguous-file': {
        const size = header.size ?? 0;
        this.#bytes += size;
        if (this.#bytes > this.#budget.maxBytes) {
          throw new AegisError(
            'MANIFEST_INVALID',
            `image refused: more than ${this.#budget.maxBytes} bytes of files once unpacked`,
            { problems: [{ path: 'spec.runtime.image', message: 'the unpacked image is too large' }] },
          );
        }
        rmSync(path, { recursive: true, force: true });
        const fd = openSync(
          path,
          constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
          0o600,
        );
        try {
          await pipeline(stream, createWriteStream('', { fd, autoClose: false }));
          chmodSync(path, mode);
        } finally {
          closeSync(fd);
        }
        return;
      }
      case 'symlink': {
        stream.resume();
        rmSync(path, { recursive: true, force: true });
        // The target is only text: it is resolved inside the container, never by this process.
        symlinkSync(header.linkname ?? '', path);
        return;
      }
      case 'link': {
        stream.resume();
        const linkname = header.linkname ?? '';
        if (linkname.startsWith('/'))
          throw refusedEntry(what, header.name, `is a hard link to the absolute path ${linkname}`);
        const targetParts = entryComponents(linkname, what);
        if (targetParts.length === 0) throw refusedEntry(what, header.name, 'is a hard link to the root');
        const targetParent = this.#parentDir(targetParts.slice(0, -1), linkname, what, false);
        const target = join(targetParent, targetParts.at(-1)!);
        const st = lstatOr(target);
        if (!st?.isFile())
          throw refusedEntry(
            what,
            header.name,
            `is a hard link to ${linkname}, which is not a file of the image`,
          );
        rmSync(path, { recursive: true, force: true });
        linkSync(target, path);
        return;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo':
        stream.resume();
        created.delete(rel);
        this.dropped.push(rel);
        return;
      default:
        // pax and GNU long-name headers are folded into the next entry by tar-stream; anything else is metadata.
        stream.resume();
        created.delete(rel);
        return;
    }
  }

  /** The directory holding an entry: every component a real directory (made when missing), never a link. */
  #parentDir(parts: readonly string[], entry: string, what: string, create = true): string {
    let dir = this.root;
    for (const part of parts) {
      dir = join(dir, part);
      const st = lstatOr(dir);
      if (st === undefined && create) {
        mkdirSync(dir, { mode: 0o755 });
        continue;
      }
      if (st?.isSymbolicLink())
        throw refusedEntry(
          what,
          entry,
          `goes through the symlink ${parts.slice(0, parts.indexOf(part) + 1).join('/')}`,
        );
      if (!st?.isDirectory())
        throw refusedEntry(what, entry, `goes through ${part}, which is not a directory`);
    }
    return dir;
  }
}

/** Opens a blob read-only without following a final symlink (a layout's blob is a file, not a link). */
export function openBlob(file: string, what: string): number {
  try {
    return openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    throw new AegisError(
      'MANIFEST_INVALID',
      `image refused: cannot open ${what} (${(error as Error).message})`,
      {
        problems: [{ path: 'spec.runtime.image', message: `${what}: missing or a symlink` }],
        cause: error,
      },
    );
  }
}

function lstatOr(path: string): ReturnType<typeof lstatSync> | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}
