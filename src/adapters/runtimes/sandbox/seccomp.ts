/**
 * The sandbox's seccomp filter: a classic-BPF program generated here in plain TypeScript (no libseccomp), handed
 * to `bwrap --seccomp FD`, which installs it with SECCOMP_SET_MODE_FILTER just before exec'ing the agent.
 *
 * Policy: default-allow with a deny-list on top (the Docker / Flatpak model). Namespaces, cgroups and the
 * unprivileged uid do the containment; the filter removes kernel surface an agent has no business touching —
 * mounts, namespaces, tracing, keyrings, eBPF, io_uring, kernel modules, clocks. Socket families are the one
 * allow-list inside it: socket()/socketpair() of anything but AF_UNIX/AF_INET/AF_INET6 fail with EAFNOSUPPORT.
 * (io_uring's IORING_OP_SOCKET is no side door: io_uring_setup is denied; the 32-bit socketcall is killed by the
 * arch check; accept() only returns the listener's family.) A refused call is an errno, not an audit event: the
 * kernel answers it without telling the supervisor (that would need SECCOMP_RET_USER_NOTIF or RET_LOG).
 *
 * Program shape (every jump is short, so the u8 jump offsets never overflow however long the list grows):
 *
 *   A = seccomp_data.arch;  if A != AUDIT_ARCH_<arch> → KILL_PROCESS     (also stops i386 `int 0x80` / AArch32,
 *                                                                          and so socketcall(2), which has no rule)
 *   A = seccomp_data.nr;    x86-64 only: if A >= 0x40000000 → KILL_PROCESS (the x32 ABI aliases every syscall)
 *   for each denied syscall:  if A == nr → { [argument test] → RET action }   (one short block each)
 *   RET ALLOW
 *
 * Syscalls whose verdict depends only on `nr` let the kernel (5.11+) cache the verdict in its per-syscall bitmap,
 * so the linear list costs nothing on the hot path for read/write/openat/….
 */
import { AegisError } from '../../../domain/errors.ts';

export type SeccompArch = 'x86_64' | 'aarch64';

/** What a denied call sees: always an errno (never a kill), so runtimes can fall back or report cleanly. */
export type DenyErrno = 'EPERM' | 'ENOSYS' | 'EAFNOSUPPORT';

/**
 * An argument condition; the syscall is denied only when it holds. Tests the low 32 bits of the argument —
 * every argument tested here is an `int`/`unsigned int` (or, for clone, truncated to 32 bits) in the kernel,
 * so the high word cannot smuggle a different value past the filter.
 */
export type ArgTest =
  | { readonly arg: number; readonly anyBitOf: number }
  | { readonly arg: number; readonly oneOf: readonly number[] }
  | { readonly arg: number; readonly noneOf: readonly number[] };

export interface DeniedSyscall {
  /** Syscall number per architecture; `null` where the syscall does not exist on that architecture. */
  readonly nr: Readonly<Record<SeccompArch, number | null>>;
  readonly errno: DenyErrno;
  /** Deny only when this holds; absent = always denied. */
  readonly when?: ArgTest;
  /** Why an agent must not have it (for docs and `aegis doctor`). */
  readonly why: string;
}

// --- Constants (include/uapi/linux/{seccomp,audit,sched,...}.h, asm-generic/errno*.h) ------------------------

const AUDIT_ARCH: Readonly<Record<SeccompArch, number>> = {
  x86_64: 0xc000003e,
  aarch64: 0xc00000b7,
};
/** x86-64 syscall numbers with this bit set enter the x32 ABI, which would alias every rule below. */
const X32_SYSCALL_BIT = 0x40000000;

const SECCOMP_RET_KILL_PROCESS = 0x80000000;
const SECCOMP_RET_ERRNO = 0x00050000;
const SECCOMP_RET_ALLOW = 0x7fff0000;

/** errno values; identical on x86-64 and aarch64 (both use asm-generic/errno.h). */
const ERRNO: Readonly<Record<DenyErrno, number>> = { EPERM: 1, ENOSYS: 38, EAFNOSUPPORT: 97 };

const CLONE_NEWNS = 0x00020000;
const CLONE_NEWCGROUP = 0x02000000;
const CLONE_NEWUTS = 0x04000000;
const CLONE_NEWIPC = 0x08000000;
const CLONE_NEWUSER = 0x10000000;
const CLONE_NEWPID = 0x20000000;
const CLONE_NEWNET = 0x40000000;
/** Every namespace flag clone(2) accepts (CLONE_NEWTIME only exists for clone3/unshare, both denied outright). */
const CLONE_NAMESPACE_FLAGS =
  CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET;

