/**
 * /metrics (issue 9 item 7): it needs a key with the `read` scope (the README promises only /healthz and /readyz are
 * open), its text passes `promtool check metrics` without warnings, and Debian's Prometheus, configured with
 * examples/prometheus/prometheus.yml, scrapes it with its key (target up).
 *
 * promtool and prometheus come from Debian's `prometheus` package, which scripts/setup.sh installs (npm test runs
 * it). Without them the promtool/prometheus tests skip saying so — except under CI, where they fail.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  cli,
  killServers,
  pollUntil,
  ROOT,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

function missing(binary: string): string | false {
  const found = spawnSync(binary, ['--version'], { stdio: 'ignore' }).status === 0;
  if (found) return false;
  const message = `${binary} is not installed (Debian: apt-get install prometheus; npm run setup does it)`;
  if (process.env['CI']) throw new Error(`${message} — required under CI`);
  return message;
}

/** A port nobody listens on right now (Prometheus has no port-0 report, so we pick one). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('/metrics', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let readKey = '';
  const temps: string[] = [];
  let prometheus: ChildProcess | undefined;

  before(async () => {
    dirs = serverDirs();
    server = await startServerProcess({ dirs });
    const created = await fetch(`${server.url}/v1/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${server.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'prometheus', scopes: ['read'] }),
    });
    assert.equal(created.status, 201);
    readKey = ((await created.json()) as { key: string }).key;
  });
  after(async () => {
    if (prometheus && prometheus.exitCode === null && prometheus.signalCode === null) {
      const exited = new Promise((resolve) => prometheus!.once('exit', resolve));
      prometheus.kill('SIGKILL');
      await exited;
    }
    if (server) await server.stop();
    await killServers();
    dirs?.cleanup();
    for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  });

  const scrape = (authorization?: string) =>
    fetch(`${server.url}/metrics`, { headers: authorization ? { authorization } : {} });

  it('needs a key with the read scope; health and readiness stay open', async () => {
    const none = await scrape();
    assert.equal(none.status, 401, await none.text());
    const bad = await scrape(`Bearer aegis_${'0'.repeat(64)}`);
    assert.equal(bad.status, 401);
    const ok = await scrape(`Bearer ${readKey}`);
    assert.equal(ok.status, 200);
    assert.match(await ok.text(), /^# HELP aegis_/m);
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    assert.equal((await fetch(`${server.url}/readyz`)).status, 200);
    const doc = (await (await fetch(`${server.url}/openapi.json`)).json()) as {
      paths: Record<string, { get: { security?: unknown[] } }>;
    };
    assert.equal(doc.paths['/metrics']?.get.security, undefined, '/metrics is not documented as open');
    assert.deepEqual(doc.paths['/healthz']?.get.security, []);
  });

  it('passes promtool check metrics without warnings', { skip: missing('promtool') }, async () => {
    const text = await (await scrape(`Bearer ${readKey}`)).text();
    const checked = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(checked.status, 0, `promtool: ${checked.stdout}${checked.stderr}`);
    assert.equal(`${checked.stdout}${checked.stderr}`.trim(), '', 'promtool printed warnings');
  });

  it("Debian's prometheus scrapes it with the example config and a read key", {
    skip: missing('prometheus'),
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-prom-'));
    temps.push(dir);
    const keyFile = join(dir, 'aegis.key');
    writeFileSync(keyFile, `${readKey}\n`, { mode: 0o600 });
    const target = new URL(server.url).host;
    const config = readFileSync(join(ROOT, 'examples/prometheus/prometheus.yml'), 'utf8')
      .replace('scrape_interval: 15s', 'scrape_interval: 1s')
      .replace('credentials_file: /etc/prometheus/aegis.key', `credentials_file: ${keyFile}`)
      .replace("'127.0.0.1:8088'", `'${target}'`);
    assert.ok(config.includes(keyFile) && config.includes(target), 'the example config changed shape');
    const configFile = join(dir, 'prometheus.yml');
    writeFileSync(configFile, config);
    if (!missing('promtool')) {
      const checked = spawnSync('promtool', ['check', 'config', configFile], { encoding: 'utf8' });
      assert.equal(checked.status, 0, `${checked.stdout}${checked.stderr}`);
    }
    const port = await freePort();
    let log = '';
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${configFile}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    prometheus.stdout!.on('data', (d) => (log += d));
    prometheus.stderr!.on('data', (d) => (log += d));
    type Target = { labels: { job: string }; health: string; lastError: string };
    const up = await pollUntil(
      `prometheus to scrape the aegis target (log: ${log.slice(-500)})`,
      async () => {
        try {
          const response = await fetch(`http://127.0.0.1:${port}/api/v1/targets`);
          const body = (await response.json()) as { data: { activeTargets: Target[] } };
          const aegis = body.data.activeTargets.find((t) => t.labels.job === 'aegis');
          return aegis && aegis.health !== 'unknown' ? aegis : undefined;
        } catch {
          return undefined; // not listening yet
        }
      },
      60_000,
    );
    assert.equal(up.health, 'up', `scrape failed: ${up.lastError}`);
  });

  it('a live sandbox shows its CPU, memory and processes in the API and /metrics; they go when it ends', async () => {
    const admin = { authorization: `Bearer ${server.adminKey}`, 'content-type': 'application/json' };
    const agentDir = mkdtempSync(join(tmpdir(), 'aegis-metrics-live-'));
    temps.push(agentDir);
    writeFileSync(
      join(agentDir, 'agent.yaml'),
      'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: metered }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n',
    );
    writeFileSync(join(agentDir, 'main.sh'), 'echo unused\n');
    const deployed = await cli(['deploy', agentDir], {
      ...server.env,
      AEGIS_SERVER: server.url,
      AEGIS_API_KEY: server.adminKey,
    });
    assert.equal(deployed.code, 0, deployed.stderr);
    const created = await fetch(`${server.url}/v1/sandboxes`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({ agent: 'metered' }),
    });
    assert.equal(created.status, 201);
    const id = ((await created.json()) as { id: string }).id;
    // Three sleepers beside the exec agent, and a burst of CPU.
    const started = await fetch(`${server.url}/v1/sandboxes/${id}/commands`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({
        cmd: 'sleep 600 & sleep 600 & sleep 600 & i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; wait',
        background: true,
      }),
    });
    assert.equal(started.status, 201);
    type Usage = { cpuUsageNs: number | null; memoryBytes: number | null; pids: number | null };
    const usage = await pollUntil('the sandbox to hold its sleepers', async () => {
      const view = (await (await fetch(`${server.url}/v1/sandboxes/${id}`, { headers: admin })).json()) as {
        usage: Usage;
      };
      return (view.usage.pids ?? 0) >= 4 ? view.usage : undefined;
    });
    assert.ok((usage.memoryBytes ?? 0) > 0, `memory: ${JSON.stringify(usage)}`);
    const series = (text: string, name: string) =>
      Number(
        new RegExp(`^${name}\\{sandbox="${id}",agent="metered"\\} (\\S+)$`, 'm').exec(text)?.[1] ??
          Number.NaN,
      );
    const text = await (await scrape(`Bearer ${readKey}`)).text();
    assert.ok(series(text, 'aegis_live_sandbox_pids') >= 4, text);
    assert.ok(series(text, 'aegis_live_sandbox_memory_bytes') > 0);
    assert.ok(series(text, 'aegis_live_sandbox_cpu_seconds_total') > 0);
    assert.match(text, /^aegis_live_sandboxes\{status="running"\} 1$/m);
    if (!missing('promtool')) {
      const checked = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
      assert.equal(`${checked.stdout}${checked.stderr}`.trim(), '', 'promtool printed warnings');
      assert.equal(checked.status, 0);
    }
    const deleted = await fetch(`${server.url}/v1/sandboxes/${id}`, {
      method: 'DELETE',
      headers: { authorization: admin.authorization },
    });
    assert.equal(deleted.status, 200);
    const after = await (await scrape(`Bearer ${readKey}`)).text();
    assert.ok(!after.includes(id), 'an ended sandbox has no series');
  });
});
