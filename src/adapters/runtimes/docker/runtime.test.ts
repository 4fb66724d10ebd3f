/**
 * The docker runtime against a real Docker Engine (scripts/test-dockerd.sh; `npm test` starts one and exports
 * AEGIS_TEST_DOCKER_HOST). Real agents end to end: python, node, bash, a FROM-scratch busybox image; the hardening
 * seen from inside; every limit; no network by default and egress allow/deny through the proxy with its decision
 * events; grants; secret placeholders; output; logs; warm + bind; reaping after the orchestrator died.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { busyboxLayers, writeOciLayout } from '../../../../test/support/oci-layout.ts';
import type { NetworkDecisionEvent, ProcessIdentity, TaskOutput } from '../../../app/ports.ts';
import { isAegisError } from '../../../domain/errors.ts';
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';
import { ProcIdentity } from '../../host/process-identity.ts';
import { loadManifestFile } from '../../manifest/yaml-loader.ts';
import { DockerEngine } from './engine.ts';
import { imageId, importRootfs } from './images.ts';
import { DockerRuntime, verifyMounts } from './runtime.ts';

const REPO = join(import.meta.dirname, '..', '..', '..', '..');
const SOCKET = (process.env['AEGIS_TEST_DOCKER_HOST'] ?? 'unix:///var/run/docker.sock').replace(
  /^unix:\/\//,
  '',
);
const engine = new DockerEngine({ socketPath: SOCKET });

async function skipReason(): Promise<string | undefined> {
  if (process.getuid?.() !== 0)
    return 'needs root (containers run as the aegis-sandbox uid; egress enters their netns)';
  if (!(await engine.ping())) {
    return `no Docker Engine answers on ${SOCKET}: start one with \`bash scripts/test-dockerd.sh start\` and export AEGIS_TEST_DOCKER_HOST=$(bash scripts/test-dockerd.sh url) (npm test does both)`;
  }
  return undefined;
}
const skip = await skipReason();
if (skip) console.warn(`SKIPPED docker runtime tests: ${skip}`);

const identity = new ProcIdentity();
const work = mkdtempSync('/tmp/aegis-docker-test-');
chmodSync(work, 0o755);
let runtime: DockerRuntime;
let seq = 0;

/** Writes an agent (files + agent.yaml) and loads it through the real manifest loader, isolation docker. */
async function agentOf(
  spec: Record<string, unknown>,
  files: Record<string, string> = {},
): Promise<CompiledAgent> {
  const dir = join(work, `agent-${++seq}`);
  mkdirSync(dir, { mode: 0o755 });
  chmodSync(dir, 0o755);
  for (const [name, content] of Object.entries(files))
    writeFileSync(join(dir, name), content, { mode: 0o644 });
  const manifest = {
    apiVersion: 'aegis.dev/v1',
    kind: 'Agent',
    metadata: { name: `t${seq}`, version: '1.0.0' },
    spec: { isolation: 'docker', ...spec },
  };
  writeFileSync(join(dir, 'agent.yaml'), stringify(manifest));
  return (await loadManifestFile(join(dir, 'agent.yaml'))).agent;
}

// biome-ignore lint/suspicious/noExplicitAny: what the agent reported from inside, read field by field
type Report = Record<string, any>;

interface Run {
  readonly out: TaskOutput;
  readonly logs: string[];
  readonly decisions: NetworkDecisionEvent[];
}

async function run(
  agent: CompiledAgent,
  input: unknown = {},
  extra: Partial<Parameters<DockerRuntime['spawn']>[0]> = {},
): Promise<Run> {
  const logs: string[] = [];
  const decisions: NetworkDecisionEvent[] = [];
  const executionId = `ex_t${Date.now().toString(36)}${++seq}`;
  const id = await runtime.spawn({
    executionId,
    agent,
    onNetworkDecision: (e) => decisions.push(e),
    ...extra,
  });
  const out = await runtime.execute(id, { input, onLog: (stream, text) => logs.push(`${stream}: ${text}`) });
  return { out, logs, decisions };
}

