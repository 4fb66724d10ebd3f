/**
 * Adversarial: the process boundary. Agents try to read the orchestrator's environment, see and kill host
 * processes (even ones running as the sandbox's own host uid), create namespaces, mount, and escalate through
 * setuid binaries; every attempt must fail, and the agent's own report of what it saw is asserted.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import {
  adversarialRuntimes,
  Harness,
  hostProcesses,
  isAlive,
  outcomes,
  pollUntil,
  SANDBOX_USER,
  sandboxOnly,
} from './harness.ts';

/** The only environment an agent gets: what AEGIS sets, plus spec.env. */
const AEGIS_ENV = [
  'AEGIS_AGENT_NAME',
  'AEGIS_AGENT_VERSION',
  'AEGIS_EXECUTION_ID',
  'AEGIS_INPUT',
  'AEGIS_OUTPUT',
  'HOME',
  'LANG',
  'PATH',
  'PYTHONDONTWRITEBYTECODE',
  'PYTHONUNBUFFERED',
  'PWD', // bwrap sets it for --chdir
  'TMPDIR',
];

for (const [isolation, skip] of adversarialRuntimes()) {
  describe(`adversarial: processes, environment and privileges (${isolation})`, {
    concurrency: true,
    skip,
  }, () => {
    let h: Harness;
    /** A host process running as the sandbox's own host uid: only the pid namespace keeps agents from it. */
    let victim: ChildProcess;
    const canary = `canary-${randomBytes(8).toString('hex')}`;

    before(async () => {
      h = new Harness({ isolation });
      process.env['AEGIS_TEST_CANARY_SECRET'] = canary;
      victim = spawn('sleep', ['60'], { uid: SANDBOX_USER.uid, gid: SANDBOX_USER.gid, stdio: 'ignore' });
      await pollUntil('the host sleep process', () => victim.pid !== undefined && isAlive(victim.pid));
    });
    after(async () => {
      delete process.env['AEGIS_TEST_CANARY_SECRET'];
      if (victim.pid !== undefined && victim.exitCode === null) process.kill(victim.pid, 'SIGKILL');
      await h.close();
    });

    // Sandbox only: docker adds HOSTNAME to every container's environment (no host value; conformance checks the rest).
    sandboxOnly(isolation)(
      "sees none of the orchestrator's environment: only the AEGIS variables and spec.env",
      async () => {
        const result = await h.run({
          name: 'env-dump',
          env: { GREETING: 'hello', API_URL: 'http://localhost' },
          input: { canary },
          code: `
procs = [p for p in os.listdir("/proc") if p.isdigit()]
report({
    "environ": dict(os.environ),
    "procEnviron": {p: attempt(read_text, f"/proc/{p}/environ") for p in procs},
    "procCmdline": {p: attempt(read_text, f"/proc/{p}/cmdline") for p in procs},
})
`,
        });
        assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
        const { environ, procEnviron, procCmdline } = result.report;
        assert.deepEqual(Object.keys(environ).sort(), [...AEGIS_ENV, 'API_URL', 'GREETING'].sort());
        assert.equal(environ['GREETING'], 'hello');
        assert.equal(environ['HOME'], '/workspace');
        assert.equal(environ['PWD'], '/agent');
        assert.equal(environ['AEGIS_EXECUTION_ID'], result.executionId);
        assert.ok(!('AEGIS_TEST_CANARY_SECRET' in environ));
        assert.ok(!('AEGIS_HOME' in environ), 'the orchestrator home leaked');
        // Nowhere the agent can look: its own environ, pid 1's (bwrap init), anyone's command line.
        const everything = JSON.stringify(result.report);
        assert.ok(!everything.includes(canary), 'the canary leaked into the sandbox');
        assert.ok(!everything.includes(h.home), 'the orchestrator home path leaked into the sandbox');
        assert.ok(outcomes(procEnviron).length >= 2, 'expected to inspect pid 1 and the agent');
        assert.match(String(procCmdline['1'].value), /^bwrap\0/);
      },
    );

    // Sandbox only: it names bwrap's init; docker's agent is pid 1 after the gate, gVisor's pid table is its own.
    sandboxOnly(isolation)(
      'sees only its own processes and cannot signal host ones (even of its own host uid)',
      async () => {
        const hostPid = victim.pid!;
        const result = await h.run({
          name: 'kill-host',
          input: { hostPid },
          code: `
import ctypes
libc = ctypes.CDLL(None, use_errno=True)

def ptrace_attach(pid):
    if libc.ptrace(16, pid, 0, 0) != 0:  # PTRACE_ATTACH
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return True

host_pid = INPUT["hostPid"]
status = read_text("/proc/self/status")
report({
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "self": os.getpid(),
    "nspid": [l for l in status.splitlines() if l.startswith("NSpid:")][0].split()[1:],
    "pid1": read_text("/proc/1/cmdline").split("\\0")[0],
    "hostProcVisible": os.path.exists(f"/proc/{host_pid}"),
    "signal0": attempt(os.kill, host_pid, 0),
    "sigkill": attempt(os.kill, host_pid, 9),
    "pidfd": attempt(os.pidfd_open, host_pid),
    "ptraceInit": attempt(ptrace_attach, 1),
})
`,
        });
        assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
        const r = result.report;
        assert.deepEqual(
          r['pids'],
          [1, 2],
          'only the sandbox init (bwrap) and the agent exist in its pid namespace',
        );
        assert.equal(r['self'], 2);
        assert.deepEqual(r['nspid'], ['2'], 'the agent is in one pid namespace: it cannot see its host pid');
        assert.equal(r['pid1'], 'bwrap');
        assert.equal(r['hostProcVisible'], false);
        for (const what of ['signal0', 'sigkill', 'pidfd'])
          assert.equal(r[what].errno, 'ESRCH', `${what}: ${r[what].error}`);
        assert.equal(r['ptraceInit'].errno, 'EPERM', `ptrace: ${JSON.stringify(r['ptraceInit'])}`);
        assert.ok(isAlive(hostPid), 'the host process was killed');
      },
    );

    sandboxOnly(isolation)(
      'spec.env values never appear in host-visible process arguments (bwrap options travel over a pipe)',
      async () => {
        const secret = `env-secret-${randomBytes(8).toString('hex')}`;
        let leaked: string[] = [];
        const result = await h.run({
          name: 'env-argv',
          env: { API_TOKEN: secret },
          code: 'import time\nreport({"token": os.environ.get("API_TOKEN") is not None})\ntime.sleep(0.5)\n',
          onStarted: () => {
            // While the sandbox runs, scan every host process's argv for the value.
            leaked = hostProcesses(() => true)
              .filter((p) => p.cmdline.includes(secret))
              .map((p) => `${p.pid}: ${p.cmdline.slice(0, 80)}`);
          },
        });
        assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
        assert.equal(result.report['token'], true, 'the agent itself receives spec.env');
        assert.deepEqual(leaked, [], 'spec.env value visible in a host /proc/<pid>/cmdline');
      },
    );

    it('`kill -9 -1` (kill everything it may) only reaches its own sandbox', async () => {
      const result = await h.run({
        name: 'kill-all',
        language: 'bash',
        code: `sleep 30 &
inner=$!
kill -9 -1
rc=$?
wait "$inner"
echo "{\\"killRc\\": $rc, \\"innerStatus\\": $?, \\"pids\\": \\"$(ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' ')\\"}"
`,
      });
      assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
      assert.equal(result.report['killRc'], 0);
      assert.equal(result.report['innerStatus'], 137, 'its own child was killed');
      assert.ok(isAlive(victim.pid!), 'a host process of the same uid was killed');
    });

    sandboxOnly(isolation)(
      'cannot create namespaces, mount, chroot or nest a sandbox (seccomp + --disable-userns)',
      async () => {
        const result = await h.run({
          name: 'namespaces',
          code: `
import ctypes, subprocess
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000

def call(fn, *args):
    if fn(*args) == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return True

def raw_clone(flags):
    pid = libc.syscall(56, flags | 17, 0, 0, 0, 0)  # SYS_clone on x86-64, SIGCHLD
    if pid == 0:
        os._exit(0)
    if pid == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    os.waitpid(pid, 0)
    return True

def setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return call(libc.setns, fd, 0)
    finally:
        os.close(fd)

def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=10)
    return {"rc": p.returncode, "out": p.stdout + p.stderr}

import platform
report({
    "arch": platform.machine(),
    "syscalls": {
        "unshare(NEWUSER)": attempt(call, libc.unshare, CLONE_NEWUSER),
        "unshare(NEWNS)": attempt(call, libc.unshare, CLONE_NEWNS),
        "unshare(NEWNET)": attempt(call, libc.unshare, CLONE_NEWNET),
        "unshare(NEWPID)": attempt(call, libc.unshare, CLONE_NEWPID),
        "clone(NEWUSER)": attempt(raw_clone, CLONE_NEWUSER) if platform.machine() == "x86_64" else {"ok": False, "errno": "EPERM"},
        "setns(user)": attempt(setns, "/proc/self/ns/user"),
        "setns(pid of init)": attempt(setns, "/proc/1/ns/pid"),
        "mount(tmpfs)": attempt(call, libc.mount, b"none", b"/workspace", b"tmpfs", 0, None),
        "mount(bind /)": attempt(call, libc.mount, b"/", b"/workspace", None, 0x1000, None),
        "umount(/agent)": attempt(call, libc.umount2, b"/agent", 2),
        "chroot": attempt(os.chroot, "/workspace"),
    },
    "commands": {
        "unshare -U true": run(["unshare", "-U", "true"]),
        "unshare -r id": run(["unshare", "-r", "id"]),
        "bwrap": run(["bwrap", "--ro-bind", "/", "/", "true"]),
        "mount -t tmpfs": run(["mount", "-t", "tmpfs", "none", "/workspace"]),
    },
    "maxUserNamespaces": attempt(read_text, "/proc/sys/user/max_user_namespaces"),
})
`,
        });
        assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
        for (const [what, outcome] of outcomes(result.report['syscalls'])) {
          assert.equal(outcome.ok, false, `${what} succeeded`);
          assert.equal(outcome.errno, 'EPERM', `${what}: ${JSON.stringify(outcome)}`);
        }
        for (const [what, run] of Object.entries<{ rc: number; out: string }>(result.report['commands'])) {
          assert.notEqual(run.rc, 0, `${what} succeeded: ${run.out}`);
        }
        assert.match(result.report['commands']['unshare -U true'].out, /Operation not permitted/);
      },
    );

    sandboxOnly(isolation)(
      'has no privileges and cannot regain any: no caps, NoNewPrivs, setuid binaries and setuid copies are inert',
      async () => {
        const result = await h.run({
          name: 'setuid',
          code: `
import shutil, stat, subprocess

def run(argv, env=None):
    p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=10,
                       env=None if env is None else {**os.environ, **env})
    return {"rc": p.returncode, "out": p.stdout + p.stderr}

def exec_credentials(binary):
    # The dynamic loader prints the kernel's auxv: AT_EUID is the euid the exec produced, AT_SECURE=1 marks a
    # privileged exec. (Were the exec privileged, glibc would drop LD_SHOW_AUXV and print nothing.)
    out = run([binary, "--version"], {"LD_SHOW_AUXV": "1"})["out"]
    return {k: v.strip() for k, v in (l.split(":", 1) for l in out.splitlines() if l.startswith("AT_"))
            if k in ("AT_UID", "AT_EUID", "AT_SECURE")}

status = dict(l.split(":\\t", 1) for l in read_text("/proc/self/status").splitlines() if ":\\t" in l)
mounts = {l.split()[4]: l.split()[5] for l in read_text("/proc/self/mountinfo").splitlines()}
setuid_binaries = [p for p in ["/usr/bin/su", "/usr/bin/passwd", "/usr/bin/newgrp", "/usr/bin/mount",
                               "/usr/bin/umount", "/usr/bin/chsh", "/usr/bin/gpasswd"]
                   if os.path.exists(p) and os.stat(p).st_mode & stat.S_ISUID]

copy = "/workspace/python3"
shutil.copy("/usr/bin/python3", copy)
report({
    "status": {k: status[k].strip() for k in ["Uid", "Gid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                              "NoNewPrivs", "Seccomp"]},
    "uidMap": read_text("/proc/self/uid_map").split(),
    "mountOptions": {m: mounts.get(m) for m in ["/", "/usr", "/workspace", "/tmp", "/agent", "/dev/shm"]},
    "setuidBinaries": setuid_binaries,
    "su": run(["su", "-c", "id -u", "root"]),
    "suidExec": {p: exec_credentials(p) for p in setuid_binaries},
    "setuid0": attempt(os.setuid, 0),
    "setresuid0": attempt(os.setresuid, 0, 0, 0),
    "setgroups": attempt(os.setgroups, [0]),
    "chownCopyToRoot": attempt(os.chown, copy, 0, 0),
    "chmodCopySuid": attempt(os.chmod, copy, 0o4755),
    "copyEuid": run([copy, "-c", "import os; print(os.geteuid(), os.getegid())"]),
})
`,
        });
        assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
        const r = result.report;
        assert.deepEqual(r['status'], {
          Uid: '1000\t1000\t1000\t1000',
          Gid: '1000\t1000\t1000\t1000',
          CapInh: '0000000000000000',
          CapPrm: '0000000000000000',
          CapEff: '0000000000000000',
          CapBnd: '0000000000000000',
          CapAmb: '0000000000000000',
          NoNewPrivs: '1',
          Seccomp: '2',
        });
        // Root is not even mapped: the agent's uid is the only one in its user namespace (mapped, through bwrap's
        // intermediate namespace of --disable-userns, to the sandbox's host uid — checked from the host in limits).
        assert.equal(r['uidMap'].length, 3, `more than one uid mapped: ${r['uidMap']}`);
        assert.deepEqual([r['uidMap'][0], r['uidMap'][2]], ['1000', '1']);
        for (const [mount, options] of Object.entries<string | null>(r['mountOptions'])) {
          assert.ok(options?.split(',').includes('nosuid'), `${mount} is not nosuid: ${options}`);
        }
        assert.ok(r['setuidBinaries'].length > 0, 'expected some setuid-root binary (su, mount…) to try');
        assert.notEqual(r['su'].rc, 0, `su succeeded: ${r['su'].out}`);
        assert.doesNotMatch(r['su'].out, /^0$/m);
        for (const [binary, credentials] of Object.entries(r['suidExec'])) {
          assert.deepEqual(credentials, { AT_UID: '1000', AT_EUID: '1000', AT_SECURE: '0' }, binary);
        }
        // EINVAL: uid 0 does not exist in the namespace; EPERM: no CAP_SETUID/CAP_SETGID.
        for (const what of ['setuid0', 'setresuid0', 'setgroups']) {
          assert.equal(r[what].ok, false, `${what} succeeded`);
          assert.ok(['EPERM', 'EINVAL'].includes(r[what].errno), `${what}: ${JSON.stringify(r[what])}`);
        }
        // A copy the agent owns can get the setuid bit, but only for its own uid, and it cannot be given to root.
        assert.equal(r['chownCopyToRoot'].ok, false, 'chown to root succeeded');
        assert.ok(
          ['EPERM', 'EINVAL'].includes(r['chownCopyToRoot'].errno),
          JSON.stringify(r['chownCopyToRoot']),
        );
        assert.equal(r['copyEuid'].rc, 0, r['copyEuid'].out);
        assert.equal(r['copyEuid'].out.trim(), '1000 1000');
      },
    );
  });
}
