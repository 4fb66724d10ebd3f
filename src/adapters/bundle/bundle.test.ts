import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmod,
  cp,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, describe, it } from 'node:test';
import { createGzip, gunzipSync, gzipSync } from 'node:zlib';
import * as tar from 'tar-stream';
import type { BundleLimits } from '../../app/ports.ts';
import { AegisError, type ErrorCode, formatProblemLocation } from '../../domain/errors.ts';
import { DEFAULT_BUNDLE_LIMITS, DirAgentBundles } from './agent-bundles.ts';
import { packAgentDir } from './pack.ts';
import { bundleLimits } from './rules.ts';
import { unpackBundle } from './unpack.ts';

const EXAMPLE = join(import.meta.dirname, '../../../examples/email-summarizer');
const MiB = 1024 * 1024;

const AGENT_YAML = `apiVersion: aegis.dev/v1
kind: Agent
metadata:
  name: demo
  version: 1.0.0
spec:
  runtime:
    language: python
    entrypoint: main.py
`;

// ---------------------------------------------------------------------------------------------------------------
// Helpers

const scratchDirs: string[] = [];
after(async () => {
  for (const dir of scratchDirs) await rm(dir, { recursive: true, force: true });
});

async function scratch(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'aegis-bundle-test-'));
  scratchDirs.push(dir);
  return dir;
}

type EntryHeader = Partial<tar.Header> & { name: string };
interface Entry {
  readonly header: EntryHeader;
  readonly body?: string | Buffer;
}

const file = (name: string, body: string | Buffer = 'x', mode?: number): Entry => ({
  header: { name, type: 'file', ...(mode === undefined ? {} : { mode }) },
  body,
});
const dir = (name: string, mode?: number): Entry => ({
  header: { name, type: 'directory', ...(mode === undefined ? {} : { mode }) },
});
const manifest = file('agent.yaml', AGENT_YAML);

/** An uncompressed tar of `entries`, exactly as given (tar-stream writes hostile names verbatim). */
async function rawTar(entries: readonly Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    pack.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
    pack.on('end', () => resolve());
    pack.on('error', reject);
  });
  for (const { header, body } of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (error?: Error | null) => (error ? reject(error) : resolve());
      if (body === undefined) pack.entry({ mtime: new Date(0), ...header }, cb);
      else pack.entry({ mtime: new Date(0), ...header }, body, cb);
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

async function tarGz(entries: readonly Entry[]): Promise<Buffer> {
  return gzipSync(await rawTar(entries));
}

/** Rewrites bytes of the header block at `offset` and fixes its checksum. */
function patchHeader(archive: Buffer, offset: number, at: number, bytes: Buffer): Buffer {
  const out = Buffer.from(archive);
  bytes.copy(out, offset + at);
  out.fill(0x20, offset + 148, offset + 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += out[offset + i]!;
  out.write(`${sum.toString(8).padStart(6, '0')}\0 `, offset + 148, 'latin1');
  return out;
}

async function rejects(promise: Promise<unknown>, code: ErrorCode, message: RegExp): Promise<AegisError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof AegisError, `expected an AegisError, got ${String(error)}`);
    assert.equal(error.code, code, `${error.code}: ${error.message}`);
    assert.match(error.message, message);
    return error;
  }
  assert.fail(`expected a ${code} rejection`);
}

/** Unpacks into a fresh parent and asserts the failure left nothing there — no temp dir, no destination. */
async function rejectsCleanly(
  bytes: Uint8Array,
  code: ErrorCode,
  message: RegExp,
  limits: Partial<BundleLimits> = {},
): Promise<AegisError> {
  const parent = await scratch();
  const error = await rejects(
    unpackBundle(bytes, join(parent, 'agent'), bundleLimits(limits)),
    code,
    message,
  );
  assert.deepEqual(await readdir(parent), [], 'a failed unpack must leave nothing behind');
  return error;
}