/** The containers of one execution: their names and whether they run. */
async function containersNamed(executionId: string): Promise<{ name: string; running: boolean }[]> {
  const filters = encodeURIComponent(JSON.stringify({ label: [`aegis.execution=${executionId}`] }));
  const listed = (await engine.call('GET', `/containers/json?all=1&filters=${filters}`)).body as {
    Names: string[];
    State: string;
  }[];
  return listed.map((c) => ({ name: c.Names[0]!, running: c.State === 'running' }));
}

async function containersOf(executionId: string): Promise<number> {
  const filters = encodeURIComponent(JSON.stringify({ label: [`aegis.execution=${executionId}`] }));
  return ((await engine.call('GET', `/containers/json?all=1&filters=${filters}`)).body as unknown[]).length;
}

const PY_PROBE = `
import ctypes, json, os, socket, errno
libc = ctypes.CDLL(None, use_errno=True)
def raw(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return {"ok": r >= 0, "errno": None if r >= 0 else errno.errorcode.get(ctypes.get_errno())}
def attempt(fn):
    try:
        return {"ok": True, "value": fn()}
    except OSError as e:
        return {"ok": False, "errno": errno.errorcode.get(e.errno)}
status = open("/proc/self/status").read()
field = lambda name: [l.split(":")[1].strip() for l in status.splitlines() if l.startswith(name + ":")][0]
def write(path):
    open(path, "w").write("x")
    return True
report = {
  "uid": os.getuid(),
  "capEff": field("CapEff"),
  "noNewPrivs": field("NoNewPrivs"),
  "seccomp": field("Seccomp"),
  "writeRoot": attempt(lambda: write("/etc/pwned")),
  "writeUsr": attempt(lambda: write("/usr/pwned")),
  "writeWorkspace": attempt(lambda: write("/workspace/ok")),
  "writeTmp": attempt(lambda: write("/tmp/ok")),
  "connect": attempt(lambda: socket.create_connection(("1.1.1.1", 80), timeout=2) and True),
  "vsock": attempt(lambda: socket.socket(40, socket.SOCK_STREAM) and True),
  "packet": attempt(lambda: socket.socket(17, socket.SOCK_RAW) and True),
  "netlink": attempt(lambda: socket.socket(16, socket.SOCK_RAW, 0) and True),
  "vsockHighBits": raw(41, 0x100000028, 1, 0),
  "unshareUser": raw(272, 0x10000000),
  "personality": raw(135, 0x0040000),
  "ifaces": sorted(os.listdir("/sys/class/net")),
  "hostEtc": os.path.exists("/etc/shadow"),
  "input": json.load(open(os.environ["AEGIS_INPUT"])),
  "env": {k: os.environ.get(k) for k in ("AEGIS_EXECUTION_ID", "API_TOKEN", "HOME", "HTTP_PROXY")},
}
json.dump(report, open(os.environ["AEGIS_OUTPUT"], "w"))
print("probe done")
`;

