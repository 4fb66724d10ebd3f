import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildOciSpec, type OciPlan } from './oci-spec.ts';

const plan: OciPlan = {
  uid: 999,
  gid: 999,
  hostname: 'aegis',
  env: { PATH: '/usr/bin', A: 'b=c' },
  argv: ['/usr/bin/python3', 'main.py'],
  rootfs: '/run/aegis/gvisor/ex_1/rootfs',
  mergedUsr: true,
  etcFiles: ['/etc/ssl/certs'],
  binaries: { '/opt/node': '/opt/aegis/bin/node' },
  agentDir: '/run/aegis/gvisor/ex_1/binds/1',
  inputFile: '/run/aegis/gvisor/ex_1/input.json',
  outputFile: '/dev/shm/aegis-output-x/output.json',
  mounts: [
    { source: '/run/aegis/gvisor/ex_1/binds/0', target: '/data/out', writable: true },
    { source: '/run/aegis/gvisor/ex_2/binds/2', target: '/data/in', writable: false },
  ],
  diskBytes: 16 * 1024 * 1024,
  network: 'none',
  maxOpenFiles: 1024,
};

describe('buildOciSpec', () => {
  it('no capabilities, no_new_privs, non-root, read-only root, env as NAME=value', () => {
    const spec = buildOciSpec(plan);
    for (const set of Object.values(spec.process.capabilities)) assert.deepEqual(set, []);
    assert.equal(spec.process.noNewPrivileges, true);
    assert.equal(spec.process.user.uid, 999);
    assert.equal(spec.root.readonly, true);
    assert.deepEqual(spec.process.env, ['PATH=/usr/bin', 'A=b=c']);
    assert.equal(spec.process.cwd, '/agent');
  });

  it('host objects read-only except output.json and writable grants; tmpfs capped by disk', () => {
    const spec = buildOciSpec(plan);
    const byTarget = new Map(spec.mounts.map((m) => [m.destination, m]));
    const writable = spec.mounts.filter((m) => m.type === 'bind' && m.options?.includes('rw'));
    assert.deepEqual(
      writable.map((m) => m.destination),
      ['/run/aegis/output.json', '/data/out'],
    );
    for (const target of [
      '/usr',
      '/agent',
      '/run/aegis/input.json',
      '/data/in',
      '/etc/ssl/certs',
      '/opt/aegis/bin/node',
    ])
      assert.ok(byTarget.get(target)?.options?.includes('ro'), target);
    for (const target of ['/tmp', '/workspace', '/dev/shm'])
      assert.ok(byTarget.get(target)?.options?.includes(`size=${16 * 1024 * 1024}`), target);
  });

  it('network none: a network namespace of its own; host: the namespace runsc starts in (AEGIS made it)', () => {
    assert.ok(buildOciSpec(plan).linux.namespaces.some((n) => n.type === 'network'));
    assert.ok(!buildOciSpec({ ...plan, network: 'host' }).linux.namespaces.some((n) => n.type === 'network'));
  });

  it('without merged /usr the host /bin, /lib… are bound read-only', () => {
    const spec = buildOciSpec({ ...plan, mergedUsr: false });
    assert.ok(spec.mounts.some((m) => m.destination === '/lib' && m.options?.includes('ro')));
  });
});
