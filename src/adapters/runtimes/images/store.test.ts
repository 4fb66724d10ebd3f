/**
 * The image cache and unpacker against OCI layouts written by the test (test/support/oci-layout.ts), hostile ones
 * included: each attack must fail with MANIFEST_INVALID naming spec.runtime.image, leave nothing outside the
 * cache's temporary directory, and leave nothing under the image's key. No root, no engine needed.
 */
import assert from 'node:assert/strict';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type LayoutEntry, writeOciLayout } from '../../../../test/support/oci-layout.ts';
import { type AegisError, isAegisError } from '../../../domain/errors.ts';
import { ImageStore } from './store.ts';

let work: string;
let n = 0;
const fresh = () => join(work, `case-${++n}`);

before(() => {
  work = mkdtempSync(join(tmpdir(), 'aegis-images-'));
});
after(() => rmSync(work, { recursive: true, force: true }));

function refused(pattern: RegExp) {
  return (error: unknown) => {
    assert.ok(isAegisError(error), String(error));
    assert.equal((error as AegisError).code, 'MANIFEST_INVALID');
    assert.match((error as AegisError).message, pattern);
    assert.equal((error as AegisError).problems?.[0]?.path, 'spec.runtime.image');
    return true;
  };
}

/** The cache holds no image and no temporary directory. */
function assertCacheEmpty(cache: string) {
  const left = existsSync(cache) ? readdirSync(cache) : [];
  assert.deepEqual(left, [], `left in the cache: ${left.join(', ')}`);
}

async function layoutOf(layers: LayoutEntry[][], options: { gzip?: boolean } = {}) {
  return writeOciLayout(fresh(), layers, options);
}