/**
 * The only socket families an agent may create. Network namespaces isolate these (abstract AF_UNIX names are per
 * network namespace too); other families are not all isolated — AF_VSOCK is host-global (a channel to the
 * hypervisor and to guests), AF_NETLINK configures the kernel, AF_PACKET/AF_XDP see raw frames, and most of the
 * rest (AF_KEY, AF_ALG, AF_RDS, AF_TIPC, AF_CAN, AF_BLUETOOTH…) are kernel surface with CVE records and no use here.
 */
export const ALLOWED_SOCKET_FAMILIES: Readonly<Record<string, number>> = {
  AF_UNIX: 1,
  AF_INET: 2,
  AF_INET6: 10,
};
const SOCKET_FAMILY_ALLOW_LIST = Object.values(ALLOWED_SOCKET_FAMILIES);
const TIOCSTI = 0x5412;
const TIOCLINUX = 0x541c;
/** personality(2) values that change nothing: PER_LINUX, and 0xffffffff which only queries. */
const PERSONALITY_QUERY = 0xffffffff;
const PER_LINUX = 0;

// --- The deny-list -----------------------------------------------------------------------------------------
// Numbers: x86-64 from arch/x86/entry/syscalls/syscall_64.tbl, aarch64 from include/uapi/asm-generic/unistd.h
// (checked against the host's kernel headers by seccomp.test.ts). 424+ are shared by every architecture.

const always = (x86_64: number | null, aarch64: number | null, why: string): DeniedSyscall => ({
  nr: { x86_64, aarch64 },
  errno: 'EPERM',
  why,
});

