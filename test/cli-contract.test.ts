/**
 * The CLI's contract with scripts: with `-o json`, `run`, `exec --wait`, `ps`, `logs`, `agents` and `validate` print
 * the REST shapes of /openapi.json (the zod schemas of the route table) — the same locally and against a real
 * `aegis server` — and an error is the REST error body on stdout with the documented exit code.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { z } from 'zod';
import * as S from '../src/api/http/schemas.ts';
import { ERROR_CODES, type ErrorCode } from '../src/domain/errors.ts';
import {
  type CliResult,
  cli,
  killServers,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './server/harness.ts';

const temps: string[] = [];
let dirs: ServerDirs;
let server: ServerProcess;
let localEnv: NodeJS.ProcessEnv;
let remoteEnv: NodeJS.ProcessEnv;

before(async () => {
  dirs = serverDirs();
  server = await startServerProcess({ dirs });
  const home = mkdtempSync(join(tmpdir(), 'aegis-contract-home-'));
  temps.push(home);
  localEnv = { ...process.env, AEGIS_HOME: home, AEGIS_SERVER: '', AEGIS_API_KEY: '' };
  remoteEnv = { ...process.env, AEGIS_HOME: home, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey };
  const deployed = await cli(['deploy', 'examples/hello-python/agent.yaml', '-o', 'json'], remoteEnv);
  assert.equal(deployed.code, 0, deployed.stderr);
});

after(async () => {
  await killServers();
  dirs?.cleanup();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

/** Parses stdout as one JSON document and checks it against `schema`; returns it. */
function one<T>(result: CliResult, schema: z.ZodType<T>, what: string): T {
  const lines = result.stdout.trim().split('\n');
  assert.equal(lines.length, 1, `${what}: stdout must be exactly one JSON document:\n${result.stdout}`);
  const parsed = schema.safeParse(JSON.parse(lines[0]!));
  assert.ok(parsed.success, `${what} does not match the REST schema: ${parsed.error}\n${result.stdout}`);
  return parsed.data;
}

/** Same top-level (and nested object) keys: a field present on one side only is a contract break. */
function sameKeys(local: unknown, remote: unknown, what: string): void {
  const keys = (value: unknown): string[] =>
    value !== null && typeof value === 'object' && !Array.isArray(value) ? Object.keys(value).sort() : [];
  assert.deepEqual(keys(local), keys(remote), `${what}: local and server output have different fields`);
}

function errorOf(result: CliResult, code: ErrorCode, what: string): void {
  const body = one(result, S.ErrorBody, `${what} (error)`);
  assert.equal(body.error.code, code, `${what}: ${result.stdout}`);
  assert.equal(result.code, ERROR_CODES[code].exitCode, `${what}: the documented exit code`);
}

