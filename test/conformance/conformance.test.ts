/**
 * Runtime conformance: the same behavioural and adversarial cases against every runtime, through the `Runtime` port
 * only (spawn → Warm, bind, execute → TaskOutput, terminate, status, reapOrphans). A runtime passes when an agent
 * means the same thing on it as on every other: same limits, same network rules and ledger events, same grants,
 * same placeholders, same input/output/log contract. Runtimes: ./runtimes.ts (one line each).
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { ProcIdentity } from '../../src/adapters/host/process-identity.ts';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import type { NetworkDecisionEvent, ProcessIdentity, Runtime, TaskOutput } from '../../src/app/ports.ts';
import type { CompiledAgent } from '../../src/domain/manifest/compiled.ts';
import { conformanceRuntimes } from './runtimes.ts';

const PRELUDE = `
import errno, json, os, socket, sys, urllib.request
def attempt(fn, *a):
    try:
        return {"ok": True, "value": fn(*a)}
    except Exception as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "errno": errno.errorcode.get(getattr(e, "errno", None) or 0)}
def read(path):
    with open(path) as f:
        return f.read()
def write(path, text="x"):
    with open(path, "w") as f:
        f.write(text)
    return True
INPUT = json.load(open(os.environ["AEGIS_INPUT"]))
def report(value):
    print(json.dumps(value), flush=True)
`;

interface AgentDef {
  readonly name: string;
  readonly language?: 'python' | 'node' | 'bash';
  readonly code: string;
  readonly resources?: Record<string, string | number>;
  readonly allow?: readonly string[];
  readonly read?: readonly { source: string; target: string }[];
  readonly write?: readonly { source: string; target: string }[];
  readonly env?: Record<string, string>;
}

/** An agent's JSON report, asserted field by field. */
// biome-ignore lint/suspicious/noExplicitAny: the shape is whatever the agent printed; tests assert on it
type Report = Record<string, any>;

const ENTRY = { python: 'main.py', node: 'main.mjs', bash: 'main.sh' } as const;