/** Relative path → content (files) or null (directories), recursively. */
async function tree(root: string): Promise<Map<string, Buffer | null>> {
  const out = new Map<string, Buffer | null>();
  const walk = async (dirPath: string) => {
    for (const entry of await readdir(dirPath, { withFileTypes: true })) {
      const path = join(dirPath, entry.name);
      if (entry.isDirectory()) {
        out.set(relative(root, path), null);
        await walk(path);
      } else {
        out.set(relative(root, path), await readFile(path));
      }
    }
  };
  await walk(root);
  return out;
}

async function listEntries(bytes: Uint8Array): Promise<tar.Header[]> {
  const extract = tar.extract();
  const headers: tar.Header[] = [];
  extract.end(gunzipSync(bytes));
  for await (const entry of extract) {
    headers.push(entry.header);
    for await (const _ of entry) {
      // drain
    }
  }
  return headers;
}

async function writeTree(root: string, files: Record<string, string>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(root, path, '..'), { recursive: true });
    await writeFile(join(root, path), content);
  }
}

const mode = async (path: string) => (await lstat(path)).mode & 0o7777;

// ---------------------------------------------------------------------------------------------------------------

describe('packAgentDir', () => {
  it('round trip: pack → unpack gives the same files and bytes', async () => {
    const source = await tree(EXAMPLE);
    const files = [...source.values()].filter((content) => content !== null).length;
    const packed = await packAgentDir(EXAMPLE);
    assert.match(packed.digest, /^[0-9a-f]{64}$/);
    assert.equal(packed.files, files);
    const dest = join(await scratch(), 'agent');
    const result = await unpackBundle(packed.bytes, dest, DEFAULT_BUNDLE_LIMITS);
    assert.deepEqual(await tree(dest), source);
    assert.equal(result.files, files);
    assert.equal(
      result.unpackedBytes,
      [...source.values()].reduce((sum, content) => sum + (content?.byteLength ?? 0), 0),
    );
  });

  it('is deterministic: same files → same digest, whatever the mtimes', async () => {
    const copy = join(await scratch(), 'agent');
    await cp(EXAMPLE, copy, { recursive: true });
    const first = await packAgentDir(copy);
    await utimes(join(copy, 'main.py'), new Date(2001, 1, 1), new Date(2001, 1, 1));
    const second = await packAgentDir(copy);
    assert.equal(second.digest, first.digest);
    assert.deepEqual(second.bytes, first.bytes);
    assert.equal(first.digest, (await packAgentDir(EXAMPLE)).digest);
  });

  it('writes sorted entries with fixed metadata: mtime 0, uid/gid 0, no names, 0644/0755', async () => {
    const root = await scratch();
    await writeTree(root, {
      'agent.yaml': AGENT_YAML,
      'main.py': 'print(1)',
      'lib/b.py': '',
      'lib/a.py': '',
      'z-b': '',
    });
    await chmod(join(root, 'main.py'), 0o744);
    await chmod(join(root, 'lib/a.py'), 0o4640);
    const headers = await listEntries((await packAgentDir(root)).bytes);
    assert.deepEqual(
      headers.map((h) => [h.name, h.type, h.mode.toString(8)]),
      [
        ['agent.yaml', 'file', '644'],
        ['lib/', 'directory', '755'],
        ['lib/a.py', 'file', '644'],
        ['lib/b.py', 'file', '644'],
        ['main.py', 'file', '755'],
        ['z-b', 'file', '644'],
      ],
    );
    for (const h of headers) {
      assert.equal(h.mtime.getTime(), 0);
      assert.equal(h.uid, 0);
      assert.equal(h.gid, 0);
      assert.equal(h.uname, '');
      assert.equal(h.gname, '');
    }
  });

  it('.aegisignore: comments, *, **, ?, anchors, dir-only, negation; .git and node_modules/.cache always', async () => {
    const root = await scratch();
    await writeTree(root, {
      'agent.yaml': AGENT_YAML,
      '.aegisignore': [
        '# build noise',
        '',
        '*.log',
        '!keep.log',
        'build/',
        '!build/wanted.txt',
        '/secret.txt',
        'docs/**/draft.md',
        '?.tmp',
        'data/**',
        '!.git/',
        '  ',
      ].join('\n'),
      'a.log': '',
      'keep.log': '',
      'sub/b.log': '',
      'sub/keep.log': '',
      'build/out.bin': '',
      'build/wanted.txt': '',
      'sub/build': 'a file, not a directory',
      'secret.txt': '',
      'sub/secret.txt': '',
      'docs/draft.md': '',
      'docs/a/b/draft.md': '',
      'docs/readme.md': '',
      'x.tmp': '',
      'xy.tmp': '',
      'data/big.csv': '',
      '.git/config': '',
      'node_modules/.cache/x': '',
      'node_modules/pkg/index.js': '',
      'sub/node_modules/.cache/y': '',
    });
    const names = (await listEntries((await packAgentDir(root)).bytes)).map((h) => h.name);
    assert.deepEqual(names, [
      '.aegisignore',
      'agent.yaml',
      'data/',
      'docs/',
      'docs/a/',
      'docs/a/b/',
      'docs/readme.md',
      'keep.log',
      'node_modules/',
      'node_modules/pkg/',
      'node_modules/pkg/index.js',
      'sub/',
      'sub/build',
      'sub/keep.log',
      'sub/node_modules/',
      'sub/secret.txt',
      'xy.tmp',
    ]);
  });

  it('refuses a symbolic link, naming it, until .aegisignore lists it', async () => {
    const root = await scratch();
    await writeTree(root, { 'agent.yaml': AGENT_YAML });
    await mkdir(join(root, 'lib'));
    await symlink('/etc/passwd', join(root, 'lib/passwd'));
    const error = await rejects(packAgentDir(root), 'USAGE', /lib\/passwd is a symbolic link/);
    assert.match(error.hint ?? '', /\.aegisignore.*copy/);
    await writeFile(join(root, '.aegisignore'), 'lib/passwd\n');
    assert.equal((await packAgentDir(root)).files, 2);
  });

  it('refuses a FIFO', async () => {
    const root = await scratch();
    await writeTree(root, { 'agent.yaml': AGENT_YAML });
    execFileSync('mkfifo', [join(root, 'pipe')]);
    const error = await rejects(packAgentDir(root), 'USAGE', /pipe is a FIFO/);
    assert.match(error.hint ?? '', /\.aegisignore/);
  });

  it('refuses an .aegisignore that leaves out agent.yaml', async () => {
    const root = await scratch();
    await writeTree(root, { 'agent.yaml': AGENT_YAML, '.aegisignore': '*.yaml\n' });
    await rejects(packAgentDir(root), 'USAGE', /leaves out agent\.yaml/);
  });

  it('needs agent.yaml at the root', async () => {
    const root = await scratch();
    await writeTree(root, { 'sub/agent.yaml': AGENT_YAML });
    const error = await rejects(packAgentDir(root), 'NOT_FOUND', /no agent\.yaml in/);
    assert.match(error.hint ?? '', /agent directory/);
  });

  it('enforces the caps before uploading, naming the file and the cap', async () => {
    const root = await scratch();
    await writeTree(root, { 'agent.yaml': AGENT_YAML, 'model.bin': 'x'.repeat(5000) });
    const error = await rejects(
      packAgentDir(root, { limits: { maxFileBytes: 4096 } }),
      'PAYLOAD_TOO_LARGE',
      /model\.bin is 4\.9 KiB; files in a bundle are capped at 4 KiB/,
    );
    assert.equal(error.details['capBytes'], 4096);
    await rejects(
      packAgentDir(root, { limits: { maxEntries: 1 } }),
      'PAYLOAD_TOO_LARGE',
      /more than 1 files/,
    );
    await rejects(
      packAgentDir(root, { limits: { maxUnpackedBytes: 5000 } }),
      'PAYLOAD_TOO_LARGE',
      /more than 4\.9 KiB of files/,
    );
    await rejects(
      packAgentDir(root, { limits: { maxBundleBytes: 64 } }),
      'PAYLOAD_TOO_LARGE',
      /compressed; bundles are capped at 64 bytes/,
    );
  });
});

