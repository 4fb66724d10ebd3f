/**
 * Swarm locks across two `aegis server` nodes on one PostgreSQL (issue 16, ADR 0144).
 *
 * The shared resource is a counter file under a read-write grant both nodes' sandboxes see (one host): each agent
 * takes the global lock "counter", reads the counter, waits a moment (an overlapping holder would read the same
 * value and one increment would be lost), writes value+1 — and the file is fenced: it keeps the largest token it has
 * seen and refuses a write with a smaller one, as a real resource would. Every holder appends its token and
 * interval to a log.
 *
 *  1. 20 root executions on both nodes: the counter ends exactly 20, the tokens strictly increase and no two
 *     holders' intervals overlap.
 *  2. A holder pinned to node A (spec.placement) takes the same lock and keeps it; a waiter pinned to node B queues;
 *     node A is killed with SIGKILL. The waiter takes the lock once the holder's lease ran out, finds the holder's
 *     token stale (checkFence), and the counter file refuses a write with the stale token.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { hostSkipReason } from '../adversarial/harness.ts';
import {
  apiCall,
  cli,
  freshDatabase,
  killServers,
  pollUntil,
  postgresMissing,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

/** The fenced counter, shared by every agent below (Python, stdlib + the in-sandbox SDK). */
const COUNTER_PY = `
import json, os, time
SHARED = os.environ.get("SHARED") or "%SHARED%"
COUNTER = os.path.join(SHARED, "counter.json")
def read():
    try:
        with open(COUNTER) as f: return json.load(f)
    except FileNotFoundError:
        return {"value": 0, "maxToken": 0}
def fenced_increment(token, gap):
    """Read-modify-write with a gap; refused (False) when a larger token has already written."""
    state = read()
    if token < state["maxToken"]: return False
    time.sleep(gap)
    tmp = COUNTER + ".%d" % token
    with open(tmp, "w") as f: json.dump({"value": state["value"] + 1, "maxToken": token}, f)
    os.replace(tmp, COUNTER)
    return True
def record(name, entry):
    with open(os.path.join(SHARED, name), "a") as f: f.write(json.dumps(entry) + "\\n")
`;

const INCREMENT_PY = `
import json, os, time
import aegis
%COUNTER%
with aegis.swarm.lock("counter", ttl=60, wait=170, is_global=True) as lease:
    start = time.time()
    ok = fenced_increment(lease.token, 0.15)
    end = time.time()
record("holders.log", {"token": lease.token, "start": start, "end": end, "ok": ok})
aegis.output({"token": lease.token, "ok": ok})
`;

const HOLDER_PY = `
import json, os, time
import aegis
%COUNTER%
lease = aegis.swarm.lock("counter", ttl=4, wait=60, is_global=True)
ok = fenced_increment(lease.token, 0)
record("handoff.log", {"role": "holder", "token": lease.token, "expiresAt": lease.expires_at, "ok": ok,
                       "at": time.time()})
time.sleep(110)  # holds the lock until its node dies
`;

const WAITER_PY = `
import json, os, time
import aegis
%COUNTER%
record("handoff.log", {"role": "waiting", "at": time.time()})
lease = aegis.swarm.lock("counter", ttl=30, wait=110, is_global=True)
acquired = time.time()
ok = fenced_increment(lease.token, 0)
stale_token = [e for e in map(json.loads, open(os.path.join(SHARED, "handoff.log"))) if e["role"] == "holder"][0]["token"]
stale = aegis.swarm.check_fence("counter", stale_token, is_global=True)
current = aegis.swarm.check_fence("counter", lease.token, is_global=True)
lease.release()
aegis.output({"token": lease.token, "acquiredAt": acquired, "ok": ok, "stale": stale, "current": current})
`;