describe('ImageStore: OCI layouts', () => {
  it('unpacks layers in order with whiteouts, drops setuid and devices, reads the config, caches by manifest digest', async () => {
    const layout = await writeOciLayout(
      fresh(),
      [
        [
          { name: 'bin/', type: 'directory' },
          { name: 'bin/tool', content: '#!/bin/sh\n', mode: 0o4755 },
          { name: 'bin/alias', type: 'link', linkname: 'bin/tool' },
          { name: 'etc/gone', content: 'lower' },
          { name: 'etc/keep', content: 'lower' },
          { name: 'opq/old', content: 'lower' },
          { name: 'dev/evil', type: 'character-device' },
          { name: 'abs-link', type: 'symlink', linkname: '/etc/shadow' },
          { name: 'shared', type: 'directory', mode: 0o777 },
        ],
        [
          { name: 'etc/.wh.gone' },
          { name: 'opq/new', content: 'upper' },
          { name: 'opq/.wh..wh..opq' },
          { name: 'etc/keep', content: 'upper' },
        ],
      ],
      { gzip: false, env: ['PATH=/bin', 'FROM_IMAGE=1'], workingDir: '/srv', cmd: ['/bin/tool'] },
    );
    const cache = fresh();
    const store = new ImageStore({ dir: cache });
    const image = await store.resolve(`oci:${layout.dir}`, '/nowhere', undefined);
    assert.equal(image.key, layout.manifestDigest);
    const root = image.rootfs;
    assert.equal(statSync(join(root, 'bin/tool')).mode & 0o7777, 0o755, 'setuid dropped');
    assert.equal(
      statSync(join(root, 'bin/alias')).ino,
      statSync(join(root, 'bin/tool')).ino,
      'hard link kept',
    );
    assert.equal(existsSync(join(root, 'etc/gone')), false, 'whiteout removed the lower file');
    assert.equal(readFileSync(join(root, 'etc/keep'), 'utf8'), 'upper');
    assert.deepEqual(readdirSync(join(root, 'opq')), ['new'], 'opaque dir hides the lower layer only');
    assert.equal(existsSync(join(root, 'dev/evil')), false, 'device node left out');
    assert.equal(readlinkSync(join(root, 'abs-link')), '/etc/shadow', 'a symlink is text, never followed');
    assert.equal(statSync(join(root, 'shared')).mode & 0o777, 0o755, 'group/other write dropped');
    for (const point of ['agent', 'workspace', 'tmp', 'proc', 'run/aegis'])
      assert.ok(lstatSync(join(root, point)).isDirectory(), point);
    assert.ok(lstatSync(join(root, 'run/aegis/input.json')).isFile());
    assert.deepEqual(image.config, {
      env: ['PATH=/bin', 'FROM_IMAGE=1'],
      workingDir: '/srv',
      cmd: ['/bin/tool'],
    });
    assert.equal(statSync(cache).mode & 0o777, 0o700, 'the cache is root-only');
    // A second resolution (another store: another process) finds it; nothing is unpacked twice.
    const again = await new ImageStore({ dir: cache }).resolve(layout.dir, '/nowhere', undefined);
    assert.equal(again.rootfs, root);
    assert.deepEqual(readdirSync(cache), [layout.manifestDigest.slice('sha256:'.length)]);
  });

  it('concurrent resolutions of one image (one process, and two) end with one verified tree', async () => {
    const layout = await layoutOf([[{ name: 'a', content: 'x' }]]);
    const cache = fresh();
    const one = new ImageStore({ dir: cache });
    const two = new ImageStore({ dir: cache });
    const got = await Promise.all([
      one.resolveLayout(layout.dir),
      one.resolveLayout(layout.dir),
      two.resolveLayout(layout.dir),
      two.resolveLayout(layout.dir),
    ]);
    assert.equal(new Set(got.map((g) => g.rootfs)).size, 1);
    assert.deepEqual(readdirSync(cache), [layout.manifestDigest.slice('sha256:'.length)], 'no temp dir left');
    assert.equal(readFileSync(join(got[0]!.rootfs, 'a'), 'utf8'), 'x');
  });

  it('refuses a layer whose content does not match its digest (and keeps nothing under the key)', async () => {
    const layout = await layoutOf([[{ name: 'bin/sh', content: 'good' }]]);
    const evil = await layoutOf([[{ name: 'bin/sh', content: 'evil' }]]);
    writeFileSync(layout.blob(layout.layerDigests[0]!), readFileSync(evil.blob(evil.layerDigests[0]!)));
    const cache = fresh();
    await assert.rejects(
      new ImageStore({ dir: cache }).resolveLayout(layout.dir),
      refused(/has digest sha256:/),
    );
    assertCacheEmpty(cache);
  });

  it('refuses a config or manifest blob that does not match its digest', async () => {
    const layout = await layoutOf([[{ name: 'a', content: 'x' }]]);
    writeFileSync(
      layout.blob(layout.configDigest),
      JSON.stringify({ config: { Env: ['EVIL=1'] }, rootfs: { diff_ids: [] } }),
    );
    const cache = fresh();
    await assert.rejects(
      new ImageStore({ dir: cache }).resolveLayout(layout.dir),
      refused(/image config.*has digest/),
    );
    assertCacheEmpty(cache);
  });

  it('refuses entries that climb out with ".." or are absolute', async () => {
    // Enough `..` to reach / from any temp dir: an unpacker that followed them would write /aegis-test-escape-<pid>.
    const outside = `/aegis-test-escape-${process.pid}`;
    for (const name of [`../../../../../../../../../../../../..${outside}`, 'a/../../escape', '/abs-entry']) {
      const layout = await layoutOf([
        [
          { name: 'a/', type: 'directory' },
          { name, content: 'pwned' },
        ],
      ]);
      const cache = fresh();
      await assert.rejects(
        new ImageStore({ dir: cache }).resolveLayout(layout.dir),
        refused(/"\.\."|absolute/),
      );
      assertCacheEmpty(cache);
    }
    assert.equal(existsSync(outside), false);
    assert.equal(existsSync('/abs-entry'), false);
    assert.equal(existsSync(join(work, 'escape')), false);
  });

  it('refuses writing through a symlink it planted (same layer and a later layer)', async () => {
    const target = join(work, 'symlink-target');
    mkdirSync(target);
    const plant: LayoutEntry = { name: 'evil', type: 'symlink', linkname: target };
    for (const layers of [
      [[plant, { name: 'evil/pwned', content: 'x' }]],
      [[plant], [{ name: 'evil/pwned', content: 'x' }]],
      [
        [
          { name: 'up', type: 'symlink', linkname: '../../../../..' },
          { name: 'up/tmp/pwned', content: 'x' },
        ],
      ],
    ] as LayoutEntry[][][]) {
      const layout = await layoutOf(layers);
      const cache = fresh();
      await assert.rejects(
        new ImageStore({ dir: cache }).resolveLayout(layout.dir),
        refused(/goes through the symlink/),
      );
      assertCacheEmpty(cache);
    }
    assert.deepEqual(readdirSync(target), [], 'nothing was written through the link');
  });

  it('refuses hard links to absolute paths, out of the root, or to a symlink', async () => {
    const victim = join(work, 'victim');
    writeFileSync(victim, 'secret');
    const cases: [LayoutEntry[], RegExp][] = [
      [[{ name: 'h', type: 'link', linkname: victim }], /absolute/],
      [[{ name: 'h', type: 'link', linkname: '../../../../../../etc/passwd' }], /"\.\."/],
      [
        [
          { name: 's', type: 'symlink', linkname: victim },
          { name: 'h', type: 'link', linkname: 's' },
        ],
        /not a file of the image/,
      ],
    ];
    for (const [entries, pattern] of cases) {
      const layout = await layoutOf([entries]);
      const cache = fresh();
      await assert.rejects(new ImageStore({ dir: cache }).resolveLayout(layout.dir), refused(pattern));
      assertCacheEmpty(cache);
    }
    assert.equal(statSync(victim).nlink, 1, 'the host file got no new link');
  });

  it('refuses a layout whose blobs/ is a symlink, and a file that is not a layout', async () => {
    const layout = await layoutOf([[{ name: 'a', content: 'x' }]]);
    const moved = `${layout.dir}-blobs`;
    mkdirSync(moved);
    symlinkSync(join(layout.dir, 'blobs'), join(moved, 'blobs'));
    writeFileSync(join(moved, 'oci-layout'), readFileSync(join(layout.dir, 'oci-layout')));
    writeFileSync(join(moved, 'index.json'), readFileSync(join(layout.dir, 'index.json')));
    assert.throws(() => new ImageStore({ dir: fresh() }).resolveLayout(moved), refused(/symlink is refused/));
    assert.throws(() => new ImageStore({ dir: fresh() }).resolveLayout(work), refused(/oci-layout/));
  });
});
