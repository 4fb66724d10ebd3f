/**
 * Swarm attacks on a real `aegis server` (issue 16): a child spawned through the in-sandbox SDK (`aegis.swarm.spawn`)
 * asks for more than its parent holds, and every attempt is refused and on the ledger:
 *   - egress to a host only the child's manifest allows (refused by the proxy: a `network.connect` deny entry);
 *   - a writable host path outside the parent's (not mounted in the child; `swarm.narrowed` names it);
 *   - a tool, a model and a secret the parent lacks (ToolDenied / a refused model call / no env; `swarm.narrowed`);
 *   - the model budget its parent already spent before the spawn (the child's first call is refused: `budget`);
 *   - a grandchild below maxDepth, a third child over maxChildren, a third member over budget.executions
 *     (SwarmDenied in the SDK, `swarm.refused` entries);
 *   - a parent that times out leaves no live descendant (the child is `killed`, not left to its own timeout).
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { FileSecretStore } from '../../src/adapters/secrets/file-secret-store.ts';
import { hostSkipReason } from '../adversarial/harness.ts';
import { pollUntil } from '../support/poll.ts';
import { type ScriptedLlm, startScriptedLlm } from '../support/scripted-llm.ts';
import {
  apiCall,
  cli,
  killServers,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

interface Entry {
  kind: string;
  data: Record<string, unknown>;
}

const skip = hostSkipReason();

const BOSS_PY = `
import aegis
# Spend the whole model budget (2 calls x 15 tokens = 30) before spawning: the child may not spend it again.
aegis.llm.chat([{"role": "user", "content": "one"}])
aegis.llm.chat([{"role": "user", "content": "two"}])
aegis.output({"kid": aegis.swarm.spawn("kid-greedy", {}, wait=True, timeout=240)})
`;

/** Python: egress to the parent's host and to one only the child's manifest allows, then a write outside. */
const PROBE_PY = (okPort: number, evilPort: number, file: string) => `
out = {}
def get(port):
    try:
        return urllib.request.urlopen("http://127.0.0.1:%d/x" % port, timeout=10).status
    except Exception as e:
        return "refused: " + type(e).__name__
out["ok"] = get(${okPort})
out["evil"] = get(${evilPort})
try:
    with open(${JSON.stringify(file)}, "w") as f:
        f.write("x")
    out["write"] = "written"
except Exception as e:
    out["write"] = "refused: " + type(e).__name__
`;

const KID_PY = (okPort: number, evilPort: number, outside: string) => `
import json, os, urllib.request
import aegis
${PROBE_PY(okPort, evilPort, join(outside, 'pwned.txt'))}try:
    aegis.tools.call("cmd.run", {"argv": ["echo", "hi"]})
    out["tool"] = "ran"
except aegis.ToolDenied as e:
    out["tool"] = "denied"
out["secret"] = "CHILD_ONLY" in os.environ
try:
    aegis.swarm.spawn("kid-noop", None, wait=False)
    out["grandchild"] = "spawned"
except aegis.SwarmDenied as e:
    out["grandchild"] = "denied: " + str(e)
# The findings go to stdout first: a model call refused for a spent budget ends this execution.
print(json.dumps(out), flush=True)
for model in ["smart", "default"]:
    try:
        aegis.llm.chat([{"role": "user", "content": "x"}], model=model)
        print(json.dumps({model: "answered"}), flush=True)
    except aegis.AegisError as e:
        print(json.dumps({model: "refused %s" % e.status}), flush=True)
`;

const POOL_BOSS_PY = `
import aegis
aegis.output({"kid": aegis.swarm.spawn("kid-pooled", {}, wait=True, timeout=120)})
`;

/** No SDK (so nothing keeps it from a warm pool): egress and a host write, as its own manifest would allow. */
const POOLED_KID_PY = (okPort: number, evilPort: number, outside: string) => `
import json, urllib.request
${PROBE_PY(okPort, evilPort, join(outside, 'pooled.txt'))}
print(json.dumps(out), flush=True)
`;

const MANY_PY = `
import aegis
out = []
for _ in range(3):
    try:
        out.append(aegis.swarm.spawn("kid-noop", None, wait=False)["id"])
    except aegis.SwarmDenied as e:
        out.append("denied: " + str(e))
aegis.output(out)
`;

const SLEEPY_PY = `
import time, aegis
aegis.swarm.spawn("kid-sleep", None, wait=False)
time.sleep(300)
`;

