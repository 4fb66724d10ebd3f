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

const GRACE = '6s';
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

describe('edge nodes (real server, real edge processes, real sandbox)', { timeout: 240_000 }, () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let proxy: TcpProxy;
  let cliEnv: NodeJS.ProcessEnv;
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
    server = await startServerProcess({ dirs, args: ['--edge-grace', GRACE] });
    cliEnv = { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey };
    const target = new URL(server.url);
    proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port) });
    for (const [name, site, extra] of [
      ['edge-hello', 'lab', ''],
      ['edge-other', 'far', ''],
      [
        'edge-mount',
        'lab',
        '    filesystem:\n      read: [{ source: /usr/share/doc, target: /mnt/doc }]\n',
      ],
    ] as const) {
      const deployed = await cli(['deploy', agentDir(name, site, extra)], cliEnv);
      assert.equal(deployed.code, 0, deployed.stderr);
    }
  });
  after(async () => {
    await proxy?.close();
  });

  it('enrols an edge with a single-use token; an execution placed by label runs there; logs, result and ledger arrive', async () => {
    const created = await cli(['edge', 'token', 'create', '--label', 'site=lab', '-o', 'json'], cliEnv);
    assert.equal(created.code, 0, created.stderr);
    const tokenText = JSON.parse(created.stdout).token as string;
    const data = tempDir('aegis-edge-data-');
    const edge = startEdge(proxy.url, ['--token', tokenText, '--label', 'zone=a', '--data-dir', data]);
    const node = await connectedEdge('lab');
    assert.deepEqual(node.labels, { site: 'lab', zone: 'a' });
    assert.deepEqual(node.runtimes, ['sandbox']);
    assert.equal(node.capacity, 4);
    // The key stays on the edge, 0600.
    assert.equal(readFileSync(join(data, 'key', 'node-ed25519.pem'), 'utf8').includes('PRIVATE KEY'), true);
    assert.equal((await import('node:fs')).statSync(join(data, 'key', 'node-ed25519.pem')).mode & 0o777, 0o600);

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
    const code = await again.exited;
    assert.notEqual(code, 0);
    assert.match(again.stderr(), /unknown or already used enrolment token/);
    const refused = (await ledger()).filter((e) => e.kind === 'edge.refused');
    assert.ok(refused.some((e) => /already used/.test(e.data.reason)), JSON.stringify(refused));
    assert.equal((await nodes()).length, 1, 'no second edge was registered');
    edge.child.kill('SIGTERM');
    assert.equal(await edge.exited, 0);
  });
});