export const DENIED_SYSCALLS: Readonly<Record<string, DeniedSyscall>> = {
  // Filesystem namespace: the sandbox's view of the filesystem is fixed by bwrap before the agent starts.
  mount: always(165, 40, 'mounting filesystems would change the sandbox view bwrap set up'),
  umount2: always(166, 39, 'unmounting could expose what bwrap mounted over'),
  pivot_root: always(155, 41, 'changes the root filesystem'),
  chroot: always(161, 51, 'changes the root directory (classic escape building block)'),
  mount_setattr: always(442, 442, 'changes mount flags (e.g. could drop read-only)'),
  fsopen: always(430, 430, 'new mount API: creates a filesystem context'),
  fsconfig: always(431, 431, 'new mount API: configures a filesystem context'),
  fsmount: always(432, 432, 'new mount API: creates a mount'),
  fspick: always(433, 433, 'new mount API: reconfigures an existing mount'),
  move_mount: always(429, 429, 'new mount API: attaches a mount'),
  open_tree: always(428, 428, 'new mount API: clones a mount tree'),
  open_tree_attr: always(467, 467, 'new mount API (6.15+): clones a mount tree with new attributes'),
  open_by_handle_at: always(304, 265, 'opens files by handle, bypassing path checks (the "shocker" escape)'),
  name_to_handle_at: always(303, 264, 'companion of open_by_handle_at; leaks file handles'),

  // Namespaces: nesting them is the usual first step of kernel exploits; bwrap already set up ours.
  unshare: always(272, 97, 'creates new namespaces (user namespaces expose root-only kernel code)'),
  setns: always(308, 268, 'joins other namespaces'),
  clone: {
    nr: { x86_64: 56, aarch64: 220 },
    errno: 'EPERM',
    when: { arg: 0, anyBitOf: CLONE_NAMESPACE_FLAGS },
    why: 'only with CLONE_NEW* flags: creating namespaces (plain fork/threads stay allowed)',
  },
  clone3: {
    nr: { x86_64: 435, aarch64: 435 },
    errno: 'ENOSYS',
    why: 'its flags sit behind a pointer the filter cannot read; ENOSYS makes glibc fall back to clone',
  },

  // Other processes' memory and state.
  ptrace: always(101, 117, 'tracing other processes (read/write their memory and registers)'),
  process_vm_readv: always(310, 270, "reads another process's memory"),
  process_vm_writev: always(311, 271, "writes another process's memory"),
  pidfd_getfd: always(438, 438, "steals another process's file descriptors"),
  kcmp: always(312, 272, 'compares kernel objects of other processes (kernel address side channel)'),

  // Kernel attack surface with a long CVE record and no use in an agent.
  bpf: always(321, 280, 'loads eBPF programs and maps'),
  perf_event_open: always(298, 241, 'performance counters: side channels and a large kernel surface'),
  userfaultfd: always(323, 282, 'used to win kernel race conditions in exploits'),
  keyctl: always(250, 219, 'kernel keyrings are not namespaced'),
  add_key: always(248, 217, 'kernel keyrings are not namespaced'),
  request_key: always(249, 218, 'kernel keyrings are not namespaced'),
  io_uring_setup: {
    nr: { x86_64: 425, aarch64: 425 },
    errno: 'ENOSYS',
    why: 'io_uring bypasses seccomp for the operations it performs; ENOSYS makes libuv/Node fall back',
  },
  io_uring_enter: {
    nr: { x86_64: 426, aarch64: 426 },
    errno: 'ENOSYS',
    why: 'io_uring bypasses seccomp for the operations it performs',
  },
  io_uring_register: {
    nr: { x86_64: 427, aarch64: 427 },
    errno: 'ENOSYS',
    why: 'io_uring bypasses seccomp for the operations it performs',
  },
  fanotify_init: always(300, 262, 'filesystem-wide event monitoring'),
  lookup_dcookie: always(212, 18, 'profiling interface that leaks kernel data'),
  personality: {
    nr: { x86_64: 135, aarch64: 92 },
    errno: 'EPERM',
    when: { arg: 0, noneOf: [PER_LINUX, PERSONALITY_QUERY] },
    why: 'only to change it: could disable ASLR (ADDR_NO_RANDOMIZE) or enable legacy behaviour; querying is allowed',
  },

  // Whole-machine state: the host's, not the sandbox's.
  reboot: always(169, 142, 'reboots the machine or loads a kexec kernel'),
  kexec_load: always(246, 104, 'loads a new kernel'),
  kexec_file_load: always(320, 294, 'loads a new kernel'),
  init_module: always(175, 105, 'loads a kernel module'),
  finit_module: always(313, 273, 'loads a kernel module'),
  delete_module: always(176, 106, 'unloads a kernel module'),
  swapon: always(167, 224, 'changes host swap'),
  swapoff: always(168, 225, 'changes host swap'),
  acct: always(163, 89, 'switches process accounting on the host'),
  quotactl: always(179, 60, 'manages filesystem quotas'),
  quotactl_fd: always(443, 443, 'manages filesystem quotas'),
  syslog: always(103, 116, 'reads the kernel log (kernel addresses)'),
  settimeofday: always(164, 170, 'sets the clock (not namespaced)'),
  clock_settime: always(227, 112, 'sets the clock (not namespaced)'),
  clock_adjtime: always(305, 266, 'adjusts the clock (not namespaced)'),
  adjtimex: always(159, 171, 'adjusts the clock (not namespaced)'),
  vhangup: always(153, 58, 'hangs up the controlling terminal'),
  iopl: always(172, null, 'raw I/O port access (x86 only)'),
  ioperm: always(173, null, 'raw I/O port access (x86 only)'),

  // Obsolete interfaces nothing modern calls; fewer entry points is the point.
  nfsservctl: always(180, 42, 'removed NFS server interface'),
  uselib: always(134, null, 'loads a.out shared libraries (x86 only)'),
  ustat: always(136, null, 'obsolete filesystem statistics (x86 only)'),
  sysfs: always(139, null, 'obsolete filesystem type query (x86 only)'),
  _sysctl: always(156, null, 'removed binary sysctl interface (x86 only)'),

  // Sockets and terminals.
  socket: {
    nr: { x86_64: 41, aarch64: 198 },
    errno: 'EAFNOSUPPORT',
    when: { arg: 0, noneOf: SOCKET_FAMILY_ALLOW_LIST },
    why: 'every family but AF_UNIX/AF_INET/AF_INET6: AF_VSOCK is host-global, AF_NETLINK/AF_PACKET/AF_XDP reach the kernel and raw frames',
  },
  socketpair: {
    nr: { x86_64: 53, aarch64: 199 },
    errno: 'EAFNOSUPPORT',
    when: { arg: 0, noneOf: SOCKET_FAMILY_ALLOW_LIST },
    why: 'every family but AF_UNIX/AF_INET/AF_INET6, as for socket',
  },
  ioctl: {
    nr: { x86_64: 16, aarch64: 29 },
    errno: 'EPERM',
    when: { arg: 1, oneOf: [TIOCSTI, TIOCLINUX] },
    why: 'only TIOCSTI/TIOCLINUX: injecting keystrokes into the terminal the sandbox was started from',
  },
};

// --- Classic BPF -------------------------------------------------------------------------------------------

/** One `struct sock_filter`. */
interface Insn {
  readonly code: number;
  readonly jt: number;
  readonly jf: number;
  readonly k: number;
}

