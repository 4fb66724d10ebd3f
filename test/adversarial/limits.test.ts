/**
 * Adversarial: resource limits. Agents allocate past their memory, fork-bomb, spin the CPU and outlive their
 * timeout with a tree of children that try to escape the kill (setsid, double fork, ignored signals). Each run must
 * be contained, recorded with the limit it hit, and leave no process, cgroup or scratch dir behind.
 *
 * Processes of an execution are found on the host by cgroup membership (`…/aegis/<execution-id>`) or, for the
 * sandbox uid, by a marker unique to the run in their command line — so concurrent sandboxes of other tests (same
 * uid) never confuse the checks.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  adversarialRuntimes,
  Harness,
  type HostProcess,
  isAlive,
  itOn,
  PYTHON,
  processesOfExecution,
  SANDBOX_USER,
  sandboxOnly,
} from './harness.ts';

function marker(): string {
  return `aegis-adv-marker-${randomBytes(6).toString('hex')}`;
}

/** A host pid still running the same process (guards against pid reuse). */
function stillRunning(p: HostProcess): boolean {
  if (!isAlive(p.pid)) return false;
  try {
    return readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').replaceAll('\0', ' ') === p.cmdline;
  } catch {
    return false;
  }
}

for (const [isolation, skip] of adversarialRuntimes()) {
  describe(`adversarial: resource limits (${isolation})`, { concurrency: true, skip }, () => {
    let h: Harness;
    before(() => {
      h = new Harness({ isolation });
    });
    after(() => h.close());

    it('memory: allocating past `memory: 64Mi` is OOM-killed and recorded as oom with a memory violation', async () => {
      const result = await h.run({
        name: 'memory-hog',
        resources: { memory: '64Mi' },
        code: `
hoard = []
for i in range(1, 65):
    hoard.append(bytearray(8 << 20))  # zero-filled: every page is touched
    print(f"holding {i * 8}", file=sys.stderr, flush=True)
report({"heldMiB": 512})
`,
      });
      assert.equal(result.record.status, 'oom', Harness.transcript(result));
      assert.match(result.record.reason ?? '', /out of memory \(limit 64 MiB\)/);
      const violation = result.record.violations.find((v) => v.rule === 'memory');
      assert.ok(violation, JSON.stringify(result.record.violations));
      assert.equal(violation.kind, 'limit');
      assert.ok((violation.count ?? 0) >= 1);
      const held = result.logs.map((l) => Number(/^holding (\d+)$/.exec(l.text)?.[1] ?? 0));
      assert.ok(Math.max(...held) < 64, `the agent held ${Math.max(...held)} MiB under a 64 MiB limit`);
      assert.deepEqual(result.report, {}, 'the agent never got to report');
    });

    // Not gvisor: its pids budget ends the whole sandbox (conformance asserts that), no single fork is refused.
    itOn(
      isolation,
      'sandbox',
      'docker',
    )(
      'pids: a fork bomb under `pids: 32` is stopped at the limit, recorded, and leaves no process behind',
      async () => {
        const tag = marker();
        let executionId = '';
        let seenWhileRunning: HostProcess[] = [];
        // The host tells the agent it has looked (a file in a write grant), so the bomb is alive while the host scans.
        const control = join(h.tempDir('control'), 'ctl');
        mkdirSync(control);
        chownSync(control, SANDBOX_USER.uid, SANDBOX_USER.gid);
        const result = await h.run({
          name: 'fork-bomb',
          resources: { pids: 32, timeout: '10s' },
          command: [PYTHON, '/agent/main.py', tag],
          write: [{ source: control, target: '/mnt/ctl' }],
          code: `
import time
children = 0
refused = None
while children < 1000:
    try:
        pid = os.fork()
    except OSError as e:
        refused = errno.errorcode.get(e.errno)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children += 1
print("BOMBED", flush=True)
deadline = time.monotonic() + 5
while not os.path.exists("/mnt/ctl/go") and time.monotonic() < deadline:
    time.sleep(0.01)
report({"children": children, "refused": refused, "released": os.path.exists("/mnt/ctl/go")})
`,
          onStarted: (id) => {
            executionId = id;
          },
          onLog: (_stream, text) => {
            if (text !== 'BOMBED') return;
            seenWhileRunning = processesOfExecution(executionId, tag);
            writeFileSync(join(control, 'go'), '');
          },
        });
        assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
        assert.equal(result.report['released'], true);
        assert.equal(result.report['refused'], 'EAGAIN', 'fork must fail with EAGAIN at the pids limit');
        // 32 tasks in the cgroup: bwrap's init (sandbox only: docker's agent is the container's pid 1), the agent,
        // and its children.
        const most = isolation === 'docker' ? 31 : 30;
        assert.ok(result.report['children'] <= most, `forked ${result.report['children']} children`);
        assert.ok(
          result.report['children'] >= 20,
          `only ${result.report['children']} children: limit not reached`,
        );
        const violation = result.record.violations.find((v) => v.rule === 'pids');
        assert.ok(violation, JSON.stringify(result.record.violations));
        assert.ok((violation.count ?? 0) >= 1);
        // The host saw the bomb's processes (so the scan works), all as the sandbox uid — and none survives the run.
        assert.ok(
          seenWhileRunning.length >= 20,
          `saw ${seenWhileRunning.length} processes of the bomb on the host`,
        );
        assert.deepEqual([...new Set(seenWhileRunning.map((p) => p.uid))], [SANDBOX_USER.uid]);
        assert.deepEqual(seenWhileRunning.filter(stillRunning), []);
        assert.deepEqual(processesOfExecution(result.executionId, tag), []);
        // The host is fine: it still forks.
        assert.equal(spawnSync('/bin/true').status, 0);
      },
    );

    sandboxOnly(isolation)('cpu: `cpu: 200m` holds a busy loop to a fraction of one core', async () => {
      const result = await h.run({
        name: 'cpu-spin',
        resources: { cpu: '200m' },
        code: `
import time
wall0, cpu0 = time.monotonic(), time.process_time()
while time.monotonic() - wall0 < 1.5:
    pass
wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
report({"wall": wall, "cpu": cpu, "ratio": cpu / wall})
`,
      });
      assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
      const { wall, cpu, ratio } = result.report;
      // Unthrottled, a busy loop gets ~1.0; 200m allows ~0.2. A loaded machine only lowers it.
      assert.ok(wall >= 1.5, `wall ${wall}`);
      assert.ok(
        ratio < 0.5,
        `CPU/wall ratio ${ratio} (cpu ${cpu} s over ${wall} s): the quota is not applied`,
      );
      assert.ok(cpu > 0.02, `the agent barely ran: ${cpu} s of CPU`);
    });
  });

  // Not concurrent with the tests above: the tree must be built within its 1 s of wall clock, which a CPU spinner,
  // an OOM and a fork bomb next to it make needlessly tight on a loaded 2-core machine.
  describe(`adversarial: timeout (${isolation})`, { skip }, () => {
    let h: Harness;
    before(() => {
      h = new Harness({ isolation });
    });
    after(() => h.close());

    // Sandbox only (time budget): conformance kills a timed-out tree on every runtime.
    sandboxOnly(isolation)(
      'a process tree that tries to outlive `timeout: 1s` is killed whole; nothing is left on the host',
      async () => {
        const tag = marker();
        let executionId = '';
        let seenWhileRunning: HostProcess[] = [];
        const result = await h.run({
          name: 'outlive',
          resources: { timeout: '1s' },
          command: [PYTHON, '/agent/main.py', tag],
          input: { tag },
          code: `
import signal, subprocess, time

def child(body):
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    return pid

def sleeper():
    time.sleep(1000)

def spinner():
    while True:
        pass

def stubborn():
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    time.sleep(1000)

def daemon():
    # Classic escape: new session, double fork, the grandchild is reparented away from the agent.
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(1000)
    os._exit(0)

def parent_of_grandchildren():
    child(sleeper)
    child(spinner)
    subprocess.Popen(["/bin/sh", "-c", "sleep 1000; : " + INPUT["tag"]])
    time.sleep(1000)

for body in (sleeper, spinner, stubborn, daemon, parent_of_grandchildren):
    child(body)
def tree():
    cmdlines = [attempt(read_text, f"/proc/{p}/cmdline").get("value", "") for p in os.listdir("/proc") if p.isdigit()]
    return len(cmdlines), any(c.startswith("sleep\\0") for c in cmdlines)

deadline = time.monotonic() + 0.8
while tree() != (12, True) and time.monotonic() < deadline:
    time.sleep(0.01)
print("TREE", *tree(), flush=True)
time.sleep(1000)
`,
          onStarted: (id) => {
            executionId = id;
          },
          onLog: (_stream, text) => {
            if (text.startsWith('TREE ')) seenWhileRunning = processesOfExecution(executionId, tag);
          },
        });
        assert.equal(result.record.status, 'timeout', Harness.transcript(result));
        assert.match(result.record.reason ?? '', /wall-clock limit of 1000 ms/);
        const violation = result.record.violations.find((v) => v.rule === 'timeout');
        assert.ok(violation, JSON.stringify(result.record.violations));
        assert.match(violation.message, /the whole process tree was killed/);
        // The tree was there (init, agent, 5 children — one a zombie daemon —, its grandchild, and 4 grandchildren
        // under the last child: a sleeper, a spinner, sh and its sleep) …
        const tree = result.logs.find((l) => l.text.startsWith('TREE '));
        assert.ok(tree, `the agent never built its tree:\n${Harness.transcript(result)}`);
        assert.equal(tree.text, 'TREE 12 True');
        const seen = seenWhileRunning.map((p) => `${p.pid} uid=${p.uid} ${p.cmdline}`).join('\n');
        assert.ok(seenWhileRunning.length >= 12, `saw on the host:\n${seen}`);
        // … ran as the unprivileged sandbox uid on the host …
        assert.deepEqual([...new Set(seenWhileRunning.map((p) => p.uid))], [SANDBOX_USER.uid]);
        assert.ok(
          seenWhileRunning.some((p) => p.cmdline.startsWith('sleep 1000')),
          `no sleep grandchild in:\n${seen}`,
        );
        // … and is gone: none of those pids, no process in the execution's cgroups or carrying its marker.
        assert.deepEqual(seenWhileRunning.filter(stillRunning), []);
        assert.deepEqual(processesOfExecution(result.executionId, tag), []);
      },
    );
  });
}
