/**
 * The doctor over an injected host (root and non-root, cgroup v1 and v2, things present or not), plus one real run
 * whose cgroup verdict is checked against an actual attempt to create a limited group.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CgroupLayout } from '../runtimes/sandbox/cgroups.ts';
import { CgroupDriver, detectCgroupLayout } from '../runtimes/sandbox/cgroups.ts';
import {
  type CgroupProbe,
  type DoctorCheck,
  type DoctorReport,
  formatDoctorReport,
  type HostProbe,
  runDoctor,
} from './doctor.ts';

const V1: CgroupLayout = {
  mode: 'hybrid',
  v1Mounts: { memory: '/sys/fs/cgroup/memory', pids: '/sys/fs/cgroup/pids', cpu: '/sys/fs/cgroup/cpu' },
  v1OwnPaths: { memory: '/user.slice', pids: '/user.slice', cpu: '/user.slice' },
  v2Mount: '/sys/fs/cgroup/unified',
  v2Controllers: [],
};
const V2: CgroupLayout = {
  mode: 'v2',
  v1Mounts: {},
  v1OwnPaths: {},
  v2Mount: '/sys/fs/cgroup',
  v2Controllers: ['cpu', 'memory', 'pids'],
};

interface FakeHost {
  uid?: number;
  binaries?: string[];
  files?: Record<string, string>;
  layout?: CgroupLayout;
  cgroupWritable?: boolean;
  usernsWorks?: boolean;
  env?: Record<string, string>;
  /** false: an old bwrap without --bind-fd/--ro-bind-fd. */
  bwrapBindFd?: boolean;
}

function probe(host: FakeHost = {}): HostProbe & { cgroupParents: string[] } {
  const uid = host.uid ?? 0;
  const binaries = host.binaries ?? ['bwrap', 'nsenter'];
  const files: Record<string, string> = {
    '/proc/sys/kernel/seccomp/actions_avail':
      'kill_process kill_thread trap errno user_notif trace log allow',
    '/usr/bin/python3': '',
    ...host.files,
  };
  const cgroupParents: string[] = [];
  return {
    cgroupParents,
    uid: () => uid,
    gid: () => uid,
    env: (name) => host.env?.[name],
    which: (binary) => (binaries.includes(binary) ? `/usr/bin/${binary}` : undefined),
    run: (command, args) => {
      if (command.endsWith('bwrap') && args[0] === '--help') {
        return { ok: true, out: host.bwrapBindFd === false ? '--ro-bind SRC DEST' : '--ro-bind-fd FD DEST' };
      }
      return command.endsWith('bwrap') && host.usernsWorks === false
        ? { ok: false, out: 'bwrap: No permissions to create new namespace' }
        : { ok: true, out: `${command.split('/').pop()} 1.0` };
    },
    readFile: (path) => files[path],
    exists: (path) => path in files,
    sandboxUser: () =>
      uid === 0
        ? { name: 'aegis-sandbox', uid: 999, gid: 999, dedicated: true }
        : { name: 'self', uid, gid: uid, dedicated: false },
    cgroupLayout: () => host.layout ?? V1,
    tryCgroup: (layout, parent): CgroupProbe => {
      cgroupParents.push(parent);
      const paths = new CgroupDriver(layout, { parent }).plannedPaths('doctor-1');
      return (host.cgroupWritable ?? uid === 0)
        ? { ok: true, paths }
        : { ok: false, error: `EACCES: permission denied, mkdir '${paths[0]}'`, paths };
    },
  };
}

const check = (report: DoctorReport, name: string): DoctorCheck => {
  const found = report.checks.find((c) => c.name === name);
  assert.ok(found, `no check named ${name}`);
  return found;
};