describe('aegis -o json: one contract, locally and against a server', { concurrency: false }, () => {
  let localId = '';
  let remoteId = '';

  it('run and exec --wait print the same Execution', async () => {
    const args = ['--input', '{"name":"Ada"}', '-o', 'json'];
    const local = await cli(['run', 'examples/hello-python/agent.yaml', ...args], localEnv);
    assert.equal(local.code, 0, local.stderr);
    const remote = await cli(['exec', 'hello-python', '--wait', '60s', ...args], remoteEnv);
    assert.equal(remote.code, 0, remote.stderr);
    const a = one(local, S.Execution, 'run -o json');
    const b = one(remote, S.Execution, 'exec --wait -o json');
    sameKeys(a, b, 'run vs exec --wait');
    sameKeys(a.agent, b.agent, 'run vs exec --wait: agent');
    assert.equal(a.status, 'succeeded');
    assert.equal(b.status, 'succeeded');
    localId = a.id;
    remoteId = b.id;
  });

  it('ps prints the same ExecutionList', async () => {
    const local = one(await cli(['ps', '-o', 'json'], localEnv), S.ExecutionList, 'ps (local)');
    const remote = one(await cli(['ps', '-o', 'json'], remoteEnv), S.ExecutionList, 'ps (server)');
    sameKeys(local, remote, 'ps');
    sameKeys(local.executions[0], remote.executions[0], 'ps: executions[0]');
    assert.ok(local.executions.some((e) => e.id === localId));
    assert.ok(remote.executions.some((e) => e.id === remoteId));
  });

  it('logs prints the same LogLines (JSON Lines, the data of each SSE event)', async () => {
    for (const [env, id, where] of [
      [localEnv, localId, 'local'],
      [remoteEnv, remoteId, 'server'],
    ] as const) {
      const result = await cli(['logs', id, '-o', 'json'], env);
      assert.equal(result.code, 0, result.stderr);
      const lines = result.stdout.trim().split('\n');
      assert.ok(lines.length > 0, `logs (${where}) printed nothing`);
      for (const line of lines) {
        const parsed = S.LogLine.strict().safeParse(JSON.parse(line));
        assert.ok(parsed.success, `logs (${where}): ${line}: ${parsed.error}`);
      }
      assert.match(result.stdout, /Hello, Ada!/);
    }
  });

  it('agents ls prints an AgentList; without a server the error is the REST error body (USAGE, exit 2)', async () => {
    const remote = one(await cli(['agents', 'ls', '-o', 'json'], remoteEnv), S.AgentList, 'agents ls');
    assert.deepEqual(
      remote.agents.map((a) => a.name),
      ['hello-python'],
    );
    errorOf(await cli(['agents', 'ls', '-o', 'json'], localEnv), 'USAGE', 'agents ls without a server');
  });

  it('validate prints a Validation, and an invalid manifest the error body (MANIFEST_INVALID, exit 2)', async () => {
    const valid = await cli(['validate', 'examples/hello-python/agent.yaml', '-o', 'json'], localEnv);
    assert.equal(valid.code, 0, valid.stderr);
    one(valid, S.Validation, 'validate');

    const dir = mkdtempSync(join(tmpdir(), 'aegis-contract-agent-'));
    temps.push(dir);
    writeFileSync(
      join(dir, 'agent.yaml'),
      'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: broken }\nspec:\n  runtime: { language: python, entrypoint: main.py }\n  isolaton: sandbox\n',
    );
    writeFileSync(join(dir, 'main.py'), 'print(1)\n');
    const local = await cli(['validate', join(dir, 'agent.yaml'), '-o', 'json'], localEnv);
    errorOf(local, 'MANIFEST_INVALID', 'validate of an invalid manifest');
    const remote = await cli(['deploy', join(dir, 'agent.yaml'), '-o', 'json'], remoteEnv);
    errorOf(remote, 'MANIFEST_INVALID', 'deploy of an invalid manifest');
    const problems = (JSON.parse(local.stdout) as S.ErrorBody).error.details['problems'];
    assert.deepEqual(
      (problems as { path: string; line: number }[]).map((p) => [p.path, p.line]),
      [['spec.isolaton', 6]],
    );
  });

  it('errors from the server and from the local store are the same body with the same exit code', async () => {
    errorOf(
      await cli(['logs', 'ex_nope', '-o', 'json'], localEnv),
      'NOT_FOUND',
      'logs of no execution (local)',
    );
    errorOf(
      await cli(['logs', 'ex_nope', '-o', 'json'], remoteEnv),
      'NOT_FOUND',
      'logs of no execution (server)',
    );
    errorOf(
      await cli(['exec', 'no-such-agent', '--wait', '-o', 'json'], remoteEnv),
      'NOT_FOUND',
      'exec of no agent',
    );
    const noKey = await cli(['ps', '-o', 'json'], { ...remoteEnv, AEGIS_API_KEY: '' });
    errorOf(noKey, 'UNAUTHENTICATED', 'ps without a key');
    errorOf(await cli(['ps', '--bogus', '-o', 'json'], localEnv), 'USAGE', 'an unknown flag');
  });
});
