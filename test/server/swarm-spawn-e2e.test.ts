/**
 * Swarm spawn on a real `aegis server` (issue 16): a parent spawns a child through the in-sandbox API and waits for
 * its output; a failing child's status reaches the parent; a spawn outside canSpawn is refused (403 swarm_denied),
 * audited and recorded as a `swarm` violation; cancelling the parent leaves no live descendant. GET /v1/swarms/{root}
 * shows the tree. (Fan-out and tree limits under concurrency: test/contracts/execution-store.contract.ts; each
 * authority dimension: src/domain/swarm/narrow.test.ts.)
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { hostSkipReason } from '../adversarial/harness.ts';
import { pollUntil } from '../support/poll.ts';
import {
  apiCall,
  cli,
  killServers,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

interface Execution {
  id: string;
  status: string;
  reason: string | null;
  output: unknown;
  violations: { kind: string; rule: string; count?: number }[];
}

const skip = hostSkipReason();

const PARENT_PY = `
import json, os, sys, urllib.request, urllib.error
def call(method, path, body=None):
    req = urllib.request.Request(os.environ["AEGIS_API_URL"] + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": "Bearer " + os.environ["AEGIS_TOKEN"], "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r: return r.status, json.load(r)
    except urllib.error.HTTPError as e: return e.code, json.load(e)
mode = json.load(sys.stdin)["mode"]
out = {}
if mode == "work":
    out["ok"] = call("POST", "/v1/swarm/spawn", {"agent": "research-ok", "input": {"q": "x"}, "wait": True, "timeout": 100})
    out["fail"] = call("POST", "/v1/swarm/spawn", {"agent": "research-fail", "input": None, "wait": True, "timeout": 100})
    out["outside"] = call("POST", "/v1/swarm/spawn", {"agent": "admin-tool", "input": None})
    out["third"] = call("POST", "/v1/swarm/spawn", {"agent": "research-ok", "input": {"q": "y"}})
else:
    out["slow"] = call("POST", "/v1/swarm/spawn", {"agent": "research-slow", "input": None})
    print(json.dumps(out), flush=True)
    import time; time.sleep(300)
print(json.dumps(out))
`;

describe('swarm spawn end to end: wait, failure, refusal, cascade', { skip }, () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  const work = mkdtempSync(join(tmpdir(), 'aegis-swarm-'));
  const env = () => ({ ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey });
  const deploy = async (name: string, spec: Record<string, unknown>, files: Record<string, string>) => {
    const dir = join(work, name);
    mkdirSync(dir, { recursive: true });
    for (const [file, text] of Object.entries(files)) writeFileSync(join(dir, file), text);
    writeFileSync(
      join(dir, 'agent.yaml'),
      stringify({ apiVersion: 'aegis.dev/v1', kind: 'Agent', metadata: { name, version: '1.0.0' }, spec }),
    );
    const deployed = await cli(['deploy', dir], env());
    assert.equal(deployed.code, 0, deployed.stderr);
  };
  const api = (method: string, path: string, body?: unknown) =>
    apiCall(server.url, server.adminKey, method, path, body);
  const py = (allow: string[], timeout = '2m') => ({
    runtime: { language: 'python', entrypoint: 'main.py' },
    security: { network: { allow }, resources: { timeout } },
  });

  before(async () => {
    dirs = serverDirs();
    server = await startServerProcess({ dirs });
    await deploy(
      'coordinator',
      { ...py(['api.example.com:443']), swarm: { canSpawn: ['research-*'], maxChildren: 3 } },
      { 'main.py': PARENT_PY },
    );
    // The child asks for more network than the parent holds; what it gets is printed by its own output.
    await deploy('research-ok', py(['api.example.com', 'evil.example.net']), {
      'main.py': 'import json, sys, os\nprint(json.dumps({"answer": 42}))\n',
    });
    await deploy('research-fail', py([]), { 'main.py': 'import sys\nsys.exit(3)\n' });
    await deploy('research-slow', py([]), {
      'main.py': 'import time\nprint("up", flush=True)\ntime.sleep(300)\n',
    });
    await deploy('admin-tool', py([]), { 'main.py': 'print("never")\n' });
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    dirs?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('spawns and waits, sees a failure, is refused outside canSpawn (audited, a swarm violation)', async () => {
    const ran = await cli(
      ['exec', '--wait', 'coordinator', '--input', '{"mode":"work"}', '-o', 'json'],
      env(),
    );
    const parent = JSON.parse(ran.stdout) as Execution;
    assert.equal(parent.status, 'succeeded', ran.stdout + ran.stderr + server.stderr());
    const out = parent.output as Record<string, [number, Record<string, unknown>]>;
    assert.equal(out['ok']?.[0], 200);
    assert.equal(out['ok']?.[1]['status'], 'succeeded');
    assert.deepEqual(out['ok']?.[1]['output'], { answer: 42 });
    assert.equal(out['fail']?.[1]['status'], 'failed');
    assert.equal(out['outside']?.[0], 403);
    assert.equal((out['outside']?.[1]['error'] as { code: string } | undefined)?.code, 'swarm_denied');
    assert.equal(out['third']?.[0], 200);
    const kinds = parent.violations.filter((v) => v.kind === 'swarm').map((v) => v.rule);
    assert.deepEqual(kinds, ['spec.swarm.canSpawn']);
    const tree = await api('GET', `/v1/swarms/${parent.id}`);
    assert.equal(tree.status, 200, tree.text);
    const executions = tree.json.executions as { id: string; parentId: string | null; agent: string }[];
    assert.deepEqual(executions.map((e) => e.agent).slice(0, 1), ['coordinator']);
    assert.equal(executions.length, 4);
    assert.ok(executions.slice(1).every((e) => e.parentId === parent.id));
    const audit = await cli(['audit', 'show', parent.id, '-o', 'json'], env());
    const entries = JSON.parse(audit.stdout) as
      | { kind: string; data: Record<string, unknown> }[]
      | {
          entries: { kind: string; data: Record<string, unknown> }[];
        };
    const list = Array.isArray(entries) ? entries : entries.entries;
    assert.equal(list.filter((e) => e.kind === 'swarm.spawn').length, 3);
    assert.equal(list.filter((e) => e.kind === 'swarm.refused').length, 1);
  });

  it('cancelling the parent leaves no live descendant', async () => {
    const started = await api('POST', '/v1/executions', { agent: 'coordinator', input: { mode: 'hold' } });
    assert.equal(started.status, 202, started.text);
    const id = started.json.id as string;
    const child = await pollUntil(
      'the child running',
      async () => {
        const tree = await api('GET', `/v1/swarms/${id}`);
        const rows = (tree.json.executions ?? []) as { id: string; status: string }[];
        return rows.length === 2 && rows[1]?.status === 'running' ? rows[1] : undefined;
      },
      90_000,
    );
    await api('POST', `/v1/executions/${id}/cancel`);
    const settled = await pollUntil(
      'the child killed',
      async () => {
        const got = await api('GET', `/v1/executions/${child.id}`);
        return got.json.status === 'killed' ? got.json : undefined;
      },
      60_000,
    );
    assert.equal(settled.status, 'killed');
  });
});
