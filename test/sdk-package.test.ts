/**
 * The SDK as users get it: `npm pack` in sdk/ (its prepack compiles to dist/ with tsc), the tarball installed into
 * a fresh project outside the repo, then — on the system Node when it is ≥ 20 (the package's floor), else this one —
 * a plain ESM script that packs an agent directory with packAgent, deploys it, executes it against a real server
 * and follows its logs over SSE; and a TypeScript consumer type-checked against the shipped .d.ts.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import {
  killServers,
  ROOT,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './server/harness.ts';

const run = promisify(execFile);
const SDK = join(ROOT, 'sdk');

/** The system's Node when it is 20 or newer (what a user of the package has), else the Node running this test. */
function consumerNode(): { path: string; version: string } {
  for (const path of ['/usr/bin/node', '/usr/local/bin/node']) {
    if (!existsSync(path)) continue;
    const version = execFileSync(path, ['--version'], { encoding: 'utf8' }).trim();
    if (Number(/^v(\d+)/.exec(version)?.[1]) >= 20) return { path, version };
  }
  return { path: process.execPath, version: process.version };
}

const AGENT_YAML = `apiVersion: aegis.dev/v1
kind: Agent
metadata:
  name: sdk-ticker
  version: 1.0.0
spec:
  runtime: { language: python, entrypoint: main.py }
`;
const TICKER = `import json, sys
n = json.load(sys.stdin).get("lines", 3)
for i in range(1, n + 1):
    print(f"tick {i}", flush=True)
print(json.dumps({"ticks": n}))
`;

const CONSUMER_JS = `import { AegisApiError, AegisClient, packAgent } from '@aegis/sdk';
const [server, dir] = process.argv.slice(2);
const aegis = new AegisClient({ server, apiKey: process.env.AEGIS_API_KEY });
const packed = await packAgent(dir);
const deployed = await aegis.deployAgent(dir);
let execution = await aegis.createExecution({ agent: 'sdk-ticker', input: { lines: 3 } });
const lines = [];
for await (const item of aegis.followLogs(execution.id)) {
  if (item.type === 'line') lines.push(item.line.text);
  else execution = item.execution;
}
let notFound;
try {
  await aegis.getAgent('no-such-agent');
} catch (error) {
  notFound = error instanceof AegisApiError ? { code: error.code, status: error.status } : String(error);
}
console.log(JSON.stringify({
  node: process.version,
  packed: { files: packed.files, digest: packed.digest },
  deployed: { created: deployed.created, digest: deployed.bundle.digest, revision: deployed.revision.revision },
  status: execution.status,
  output: execution.output,
  lines,
  notFound,
}));
`;

const CONSUMER_TS = `import { AegisClient, type Execution, isTerminalStatus, type PackedAgent, packAgent } from '@aegis/sdk';
const aegis = new AegisClient({ server: 'http://127.0.0.1:1' });
export async function main(dir: string): Promise<Execution['status']> {
  const bundle: PackedAgent = await packAgent(dir);
  await aegis.deploy(bundle.bytes);
  const execution = await aegis.createExecution({ agent: 'x' }, { wait: '30s' });
  return isTerminalStatus(execution.status) ? execution.status : 'running';
}
`;

describe('the packed SDK in a fresh project', { timeout: 240_000 }, () => {
  let project: string;
  let tarball: string;
  let dirs: ServerDirs;
  let server: ServerProcess;

  before(async () => {
    project = mkdtempSync(join(tmpdir(), 'aegis-sdk-consumer-'));
    const packs = join(project, 'packs');
    mkdirSync(packs);
    await run('npm', ['pack', '--pack-destination', packs, '--loglevel=error'], { cwd: SDK });
    const [file] = readdirSync(packs).filter((name) => name.endsWith('.tgz'));
    assert.ok(file, 'npm pack wrote a tarball');
    tarball = join(packs, file);
    const app = join(project, 'app');
    mkdirSync(app);
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({ name: 'consumer', private: true, type: 'module' }),
    );
    await run(
      'npm',
      ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', tarball],
      {
        cwd: app,
      },
    );
    dirs = serverDirs();
    server = await startServerProcess({ dirs });
  });

  after(async () => {
    await killServers();
    dirs?.cleanup();
    if (project) rmSync(project, { recursive: true, force: true });
  });

  it('holds compiled JS and .d.ts only — no TypeScript sources, tests or Python', async () => {
    const { stdout } = await run('tar', ['-tzf', tarball]);
    const files = stdout.trim().split('\n').sort();
    assert.ok(files.includes('package/dist/index.js') && files.includes('package/dist/index.d.ts'), stdout);
    for (const file of files) {
      assert.match(file, /^package\/(package\.json|README\.md|dist\/[\w-]+\.(js|d\.ts))$/, file);
      assert.doesNotMatch(file, /\.test\./, file);
    }
  });

  it('deploys with packAgent, executes and follows the logs on the system Node', async () => {
    const agent = join(project, 'agent');
    mkdirSync(agent);
    writeFileSync(join(agent, 'agent.yaml'), AGENT_YAML);
    writeFileSync(join(agent, 'main.py'), TICKER);
    writeFileSync(join(agent, 'notes.log'), 'left out');
    writeFileSync(join(agent, '.aegisignore'), '*.log\n');
    writeFileSync(join(project, 'app', 'use.mjs'), CONSUMER_JS);
    const node = consumerNode();
    const { stdout } = await run(node.path, ['use.mjs', server.url, agent], {
      cwd: join(project, 'app'),
      env: { PATH: process.env['PATH'] ?? '', AEGIS_API_KEY: server.adminKey },
    });
    const result = JSON.parse(stdout);
    assert.equal(result.node, node.version);
    assert.equal(result.packed.files, 3, 'agent.yaml, main.py, .aegisignore — notes.log is left out');
    assert.equal(result.deployed.created, true);
    assert.equal(result.deployed.digest, result.packed.digest);
    assert.equal(result.status, 'succeeded');
    assert.deepEqual(result.output, { ticks: 3 });
    assert.deepEqual(
      result.lines.filter((line: string) => line.startsWith('tick')),
      ['tick 1', 'tick 2', 'tick 3'],
    );
    assert.deepEqual(result.notFound, { code: 'NOT_FOUND', status: 404 });
  });

  it('type-checks a TypeScript consumer against the shipped .d.ts', async () => {
    const app = join(project, 'app');
    writeFileSync(join(app, 'consumer.ts'), CONSUMER_TS);
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'es2022',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          strict: true,
          noEmit: true,
          types: ['node'],
          typeRoots: [join(ROOT, 'node_modules/@types')],
        },
        files: ['consumer.ts'],
      }),
    );
    await run(join(ROOT, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.json'], { cwd: app }).catch(
      (error: { stdout?: string }) => assert.fail(`tsc: ${error.stdout ?? String(error)}`),
    );
  });
});
