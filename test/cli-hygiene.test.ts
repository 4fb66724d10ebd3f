/**
 * `validate` is as strict as `run` (same checks, same exit code, nothing recorded), `aegis` on PATH after setup,
 * and the CLI's manners: completion, colour only on a terminal and never with NO_COLOR, -q, a bad AEGIS_HOME.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { type CliResult, cli, ROOT } from './server/harness.ts';

const temps: string[] = [];
after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});
function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

function run(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  const child = spawn(command, args, {
    cwd: options.cwd ?? ROOT,
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((r) => child.on('close', (code) => r({ code, stdout, stderr })));
}

const HEADER = 'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata:\n  name: strict\n';

function agent(spec: string, files: Record<string, string> = { 'main.py': 'print(1)\n' }): string {
  const dir = tempDir('aegis-strict-agent-');
  writeFileSync(join(dir, 'agent.yaml'), `${HEADER}spec:\n${spec}`);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return join(dir, 'agent.yaml');
}

describe('validate ≡ run', { concurrency: true }, () => {
  const cases: [name: string, manifest: () => string, code: string, exit: number, message: RegExp][] = [
    [
      'the entrypoint does not exist',
      () => agent('  runtime: { language: python, entrypoint: main.py }\n', {}),
      'MANIFEST_INVALID',
      2,
      /agent\.yaml:6:\d+ \(spec\.runtime\.entrypoint\): entrypoint main\.py does not exist/,
    ],
    [
      'language and extension disagree',
      () => agent('  runtime: { language: python, entrypoint: main.js }\n', { 'main.js': '1\n' }),
      'MANIFEST_INVALID',
      2,
      /spec\.runtime\.language\): language is python, but the entrypoint main\.js is a node file — did you mean "node"\?/,
    ],
    [
      'an isolation this host cannot run',
      () => agent('  runtime: { language: python, entrypoint: main.py }\n  isolation: firecracker\n'),
      'RUNTIME_UNAVAILABLE',
      3,
      /isolation "firecracker" is not available on this host[\s\S]*aegis doctor/,
    ],
    [
      'a protected host path',
      () =>
        agent(
          '  runtime: { language: python, entrypoint: main.py }\n  security:\n    filesystem:\n      read: [/home]\n',
        ),
      'POLICY_DENIED',
      2,
      /spec\.security\.filesystem\.read\[0\]\): \/home may never be mounted into a sandbox/,
    ],
    [
      'a secret that is not set',
      () =>
        agent(
          '  runtime: { language: python, entrypoint: main.py }\n  secrets:\n    - { name: NOT_SET_ANYWHERE, env: KEY, hosts: ["127.0.0.1:9"] }\n  security:\n    network: { allow: ["127.0.0.1:9"] }\n',
        ),
      'NOT_FOUND',
      2,
      /secret NOT_SET_ANYWHERE is not set[\s\S]*aegis secret set NOT_SET_ANYWHERE/,
    ],
    [
      'MB instead of M or Mi',
      () =>
        agent(
          '  runtime: { language: python, entrypoint: main.py }\n  security:\n    resources: { memory: 512MB }\n',
        ),
      'MANIFEST_INVALID',
      2,
      /"MB" is not a size unit \(in "512MB"\) — did you mean "M" \(10\^6\) or "Mi" \(2\^20\)\?/,
    ],
  ];
  for (const [name, manifest, code, exit, message] of cases) {
    it(`${name}: validate and run both refuse (${code}, exit ${exit}) and nothing is recorded`, async () => {
      const home = tempDir('aegis-strict-home-');
      const env = { ...process.env, AEGIS_HOME: home, AEGIS_SERVER: '' };
      const file = manifest();
      for (const command of ['validate', 'run']) {
        const result = await cli([command, file], env);
        assert.equal(result.code, exit, `${command}: ${result.stderr}`);
        assert.match(result.stderr, new RegExp(`error\\[${code}\\]`), `${command}: ${result.stderr}`);
        assert.match(result.stderr, message, `${command}`);
      }
      const ps = await cli(['ps', '-o', 'json'], env);
      assert.deepEqual(JSON.parse(ps.stdout).executions, [], 'a refused run must leave no execution');
    });
  }

  it('reports every problem — schema and host — in one pass, sorted by position', async () => {
    const file = agent(
      '  runtime: { language: python, entrypoint: missing.py }\n  isolaton: sandbox\n  security:\n    resources: { memory: 1GB, pids: lots }\n',
      {},
    );
    const result = await cli(['validate', file], { ...process.env, AEGIS_SERVER: '' });
    assert.equal(result.code, 2, result.stderr);
    const located = [...result.stderr.matchAll(/agent\.yaml:(\d+):(\d+) \(([^)]+)\)/g)].map((m) => [
      Number(m[1]),
      Number(m[2]),
      m[3],
    ]);
    assert.deepEqual(
      located.map((l) => l[2]),
      [
        'spec.runtime.entrypoint',
        'spec.isolaton',
        'spec.security.resources.memory',
        'spec.security.resources.pids',
      ],
      result.stderr,
    );
    const order = located.map(([line, col]) => (line as number) * 1000 + (col as number));
    assert.deepEqual(
      order,
      [...order].sort((a, b) => a - b),
    );
  });
});

describe('aegis on PATH (npm run setup)', () => {
  it('installs aegis and aegis-orchestrator wrappers for this checkout, idempotently, that work from /', async () => {
    const bin = tempDir('aegis-bin-');
    const env = { ...process.env, AEGIS_BIN_DIR: bin };
    const first = await run('bash', ['scripts/setup.sh'], { env });
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /aegis: installed/);
    const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
    // From / with a PATH that has no Node 24: the wrapper brings its own.
    const bare = { PATH: '/usr/bin:/bin', HOME: tempDir('aegis-bin-home-') };
    const fromRoot = await run(join(bin, 'aegis'), ['--version'], { cwd: '/', env: bare });
    assert.equal(fromRoot.code, 0, fromRoot.stderr);
    assert.equal(fromRoot.stdout.trim(), version);
    const orchestrator = await run(join(bin, 'aegis-orchestrator'), ['--help'], { cwd: '/', env: bare });
    assert.match(orchestrator.stdout, /--listen/);

    const mtime = statSync(join(bin, 'aegis')).mtimeMs;
    const again = await run('bash', ['scripts/setup.sh'], { env });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /aegis: .* is up to date/);
    assert.equal(statSync(join(bin, 'aegis')).mtimeMs, mtime, 'an up-to-date wrapper is left untouched');

    // Another checkout's wrapper is replaced, with a notice; a file that is not ours is left alone.
    writeFileSync(join(bin, 'aegis'), '#!/bin/sh\n# aegis-checkout: /elsewhere/aegis\nexit 9\n');
    writeFileSync(join(bin, 'aegis-orchestrator'), '#!/bin/sh\necho not aegis\n');
    const replaced = await run('bash', ['scripts/setup.sh', '--quiet'], { env });
    assert.equal(replaced.code, 0, replaced.stderr);
    assert.match(replaced.stderr, /pointed at the AEGIS in \/elsewhere\/aegis; it now runs the one in/);
    assert.match(replaced.stderr, /aegis-orchestrator exists and is not an AEGIS wrapper; left alone/);
    assert.equal((await run(join(bin, 'aegis'), ['--version'], { cwd: '/', env: bare })).code, 0);
    assert.equal(readFileSync(join(bin, 'aegis-orchestrator'), 'utf8'), '#!/bin/sh\necho not aegis\n');
  });
});

describe('CLI manners', { concurrency: true }, () => {
  it('completion for bash completes subcommands and flags from the command definitions', async () => {
    const script = (await cli(['completion', 'bash'], process.env)).stdout;
    const file = join(tempDir('aegis-completion-'), 'aegis.bash');
    writeFileSync(file, script);
    const probe = await run('bash', [
      '-c',
      `source ${file}; COMP_WORDS=(aegis agents ""); COMP_CWORD=2; _aegis; echo "\${COMPREPLY[*]}"; ` +
        `COMP_WORDS=(aegis exec --); COMP_CWORD=2; _aegis; echo "\${COMPREPLY[*]}"`,
    ]);
    const [agents, execFlags] = probe.stdout.trim().split('\n');
    assert.deepEqual(agents!.split(' ').slice(0, 5), ['ls', 'show', 'versions', 'rollback', 'rm']);
    assert.match(execFlags!, /--follow/);
    assert.match(execFlags!, /--input-file/);
    for (const shell of ['zsh', 'fish']) {
      const result = await cli(['completion', shell], process.env);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /aegis/);
    }
    assert.equal((await cli(['completion', 'tcsh'], process.env)).code, 2);
  });

  it('-f means follow: `run -f` is no longer --input-file, `exec -f` follows', async () => {
    const runHelp = await cli(['run', '--help'], process.env);
    assert.doesNotMatch(runHelp.stdout, /-f,/);
    const execHelp = await cli(['exec', '--help'], process.env);
    assert.match(execHelp.stdout, /-f, --follow/);
    const logsHelp = await cli(['logs', '--help'], process.env);
    assert.match(logsHelp.stdout, /-f, --follow/);
  });

  it('colours only on a terminal, never with NO_COLOR or when piped', async () => {
    // `script` gives the CLI a pseudo-terminal.
    const onTty = (env: NodeJS.ProcessEnv) =>
      run(
        'script',
        ['-qec', `${process.execPath} bin/aegis.mjs validate examples/hello-python/agent.yaml`, '/dev/null'],
        {
          env,
        },
      );
    const base = { ...process.env, NO_COLOR: '' };
    const coloured = await onTty(base);
    assert.equal(coloured.code, 0, coloured.stdout);
    assert.match(coloured.stdout, /\x1b\[32m✓/);
    assert.doesNotMatch((await onTty({ ...base, NO_COLOR: '1' })).stdout, /\x1b\[/);
    const piped = await cli(['validate', 'examples/hello-python/agent.yaml'], base);
    assert.doesNotMatch(piped.stdout + piped.stderr, /\x1b\[/);
  });

  it('a bad AEGIS_HOME is a usage error (exit 2) with a hint, never an internal error', async () => {
    const file = join(tempDir('aegis-bad-home-'), 'a-file');
    writeFileSync(file, '');
    for (const home of [file, join(file, 'below')]) {
      const result = await cli(['ps'], { ...process.env, AEGIS_HOME: home, AEGIS_SERVER: '' });
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /error\[USAGE\]: AEGIS_HOME .* cannot be used[\s\S]*hint:/);
    }
  });

  it('-q drops the outcome line of a successful run; the result stays on stdout', async () => {
    const env = { ...process.env, AEGIS_HOME: tempDir('aegis-quiet-home-'), AEGIS_SERVER: '' };
    const quiet = await cli(
      ['-q', 'run', 'examples/hello-python/agent.yaml', '--input', '{"name":"Q"}'],
      env,
    );
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.match(quiet.stdout, /Hello, Q!/);
    assert.doesNotMatch(quiet.stderr, /✓ hello-python/);
    const loud = await cli(['run', 'examples/hello-python/agent.yaml', '--input', '{"name":"L"}'], env);
    assert.match(loud.stderr, /✓ hello-python@1\.0\.0 succeeded/);
  });
});
