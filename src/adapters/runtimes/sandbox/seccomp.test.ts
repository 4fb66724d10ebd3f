import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import type { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { reachable } from './host.ts';
import { buildSeccompProgram, DENIED_SYSCALLS, hostSeccompArch, type SeccompArch } from './seccomp.ts';

// Values restated from the kernel headers on purpose: the tests must not share a typo with the code under test.
const AUDIT_ARCH = { x86_64: 0xc000003e, aarch64: 0xc00000b7, i386: 0x40000003, arm: 0x40000028 };
const RET_KILL_PROCESS = 0x80000000;
const RET_ALLOW = 0x7fff0000;
const retErrno = (errno: number): number => 0x00050000 | errno;
const EPERM = retErrno(1);
const ENOSYS = retErrno(38);
const EAFNOSUPPORT = retErrno(97);
const ERRNO_OF = { EPERM, ENOSYS, EAFNOSUPPORT };

/** Syscalls that must stay allowed, numbered independently of seccomp.ts. */
const ALLOWED: Readonly<Record<SeccompArch, Readonly<Record<string, number>>>> = {
  x86_64: {
    read: 0,
    write: 1,
    mmap: 9,
    openat: 257,
    execve: 59,
    exit_group: 231,
    landlock_create_ruleset: 444,
  },
  aarch64: {
    read: 63,
    write: 64,
    mmap: 222,
    openat: 56,
    execve: 221,
    exit_group: 94,
    landlock_create_ruleset: 444,
  },
};
const NR = {
  x86_64: { clone: 56, socket: 41, socketpair: 53, ioctl: 16, personality: 135, mount: 165 },
  aarch64: { clone: 220, socket: 198, socketpair: 199, ioctl: 29, personality: 92, mount: 40 },
};
const ARCHES: readonly SeccompArch[] = ['x86_64', 'aarch64'];

// --- A classic-BPF interpreter, with the kernel's load-time checks -----------------------------------------

const BPF = {
  LD_W_ABS: 0x20,
  ALU_AND_K: 0x54,
  JA: 0x05,
  JEQ_K: 0x15,
  JGT_K: 0x25,
  JGE_K: 0x35,
  JSET_K: 0x45,
  RET_K: 0x06,
} as const;
const SECCOMP_DATA_BYTES = 64;

interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

function decode(program: Buffer): Insn[] {
  assert.equal(program.length % 8, 0, 'program is a whole number of sock_filter structs');
  const insns: Insn[] = [];
  for (let at = 0; at < program.length; at += 8) {
    insns.push({
      code: program.readUInt16LE(at),
      jt: program.readUInt8(at + 2),
      jf: program.readUInt8(at + 3),
      k: program.readUInt32LE(at + 4),
    });
  }
  return insns;
}

/** What bpf_check_classic + seccomp_check_filter would reject. */
function checkLikeKernel(insns: readonly Insn[]): void {
  assert.ok(insns.length >= 1 && insns.length <= 4096, `length ${insns.length} within BPF_MAXINSNS`);
  const known = new Set<number>(Object.values(BPF));
  insns.forEach((insn, pc) => {
    assert.ok(known.has(insn.code), `insn ${pc}: opcode 0x${insn.code.toString(16)} is supported`);
    if (insn.code === BPF.LD_W_ABS) {
      assert.ok(
        insn.k % 4 === 0 && insn.k < SECCOMP_DATA_BYTES,
        `insn ${pc}: aligned load inside seccomp_data`,
      );
    } else if (insn.code === BPF.JA) {
      assert.ok(pc + 1 + insn.k < insns.length, `insn ${pc}: JA target in range`);
    } else if ((insn.code & 0x07) === 0x05) {
      assert.ok(pc + 1 + Math.max(insn.jt, insn.jf) < insns.length, `insn ${pc}: jump targets in range`);
    }
  });
  assert.equal(insns.at(-1)?.code, BPF.RET_K, 'last instruction is a return');
}

interface SeccompData {
  readonly nr: number;
  readonly arch: number;
  readonly args?: readonly bigint[];
}

function runFilter(insns: readonly Insn[], data: SeccompData): number {
  const input = Buffer.alloc(SECCOMP_DATA_BYTES);
  input.writeUInt32LE(data.nr >>> 0, 0);
  input.writeUInt32LE(data.arch >>> 0, 4);
  for (const [i, arg] of (data.args ?? []).entries())
    input.writeBigUInt64LE(BigInt.asUintN(64, arg), 16 + 8 * i);
  let a = 0;
  let pc = 0;
  // Classic BPF only jumps forward, so this always ends; the bound turns a bug into a failure, not a hang.
  for (let steps = 0; steps < insns.length; steps++) {
    const insn = insns[pc];
    assert.ok(insn, `pc ${pc} inside program`);
    const jump = (taken: boolean): void => {
      pc += 1 + (taken ? insn.jt : insn.jf);
    };
    switch (insn.code) {
      case BPF.LD_W_ABS:
        a = input.readUInt32LE(insn.k);
        pc += 1;
        break;
      case BPF.ALU_AND_K:
        a = (a & insn.k) >>> 0;
        pc += 1;
        break;
      case BPF.JA:
        pc += 1 + insn.k;
        break;
      case BPF.JEQ_K:
        jump(a === insn.k);
        break;
      case BPF.JGT_K:
        jump(a > insn.k);
        break;
      case BPF.JGE_K:
        jump(a >= insn.k);
        break;
      case BPF.JSET_K:
        jump((a & insn.k) !== 0);
        break;
      case BPF.RET_K:
        return insn.k;
      default:
        assert.fail(`unsupported opcode 0x${insn.code.toString(16)} at ${pc}`);
    }
  }
  return assert.fail('program ran off its end');
}

const hex = (n: number): string => `0x${(n >>> 0).toString(16)}`;

// --- The generated program, interpreted ---------------------------------------------------------------------

for (const arch of ARCHES) {
  describe(`seccomp program (${arch})`, () => {
    const insns = decode(buildSeccompProgram(arch));
    const native = (nr: number, ...args: bigint[]): number =>
      runFilter(insns, { nr, arch: AUDIT_ARCH[arch], args });
    const expect = (actual: number, wanted: number, what: string): void =>
      assert.equal(hex(actual), hex(wanted), what);

    it('passes the kernel loader checks and never needs a jump longer than a u8', () => {
      checkLikeKernel(insns);
      assert.deepEqual(insns[0], { code: BPF.LD_W_ABS, jt: 0, jf: 0, k: 4 }, 'first loads seccomp_data.arch');
    });

    it('kills a process calling through any other architecture', () => {
      const others = Object.entries(AUDIT_ARCH).filter(([name]) => name !== arch);
      for (const [name, auditArch] of others) {
        for (const nr of [0, NR[arch].mount, ALLOWED[arch]['read']!]) {
          expect(runFilter(insns, { nr, arch: auditArch }), RET_KILL_PROCESS, `${name} nr ${nr}`);
        }
      }
    });

    if (arch === 'x86_64') {
      it('kills x32-ABI calls (syscall numbers with bit 30 set)', () => {
        for (const nr of [0, 1, 165, 512, 547]) {
          expect(native(0x40000000 + nr), RET_KILL_PROCESS, `x32 nr ${nr}`);
        }
      });
    }

    it('denies every listed syscall that exists on this arch, with its errno', () => {
      let checked = 0;
      for (const [name, rule] of Object.entries(DENIED_SYSCALLS)) {
        const nr = rule.nr[arch];
        if (nr === null || rule.when !== undefined) continue;
        expect(native(nr), ERRNO_OF[rule.errno], name);
        checked++;
      }
      assert.ok(checked >= 50, `${checked} unconditional denials`);
    });

    it('allows ordinary syscalls and unknown numbers', () => {
      for (const [name, nr] of Object.entries(ALLOWED[arch])) expect(native(nr), RET_ALLOW, name);
      expect(native(460), RET_ALLOW, 'nr 460 (mseal)');
      expect(native(999), RET_ALLOW, 'nr 999 (unassigned: the kernel answers ENOSYS)');
    });

    it('denies clone only with namespace flags, judging the low 32 bits the kernel uses', () => {
      const clone = (flags: bigint): number => native(NR[arch].clone, flags, 0n, 0n, 0n, 0n);
      const SIGCHLD = 17n;
      const pthreadFlags = 0x3d0f00n; // VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
      expect(clone(SIGCHLD), RET_ALLOW, 'fork-style clone');
      expect(clone(pthreadFlags), RET_ALLOW, 'pthread_create-style clone');
      expect(clone(0x4111n), RET_ALLOW, 'vfork-style clone (CLONE_VM|CLONE_VFORK|SIGCHLD)');
      expect(clone(0xffffffff_00000000n | SIGCHLD), RET_ALLOW, 'high word ignored, as by the kernel');
      for (const flag of [
        0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
      ]) {
        expect(clone(BigInt(flag) | SIGCHLD), EPERM, `clone with ${hex(flag)}`);
        expect(clone(0xffffffff_00000000n | BigInt(flag)), EPERM, `clone with ${hex(flag)} and a high word`);
      }
    });

    it('allows only unix/inet/inet6 sockets: every other family is EAFNOSUPPORT', () => {
      const allowed = new Map([
        [1, 'AF_UNIX'],
        [2, 'AF_INET'],
        [10, 'AF_INET6'],
      ]);
      for (const syscall of ['socket', 'socketpair'] as const) {
        const call = (domain: bigint): number => native(NR[arch][syscall], domain, 3n, 0n);
        // AF_MAX is 46 today; go well past it so a future family is refused too.
        for (let family = 0; family < 256; family++) {
          const name = allowed.get(family);
          expect(call(BigInt(family)), name ? RET_ALLOW : EAFNOSUPPORT, `${syscall}(${name ?? family})`);
        }
        expect(call(40n), EAFNOSUPPORT, `${syscall}(AF_VSOCK)`);
        expect(call(0xffffffffn), EAFNOSUPPORT, `${syscall}(-1)`);
        // The kernel reads an int: a high word cannot turn a refused family into an allowed one or vice versa.
        expect(call(0x1_00000028n), EAFNOSUPPORT, `${syscall}(AF_VSOCK) with junk in the high word`);
        expect(call(0x1_00000002n), RET_ALLOW, `${syscall}(AF_INET) with junk in the high word`);
      }
    });

    it('denies TIOCSTI and TIOCLINUX ioctls only', () => {
      const ioctl = (request: bigint): number => native(NR[arch].ioctl, 0n, request, 0n);
      expect(ioctl(0x5412n), EPERM, 'TIOCSTI');
      expect(ioctl(0x541cn), EPERM, 'TIOCLINUX');
      expect(ioctl(0xffffffff_00005412n), EPERM, 'TIOCSTI with a high word (cmd is an unsigned int)');
      expect(ioctl(0x5401n), RET_ALLOW, 'TCGETS');
      expect(ioctl(0x541bn), RET_ALLOW, 'FIONREAD');
      expect(ioctl(0x5413n), RET_ALLOW, 'TIOCGWINSZ');
    });

    it('allows querying the personality but not changing it', () => {
      const personality = (persona: bigint): number => native(NR[arch].personality, persona);
      expect(personality(0n), RET_ALLOW, 'PER_LINUX');
      expect(personality(0xffffffffn), RET_ALLOW, 'query');
      expect(personality(0x0040000n), EPERM, 'ADDR_NO_RANDOMIZE');
      expect(personality(0x0008n), EPERM, 'PER_LINUX32');
    });
  });
}

describe('DENIED_SYSCALLS', () => {
  it('documents every entry and uses each number once per arch', () => {
    for (const arch of ARCHES) {
      const seen = new Map<number, string>();
      for (const [name, rule] of Object.entries(DENIED_SYSCALLS)) {
        assert.ok(rule.why.length > 10, `${name} says why`);
        const nr = rule.nr[arch];
        if (nr === null) continue;
        assert.equal(seen.get(nr), undefined, `${arch}: ${name} reuses nr ${nr}`);
        seen.set(nr, name);
      }
    }
  });

  it('includes what the policy promises', () => {
    const promised = [
      'mount',
      'umount2',
      'pivot_root',
      'chroot',
      'ptrace',
      'process_vm_readv',
      'process_vm_writev',
    ];
    promised.push(
      'kexec_load',
      'kexec_file_load',
      'bpf',
      'keyctl',
      'add_key',
      'request_key',
      'reboot',
      'swapon',
    );
    promised.push(
      'swapoff',
      'init_module',
      'finit_module',
      'delete_module',
      'perf_event_open',
      'userfaultfd',
    );
    promised.push('open_by_handle_at', 'name_to_handle_at', 'acct', 'quotactl', 'syslog', 'settimeofday');
    promised.push(
      'clock_settime',
      'clock_adjtime',
      'adjtimex',
      'fanotify_init',
      'iopl',
      'ioperm',
      'lookup_dcookie',
    );
    promised.push(
      'mount_setattr',
      'fsopen',
      'fsconfig',
      'fsmount',
      'fspick',
      'move_mount',
      'open_tree',
      'vhangup',
    );
    promised.push('unshare', 'setns', 'personality', 'nfsservctl', 'uselib', 'ustat', 'sysfs', '_sysctl');
    promised.push('pidfd_getfd', 'kcmp', 'io_uring_setup', 'io_uring_enter', 'io_uring_register', 'clone3');
    promised.push('clone', 'socket', 'socketpair', 'ioctl');
    for (const name of promised) assert.ok(DENIED_SYSCALLS[name], `${name} is in the table`);
    assert.ok(
      !Object.keys(DENIED_SYSCALLS).some((name) => name.startsWith('landlock')),
      'landlock stays allowed',
    );
  });

  /** `#define __NR_<name> <n>` lines of a kernel uapi header. */
  function headerNumbers(path: string): Map<string, number> {
    const numbers = new Map<string, number>();
    for (const match of readFileSync(path, 'utf8').matchAll(/^#define __NR_(\w+)\s+(\d+)\s*$/gm)) {
      numbers.set(match[1]!, Number(match[2]));
    }
    return numbers;
  }
  const HEADERS: Readonly<Record<SeccompArch, readonly string[]>> = {
    x86_64: ['/usr/include/x86_64-linux-gnu/asm/unistd_64.h', '/usr/include/asm/unistd_64.h'],
    // arm64 takes its numbers from the generic table, which every distro ships whatever the host arch.
    aarch64: ['/usr/include/asm-generic/unistd.h'],
  };

  for (const arch of ARCHES) {
    it(`matches the kernel headers' numbers for ${arch}`, (t) => {
      const header = HEADERS[arch].find((path) => existsSync(path));
      if (header === undefined) {
        t.skip(`no ${HEADERS[arch].join(' or ')} on this host (install linux-libc-dev)`);
        return;
      }
      const numbers = headerNumbers(header);
      const tooNew: string[] = [];
      for (const [name, rule] of Object.entries(DENIED_SYSCALLS)) {
        const nr = rule.nr[arch];
        if (nr === null) {
          assert.equal(numbers.get(name), undefined, `${name} does not exist on ${arch}`);
        } else if (!numbers.has(name)) {
          tooNew.push(name);
        } else {
          assert.equal(nr, numbers.get(name), `${arch} ${name}`);
        }
      }
      for (const [name, nr] of Object.entries({ ...ALLOWED[arch], ...NR[arch] })) {
        if (numbers.has(name)) assert.equal(nr, numbers.get(name), `${arch} ${name} (test table)`);
      }
      if (tooNew.length > 0) t.diagnostic(`${header} predates ${tooNew.join(', ')}; not cross-checked`);
    });
  }
});

describe('hostSeccompArch', () => {
  it('maps Node arch names and refuses the rest', () => {
    assert.equal(hostSeccompArch('x64'), 'x86_64');
    assert.equal(hostSeccompArch('arm64'), 'aarch64');
    assert.throws(() => hostSeccompArch('ia32'), /architecture ia32/);
    assert.throws(() => hostSeccompArch('riscv64'), { code: 'RUNTIME_UNAVAILABLE' });
  });
});

// --- Against the real kernel, under bubblewrap -------------------------------------------------------------

function findOnPath(name: string): string | undefined {
  const dirs = (process.env['PATH'] ?? '/usr/bin:/bin').split(delimiter);
  return dirs.map((dir) => join(dir, name)).find((path) => existsSync(path));
}

const BWRAP = findOnPath('bwrap');
const PYTHON = '/usr/bin/python3';
const NOBODY = 65534;
const SANDBOX_TIMEOUT_MS = 30_000;

interface SandboxResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs argv in a minimal bwrap sandbox as an unprivileged uid, with the filter on fd 3 unless `program` is null. */
function runInSandbox(program: Buffer | null, argv: readonly string[], extra: readonly string[] = []) {
  const args = ['--unshare-all', '--unshare-user', '--die-with-parent', '--new-session', '--clearenv'];
  args.push('--ro-bind', '/usr', '/usr', '--symlink', 'usr/bin', '/bin', '--symlink', 'usr/lib', '/lib');
  args.push('--symlink', 'usr/lib64', '/lib64', '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp');
  args.push(...extra, '--chdir', '/tmp');
  if (program !== null) args.push('--seccomp', '3');
  args.push('--', ...argv);
  const asRoot = process.getuid?.() === 0;
  const child = spawn(BWRAP!, args, {
    ...(asRoot ? { uid: NOBODY, gid: NOBODY } : {}),
    cwd: '/',
    env: { PATH: '/usr/bin:/bin' },
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  const pipe = child.stdio[3] as Writable;
  pipe.on('error', () => {}); // bwrap exiting early shows up in stderr/exit code, not here
  pipe.end(program ?? Buffer.alloc(0));
  return new Promise<SandboxResult>((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), SANDBOX_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function lastJsonLine(result: SandboxResult): Record<string, string> {
  assert.equal(result.code, 0, `sandbox exited ${result.code}: ${result.stderr}`);
  const line = result.stdout.trim().split('\n').at(-1) ?? '';
  return JSON.parse(line) as Record<string, string>;
}

/**
 * Each probe is chosen so that *without* the filter the kernel answers something else (success, EBADF, EINVAL,
 * EFAULT, …): a control run without `--seccomp` proves it is the filter that answers, not a missing privilege.
 */
const PROBES_PY = String.raw`
import ctypes, errno, json, os, socket, subprocess, sys, threading
nr = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def sc(name, *args):
    ctypes.set_errno(0)
    conv = [a if isinstance(a, bytes) else ctypes.c_ulong(a) for a in args]
    r = libc.syscall(ctypes.c_long(nr[name]), *conv)
    if r == -1:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    if name == 'clone' and r == 0:
        os._exit(0)  # the child of a clone that was let through
    if name == 'clone':
        os.waitpid(r, 0)
    return 'ok'

MS_NOUSER = 1 << 31
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
probes = {
  'mount': lambda: sc('mount', 0, b'/tmp', 0, MS_NOUSER, 0),
  'umount2': lambda: sc('umount2', b'/tmp', 0xff),
  'setns': lambda: sc('setns', -1, 0),
  'ptrace': lambda: sc('ptrace', 0x4242, 1, 0, 0),
  'process_vm_readv': lambda: sc('process_vm_readv', os.getpid(), 0, 0, 0, 0, 0),
  'bpf': lambda: sc('bpf', 0xffff, 0, 0),
  'keyctl': lambda: sc('keyctl', 0xffff, 0, 0, 0, 0),
  'perf_event_open': lambda: sc('perf_event_open', 0, 0, -1, -1, 0),
  'userfaultfd': lambda: sc('userfaultfd', 1 | 2),
  'io_uring_setup': lambda: sc('io_uring_setup', 1, 0),
  'io_uring_enter': lambda: sc('io_uring_enter', -1, 0, 0, 0, 0, 0),
  'clone3': lambda: sc('clone3', 0, 0),
  'socket_netlink': lambda: sc('socket', socket.AF_NETLINK, socket.SOCK_RAW, 0),
  'socket_packet': lambda: sc('socket', 17, socket.SOCK_RAW, 0),
  'ioctl_tiocsti': lambda: sc('ioctl', -1, 0x5412, 0),
  'personality_change': lambda: sc('personality', 0x0040000),
  'clone_newuser': lambda: sc('clone', CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0),
  'unshare_newuser': lambda: sc('unshare', CLONE_NEWUSER),  # last: when let through it changes our namespace
}
out = {name: probe() for name, probe in probes.items()}
out['seccomp_mode'] = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:'))

def ordinary():
    with open('/tmp/f', 'w') as f: f.write('hello')
    assert open('/tmp/f').read() == 'hello'
    pid = os.fork()
    if pid == 0: os._exit(7)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
    assert subprocess.run(['/usr/bin/echo', 'hi'], capture_output=True).stdout == b'hi\n'
    t = threading.Thread(target=lambda: None); t.start(); t.join()
    a, b = socket.socketpair(socket.AF_UNIX); a.send(b'x'); assert b.recv(1) == b'x'
    srv = socket.socket(socket.AF_INET); srv.bind(('127.0.0.1', 0)); srv.listen()
    cli = socket.create_connection(srv.getsockname()); conn, _ = srv.accept(); cli.send(b'y'); assert conn.recv(1) == b'y'
    socket.socket(socket.AF_INET6).close()
    assert sc('personality', 0xffffffff) == 'ok'
    return 'ok'
try:
    out['ordinary'] = ordinary()
except Exception as e:
    out['ordinary'] = repr(e)
print(json.dumps(out))
`;

const EXPECTED_UNDER_FILTER: Readonly<Record<string, string>> = {
  mount: 'EPERM',
  umount2: 'EPERM',
  setns: 'EPERM',
  ptrace: 'EPERM',
  process_vm_readv: 'EPERM',
  bpf: 'EPERM',
  keyctl: 'EPERM',
  perf_event_open: 'EPERM',
  userfaultfd: 'EPERM',
  io_uring_setup: 'ENOSYS',
  io_uring_enter: 'ENOSYS',
  clone3: 'ENOSYS',
  socket_netlink: 'EAFNOSUPPORT',
  socket_packet: 'EAFNOSUPPORT',
  ioctl_tiocsti: 'EPERM',
  personality_change: 'EPERM',
  clone_newuser: 'EPERM',
  unshare_newuser: 'EPERM',
  seccomp_mode: '2', // SECCOMP_MODE_FILTER
  ordinary: 'ok',
};

/**
 * Probes the host itself may already refuse without our filter, so the control run can't tell them apart:
 * AppArmor on Ubuntu 24.04+ forbids user namespaces inside bwrap, and kernels before 6.5 with
 * kernel.unprivileged_bpf_disabled refuse every bpf() command up front.
 */
const HOST_MAY_DENY = new Set(['clone_newuser', 'unshare_newuser', 'bpf']);

/** Node under the filter: fs (sync, threadpool), child processes, loopback TCP — with io_uring forced on in libuv. */
const NODE_JS = String.raw`
const fs = require('node:fs'), cp = require('node:child_process'), net = require('node:net');
(async () => {
  fs.writeFileSync('/tmp/a', 'sync');
  await fs.promises.writeFile('/tmp/b', 'async');
  const read = fs.readFileSync('/tmp/a', 'utf8') + (await fs.promises.readFile('/tmp/b', 'utf8'));
  const child = cp.spawnSync(process.execPath, ['-p', '6*7'], { encoding: 'utf8' }).stdout.trim();
  const echoed = await new Promise((resolve, reject) => {
    const server = net.createServer((s) => s.pipe(s)).listen(0, '127.0.0.1', () => {
      const c = net.connect(server.address().port, '127.0.0.1', () => c.end('ping'));
      let got = '';
      c.on('data', (d) => (got += d)).on('end', () => { server.close(); resolve(got); }).on('error', reject);
    });
  });
  const seccomp = /^Seccomp:\s+(\d)/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1];
  console.log(JSON.stringify({ seccomp, read, child, echoed }));
})().catch((e) => { console.error(e); process.exit(1); });
`;

describe('seccomp under bubblewrap (real kernel)', () => {
  const missing = [
    process.platform !== 'linux' ? 'Linux' : undefined,
    BWRAP === undefined ? 'bwrap on PATH (apt-get install bubblewrap)' : undefined,
  ].filter((what) => what !== undefined);
  const skip = missing.length > 0 ? `needs ${missing.join(' and ')}` : false;
  const arch = skip ? 'x86_64' : hostSeccompArch();
  const program = buildSeccompProgram(arch);

  it('denies the listed calls with the promised errno, and ordinary work still runs', { skip }, async (t) => {
    if (!existsSync(PYTHON)) {
      t.skip(`needs ${PYTHON} to issue raw syscalls`);
      return;
    }
    const names = [
      'mount',
      'umount2',
      'setns',
      'ptrace',
      'process_vm_readv',
      'bpf',
      'keyctl',
      'perf_event_open',
    ];
    names.push('userfaultfd', 'io_uring_setup', 'io_uring_enter', 'clone3', 'socket', 'ioctl', 'personality');
    names.push('clone', 'unshare');
    const numbers = Object.fromEntries(names.map((name) => [name, DENIED_SYSCALLS[name]!.nr[arch]]));
    const argv = [PYTHON, '-c', PROBES_PY, JSON.stringify(numbers)];
    const [filtered, control] = await Promise.all([runInSandbox(program, argv), runInSandbox(null, argv)]);
    const got = lastJsonLine(filtered);
    const without = lastJsonLine(control);
    t.diagnostic(`without the filter: ${JSON.stringify(without)}`);
    assert.deepEqual(got, EXPECTED_UNDER_FILTER);
    const notProven = Object.keys(EXPECTED_UNDER_FILTER).filter(
      (name) => name !== 'ordinary' && without[name] === got[name],
    );
    if (notProven.length > 0)
      t.diagnostic(`the host already denies ${notProven.join(', ')} without the filter`);
    const unexplained = notProven.filter((name) => !HOST_MAY_DENY.has(name));
    assert.deepEqual(unexplained, [], 'each probe answers differently without the filter');
    assert.equal(without['ordinary'], 'ok');
  });

  it('runs Node (fs, child processes, TCP on lo) under the filter with io_uring forced on', {
    skip,
  }, async () => {
    // bwrap binds as uid 65534, which cannot traverse a checkout under /root: bind a copy it can reach then.
    let node = process.execPath;
    if (
      process.getuid?.() === 0 &&
      !reachable(node, { name: 'nobody', uid: NOBODY, gid: NOBODY, dedicated: true }, 'read').ok
    ) {
      const dir = mkdtempSync(join(tmpdir(), 'aegis-seccomp-node-'));
      chmodSync(dir, 0o755);
      after(() => rmSync(dir, { recursive: true, force: true }));
      node = join(dir, 'node');
      copyFileSync(process.execPath, node);
      chmodSync(node, 0o755);
    }
    const result = await runInSandbox(
      program,
      [node, '-e', NODE_JS],
      ['--ro-bind', node, node, '--setenv', 'UV_USE_IO_URING', '1'],
    );
    assert.deepEqual(lastJsonLine(result), { seccomp: '2', read: 'syncasync', child: '42', echoed: 'ping' });
  });

  it('kills a process whose syscalls come from the wrong architecture', { skip }, async () => {
    // Build the other arch's program and install it: the first syscall after install has a foreign arch → killed.
    const other: SeccompArch = arch === 'x86_64' ? 'aarch64' : 'x86_64';
    const result = await runInSandbox(buildSeccompProgram(other), ['/usr/bin/true']);
    // bwrap reports a child killed by signal N as exit status 128 + N; SIGSYS is 31 on x86-64 and aarch64.
    assert.equal(result.code, 128 + 31, `bwrap exit ${result.code}: ${result.stderr}`);
  });
});
