/**
 * Edge nodes end to end (issue 15 item 5, docs/adr/0108-edge-node-protocol.md): a real `aegis server` and real
 * `aegis edge join` child processes (stopped by PID), a loopback TCP proxy between them that the test cuts, the real
 * sandbox on the edge. Placement by labels, logs/result/ledger arriving at the server, a cut shorter and one longer
 * than the grace period, an edge restart (adopt and reap), and the attacks: a used token, a revoked edge, an edge
 * that claims or forges another edge's execution.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { challengeText } from '../../src/domain/edge/protocol.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';
import {
  apiCall,
  cli,
  freshDatabase,
  killServers,
  pollUntil,
  ROOT,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

// biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field by the assertions
type Json = any;

/** Long enough for a killed edge to be restarted (a Node start on a loaded machine) within it. */
const GRACE = '15s';
const temps: string[] = [];
const edges = new Set<ChildProcess>();

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755); // the sandbox user reads bundles unpacked under an edge's data dir
  temps.push(dir);
  return dir;
}

/** An agent placed on `site=<site>` edges: logs `lines` ticks `sleep` s apart, tries one denied connection. */
function agentDir(name: string, site: string, extra = ''): string {
  const dir = tempDir('aegis-edge-agent-');
  writeFileSync(
    join(dir, 'agent.yaml'),
    `apiVersion: aegis.dev/v1
kind: Agent
metadata:
  name: ${name}
  version: 0.1.0
spec:
  runtime: { language: python, entrypoint: main.py }
  placement:
    labels: { site: ${site} }
  security:
    network:
      allow: ["example.invalid:443"]
${extra}`,
  );
  writeFileSync(
    join(dir, 'main.py'),
    `import json, sys, time, urllib.request
args = json.load(sys.stdin)
if args.get("probe"):
    try:
        urllib.request.urlopen("http://10.255.255.1/", timeout=5)
    except Exception as error:
        print(f"denied: {type(error).__name__}", flush=True)
for i in range(1, args.get("lines", 3) + 1):
    print(f"tick {i}", flush=True)
    time.sleep(args.get("sleep", 0))
print(json.dumps({"ran": "edge", "name": args.get("name")}))
`,
  );
  return join(dir, 'agent.yaml');
}

interface EdgeProcess {
  readonly child: ChildProcess;
  stderr(): string;
  /** Resolves with the exit code. */
  readonly exited: Promise<number | null>;
  kill9(): Promise<void>;
}

