/**
 * `aegis doctor`: what this host can run, probed for real (not guessed from versions or from files being present),
 * for the user running it.
 *
 * Checks come in two groups:
 * - `required`: what the default `sandbox` runtime needs. A `missing` one means no agent can run (exit 3); a `warn`
 *   means some agents are refused (e.g. `network.allow` agents without egress) or run with less separation.
 * - `optional`: the other runtimes (gvisor, docker — agents that ask for them need them) and the bench's peers.
 *
 * Every `fix` is a command or step that works for the current user: `sudo …` when not root, and never a package
 * install that enables nothing (there is no microVM runtime yet, so /dev/kvm has no fix).
 *
 * The host is reached through `HostProbe`, so the logic is unit-tested for root and non-root, cgroup v1 and v2,
 * without changing the machine (`doctor.test.ts`).
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, rmdirSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  RUNTIMES_BY_STRENGTH,
  type RuntimeAvailability,
  type RuntimeName,
} from '../../domain/runtime/capabilities.ts';
import { runtimeEntries } from '../runtimes/registry.ts';
import { CgroupDriver, type CgroupLayout, detectCgroupLayout } from '../runtimes/sandbox/cgroups.ts';
import { resolveSandboxUser, type SandboxUser } from '../runtimes/sandbox/host.ts';

export type CheckStatus = 'ok' | 'warn' | 'missing';
export type CheckGroup = 'required' | 'optional';

export interface DoctorCheck {
  readonly name: string;
  readonly group: CheckGroup;
  readonly status: CheckStatus;
  readonly detail: string;
  /** What to do when it isn't ok — a step that works for the current user. Absent when nothing needs doing. */
  readonly fix?: string;
  /** What needs it: a runtime (`sandbox`), a kind of agent, or `bench`. */
  readonly neededBy: readonly string[];
}

export interface DoctorReport {
  /** Who ran the checks: the answers differ for root and other users. */
  readonly user: { readonly uid: number; readonly root: boolean };
  /** True when no `required` check is `missing`: the default runtime can run agents. */
  readonly ready: boolean;
  readonly checks: readonly DoctorCheck[];
  /** Runtimes this host can run right now, by name (every `spec.isolation` value but `auto`). */
  readonly runtimes: Readonly<Record<string, boolean>>;
  /** The same, strongest first, each with why (not): what `isolation: auto` chooses from. */
  readonly runtimeAvailability: readonly RuntimeAvailability[];
}

export type CgroupProbe =
  | { readonly ok: true; readonly paths: readonly string[] }
  | { readonly ok: false; readonly error: string; readonly paths: readonly string[] };

/** The host as the doctor sees it. `hostProbe()` is the real one. */
export interface HostProbe {
  uid(): number;
  gid(): number;
  env(name: string): string | undefined;
  which(binary: string): string | undefined;
  run(
    command: string,
    args: readonly string[],
    as?: { uid: number; gid: number },
  ): { ok: boolean; out: string };
  readFile(path: string): string | undefined;
  exists(path: string): boolean;
  sandboxUser(): SandboxUser;
  cgroupLayout(): CgroupLayout;
  /** Creates a throwaway sandbox cgroup under `parent` exactly as the runtime would (limits written), then removes it. */
  tryCgroup(layout: CgroupLayout, parent: string): CgroupProbe;
}

export function hostProbe(): HostProbe {
  return {
    uid: () => process.getuid?.() ?? 65534,
    gid: () => process.getgid?.() ?? 65534,
    env: (name) => process.env[name],
    which: (binary) => {
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
    },
    run: (command, args, as) => {
      const result = spawnSync(command, [...args], { encoding: 'utf8', timeout: 10_000, env: {}, ...as });
      return { ok: result.status === 0, out: `${result.stdout ?? ''}${result.stderr ?? ''}`.trim() };
    },
    readFile: (path) => {
      try {
        return readFileSync(path, 'utf8');
      } catch {
        return undefined;
      }
    },
    exists: existsSync,
    sandboxUser: () => resolveSandboxUser(),
    cgroupLayout: () => detectCgroupLayout(),
    tryCgroup: (layout, parent) => {
      const driver = new CgroupDriver(layout, { parent });
      const name = `doctor-${process.pid}`;
      const paths = driver.plannedPaths(name);
      try {
        const group = driver.create(name, { memoryBytes: 64 * 2 ** 20, pids: 16, cpuMillis: 100 });
        for (const dir of [...group.paths].reverse()) rmdirSync(dir); // empty: nothing ever joined it
        return { ok: true, paths };
      } catch (error) {
        return { ok: false, error: error instanceof Error ? error.message : String(error), paths };
      }
    },
  };
}

