/**
 * The gvisor runtime, for real: runsc runs python, node and bash agents end to end — the I/O contract (input on
 * stdin and /run/aegis/input.json, output.json or the last stdout line, log lines), limits (memory → oom, pids,
 * timeout), no network by default, egress through the proxy with its decisions, read/write grants, secret
 * placeholders, warm pools (bind) and the reaper. Skips, saying what is missing, when runsc, root or cgroups are not
 * there; `npm test` installs runsc (scripts/setup.sh --runtimes gvisor), so CI always runs it.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { busyboxLayers, writeOciLayout } from '../../../../test/support/oci-layout.ts';
import { pollUntil } from '../../../../test/support/poll.ts';
import type { NetworkDecisionEvent, ProcessIdentity } from '../../../app/ports.ts';
import { isAegisError } from '../../../domain/errors.ts';
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';
import { ProcIdentity } from '../../host/process-identity.ts';
import { loadManifestFile } from '../../manifest/yaml-loader.ts';
import { DockerEngine } from '../docker/engine.ts';
import { importRootfs } from '../docker/images.ts';
import { detectCgroupLayout } from '../sandbox/cgroups.ts';
import { resolveSandboxUser } from '../sandbox/host.ts';
import { GvisorRuntime } from './runtime.ts';

function skipReason(): string | undefined {
  if (process.platform !== 'linux') return 'gVisor needs Linux';
  if (process.getuid?.() !== 0) return 'needs root: runsc runs sandboxes as root (run the suite as root)';
  try {
    execFileSync('runsc', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'runsc is not installed (Debian: apt-get install runsc; npm run setup -- --runtimes gvisor)';
  }
  if (detectCgroupLayout().mode === 'none')
    return 'no usable cgroup memory/pids/cpu controllers on this host';
  if (!existsSync('/usr/bin/python3')) return '/usr/bin/python3 is missing';
  return undefined;
}
const skip = skipReason();
const engine = new DockerEngine({
  socketPath: (process.env['AEGIS_TEST_DOCKER_HOST'] ?? 'unix:///var/run/docker.sock').replace(
    /^unix:\/\//,
    '',
  ),
});
const noBusybox = existsSync('/bin/busybox')
  ? false
  : 'busybox-static is not installed (apt-get install busybox-static)';
/** The agent's report from inside a busybox image: uid, input, the image's Env, whether it can write its root. */
const IMAGE_REPORT = [
  '/bin/sh',
  '-c',
  'echo "{\\"uid\\": $(id -u), \\"in\\": $(cat /run/aegis/input.json), \\"img\\": \\"$FROM_IMAGE\\", \\"rootw\\": \\"$(touch /pwned 2>/dev/null && echo yes || echo no)\\", \\"cwd\\": \\"$(pwd)\\"}"',
];
if (skip) process.stderr.write(`SKIPPED gvisor runtime tests: ${skip}\n`);

let seq = 0;
const execId = () => `ex_gvt${process.pid}x${Date.now().toString(36)}x${seq++}`;

interface AgentFiles {
  readonly language?: 'python' | 'node' | 'bash';
  readonly entrypoint?: string;
  readonly command?: readonly string[];
  readonly files?: Readonly<Record<string, string>>;
  readonly allow?: readonly string[];
  readonly read?: readonly { source: string; target: string }[];
  readonly write?: readonly { source: string; target: string }[];
  readonly resources?: Readonly<Record<string, string | number>>;
  readonly env?: Readonly<Record<string, string>>;
  readonly image?: string;
}

