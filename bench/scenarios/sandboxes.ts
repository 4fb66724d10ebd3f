/**
 * Scenario `sandboxes`: live sandboxes (POST /v1/sandboxes, app/live-sandboxes.ts) through a real `aegis server`
 * child process and the TypeScript SDK (keep-alive), beside `docker exec` through the Engine API when a dockerd
 * answers (bench/lib/peers.ts: never started here).
 *
 * - create → first exec: createSandbox, then runCommand(['true']) to its exit — cold, and on a second server with
 *   `--warm-sandboxes 2` once its pool holds one (waited for, untimed: what a user with a pool sees);
 *   docker: create + start a `sleep` container, then exec `true` to its exit.
 * - exec round trip: runCommand(['true']) in one long-lived sandbox; docker: exec create + start + inspect in one
 *   running container.
 * Variants interleave run by run. Nothing is asserted: a run fails only when what it runs fails.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { AegisClient } from '../../sdk/index.ts';
import { FIXTURES } from '../lib/child.ts';
import { type Absent, DOCKER_IMAGE, dockerApi, isAbsent, openDocker } from '../lib/peers.ts';
import type { BenchOptions, Scenario, ScenarioReport } from '../lib/scenario.ts';
import { formatMs, type Summary, summarize } from '../lib/stats.ts';
import { renderMarkdown, renderText, type Table } from '../lib/table.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const CLI_ENTRY = join(ROOT, 'src/cli/bin.ts');
const START_TIMEOUT_MS = 60_000;

export interface Server {
  readonly url: string;
  readonly adminKey: string;
  stop(): Promise<void>;
}

export async function startServer(
  home: string,
  bundles: string,
  args: readonly string[] = [],
): Promise<Server> {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      CLI_ENTRY,
      'server',
      '--listen',
      '127.0.0.1:0',
      '--no-socket',
      '--rate',
      '100000/s,burst=100000',
      ...args,
    ],
    {
      cwd: ROOT,
      env: { ...process.env, AEGIS_HOME: home, AEGIS_BUNDLE_DIR: bundles, AEGIS_DATABASE_URL: '' },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let log = '';
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  const url = await new Promise<string>((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`aegis server did not listen:\n${log}`)), START_TIMEOUT_MS);
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      log = (log + chunk).slice(-16_384);
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        done(match[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`aegis server exited with ${code}:\n${log}`));
    });
  });
  return {
    url,
    adminKey: readFileSync(join(home, 'admin.key'), 'utf8').trim(),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** One Engine API call that must answer one of `ok`. */
async function docker(method: string, path: string, body?: object, ok = [200, 201, 204]): Promise<string> {
  const answer = await dockerApi(method, path, body);
  if (!ok.includes(answer.status))
    throw new Error(`docker ${method} ${path}: HTTP ${answer.status} ${answer.body}`);
  return answer.body;
}

async function dockerContainer(): Promise<string> {
  const created = JSON.parse(
    await docker('POST', '/containers/create', {
      Image: DOCKER_IMAGE,
      Cmd: ['sleep', '600'],
      NetworkDisabled: true,
      HostConfig: { NetworkMode: 'none', AutoRemove: false },
    }),
  ) as { Id: string };
  await docker('POST', `/containers/${created.Id}/start`);
  return created.Id;
}

async function dockerExec(container: string): Promise<void> {
  const exec = JSON.parse(
    await docker('POST', `/containers/${container}/exec`, {
      Cmd: ['/bin/busybox', 'true'],
      AttachStdout: true,
      AttachStderr: true,
    }),
  ) as { Id: string };
  await docker('POST', `/exec/${exec.Id}/start`, { Detach: false, Tty: false });
  const inspect = JSON.parse(await docker('GET', `/exec/${exec.Id}/json`)) as { ExitCode: number | null };
  if (inspect.ExitCode !== 0) throw new Error(`docker exec true exited ${inspect.ExitCode}`);
}