describe('unpackBundle: accepted archives', () => {
  it('takes a GNU tar archive with ./ prefixes', async () => {
    const archive = join(await scratch(), 'bundle.tgz');
    execFileSync('tar', ['-C', EXAMPLE, '-czf', archive, '.']);
    const dest = join(await scratch(), 'agent');
    await unpackBundle(await readFile(archive), dest, DEFAULT_BUNDLE_LIMITS);
    assert.deepEqual(await tree(dest), await tree(EXAMPLE));
  });

  it('takes large files, long paths (pax) and non-ASCII names: the bomb guard does not misfire', async () => {
    const long = `${'d'.repeat(200)}/${'e'.repeat(250)}/${'f'.repeat(250)}.txt`;
    const entries = [
      manifest,
      file('zeros.bin', Buffer.alloc(40 * MiB)),
      file('random.bin', randomBytes(3 * MiB)),
      file(long, 'deep'),
      file('données/résumé.txt', 'é'),
      ...Array.from({ length: 300 }, (_, i) => file(`many/${i}.txt`, String(i))),
    ];
    const dest = join(await scratch(), 'agent');
    const result = await unpackBundle(await tarGz(entries), dest, DEFAULT_BUNDLE_LIMITS);
    assert.equal(result.files, entries.length);
    assert.equal((await stat(join(dest, 'zeros.bin'))).size, 40 * MiB);
    assert.equal(await readFile(join(dest, long), 'utf8'), 'deep');
    assert.equal(await readFile(join(dest, 'données/résumé.txt'), 'utf8'), 'é');
  });

  it('sets 0644/0755 whatever the tar modes and umask say; no setuid, setgid or sticky bit survives', async () => {
    const bytes = await tarGz([
      manifest,
      dir('bin/', 0o1777),
      file('bin/run', '#!/bin/sh', 0o4755),
      file('bin/lib.sh', '', 0o2644),
      file('bin/group-exec', '', 0o6710),
      file('deep/er/file', '', 0o600),
    ]);
    const dest = join(await scratch(), 'agent');
    const umask = process.umask(0o077);
    try {
      await unpackBundle(bytes, dest, DEFAULT_BUNDLE_LIMITS);
    } finally {
      process.umask(umask);
    }
    assert.equal(await mode(dest), 0o755);
    assert.equal(await mode(join(dest, 'agent.yaml')), 0o644);
    assert.equal(await mode(join(dest, 'bin')), 0o755);
    assert.equal(await mode(join(dest, 'bin/run')), 0o755);
    assert.equal(await mode(join(dest, 'bin/lib.sh')), 0o644);
    assert.equal(await mode(join(dest, 'bin/group-exec')), 0o755);
    assert.equal(await mode(join(dest, 'deep')), 0o755);
    assert.equal(await mode(join(dest, 'deep/er')), 0o755);
    assert.equal(await mode(join(dest, 'deep/er/file')), 0o644);
  });

  it('a second unpack into an existing destination (a lost race) succeeds and leaves one tree', async () => {
    const bytes = await tarGz([manifest, file('main.py', 'print(1)')]);
    const parent = await scratch();
    const dest = join(parent, 'agent');
    await Promise.all([
      unpackBundle(bytes, dest, DEFAULT_BUNDLE_LIMITS),
      unpackBundle(bytes, dest, DEFAULT_BUNDLE_LIMITS),
    ]);
    await unpackBundle(bytes, dest, DEFAULT_BUNDLE_LIMITS);
    assert.deepEqual(await readdir(parent), ['agent']);
    assert.deepEqual((await readdir(dest)).sort(), ['agent.yaml', 'main.py']);
  });
});