describe('docker runtime (real dockerd)', { skip }, () => {
  before(() => {
    runtime = new DockerRuntime({ identity, engine, imageCacheDir: join(work, 'images') });
  });
  after(async () => {
    await runtime?.terminateAll();
    rmSync(work, { recursive: true, force: true });
  });

  it('runs the email-summarizer example unchanged: output JSON, logs, container removed', async () => {
    const { agent } = await loadManifestFile(join(REPO, 'examples/email-summarizer/agent.yaml'));
    const result = await run({ ...agent, isolation: 'docker' });
    assert.equal(result.out.status, 'succeeded', result.logs.join('\n'));
    assert.equal((result.out.output as { total: number }).total, 14);
    assert.equal(await runtime.reapOrphans().then((ids) => ids.length), 0);
  });

  it('runs node and bash agents; stdout lines are logs, the last JSON line is the output', async () => {
    const node = await agentOf(
      { runtime: { language: 'node', entrypoint: 'main.js' } },
      { 'main.js': 'console.error("to stderr"); console.log(JSON.stringify({ node: process.version }));' },
    );
    const n = await run(node);
    assert.equal(n.out.status, 'succeeded', n.logs.join('\n'));
    assert.match((n.out.output as { node: string }).node, /^v24\./);
    assert.ok(n.logs.includes('stderr: to stderr'));
    const bash = await agentOf(
      { runtime: { language: 'bash', entrypoint: 'main.sh' } },
      { 'main.sh': 'read -r line; echo "got $line"; echo \'{"bash":true}\' > "$AEGIS_OUTPUT"; exit 0\n' },
    );
    const b = await run(bash, { x: 1 });
    assert.equal(b.out.status, 'succeeded', b.logs.join('\n'));
    assert.deepEqual(b.out.output, { bash: true });
    assert.ok(b.logs.includes('stdout: got {"x":1}'), b.logs.join('\n'));
  });

  it('is hardened from the inside: non-root, no capabilities, no-new-privs, seccomp, read-only root, no network, no vsock', async () => {
    const agent = await agentOf(
      { runtime: { language: 'python', entrypoint: 'main.py' } },
      { 'main.py': PY_PROBE },
    );
    const { out, logs } = await run(
      agent,
      { hello: 'world' },
      {
        secrets: {
          env: { API_TOKEN: 'aegis-secret-placeholder-1' },
          placeholders: new Map(),
          onSecretUse: () => {},
        },
      },
    );
    assert.equal(out.status, 'succeeded', logs.join('\n'));
    const r = out.output as Report;
    assert.notEqual(r['uid'], 0);
    assert.equal(r['uid'], runtime.user.uid);
    assert.equal(r['capEff'], '0000000000000000');
    assert.equal(r['noNewPrivs'], '1');
    assert.equal(r['seccomp'], '2');
    assert.equal(r['writeRoot'].errno, 'EROFS');
    assert.equal(r['writeUsr'].errno, 'EROFS');
    assert.equal(r['writeWorkspace'].ok, true);
    assert.equal(r['writeTmp'].ok, true);
    assert.equal(r['connect'].ok, false);
    assert.deepEqual(r['ifaces'], ['lo']);
    // The vsock hole (host services over AF_VSOCK) stays closed: Docker's default profile lets the family through,
    // AEGIS's profile (seccomp-profile.ts) refuses every family but AF_UNIX/AF_INET/AF_INET6, high bits or not.
    assert.equal(r['vsock'].errno, 'EAFNOSUPPORT');
    assert.equal(r['vsockHighBits'].ok, false);
    assert.equal(r['netlink'].errno, 'EAFNOSUPPORT');
    assert.equal(r['packet'].ok, false);
    assert.equal(r['unshareUser'].errno, 'EPERM');
    assert.equal(r['personality'].errno, 'EPERM');
    assert.equal(r['hostEtc'], false);
    assert.deepEqual(r['input'], { hello: 'world' });
    assert.equal(r['env'].API_TOKEN, 'aegis-secret-placeholder-1');
    assert.equal(r['env'].HOME, '/workspace');
    assert.equal(r['env'].HTTP_PROXY, null);
  });

  it('memory → oom, timeout → timeout (container killed), pids bounded', async () => {
    const oom = await agentOf(
      { runtime: { language: 'python', entrypoint: 'main.py' }, security: { resources: { memory: '48Mi' } } },
      { 'main.py': 'x = []\nwhile True:\n    x.append(bytearray(8 * 1024 * 1024))\n' },
    );
    const o = await run(oom);
    assert.equal(o.out.status, 'oom', o.logs.join('\n'));
    assert.ok(o.out.limitsHit.includes('memory'));

    const slow = await agentOf(
      { runtime: { language: 'bash', entrypoint: 'main.sh' }, security: { resources: { timeout: '1s' } } },
      { 'main.sh': 'echo started; exec sleep 60\n' },
    );
    const t = await run(slow);
    assert.equal(t.out.status, 'timeout');
    assert.ok(t.out.limitsHit.includes('timeout'));
    assert.ok(t.out.finishedAtMs - t.out.releasedAtMs < 20_000);

    const forker = await agentOf(
      { runtime: { language: 'python', entrypoint: 'main.py' }, security: { resources: { pids: 8 } } },
      {
        'main.py': `import os, json, time
kids, refused = [], None
for i in range(30):
    try:
        pid = os.fork()
    except OSError as e:
        refused = e.strerror
        break
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    kids.append(pid)
print(json.dumps({"forked": len(kids), "refused": refused}))
for k in kids:
    os.kill(k, 9)
`,
      },
    );
    const p = await run(forker);
    assert.equal(p.out.status, 'succeeded', p.logs.join('\n'));
    const forked = p.out.output as { forked: number; refused: string | null };
    assert.ok(forked.forked < 8, `forked ${forked.forked} processes under pids: 8`);
    assert.notEqual(forked.refused, null);
  });

  it('egress: allowed and denied connections go through the proxy and reach onNetworkDecision', async () => {
    const server = http.createServer((_req, res) => res.end('hello from the host'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const agent = await agentOf(
        {
          runtime: { language: 'python', entrypoint: 'main.py' },
          security: { network: { allow: [`127.0.0.1:${port}`] } },
        },
        {
          'main.py': `import json, urllib.request, urllib.error
def get(url):
    try:
        return {"ok": True, "body": urllib.request.urlopen(url, timeout=10).read().decode()}
    except urllib.error.HTTPError as e:
        return {"ok": False, "status": e.code}
    except Exception as e:
        return {"ok": False, "error": str(e)}
print(json.dumps({"allowed": get("http://127.0.0.1:${port}/"), "denied": get("http://127.0.0.1:${port + 1}/")}))
`,
        },
      );
      const { out, logs, decisions } = await run(agent);
      assert.equal(out.status, 'succeeded', logs.join('\n'));
      const r = out.output as Report;
      assert.equal(r['allowed'].body, 'hello from the host');
      assert.equal(r['denied'].ok, false);
      assert.ok(decisions.some((d) => d.verdict === 'allow' && d.port === port));
      assert.ok(decisions.some((d) => d.verdict === 'deny' && d.port === port + 1));
    } finally {
      server.close();
    }
  });

  it('grants: read grants are read-only, write grants writable, nothing else of the host', async () => {
    const data = join(work, 'data');
    const out = join(work, 'out');
    mkdirSync(data, { mode: 0o755 });
    mkdirSync(out, { mode: 0o755 });
    chmodSync(data, 0o755);
    writeFileSync(join(data, 'in.txt'), 'granted', { mode: 0o644 });
    execFileSync('chown', [`${runtime.user.uid}:${runtime.user.gid}`, out]);
    const agent = await agentOf(
      {
        runtime: { language: 'bash', entrypoint: 'main.sh' },
        security: {
          filesystem: { read: [{ source: data, target: '/data' }], write: [{ source: out, target: '/out' }] },
        },
      },
      {
        'main.sh': `cat /data/in.txt > /out/copy.txt
if echo x > /data/evil 2>/dev/null; then ro=no; else ro=yes; fi
if [ -e ${work} ]; then host=yes; else host=no; fi
echo "{\\"ro\\":\\"$ro\\",\\"host\\":\\"$host\\"}"
`,
      },
    );
    const r = await run(agent);
    assert.equal(r.out.status, 'succeeded', r.logs.join('\n'));
    assert.deepEqual(r.out.output, { ro: 'yes', host: 'no' });
    assert.equal(readFileSync(join(out, 'copy.txt'), 'utf8'), 'granted');
    assert.equal(existsSync(join(data, 'evil')), false);
  });

  it('a protected host path is refused before anything is created', async () => {
    const agent = await agentOf(
      {
        runtime: { language: 'bash', entrypoint: 'main.sh' },
        security: { filesystem: { read: [{ source: '/etc', target: '/hostetc' }] } },
      },
      { 'main.sh': 'cat /hostetc/shadow\n' },
    );
    await assert.rejects(run(agent), (error) => isAegisError(error) && error.code === 'POLICY_DENIED');
  });

  it('refuses a container whose mounted grant is not the object that was checked (moved during set-up)', () => {
    // What a swap between the check and dockerd's mount looks like: the mounted object's identity differs.
    const own = process.pid;
    assert.throws(
      () =>
        verifyMounts(own, [
          { target: '/', what: 'spec.security.filesystem.read[0]', path: '/x', dev: 1, ino: 1 },
        ]),
      (error) => isAegisError(error) && error.code === 'POLICY_DENIED',
    );
  });

  it('runs a custom FROM-scratch image built by importRootfs (busybox-static)', {
    skip: existsSync('/bin/busybox')
      ? false
      : 'busybox-static is not installed (apt-get install busybox-static)',
  }, async () => {
    const rootfs = join(work, 'rootfs');
    mkdirSync(join(rootfs, 'bin'), { recursive: true });
    writeFileSync(join(rootfs, 'bin', 'busybox'), readFileSync('/bin/busybox'), { mode: 0o755 });
    for (const tool of ['sh', 'cat', 'echo', 'id'])
      execFileSync('ln', ['-s', 'busybox', join(rootfs, 'bin', tool)]);
    await importRootfs(engine, rootfs, 'aegis-test-busybox:1');
    const agent = await agentOf({
      runtime: {
        command: ['/bin/sh', '-c', 'echo "{\\"uid\\": $(id -u), \\"in\\": $(cat /run/aegis/input.json)}"'],
        image: 'aegis-test-busybox:1',
      },
    });
    const r = await run(agent, [1, 2]);
    assert.equal(r.out.status, 'succeeded', r.logs.join('\n'));
    assert.deepEqual(r.out.output, { uid: runtime.user.uid, in: [1, 2] });
    const missing = await agentOf({ runtime: { command: ['/bin/true'], image: 'aegis-no-such-image:1' } });
    await assert.rejects(
      run(missing),
      (error) =>
        isAegisError(error) &&
        error.code === 'RUNTIME_UNAVAILABLE' &&
        /aegis image build/.test(error.hint ?? ''),
    );
  });

  it('runs an OCI image layout directory (busybox-static): verified, imported once by digest, image Env kept, root read-only', {
    skip: existsSync('/bin/busybox')
      ? false
      : 'busybox-static is not installed (apt-get install busybox-static)',
  }, async () => {
    const layout = await writeOciLayout(join(work, `layout-${++seq}`), busyboxLayers(), {
      env: ['PATH=/bin', 'FROM_IMAGE=layout'],
    });
    const agent = await agentOf({
      runtime: {
        command: [
          '/bin/sh',
          '-c',
          'echo "{\\"uid\\": $(id -u), \\"in\\": $(cat /run/aegis/input.json), \\"img\\": \\"$FROM_IMAGE\\", \\"rootw\\": \\"$(touch /pwned 2>/dev/null && echo yes || echo no)\\"}"',
        ],
        image: `oci:${layout.dir}`,
      },
    });
    const r = await run(agent, [3]);
    assert.equal(r.out.status, 'succeeded', r.logs.join('\n'));
    assert.deepEqual(r.out.output, { uid: runtime.user.uid, in: [3], img: 'layout', rootw: 'no' });
    const tag = `aegis-oci:${layout.manifestDigest.slice('sha256:'.length)}`;
    assert.ok(await imageId(engine, tag), `${tag} imported`);
    // A tampered layout is refused before anything reaches the engine. Its config carries a nonce so its manifest
    // digest is new to this engine: the test dockerd's data outlives a run (CI reuses one checkout path), and an
    // earlier run may have imported the untampered layout of the same digest.
    const tampered = await writeOciLayout(join(work, `layout-${++seq}`), busyboxLayers(), {
      env: ['PATH=/bin', `NONCE=${randomUUID()}`],
    });
    writeFileSync(tampered.blob(tampered.layerDigests[0]!), 'not the layer');
    const evil = await agentOf({ runtime: { command: ['/bin/true'], image: `oci:${tampered.dir}` } });
    await assert.rejects(run(evil), (error) => isAegisError(error) && error.code === 'MANIFEST_INVALID');
    assert.equal(
      await imageId(engine, `aegis-oci:${tampered.manifestDigest.slice('sha256:'.length)}`),
      undefined,
    );
  });

  it('warm: a pooled instance waits before the agent, then runs bound to its execution', async () => {
    const agent = await agentOf(
      { runtime: { language: 'bash', entrypoint: 'main.sh' } },
      { 'main.sh': 'echo "{\\"id\\":\\"$AEGIS_EXECUTION_ID\\"}"\n' },
    );
    const id = await runtime.spawn({ executionId: 'wp_pooltest', agent, prewarm: true });
    assert.equal(runtime.status(id), 'warm');
    runtime.bind(id, { executionId: 'ex_boundtest' });
    assert.throws(
      () => runtime.bind(id, { executionId: 'ex_again' }),
      (e) => isAegisError(e) && e.code === 'USAGE',
    );
    const out = await runtime.execute(id, { input: {}, onLog: () => {} });
    assert.equal(out.status, 'succeeded');
    assert.deepEqual(out.output, { id: 'ex_boundtest' });
    assert.equal(runtime.status(id), undefined);
  });

  it('two starts of one execution get distinct containers and groups; terminating one leaves the other', async () => {
    // A fenced-out node and the node that took its execution over may both start it against one dockerd (one cgroup
    // parent): the second create must not conflict on the name, and the fenced one's teardown must not remove the
    // new holder's container or parent group.
    const agent = await agentOf(
      { runtime: { language: 'bash', entrypoint: 'main.sh' } },
      { 'main.sh': 'echo "{\\"id\\":\\"$AEGIS_EXECUTION_ID\\"}"\n' },
    );
    const executionId = `ex_twice${Date.now().toString(36)}`;
    const fenced = await runtime.spawn({ executionId, agent });
    const holder = await runtime.spawn({ executionId, agent });
    assert.notEqual(fenced, holder);
    const names = (await containersNamed(executionId)).map((c) => c.name).sort();
    assert.equal(names.length, 2, `two containers: ${names.join(', ')}`);
    assert.ok(
      names.every((name) => new RegExp(`^/aegis-${executionId}\\.[0-9a-f]{8}$`).test(name)),
      names.join(', '),
    );
    // The start's parent group in every hierarchy (none when dockerd uses the systemd driver).
    const groupsOf = (name: string) =>
      readdirSync('/sys/fs/cgroup')
        .map((root) => join('/sys/fs/cgroup', root, 'aegis-docker', name.slice('/aegis-'.length)))
        .filter((dir) => existsSync(dir));
    const before = names.map(groupsOf);
    const info = (await engine.call('GET', '/info')).body as { CgroupDriver: string };
    if (info.CgroupDriver === 'cgroupfs')
      assert.ok(before[0]!.length > 0, 'AEGIS made a parent group per start');
    assert.equal(
      before[0]!.length,
      before[1]!.length,
      `each start has its own groups: ${before.flat().join(', ')}`,
    );
    await runtime.terminate(fenced);
    const left = await containersNamed(executionId);
    assert.equal(left.length, 1, "the holder's container is still there");
    assert.equal(left[0]!.running, true, "the holder's container still runs");
    const kept = names.indexOf(left[0]!.name);
    assert.deepEqual(groupsOf(names[1 - kept]!), [], "the fenced start's groups are removed");
    assert.deepEqual(groupsOf(left[0]!.name), before[kept], "the holder's groups are still there");
    assert.equal(runtime.status(holder), 'warm', 'the holder is untouched');
    const out = await runtime.execute(holder, { input: {}, onLog: () => {} });
    assert.equal(out.status, 'succeeded', JSON.stringify(out));
    assert.deepEqual(out.output, { id: executionId });
    assert.equal(await containersOf(executionId), 0);
    assert.deepEqual(groupsOf(left[0]!.name), []);
  });

  it('reaps the containers of an orchestrator that died, and only those', async () => {
    const dead = { host: identity.current().host, pid: 2 ** 22 + 7, startTicks: 1 };
    const deadIdentity: ProcessIdentity = { current: () => dead, isAlive: (o) => identity.isAlive(o) };
    const orphaning = new DockerRuntime({ identity: deadIdentity, engine });
    const agent = await agentOf(
      { runtime: { language: 'bash', entrypoint: 'main.sh' } },
      { 'main.sh': 'echo hi\n' },
    );
    await orphaning.spawn({ executionId: 'ex_orphan1', agent });
    const live = await runtime.spawn({ executionId: 'ex_alive1', agent });
    assert.equal(await containersOf('ex_orphan1'), 1);
    const reaped = await runtime.reapOrphans();
    assert.deepEqual([...reaped], ['ex_orphan1']);
    assert.equal(await containersOf('ex_orphan1'), 0);
    assert.equal(await containersOf('ex_alive1'), 1);
    await runtime.terminate(live);
    assert.equal(await containersOf('ex_alive1'), 0);
  });
});