function startEdge(url: string, args: readonly string[]): EdgeProcess {
  const child = spawn(
    process.execPath,
    [join(ROOT, 'src/cli/bin.ts'), 'edge', 'join', url, '--capacity', '4', ...args],
    { cwd: ROOT, env: { ...process.env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  edges.add(child);
  let stderr = '';
  child.stdout!.on('data', (d) => (stderr += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      edges.delete(child);
      resolve(code);
    }),
  );
  return {
    child,
    stderr: () => stderr,
    exited,
    async kill9() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** The edge's exit code, failing the test if it still runs after `deadlineMs` (it is then killed by `after`). */
async function exitOf(edge: EdgeProcess, what: string, deadlineMs = 20_000): Promise<number | null> {
  await pollUntil(what, () => edge.child.exitCode !== null || edge.child.signalCode !== null, deadlineMs);
  return edge.exited;
}

after(async () => {
  await Promise.all(
    [...edges].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    ),
  );
  await killServers();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

describe('edge nodes (real server — PostgreSQL when the test cluster runs —, real edge processes, real sandbox)', {
  timeout: 240_000,
}, () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let proxy: TcpProxy;
  let cliEnv: NodeJS.ProcessEnv;
  /** The edge carrying site=lab, its data dir and node id (the first case enrols it). */
  let lab: EdgeProcess;
  let labData = '';
  let labId = '';
  let dropDatabase: (() => Promise<void>) | undefined;
  const api = (method: string, path: string, body?: unknown) =>
    apiCall(server.url, server.adminKey, method, path, body);

  async function token(labels: Record<string, string>): Promise<string> {
    const made = await api('POST', '/v1/edge/tokens', { labels, ttl: '10m' });
    assert.equal(made.status, 201, made.text);
    return (made.json as Json).token;
  }

  async function exec(agent: string, input: unknown): Promise<string> {
    const created = await api('POST', '/v1/executions', { agent, input });
    assert.equal(created.status, 202, created.text);
    return (created.json as Json).id;
  }

  async function finished(id: string, deadlineMs = 60_000): Promise<Json> {
    return pollUntil(
      `execution ${id} to end`,
      async () => {
        const got = (await api('GET', `/v1/executions/${id}`)).json as Json;
        return ['succeeded', 'failed', 'timeout', 'oom', 'killed'].includes(got.status) ? got : undefined;
      },
      deadlineMs,
    );
  }

  async function logs(id: string): Promise<string[]> {
    const page = (await api('GET', `/v1/executions/${id}/logs?limit=1000`)).json as Json;
    return page.lines.filter((l: Json) => l.stream === 'stdout').map((l: Json) => l.text);
  }

  async function auditOf(id: string): Promise<Json[]> {
    return ((await api('GET', `/v1/executions/${id}/audit`)).json as Json).entries;
  }

  /** Every ledger entry of the server (`aegis audit export`, as an operator reads it). */
  async function ledger(): Promise<Json[]> {
    const out = join(tempDir('aegis-edge-audit-'), 'export.jsonl');
    const exported = await cli(['audit', 'export', '--out', out], server.env);
    assert.equal(exported.code, 0, exported.stderr);
    return readFileSync(out, 'utf8')
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line))
      .filter((record) => record.type === 'entry' || record.kind !== undefined)
      .map((record) => record.entry ?? record);
  }

  async function nodes(): Promise<Json[]> {
    return ((await api('GET', '/v1/edge/nodes')).json as Json).nodes;
  }

  async function connectedEdge(site: string): Promise<Json> {
    return pollUntil(`an edge with site=${site} connected`, async () =>
      (await nodes()).find((n) => n.labels.site === site && n.connected && n.revokedAt === null),
    );
  }

  before(async () => {
    dirs = serverDirs();
    temps.push(join(dirs.home, '..'));
    // On PostgreSQL when the test cluster runs (npm test starts it): the cluster's claim path, SKIP LOCKED.
    const database = await freshDatabase();
    if (database) dropDatabase = database.drop;
    server = await startServerProcess({
      dirs,
      args: ['--edge-grace', GRACE],
      ...(database ? { databaseUrl: database.url } : {}),
    });
    cliEnv = { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey };
    const target = new URL(server.url);
    proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port) });
    for (const [name, site, extra] of [
      ['edge-hello', 'lab', ''],
      ['edge-other', 'far', ''],
      ['edge-mount', 'lab', '    filesystem:\n      read: [{ source: /usr/share/doc, target: /mnt/doc }]\n'],
    ] as const) {
      const deployed = await cli(['deploy', agentDir(name, site, extra)], cliEnv);
      assert.equal(deployed.code, 0, deployed.stderr);
    }
  });
  after(async () => {
    await proxy?.close();
    if (process.env['AEGIS_TEST_EDGE_SERVER_LOG']) {
      writeFileSync(process.env['AEGIS_TEST_EDGE_SERVER_LOG'], server?.stderr() ?? '');
    }
    await killServers();
    await dropDatabase?.();
  });

  it('enrols an edge with a single-use token; an execution placed by label runs there; logs, result and ledger arrive', async () => {
    const created = await cli(
      ['edge', 'token', 'create', '--label', 'site=lab', '--label', 'zone=a', '-o', 'json'],
      cliEnv,
    );
    assert.equal(created.code, 0, created.stderr);
    const tokenText = JSON.parse(created.stdout).token as string;
    const data = tempDir('aegis-edge-data-');
    labData = data;
    // --label only checks what the token grants (its labels are exactly the token's).
    const edge = startEdge(proxy.url, ['--token', tokenText, '--label', 'zone=a', '--data-dir', data]);
    const node = await connectedEdge('lab');
    labId = node.id;
    assert.deepEqual(node.labels, { site: 'lab', zone: 'a' });
    assert.deepEqual(node.runtimes, ['sandbox']);
    assert.equal(node.capacity, 4);
    // The key stays on the edge, 0600.
    assert.equal(readFileSync(join(data, 'key', 'node-ed25519.pem'), 'utf8').includes('PRIVATE KEY'), true);
    assert.equal(
      (await import('node:fs')).statSync(join(data, 'key', 'node-ed25519.pem')).mode & 0o777,
      0o600,
    );

    const id = await exec('edge-hello', { name: 'Ada', lines: 3, probe: true });
    const done = await finished(id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
    assert.equal(done.runtime, 'edge');
    assert.deepEqual(done.output, { ran: 'edge', name: 'Ada' });
    assert.deepEqual(
      (await logs(id)).filter((l) => l.startsWith('tick')),
      ['tick 1', 'tick 2', 'tick 3'],
    );
    const entries = await auditOf(id);
    const kinds = entries.map((e: Json) => e.kind);
    assert.equal(kinds.filter((k: string) => k === 'execution.finished').length, 1);
    assert.ok(kinds.includes('execution.started'));
    const denied = entries.find((e: Json) => e.kind === 'network.connect');
    assert.ok(denied, `a network.connect entry from the edge's egress proxy: ${kinds.join(',')}`);
    assert.equal(denied.data.verdict, 'deny');

    // The list the CLI shows.
    const ls = await cli(['edge', 'ls'], cliEnv);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, new RegExp(`${node.id}\\s+connected\\s+site=lab,zone=a`));

    // The same token again (a fresh data dir: a second machine) is refused, audited.
    const again = startEdge(proxy.url, ['--token', tokenText, '--data-dir', tempDir('aegis-edge-data-')]);
    const code = await exitOf(again, 'the second enrolment with a used token to be refused');
    assert.notEqual(code, 0);
    assert.match(again.stderr(), /unknown or already used enrolment token/);
    // The ledger is group-committed: an export sees an entry once it is durable (up to ~1 s later).
    await pollUntil('the used token refused in the ledger', async () =>
      (await ledger()).some((e) => e.kind === 'edge.refused' && /already used/.test(e.data.reason)),
    );
    assert.equal((await nodes()).length, 1, 'no second edge was registered');
    edge.child.kill('SIGTERM');
    assert.equal(await edge.exited, 0);
  });

  it('refuses, at placement, an agent an edge cannot run yet (host mounts), before anything is stored', async () => {
    const before = (await api('GET', '/v1/executions?limit=1000')).json as Json;
    const refused = await api('POST', '/v1/executions', { agent: 'edge-mount', input: {} });
    assert.equal(refused.status, 503, refused.text);
    assert.equal((refused.json as Json).error.code, 'RUNTIME_UNAVAILABLE');
    assert.match((refused.json as Json).error.message, /placed on an edge node.*spec\.security\.filesystem/);
    const afterList = (await api('GET', '/v1/executions?limit=1000')).json as Json;
    assert.equal(afterList.executions.length, before.executions.length);
  });

  it('reconnects with its key after a restart; a cut shorter than the grace loses and doubles nothing', async () => {
    lab = startEdge(proxy.url, ['--data-dir', labData]); // no token: the key in the data dir authenticates
    assert.equal((await connectedEdge('lab')).id, labId);
    const id = await exec('edge-hello', { name: 'cut', lines: 8, sleep: 0.4 });
    await pollUntil('the first log lines', async () => ((await logs(id)).length >= 2 ? true : undefined));
    proxy.cut();
    // The edge finishes on its own while cut off (its result lands in its data dir).
    await pollUntil('the edge to finish while cut off', () =>
      existsSync(join(labData, 'executions', id, 'result.json')),
    );
    assert.equal(((await api('GET', `/v1/executions/${id}`)).json as Json).status, 'running');
    proxy.restore();
    const done = await finished(id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
    assert.deepEqual(done.output, { ran: 'edge', name: 'cut' });
    assert.deepEqual(
      (await logs(id)).filter((l) => l.startsWith('tick')),
      Array.from({ length: 8 }, (_, i) => `tick ${i + 1}`),
      'every line once, in order',
    );
    const kinds = (await auditOf(id)).map((e: Json) => e.kind);
    assert.equal(kinds.filter((k: string) => k === 'execution.finished').length, 1);
    assert.equal(kinds.filter((k: string) => k === 'execution.started').length, 1);
    // Delivered and acked: the edge dropped its copy.
    await pollUntil(
      'the edge to drop the acked execution',
      () => !existsSync(join(labData, 'executions', id)),
    );
  });

  it('a cut longer than the grace fails the execution node-lost; the late result is refused and audited', async () => {
    const id = await exec('edge-hello', { name: 'late', lines: 4, sleep: 0.3 });
    await pollUntil('the first log line', async () => ((await logs(id)).length >= 1 ? true : undefined));
    proxy.cut();
    const lost = await finished(id, 30_000);
    assert.equal(lost.status, 'failed');
    assert.match(lost.reason, /^node-lost: edge edge_\w+ was away longer than 15000 ms/);
    await pollUntil('the edge to finish while cut off', () =>
      existsSync(join(labData, 'executions', id, 'result.json')),
    );
    proxy.restore();
    await connectedEdge('lab');
    const refused = await pollUntil('the late result refused in the ledger', async () =>
      (await ledger()).find(
        (e) =>
          e.kind === 'edge.refused' &&
          e.data.node === labId &&
          e.data.reason.startsWith(`late finished for execution ${id}`),
      ),
    );
    assert.match(refused.data.reason, /late finished .* refused: it ended node-lost/);
    const after = (await api('GET', `/v1/executions/${id}`)).json as Json;
    assert.equal(after.status, 'failed', 'the late result changed nothing');
    assert.equal((await auditOf(id)).filter((e: Json) => e.kind === 'execution.finished').length, 1);
    // The server said reap: the edge forgot it.
    await pollUntil('the edge to reap it', () => !existsSync(join(labData, 'executions', id)));
  });

  it("attacker: an enrolled edge cannot claim another edge's execution nor forge results; refused and audited", async () => {
    // The attacker holds a genuine enrolment (its own token and key) and speaks the protocol directly.
    const evilToken = await token({ site: 'evil' });
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/v1/edge/connect`);
    const frames: Json[] = [];
    ws.on('message', (data) => frames.push(JSON.parse(String(data))));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const challenge = await pollUntil('challenge', () => frames.find((f) => f.t === 'challenge'));
    const boot = 'evilboot';
    ws.send(
      JSON.stringify({
        t: 'enrol',
        token: evilToken,
        publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }),
        signature: sign(null, Buffer.from(challengeText(challenge.nonce, null)), privateKey).toString(
          'base64',
        ),
        labels: {}, // its labels are its token's (site=evil): it never matches lab
        runtimes: ['sandbox'],
        capacity: 1,
        boot,
      }),
    );
    const welcome = await pollUntil('welcome', () => frames.find((f) => f.t === 'welcome'));
    const evilId = welcome.nodeId as string;

    const victim = await exec('edge-hello', { name: 'victim', lines: 6, sleep: 0.4 });
    await pollUntil('the victim running', async () => ((await logs(victim)).length >= 1 ? true : undefined));
    const forged = {
      status: 'succeeded',
      exitCode: 0,
      reason: null,
      output: { forged: true },
      limitsHit: [],
      violations: [],
      releasedAtMs: Date.now(),
      finishedAtMs: Date.now(),
    };
    let seq = 0;
    const send = (body: Json) => ws.send(JSON.stringify({ t: 'msg', seq: ++seq, boot, body }));
    send({ t: 'accepted', id: victim });
    send({ t: 'log', id: victim, stream: 'stdout', text: 'tick 99 (forged)' });
    send({ t: 'finished', id: victim, result: forged });
    send({ t: 'finished', id: 'ex_never_sent_anywhere', result: forged });
    await pollUntil('acks for every forged report', () => frames.some((f) => f.t === 'ack' && f.seq === 4));

    const done = await finished(victim);
    assert.equal(done.status, 'succeeded');
    assert.deepEqual(done.output, { ran: 'edge', name: 'victim' }, "the real edge's result, not the forgery");
    assert.ok(!(await logs(victim)).some((l) => l.includes('forged')));
    const expected = [
      `accepted for execution ${victim}`,
      `log for execution ${victim}`,
      `finished for execution ${victim}`,
      'finished for execution ex_never_sent_anywhere',
    ];
    // Group-committed: poll until every refusal is durable, then name any that is missing.
    const refusals = await pollUntil('the forgeries refused in the ledger', async () => {
      const found = (await ledger()).filter((e) => e.kind === 'edge.refused' && e.data.node === evilId);
      return expected.every((what) => found.some((e) => e.data.reason.startsWith(what))) ? found : undefined;
    }).catch(async () => (await ledger()).filter((e) => e.kind === 'edge.refused' && e.data.node === evilId));
    for (const what of expected) {
      assert.ok(
        refusals.some((e) => e.data.reason.startsWith(what)),
        `refused and audited: ${what} — ${JSON.stringify(refusals.map((e) => e.data.reason))}`,
      );
    }
    ws.close();

    // Nor can it connect as the lab edge: its key does not sign for that node id.
    const impostor = new WebSocket(`${server.url.replace(/^http/, 'ws')}/v1/edge/connect`);
    const got: Json[] = [];
    impostor.on('message', (data) => got.push(JSON.parse(String(data))));
    const closed = new Promise<number>((resolve) => impostor.once('close', (code) => resolve(code)));
    const nonce = (await pollUntil('challenge', () => got.find((f) => f.t === 'challenge'))).nonce;
    impostor.send(
      JSON.stringify({
        t: 'auth',
        nodeId: labId,
        signature: sign(null, Buffer.from(challengeText(nonce, labId)), privateKey).toString('base64'),
        boot: 'x',
        capacity: 1,
      }),
    );
    assert.equal(await closed, 4401);
    assert.match(got.find((f) => f.t === 'error')?.message ?? '', /signature does not match/);
    await pollUntil('the impostor refused in the ledger', async () =>
      (await ledger()).some(
        (e) => e.kind === 'edge.refused' && e.data.node === labId && /signature/.test(e.data.reason),
      ),
    );
  });

  it('attacker: an edge declaring a label its token does not carry (zone=secure) is refused, audited, and never gets a placed agent', async () => {
    // A real edge process with a genuine token the admin made for site=evil, declaring zone=secure.
    const evilToken = await token({ site: 'evil' });
    const evil = startEdge(proxy.url, [
      '--token',
      evilToken,
      '--label',
      'zone=secure',
      '--data-dir',
      tempDir('aegis-edge-data-'),
    ]);
    const code = await exitOf(evil, 'the edge declaring an ungranted label to be refused');
    assert.notEqual(code, 0);
    assert.match(evil.stderr(), /labels zone=secure declared by the edge are not granted by enrolment token/);
    assert.match(evil.stderr(), /aegis edge token create --label site=evil --label zone=secure/);
    await pollUntil('the refused enrolment in the ledger', async () =>
      (await ledger()).some(
        (e) =>
          e.kind === 'edge.refused' && /zone=secure declared by the edge are not granted/.test(e.data.reason),
      ),
    );
    const before = await nodes();
    assert.ok(!before.some((n) => n.labels.zone === 'secure'), 'no edge carries zone=secure');
    // An agent placed on zone=secure is not sent to it: no edge carries that label, so it stays with the
    // server's own runtimes (which carry no zone label either) — and above all never reaches the evil edge.
    const dir = tempDir('aegis-edge-agent-');
    writeFileSync(
      join(dir, 'agent.yaml'),
      `apiVersion: aegis.dev/v1
kind: Agent
metadata:
  name: edge-secure
  version: 0.1.0
spec:
  runtime: { language: python, entrypoint: main.py }
  placement:
    labels: { zone: secure }
`,
    );
    writeFileSync(join(dir, 'main.py'), 'print("secret input handled")\n');
    assert.equal((await cli(['deploy', join(dir, 'agent.yaml')], cliEnv)).code, 0);
    const placed = await api('POST', '/v1/executions', { agent: 'edge-secure', input: { secret: 's3cr3t' } });
    if (placed.status === 202) {
      const got = (await api('GET', `/v1/executions/${(placed.json as Json).id}`)).json as Json;
      assert.notEqual(got.runtime, 'edge', `placed on an edge: ${JSON.stringify(got)}`);
    }
    assert.doesNotMatch(evil.stderr(), /enrolled as|connected to/);
  });

  it('restart: a result finished while cut off and the edge killed is replayed and adopted, once', async () => {
    const id = await exec('edge-hello', { name: 'replay', lines: 3, sleep: 0.3 });
    await pollUntil('the first log line', async () => ((await logs(id)).length >= 1 ? true : undefined));
    proxy.cut();
    await pollUntil('the edge to finish while cut off', () =>
      existsSync(join(labData, 'executions', id, 'result.json')),
    );
    await lab.kill9();
    proxy.restore();
    lab = startEdge(proxy.url, ['--data-dir', labData]);
    const done = await finished(id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
    assert.deepEqual(done.output, { ran: 'edge', name: 'replay' });
    assert.equal((await auditOf(id)).filter((e: Json) => e.kind === 'execution.finished').length, 1);
    assert.match(lab.stderr(), new RegExp(`adopted ${id}: replayed its result`));
    await pollUntil('the edge to drop it once acked', () => !existsSync(join(labData, 'executions', id)));
  });

  it('restart: an execution running when the edge was killed is reported lost, once', async () => {
    const id = await exec('edge-hello', { name: 'killed', lines: 60, sleep: 0.5 });
    await pollUntil('the first log line', async () => ((await logs(id)).length >= 1 ? true : undefined));
    await lab.kill9();
    lab = startEdge(proxy.url, ['--data-dir', labData]);
    const done = await finished(id);
    assert.equal(done.status, 'failed');
    assert.match(done.reason, /^node-lost: the edge restarted while it ran/);
    assert.equal((await auditOf(id)).filter((e: Json) => e.kind === 'execution.finished').length, 1);
    // Reported and acked: the edge forgot it (its sandbox was reaped at start, `runtime.reapOrphans`).
    await pollUntil(
      'the edge to drop the lost execution',
      () => !existsSync(join(labData, 'executions', id)),
    );
  });

  it('attacker: a revoked edge is cut off at once and cannot reconnect; both audited', async () => {
    await connectedEdge('lab');
    const revoked = await cli(['edge', 'revoke', labId], cliEnv);
    assert.equal(revoked.code, 0, revoked.stderr);
    // Cut at once: the edge process learns it on the open connection and stops.
    const code = await exitOf(lab, 'the revoked edge to be cut off');
    assert.notEqual(code, 0);
    assert.match(lab.stderr(), /revoked/);
    const node = (await nodes()).find((n) => n.id === labId);
    assert.equal(node.connected, false);
    assert.notEqual(node.revokedAt, null);
    // It tries again with its key: refused.
    const retry = startEdge(proxy.url, ['--data-dir', labData]);
    assert.notEqual(await exitOf(retry, "the revoked edge's reconnect to be refused"), 0);
    assert.match(retry.stderr(), /edge node was revoked at/);
    // Group-committed: wait until both entries are durable in the ledger an export reads.
    const entries = await pollUntil('the revocation and the refused reconnect in the ledger', async () => {
      const all = await ledger();
      const both =
        all.some((e) => e.kind === 'edge.revoked' && e.data.node === labId) &&
        all.some((e) => e.kind === 'edge.refused' && e.data.node === labId && /revoked/.test(e.data.reason));
      return both ? all : undefined;
    });
    const revokedEntry = entries.find((e) => e.kind === 'edge.revoked' && e.data.node === labId);
    assert.equal(revokedEntry?.data.connected, true);
  });
});

describe("edge nodes: the issue's 30 s outage (default-sized grace)", { timeout: 120_000 }, () => {
  it('an edge cut off for 30 s finishes its work and reconciles: nothing lost, nothing doubled', async () => {
    const dirs = serverDirs();
    temps.push(join(dirs.home, '..'));
    const server = await startServerProcess({ dirs, args: ['--edge-grace', '45s'] });
    const api = (method: string, path: string, body?: unknown) =>
      apiCall(server.url, server.adminKey, method, path, body);
    const cliEnv = { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey };
    const target = new URL(server.url);
    const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port) });
    try {
      assert.equal((await cli(['deploy', agentDir('edge-outage', 'lab')], cliEnv)).code, 0);
      const token = ((await api('POST', '/v1/edge/tokens', { labels: { site: 'lab' } })).json as Json).token;
      const data = tempDir('aegis-edge-data-');
      startEdge(proxy.url, ['--token', token, '--data-dir', data]);
      await pollUntil('the edge connected', async () =>
        (((await api('GET', '/v1/edge/nodes')).json as Json).nodes as Json[]).some((n) => n.connected),
      );
      const created = await api('POST', '/v1/executions', {
        agent: 'edge-outage',
        input: { name: 'outage', lines: 12, sleep: 0.5 },
      });
      const id = (created.json as Json).id as string;
      const lines = async () =>
        (((await api('GET', `/v1/executions/${id}/logs?limit=1000`)).json as Json).lines as Json[])
          .filter((l) => l.stream === 'stdout')
          .map((l) => l.text as string);
      await pollUntil('the first log line', async () => ((await lines()).length >= 1 ? true : undefined));
      proxy.cut();
      const cutAt = Date.now();
      await pollUntil('the edge to finish while cut off', () =>
        existsSync(join(data, 'executions', id, 'result.json')),
      );
      // The outage itself is the scenario: it lasts 30 s whatever the edge does meanwhile.
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, 30_000 - (Date.now() - cutAt))));
      assert.equal(((await api('GET', `/v1/executions/${id}`)).json as Json).status, 'running');
      proxy.restore();
      const done = await pollUntil('the execution to end', async () => {
        const got = (await api('GET', `/v1/executions/${id}`)).json as Json;
        return got.status === 'running' ? undefined : got;
      });
      assert.equal(done.status, 'succeeded', JSON.stringify(done));
      assert.deepEqual(
        (await lines()).filter((l) => l.startsWith('tick')),
        Array.from({ length: 12 }, (_, i) => `tick ${i + 1}`),
      );
      const entries = ((await api('GET', `/v1/executions/${id}/audit`)).json as Json).entries as Json[];
      assert.equal(entries.filter((e) => e.kind === 'execution.finished').length, 1);
    } finally {
      await proxy.close();
    }
  });
});
