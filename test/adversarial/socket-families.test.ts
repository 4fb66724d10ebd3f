/**
 * Adversarial: socket families (issue 9 item 2). Network namespaces isolate AF_INET/AF_INET6 (and abstract
 * AF_UNIX), but not every family: AF_VSOCK is host-global — a sandbox could bind a vsock port the host then could
 * not, a channel to the hypervisor and to guests outside the egress proxy and the ledger. The seccomp filter is an
 * allow-list: AF_UNIX (1), AF_INET (2), AF_INET6 (10); every other family gets EAFNOSUPPORT from socket() and
 * socketpair(). The agent tries every family 0–45 with every socket type, AF_VSOCK bind explicitly, and the
 * side doors: io_uring (IORING_OP_SOCKET) and the i386 `int 0x80` socketcall ABI.
 */
import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import { adversarialRuntimes, Harness, itOn } from './harness.ts';

const ALLOWED_FAMILIES = [1, 2, 10];

for (const [isolation, skip] of adversarialRuntimes()) {
  describe(`adversarial: socket families (${isolation})`, { skip }, () => {
    let h: Harness;
    before(() => {
      h = new Harness({ isolation });
    });
    after(async () => {
      await h.close();
    });

    // Not gvisor: its sentry implements sockets itself (netlink from its own netstack); the host filter is not what the agent meets.
    itOn(
      isolation,
      'sandbox',
      'docker',
    )('only AF_UNIX, AF_INET and AF_INET6 sockets can be created; AF_VSOCK cannot be bound', async () => {
      const result = await h.run({
        name: 'socket-families',
        code: String.raw`
import ctypes, mmap, platform, signal, subprocess
TYPES = {"stream": socket.SOCK_STREAM, "dgram": socket.SOCK_DGRAM, "raw": socket.SOCK_RAW,
         "seqpacket": socket.SOCK_SEQPACKET}

def make(family, kind):
    s = socket.socket(family, kind, 0)
    s.close()
    return True

def pair(family, kind):
    a, b = socket.socketpair(family, kind, 0)
    a.close(); b.close()
    return True

def vsock_bind():
    s = socket.socket(40, socket.SOCK_STREAM, 0)  # AF_VSOCK
    try:
        s.bind((0xFFFFFFFF, 0x5ae6))  # VMADDR_CID_ANY, a port
        return True
    finally:
        s.close()

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def io_uring_setup():
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    r = libc.syscall(ctypes.c_long(425), ctypes.c_ulong(4), params)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    os.close(r)
    return True

# i386 ABI from a 64-bit process: socketcall(SYS_SOCKET, {AF_VSOCK, SOCK_STREAM, 0}) via int 0x80 (nr 102), and
# the direct i386 socket syscall (nr 359). The filter must kill the process (arch check) before either runs.
I386_CHILD = r'''
import ctypes, mmap, struct, sys
args = (ctypes.c_uint32 * 3)(40, 1, 0)
which = sys.argv[1]
if which == "socketcall":
    # push rbx; mov eax,102; mov ebx,1; mov rcx,args; int 0x80; pop rbx; ret  (ecx: low 32 bits of the address)
    code = b"\x53\xb8" + struct.pack("<I", 102) + b"\xbb\x01\x00\x00\x00" + b"\x48\xb9" + struct.pack("<Q", ctypes.addressof(args)) + b"\xcd\x80\x5b\xc3"
else:
    # push rbx; mov eax,359; mov ebx,40; mov ecx,1; mov edx,0; int 0x80; pop rbx; ret
    code = b"\x53\xb8" + struct.pack("<I", 359) + b"\xbb\x28\x00\x00\x00\xb9\x01\x00\x00\x00\xba\x00\x00\x00\x00\xcd\x80\x5b\xc3"
buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write(code)
fn = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
print("returned", fn(), flush=True)
'''

def i386(which):
    p = subprocess.run([sys.executable, "-c", I386_CHILD, which], capture_output=True, text=True, timeout=20)
    return {"rc": p.returncode, "out": (p.stdout + p.stderr)[-300:]}

created = {}
for family in range(46):
    for name, kind in TYPES.items():
        created[f"socket:{family}:{name}"] = attempt(make, family, kind)
    for name in ("stream", "dgram"):
        created[f"socketpair:{family}:{name}"] = attempt(pair, family, TYPES[name])

report({
    "created": created,
    "vsockBind": attempt(vsock_bind),
    "ioUring": attempt(io_uring_setup),
    "i386": {"socketcall": i386("socketcall"), "socket": i386("socket")} if platform.machine() == "x86_64" else None,
})
`,
      });
      assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
      const r = result.report;
      const created = r['created'] as Record<string, { ok: boolean; errno?: string }>;
      const wrong: string[] = [];
      for (const [what, outcome] of Object.entries(created)) {
        const family = Number(what.split(':')[1]);
        if (ALLOWED_FAMILIES.includes(family)) continue;
        // Refused by the filter, not by a missing module or privilege: the same errno for every family and type.
        if (outcome.ok || outcome.errno !== 'EAFNOSUPPORT')
          wrong.push(`${what} → ${JSON.stringify(outcome)}`);
      }
      assert.deepEqual(wrong, [], 'socket families outside the allow-list were not refused by the filter');
      // The allow-list is not over-broad: the three families still work.
      for (const what of [
        'socket:1:stream',
        'socket:1:dgram',
        'socket:2:stream',
        'socket:2:dgram',
        'socket:10:stream',
        'socket:10:dgram',
        'socketpair:1:stream',
        'socketpair:1:dgram',
      ]) {
        assert.deepEqual(created[what], { ok: true, value: true }, what);
      }
      assert.equal(r['vsockBind'].ok, false, 'the sandbox bound a host-global AF_VSOCK port');
      assert.equal(r['vsockBind'].errno, 'EAFNOSUPPORT');
      assert.equal(r['ioUring'].errno, 'ENOSYS', `io_uring_setup: ${JSON.stringify(r['ioUring'])}`);
      if (process.arch === 'x64') {
        // Killed by the filter's arch check (SIGSYS). On kernels whose `int 0x80` entry faults before seccomp runs
        // (IA32 emulation off, or some paravirtualised guests) the process gets SIGSEGV instead: no socket either way.
        const [SIGSEGV, SIGSYS] = [11, 31];
        for (const [what, outcome] of Object.entries(
          r['i386'] as Record<string, { rc: number; out: string }>,
        )) {
          assert.ok(
            [-SIGSYS, -SIGSEGV].includes(outcome.rc) && !outcome.out.includes('returned'),
            `the i386 ${what} call returned instead of being killed: ${JSON.stringify(outcome)}`,
          );
        }
      }
    });
  });
}
