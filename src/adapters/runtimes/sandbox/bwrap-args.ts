/**
 * The bubblewrap command line for one sandbox, as a pure function of a plan — so the hardening flags are
 * reviewable in one place and unit-testable without spawning anything. The benchmark's "floor" uses the same
 * builder, so the comparison is flag-for-flag.
 */

/**
 * A host object to bind: a path bubblewrap resolves itself (system paths only: /usr, /etc files, the runtime's own
 * root-owned static files), or the descriptor of an object already opened and checked (everything an agent or a
 * tenant can influence — see mount-source.ts): bubblewrap binds exactly that object (`--bind-fd`).
 */
export type HostSource = string | { readonly fd: number };

export interface BwrapMount {
  readonly source: HostSource;
  readonly target: string;
  readonly writable: boolean;
}

export interface BwrapPlan {
  /** uid/gid the agent sees inside (mapped to the unprivileged host uid bwrap runs as). */
  readonly innerUid: number;
  readonly innerGid: number;
  readonly hostname: string;
  readonly env: Readonly<Record<string, string>>;
  readonly mergedUsr: boolean;
  /** Host /etc entries bound read-only at the same path. */
  readonly etcFiles: readonly string[];
  /** Synthesised /etc files: target → host file (bound). */
  readonly generatedEtc: Readonly<Record<string, string>>;
  /**
   * Small files copied into the sandbox's own root (bwrap `--file`): target → an open descriptor to read and the
   * mode. Not a mount, so nothing of their host path shows in the agent's /proc/self/mountinfo (ADR 0015).
   */
  readonly files?: Readonly<Record<string, { readonly fd: number; readonly mode: number }>>;
  /** Host directory bound read-only at /agent (working directory). */
  readonly agentDir: HostSource;
  /** Host file bound read-only at /run/aegis/input.json. */
  readonly inputFile: HostSource | undefined;
  /** Host file bound read-write at /run/aegis/output.json. */
  readonly outputFile: HostSource | undefined;
  /** Extra read-only binds of interpreter binaries: host path → path inside. */
  readonly binaries: Readonly<Record<string, string>>;
  readonly mounts: readonly BwrapMount[];
  /** Size cap of each writable tmpfs (/workspace, /tmp, /dev/shm), bytes. */
  readonly diskBytes: number;
  readonly argv: readonly string[];
  /** Child fd numbers for the control pipes; omit to leave the feature out. */
  readonly fds: { readonly seccomp?: number; readonly info?: number; readonly block?: number };
}

export function buildBwrapArgs(plan: BwrapPlan): string[] {
  const args: string[] = [
    // Namespaces: user, ipc, pid, net (only `lo`), uts, cgroup. Nested user namespaces are disabled.
    '--unshare-all',
    '--unshare-user',
    '--disable-userns',
    '--uid',
    String(plan.innerUid),
    '--gid',
    String(plan.innerGid),
    '--hostname',
    plan.hostname,
    // Lifetime and terminal: the sandbox dies with the orchestrator and can't inject keystrokes into its tty.
    '--die-with-parent',
    '--new-session',
    '--cap-drop',
    'ALL',
    // Clean environment: nothing of the host's.
    '--clearenv',
  ];
  for (const [name, value] of Object.entries(plan.env)) args.push('--setenv', name, value);

  // Read-only root made only of what interpreters need.
  args.push('--ro-bind', '/usr', '/usr');
  if (plan.mergedUsr) {
    args.push('--symlink', 'usr/bin', '/bin', '--symlink', 'usr/sbin', '/sbin');
    args.push('--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64');
  } else {
    for (const dir of ['/bin', '/sbin', '/lib', '/lib64']) args.push('--ro-bind-try', dir, dir);
  }
  for (const file of plan.etcFiles) args.push('--ro-bind', file, file);
  for (const [target, source] of Object.entries(plan.generatedEtc)) args.push('--ro-bind', source, target);
  for (const [target, file] of Object.entries(plan.files ?? {})) {
    args.push('--perms', file.mode.toString(8).padStart(4, '0'), '--file', String(file.fd), target);
  }
  for (const [source, target] of Object.entries(plan.binaries)) args.push('--ro-bind', source, target);

  // Kernel interfaces: a private /proc (only the sandbox's processes) and a minimal /dev. bwrap's /dev is a
  // writable, uncapped tmpfs of its own: POSIX shared memory gets a capped tmpfs, and /dev is made read-only below.
  args.push('--proc', '/proc', '--dev', '/dev');
  args.push('--size', String(plan.diskBytes), '--perms', '1777', '--tmpfs', '/dev/shm');

  // Writable scratch, capped.
  args.push('--size', String(plan.diskBytes), '--perms', '1777', '--tmpfs', '/tmp');
  args.push('--size', String(plan.diskBytes), '--perms', '0700', '--tmpfs', '/workspace');

  // Agent code, read-only; the I/O files of the AEGIS contract.
  args.push(...bind(plan.agentDir, '/agent', false));
  if (plan.inputFile) args.push(...bind(plan.inputFile, '/run/aegis/input.json', false));
  if (plan.outputFile) args.push(...bind(plan.outputFile, '/run/aegis/output.json', true));

  // Host paths the manifest grants, at their targets.
  for (const mount of plan.mounts) args.push(...bind(mount.source, mount.target, mount.writable));

  // Everything not mounted above stays on bwrap's root tmpfs, which becomes read-only; so does /dev's.
  args.push('--remount-ro', '/dev', '--remount-ro', '/', '--chdir', '/agent');

  if (plan.fds.seccomp !== undefined) args.push('--seccomp', String(plan.fds.seccomp));
  if (plan.fds.info !== undefined) args.push('--info-fd', String(plan.fds.info));
  if (plan.fds.block !== undefined) args.push('--block-fd', String(plan.fds.block));
  args.push('--', ...plan.argv);
  return args;
}

function bind(source: HostSource, target: string, writable: boolean): string[] {
  if (typeof source === 'string') return [writable ? '--bind' : '--ro-bind', source, target];
  return [writable ? '--bind-fd' : '--ro-bind-fd', String(source.fd), target];
}