/** `apt-get install …` as this user can run it. */
function aptInstall(root: boolean, packages: string): string {
  return `${root ? '' : 'sudo '}apt-get install ${packages}`;
}

function cgroupCheck(probe: HostProbe, layout: CgroupLayout, root: boolean): DoctorCheck {
  const parent = probe.env('AEGIS_CGROUP_PARENT') ?? 'aegis';
  const base = { name: 'cgroup limits (writable)', group: 'required' as const, neededBy: ['sandbox'] };
  if (layout.mode === 'none') {
    return {
      ...base,
      status: 'missing',
      detail: 'no memory, pids and cpu cgroup controllers are mounted: limits cannot be enforced',
      fix: 'mount cgroup v2 at /sys/fs/cgroup (or the v1 memory, pids and cpu controllers); see docs/HOST-SETUP.md',
    };
  }
  const controllers =
    layout.mode === 'v2' ? layout.v2Controllers.join(' ') : Object.keys(layout.v1Mounts).sort().join(' ');
  const mode = `${layout.mode}${layout.mode === 'hybrid' ? ' (v1 controllers + v2 tree)' : ''}`;
  const tried = probe.tryCgroup(layout, parent);
  const where = [...new Set(tried.paths.map((path) => dirname(path)))];
  if (tried.ok) {
    return {
      ...base,
      status: 'ok',
      detail: `cgroup ${mode}: created and removed a group with memory, pids and cpu limits (AEGIS_CGROUP_PARENT=${parent}, ${where[0]}${where.length > 1 ? ` and ${where.length - 1} more` : ''}); controllers: ${controllers}`,
    };
  }
  const owner = `${probe.uid()}:${probe.gid()}`;
  const fix = root
    ? `the cgroup tree refused root (${tried.error}): check that /sys/fs/cgroup is mounted read-write and that AEGIS_CGROUP_PARENT names a cgroup without processes of its own`
    : layout.mode === 'v2'
      ? 'run the server as root, or as a systemd service with Delegate=yes and AEGIS_CGROUP_PARENT set to an empty subgroup of its delegated cgroup (docs/HOST-SETUP.md shows the unit)'
      : `run as root, or have root delegate the groups to you — sudo mkdir -p ${where.join(' ')} && sudo chown -R ${owner} ${where.join(' ')} — or run the server as a systemd service with Delegate=yes (docs/HOST-SETUP.md)`;
  return {
    ...base,
    status: 'missing',
    detail: `cgroup ${mode} is present, but uid ${probe.uid()} cannot create a limited group under ${where.join(', ') || parent}: ${tried.error}`,
    fix,
  };
}