describe('aegis doctor', () => {
  it('root on a good host: ready, every required check ok, the sandbox runtime available', () => {
    const report = runDoctor(probe());
    assert.equal(report.ready, true);
    assert.deepEqual(report.user, { uid: 0, root: true });
    assert.deepEqual(
      report.checks.filter((c) => c.group === 'required' && c.status !== 'ok'),
      [],
    );
    assert.equal(report.runtimes['sandbox'], true);
    assert.match(formatDoctorReport(report), /^Required \(the default sandbox runtime\):\n/);
    assert.match(formatDoctorReport(report), /Ready: agents run in the sandbox runtime \(checked as root\)/);
  });

  it('tests cgroup writability, not presence: a mounted but unwritable tree is a missing required check', () => {
    const report = runDoctor(probe({ uid: 1000, cgroupWritable: false }));
    const cgroup = check(report, 'cgroup limits (writable)');
    assert.equal(cgroup.group, 'required');
    assert.equal(cgroup.status, 'missing');
    assert.match(cgroup.detail, /uid 1000 cannot create a limited group/);
    assert.equal(report.ready, false);
    assert.equal(report.runtimes['sandbox'], false);
    assert.match(formatDoctorReport(report), /Not ready/);
  });

  it('the probe is asked for the cgroup AEGIS_CGROUP_PARENT names', () => {
    const host = probe({ env: { AEGIS_CGROUP_PARENT: 'system.slice/aegis.service/sandboxes' } });
    runDoctor(host);
    assert.deepEqual(host.cgroupParents, ['system.slice/aegis.service/sandboxes']);
  });

  it('non-root with a delegated cgroup is ready; the sandbox-user and egress checks say what root would add', () => {
    const report = runDoctor(probe({ uid: 1000, cgroupWritable: true }));
    assert.equal(report.ready, true);
    assert.equal(check(report, 'cgroup limits (writable)').status, 'ok');
    assert.equal(check(report, 'sandbox user').status, 'warn');
    assert.match(check(report, 'sandbox user').detail, /your own uid 1000/);
    const egress = check(report, 'network egress');
    assert.equal(egress.status, 'warn');
    assert.match(egress.detail, /network\.allow rules are refused/);
  });

  it('every fix works for the user running it: sudo when not root, never for root', () => {
    const bare = { binaries: [] as string[], files: { '/proc/sys/kernel/seccomp/actions_avail': 'allow' } };
    const asUser = runDoctor(probe({ uid: 1000, ...bare }));
    const asRoot = runDoctor(probe({ uid: 0, ...bare }));
    for (const report of [asUser, asRoot]) {
      for (const c of report.checks) {
        if (c.fix === undefined) continue;
        if (/apt-get/.test(c.fix)) {
          assert.equal(/^sudo /.test(c.fix), !report.user.root, `${c.name}: ${c.fix}`);
        }
      }
    }
    assert.equal(check(asUser, 'bubblewrap').fix, 'sudo apt-get install bubblewrap');
    assert.equal(check(asRoot, 'bubblewrap').fix, 'apt-get install bubblewrap');
    assert.equal(check(asUser, 'network egress').fix, 'sudo apt-get install util-linux');
  });

  it('non-root cgroup fixes: v1 names the exact groups to delegate; v2 points at Delegate=yes', () => {
    const v1 = check(runDoctor(probe({ uid: 1000, layout: V1 })), 'cgroup limits (writable)');
    assert.match(v1.fix ?? '', /sudo mkdir -p \/sys\/fs\/cgroup\/memory\/user\.slice\/aegis /);
    assert.match(v1.fix ?? '', /sudo chown -R 1000:1000 /);
    const v2 = check(runDoctor(probe({ uid: 1000, layout: V2 })), 'cgroup limits (writable)');
    assert.match(v2.fix ?? '', /Delegate=yes/);
    assert.match(v2.fix ?? '', /docs\/HOST-SETUP\.md/);
    assert.doesNotMatch(v2.fix ?? '', /sudo mkdir/);
  });

  it('the other runtimes are optional, and their fix is the setup that installs them', () => {
    const report = runDoctor(probe({ binaries: ['bwrap', 'nsenter'] }));
    for (const [name, runtime] of [
      ['gVisor (runsc)', 'gvisor'],
      ['Docker engine', 'docker'],
    ] as const) {
      const c = check(report, name);
      assert.equal(c.group, 'optional');
      assert.equal(c.status, 'missing');
      assert.equal(c.fix, `npm run setup -- --runtimes ${runtime}`);
    }
    assert.equal(check(report, '/dev/kvm').fix, undefined, 'no fix: no microVM runtime yet');
    assert.equal(report.ready, true, 'optional checks never make the host unready');
    assert.match(formatDoctorReport(report), /\n {2}- gVisor \(runsc\)/);
  });

  it('no user namespaces or no seccomp: not ready, with the reason', () => {
    const noUserns = runDoctor(probe({ usernsWorks: false }));
    assert.equal(check(noUserns, 'user namespaces').status, 'missing');
    assert.match(check(noUserns, 'user namespaces').detail, /No permissions to create new namespace/);
    assert.equal(noUserns.ready, false);
    const noSeccomp = runDoctor(probe({ files: { '/proc/sys/kernel/seccomp/actions_avail': '' } }));
    assert.equal(check(noSeccomp, 'seccomp filters').status, 'missing');
    assert.equal(noSeccomp.ready, false);
  });

  it('a bwrap without --bind-fd is a missing required check: grants are bound by descriptor', () => {
    const old = runDoctor(probe({ bwrapBindFd: false }));
    assert.equal(check(old, 'bubblewrap --bind-fd').status, 'missing');
    assert.equal(old.ready, false);
    assert.equal(old.runtimes.sandbox, false);
    assert.equal(check(runDoctor(probe()), 'bubblewrap --bind-fd').status, 'ok');
  });

  it('on this host, for real: the cgroup verdict matches an actual attempt to create a limited group', async () => {
    const report = runDoctor();
    const parent = process.env['AEGIS_CGROUP_PARENT'] ?? 'aegis';
    const layout = detectCgroupLayout();
    let writable = layout.mode !== 'none';
    if (writable) {
      try {
        const group = new CgroupDriver(layout, { parent }).create(`doctor-test-${process.pid}`, {
          memoryBytes: 64 * 2 ** 20,
          pids: 16,
          cpuMillis: 100,
        });
        await group.destroy();
      } catch {
        writable = false;
      }
    }
    assert.equal(check(report, 'cgroup limits (writable)').status === 'ok', writable);
    assert.equal(report.user.root, process.getuid?.() === 0);
    for (const c of report.checks) assert.ok(['required', 'optional'].includes(c.group));
  });
});
