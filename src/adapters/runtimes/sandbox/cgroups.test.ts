/**
 * Driver logic against fake cgroup trees (plain directories with the controller files), so the v2 path — not
 * available on this v1-hybrid build host — is exercised too. The real kernel is exercised by test/adversarial.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { AegisError } from '../../../domain/errors.ts';
import { CgroupDriver, type CgroupLayout, detectCgroupLayout } from './cgroups.ts';

const roots: string[] = [];
after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

function fakeTree(): string {
  const root = mkdtempSync(join(tmpdir(), 'aegis-cg-'));
  roots.push(root);
  return root;
}

const limits = { memoryBytes: 64 * 1024 ** 2, pids: 32, cpuMillis: 250 };

describe('cgroup layout detection', () => {
  it('recognises v1 hybrid from mountinfo and /proc/self/cgroup', () => {
    const proc = fakeTree();
    mkdirSync(join(proc, 'self'));
    writeFileSync(
      join(proc, 'self/mountinfo'),
      [
        '31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
        '33 30 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
        '34 30 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids',
        '35 30 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
      ].join('\n'),
    );
    writeFileSync(join(proc, 'self/cgroup'), '4:memory:/session/abc\n8:pids:/\n1:cpu:/\n0::/\n');
    const layout = detectCgroupLayout(proc);
    assert.equal(layout.mode, 'hybrid');
    assert.equal(layout.v1Mounts['memory'], '/sys/fs/cgroup/memory');
    assert.equal(layout.v1OwnPaths['memory'], '/session/abc');
    assert.equal(layout.v2Mount, '/sys/fs/cgroup/unified');
  });

  it('reports none when controllers are missing, and the driver refuses instead of running unlimited', () => {
    const layout: CgroupLayout = {
      mode: 'none',
      v1Mounts: {},
      v1OwnPaths: {},
      v2Mount: undefined,
      v2Controllers: [],
    };
    assert.throws(
      () => new CgroupDriver(layout).create('ex_1', limits),
      (error: unknown) =>
        error instanceof AegisError &&
        error.code === 'LIMIT_UNENFORCEABLE' &&
        /memory, pids, cpu/.test(error.message),
    );
  });
});

describe('cgroup v2 driver', () => {
  it('enables controllers down the parent chain and writes memory.max, swap, pids.max and cpu.max', () => {
    const root = fakeTree();
    writeFileSync(join(root, 'cgroup.subtree_control'), '');
    mkdirSync(join(root, 'aegis'));
    writeFileSync(join(root, 'aegis/cgroup.subtree_control'), 'memory');
    const layout: CgroupLayout = {
      mode: 'v2',
      v1Mounts: {},
      v1OwnPaths: {},
      v2Mount: root,
      v2Controllers: ['memory', 'pids', 'cpu'],
    };
    const dir = join(root, 'aegis/ex_1');
    // The kernel creates interface files on mkdir; the fake pre-creates the optional one the driver probes for.
    mkdirSync(dir);
    writeFileSync(join(dir, 'memory.swap.max'), 'max');
    const group = new CgroupDriver(layout).create('ex_1', limits);
    assert.deepEqual(group.paths, [dir]);
    assert.equal(readFileSync(join(root, 'cgroup.subtree_control'), 'utf8'), '+memory +pids +cpu');
    assert.equal(readFileSync(join(root, 'aegis/cgroup.subtree_control'), 'utf8'), '+pids +cpu');
    assert.equal(readFileSync(join(dir, 'memory.max'), 'utf8'), String(64 * 1024 ** 2));
    assert.equal(readFileSync(join(dir, 'memory.swap.max'), 'utf8'), '0');
    assert.equal(readFileSync(join(dir, 'pids.max'), 'utf8'), '32');
    assert.equal(readFileSync(join(dir, 'cpu.max'), 'utf8'), '25000 100000');
    group.join(4242);
    assert.equal(readFileSync(join(dir, 'cgroup.procs'), 'utf8'), '4242');
  });

  it('reads oom kills, pids refusals and throttling from the v2 event files', () => {
    const root = fakeTree();
    writeFileSync(join(root, 'cgroup.subtree_control'), 'memory pids cpu');
    mkdirSync(join(root, 'aegis'));
    writeFileSync(join(root, 'aegis/cgroup.subtree_control'), 'memory pids cpu');
    const layout: CgroupLayout = {
      mode: 'v2',
      v1Mounts: {},
      v1OwnPaths: {},
      v2Mount: root,
      v2Controllers: ['memory', 'pids', 'cpu'],
    };
    const group = new CgroupDriver(layout).create('ex_2', limits);
    const dir = join(root, 'aegis/ex_2');
    writeFileSync(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n');
    writeFileSync(join(dir, 'pids.events'), 'max 7\n');
    writeFileSync(join(dir, 'cpu.stat'), 'usage_usec 1500\nnr_periods 10\nnr_throttled 4\n');
    writeFileSync(join(dir, 'memory.peak'), '1234\n');
    writeFileSync(join(dir, 'memory.current'), '1000\n');
    writeFileSync(join(dir, 'pids.current'), '3\n');
    assert.deepEqual(group.stats(), {
      oomKills: 1,
      pidsLimitHits: 7,
      cpuThrottledPeriods: 4,
      memoryPeakBytes: 1234,
      cpuUsageNs: 1_500_000,
      memoryBytes: 1000,
      pids: 3,
    });
  });
});

describe('cgroup v1 driver', () => {
  it('nests under the orchestrator group per controller and caps memory+swap together', () => {
    const root = fakeTree();
    const v1Mounts = { memory: join(root, 'memory'), pids: join(root, 'pids'), cpu: join(root, 'cpu') };
    for (const mount of Object.values(v1Mounts)) mkdirSync(mount);
    const layout: CgroupLayout = {
      mode: 'v1',
      v1Mounts,
      v1OwnPaths: { memory: '/session/abc', pids: '/', cpu: '/' },
      v2Mount: undefined,
      v2Controllers: [],
    };
    const memDir = join(root, 'memory/session/abc/aegis/ex_3');
    mkdirSync(memDir, { recursive: true });
    writeFileSync(join(memDir, 'memory.memsw.limit_in_bytes'), '');
    const group = new CgroupDriver(layout).create('ex_3', limits);
    assert.deepEqual(
      [...group.paths].sort(),
      [memDir, join(root, 'pids/aegis/ex_3'), join(root, 'cpu/aegis/ex_3')].sort(),
    );
    assert.equal(readFileSync(join(memDir, 'memory.limit_in_bytes'), 'utf8'), String(64 * 1024 ** 2));
    assert.equal(readFileSync(join(memDir, 'memory.memsw.limit_in_bytes'), 'utf8'), String(64 * 1024 ** 2));
    assert.equal(readFileSync(join(root, 'pids/aegis/ex_3/pids.max'), 'utf8'), '32');
    assert.equal(readFileSync(join(root, 'cpu/aegis/ex_3/cpu.cfs_quota_us'), 'utf8'), '25000');
    assert.equal(readFileSync(join(root, 'cpu/aegis/ex_3/cpu.cfs_period_us'), 'utf8'), '100000');
  });
});