export function runDoctor(
  probe: HostProbe = hostProbe(),
  /** The other runtimes' probes (tests pass a fake). @default each registry entry's own probe */
  probeRuntime?: (name: RuntimeName) => RuntimeAvailability,
): DoctorReport {
  const checks: DoctorCheck[] = [];
  const uid = probe.uid();
  const root = uid === 0;
  const user = probe.sandboxUser();

  // ----- required: the default `sandbox` runtime -----
  const bwrap = probe.which('bwrap');
  checks.push({
    name: 'bubblewrap',
    group: 'required',
    status: bwrap ? 'ok' : 'missing',
    detail: bwrap ? `${probe.run(bwrap, ['--version']).out} at ${bwrap}` : 'bwrap not found on PATH',
    ...(bwrap ? {} : { fix: aptInstall(root, 'bubblewrap') }),
    neededBy: ['sandbox'],
  });

  // Grants are bound by descriptor (ADR 0014): a bwrap without --ro-bind-fd (upstream < 0.10; Debian 12 backports it)
  // cannot start a sandbox at all.
  let bindFd = false;
  if (bwrap) {
    bindFd = probe.run(bwrap, ['--help']).out.includes('--ro-bind-fd');
    checks.push({
      name: 'bubblewrap --bind-fd',
      group: 'required',
      status: bindFd ? 'ok' : 'missing',
      detail: bindFd
        ? 'bwrap binds host paths by descriptor (a path swapped during start-up is refused, never mounted)'
        : 'this bwrap lacks --bind-fd/--ro-bind-fd, which AEGIS needs to mount exactly the object it checked',
      ...(bindFd
        ? {}
        : { fix: 'install bubblewrap ≥ 0.10 (Debian 12: 0.8.0-2+deb12u1 or later has it backported)' }),
      neededBy: ['sandbox'],
    });
  }

  let userns = false;
  if (bwrap) {
    const result = probe.run(
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
      root && user.dedicated ? { uid: user.uid, gid: user.gid } : undefined,
    );
    userns = result.ok;
    checks.push({
      name: 'user namespaces',
      group: 'required',
      status: result.ok ? 'ok' : 'missing',
      detail: result.ok
        ? `bwrap created user, pid, net, mount, ipc and uts namespaces as ${user.name} (uid ${user.uid})`
        : `bwrap could not create namespaces as ${user.name} (uid ${user.uid}): ${result.out || 'no message'}`,
      ...(result.ok
        ? {}
        : {
            fix: `${root ? '' : 'sudo '}sysctl -w kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000 (and, on Ubuntu 24.04+, kernel.apparmor_restrict_unprivileged_userns=0); persist it in /etc/sysctl.d/`,
          }),
      neededBy: ['sandbox'],
    });
  }

  const actions = probe.readFile('/proc/sys/kernel/seccomp/actions_avail')?.trim() ?? '';
  const seccomp = actions.includes('errno') && actions.includes('kill_process');
  checks.push({
    name: 'seccomp filters',
    group: 'required',
    status: seccomp ? 'ok' : 'missing',
    detail: seccomp
      ? `actions: ${actions}`
      : 'the kernel reports no seccomp filter actions (CONFIG_SECCOMP_FILTER): syscalls cannot be filtered',
    ...(seccomp
      ? {}
      : { fix: 'use a kernel built with CONFIG_SECCOMP_FILTER=y (every Debian/Ubuntu kernel is)' }),
    neededBy: ['sandbox'],
  });

  const layout = probe.cgroupLayout();
  const cgroup = cgroupCheck(probe, layout, root);
  checks.push(cgroup);

  checks.push(
    root
      ? {
          name: 'sandbox user',
          group: 'required',
          status: user.name === 'aegis-sandbox' || user.name.startsWith('uid ') ? 'ok' : 'warn',
          detail: `sandboxes run as ${user.name} (uid ${user.uid})${user.name === 'nobody' ? ', shared with other services' : ''}`,
          ...(user.name === 'nobody'
            ? { fix: 'npm run setup (creates the aegis-sandbox system user), or set AEGIS_SANDBOX_UID' }
            : {}),
          neededBy: ['sandbox'],
        }
      : {
          name: 'sandbox user',
          group: 'required',
          status: 'warn',
          detail: `not root: sandboxes run as your own uid ${uid} (still without capabilities, in their own namespaces); a dedicated uid needs root`,
          fix: 'run the orchestrator as root for a dedicated aegis-sandbox uid (docs/HOST-SETUP.md)',
          neededBy: ['sandbox'],
        },
  );

  // Egress: a one-shot helper enters each sandbox's network namespace with nsenter, as root (ADR 0007).
  const nsenter = probe.which('nsenter');
  checks.push({
    name: 'network egress',
    group: 'required',
    status: nsenter && root ? 'ok' : 'warn',
    detail:
      nsenter && root
        ? `${nsenter}: agents with network.allow rules reach the egress proxy`
        : !nsenter
          ? 'nsenter not found: agents with network.allow rules are refused (agents without network run)'
          : 'not root: nsenter cannot enter a sandbox network namespace, so agents with network.allow rules are refused (agents without network run)',
    ...(nsenter && root
      ? {}
      : {
          fix: nsenter ? 'run the orchestrator as root (docs/HOST-SETUP.md)' : aptInstall(root, 'util-linux'),
        }),
    neededBy: ['sandbox: agents with network.allow'],
  });

  const python = probe.exists('/usr/bin/python3');
  checks.push({
    name: 'python3 for agents',
    group: 'required',
    status: python ? 'ok' : 'warn',
    detail: python
      ? '/usr/bin/python3'
      : 'no /usr/bin/python3: python agents are refused (node and bash agents run)',
    ...(python ? {} : { fix: aptInstall(root, 'python3') }),
    neededBy: ['sandbox: language python'],
  });

  // ----- optional: the other runtimes (their availability is the Runtimes section below) and the bench's peers -----
  const setupRuntime = (name: string) =>
    root
      ? `npm run setup -- --runtimes ${name}`
      : `sudo npm run setup -- --runtimes ${name} (the runtime itself needs root)`;
  const runsc = probe.which('runsc');
  checks.push({
    name: 'gVisor (runsc)',
    group: 'optional',
    status: runsc ? 'ok' : 'missing',
    detail: `${runsc ? `${probe.run(runsc, ['--version']).out.split('\n')[0]} at ${runsc}` : 'runsc not found'}: the gvisor runtime (isolation: gvisor) and a bench peer`,
    ...(runsc ? {} : { fix: setupRuntime('gvisor') }),
    neededBy: ['gvisor', 'bench'],
  });

  const dockerd = probe.which('dockerd');
  const socket = ['/var/run/docker.sock', '/run/docker.sock'].find((path) => probe.exists(path));
  checks.push({
    name: 'Docker engine',
    group: 'optional',
    status: dockerd ? 'ok' : 'missing',
    detail: `${dockerd ? `dockerd at ${dockerd}, socket ${socket ?? 'absent (not running: start dockerd, or point AEGIS_DOCKER_HOST=unix://… at one)'}` : 'dockerd not found'}: the docker runtime (isolation: docker) and a bench peer`,
    ...(dockerd ? {} : { fix: setupRuntime('docker') }),
    neededBy: ['docker', 'bench'],
  });

  const socat = probe.which('socat');
  const rg = probe.which('rg');
  checks.push({
    name: 'sandbox-runtime peer deps',
    group: 'optional',
    status: socat && rg ? 'ok' : 'missing',
    detail:
      socat && rg
        ? 'socat and ripgrep present (@anthropic-ai/sandbox-runtime needs them on Linux)'
        : `missing ${[socat ? '' : 'socat', rg ? '' : 'ripgrep'].filter(Boolean).join(' and ')}: the bench reports @anthropic-ai/sandbox-runtime absent`,
    ...(socat && rg ? {} : { fix: aptInstall(root, 'socat ripgrep') }),
    neededBy: ['bench'],
  });

  const kvm = probe.exists('/dev/kvm');
  checks.push({
    name: '/dev/kvm',
    group: 'optional',
    status: kvm ? 'ok' : 'missing',
    detail: `${kvm ? 'KVM available' : 'no /dev/kvm (no hardware virtualisation exposed to this host)'}; informational: AEGIS has no Firecracker runtime yet`,
    neededBy: [],
  });

  const sandbox = Boolean(bwrap) && bindFd && userns && seccomp && cgroup.status === 'ok';
  const missingForSandbox = checks
    .filter((check) => check.group === 'required' && check.status === 'missing')
    .map((check) => check.name);
  const entries = new Map(runtimeEntries().map((entry) => [entry.name, entry]));
  const runtimeAvailability = RUNTIMES_BY_STRENGTH.map((name): RuntimeAvailability => {
    if (name === 'sandbox') {
      return {
        name,
        available: sandbox,
        reason: sandbox
          ? 'bubblewrap, user namespaces, seccomp and cgroups checked above'
          : `missing: ${missingForSandbox.join(', ') || 'see the required checks above'}`,
      };
    }
    return probeRuntime
      ? probeRuntime(name)
      : (entries.get(name)?.probe() ?? { name, available: false, reason: 'not registered' });
  });
  return {
    user: { uid, root },
    ready: !checks.some((check) => check.group === 'required' && check.status === 'missing'),
    checks,
    runtimes: Object.fromEntries(runtimeAvailability.map((r) => [r.name, r.available])),
    runtimeAvailability,
  };
}

