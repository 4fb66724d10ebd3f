import assert from 'node:assert/strict';
import {
  chmodSync,
  closeSync,
  mkdirSync,
  mkdtempSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isAegisError } from '../../../domain/errors.ts';
import type { SandboxUser } from './host.ts';
import { openMountSource, userMay } from './mount-source.ts';

const me: SandboxUser = {
  name: 'self',
  uid: process.getuid?.() ?? 0,
  gid: process.getgid?.() ?? 0,
  dedicated: false,
};
const stranger: SandboxUser = { name: 'stranger', uid: 4242, gid: 4242, dedicated: true };
const root = mkdtempSync(join(tmpdir(), 'aegis-mount-source-'));
chmodSync(root, 0o755);
after(() => rmSync(root, { recursive: true, force: true }));

function refusal(fn: () => unknown): { code: string; message: string } {
  try {
    const opened = fn() as { fd: number };
    closeSync(opened.fd);
  } catch (error) {
    assert.ok(isAegisError(error), String(error));
    return { code: error.code, message: error.message };
  }
  assert.fail('expected a refusal');
}

describe('openMountSource', () => {
  it('opens a directory and a file: the descriptor resolves to the path walked', () => {
    const dir = join(root, 'data');
    mkdirSync(dir, { mode: 0o755 });
    writeFileSync(join(dir, 'f'), 'x', { mode: 0o644 });
    for (const path of [dir, join(dir, 'f')]) {
      const opened = openMountSource(path, { user: me, what: 'grant' });
      try {
        assert.equal(readlinkSync(`/proc/self/fd/${opened.fd}`), path);
        assert.equal(opened.path, path);
        assert.equal(userMay(opened.stat, me, 'read'), true);
      } finally {
        closeSync(opened.fd);
      }
    }
  });

  it('refuses a path whose component is a symlink at walk time: it changed since its realpath', () => {
    const real = join(root, 'real');
    mkdirSync(real);
    mkdirSync(join(real, 'inner'));
    symlinkSync(real, join(root, 'swapped'));
    for (const path of [join(root, 'swapped'), join(root, 'swapped', 'inner')]) {
      const { code, message } = refusal(() => openMountSource(path, { user: me, what: 'read[0]' }));
      assert.equal(code, 'POLICY_DENIED');
      assert.match(
        message,
        /^read\[0\]: .* changed while being checked \(.*swapped is now a symlink\); nothing was mounted$/,
      );
    }
    const gone = refusal(() => openMountSource(join(root, 'vanished', 'x'), { user: me, what: 'read[0]' }));
    assert.match(gone.message, /changed while being checked \(.*vanished is gone\)/);
  });

  it('refuses kernel filesystems and special files whatever the path', () => {
    const proc = refusal(() => openMountSource('/proc/sys', { user: me, what: 'read[0]' }));
    assert.equal(proc.code, 'POLICY_DENIED');
    assert.match(proc.message, /lies on a proc filesystem/);
    const sys = refusal(() => openMountSource('/sys/kernel', { user: me, what: 'read[0]' }));
    assert.match(sys.message, /lies on a sysfs filesystem/);
    const device = refusal(() => openMountSource('/dev/null', { user: me, what: 'read[0]' }));
    assert.match(device.message, /neither a directory nor a regular file/);
  });

  it("checks the sandbox user's search permission along the way, from searchFrom on", () => {
    const closed = join(root, 'closed');
    mkdirSync(join(closed, 'open'), { recursive: true, mode: 0o700 });
    const blocked = refusal(() => openMountSource(join(closed, 'open'), { user: stranger, what: 'read[0]' }));
    assert.equal(blocked.code, 'RUNTIME_UNAVAILABLE');
    assert.match(blocked.message, /closed \(mode 700\) is not searchable/);
    const opened = openMountSource(join(closed, 'open'), {
      user: stranger,
      what: 'read[0]',
      searchFrom: join(closed, 'open'),
    });
    closeSync(opened.fd);
  });
});