export const sandboxes: Scenario = {
  name: 'sandboxes',
  description:
    'live sandboxes: create → first exec, exec round trip (beside docker exec when dockerd answers)',
  async run(options: BenchOptions): Promise<ScenarioReport> {
    const { log } = options;
    const runs = Math.max(5, Math.round(options.runs / 4));
    const workDir = mkdtempSync(join(tmpdir(), 'aegis-bench-sandboxes-'));
    chmodSync(workDir, 0o755);
    mkdirSync(join(workDir, 'home'), { mode: 0o700 });
    let server: Server | undefined;
    let warmServer: Server | undefined;
    const containers: string[] = [];
    try {
      mkdirSync(join(workDir, 'home-warm'), { mode: 0o700 });
      server = await startServer(join(workDir, 'home'), join(workDir, 'bundles'));
      warmServer = await startServer(join(workDir, 'home-warm'), join(workDir, 'bundles-warm'), [
        '--warm-sandboxes',
        '2',
      ]);
      const client = new AegisClient({ server: server.url, apiKey: server.adminKey, retry: { attempts: 1 } });
      const warmClient = new AegisClient({
        server: warmServer.url,
        apiKey: warmServer.adminKey,
        retry: { attempts: 1 },
      });
      const agent = (await client.deployAgent(join(FIXTURES, 'python'))).agent.name;
      await warmClient.deployAgent(join(FIXTURES, 'python'));
      const warmReady = async () => {
        const deadline = Date.now() + START_TIMEOUT_MS;
        for (;;) {
          const text = await (
            await fetch(`${warmServer!.url}/metrics`, {
              headers: { authorization: `Bearer ${warmServer!.adminKey}` },
            })
          ).text();
          if (/^aegis_live_sandboxes\{status="warm"\} [1-9]/m.test(text)) return;
          if (Date.now() > deadline) throw new Error('the warm sandbox pool did not fill');
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      };
      // The pool fills after the revision's first sandbox.
      await warmClient.deleteSandbox((await warmClient.createSandbox({ agent })).id);
      const dockerPeer: { version: string } | Absent = await openDocker();
      if (isAbsent(dockerPeer)) log(`  docker absent: ${dockerPeer.absent}`);

      const samples = new Map<string, number[]>();
      const add = (variant: string, ms: number) =>
        samples.set(variant, [...(samples.get(variant) ?? []), ms]);
      const createFirstExec = async (via: AegisClient) => {
        const t0 = performance.now();
        const sandbox = await via.createSandbox({ agent });
        await via.runCommand(sandbox.id, { cmd: ['true'] });
        const ms = performance.now() - t0;
        await via.deleteSandbox(sandbox.id);
        return ms;
      };
      const warm = await client.createSandbox({ agent, timeout: '1h' });
      const dockerWarm = isAbsent(dockerPeer) ? undefined : await dockerContainer();
      if (dockerWarm) containers.push(dockerWarm);
      for (let i = 0; i < options.warmup + runs; i++) {
        const measured = i >= options.warmup;
        const create = await createFirstExec(client);
        await warmReady();
        const createWarm = await createFirstExec(warmClient);
        let t0 = performance.now();
        await client.runCommand(warm.id, { cmd: ['true'] });
        const exec = performance.now() - t0;
        if (measured) {
          add('aegis: create → first exec', create);
          add('aegis: create → first exec, warm pool', createWarm);
          add('aegis: exec round trip', exec);
        }
        if (dockerWarm) {
          t0 = performance.now();
          const container = await dockerContainer();
          await dockerExec(container);
          const dockerCreate = performance.now() - t0;
          await docker('DELETE', `/containers/${container}?force=1`);
          t0 = performance.now();
          await dockerExec(dockerWarm);
          const dockerExecMs = performance.now() - t0;
          if (measured) {
            add('docker: create+start → first exec', dockerCreate);
            add('docker: exec round trip', dockerExecMs);
          }
        }
        if (measured && (i - options.warmup) % 10 === 9) log(`  ${i - options.warmup + 1}/${runs}`);
      }
      await client.deleteSandbox(warm.id);

      const summaries = new Map<string, Summary>(
        [...samples].map(([name, values]) => [name, summarize(values)]),
      );
      const table: Table = {
        headers: ['variant', 'n', 'p50 ms', 'p99 ms', 'mean ms'],
        rows: [...summaries].map(([name, s]) => [
          name,
          String(s.n),
          formatMs(s.p50),
          formatMs(s.p99),
          formatMs(s.mean),
        ]),
      };
      const note = isAbsent(dockerPeer)
        ? `docker: not measured (${dockerPeer.absent})`
        : `docker ${dockerPeer.version}, Engine API over its unix socket, image ${DOCKER_IMAGE}`;
      return {
        text: `${renderText(table)}\n${note}\n`,
        docs: [
          {
            marker: 'sandboxes',
            markdown: `${renderMarkdown(table)}\n\n${note}. Command: \`npm run bench -- sandboxes\`.\n`,
          },
        ],
        raw: {
          runs,
          samples: Object.fromEntries(samples),
          summaries: Object.fromEntries(summaries),
          docker: note,
        },
      };
    } finally {
      for (const container of containers)
        await docker('DELETE', `/containers/${container}?force=1`).catch(() => {});
      await server?.stop();
      await warmServer?.stop();
      rmSync(workDir, { recursive: true, force: true });
    }
  },
};
