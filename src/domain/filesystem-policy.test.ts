import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkMountSource } from './filesystem-policy.ts';

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
});
