import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type BwrapPlan, buildBwrapArgs } from './bwrap-args.ts';

const plan: BwrapPlan = {
  innerUid: 1000,
  innerGid: 1000,
  hostname: 'aegis',
  env: { PATH: '/usr/bin', AEGIS_EXECUTION_ID: 'ex_1' },
  mergedUsr: true,
  etcFiles: ['/etc/ld.so.cache'],
  generatedEtc: { '/etc/passwd': '/run/aegis/static/passwd' },
  agentDir: '/srv/agent',
  inputFile: '/run/aegis/sandboxes/ex_1/input.json',
  outputFile: '/run/aegis/sandboxes/ex_1/output.json',
  binaries: {},
  mounts: [
    { source: '/srv/data', target: '/data', writable: false },
    { source: '/srv/out', target: '/out', writable: true },
  ],
  diskBytes: 1048576,
  argv: ['/usr/bin/python3', 'main.py'],
  fds: { seccomp: 3, info: 4, block: 5 },
};

function indexOfPair(args: string[], ...pair: string[]): number {
  for (let i = 0; i < args.length; i++) if (pair.every((p, j) => args[i + j] === p)) return i;
  return -1;
}

describe('buildBwrapArgs', () => {
  const args = buildBwrapArgs(plan);

  it('unshares every namespace, disables nested user namespaces, drops capabilities, clears the env', () => {
    for (const flag of [
      '--unshare-all',
      '--unshare-user',
      '--disable-userns',
      '--die-with-parent',
      '--new-session',
      '--clearenv',
    ]) {
      assert.ok(args.includes(flag), flag);
    }
    assert.notEqual(indexOfPair(args, '--cap-drop', 'ALL'), -1);
    assert.ok(!args.includes('--share-net'));
    assert.notEqual(indexOfPair(args, '--setenv', 'AEGIS_EXECUTION_ID', 'ex_1'), -1);
  });

  it('builds a read-only root: /usr read-only, merged-usr links, then remount-ro of / after every mount', () => {
    assert.notEqual(indexOfPair(args, '--ro-bind', '/usr', '/usr'), -1);
    assert.notEqual(indexOfPair(args, '--symlink', 'usr/bin', '/bin'), -1);
    const remount = indexOfPair(args, '--remount-ro', '/');
    assert.notEqual(remount, -1);
    const lastMount = Math.max(
      indexOfPair(args, '--bind', '/srv/out', '/out'),
      indexOfPair(args, '--ro-bind', '/srv/agent', '/agent'),
    );
    assert.ok(remount > lastMount, 'remount-ro must follow every mount');
  });

  it('mounts the agent read-only, grants at their targets, and caps /workspace, /tmp and /dev/shm', () => {
    assert.notEqual(indexOfPair(args, '--ro-bind', '/srv/agent', '/agent'), -1);
    assert.notEqual(indexOfPair(args, '--ro-bind', '/srv/data', '/data'), -1);
    assert.notEqual(indexOfPair(args, '--bind', '/srv/out', '/out'), -1);
    assert.notEqual(indexOfPair(args, '--size', '1048576', '--perms', '0700', '--tmpfs', '/workspace'), -1);
    assert.notEqual(indexOfPair(args, '--size', '1048576', '--perms', '1777', '--tmpfs', '/tmp'), -1);
    // bwrap's /dev is an uncapped tmpfs: /dev/shm gets the disk cap, the rest of /dev is read-only.
    const shm = indexOfPair(args, '--size', '1048576', '--perms', '1777', '--tmpfs', '/dev/shm');
    assert.ok(shm > indexOfPair(args, '--dev', '/dev'), '/dev/shm must be mounted over bwrap /dev');
    assert.ok(indexOfPair(args, '--remount-ro', '/dev') > shm);
    assert.notEqual(indexOfPair(args, '--ro-bind', plan.inputFile as string, '/run/aegis/input.json'), -1);
    assert.notEqual(indexOfPair(args, '--bind', plan.outputFile as string, '/run/aegis/output.json'), -1);
  });

  it('never binds host /etc, /home, /root or /proc wholesale', () => {
    for (const forbidden of ['/etc', '/home', '/root', '/var', '/']) {
      assert.equal(indexOfPair(args, '--bind', forbidden, forbidden), -1, forbidden);
      assert.equal(indexOfPair(args, '--ro-bind', forbidden, forbidden), -1, forbidden);
    }
    assert.notEqual(indexOfPair(args, '--proc', '/proc'), -1, 'a fresh procfs for the pid namespace');
  });

  it('binds opened objects by descriptor: --ro-bind-fd / --bind-fd with the child fd number', () => {
    const byFd = buildBwrapArgs({
      ...plan,
      agentDir: { fd: 7 },
      inputFile: { fd: 8 },
      outputFile: { fd: 9 },
      mounts: [
        { source: { fd: 10 }, target: '/data', writable: false },
        { source: { fd: 11 }, target: '/out', writable: true },
      ],
    });
    assert.notEqual(indexOfPair(byFd, '--ro-bind-fd', '7', '/agent'), -1);
    assert.notEqual(indexOfPair(byFd, '--ro-bind-fd', '8', '/run/aegis/input.json'), -1);
    assert.notEqual(indexOfPair(byFd, '--bind-fd', '9', '/run/aegis/output.json'), -1);
    assert.notEqual(indexOfPair(byFd, '--ro-bind-fd', '10', '/data'), -1);
    assert.notEqual(indexOfPair(byFd, '--bind-fd', '11', '/out'), -1);
    assert.ok(indexOfPair(byFd, '--remount-ro', '/') > indexOfPair(byFd, '--bind-fd', '11', '/out'));
  });

  it('copies small files into the root with --file (no bind, so no host path in mountinfo)', () => {
    const withFiles = buildBwrapArgs({
      ...plan,
      generatedEtc: {},
      files: { '/etc/passwd': { fd: 12, mode: 0o644 } },
    });
    assert.notEqual(indexOfPair(withFiles, '--perms', '0644', '--file', '12', '/etc/passwd'), -1);
    assert.ok(
      indexOfPair(withFiles, '--remount-ro', '/') > indexOfPair(withFiles, '--file', '12', '/etc/passwd'),
    );
  });

  it('passes seccomp, info and block fds and ends with the argv after --', () => {
    assert.notEqual(indexOfPair(args, '--seccomp', '3'), -1);
    assert.notEqual(indexOfPair(args, '--info-fd', '4'), -1);
    assert.notEqual(indexOfPair(args, '--block-fd', '5'), -1);
    assert.deepEqual(args.slice(-3), ['--', '/usr/bin/python3', 'main.py']);
  });
});
