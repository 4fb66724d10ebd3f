/**
 * The `aegis` CLI as a user drives it: real processes, a temp AEGIS_HOME, the real sandbox.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chownSync, cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { reachable } from '../src/adapters/runtimes/sandbox/host.ts';
import { findCgroupDirs, processWithMarker, scratchDirsOf } from './support/host-state.ts';
import { pollUntil as poll } from './support/poll.ts';

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin/aegis.mjs');
const temps: string[] = [];
after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function start(args: string[], home: string, stdin?: string): { child: ChildProcess; done: Promise<Result> } {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: { ...process.env, AEGIS_HOME: home },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdin!.end(stdin ?? '');
  const done = new Promise<Result>((resolveDone) =>
    child.on('close', (code) => resolveDone({ code, stdout, stderr })),
  );
  return { child, done };
}

function aegis(args: string[], home: string, stdin?: string): Promise<Result> {
  return start(args, home, stdin).done;
}

const pollUntil = <T>(what: string, fn: () => Promise<T | undefined> | T | undefined): Promise<T> =>
  poll(what, fn, 60_000);

const HEADER = 'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata:\n  name: cli-test\n';

function agentDir(yaml: string, files: Record<string, string> = {}): string {
  const dir = tempDir('aegis-cli-agent-');
  writeFileSync(join(dir, 'agent.yaml'), yaml);
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  return join(dir, 'agent.yaml');
}

describe('aegis CLI', { concurrency: true }, () => {
  it('rejects each kind of invalid manifest with a located error, exit 2, and records nothing', async () => {
    const home = tempDir('aegis-cli-home-');
    const cases: [string, string, RegExp][] = [
      [
        'unknown field',
        `${HEADER}spec:\n  runtime: { language: python, entrypoint: main.py }\n  isolaton: sandbox\n`,
        /agent\.yaml:7:3 \(spec\.isolaton\): unknown field "isolaton" — did you mean "isolation"\?/,
      ],
      [
        'wrong type',
        `${HEADER}spec:\n  runtime: { language: python, entrypoint: main.py }\n  security:\n    resources: { pids: lots }\n`,
        /agent\.yaml:8:24 \(spec\.security\.resources\.pids\): expected number, got the string "lots"/,
      ],
      [
        'bad size unit',
        `${HEADER}spec:\n  runtime: { language: python, entrypoint: main.py }\n  security:\n    resources: { memory: 1Zb }\n`,
        /agent\.yaml:8:26 \(spec\.security\.resources\.memory\): unknown size unit "Zb"/,
      ],
      [
        'missing entrypoint',
        `${HEADER}spec:\n  runtime: { language: python }\n`,
        /agent\.yaml:6:\d+ \(spec\.runtime\.entrypoint\): spec\.runtime needs an entrypoint/,
      ],
      [
        'YAML syntax error',
        `${HEADER}spec:\n  runtime: { language: python, entrypoint: main.py\n`,
        /agent\.yaml:\d+:\d+: YAML syntax error/,
      ],
    ];
    for (const [name, yaml, expected] of cases) {
      const manifest = agentDir(yaml, { 'main.py': 'print(1)\n' });
      for (const command of ['validate', 'run']) {
        const result = await aegis([command, manifest], home);
        assert.equal(result.code, 2, `${name} (${command}): ${result.stderr}`);
        assert.match(result.stderr, expected, `${name} (${command})`);
        assert.match(result.stderr, /MANIFEST_INVALID/);
      }
    }
    const ps = await aegis(['ps', '--output', 'json'], home);
    assert.equal(ps.code, 0, ps.stderr);
    assert.deepEqual(
      JSON.parse(ps.stdout),
      { executions: [], nextCursor: null },
      'invalid manifests must not be recorded as executions',
    );
  });

  it('run --output json prints exactly one JSON object on stdout; logs go to stderr; logs and ps replay it', async () => {
    const home = tempDir('aegis-cli-home-');
    const result = await aegis(
      ['run', 'examples/hello-python/agent.yaml', '--input', '{"name":"Ada"}', '--output', 'json'],
      home,
    );
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.trim().split('\n');
    assert.equal(lines.length, 1, `stdout must be one line: ${result.stdout}`);
    const json = JSON.parse(lines[0]!);
    assert.deepEqual(
      Object.keys(json).sort(),
      [
        'agent',
        'createdAt',
        'durationMs',
        'exitCode',
        'finishedAt',
        'id',
        'input',
        'node',
        'output',
        'parentId',
        'reason',
        'rootId',
        'runtime',
        'startedAt',
        'status',
        'usage',
        'violations',
      ].sort(),
      'the REST Execution shape (GET /v1/executions/{id})',
    );
    assert.deepEqual(json.agent, { name: 'hello-python', version: '1.0.0', revision: null });
    assert.equal(json.status, 'succeeded');
    assert.equal(json.exitCode, 0);
    assert.equal(json.output.greeting, 'Hello, Ada!');
    assert.deepEqual(json.violations, []);
    assert.match(result.stderr, /Hello, Ada!/);

    const logs = await aegis(['logs', json.id], home);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /Hello, Ada!/);
    assert.match(logs.stderr, /succeeded/);

    const ps = await aegis(['ps'], home);
    assert.match(ps.stdout, new RegExp(`${json.id}\\s+hello-python@1\\.0\\.0\\s+succeeded`));
  });

  it('exit 1 for a failing agent, with the exit code recorded', async () => {
    const home = tempDir('aegis-cli-home-');
    const manifest = agentDir(`${HEADER}spec:\n  runtime: { language: python, entrypoint: main.py }\n`, {
      'main.py': 'import sys\nprint("about to fail", file=sys.stderr)\nsys.exit(7)\n',
    });
    const result = await aegis(['run', manifest, '--output', 'json'], home);
    assert.equal(result.code, 1);
    const json = JSON.parse(result.stdout);
    assert.equal(json.status, 'failed');
    assert.equal(json.exitCode, 7);
    assert.match(result.stderr, /about to fail/);
  });

  it('input from --input-file and from stdin reaches the agent', async () => {
    const home = tempDir('aegis-cli-home-');
    const file = join(tempDir('aegis-cli-input-'), 'in.json');
    writeFileSync(file, '{"name":"File"}');
    const fromFile = await aegis(
      ['run', 'examples/hello-python/agent.yaml', '--input-file', file, '-o', 'json'],
      home,
    );
    assert.equal(JSON.parse(fromFile.stdout).output.greeting, 'Hello, File!');
    const fromStdin = await aegis(
      ['run', 'examples/hello-python/agent.yaml', '--input-file', '-', '-o', 'json'],
      home,
      '{"name":"Pipe"}',
    );
    assert.equal(JSON.parse(fromStdin.stdout).output.greeting, 'Hello, Pipe!');
  });

  it('usage errors exit 2 with a message that says what to do', async () => {
    const home = tempDir('aegis-cli-home-');
    const badJson = await aegis(['run', 'examples/hello-python/agent.yaml', '--input', '{oops'], home);
    assert.equal(badJson.code, 2);
    assert.match(badJson.stderr, /--input is not valid JSON/);
    const unknownFlag = await aegis(['run', '--frobnicate', 'x'], home);
    assert.equal(unknownFlag.code, 2);
    assert.match(unknownFlag.stderr, /unknown option/);
    const noManifest = await aegis(['run', 'nope/agent.yaml'], home);
    assert.equal(noManifest.code, 2);
    assert.match(noManifest.stderr, /no manifest at nope\/agent\.yaml/);
    const unknownId = await aegis(['logs', 'ex_missing'], home);
    assert.equal(unknownId.code, 2);
    assert.match(unknownId.stderr, /no execution ex_missing/);
    const badOutput = await aegis(['ps', '--output', 'yaml'], home);
    assert.equal(badOutput.code, 2);
  });

  it('schema prints the JSON Schema and doctor reports the sandbox runtime as available', async () => {
    const home = tempDir('aegis-cli-home-');
    const schema = await aegis(['schema'], home);
    assert.equal(schema.code, 0);
    const parsed = JSON.parse(schema.stdout);
    assert.equal(parsed.properties.apiVersion.const, 'aegis.dev/v1');
    const doctor = await aegis(['doctor', '--output', 'json'], home);
    assert.equal(doctor.code, 0, doctor.stdout);
    assert.equal(JSON.parse(doctor.stdout).runtimes.sandbox, true);
  });

  it('as an ordinary user without cgroup access, run refuses with exit 3 and names what is missing', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to start the CLI as another user');
    const nobody = { name: 'nobody', uid: 65534, gid: 65534, dedicated: true };
    if (!reachable(BIN, nobody, 'read').ok || !reachable(process.execPath, nobody, 'read').ok) {
      return t.skip(
        `uid 65534 cannot read this checkout (${ROOT}, e.g. under /root): no other user can run it`,
      );
    }
    const home = tempDir('aegis-cli-home-');
    chownSync(home, 65534, 65534);
    const result = await new Promise<Result>((resolveDone) => {
      const child = spawn(process.execPath, [BIN, 'run', 'examples/hello-python/agent.yaml'], {
        cwd: ROOT,
        env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', AEGIS_HOME: home, HOME: home },
        uid: 65534,
        gid: 65534,
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => resolveDone({ code, stdout, stderr }));
    });
    assert.equal(result.code, 3, result.stderr);
    assert.match(result.stderr, /LIMIT_UNENFORCEABLE.*limits cannot be enforced/);
    assert.match(result.stderr, /AEGIS_CGROUP_PARENT/);
  });

  it('runs Node agents even when the Node binary sits in a directory the sandbox user cannot traverse', async () => {
    const home = tempDir('aegis-cli-home-');
    const hidden = tempDir('aegis-cli-node-'); // mkdtemp: mode 0700, like /root
    const node = join(hidden, 'node');
    // preserveTimestamps keeps the runtime's one-time copy keyed to the same binary across test runs.
    cpSync(process.execPath, node, { preserveTimestamps: true });
    const result = await new Promise<Result>((resolveDone) => {
      const child = spawn(process.execPath, [BIN, 'run', 'examples/hello-node/agent.yaml', '-o', 'json'], {
        cwd: ROOT,
        env: { ...process.env, AEGIS_HOME: home, AEGIS_NODE_BINARY: node },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => resolveDone({ code, stdout, stderr }));
    });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(JSON.parse(result.stdout).output.uid, 1000);
  });

  it('descriptors the CLI inherited (a parent shell pipe) never reach the sandbox', async () => {
    const home = tempDir('aegis-cli-home-');
    const manifest = agentDir(`${HEADER}spec:\n  runtime: { language: python, entrypoint: main.py }\n`, {
      'main.py':
        'import json, os\nprint(json.dumps(sorted(int(fd) for fd in os.listdir("/proc/self/fd"))))\n',
    });
    // fds 3 and 4 are inherited by the CLI without close-on-exec, like a shell's or CI runner's stray pipes.
    const child = spawn(process.execPath, [BIN, 'run', manifest, '-o', 'json'], {
      cwd: ROOT,
      env: { ...process.env, AEGIS_HOME: home },
      stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const code = await new Promise((resolveCode) => child.on('close', resolveCode));
    assert.equal(code, 0, stderr);
    const fds = JSON.parse(stdout).output as number[];
    // 0-2 and the descriptor listing /proc/self/fd itself: nothing of the orchestrator's parent.
    assert.ok(!fds.includes(4), `the agent saw inherited descriptors: ${fds}`);
    assert.ok(
      fds.every((fd) => fd <= 3),
      `unexpected descriptors in the sandbox: ${fds}`,
    );
  });

  it('SIGTERM to the CLI kills the sandbox and records the run as killed (exit 1)', async () => {
    const home = tempDir('aegis-cli-home-');
    const manifest = agentDir(`${HEADER}spec:\n  runtime: { language: python, entrypoint: main.py }\n`, {
      'main.py': 'import time\nprint("started", flush=True)\ntime.sleep(60)\n',
    });
    const { child, done } = start(['run', manifest, '-o', 'json'], home);
    let seen = '';
    child.stderr!.on('data', (d) => (seen += d));
    await pollUntil('agent start', () => (seen.includes('started') ? true : undefined));
    child.kill('SIGTERM');
    const result = await done;
    assert.equal(result.code, 1);
    assert.equal(JSON.parse(result.stdout).status, 'killed');
  });

  it('kill -9 of the CLI mid-run: the sandbox dies with it and the next start reaps cgroups, scratch and the record', async () => {
    const home = tempDir('aegis-cli-home-');
    const marker = `aegis-reap-marker-${process.pid}-${Date.now()}`;
    const manifest = agentDir(`${HEADER}spec:\n  runtime: { language: bash, entrypoint: main.sh }\n`, {
      'main.sh': `echo started\nexec -a ${marker} sleep 300\n`,
    });
    const { child, done } = start(['run', manifest, '-o', 'json'], home);
    let seen = '';
    child.stderr!.on('data', (d) => (seen += d));
    await pollUntil('agent start', () => (seen.includes('started') ? true : undefined));
    const running = await aegis(['ps', '--output', 'json'], home);
    const id = JSON.parse(running.stdout).executions[0].id as string;
    assert.equal(JSON.parse(running.stdout).executions[0].status, 'running');
    assert.equal(scratchDirsOf(id).length, 1, 'scratch dir exists while running');

    child.kill('SIGKILL');
    await done;
    // --die-with-parent: the sandbox's processes go with the orchestrator.
    await pollUntil('sandbox processes to die', () => (processWithMarker(marker) ? undefined : true));

    const ps = await aegis(['ps', '--output', 'json'], home);
    const record = JSON.parse(ps.stdout).executions.find((r: { id: string }) => r.id === id);
    assert.equal(record.status, 'killed');
    assert.match(record.reason, /orchestrator-exited/);
    assert.deepEqual(scratchDirsOf(id), [], 'scratch dir reaped');
    assert.deepEqual(findCgroupDirs(id), [], 'cgroup dirs reaped');
  });
});