const BPF_LD_W_ABS = 0x00 | 0x00 | 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JEQ_K = 0x05 | 0x10 | 0x00; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JMP_JGE_K = 0x05 | 0x30 | 0x00; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JMP_JSET_K = 0x05 | 0x40 | 0x00; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K = 0x06 | 0x00; // BPF_RET | BPF_K

/** struct seccomp_data offsets; args are u64, and on little-endian the low word comes first. */
const DATA_NR = 0;
const DATA_ARCH = 4;
const dataArgLow = (index: number): number => 16 + 8 * index;

const load = (offset: number): Insn => ({ code: BPF_LD_W_ABS, jt: 0, jf: 0, k: offset });
const ret = (k: number): Insn => ({ code: BPF_RET_K, jt: 0, jf: 0, k });
const jeq = (k: number, jt: number, jf: number): Insn => ({ code: BPF_JMP_JEQ_K, jt, jf, k });
const jge = (k: number, jt: number, jf: number): Insn => ({ code: BPF_JMP_JGE_K, jt, jf, k });
const jset = (k: number, jt: number, jf: number): Insn => ({ code: BPF_JMP_JSET_K, jt, jf, k });

const denyWith = (errno: DenyErrno): number => SECCOMP_RET_ERRNO | ERRNO[errno];

/** The verdict for a syscall whose number matched: a straight return, or an argument test ending in returns. */
function verdict(rule: DeniedSyscall): Insn[] {
  const deny = ret(denyWith(rule.errno));
  const allow = ret(SECCOMP_RET_ALLOW);
  const test = rule.when;
  if (test === undefined) return [deny];
  const loadArg = load(dataArgLow(test.arg));
  if ('anyBitOf' in test) return [loadArg, jset(test.anyBitOf, 0, 1), deny, allow];
  // A chain of JEQs that all jump to the final "matched" return: [JEQ v0 … JEQ vn-1, RET unmatched, RET matched].
  const values = 'oneOf' in test ? test.oneOf : test.noneOf;
  const [matched, unmatched] = 'oneOf' in test ? [deny, allow] : [allow, deny];
  const chain = values.map((value, i) => jeq(value >>> 0, values.length - i, 0));
  return [loadArg, ...chain, unmatched, matched];
}

function buildInstructions(arch: SeccompArch): Insn[] {
  const kill = ret(SECCOMP_RET_KILL_PROCESS);
  const program: Insn[] = [load(DATA_ARCH), jeq(AUDIT_ARCH[arch], 1, 0), kill, load(DATA_NR)];
  if (arch === 'x86_64') program.push(jge(X32_SYSCALL_BIT, 0, 1), kill);
  for (const rule of Object.values(DENIED_SYSCALLS)) {
    const nr = rule.nr[arch];
    if (nr === null) continue;
    // Each verdict block ends in RET, so A still holds `nr` whenever we fall through to the next comparison.
    const body = verdict(rule);
    program.push(jeq(nr, 0, body.length), ...body);
  }
  program.push(ret(SECCOMP_RET_ALLOW));
  return program;
}

/** Size of one `struct sock_filter` (u16 code, u8 jt, u8 jf, u32 k). */
const SOCK_FILTER_BYTES = 8;
/** BPF_MAXINSNS: the kernel rejects longer classic-BPF programs. */
const MAX_INSNS = 4096;

/** The raw program for `bwrap --seccomp FD`: `struct sock_filter[]`, little-endian (both arches are LE). */
export function buildSeccompProgram(arch: SeccompArch): Buffer {
  const program = buildInstructions(arch);
  if (program.length > MAX_INSNS) throw new Error(`seccomp program too long: ${program.length} instructions`);
  const out = Buffer.alloc(program.length * SOCK_FILTER_BYTES);
  program.forEach((insn, i) => {
    if (insn.jt > 255 || insn.jf > 255) throw new Error(`seccomp jump out of range at instruction ${i}`);
    const at = i * SOCK_FILTER_BYTES;
    out.writeUInt16LE(insn.code, at);
    out.writeUInt8(insn.jt, at + 2);
    out.writeUInt8(insn.jf, at + 3);
    out.writeUInt32LE(insn.k >>> 0, at + 4);
  });
  return out;
}

/** The seccomp architecture of this Node process (the sandbox runs binaries of the same architecture). */
export function hostSeccompArch(arch: string = process.arch): SeccompArch {
  if (arch === 'x64') return 'x86_64';
  if (arch === 'arm64') return 'aarch64';
  throw new AegisError(
    'RUNTIME_UNAVAILABLE',
    `the sandbox seccomp filter does not support CPU architecture ${arch}`,
    {
      details: { arch },
      hint: 'run AEGIS on x86-64 or aarch64 Linux',
    },
  );
}