describe('unpackBundle: hostile and broken bundles are refused and leave nothing behind', () => {
  it('not gzip: random bytes', async () => {
    await rejectsCleanly(randomBytes(4096), 'USAGE', /not a gzip file/);
    await rejectsCleanly(new Uint8Array(0), 'USAGE', /not a gzip file/);
  });

  it('gzip magic followed by garbage', async () => {
    const bytes = Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]), randomBytes(4096)]);
    await rejectsCleanly(bytes, 'USAGE', /not valid gzip/);
  });

  it('gzip of something that is not a tar archive', async () => {
    await rejectsCleanly(gzipSync(randomBytes(8192)), 'USAGE', /not a valid tar archive/);
    await rejectsCleanly(gzipSync(Buffer.from(AGENT_YAML)), 'USAGE', /not a valid tar archive|truncated/);
  });

  it('truncated gzip stream', async () => {
    const bytes = await tarGz([manifest, file('main.py', randomBytes(20_000))]);
    await rejectsCleanly(bytes.subarray(0, bytes.byteLength - 100), 'USAGE', /truncated/);
  });

  it('tar archive cut inside an entry, and one without its end-of-archive marker', async () => {
    const archive = await rawTar([manifest, file('main.py', randomBytes(20_000))]);
    await rejectsCleanly(
      gzipSync(archive.subarray(0, 6000)),
      'USAGE',
      /truncated: its tar archive ends inside/,
    );
    await rejectsCleanly(
      gzipSync(archive.subarray(0, archive.byteLength - 1024)),
      'USAGE',
      /truncated: its tar archive has no end-of-archive marker/,
    );
  });

  const pathCases: [string, Entry, RegExp][] = [
    ['../x', file('../x'), /"\.\.\/x": the path has a "\.\." segment/],
    ['a/../../x', file('a/../../x'), /"a\/\.\.\/\.\.\/x": the path has a "\.\." segment/],
    ['a/..', dir('a/../'), /the path has a "\.\." segment/],
    ['/etc/passwd', file('/etc/passwd'), /"\/etc\/passwd": the path is absolute/],
    ['backslash', file('a\\..\\x'), /backslash/],
    ['control character', file('a\u0001b'), /"a\\u0001b": the path contains a control character/],
    ['escape character', file('a\u001b[31mb'), /control character/],
    [
      'NUL (through a pax path)',
      { header: { name: 'x', type: 'file', pax: { path: 'a\u0000b' } }, body: 'x' },
      /NUL/,
    ],
    ['empty segment', file('a//b'), /empty or "\." segment/],
    ['"." segment', file('a/./b'), /empty or "\." segment/],
    ['segment over 255 bytes', file(`${'s'.repeat(256)}`), /segment is longer than 255 bytes/],
    ['path over 4096 bytes', file(`${'abcdefg/'.repeat(520)}x`), /longer than 4096 bytes/],
  ];
  for (const [label, entry, message] of pathCases) {
    it(`path: ${label}`, async () => {
      const error = await rejectsCleanly(await tarGz([manifest, entry]), 'USAGE', message);
      assert.ok(error.hint, 'every refusal says what to do');
      assert.equal(typeof error.details['entry'], 'string');
    });
  }

  it('path: invalid UTF-8', async () => {
    const archive = await rawTar([manifest, file('abc')]);
    const offset = archive.indexOf('abc\0');
    const bytes = gzipSync(
      patchHeader(archive, offset - (offset % 512), offset % 512, Buffer.from([0xff, 0xfe])),
    );
    await rejectsCleanly(bytes, 'USAGE', /not valid UTF-8/);
  });

  const typeCases: [string, Entry, RegExp][] = [
    [
      'symlink',
      { header: { name: 'passwd', type: 'symlink', linkname: '/etc/passwd' } },
      /"passwd": is a symbolic link \(to "\/etc\/passwd"\)/,
    ],
    [
      'hard link',
      { header: { name: 'copy', type: 'link', linkname: 'agent.yaml' } },
      /"copy": is a hard link \(to "agent\.yaml"\)/,
    ],
    [
      'character device',
      { header: { name: 'null', type: 'character-device', devmajor: 1, devminor: 3 } },
      /is a character device/,
    ],
    [
      'block device',
      { header: { name: 'sda', type: 'block-device', devmajor: 8, devminor: 0 } },
      /is a block device/,
    ],
    ['fifo', { header: { name: 'pipe', type: 'fifo' } }, /is a FIFO/],
    ['contiguous file', { header: { name: 'c', type: 'contiguous-file' }, body: 'x' }, /contiguous file/],
  ];
  for (const [label, entry, message] of typeCases) {
    it(`entry type: ${label}`, async () => {
      await rejectsCleanly(await tarGz([manifest, entry]), 'USAGE', message);
    });
  }

  it('entry type: unknown type flag', async () => {
    const archive = await rawTar([manifest, file('odd')]);
    const offset = archive.indexOf('odd\0');
    await rejectsCleanly(
      gzipSync(patchHeader(archive, offset, 156, Buffer.from('Z'))),
      'USAGE',
      /unsupported type/,
    );
  });

  const duplicateCases: [string, Entry[]][] = [
    ['a twice', [file('a'), file('a')]],
    ['a and ./a', [file('a'), file('./a')]],
    ['file a, then directory a/', [file('a'), dir('a/')]],
    ['directory a/, then file a', [dir('a/'), file('a')]],
    ['directory a/ twice', [dir('a/'), dir('./a/')]],
    ['agent.yaml twice', [file('agent.yaml', 'apiVersion: evil')]],
  ];
  for (const [label, entries] of duplicateCases) {
    it(`duplicate entry: ${label}`, async () => {
      await rejectsCleanly(await tarGz([manifest, ...entries]), 'USAGE', /appears more than once/);
    });
  }

  it('an entry below a file', async () => {
    await rejectsCleanly(
      await tarGz([manifest, file('a'), file('a/b')]),
      'USAGE',
      /its parent "a" is a file/,
    );
  });

  it('no agent.yaml at the root', async () => {
    const error = await rejectsCleanly(
      await tarGz([file('sub/agent.yaml', AGENT_YAML)]),
      'USAGE',
      /no agent\.yaml/,
    );
    assert.match(error.hint ?? '', /agent directory/);
  });

  it('agent.yaml as a directory', async () => {
    await rejectsCleanly(
      await tarGz([dir('agent.yaml/'), file('agent.yaml/x')]),
      'USAGE',
      /must be a regular file/,
    );
  });

  it('too many entries (implicit parent directories count)', async () => {
    const many = Array.from({ length: 10 }, (_, i) => file(`f${i}`));
    await rejectsCleanly(await tarGz([manifest, ...many]), 'PAYLOAD_TOO_LARGE', /more than 5 entries/, {
      maxEntries: 5,
    });
    await rejectsCleanly(
      await tarGz([manifest, file('a/b/c/d/e/f')]),
      'PAYLOAD_TOO_LARGE',
      /more than 5 entries/,
      {
        maxEntries: 5,
      },
    );
  });

  it('a file over the file cap', async () => {
    const error = await rejectsCleanly(
      await tarGz([manifest, file('big', Buffer.alloc(2000))]),
      'PAYLOAD_TOO_LARGE',
      /"big" is 2\.0 KiB; files are capped at 1000 bytes/,
      { maxFileBytes: 1000 },
    );
    assert.equal(error.details['entry'], 'big');
  });

  it('files over the unpacked cap', async () => {
    await rejectsCleanly(
      await tarGz([manifest, file('a', Buffer.alloc(1500)), file('b', Buffer.alloc(1500))]),
      'PAYLOAD_TOO_LARGE',
      /unpacks to more than 2\.9 KiB \(the cap\), reached at entry "b"/,
      { maxUnpackedBytes: 3000 },
    );
  });

  it('a bundle over the compressed cap', async () => {
    await rejectsCleanly(await tarGz([manifest]), 'PAYLOAD_TOO_LARGE', /capped at 10 bytes/, {
      maxBundleBytes: 10,
    });
  });

  /** gzip (level 1, streamed) of a tar holding agent.yaml and `zeroBytes` of zeros, or of raw zeros. */
  async function bomb(zeroBytes: number, asTar: boolean): Promise<Buffer> {
    const gzip = createGzip({ level: 1 });
    const chunks: Buffer[] = [];
    gzip.on('data', (chunk: Buffer) => chunks.push(chunk));
    const done = new Promise((resolve) => gzip.on('end', resolve));
    const zeros = Buffer.alloc(MiB);
    const write = async (chunk: Buffer) => {
      if (!gzip.write(chunk)) await new Promise((resolve) => gzip.once('drain', resolve));
    };
    if (asTar) {
      const head = await rawTar([manifest]);
      await write(head.subarray(0, head.byteLength - 1024)); // without its end-of-archive blocks
      // The header of a one-byte file, its size field rewritten to declare all the zeros that follow.
      const header = (await rawTar([file('zeros')])).subarray(0, 512);
      await write(patchHeader(header, 0, 124, Buffer.from(`${zeroBytes.toString(8).padStart(11, '0')} `)));
    }
    for (let written = 0; written < zeroBytes; written += MiB) await write(zeros);
    if (asTar) await write(Buffer.alloc(1024));
    gzip.end();
    await done;
    return Buffer.concat(chunks);
  }

  it('gzip bomb: a 200 MiB file of zeros with a 1 MiB unpacked cap stops at its header', async () => {
    const bytes = await bomb(200 * MiB, true);
    assert.ok(bytes.byteLength < 2 * MiB, 'the bomb is small');
    const error = await rejectsCleanly(bytes, 'PAYLOAD_TOO_LARGE', /unpacks to more than 1 MiB.*"zeros"/, {
      maxUnpackedBytes: MiB,
      maxFileBytes: 1024 * MiB,
    });
    const inflated = error.details['inflatedBytes'] as number;
    assert.ok(inflated < 4 * MiB, `stopped after inflating ${inflated} of 200 MiB`);
  });

  it('gzip bomb: 200 MiB of zeros that is no tar at all is stopped while streaming', async () => {
    const bytes = await bomb(200 * MiB, false);
    const error = await rejectsCleanly(bytes, 'PAYLOAD_TOO_LARGE', /inflates to far more than its files/, {
      maxUnpackedBytes: MiB,
    });
    const inflated = error.details['inflatedBytes'] as number;
    assert.ok(inflated < 4 * MiB, `stopped after inflating ${inflated} of 200 MiB`);
  });
});