for (const { runtime: rut, skip, missing } of conformanceRuntimes()) {
  describe(`conformance: ${rut.name}`, { skip: skip ?? false, concurrency: true }, () => {
    const root = mkdtempSync(join(tmpdir(), `aegis-conformance-${rut.name}-`));
    chmodSync(root, 0o755); // the runtime's unprivileged uid reaches agent dirs and grants below it
    // The shared parent every sandbox uses: instances get groups of their own under it, removed with them.
    const cgroupParent = 'aegis';
    const identity = new ProcIdentity();
    let runtime: Runtime;
    let seq = 0;
    const nextId = () => `ex_conf${process.pid}x${Date.now().toString(36)}x${seq++}`;

    before(() => {
      // Required here (CI or AEGIS_REQUIRE_RUNTIMES) but missing: a failure, never a skip.
      if (missing !== undefined)
        assert.fail(`the ${rut.name} runtime is required but cannot run: ${missing}`);
      runtime = rut.create({ identity, scratchRoot: join(root, 'scratch'), cgroupParent });
    });
    after(() => rmSync(root, { recursive: true, force: true }));

    async function compile(def: AgentDef): Promise<CompiledAgent> {
      const dir = join(root, 'agents', `${def.name}-${seq++}`);
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      const language = def.language ?? 'python';
      writeFileSync(join(dir, ENTRY[language]), language === 'python' ? `${PRELUDE}\n${def.code}` : def.code);
      const manifest = {
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name: def.name, version: '1.0.0' },
        spec: {
          runtime: { language, entrypoint: ENTRY[language] },
          isolation: rut.name,
          security: {
            network: { allow: [...(def.allow ?? [])], deny: [] },
            filesystem: { read: [...(def.read ?? [])], write: [...(def.write ?? [])] },
            resources: { timeout: '20s', ...def.resources },
          },
          env: def.env ?? {},
        },
      };
      writeFileSync(join(dir, 'agent.yaml'), stringify(manifest));
      return (await loadManifestFile(join(dir, 'agent.yaml'))).agent;
    }

    interface Ran {
      readonly out: TaskOutput;
      readonly logs: { stream: string; text: string }[];
      readonly decisions: NetworkDecisionEvent[];
      readonly executionId: string;
    }

    async function run(def: AgentDef, input: unknown = null, secrets?: Record<string, string>): Promise<Ran> {
      const agent = await compile(def);
      const executionId = nextId();
      const decisions: NetworkDecisionEvent[] = [];
      const id = await runtime.spawn({
        executionId,
        agent,
        onNetworkDecision: (event) => decisions.push(event),
        ...(secrets ? { secrets: { env: secrets, placeholders: new Map(), onSecretUse: () => {} } } : {}),
      });
      assert.equal(runtime.status(id), 'warm', 'spawn returns a Warm instance');
      const logs: { stream: string; text: string }[] = [];
      const out = await runtime.execute(id, { input, onLog: (stream, text) => logs.push({ stream, text }) });
      assert.equal(runtime.status(id), undefined, 'execute destroys the instance');
      return { out, logs, decisions, executionId };
    }
    const transcript = (ran: Ran) =>
      `${ran.out.status} ${ran.out.reason}\n${ran.logs.map((l) => `[${l.stream}] ${l.text}`).join('\n')}`;

    describe('input, output and logs', { concurrency: true }, () => {
      it('python: input on AEGIS_INPUT and stdin, output.json wins over stdout, logs line by line', async () => {
        const ran = await run(
          {
            name: 'io-python',
            code: `print("to stderr", file=sys.stderr, flush=True)\nprint("line one", flush=True)\nstdin = json.loads(sys.stdin.readline())\nwrite(os.environ["AEGIS_OUTPUT"], json.dumps({"echo": INPUT, "stdin": stdin}))\nreport({"not": "the output"})`,
          },
          { n: 42 },
        );
        assert.equal(ran.out.status, 'succeeded', transcript(ran));
        assert.deepEqual(ran.out.output, { echo: { n: 42 }, stdin: { n: 42 } });
        assert.ok(ran.logs.some((l) => l.stream === 'stderr' && l.text === 'to stderr'));
        assert.ok(ran.logs.some((l) => l.stream === 'stdout' && l.text === 'line one'));
      });

      it('node: the last stdout line is the output when it is JSON', async () => {
        const ran = await run(
          {
            name: 'io-node',
            language: 'node',
            code: `import { readFileSync } from 'node:fs';\nconst input = JSON.parse(readFileSync(process.env.AEGIS_INPUT, 'utf8'));\nconsole.log(JSON.stringify({ doubled: input * 2, id: process.env.AEGIS_EXECUTION_ID }));\n`,
          },
          21,
        );
        assert.equal(ran.out.status, 'succeeded', transcript(ran));
        assert.deepEqual(ran.out.output, { doubled: 42, id: ran.executionId });
      });

      it('bash: a non-zero exit is failed with its exit code', async () => {
        const ran = await run({ name: 'io-bash', language: 'bash', code: 'echo "{\\"x\\": 1}"\nexit 3\n' });
        assert.equal(ran.out.status, 'failed');
        assert.equal(ran.out.exitCode, 3);
        assert.deepEqual(ran.out.output, { x: 1 });
      });
    });

    describe('isolation from the host', { concurrency: true }, () => {
      it('sees no host environment, processes or files', async () => {
        process.env['AEGIS_CONFORMANCE_CANARY'] = 'host-secret-canary';
        const canaryFile = join(root, 'canary.txt');
        writeFileSync(canaryFile, 'host file', { mode: 0o644 });
        const ran = await run(
          {
            name: 'isolation',
            code: `report({"env": dict(os.environ), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), "canary": attempt(read, INPUT["canary"]), "shadow": attempt(read, "/etc/shadow"), "uid": os.getuid()})`,
          },
          { canary: canaryFile },
        );
        assert.equal(ran.out.status, 'succeeded', transcript(ran));
        const report = ran.out.output as Report;
        assert.ok(!JSON.stringify(report.env).includes('host-secret-canary'), 'no host env');
        assert.ok(!(String(process.pid) in report.env));
        assert.ok(!report.pids.includes(process.pid), `the orchestrator is invisible: ${report.pids}`);
        assert.ok(report.pids.length < 10, `only the agent's own processes: ${report.pids}`);
        assert.equal(report.canary.ok, false, 'an ungranted host file is not there');
        assert.equal(report.shadow.ok, false);
        assert.notEqual(report.uid, 0);
      });
    });

    describe('limits', { concurrency: true }, () => {
      it('memory: exceeding it is oom with a memory violation', async () => {
        const ran = await run({
          name: 'limit-memory',
          code: 'hog = []\nwhile True:\n    hog.append(bytearray(8 * 1024 * 1024))',
          resources: { memory: '64Mi' },
        });
        assert.equal(ran.out.status, 'oom', transcript(ran));
        assert.ok(ran.out.limitsHit.includes('memory'));
        assert.ok(ran.out.violations.some((v) => v.rule === 'memory'));
      });

      it('pids: process creation past the limit is refused and reported', async () => {
        const ran = await run({
          name: 'limit-pids',
          code: 'kids = []\nres = None\nfor i in range(64):\n    r = attempt(os.fork)\n    if r["ok"] and r["value"] == 0:\n        import time; time.sleep(2); os._exit(0)\n    if not r["ok"]:\n        res = r; break\nreport({"refused": res})',
          resources: { pids: 8 },
        });
        if (rut.pidsLimit === 'refuses-fork') {
          assert.equal(ran.out.status, 'succeeded', transcript(ran));
          assert.ok((ran.out.output as Report).refused, 'a fork was refused');
        } else {
          // The runtime cannot refuse one fork inside (docs/RUNTIMES.md): crossing the budget ends the instance.
          assert.equal(ran.out.status, 'failed', transcript(ran));
        }
        assert.ok(ran.out.limitsHit.includes('pids'), transcript(ran));
        assert.ok(ran.out.violations.some((v) => v.rule === 'pids'));
      });

      it('timeout: still running after it is timeout, the whole tree killed', async () => {
        const ran = await run({
          name: 'limit-timeout',
          language: 'bash',
          code: 'sleep 60 & sleep 60\n',
          resources: { timeout: '1s' },
        });
        assert.equal(ran.out.status, 'timeout', transcript(ran));
        assert.ok(ran.out.limitsHit.includes('timeout'));
        assert.ok(ran.out.violations.some((v) => v.rule === 'timeout'));
      });

      it('disk: writing past it fails with ENOSPC', async () => {
        const ran = await run({
          name: 'limit-disk',
          code: 'def fill():\n    with open("/tmp/fill", "wb") as f:\n        for i in range(64):\n            f.write(b"x" * 1024 * 1024)\n            f.flush()\nreport({"fill": attempt(fill)})',
          resources: { disk: '8Mi' },
        });
        assert.equal(ran.out.status, 'succeeded', transcript(ran));
        const fill = (ran.out.output as Report).fill;
        assert.equal(fill.ok, false);
        assert.equal(fill.errno, 'ENOSPC');
      });
    });

    describe('network', { concurrency: false }, () => {
      let server: Server;
      let port = 0;
      before(async () => {
        server = createServer((_req, res) => res.end('hello from the host'));
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        port = (server.address() as { port: number }).port;
      });
      after(() => new Promise<void>((resolve) => server.close(() => resolve())));

      it('no network by default: a direct connect to the host fails and nothing is decided', async () => {
        const ran = await run(
          {
            name: 'net-none',
            code: 'report({"direct": attempt(lambda: socket.create_connection(("127.0.0.1", INPUT), timeout=3).close()), "proxy": os.environ.get("HTTP_PROXY")})',
          },
          port,
        );
        assert.equal(ran.out.status, 'succeeded', transcript(ran));
        const report = ran.out.output as Report;
        assert.equal(report.direct.ok, false);
        assert.equal(report.proxy, null);
        assert.deepEqual(ran.decisions, []);
      });

      it('allow-list: the allowed destination answers through the proxy, another is denied; both are decided', async () => {
        const denied = port === 65535 ? port - 1 : port + 1;
        const ran = await run(
          {
            name: 'net-allow',
            code: 'get = lambda url: urllib.request.urlopen(url, timeout=5).read().decode()\nreport({"allowed": attempt(get, f"http://127.0.0.1:{INPUT[0]}/"), "denied": attempt(get, f"http://127.0.0.1:{INPUT[1]}/"), "direct": attempt(lambda: socket.create_connection(("127.0.0.1", INPUT[0]), timeout=3).close())})',
            allow: [`127.0.0.1:${port}`],
          },
          [port, denied],
        );
        assert.equal(ran.out.status, 'succeeded', transcript(ran));
        const report = ran.out.output as Report;
        assert.deepEqual(report.allowed, { ok: true, value: 'hello from the host' });
        assert.equal(report.denied.ok, false);
        assert.equal(report.direct.ok, false, 'no way around the proxy');
        const verdicts = ran.decisions.map((d) => `${d.verdict} ${d.port}`);
        assert.ok(verdicts.includes(`allow ${port}`), verdicts.join(', '));
        assert.ok(verdicts.includes(`deny ${denied}`), verdicts.join(', '));
      });
    });

    describe('filesystem grants', { concurrency: true }, () => {
      it('a read grant is readable and not writable; a write grant is writable; nothing else of the host is there', async () => {
        const readDir = join(root, 'grant-read');
        const writeDir = join(root, 'grant-write');
        mkdirSync(readDir, { mode: 0o755 });
        mkdirSync(writeDir);
        chmodSync(writeDir, 0o777); // writable by the runtime's unprivileged uid (umask aside)
        writeFileSync(join(readDir, 'data.txt'), 'granted', { mode: 0o644 });
        const ran = await run(
          {
            name: 'grants',
            code: 'report({"read": attempt(read, "/data/in/data.txt"), "write_ro": attempt(write, "/data/in/x"), "write_rw": attempt(write, "/data/out/result.txt", "done")})',
            read: [{ source: readDir, target: '/data/in' }],
            write: [{ source: writeDir, target: '/data/out' }],
          },
          null,
        );
        assert.equal(ran.out.status, 'succeeded', transcript(ran));
        const report = ran.out.output as Report;
        assert.deepEqual(report.read, { ok: true, value: 'granted' });
        assert.equal(report.write_ro.ok, false);
        assert.equal(report.write_rw.ok, true);
      });
    });

    describe('secrets', { concurrency: true }, () => {
      it('the agent sees the placeholder it was given in its environment, never a value', async () => {
        const placeholder = 'aegis-secret:TOKEN:0123456789abcdef0123456789abcdef';
        const ran = await run(
          {
            name: 'secrets',
            code: 'report({"token": os.environ.get("API_TOKEN"), "environ": read("/proc/self/environ")})',
          },
          null,
          { API_TOKEN: placeholder },
        );
        assert.equal(ran.out.status, 'succeeded', transcript(ran));
        const report = ran.out.output as Report;
        assert.equal(report.token, placeholder);
        assert.ok(report.environ.includes(`API_TOKEN=${placeholder}`));
      });
    });

    describe('warm instances and reaping', { concurrency: true }, () => {
      it('spawn for a pool → Warm → bind → execute serves the bound execution', async () => {
        if (!runtime.bind) return assert.fail(`${rut.name} has no bind(): warm pools cannot use it`);
        const agent = await compile({
          name: 'warm',
          code: 'report({"id": os.environ["AEGIS_EXECUTION_ID"], "input": INPUT})',
        });
        const poolId = `wp_conf${process.pid}x${seq++}`;
        const id = await runtime.spawn({ executionId: poolId, agent, prewarm: true });
        assert.equal(runtime.status(id), 'warm');
        const executionId = nextId();
        runtime.bind(id, { executionId, onNetworkDecision: () => {} });
        assert.throws(
          () => runtime.bind!(id, { executionId: nextId(), onNetworkDecision: () => {} }),
          /already bound/,
        );
        const out = await runtime.execute(id, { input: 'hi', onLog: () => {} });
        assert.equal(out.status, 'succeeded', String(out.reason));
        assert.deepEqual(out.output, { id: executionId, input: 'hi' });
      });

      it('a terminated Warm instance is gone; terminate is idempotent', async () => {
        const agent = await compile({ name: 'terminate', code: 'report({})' });
        const id = await runtime.spawn({ executionId: nextId(), agent });
        await runtime.terminate(id);
        await runtime.terminate(id);
        assert.notEqual(runtime.status(id), 'warm');
      });

      it("reapOrphans releases what a dead orchestrator's instances held, and names their executions", async () => {
        // The owner: a runtime whose instances are then abandoned (as after kill -9 of the orchestrator).
        const owner = rut.create({
          identity,
          scratchRoot: join(root, 'reap'),
          cgroupParent,
        });
        const agent = await compile({ name: 'orphan', language: 'bash', code: 'sleep 60\n' });
        const executionId = nextId();
        const id = await owner.spawn({ executionId, agent });
        assert.equal(owner.status(id), 'warm');
        // The next orchestrator on the host: same scratch and cgroups, and it sees the owner as dead.
        const dead: ProcessIdentity = { current: () => identity.current(), isAlive: () => false };
        const successor = rut.create({
          identity: dead,
          scratchRoot: join(root, 'reap'),
          cgroupParent,
        });
        assert.deepEqual(await successor.reapOrphans(), [executionId]);
        assert.deepEqual(await successor.reapOrphans(), [], 'reaped once');
        await owner.terminate(id);
      });
    });
  });
}
