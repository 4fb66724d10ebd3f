/**
 * What a bundle may contain — shared by the packer (the client learns before uploading) and the unpacker (the
 * server refuses whatever breaks a rule): the size caps, the entry path rules and the only two file modes.
 * See docs/adr/0010-agent-bundles.md.
 */
import { createHash } from 'node:crypto';
import type { BundleLimits } from '../../app/ports.ts';
import { AegisError } from '../../domain/errors.ts';

const MiB = 1024 * 1024;

/** The caps documented on the `BundleLimits` port. */
export const DEFAULT_BUNDLE_LIMITS: BundleLimits = Object.freeze({
  maxBundleBytes: 64 * MiB,
  maxUnpackedBytes: 256 * MiB,
  maxFileBytes: 64 * MiB,
  maxEntries: 10_000,
});

/** Longest path segment, in UTF-8 bytes (Linux NAME_MAX). */
export const MAX_SEGMENT_BYTES = 255;
/** Longest entry path, in UTF-8 bytes (Linux PATH_MAX). */
export const MAX_PATH_BYTES = 4096;

/** The defaults overlaid with `partial` (undefined fields keep their default); each cap a positive integer. */
export function bundleLimits(partial: Partial<BundleLimits> = {}): BundleLimits {
  const limits = { ...DEFAULT_BUNDLE_LIMITS };
  for (const key of Object.keys(DEFAULT_BUNDLE_LIMITS) as (keyof BundleLimits)[]) {
    const value = partial[key];
    if (value === undefined) continue;
    if (!Number.isSafeInteger(value) || value <= 0) {
      throw new AegisError('USAGE', `bundle limit ${key} must be a positive integer, got ${String(value)}`);
    }
    limits[key] = value;
  }
  return Object.freeze(limits);
}

/** Lowercase hex SHA-256: a bundle's content address. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** `64 MiB`, `1.5 KiB`, `12 bytes` — for messages. */
export { formatBytes } from '../../domain/units.ts';

/** An entry name as shown in messages: quoted, control characters escaped, very long names cut. */
export function showEntry(name: string): string {
  const shown = JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name);
  // JSON.stringify leaves C1 controls and the bidi overrides as they are; escape them too.
  return shown.replace(
    /[\u0080-\u009f\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

// C0 and C1 controls, DEL; the replacement character stands for bytes that were not UTF-8.
const FORBIDDEN_CHARACTER = /[\u0000-\u001f\u007f-\u009f\ufffd]/;

/**
 * Why `path` (relative, `/`-separated, no trailing `/`, no `./` prefix) cannot name a bundle entry, or undefined
 * when it can: no absolute path, no empty, `.` or `..` segment, no backslash, NUL, control character or invalid
 * UTF-8, at most 255 bytes per segment and 4096 in all.
 */
export function pathProblem(path: string): string | undefined {
  if (path === '') return 'the path is empty';
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) return `the path is longer than ${MAX_PATH_BYTES} bytes`;
  if (path.startsWith('/')) return 'the path is absolute';
  if (path.includes('\\')) return 'the path contains a backslash';
  if (path.includes('\u0000')) return 'the path contains a NUL byte';
  if (path.includes('\ufffd')) return 'the path is not valid UTF-8';
  if (FORBIDDEN_CHARACTER.test(path)) return 'the path contains a control character';
  for (const segment of path.split('/')) {
    if (segment === '..') return 'the path has a ".." segment';
    if (segment === '' || segment === '.') return 'the path has an empty or "." segment';
    if (Buffer.byteLength(segment) > MAX_SEGMENT_BYTES) {
      return `a path segment is longer than ${MAX_SEGMENT_BYTES} bytes`;
    }
  }
  return undefined;
}

/** The only file modes a bundle yields: 0755 when any execute bit is set, else 0644. Never setuid/setgid/sticky. */
export function fileMode(mode: number | undefined): 0o644 | 0o755 {
  return mode !== undefined && (mode & 0o111) !== 0 ? 0o755 : 0o644;
}

/** Directories are always 0755: the sandbox user (neither owner nor group) must be able to list and enter them. */
export const DIR_MODE = 0o755;
