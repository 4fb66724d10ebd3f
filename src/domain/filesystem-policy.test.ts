import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkMountSource, forbiddenFilesystem } from './filesystem-policy.ts';

describe('filesystem policy', () => {
  it('refuses protected paths, anything inside them, and any ancestor of them', () => {
    for (const path of [
      '/etc/shadow',
      '/root',
      '/root/.ssh/id_rsa',
      '/home/alice',
      '/etc',
      '/',
      '/var',
      '/run',
      '/var/run/docker.sock',
    ]) {
      assert.equal(checkMountSource(path).forbidden, true, path);
    }
    assert.equal(checkMountSource('/etc').protectedPath, '/etc/shadow');
  });

  it('refuses the orchestrator data directory passed as extra', () => {
    assert.deepEqual(checkMountSource('/srv/aegis-home/aegis.db', ['/srv/aegis-home']), {
      forbidden: true,
      protectedPath: '/srv/aegis-home',
    });
  });

  it('allows ordinary data directories', () => {
    for (const path of [
      '/srv/data',
      '/opt/datasets/mail',
      '/tmp/work',
      '/var/lib/agent-data',
      '/etc-backup',
    ]) {
      assert.equal(checkMountSource(path).forbidden, false, path);
    }
  });

  it("never holds a protected path that merely contains the agent's own directory against that directory", () => {
    const own = '/root/clone/examples/email-summarizer';
    assert.equal(checkMountSource(own, [], own).forbidden, false);
    assert.equal(checkMountSource(`${own}/mailbox`, [], own).forbidden, false);
    // A bundle under the orchestrator's data dir (a protected extra) is its own agent's.
    const bundle = '/srv/aegis-home/bundles/mail/1';
    assert.equal(checkMountSource(`${bundle}/data`, ['/srv/aegis-home'], bundle).forbidden, false);
  });

  it("still refuses, for the agent's own directory, what lies outside it or inside it and is protected", () => {
    const own = '/root/clone/agent';
    // Outside the own dir: a sibling, the parent, another home.
    for (const path of ['/root/clone/other', '/root/clone', '/root', '/home/alice']) {
      assert.equal(checkMountSource(path, [], own).forbidden, true, path);
    }
    // An agent directory that is (or contains) a protected path exempts nothing.
    assert.equal(checkMountSource('/root/.ssh', [], '/root').protectedPath, '/root');
    assert.equal(checkMountSource('/home/alice', [], '/home').protectedPath, '/home');
    // A protected path inside the own dir (the data dir kept in the agent dir) stays protected.
    assert.deepEqual(checkMountSource(`${own}/.aegis`, [`${own}/.aegis`], own), {
      forbidden: true,
      protectedPath: `${own}/.aegis`,
    });
    assert.equal(checkMountSource(own, [`${own}/.aegis`], own).forbidden, true);
  });

  it('names the kernel filesystems a mount source may never live on', () => {
    assert.equal(forbiddenFilesystem(0x9fa0), 'proc');
    assert.equal(forbiddenFilesystem(0x62656572n), 'sysfs');
    assert.equal(forbiddenFilesystem(0xef53), undefined); // ext4
    assert.equal(forbiddenFilesystem(0x01021994), undefined); // tmpfs (devtmpfs too: /dev is refused by path)
  });
});