/** The human rendering `aegis doctor` prints: required checks, then optional ones, then the verdict. */
export function formatDoctorReport(report: DoctorReport): string {
  const icon = { ok: '✓', warn: '!', missing: '✗' } as const;
  // An absent optional item is not a fault: shown as "-", not as a red cross.
  const iconFor = (check: DoctorCheck) =>
    check.group === 'optional' && check.status === 'missing' ? '-' : icon[check.status];
  const lines: string[] = [];
  const title = {
    required: 'Required (the default sandbox runtime)',
    optional: 'Optional (other runtimes, bench peers)',
  };
  for (const group of ['required', 'optional'] as const) {
    lines.push(`${title[group]}:`);
    for (const check of report.checks.filter((c) => c.group === group)) {
      lines.push(`  ${iconFor(check)} ${check.name.padEnd(28)}${check.detail}`);
      if (check.fix && check.status !== 'ok') lines.push(`    ${''.padEnd(28)}fix: ${check.fix}`);
    }
  }
  lines.push('Runtimes (strongest first; isolation: auto takes the first available):');
  for (const runtime of report.runtimeAvailability) {
    lines.push(`  ${runtime.available ? '✓' : '-'} ${runtime.name.padEnd(28)}${runtime.reason}`);
  }
  const who = report.user.root ? 'root' : `uid ${report.user.uid}`;
  lines.push(
    report.ready
      ? `Ready: agents run in the sandbox runtime (checked as ${who}).`
      : `Not ready: fix the ✗ required checks above (checked as ${who}); \`aegis run\` refuses with exit 3 until then.`,
  );
  return `${lines.join('\n')}\n`;
}