describe('swarm attacks: a child never gets more than its parent; limits and cascade hold', { skip }, () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let upstream: ScriptedLlm;
  const hosts: Server[] = [];
  const ports: number[] = [];
  const work = mkdtempSync(join(tmpdir(), 'aegis-swarm-attack-'));
  const parentDir = join(work, 'parent-out');
  const outside = join(work, 'outside');
  const env = () => ({ ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey });
  const api = (method: string, path: string, body?: unknown) =>
    apiCall(server.url, server.adminKey, method, path, body);
  const deploy = async (name: string, spec: Record<string, unknown>, main: string) => {
    const dir = join(work, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'main.py'), main);
    writeFileSync(
      join(dir, 'agent.yaml'),
      stringify({
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name, version: '1.0.0' },
        spec: { runtime: { language: 'python', entrypoint: 'main.py' }, ...spec },
      }),
    );
    const deployed = await cli(['deploy', dir], env());
    assert.equal(deployed.code, 0, deployed.stderr);
  };
  const auditOf = async (id: string): Promise<Entry[]> => {
    const shown = await cli(['audit', 'show', id, '-o', 'json'], env());
    const parsed = JSON.parse(shown.stdout) as Entry[] | { entries: Entry[] };
    return Array.isArray(parsed) ? parsed : parsed.entries;
  };
  const exec = async (agent: string) => {
    const ran = await cli(['exec', '--wait', '5m', agent, '-o', 'json'], env());
    return JSON.parse(ran.stdout) as { id: string; status: string; reason: string | null; output: unknown };
  };

  before(async () => {
    // The sandbox user must be able to reach both host paths (it may write the parent's, not the outside one).
    chmodSync(work, 0o755);
    for (const dir of [parentDir, outside]) {
      mkdirSync(dir);
      chmodSync(dir, 0o777);
    }
    upstream = await startScriptedLlm();
    for (let i = 0; i < 2; i++) {
      const host = createServer((_request, response) => response.end('hello\n'));
      await new Promise<void>((resolve) => host.listen(0, '127.0.0.1', resolve));
      hosts.push(host);
      ports.push((host.address() as AddressInfo).port);
    }
    const [okPort, evilPort] = ports as [number, number];
    dirs = serverDirs();
    const keyFile = join(work, 'secrets.key');
    const secrets = new FileSecretStore({ home: dirs.home, keyFile });
    await secrets.set('UPSTREAM_KEY', 'sk-upstream-test');
    await secrets.set('CHILD_ONLY', 'sk-child-only');
    writeFileSync(
      join(dirs.home, 'config.yaml'),
      stringify({
        llm: {
          providers: {
            scripted: { kind: 'openai', baseUrl: upstream.baseUrl, apiKeySecret: 'UPSTREAM_KEY' },
          },
          models: {
            default: { provider: 'scripted', model: 'scripted-1' },
            smart: { provider: 'scripted', model: 'scripted-2' },
          },
        },
      }),
    );
    server = await startServerProcess({ dirs, env: { AEGIS_SECRETS_KEY_FILE: keyFile } });
    await deploy(
      'boss',
      {
        security: {
          network: { allow: [`127.0.0.1:${okPort}`] },
          filesystem: { write: [parentDir] },
          resources: { timeout: '4m' },
        },
        tools: [{ name: 'fs.read' }],
        llm: { models: ['default'], budget: { tokens: 30 } },
        swarm: { canSpawn: ['kid-*'], maxDepth: 1 },
      },
      BOSS_PY,
    );
    await deploy(
      'kid-greedy',
      {
        security: {
          network: { allow: [`127.0.0.1:${okPort}`, `127.0.0.1:${evilPort}`] },
          filesystem: { write: [outside] },
          resources: { timeout: '4m' },
        },
        tools: [{ name: 'fs.read' }, { name: 'cmd.run', allow: ['echo *'] }],
        llm: { models: ['default', 'smart'], budget: { tokens: 100000 } },
        secrets: [{ name: 'CHILD_ONLY', env: 'CHILD_ONLY', hosts: [`127.0.0.1:${evilPort}`] }],
        swarm: { canSpawn: ['kid-*'], maxDepth: 3 },
      },
      KID_PY(okPort, evilPort, outside),
    );
    // A child whose own manifest keeps a warm pool: its pooled sandboxes are prepared with that manifest's
    // (wider) network and mounts, so a narrowed child must never be handed one.
    await deploy(
      'pool-boss',
      {
        security: { network: { allow: [`127.0.0.1:${okPort}`] }, resources: { timeout: '3m' } },
        swarm: { canSpawn: ['kid-pooled'], maxDepth: 1 },
      },
      POOL_BOSS_PY,
    );
    await deploy(
      'kid-pooled',
      {
        security: {
          network: { allow: [`127.0.0.1:${okPort}`, `127.0.0.1:${evilPort}`] },
          filesystem: { write: [outside] },
        },
        scaling: { warm: 1 },
      },
      POOLED_KID_PY(okPort, evilPort, outside),
    );
    await deploy('kid-noop', {}, 'print("noop")\n');
    await deploy('kid-sleep', {}, 'import time\nprint("up", flush=True)\ntime.sleep(300)\n');
    await deploy('fan', { swarm: { canSpawn: ['kid-noop'], maxChildren: 2 } }, MANY_PY);
    await deploy(
      'tree',
      { swarm: { canSpawn: ['kid-noop'], maxChildren: 10, budget: { executions: 2 } } },
      MANY_PY,
    );
    await deploy(
      'sleepy',
      { security: { resources: { timeout: '8s' } }, swarm: { canSpawn: ['kid-sleep'] } },
      SLEEPY_PY,
    );
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    await upstream?.close();
    for (const host of hosts) host.close();
    dirs?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('attack: a greedy child gets no host, path, tool, model, secret, budget or depth its parent lacks', async () => {
    const boss = await exec('boss');
    assert.equal(boss.status, 'succeeded', JSON.stringify(boss) + server.stderr());
    const kidView = (boss.output as { kid: { id: string; status: string } }).kid;
    const kid = (await api('GET', `/v1/executions/${kidView.id}`)).json as {
      id: string;
      status: string;
      reason: string | null;
      output: Record<string, unknown>;
      parentId: string | null;
      rootId: string | null;
    };
    assert.equal(kid.parentId, boss.id);
    assert.equal(kid.rootId, boss.id);
    const logs = (await api('GET', `/v1/executions/${kid.id}/logs`)).json as { lines: { text: string }[] };
    const printed = logs.lines.filter((l) => l.text.startsWith('{')).map((l) => JSON.parse(l.text));
    const out = printed[0] as Record<string, unknown>;
    assert.ok(out, `the child printed its findings: ${JSON.stringify(kid)} ${JSON.stringify(logs)}`);
    assert.equal(out['ok'], 200, JSON.stringify(kid));
    assert.match(String(out['evil']), /^refused/, 'egress the parent cannot reach is refused in the child');
    assert.match(String(out['write']), /^refused/, 'a host path outside the parent’s is not writable');
    assert.equal(existsSync(join(outside, 'pwned.txt')), false);
    assert.equal(out['tool'], 'denied', 'cmd.run is not the parent’s');
    assert.equal(out['secret'], false, 'CHILD_ONLY is not the parent’s');
    assert.match(String(out['grandchild']), /^denied: .*deep/, 'maxDepth 1: no grandchild');
    // The parent spent its 30 tokens before the spawn: the child's first model call is refused and ends it.
    assert.ok(!printed.some((p) => Object.values(p).includes('answered')), JSON.stringify(printed));
    assert.equal(kid.status, 'killed');
    assert.match(String(kid.reason), /^budget/);
    const entries = await auditOf(kid.id);
    const narrowed = entries.find((e) => e.kind === 'swarm.narrowed')?.data;
    assert.ok(narrowed, 'the narrowing is on the child’s ledger');
    assert.ok((narrowed['network'] as string[]).includes(`127.0.0.1:${ports[1]}`));
    assert.deepEqual(narrowed['mounts'], [outside]);
    assert.deepEqual(narrowed['tools'], ['cmd.run']);
    assert.deepEqual(narrowed['models'], ['smart']);
    assert.deepEqual(narrowed['secrets'], ['CHILD_ONLY']);
    assert.ok(
      entries.some(
        (e) => e.kind === 'network.connect' && e.data['verdict'] === 'deny' && e.data['port'] === ports[1],
      ),
      'the refused connection is audited',
    );
    assert.ok(
      entries.some((e) => e.kind === 'tool.call' && JSON.stringify(e.data).includes('cmd.run')),
      'the refused tool call is audited',
    );
    const calls = entries.filter((e) => e.kind === 'llm.call').map((e) => e.data['status']);
    assert.ok(calls.includes('budget'), `the refused call is audited: ${JSON.stringify(calls)}`);
    assert.ok(!calls.includes('ok'), 'the child made no model call at all');
    assert.ok(
      entries.some((e) => e.kind === 'swarm.refused' && e.data['rule'] === 'spec.swarm.maxDepth'),
      'the refused grandchild is audited',
    );
    const shown = await cli(['swarm', 'show', boss.id], env());
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, new RegExp(`└─ ${kid.id}\\s+kid-greedy`));
    const json = await cli(['swarm', 'show', boss.id, '-o', 'json'], env());
    assert.deepEqual(JSON.parse(json.stdout), (await api('GET', `/v1/swarms/${boss.id}`)).json);
  });

  it('attack: a narrowed child is never handed a warm sandbox prepared with its own wider manifest', async () => {
    // The pool of kid-pooled is full before the spawn: a warm instance is there to be (wrongly) taken.
    await pollUntil('the warm pool of kid-pooled', async () => {
      const agent = (await api('GET', '/v1/agents/kid-pooled')).json as { pools?: { warm: number }[] };
      return (agent.pools ?? []).some((pool) => pool.warm >= 1);
    });
    const boss = await exec('pool-boss');
    assert.equal(boss.status, 'succeeded', JSON.stringify(boss) + server.stderr());
    const kidId = (boss.output as { kid: { id: string } }).kid.id;
    const logs = (await api('GET', `/v1/executions/${kidId}/logs`)).json as { lines: { text: string }[] };
    const out = logs.lines.filter((l) => l.text.startsWith('{')).map((l) => JSON.parse(l.text))[0] as
      | Record<string, unknown>
      | undefined;
    assert.ok(out, `the child printed its findings: ${JSON.stringify(logs)}`);
    assert.equal(out['ok'], 200, JSON.stringify(out));
    assert.match(String(out['evil']), /^refused/, 'egress only the child’s own manifest allows is refused');
    assert.match(
      String(out['write']),
      /^refused/,
      'a host path only the child’s own manifest grants is not there',
    );
    assert.equal(existsSync(join(outside, 'pooled.txt')), false);
    const entries = await auditOf(kidId);
    const started = entries.find((e) => e.kind === 'execution.started')?.data;
    assert.notEqual(started?.['warm'], true, 'the narrowed child started cold, in a sandbox made for it');
    assert.ok(
      entries.some(
        (e) => e.kind === 'network.connect' && e.data['verdict'] === 'deny' && e.data['port'] === ports[1],
      ),
      'the refused connection is audited',
    );
    // The agent's own executions still use its pool.
    const direct = await exec('kid-pooled');
    assert.equal(direct.status, 'succeeded');
    const directStarted = (await auditOf(direct.id)).find((e) => e.kind === 'execution.started')?.data;
    assert.equal(directStarted?.['warm'], true, 'an unnarrowed execution of kid-pooled took a warm sandbox');
  });

  it('attack: fan-out over maxChildren and a tree over budget.executions are refused and audited', async () => {
    for (const [agent, rule] of [
      ['fan', 'spec.swarm.maxChildren'],
      ['tree', 'spec.swarm.budget.executions'],
    ] as const) {
      const ran = await exec(agent);
      assert.equal(ran.status, 'succeeded', JSON.stringify(ran));
      const out = ran.output as string[];
      const denied = out.filter((o) => o.startsWith('denied: '));
      assert.ok(denied.length >= 1, `${agent}: ${JSON.stringify(out)}`);
      const refused = (await auditOf(ran.id)).filter((e) => e.kind === 'swarm.refused');
      assert.ok(
        refused.length === denied.length && refused.every((e) => e.data['rule'] === rule),
        `${agent}: ${JSON.stringify(refused)}`,
      );
      const tree = (await api('GET', `/v1/swarms/${ran.id}`)).json as { executions: unknown[] };
      assert.equal(tree.executions.length, 1 + out.length - denied.length);
    }
  });

  it('a parent that times out leaves no live descendant', async () => {
    const ran = await exec('sleepy');
    assert.equal(ran.status, 'timeout', JSON.stringify(ran));
    const settled = await pollUntil(
      'every descendant ended',
      async () => {
        const tree = (await api('GET', `/v1/swarms/${ran.id}`)).json as {
          executions: { id: string; status: string }[];
        };
        const below = tree.executions.slice(1);
        return below.length === 1 &&
          below.every((e) => ['killed', 'timeout', 'succeeded', 'failed'].includes(e.status))
          ? below
          : undefined;
      },
      60_000,
    );
    assert.equal(settled[0]?.status, 'killed', 'cascaded, not left to its own timeout');
  });
});
