/**
 * Warm instances (`InstanceSpec.prewarm`, `Runtime.bind`; docs/adr/0012-warm-instances.md) on the real sandbox
 * runtime: a prewarmed agent behaves exactly like a cold one (output, exit codes, stderr, argv, fds), its
 * interpreter runs before execute() but its code does not, the go socket is gone before the agent's first
 * instruction, a Warm instance that dies is reported failed and cleaned up, bind() re-routes egress, the timeout
 * counts from execute(), and the reaper takes dead owners' pool instances.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { ProcIdentity } from '../../src/adapters/host/process-identity.ts';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import { SandboxRuntime } from '../../src/adapters/runtimes/sandbox/runtime.ts';
import type { NetworkDecisionEvent, ProcessIdentity } from '../../src/app/ports.ts';
import { isAegisError } from '../../src/domain/errors.ts';
import type { CompiledAgent } from '../../src/domain/manifest/compiled.ts';
import { compileNetworkPolicy } from '../../src/domain/policy/network-rules.ts';
import { cgroupDirsOf, Harness, hostProcesses, hostSkipReason, isAlive, pollUntil } from './harness.ts';

const skip = hostSkipReason();

interface AgentFiles {
  readonly language: 'python' | 'node' | 'bash';
  readonly entrypoint?: string;
  readonly command?: readonly string[];
  readonly files: Readonly<Record<string, string>>;
  readonly allow?: readonly string[];
  readonly timeout?: string;
}

interface Outcome {
  readonly status: string;
  readonly exitCode: number | null;
  readonly reason: string | null;
  readonly output: unknown;
  readonly stdout: readonly string[];
  readonly stderr: readonly string[];
}

let seq = 0;
const poolId = () => `wp_test${process.pid}x${Date.now().toString(36)}x${seq++}`;
const execId = () => `ex_test${process.pid}x${Date.now().toString(36)}x${seq++}`;
const nowMs = () => performance.timeOrigin + performance.now();

describe('warm instances: prewarm, bind, failure, timeout', { concurrency: true, skip }, () => {
  let h: Harness;
  let rt: SandboxRuntime;

  before(() => {
    h = new Harness();
    rt = h.ctx.sandbox;
  });
  after(async () => {
    await rt.terminateAll();
    await h.close();
  });

  async function agentOf(spec: AgentFiles): Promise<CompiledAgent> {
    const dir = h.tempDir('warm-agent');
    for (const [name, content] of Object.entries(spec.files)) writeFileSync(join(dir, name), content);
    const runtime =
      spec.command !== undefined
        ? { command: [...spec.command] }
        : { language: spec.language, entrypoint: spec.entrypoint };
    const manifest = {
      apiVersion: 'aegis.dev/v1',
      kind: 'Agent',
      metadata: { name: `warm-${spec.language}`, version: '1.0.0' },
      spec: {
        runtime,
        isolation: 'sandbox',
        security: {
          network: { allow: [...(spec.allow ?? [])], deny: [] },
          filesystem: { read: [], write: [] },
          resources: { timeout: spec.timeout ?? '20s' },
        },
      },
    };
    writeFileSync(join(dir, 'agent.yaml'), stringify(manifest));
    return (await loadManifestFile(join(dir, 'agent.yaml'))).agent;
  }

  async function execute(id: string, input: unknown = null): Promise<Outcome> {
    const stdout: string[] = [];
    const stderr: string[] = [];
    const result = await rt.execute(id, {
      input,
      onLog: (stream, text) => (stream === 'stdout' ? stdout : stderr).push(text),
    });
    return {
      status: result.status,
      exitCode: result.exitCode,
      reason: result.reason,
      output: result.output,
      stdout,
      stderr,
    };
  }

  /** Runs the agent cold and prewarmed (bound to a fresh execution id, as a pool does); returns both outcomes. */
  async function coldAndWarm(agent: CompiledAgent, input: unknown = null) {
    const cold = await execute(await rt.spawn({ executionId: execId(), agent }), input);
    const pooled = poolId();
    const id = await rt.spawn({ executionId: pooled, agent, prewarm: true });
    rt.bind(id, { executionId: execId() });
    const warm = await execute(id, input);
    assertGone(pooled);
    return { cold, warm };
  }

  /** Nothing of the instance is left on the host: scratch dir, cgroups. */
  function assertGone(spawnedAs: string, scratchRoot = rt.scratchRoot): void {
    assert.deepEqual(
      readdirSync(join(scratchRoot, 'sandboxes')).filter((name) => name.startsWith(`${spawnedAs}.`)),
      [],
      `scratch dir of ${spawnedAs}`,
    );
    assert.deepEqual(cgroupDirsOf(spawnedAs), [], `cgroups of ${spawnedAs}`);
  }

  /** Host processes in the instance's cgroup. */
  function processesIn(spawnedAs: string) {
    return hostProcesses((p) => new RegExp(`/${spawnedAs}\\.[0-9a-f]{8}\n`).test(p.cgroup));
  }

  const PY_CASES: Record<string, string> = {
    'json output': 'import json\nprint("working")\nprint(json.dumps({"answer": 42, "items": [1, "two"]}))\n',
    'input from stdin and input.json':
      'import json, sys\nfrom_stdin = json.loads(sys.stdin.read())\nfrom_file = json.load(open("/run/aegis/input.json"))\nprint(json.dumps({"stdin": from_stdin, "file": from_file}))\n',
    'uncaught exception':
      'def inner():\n    raise ValueError("boom")\n\nprint("before", flush=True)\ninner()\n',
    'chained exception':
      'try:\n    {}["k"]\nexcept KeyError as e:\n    raise RuntimeError("wrapped") from e\n',
    'syntax error': 'print("never")\ndef broken(:\n',
    'sys.exit(3)': 'import sys\nprint("leaving")\nsys.exit(3)\n',
    'sys.exit(message)': 'import sys\nsys.exit("fatal: no way")\n',
    'output.json':
      'import json\njson.dump({"via": "file"}, open("/run/aegis/output.json", "w"))\nprint("not json")\n',
  };
  const NODE_CASES: Record<string, string> = {
    'json output':
      'console.log("working");\nconsole.log(JSON.stringify({ answer: 42, items: [1, "two"] }));\n',
    'input from stdin and input.json':
      'import { readFileSync } from "node:fs";\nconst stdin = JSON.parse(readFileSync(0, "utf8"));\nconst file = JSON.parse(readFileSync("/run/aegis/input.json", "utf8"));\nconsole.log(JSON.stringify({ stdin, file }));\n',
    'uncaught exception':
      'function inner() {\n  throw new Error("boom");\n}\nconsole.log("before");\ninner();\n',
    'rejected top-level await': 'console.log("before");\nawait Promise.reject(new TypeError("nope"));\n',
    'process.exit(3)': 'console.log("leaving");\nprocess.exit(3);\n',
    'process.exitCode = 4': 'process.exitCode = 4;\nconsole.error("set");\n',
  };
  const INPUT = { task: 'compare', n: [1, 2, 3], text: 'héllo' };

  for (const [name, code] of Object.entries(PY_CASES)) {
    it(`python prewarmed = cold: ${name}`, async () => {
      const agent = await agentOf({ language: 'python', entrypoint: 'main.py', files: { 'main.py': code } });
      const { cold, warm } = await coldAndWarm(agent, INPUT);
      assert.deepEqual(warm, cold);
      if (name.includes('exception')) {
        assert.notEqual(cold.exitCode, 0);
        assert.equal(cold.stderr[0], 'Traceback (most recent call last):');
        assert.ok(!warm.stderr.join('\n').includes('prewarm'), warm.stderr.join('\n'));
      }
      if (name === 'sys.exit(3)') assert.equal(warm.exitCode, 3);
    });
  }

  for (const [name, code] of Object.entries(NODE_CASES)) {
    it(`node prewarmed = cold: ${name}`, async () => {
      const agent = await agentOf({ language: 'node', entrypoint: 'main.mjs', files: { 'main.mjs': code } });
      const { cold, warm } = await coldAndWarm(agent, INPUT);
      assert.deepEqual(warm, cold);
      if (name.includes('exception')) {
        assert.notEqual(cold.exitCode, 0);
        assert.ok(cold.stderr.some((line) => line.includes('Error: boom')));
        assert.ok(!warm.stderr.join('\n').includes('prewarm'), warm.stderr.join('\n'));
      }
      if (name === 'process.exit(3)') assert.equal(warm.exitCode, 3);
    });
  }

  it('two starts of one execution on one host get distinct cgroups and scratch dirs; tearing one down spares the other', async () => {
    // Seen in the cluster: a fenced-out node and the node that took its execution over, on one host (one cgroup
    // parent, one scratch root), both started it — and the fenced one's teardown removed the new holder's cgroup.
    const agent = await agentOf({
      language: 'bash',
      entrypoint: 'main.sh',
      files: { 'main.sh': 'sleep 30\n' },
    });
    const id = execId();
    const fenced = await rt.spawn({ executionId: id, agent });
    const holder = await rt.spawn({ executionId: id, agent });
    assert.notEqual(fenced, holder);
    const groups = cgroupDirsOf(id);
    const dirs = readdirSync(join(rt.scratchRoot, 'sandboxes')).filter((name) => name.startsWith(`${id}.`));
    assert.equal(dirs.length, 2, `two scratch dirs: ${dirs.join(', ')}`);
    assert.ok(
      groups.length >= 2 && groups.length % 2 === 0,
      `each start has its own groups: ${groups.join(', ')}`,
    );
    await rt.terminate(fenced);
    const left = cgroupDirsOf(id);
    assert.equal(left.length, groups.length / 2, `the holder's groups are still there: ${left.join(', ')}`);
    assert.ok(left.every((dir) => existsSync(dir)));
    assert.equal(rt.status(holder), 'warm', 'the holder is untouched');
    await rt.terminate(holder);
    assert.deepEqual(cgroupDirsOf(id), []);
  });

  it('node prewarmed = cold: a CommonJS entrypoint (require.main === module) and its uncaught error', async () => {
    const code =
      'function main() {\n  console.log(JSON.stringify({ main: require.main === module, argv: process.argv.slice(1) }));\n  null.x;\n}\nif (require.main === module) main();\n';
    const agent = await agentOf({ language: 'node', entrypoint: 'main.cjs', files: { 'main.cjs': code } });
    const { cold, warm } = await coldAndWarm(agent);
    assert.deepEqual(warm, cold);
    assert.deepEqual(JSON.parse(cold.stdout[0]!), { main: true, argv: ['/agent/main.cjs'] });
    assert.equal(cold.exitCode, 1);
  });

  it('bash and command: agents prewarmed through the exec wrapper = cold, with the bound AEGIS_EXECUTION_ID', async () => {
    const script =
      'echo "id=$AEGIS_EXECUTION_ID"\necho "args=$0 $*"\nread -r line\necho "stdin=$line"\nls /proc/self/fd | sort -n | tr "\\n" " "; echo\nexit 5\n';
    for (const spec of [
      { language: 'bash', entrypoint: 'main.sh', files: { 'main.sh': script } },
      { language: 'bash', command: ['bash', 'main.sh', 'x y'], files: { 'main.sh': script } },
    ] as const) {
      const agent = await agentOf(spec);
      const coldId = execId();
      const cold = await execute(await rt.spawn({ executionId: coldId, agent }), INPUT);
      const bound = execId();
      const id = await rt.spawn({ executionId: poolId(), agent, prewarm: true });
      rt.bind(id, { executionId: bound });
      const warm = await execute(id, INPUT);
      assert.equal(cold.stdout[0], `id=${coldId}`);
      assert.equal(warm.stdout[0], `id=${bound}`);
      assert.deepEqual({ ...warm, stdout: warm.stdout.slice(1) }, { ...cold, stdout: cold.stdout.slice(1) });
      assert.equal(warm.exitCode, 5);
      assert.equal(warm.stdout[2], `stdin=${JSON.stringify(INPUT)}`);
    }
  });

  it('the interpreter runs before execute(); the agent does not', async () => {
    const agents = {
      python: await agentOf({
        language: 'python',
        entrypoint: 'main.py',
        files: { 'main.py': 'import time\nprint(time.time() * 1000, flush=True)\n' },
      }),
      node: await agentOf({
        language: 'node',
        entrypoint: 'main.mjs',
        files: { 'main.mjs': 'console.log(performance.timeOrigin + performance.now());\n' },
      }),
    };
    const shim = {
      python: '/usr/bin/python3 /opt/aegis/lib/prewarm.py main.py',
      node: '/opt/aegis/bin/node --require /opt/aegis/lib/prewarm.cjs main.mjs',
    };
    await Promise.all(
      (['python', 'node'] as const).map(async (language) => {
        const pooled = poolId();
        const id = await rt.spawn({ executionId: pooled, agent: agents[language], prewarm: true });
        assert.equal(rt.status(id), 'warm');
        // spawn() resolved once the shim said it was ready: the interpreter is a process in the instance's cgroup.
        const interpreter = processesIn(pooled).filter((p) => p.cmdline.trim() === shim[language]);
        assert.equal(interpreter.length, 1, JSON.stringify(processesIn(pooled)));
        await new Promise((resolve) => setTimeout(resolve, 300)); // a pool keeps it idle; the agent must not start
        assert.equal(rt.status(id), 'warm');
        const executeAt = nowMs();
        const out = await execute(id);
        assert.equal(out.status, 'succeeded', out.stderr.join('\n'));
        const firstLineAt = Number(out.stdout[0]);
        assert.ok(
          firstLineAt >= executeAt,
          `${language}: the agent's first line ran at ${firstLineAt}, before execute() at ${executeAt}`,
        );
        assert.equal(isAlive(interpreter[0]!.pid), false);
        assertGone(pooled);
      }),
    );
  });

  it('the agent sees no go socket, argv and fds as in a cold start; /proc/self/cmdline names the shim', async () => {
    const python = await agentOf({
      language: 'python',
      entrypoint: 'main.py',
      files: {
        'main.py': `import json, os, sys
listing = os.listdir("/proc/self/fd")  # the listing's own fd is in it; it is closed by now
fds = {}
for fd in listing:
    try:
        fds[fd] = os.readlink(f"/proc/self/fd/{fd}").split(":")[0]
    except OSError:
        pass
print(json.dumps({
    "fds": fds,
    "argv": sys.argv, "orig_argv": sys.orig_argv, "path0": sys.path[0], "file": __file__,
    "globals": sorted(k for k in globals() if k.startswith("__")),
    "modules": sorted(sys.modules),
    "cmdline": open("/proc/self/cmdline").read().split("\\0")[:-1],
    "environ": sorted(k for k in os.environ),
}))
`,
      },
    });
    const node = await agentOf({
      language: 'node',
      entrypoint: 'main.mjs',
      files: {
        'main.mjs': `import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
const fds = {};
for (const fd of readdirSync('/proc/self/fd')) {
  try { fds[fd] = readlinkSync('/proc/self/fd/' + fd).split(':')[0]; } catch {}
}
const require = createRequire(import.meta.url);
console.log(JSON.stringify({
  fds, argv: process.argv, execArgv: process.execArgv, main: import.meta.main, cache: Object.keys(require.cache),
  cmdline: readFileSync('/proc/self/cmdline', 'utf8').split('\\0').slice(0, -1),
  environ: Object.keys(process.env).sort(),
}));
`,
      },
    });
    for (const [agent, shimArgv] of [
      [python, ['/usr/bin/python3', '/opt/aegis/lib/prewarm.py', 'main.py']],
      [node, ['/opt/aegis/bin/node', '--require', '/opt/aegis/lib/prewarm.cjs', 'main.mjs']],
    ] as const) {
      const { cold, warm } = await coldAndWarm(agent);
      assert.equal(warm.status, 'succeeded', warm.stderr.join('\n'));
      const c = JSON.parse(cold.stdout[0]!);
      const w = JSON.parse(warm.stdout[0]!);
      // Same fd numbers, same kinds: the go socket (fd 63) is closed before the agent's first instruction.
      assert.deepEqual(w.fds, c.fds);
      assert.equal(w.fds['63'], undefined);
      for (const fd of ['0', '1', '2']) assert.equal(w.fds[fd], 'socket');
      assert.deepEqual(shimArgv.slice(0, 1).concat(shimArgv.slice(-1)), c.cmdline);
      // The one visible difference: the process was exec'd as the shim.
      assert.deepEqual(w.cmdline, shimArgv);
      delete c.cmdline;
      delete w.cmdline;
      assert.deepEqual(w, c);
    }
  });

  it('a Warm instance whose bwrap is killed is failed: execute() rejects, terminate() leaves nothing', async () => {
    const agent = await agentOf({
      language: 'python',
      entrypoint: 'main.py',
      files: { 'main.py': 'print(1)\n' },
    });
    for (const prewarm of [true, false]) {
      const pooled = poolId();
      const id = await rt.spawn({ executionId: pooled, agent, prewarm });
      assert.equal(rt.status(id), 'warm');
      // The sandbox init is in the cgroup; its parent, outside it, is the bwrap process the runtime started.
      const inside = processesIn(pooled);
      const pids = new Set(inside.map((p) => p.pid));
      const parents = inside
        .map((p) => ppidOf(p.pid))
        .filter((ppid) => ppid !== undefined && !pids.has(ppid));
      assert.equal(new Set(parents).size, 1, JSON.stringify(inside));
      process.kill(parents[0]!, 'SIGKILL');
      await pollUntil('status failed', () => rt.status(id) === 'failed');
      assert.throws(
        () => rt.bind(id, { executionId: execId() }),
        (e) => isAegisError(e) && e.code === 'USAGE',
      );
      await assert.rejects(
        rt.execute(id, { input: null, onLog: () => {} }),
        (e) =>
          isAegisError(e) && e.code === 'RUNTIME_UNAVAILABLE' && /died before it was used/.test(e.message),
      );
      await rt.terminate(id);
      assert.equal(rt.status(id), undefined);
      assertGone(pooled);
    }
  });

  it('a Warm instance whose interpreter dies is failed too; terminate() of a live Warm instance cleans up', async () => {
    const agent = await agentOf({ language: 'node', entrypoint: 'main.mjs', files: { 'main.mjs': '' } });
    const pooled = poolId();
    const id = await rt.spawn({ executionId: pooled, agent, prewarm: true });
    const shim = processesIn(pooled).find((p) => p.cmdline.includes('prewarm.cjs'));
    assert.ok(shim);
    process.kill(shim.pid, 'SIGKILL');
    await pollUntil('status failed', () => rt.status(id) === 'failed');
    await rt.terminate(id);
    assertGone(pooled);

    const other = poolId();
    const live = await rt.spawn({ executionId: other, agent, prewarm: true });
    await rt.terminate(live);
    await rt.terminate(live); // idempotent
    assert.equal(rt.status(live), undefined);
    assertGone(other);
  });

  describe('egress of a bound instance', () => {
    let server: HttpServer;
    let portA = 0;
    let portB = 0;
    let serverB: HttpServer;
    const hits: string[] = [];

    before(async () => {
      const listen = async (s: HttpServer) => {
        await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
        return (s.address() as { port: number }).port;
      };
      server = createHttpServer((req, res) => {
        hits.push(`A${req.url}`);
        res.end('a');
      });
      serverB = createHttpServer((req, res) => {
        hits.push(`B${req.url}`);
        res.end('b');
      });
      portA = await listen(server);
      portB = await listen(serverB);
    });
    after(async () => {
      server.closeAllConnections();
      serverB.closeAllConnections();
      await Promise.all([
        new Promise((resolve) => server.close(resolve)),
        new Promise((resolve) => serverB.close(resolve)),
      ]);
    });

    it('bind() re-routes egress decisions and setNetworkPolicy(bound execution id) reaches the instance', async () => {
      const agent = await agentOf({
        language: 'python',
        entrypoint: 'main.py',
        allow: [`127.0.0.1:${portA}`, `127.0.0.1:${portB}`],
        files: {
          'main.py': `import json, os, sys, urllib.request, urllib.error
ports = json.load(sys.stdin)
def get(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/warm", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
print(json.dumps({"a": get(ports["a"]), "b": get(ports["b"]), "id": os.environ["AEGIS_EXECUTION_ID"]}))
`,
        },
      });
      const poolDecisions: NetworkDecisionEvent[] = [];
      const decisions: NetworkDecisionEvent[] = [];
      const pooled = poolId();
      const id = await rt.spawn({
        executionId: pooled,
        agent,
        prewarm: true,
        onNetworkDecision: (event) => poolDecisions.push(event),
      });
      const bound = execId();
      rt.bind(id, { executionId: bound, onNetworkDecision: (event) => decisions.push(event) });
      assert.throws(
        () => rt.bind(id, { executionId: execId() }),
        (e) => isAegisError(e) && e.code === 'USAGE',
      );

      const onlyA = compileNetworkPolicy({ allow: [`127.0.0.1:${portA}`] });
      assert.ok(onlyA.ok);
      assert.equal(await rt.setNetworkPolicy(pooled, onlyA.policy), false);
      assert.equal(await rt.setNetworkPolicy(bound, onlyA.policy), true);

      const running = execute(id, { a: portA, b: portB });
      // From execute() on (written right after the go message), state.json names the bound execution (the reaper
      // returns it); the dir keeps the pool id's name.
      const dirName = readdirSync(join(rt.scratchRoot, 'sandboxes')).find((name) =>
        name.startsWith(`${pooled}.`),
      );
      const state = JSON.parse(
        readFileSync(join(rt.scratchRoot, 'sandboxes', dirName!, 'state.json'), 'utf8'),
      );
      assert.equal(state.executionId, bound);
      assert.equal(state.spawnedAs, pooled);
      const out = await running;
      assert.equal(out.status, 'succeeded', out.stderr.join('\n'));
      assert.deepEqual(JSON.parse(out.stdout.at(-1)!), { a: 200, b: 403, id: bound });
      assert.ok(hits.includes('A/warm') && !hits.includes('B/warm'), hits.join(' '));
      assert.deepEqual(poolDecisions, []);
      // The denial is reported at once, the allowed connection when it closes: compare in port order.
      assert.deepEqual(
        decisions
          .map((d) => ({
            port: d.port,
            verdict: d.verdict,
            execution: (d as { execution?: string }).execution,
          }))
          .sort((x, y) => (x.port === portA ? -1 : y.port === portA ? 1 : 0)),
        [
          { port: portA, verdict: 'allow', execution: bound },
          { port: portB, verdict: 'deny', execution: bound },
        ],
      );
      assertGone(pooled);
    });
  });

  it('the wall-clock timeout counts from execute(), not from spawn', async () => {
    const quick = await agentOf({
      language: 'python',
      entrypoint: 'main.py',
      timeout: '3s',
      files: { 'main.py': 'print("quick")\n' },
    });
    const slow = await agentOf({
      language: 'python',
      entrypoint: 'main.py',
      timeout: '3s',
      files: { 'main.py': 'import time\nprint("start", flush=True)\ntime.sleep(10)\n' },
    });
    const [a, b] = await Promise.all([
      rt.spawn({ executionId: poolId(), agent: quick, prewarm: true }),
      rt.spawn({ executionId: poolId(), agent: slow, prewarm: true }),
    ]);
    // Longer than the limit: had the clock started at spawn, both would time out. (3 s, not 1 s: a loaded host
    // can take over a second to run even the quick one.)
    await new Promise((resolve) => setTimeout(resolve, 3500));
    const quickOut = await execute(a);
    assert.equal(quickOut.status, 'succeeded', JSON.stringify(quickOut));
    const startedAt = nowMs();
    const slowOut = await execute(b);
    assert.equal(slowOut.status, 'timeout');
    assert.ok(nowMs() - startedAt >= 3000, 'the timeout fired before 3 s of execution');
  });

  it("the reaper takes a dead owner's pool instances (bound or not) and returns the ids state.json names", async () => {
    const agent = await agentOf({
      language: 'python',
      entrypoint: 'main.py',
      files: { 'main.py': 'print(1)\n' },
    });
    // This host, a pid above the kernel's maximum: an owner that is certainly dead.
    const deadOwner: ProcessIdentity = {
      current: () => ({ host: hostname(), pid: 2 ** 22 + 1, startTicks: 1 }),
      isAlive: () => false,
    };
    // A scratch root of this test's own: the shared one is scanned by every other test process's reaper (servers and
    // CLI runs reap at start), which would take these orphans first.
    const scratchRoot = h.tempDir('reaper-scratch');
    const cgroupParent = process.env['AEGIS_CGROUP_PARENT'];
    const orphaning = new SandboxRuntime({
      identity: deadOwner,
      scratchRoot,
      ...(cgroupParent ? { cgroupParent } : {}),
    });
    const reaper = new SandboxRuntime({
      identity: new ProcIdentity(),
      scratchRoot,
      ...(cgroupParent ? { cgroupParent } : {}),
    });
    const [unbound, boundPool] = [poolId(), poolId()];
    const idA = await orphaning.spawn({ executionId: unbound, agent, prewarm: true });
    const idB = await orphaning.spawn({ executionId: boundPool, agent, prewarm: true });
    const bound = execId();
    orphaning.bind(idB, { executionId: bound });
    const inside = [...processesIn(unbound), ...processesIn(boundPool)];
    assert.ok(inside.length >= 4, JSON.stringify(inside));

    // A runtime with a live owner reaps what the "dead" orchestrator left.
    const reaped = await reaper.reapOrphans();
    assert.ok(reaped.includes(unbound), `${reaped}`);
    // Bound but never executed: state.json names the bound execution only from execute() on (written after the go
    // message, off the warm-start path), so the reaper reports the pool id; nothing of that execution ran.
    assert.ok(reaped.includes(boundPool), `${reaped}`);
    assert.ok(!reaped.includes(bound), `${reaped}`);
    assertGone(unbound, scratchRoot);
    assertGone(boundPool, scratchRoot);
    await pollUntil('the orphans to die', () => inside.every((p) => !isAlive(p.pid)));
    await orphaning.terminate(idA);
    await orphaning.terminate(idB);
  });
});

function ppidOf(pid: number): number | undefined {
  try {
    return Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  } catch {
    return undefined;
  }
}