const missing = postgresMissing();
const hostSkip = hostSkipReason();
const temps: string[] = [];
after(async () => {
  await killServers();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

interface Holder {
  token: number;
  start: number;
  end: number;
  ok: boolean;
}

describe('swarm locks across two nodes on PostgreSQL', {
  skip: hostSkip || (missing && process.env['AEGIS_SKIP_POSTGRES'] === '1' ? missing : false),
}, () => {
  it('20 agents on 2 nodes increment a fenced counter exactly; a killed holder node hands the lock on', async () => {
    if (missing) throw new Error(missing);
    const db = (await freshDatabase())!;
    const work = mkdtempSync(join(tmpdir(), 'aegis-swarm-cluster-'));
    temps.push(work);
    const shared = join(work, 'shared');
    mkdirSync(shared);
    chmodSync(work, 0o755);
    chmodSync(shared, 0o777); // the sandbox uid writes here
    const dirs = [serverDirs(), serverDirs()];
    const servers: ServerProcess[] = [];
    try {
      const common = ['--max-concurrent', '4'];
      servers.push(
        await startServerProcess({
          dirs: dirs[0]!,
          databaseUrl: db.url,
          args: ['--node-id', 'node-a', '--label', 'zone=a', ...common],
        }),
      );
      writeFileSync(join(dirs[1]!.home, 'admin.key'), `${servers[0]!.adminKey}\n`, { mode: 0o600 });
      servers.push(
        await startServerProcess({
          dirs: dirs[1]!,
          databaseUrl: db.url,
          args: ['--node-id', 'node-b', '--label', 'zone=b', ...common],
        }),
      );
      const [a, b] = servers as [ServerProcess, ServerProcess];
      const key = a.adminKey;
      const env = { ...a.env, AEGIS_SERVER: a.url, AEGIS_API_KEY: key };
      const counter = COUNTER_PY.replace('%SHARED%', shared);
      const deploy = async (name: string, code: string, placement?: Record<string, string>) => {
        const dir = join(work, name);
        mkdirSync(dir);
        writeFileSync(join(dir, 'main.py'), code.replace('%COUNTER%', counter));
        const spec = {
          runtime: { language: 'python', entrypoint: 'main.py' },
          security: { filesystem: { write: [shared] }, resources: { timeout: '3m' } },
          swarm: { locks: { global: true } },
          ...(placement ? { placement: { labels: placement } } : {}),
        };
        writeFileSync(
          join(dir, 'agent.yaml'),
          stringify({
            apiVersion: 'aegis.dev/v1',
            kind: 'Agent',
            metadata: { name, version: '1.0.0' },
            spec,
          }),
        );
        const deployed = await cli(['deploy', dir], env); // admin: global locks and a host write grant
        assert.equal(deployed.code, 0, deployed.stderr);
      };
      await deploy('counter-incr', INCREMENT_PY);
      await deploy('lock-holder', HOLDER_PY, { zone: 'a' });
      await deploy('lock-waiter', WAITER_PY, { zone: 'b' });

      // 1. Twenty increments, submitted through both nodes, claimed by both.
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) {
        const via = i % 2 === 0 ? a : b;
        const submitted = await apiCall(via.url, key, 'POST', '/v1/executions', {
          agent: 'counter-incr',
          input: {},
        });
        assert.equal(submitted.status, 202, submitted.text);
        ids.push(submitted.json['id'] as string);
      }
      const nodes = new Set<string>();
      for (const id of ids) {
        const done = await apiCall(b.url, key, 'GET', `/v1/executions/${id}?wait=170s`);
        assert.equal(done.json['status'], 'succeeded', done.text);
        nodes.add(done.json['node'] as string);
      }
      assert.deepEqual([...nodes].sort(), ['node-a', 'node-b'], 'the 20 executions ran on both nodes');
      const holders = readFileSync(join(shared, 'holders.log'), 'utf8')
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Holder)
        .sort((x, y) => x.token - y.token);
      assert.equal(holders.length, 20);
      assert.ok(
        holders.every((h) => h.ok),
        'no holder was fenced out',
      );
      for (let i = 1; i < holders.length; i++) {
        const [prev, next] = [holders[i - 1]!, holders[i]!];
        assert.ok(next.token > prev.token, `tokens increase: ${prev.token} then ${next.token}`);
        assert.ok(
          next.start >= prev.end,
          `holder ${next.token} started ${next.start} before holder ${prev.token} ended ${prev.end}`,
        );
      }
      const afterTwenty = JSON.parse(readFileSync(join(shared, 'counter.json'), 'utf8')) as {
        value: number;
        maxToken: number;
      };
      assert.equal(afterTwenty.value, 20, 'no increment was lost');

      // 2. Kill the holder's node while it holds the lock; the waiter on the other node takes over.
      const holder = await apiCall(a.url, key, 'POST', '/v1/executions', { agent: 'lock-holder', input: {} });
      assert.equal(holder.status, 202, holder.text);
      const handoff = () =>
        readFileSync(join(shared, 'handoff.log'), 'utf8')
          .trim()
          .split('\n')
          .map((line) => JSON.parse(line) as Record<string, unknown>);
      const held = await pollUntil('the holder on node A to hold the lock', () => {
        try {
          return handoff().find((e) => e['role'] === 'holder');
        } catch {
          return undefined;
        }
      });
      const waiter = await apiCall(b.url, key, 'POST', '/v1/executions', { agent: 'lock-waiter', input: {} });
      assert.equal(waiter.status, 202, waiter.text);
      await pollUntil('the waiter on node B to wait for the lock', () =>
        handoff().some((e) => e['role'] === 'waiting') ? true : undefined,
      );
      await a.kill9();
      const done = await apiCall(
        b.url,
        key,
        'GET',
        `/v1/executions/${waiter.json['id'] as string}?wait=150s`,
      );
      assert.equal(done.json['status'], 'succeeded', done.text);
      assert.equal(done.json['node'], 'node-b');
      const out = done.json['output'] as {
        token: number;
        acquiredAt: number;
        ok: boolean;
        stale: { valid: boolean; current: number };
        current: { valid: boolean };
      };
      const staleToken = held['token'] as number;
      assert.ok(out.token > staleToken, `the waiter's token ${out.token} follows the holder's ${staleToken}`);
      assert.ok(
        out.acquiredAt * 1000 >= Date.parse(held['expiresAt'] as string),
        'the waiter got the lock only after the dead holder’s lease ran out',
      );
      assert.equal(out.ok, true, "the waiter's write was accepted");
      assert.equal(out.stale.valid, false, "checkFence rejects the dead holder's token");
      assert.equal(out.stale.current, out.token);
      assert.equal(out.current.valid, true);
      // The counter refuses the stale holder: its fence (largest token seen) is now the waiter's.
      const fenced = JSON.parse(readFileSync(join(shared, 'counter.json'), 'utf8')) as {
        value: number;
        maxToken: number;
      };
      assert.deepEqual(fenced, { value: 22, maxToken: out.token });
      // The dead holder's write, replayed with its token against the same counter code, is refused.
      const replay = spawnSync(
        'python3',
        ['-c', `${counter}\nprint(json.dumps(fenced_increment(${staleToken}, 0)))`],
        { encoding: 'utf8' },
      );
      assert.equal(replay.stdout.trim(), 'false', replay.stderr);
      assert.deepEqual(JSON.parse(readFileSync(join(shared, 'counter.json'), 'utf8')), fenced);
    } finally {
      for (const server of servers) await server.stop().catch(() => undefined);
      await killServers();
      await db.drop();
      for (const d of dirs) d.cleanup();
    }
  });
});
