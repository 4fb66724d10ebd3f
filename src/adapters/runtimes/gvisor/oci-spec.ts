/**
 * The OCI runtime spec (`config.json`) runsc runs for one agent, as a pure function of a plan — so the hardening is
 * reviewable in one place and unit-testable without runsc (the gVisor counterpart of ../sandbox/bwrap-args.ts).
 *
 * The root is a read-only directory AEGIS generates (static-rootfs.ts: empty mount points, merged-/usr symlinks,
 * synthesised /etc files); the host's /usr and the interpreter's /etc files are bound read-only on top, like the
 * sandbox runtime's view. Everything an agent or tenant can influence (its directory, grants, the I/O files) is
 * bound from `/proc/<pid>/fd/<n>`: a descriptor opened and checked by mount-source.ts and held by the process that
 * runs `runsc create`, so runsc's gofer mounts the object that was checked, not whatever the path names later.
 */

/** A host object bound into the container: a system path, or the magic link of a held, checked descriptor. */
export interface OciBind {
  readonly source: string;
  readonly target: string;
  readonly writable: boolean;
}

export interface OciPlan {
  /** uid/gid the agent runs as (the host's sandbox user: gVisor checks file modes against it). */
  readonly uid: number;
  readonly gid: number;
  readonly hostname: string;
  readonly env: Readonly<Record<string, string>>;
  readonly argv: readonly string[];
  /** The read-only root directory: generated, or a custom image's (images/store.ts). */
  readonly rootfs: string;
  /** Bind the host's /usr (and /bin… when not merged) over the root: the default rootfs; false for an image. */
  readonly hostView?: boolean;
  readonly mergedUsr: boolean;
  /** Host /etc entries bound read-only at the same path. */
  readonly etcFiles: readonly string[];
  /** Extra read-only binds of interpreter binaries: host path → path inside. */
  readonly binaries: Readonly<Record<string, string>>;
  readonly agentDir: string;
  readonly inputFile: string;
  readonly outputFile: string;
  readonly mounts: readonly OciBind[];
  /** Size cap of each writable tmpfs (/workspace, /tmp, /dev/shm), bytes. */
  readonly diskBytes: number;
  /**
   * `none`: the container gets a network namespace of its own (gVisor's netstack with only loopback).
   * `host`: no network namespace in the spec — the sandbox uses the namespace runsc is started in (runsc
   * `--network=host`), a private one AEGIS made that holds only `lo` and the egress proxy's listener.
   */
  readonly network: 'none' | 'host';
  /** RLIMIT_NOFILE for the agent. */
  readonly maxOpenFiles: number;
}

export interface OciMount {
  readonly destination: string;
  readonly type: string;
  readonly source: string;
  readonly options?: readonly string[];
}

export interface OciSpec {
  readonly ociVersion: string;
  readonly process: {
    readonly user: { readonly uid: number; readonly gid: number; readonly additionalGids: readonly number[] };
    readonly args: readonly string[];
    readonly env: readonly string[];
    readonly cwd: string;
    readonly capabilities: Readonly<Record<string, readonly string[]>>;
    readonly noNewPrivileges: boolean;
    readonly rlimits: readonly { readonly type: string; readonly hard: number; readonly soft: number }[];
  };
  readonly root: { readonly path: string; readonly readonly: boolean };
  readonly hostname: string;
  readonly mounts: readonly OciMount[];
  readonly linux: {
    readonly namespaces: readonly { readonly type: string }[];
    readonly maskedPaths: readonly string[];
    readonly readonlyPaths: readonly string[];
  };
}

const NO_CAPABILITIES = { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] };

export function buildOciSpec(plan: OciPlan): OciSpec {
  const ro = (source: string, destination: string): OciMount => ({
    destination,
    type: 'bind',
    source,
    options: ['rbind', 'ro', 'nosuid', 'nodev'],
  });
  const tmpfs = (destination: string, mode: string): OciMount => ({
    destination,
    type: 'tmpfs',
    source: 'tmpfs',
    options: ['nosuid', 'nodev', `size=${plan.diskBytes}`, `mode=${mode}`],
  });
  const mounts: OciMount[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    // gVisor populates its own /dev (null, zero, random, urandom, tty, fd links) on this tmpfs.
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755'] },
    tmpfs('/dev/shm', '1777'),
  ];
  const hostView = plan.hostView ?? true;
  if (hostView) mounts.push(ro('/usr', '/usr'));
  if (hostView && !plan.mergedUsr) {
    for (const dir of ['/bin', '/sbin', '/lib', '/lib64']) mounts.push(ro(dir, dir));
  }
  for (const file of plan.etcFiles) mounts.push(ro(file, file));
  for (const [source, target] of Object.entries(plan.binaries)) mounts.push(ro(source, target));
  // /workspace is the agent's home. This gVisor build ignores tmpfs uid=/gid= (and size=), so it is 1777 rather
  // than the sandbox runtime's 0700-owned-by-the-agent: the only other identity inside is the idle init (nobody).
  mounts.push(tmpfs('/tmp', '1777'), tmpfs('/workspace', '1777'));
  mounts.push(ro(plan.agentDir, '/agent'));
  mounts.push(ro(plan.inputFile, '/run/aegis/input.json'));
  mounts.push({
    destination: '/run/aegis/output.json',
    type: 'bind',
    source: plan.outputFile,
    options: ['rbind', 'rw', 'nosuid', 'nodev'],
  });
  for (const mount of plan.mounts) {
    mounts.push(
      mount.writable
        ? {
            destination: mount.target,
            type: 'bind',
            source: mount.source,
            options: ['rbind', 'rw', 'nosuid', 'nodev'],
          }
        : ro(mount.source, mount.target),
    );
  }
  const namespaces = ['pid', 'ipc', 'uts', 'mount', ...(plan.network === 'none' ? ['network'] : [])];
  return {
    ociVersion: '1.0.2',
    process: {
      user: { uid: plan.uid, gid: plan.gid, additionalGids: [] },
      args: [...plan.argv],
      env: Object.entries(plan.env).map(([name, value]) => `${name}=${value}`),
      cwd: '/agent',
      capabilities: NO_CAPABILITIES,
      noNewPrivileges: true,
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: plan.maxOpenFiles, soft: plan.maxOpenFiles }],
    },
    root: { path: plan.rootfs, readonly: true },
    hostname: plan.hostname,
    mounts,
    linux: {
      namespaces: namespaces.map((type) => ({ type })),
      maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware'],
      readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger', '/proc/irq', '/proc/bus'],
    },
  };
}
