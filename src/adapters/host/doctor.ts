/**
 * `aegis doctor`: which isolation features this host has, probed for real (not guessed from versions).
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { detectCgroupLayout } from '../runtimes/sandbox/cgroups.ts';
import { resolveSandboxUser } from '../runtimes/sandbox/host.ts';

export type CheckStatus = 'ok' | 'warn' | 'missing';

export interface DoctorCheck {
  readonly name: string;
  readonly status: CheckStatus;
  readonly detail: string;
  /** What to do when it isn't ok. */
  readonly fix?: string;
  /** Which runtimes need it. */
  readonly neededBy: readonly string[];
}

export interface DoctorReport {
  readonly checks: readonly DoctorCheck[];
  /** Runtimes this host can run right now. */
  readonly runtimes: Readonly<Record<string, boolean>>;
}

function which(binary: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    const candidate = `${dir}/${binary}`;
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

function run(command: string, args: string[], options: { uid?: number; gid?: number } = {}) {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: 10_000, env: {}, ...options });
  return { ok: result.status === 0, out: `${result.stdout ?? ''}${result.stderr ?? ''}`.trim() };
}

export function runDoctor(): DoctorReport {
  const checks: DoctorCheck[] = [];
  const isRoot = process.getuid?.() === 0;
  const user = resolveSandboxUser();

  checks.push({
    name: 'orchestrator privileges',
    status: isRoot ? 'ok' : 'warn',
    detail: isRoot
      ? 'running as root (needed to set cgroup limits and run sandboxes as a dedicated uid)'
      : `running as uid ${process.getuid?.()}: limits need a delegated cgroup (AEGIS_CGROUP_PARENT)`,
    neededBy: ['sandbox'],
  });
  checks.push({
    name: 'sandbox user',
    status: user.dedicated && user.name === 'aegis-sandbox' ? 'ok' : 'warn',
    detail: `sandboxes run as ${user.name} (uid ${user.uid})`,
    ...(user.name === 'aegis-sandbox'
      ? {}
      : { fix: 'npm run setup (creates the aegis-sandbox system user)' }),
    neededBy: ['sandbox'],
  });

  const bwrap = which('bwrap');
  const bwrapVersion = bwrap ? run(bwrap, ['--version']).out : '';
  checks.push({
    name: 'bubblewrap',
    status: bwrap ? 'ok' : 'missing',
    detail: bwrap ? `${bwrapVersion} at ${bwrap}` : 'bwrap not found on PATH',
    ...(bwrap ? {} : { fix: 'apt-get install bubblewrap' }),
    neededBy: ['sandbox'],
  });

  let userns = false;
  if (bwrap) {
    const probe = run(
      bwrap,
      [
        '--unshare-all',
        '--unshare-user',
        '--disable-userns',
        '--ro-bind',
        '/usr',
        '/usr',
        '--symlink',
        'usr/bin',
        '/bin',
        '--symlink',
        'usr/lib',
        '/lib',
        '--symlink',
        'usr/lib64',
        '/lib64',
        '/usr/bin/true',
      ],
      isRoot ? { uid: user.uid, gid: user.gid } : {},
    );
    userns = probe.ok;
    checks.push({
      name: 'user namespaces',
      status: probe.ok ? 'ok' : 'missing',
      detail: probe.ok ? `unprivileged user+pid+net namespaces work for ${user.name}` : probe.out,
      ...(probe.ok
        ? {}
        : {
            fix: 'enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces)',
          }),
      neededBy: ['sandbox'],
    });
  }

  let seccompActions = '';
  try {
    seccompActions = readFileSync('/proc/sys/kernel/seccomp/actions_avail', 'utf8').trim();
  } catch {
    seccompActions = '';
  }
  const seccomp = seccompActions.includes('errno') && seccompActions.includes('kill_process');
  checks.push({
    name: 'seccomp filters',
    status: seccomp ? 'ok' : 'missing',
    detail: seccomp ? `actions: ${seccompActions}` : 'kernel does not report seccomp filter actions',
    neededBy: ['sandbox', 'gvisor', 'docker'],
  });

  const layout = detectCgroupLayout();
  const controllers =
    layout.mode === 'v2' ? layout.v2Controllers.join(' ') : Object.keys(layout.v1Mounts).sort().join(' ');
  checks.push({
    name: 'cgroups',
    status: layout.mode === 'none' ? 'missing' : 'ok',
    detail:
      layout.mode === 'none'
        ? 'no memory/pids/cpu controllers found'
        : `${layout.mode}${layout.mode === 'hybrid' ? ' (v1 controllers + v2 tree for cgroup.kill)' : ''}; controllers: ${controllers}`,
    neededBy: ['sandbox'],
  });

  // Egress: a one-shot helper enters each sandbox's network namespace with nsenter (ADR 0007).
  const nsenter = which('nsenter');
  checks.push({
    name: 'nsenter (network egress)',
    status: nsenter ? 'ok' : 'missing',
    detail: nsenter
      ? `${nsenter}: agents with network.allow rules can reach the egress proxy`
      : 'nsenter not found: agents with network.allow rules are refused',
    ...(nsenter ? {} : { fix: 'apt-get install util-linux' }),
    neededBy: ['sandbox'],
  });

  const runsc = which('runsc');
  checks.push({
    name: 'gVisor (runsc)',
    status: runsc ? 'ok' : 'missing',
    detail: runsc ? `${run(runsc, ['--version']).out.split('\n')[0]} at ${runsc}` : 'runsc not found',
    ...(runsc ? {} : { fix: 'apt-get install runsc' }),
    neededBy: ['gvisor'],
  });

  const dockerd = which('dockerd');
  const socket = ['/var/run/docker.sock', '/run/docker.sock'].find((s) => existsSync(s));
  checks.push({
    name: 'Docker engine',
    status: dockerd && socket ? 'ok' : dockerd ? 'warn' : 'missing',
    detail: dockerd
      ? `dockerd at ${dockerd}; socket ${socket ?? 'absent (daemon not running)'}`
      : 'dockerd not found',
    ...(dockerd ? {} : { fix: 'apt-get install docker.io' }),
    neededBy: ['docker'],
  });

  const kvm = existsSync('/dev/kvm');
  checks.push({
    name: '/dev/kvm',
    status: kvm ? 'ok' : 'missing',
    detail: kvm ? 'KVM available' : 'no /dev/kvm (no hardware virtualisation exposed to this host)',
    ...(kvm ? {} : { fix: 'run on bare metal or a VM with nested virtualisation' }),
    neededBy: ['firecracker'],
  });

  const python = existsSync('/usr/bin/python3');
  checks.push({
    name: 'python3 for agents',
    status: python ? 'ok' : 'warn',
    detail: python ? '/usr/bin/python3' : 'no /usr/bin/python3: python agents cannot run',
    ...(python ? {} : { fix: 'apt-get install python3' }),
    neededBy: ['sandbox'],
  });

  return {
    checks,
    runtimes: {
      sandbox: Boolean(bwrap) && userns && seccomp && layout.mode !== 'none',
      gvisor: false,
      docker: false,
      firecracker: false,
    },
  };
}