describe('gvisor runtime (runsc)', { concurrency: true, skip }, () => {
  const temps: string[] = [];
  let rt: GvisorRuntime;
  let scratch: string;
  let images: string;
  let server: Server;
  let port = 0;
  const hits: string[] = [];

  const tempDir = (prefix: string) => {
    const dir = mkdtempSync(join(tmpdir(), `aegis-gvt-${prefix}-`));
    chmodSync(dir, 0o755);
    temps.push(dir);
    return dir;
  };

  before(async () => {
    scratch = tempDir('scratch');
    images = tempDir('images');
    rt = new GvisorRuntime({
      identity: new ProcIdentity(),
      scratchRoot: scratch,
      imageCacheDir: images,
      engine,
    });
    server = createServer((req, res) => {
      hits.push(req.url ?? '');
      res.end(`hello ${req.url}`);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  after(async () => {
    await rt.terminateAll();
    await new Promise((resolve) => server.close(resolve));
    for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  });

  /** The names of the starts of `executionId` under a scratch root: `<id>.<8 hex>`, one per start. */
  const startsOf = (executionId: string, root = scratch): string[] =>
    readdirSync(join(root, 'gvisor')).filter(
      (name) => name.startsWith(`${executionId}.`) && /^\.[0-9a-f]{8}$/.test(name.slice(executionId.length)),
    );

  async function agentOf(spec: AgentFiles): Promise<CompiledAgent> {
    const dir = tempDir('agent');
    for (const [name, content] of Object.entries(spec.files ?? {})) writeFileSync(join(dir, name), content);
    const manifest = {
      apiVersion: 'aegis.dev/v1',
      kind: 'Agent',
      metadata: { name: `gvt-${spec.language ?? 'cmd'}`, version: '1.0.0' },
      spec: {
        runtime: {
          ...(spec.command !== undefined
            ? { command: [...spec.command] }
            : { language: spec.language, entrypoint: spec.entrypoint }),
          ...(spec.image !== undefined ? { image: spec.image } : {}),
        },
        isolation: 'gvisor',
        security: {
          network: { allow: [...(spec.allow ?? [])] },
          filesystem: { read: spec.read ?? [], write: spec.write ?? [] },
          resources: { timeout: '20s', ...spec.resources },
        },
        env: spec.env ?? {},
      },
    };
    writeFileSync(join(dir, 'agent.yaml'), stringify(manifest));
    return (await loadManifestFile(join(dir, 'agent.yaml'))).agent;
  }

  async function run(
    spec: AgentFiles,
    input: unknown = null,
    extra: { secrets?: Record<string, string> } = {},
  ) {
    const agent = await agentOf(spec);
    const decisions: NetworkDecisionEvent[] = [];
    const executionId = execId();
    const id = await rt.spawn({
      executionId,
      agent,
      onNetworkDecision: (event) => decisions.push(event),
      ...(extra.secrets
        ? { secrets: { env: extra.secrets, placeholders: new Map(), onSecretUse: () => {} } }
        : {}),
    });
    assert.equal(rt.status(id), 'warm');
    const [spawnName] = startsOf(executionId);
    assert.ok(spawnName, `the start's scratch dir of ${executionId}`);
    const stdout: string[] = [];
    const stderr: string[] = [];
    const result = await rt.execute(id, {
      input,
      onLog: (stream, text) => (stream === 'stdout' ? stdout : stderr).push(text),
    });
    // Nothing of the instance is left: scratch dir (runsc state inside it), cgroups.
    assert.deepEqual(startsOf(executionId), [], 'scratch dir left behind');
    for (const path of rt.cgroups.plannedPaths(spawnName)) assert.equal(existsSync(path), false, path);
    const transcript = `${JSON.stringify(result)}\nstdout: ${stdout.join('\n')}\nstderr: ${stderr.join('\n')}`;
    return { result, stdout, stderr, decisions, transcript };
  }

  it("runs an OCI image layout directory as its read-only root (busybox-static), the image Env under AEGIS's", {
    skip: noBusybox,
  }, async () => {
    const layout = await writeOciLayout(tempDir('layout'), busyboxLayers(), {
      env: ['PATH=/bin', 'FROM_IMAGE=layout'],
    });
    const { result, transcript } = await run({ command: IMAGE_REPORT, image: `oci:${layout.dir}` }, [4]);
    assert.equal(result.status, 'succeeded', transcript);
    assert.deepEqual(result.output, { uid: rt.user.uid, in: [4], img: 'layout', rootw: 'no', cwd: '/agent' });
    const rootfs = join(images, layout.manifestDigest.slice('sha256:'.length), 'rootfs');
    assert.equal(existsSync(join(rootfs, 'pwned')), false);
    // A tampered layout is refused before anything runs.
    const other = await writeOciLayout(tempDir('layout'), busyboxLayers(), { env: ['X=1'] });
    writeFileSync(other.blob(other.layerDigests[0]!), 'not the layer');
    await assert.rejects(
      run({ command: ['/bin/true'], image: `oci:${other.dir}` }),
      (error) => isAegisError(error) && error.code === 'MANIFEST_INVALID',
    );
  });

  it('runs an image of the local Docker Engine (exported once, cached by image id)', {
    skip: noBusybox,
  }, async (t) => {
    if (!(await engine.ping())) {
      t.skip(
        `no Docker Engine on ${engine.socketPath}: export AEGIS_TEST_DOCKER_HOST=$(bash scripts/test-dockerd.sh start)`,
      );
      return;
    }
    const rootfs = tempDir('busybox');
    mkdirSync(join(rootfs, 'bin'));
    writeFileSync(join(rootfs, 'bin', 'busybox'), readFileSync('/bin/busybox'), { mode: 0o755 });
    for (const tool of ['sh', 'cat', 'echo', 'id', 'touch', 'kill', 'pwd'])
      symlinkSync('busybox', join(rootfs, 'bin', tool));
    const id = await importRootfs(engine, rootfs, 'aegis-test-gvisor-busybox:1');
    const { result, transcript } = await run(
      { command: IMAGE_REPORT, image: 'aegis-test-gvisor-busybox:1' },
      'x',
    );
    assert.equal(result.status, 'succeeded', transcript);
    assert.deepEqual(result.output, { uid: rt.user.uid, in: 'x', img: '', rootw: 'no', cwd: '/agent' });
    assert.ok(existsSync(join(images, id.slice('sha256:'.length), 'rootfs', 'bin', 'busybox')));
  });

  it('python: input on stdin and input.json, output.json, log lines, the contained view', async () => {
    const { result, stdout, stderr, transcript } = await run(
      {
        language: 'python',
        entrypoint: 'main.py',
        env: { GREETING: 'hi' },
        resources: { disk: '8Mi' },
        files: {
          'main.py': `
import json, os, socket, sys
inp = json.loads(sys.stdin.read())
report = {"stdin": inp, "file": json.load(open("/run/aegis/input.json")), "uid": os.getuid(),
  "greeting": os.environ.get("GREETING"), "execution": os.environ.get("AEGIS_EXECUTION_ID", "")[:6],
  "home": os.environ.get("HOME"), "cwd": os.getcwd(), "hostname": socket.gethostname()}
report["caps"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
def attempt(fn):
    try:
        fn(); return "ok"
    except OSError as e:
        return e.errno
report["write_root"] = attempt(lambda: open("/evil", "w"))
report["write_agent"] = attempt(lambda: open("/agent/evil", "w"))
open("/workspace/scratch", "w").write("x")
report["workspace"] = open("/workspace/scratch").read()
def fill():
    with open("/workspace/big", "wb") as f:
        for _ in range(12):
            f.write(b"x" * 1048576)
report["disk"] = attempt(fill)
report["mountinfo"] = open("/proc/self/mountinfo").read()
report["host_port"] = attempt(lambda: socket.create_connection(("127.0.0.1", ${port}), timeout=2))
report["internet"] = attempt(lambda: socket.create_connection(("1.1.1.1", 80), timeout=2))
report["vsock"] = attempt(lambda: socket.socket(40, socket.SOCK_STREAM))
report["shadow"] = attempt(lambda: open("/etc/shadow"))
print("working")
print("to stderr", file=sys.stderr)
json.dump(report, open("/run/aegis/output.json", "w"))
`,
        },
      },
      { task: 'summarize' },
    );
    assert.equal(result.status, 'succeeded', transcript);
    const out = result.output as Record<string, unknown>;
    assert.deepEqual(out['stdin'], { task: 'summarize' });
    assert.deepEqual(out['file'], { task: 'summarize' });
    assert.equal(out['uid'], resolveSandboxUser().uid, 'runs as the sandbox user, not root');
    assert.equal(out['caps'], '0000000000000000', 'no capabilities');
    assert.equal(out['greeting'], 'hi');
    assert.equal(out['execution'], 'ex_gvt');
    assert.equal(out['home'], '/workspace');
    assert.equal(out['cwd'], '/agent');
    assert.equal(out['hostname'], 'aegis');
    assert.equal(out['workspace'], 'x');
    assert.equal(out['disk'], 28, '/workspace is capped by spec.security.resources.disk (ENOSPC)');
    assert.ok(!String(out['mountinfo']).includes(scratch), 'no host path of the scratch dir in mountinfo');
    assert.notEqual(out['write_root'], 'ok', 'the root is read-only');
    assert.notEqual(out['write_agent'], 'ok', '/agent is read-only');
    assert.notEqual(out['host_port'], 'ok', "the host's loopback is not reachable without egress");
    assert.notEqual(out['internet'], 'ok');
    assert.equal(out['vsock'], 97, 'AF_VSOCK: EAFNOSUPPORT in gVisor');
    assert.equal(out['shadow'], 2, 'no host /etc/shadow (generated /etc)');
    assert.deepEqual(stdout, ['working']);
    assert.deepEqual(stderr, ['to stderr']);
  });

  it('node: the last stdout line is the output; bash: a failing exit code is failed with its reason', async () => {
    const node = await run({
      language: 'node',
      entrypoint: 'main.js',
      files: {
        'main.js': 'console.log(JSON.stringify({ node: process.version.startsWith("v"), sum: 1 + 2 }));\n',
      },
    });
    assert.equal(node.result.status, 'succeeded', node.transcript);
    assert.deepEqual(node.result.output, { node: true, sum: 3 });
    const bash = await run({
      language: 'bash',
      entrypoint: 'main.sh',
      files: { 'main.sh': 'echo "before failing"\nexit 3\n' },
    });
    assert.equal(bash.result.status, 'failed', bash.transcript);
    assert.equal(bash.result.exitCode, 3);
    assert.equal(bash.result.reason, 'exit code 3');
    assert.deepEqual(bash.stdout, ['before failing']);
  });

  it('memory: an agent allocating past its limit ends oom, with the violation', async () => {
    const { result, transcript } = await run({
      language: 'python',
      entrypoint: 'main.py',
      resources: { memory: '128Mi' },
      files: { 'main.py': 'blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n' },
    });
    assert.equal(result.status, 'oom', transcript);
    assert.ok(result.limitsHit.includes('memory'), transcript);
    assert.ok(result.violations.some((v) => v.rule === 'memory'));
  });

  it('pids: a fork bomb cannot pass the task limit', async () => {
    const { result, transcript } = await run({
      language: 'python',
      entrypoint: 'main.py',
      resources: { pids: 16 },
      files: {
        'main.py': `
import json, os, time
children, refused = 0, None
for _ in range(200):
    try:
        pid = os.fork()
    except OSError as e:
        refused = e.errno
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children += 1
print(json.dumps({"children": children, "refused": refused}))
`,
      },
    });
    const out = result.output as { children: number; refused: number | null } | null;
    // Either the agent saw EAGAIN at the limit (RLIMIT_NPROC inside gVisor), or the host budget ended the sandbox.
    if (out) {
      assert.ok(out.children < 16, transcript);
      assert.equal(out.refused, 11, transcript);
    } else {
      assert.ok(result.limitsHit.includes('pids'), transcript);
    }
  });

  it('timeout: a run past its wall-clock limit is killed and reported as timeout', async () => {
    const { result, transcript } = await run({
      language: 'bash',
      entrypoint: 'main.sh',
      resources: { timeout: '2s' },
      files: { 'main.sh': 'echo started\nsleep 60\n' },
    });
    assert.equal(result.status, 'timeout', transcript);
    assert.ok(result.limitsHit.includes('timeout'));
  });

  it('egress: an allowed destination is reached through the proxy, others are denied; every decision is reported', async () => {
    const { result, decisions, transcript } = await run({
      language: 'python',
      entrypoint: 'main.py',
      allow: [`127.0.0.1:${port}`],
      files: {
        'main.py': `
import json, urllib.request
out = {"allowed": urllib.request.urlopen("http://127.0.0.1:${port}/gv-allowed", timeout=5).read().decode()}
try:
    urllib.request.urlopen("http://127.0.0.1:${port + 1}/gv-denied", timeout=5)
    out["denied"] = "reached"
except Exception as e:
    out["denied"] = type(e).__name__
print(json.dumps(out))
`,
      },
    });
    assert.equal(result.status, 'succeeded', transcript);
    assert.deepEqual(result.output, { allowed: 'hello /gv-allowed', denied: 'HTTPError' });
    assert.ok(hits.includes('/gv-allowed'));
    assert.ok(
      decisions.some((d) => d.verdict === 'allow' && d.port === port),
      JSON.stringify(decisions),
    );
    assert.ok(
      decisions.some((d) => d.verdict === 'deny' && d.port === port + 1),
      JSON.stringify(decisions),
    );
  });

  it('grants: read-only and writable host directories at their targets; secret placeholders in the env', async () => {
    const data = tempDir('read');
    writeFileSync(join(data, 'in.txt'), 'granted');
    const outDir = tempDir('write');
    const user = resolveSandboxUser();
    chownSync(outDir, user.uid, user.gid);
    const { result, transcript } = await run(
      {
        language: 'python',
        entrypoint: 'main.py',
        read: [{ source: data, target: '/data/in' }],
        write: [{ source: outDir, target: '/data/out' }],
        files: {
          'main.py': `
import json, os
out = {"read": open("/data/in/in.txt").read(), "token": os.environ.get("API_TOKEN")}
try:
    open("/data/in/evil", "w"); out["write_ro"] = "ok"
except OSError as e:
    out["write_ro"] = e.errno
open("/data/out/result.txt", "w").write("written")
print(json.dumps(out))
`,
        },
      },
      null,
      { secrets: { API_TOKEN: 'aegis-secret:API_TOKEN:00000000000000000000000000000000' } },
    );
    assert.equal(result.status, 'succeeded', transcript);
    assert.deepEqual(result.output, {
      read: 'granted',
      token: 'aegis-secret:API_TOKEN:00000000000000000000000000000000',
      write_ro: (result.output as { write_ro: number }).write_ro,
    });
    assert.ok([13, 30].includes((result.output as { write_ro: number }).write_ro), 'EACCES or EROFS');
    assert.equal(readFileSync(join(outDir, 'result.txt'), 'utf8'), 'written');
    assert.equal(existsSync(join(data, 'evil')), false);
  });

  it('grants: a directory the sandbox user cannot read is refused before anything runs', async () => {
    const secret = tempDir('private');
    chmodSync(secret, 0o700);
    const agent = await agentOf({
      language: 'bash',
      entrypoint: 'main.sh',
      read: [{ source: secret, target: '/data' }],
      files: { 'main.sh': 'cat /data/*\n' },
    });
    await assert.rejects(
      rt.spawn({ executionId: execId(), agent }),
      (error) =>
        isAegisError(error) && error.code === 'RUNTIME_UNAVAILABLE' && /cannot read/.test(error.message),
    );
  });

  it('adversarial: a grant swapped for another directory after its check is refused, never mounted', async () => {
    const granted = tempDir('swap');
    writeFileSync(join(granted, 'harmless.txt'), 'harmless');
    const target = tempDir('swap-target');
    writeFileSync(join(target, 'secret.txt'), 'host secret');
    const agent = await agentOf({
      language: 'bash',
      entrypoint: 'main.sh',
      read: [{ source: granted, target: '/data' }],
      files: { 'main.sh': 'cat /data/*\n' },
    });
    // The attacker's move lands exactly between the check (grant opened, descriptor held) and the mount.
    const attacked = new GvisorRuntime({
      identity: new ProcIdentity(),
      scratchRoot: tempDir('swap-scratch'),
    });
    const internals = attacked as unknown as Record<string, (...args: unknown[]) => unknown>;
    const makeRootfs = internals['makeRootfs']!.bind(attacked);
    internals['makeRootfs'] = (...args: unknown[]) => {
      renameSync(granted, `${granted}.moved`);
      symlinkSync(target, granted);
      return makeRootfs(...args);
    };
    temps.push(`${granted}.moved`);
    try {
      await assert.rejects(
        attacked.spawn({ executionId: execId(), agent }),
        (error) =>
          isAegisError(error) && error.code === 'POLICY_DENIED' && /moved or replaced/.test(error.message),
      );
    } finally {
      await attacked.terminateAll();
    }
    assert.deepEqual(await attacked.reapOrphans(), [], 'nothing left to reap: the failed spawn cleaned up');
  });

  it('warm pool: a Warm instance bound to an execution runs with its id', async () => {
    const agent = await agentOf({
      language: 'bash',
      entrypoint: 'main.sh',
      files: { 'main.sh': 'echo "{\\"id\\": \\"$AEGIS_EXECUTION_ID\\"}"\n' },
    });
    const id = await rt.spawn({ executionId: `wp_gvt${process.pid}x${seq++}`, agent });
    const bound = execId();
    rt.bind(id, { executionId: bound });
    const result = await rt.execute(id, { input: null, onLog: () => {} });
    assert.equal(result.status, 'succeeded');
    assert.deepEqual(result.output, { id: bound });
  });

  it('a Warm instance whose sandbox died is failed; execute refuses it and releases what it held', async () => {
    const agent = await agentOf({ language: 'bash', entrypoint: 'main.sh', files: { 'main.sh': 'true\n' } });
    const executionId = execId();
    const id = await rt.spawn({ executionId, agent });
    const cgroupPaths = rt.cgroups.plannedPaths(startsOf(executionId)[0]!);
    for (const path of cgroupPaths) {
      if (existsSync(join(path, 'cgroup.kill'))) writeFileSync(join(path, 'cgroup.kill'), '1');
      else if (existsSync(join(path, 'cgroup.procs'))) {
        for (const pid of readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean))
          process.kill(Number(pid), 'SIGKILL');
      }
    }
    await pollUntil('the instance to be failed', () => rt.status(id) === 'failed');
    await assert.rejects(
      rt.execute(id, { input: null, onLog: () => {} }),
      (error) =>
        isAegisError(error) &&
        error.code === 'RUNTIME_UNAVAILABLE' &&
        /died before it was used/.test(error.message),
    );
    assert.deepEqual(startsOf(executionId), []);
    for (const path of cgroupPaths) assert.equal(existsSync(path), false, path);
  });

  it('two starts of one execution on one host get distinct sandboxes; terminating one leaves the other', async () => {
    // A fenced-out node and the node that took its execution over, on one host (one scratch root, one cgroup
    // parent), may both start it: the fenced one's teardown must not remove the new holder's sandbox.
    const agent = await agentOf({
      language: 'bash',
      entrypoint: 'main.sh',
      files: { 'main.sh': 'echo "{}"\n' },
    });
    const executionId = execId();
    const fenced = await rt.spawn({ executionId, agent });
    const holder = await rt.spawn({ executionId, agent });
    assert.notEqual(fenced, holder);
    const starts = startsOf(executionId);
    assert.equal(starts.length, 2, `two scratch dirs: ${starts.join(', ')}`);
    const groups = starts.map((name) => rt.cgroups.plannedPaths(name).filter((path) => existsSync(path)));
    assert.ok(
      groups.every((paths) => paths.length > 0),
      'each start has its own cgroups',
    );
    await rt.terminate(fenced);
    const left = startsOf(executionId);
    assert.equal(left.length, 1, `the holder's scratch dir is still there: ${left.join(', ')}`);
    const kept = groups[starts.indexOf(left[0]!)]!;
    assert.ok(
      kept.every((path) => existsSync(path)),
      "the holder's cgroups are still there",
    );
    assert.equal(rt.status(holder), 'warm', 'the holder is untouched');
    const result = await rt.execute(holder, { input: null, onLog: () => {} });
    assert.equal(result.status, 'succeeded', JSON.stringify(result));
    assert.deepEqual(startsOf(executionId), []);
    for (const path of kept) assert.equal(existsSync(path), false, path);
  });

  it('aegis run --isolation gvisor runs the email-summarizer example', async () => {
    const home = tempDir('home');
    const repo = join(import.meta.dirname, '..', '..', '..', '..');
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        join(repo, 'src/cli/bin.ts'),
        'run',
        '--isolation',
        'gvisor',
        '--output',
        'json',
        join(repo, 'examples/email-summarizer/agent.yaml'),
      ],
      { env: { ...process.env, AEGIS_HOME: home, AEGIS_SCRATCH_DIR: scratch }, encoding: 'utf8' },
    );
    const result = JSON.parse(stdout) as { status: string; output: { total?: number } };
    assert.equal(result.status, 'succeeded', stdout);
    assert.equal(typeof result.output.total, 'number');
  });

  it('reaper: the sandbox of a dead orchestrator is killed and removed', async () => {
    const dead: ProcessIdentity = {
      current: () => ({ host: hostname(), pid: 2 ** 22 + 1, startTicks: 1 }),
      isAlive: () => false,
    } as unknown as ProcessIdentity;
    const orphanRoot = tempDir('orphans');
    mkdirSync(join(orphanRoot, 'gvisor'), { recursive: true });
    const gone = new GvisorRuntime({ identity: dead, scratchRoot: orphanRoot });
    const agent = await agentOf({ language: 'bash', entrypoint: 'main.sh', files: { 'main.sh': 'true\n' } });
    const executionId = execId();
    await gone.spawn({ executionId, agent });
    const cgroupPaths = gone.cgroups.plannedPaths(startsOf(executionId, orphanRoot)[0]!);
    const procs = cgroupPaths.map((p) => join(p, 'cgroup.procs')).find((p) => existsSync(p))!;
    assert.ok(readFileSync(procs, 'utf8').trim() !== '', 'the sandbox runs in its cgroup');
    const reaper = new GvisorRuntime({ identity: new ProcIdentity(), scratchRoot: orphanRoot });
    assert.deepEqual(await reaper.reapOrphans(), [executionId]);
    assert.deepEqual(startsOf(executionId, orphanRoot), []);
    for (const path of cgroupPaths) assert.equal(existsSync(path), false, path);
  });
});