describe('DirAgentBundles', () => {
  const VALID_BUNDLE = packAgentDir(EXAMPLE);

  it('defaults to the documented caps; limits can be overridden', () => {
    assert.deepEqual(DEFAULT_BUNDLE_LIMITS, {
      maxBundleBytes: 64 * MiB,
      maxUnpackedBytes: 256 * MiB,
      maxFileBytes: 64 * MiB,
      maxEntries: 10_000,
    });
    const bundles = new DirAgentBundles({
      dir: '/nonexistent',
      limits: { maxEntries: 7, maxFileBytes: undefined },
    });
    assert.equal(bundles.limits.maxEntries, 7);
    assert.equal(bundles.limits.maxFileBytes, 64 * MiB);
    assert.throws(() => new DirAgentBundles({ dir: '/x', limits: { maxEntries: 0 } }), /positive integer/);
  });

  it('digest is the lowercase hex SHA-256 of the bytes', () => {
    const bundles = new DirAgentBundles({ dir: '/nonexistent' });
    assert.equal(
      bundles.digest(new TextEncoder().encode('abc')),
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
  });

  it('open unpacks under <dir>/<digest>, readable by anyone, and returns the compiled agent', async () => {
    const { bytes, digest } = await VALID_BUNDLE;
    const root = join(await scratch(), 'bundles');
    const bundles = new DirAgentBundles({ dir: root });
    assert.equal(bundles.digest(bytes), digest);
    const agent = await bundles.open(digest, bytes);
    assert.equal(agent.name, 'email-summarizer');
    assert.equal(agent.agentDir, join(root, digest));
    assert.deepEqual(await readdir(root), [digest]);
    assert.equal(await mode(root), 0o755);
    assert.equal(await mode(agent.agentDir), 0o755);
    assert.equal(await mode(join(agent.agentDir, 'main.py')), 0o644);
    assert.equal(await bundles.open(digest, bytes), agent, 'cached per digest');
  });

  it('concurrent opens of one digest (same or separate instances) share one directory', async () => {
    const { bytes, digest } = await VALID_BUNDLE;
    const root = join(await scratch(), 'bundles');
    const a = new DirAgentBundles({ dir: root });
    const b = new DirAgentBundles({ dir: root });
    const agents = await Promise.all([a.open(digest, bytes), a.open(digest, bytes), b.open(digest, bytes)]);
    for (const agent of agents) assert.equal(agent.agentDir, join(root, digest));
    assert.deepEqual(await readdir(root), [digest]);
  });

  it('refuses bytes that do not match the digest', async () => {
    const { bytes } = await VALID_BUNDLE;
    const bundles = new DirAgentBundles({ dir: join(await scratch(), 'bundles') });
    await rejects(bundles.open('0'.repeat(64), bytes), 'INTERNAL', /do not match their digest/);
    await rejects(bundles.open('../etc', bytes), 'INTERNAL', /not a bundle digest/);
  });

  it('an invalid agent.yaml → MANIFEST_INVALID at agent.yaml:line:col, and nothing is left', async () => {
    const bytes = await tarGz([
      file('agent.yaml', AGENT_YAML.replace('language: python', 'language: cobol')),
    ]);
    const root = join(await scratch(), 'bundles');
    const bundles = new DirAgentBundles({ dir: root });
    const error = await rejects(
      bundles.open(bundles.digest(bytes), bytes),
      'MANIFEST_INVALID',
      /agent\.yaml/,
    );
    const [problem] = error.problems;
    assert.ok(problem);
    assert.equal(formatProblemLocation(problem), 'agent.yaml:8:15 (spec.runtime.language)');
    assert.deepEqual(await readdir(root), []);
  });

  it('a hostile bundle is refused by open and leaves nothing', async () => {
    const bytes = await tarGz([manifest, { header: { name: 'x', type: 'symlink', linkname: '/' } }]);
    const root = join(await scratch(), 'bundles');
    const bundles = new DirAgentBundles({ dir: root });
    await rejects(bundles.open(bundles.digest(bytes), bytes), 'USAGE', /symbolic link/);
    assert.deepEqual(await readdir(root), []);
  });

  it('forget removes the unpacked copy (idempotent); open unpacks it again', async () => {
    const { bytes, digest } = await VALID_BUNDLE;
    const root = join(await scratch(), 'bundles');
    const bundles = new DirAgentBundles({ dir: root });
    await bundles.open(digest, bytes);
    await bundles.forget(digest);
    assert.deepEqual(await readdir(root), []);
    await bundles.forget(digest);
    const agent = await bundles.open(digest, bytes);
    assert.ok((await stat(join(agent.agentDir, 'agent.yaml'))).isFile());
  });

  it('refuses an existing bundle directory the sandbox user could not read', async () => {
    const root = join(await scratch(), 'bundles');
    await mkdir(root, { mode: 0o700 });
    await chmod(root, 0o700);
    const { bytes, digest } = await VALID_BUNDLE;
    const error = await rejects(
      new DirAgentBundles({ dir: root }).open(digest, bytes),
      'USAGE',
      /cannot be read by other users/,
    );
    assert.match(error.hint ?? '', /chmod 755/);
  });
});
