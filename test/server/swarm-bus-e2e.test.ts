/**
 * The swarm bus and locks through the in-sandbox SDKs on a real `aegis server` (issue 16, ADR 0144): a Python parent
 * (aegis.swarm) spawns a Node child (the spawn is a raw call: the SDKs' spawn is another change); both are one swarm
 * — the root's id — so the child reads what the parent published, waits for the lock the parent holds, gets a larger
 * fencing token, and finds the parent's token stale; the parent reads the child's reply. GET /v1/swarms/{root}
 * shows the messages (no content) and the lock.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { hostSkipReason } from '../adversarial/harness.ts';
import {
  apiCall,
  cli,
  killServers,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

const skip = hostSkipReason();

const PARENT_PY = `
import json, os, urllib.request
import aegis
def spawn(agent):
    req = urllib.request.Request(os.environ["AEGIS_API_URL"] + "/v1/swarm/spawn", method="POST",
        data=json.dumps({"agent": agent, "input": None}).encode(),
        headers={"authorization": "Bearer " + os.environ["AEGIS_TOKEN"], "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r: return json.load(r)
with aegis.swarm.lock("db", ttl=60, wait=30) as lease:
    mine = lease.token
    child = spawn("bus-child")
    aegis.swarm.publish("tasks", {"task": "count", "parentToken": mine})
    # The child is now waiting for this lock: hold it until it has said so on the bus.
    waiting = aegis.swarm.subscribe("status", timeout=60)
print(json.dumps({"token": mine, "child": child["id"], "waiting": waiting["messages"][0]["message"]}), flush=True)
seen, reply = 0, None
while reply is None:
    got = aegis.swarm.subscribe("results", after=seen, timeout=60)
    for m in got["messages"]:
        seen = m["id"]; reply = m
print(json.dumps({"token": mine, "reply": reply["message"], "sender": reply["sender"], "id": reply["id"]}))
`;

const CHILD_MJS = `
import aegis from 'aegis';
const got = await aegis.swarm.subscribe('tasks', { timeout: 60 });
const task = got.messages[0].message;
await aegis.swarm.publish('status', 'waiting');
const lease = await aegis.swarm.lock('db', { ttl: 30, wait: 60 });
const stale = await aegis.swarm.checkFence('db', task.parentToken);
const current = await aegis.swarm.checkFence('db', lease.token);
await aegis.swarm.publish('results', { task: task.task, token: lease.token, stale, current });
await lease.release();
console.log(JSON.stringify({ token: lease.token }));
`;

describe('swarm bus and locks through the SDKs: a parent and its spawned child share one swarm', {
  skip,
}, () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  const work = mkdtempSync(join(tmpdir(), 'aegis-swarm-bus-'));
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

  before(async () => {
    dirs = serverDirs();
    server = await startServerProcess({ dirs });
    await deploy(
      'bus-parent',
      {
        runtime: { language: 'python', entrypoint: 'main.py' },
        security: { resources: { timeout: '2m' } },
        swarm: { canSpawn: ['bus-child'], maxChildren: 1 },
      },
      { 'main.py': PARENT_PY },
    );
    await deploy(
      'bus-child',
      {
        runtime: { language: 'node', entrypoint: 'main.mjs' },
        security: { resources: { timeout: '2m' } },
        swarm: {},
      },
      { 'main.mjs': CHILD_MJS },
    );
  });
  after(async () => {
    await server?.stop();
    await killServers();
    dirs?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('publishes, subscribes and hands a fenced lock from parent to child', async () => {
    const api = (method: string, path: string, body?: unknown) =>
      apiCall(server.url, server.adminKey, method, path, body);
    const submitted = await api('POST', '/v1/executions', { agent: 'bus-parent', input: {} });
    assert.equal(submitted.status, 202, submitted.text);
    const rootId = submitted.json['id'] as string;
    const done = await api('GET', `/v1/executions/${rootId}?wait=110s`);
    assert.equal(done.json['status'], 'succeeded', done.text);
    const out = done.json['output'] as {
      token: number;
      sender: string;
      reply: { task: string; token: number; stale: { valid: boolean }; current: { valid: boolean } };
    };
    assert.equal(out.reply.task, 'count');
    assert.ok(out.reply.token > out.token, `the child's token ${out.reply.token} follows ${out.token}`);
    assert.equal(out.reply.stale.valid, false, "the parent's released token is stale for the child");
    assert.equal(out.reply.current.valid, true);

    const tree = await api('GET', `/v1/swarms/${rootId}`);
    assert.equal(tree.status, 200, tree.text);
    const executions = tree.json['executions'] as { id: string; parentId: string | null }[];
    const child = executions.find((e) => e.parentId === rootId);
    assert.ok(child, tree.text);
    assert.equal(out.sender, child.id, 'the reply came from the spawned child');
    const messages = tree.json['messages'] as { topic: string; sender: string; digest: string }[];
    assert.deepEqual(
      messages.map((m) => [m.topic, m.sender]),
      [
        ['tasks', rootId],
        ['status', child.id],
        ['results', child.id],
      ],
    );
    assert.ok(messages.every((m) => !('message' in m) && /^[0-9a-f]{64}$/.test(m.digest)));
    const locks = tree.json['locks'] as { name: string; token: number; holder: string | null }[];
    assert.deepEqual(locks, [
      { name: 'db', token: out.reply.token, holder: null, node: null, expiresAt: null },
    ]);
  });
});
