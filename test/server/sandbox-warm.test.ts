/**
 * Warm live sandboxes (`aegis server --warm-sandboxes N`): after an agent revision's first sandbox, N more are kept
 * ready with the exec agent answering, so `POST /v1/sandboxes` only records one. A warm sandbox must be
 * indistinguishable from a cold one to its user — the create request's env reaches its commands, nothing of
 * another sandbox is visible in it — and it is marked `warm` in its `sandbox.created` entry. Agents with secrets are
 * never pooled (their placeholders are per sandbox). Shutdown leaves no warm instance behind.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FileSecretStore } from '../../src/adapters/secrets/file-secret-store.ts';
import { findCgroupDirs } from '../support/host-state.ts';
import {
  apiCall,
  cli,
  killServers,
  pollUntil,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

interface Entry {
  kind: string;
  data: Record<string, unknown>;
}

describe('warm live sandboxes (--warm-sandboxes)', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  const work = mkdtempSync(join(tmpdir(), 'aegis-sb-warm-'));
  // This server's own scratch root: what is left in it after shutdown is this server's alone.
  const scratch = join(work, 'scratch');
  const sandboxDirs = () =>
    existsSync(join(scratch, 'sandboxes')) ? readdirSync(join(scratch, 'sandboxes')) : [];

  const call = (method: string, path: string, body?: unknown) =>
    apiCall(server.url, server.adminKey, method, path, body);

  const create = async (body: Record<string, unknown>) => {
    const created = await call('POST', '/v1/sandboxes', body);
    assert.equal(created.status, 201, created.text);
    return created.json['id'] as string;
  };
  const run = async (id: string, cmd: string) => {
    const done = await call('POST', `/v1/sandboxes/${id}/commands`, { cmd });
    assert.equal(done.status, 200, done.text);
    return done.json['stdout'] as string;
  };
  const createdEntry = async (id: string) =>
    ((await call('GET', `/v1/sandboxes/${id}/audit`)).json['entries'] as Entry[]).find(
      (e) => e.kind === 'sandbox.created',
    )!;
  const warmGauge = async () => {
    const text = (await call('GET', '/metrics')).text;
    return Number(/^aegis_live_sandboxes\{status="warm"\} (\d+)$/m.exec(text)?.[1] ?? Number.NaN);
  };
  const deploy = async (name: string, extra: string) => {
    const dir = join(work, name);
    mkdirSync(dir);
    writeFileSync(
      join(dir, 'agent.yaml'),
      `apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: ${name} }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n${extra}`,
    );
    writeFileSync(join(dir, 'main.sh'), 'echo unused\n');
    const deployed = await cli(['deploy', dir], {
      ...server.env,
      AEGIS_SERVER: server.url,
      AEGIS_API_KEY: server.adminKey,
    });
    assert.equal(deployed.code, 0, deployed.stderr);
  };

  before(async () => {
    dirs = serverDirs();
    const keyFile = join(work, 'secrets.key');
    chmodSync(work, 0o711);
    mkdirSync(scratch, { mode: 0o711 });
    await new FileSecretStore({ home: dirs.home, keyFile }).set('TOKEN', 'not-used');
    server = await startServerProcess({
      dirs,
      args: ['--warm-sandboxes', '1'],
      env: { AEGIS_SECRETS_KEY_FILE: keyFile, AEGIS_SCRATCH_DIR: scratch },
    });
    await deploy('pooled', '');
    await deploy(
      'with-secret',
      "  secrets: [{ name: TOKEN, env: TOKEN, hosts: ['127.0.0.1:9'] }]\n  security: { network: { allow: ['127.0.0.1:9'] } }\n",
    );
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    dirs?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('the first create is cold and fills the pool; the next is warm, with its own env and nothing of the first', async () => {
    const first = await create({ agent: 'pooled', env: { WHO: 'first' } });
    assert.equal((await createdEntry(first)).data['warm'], undefined);
    await run(first, 'echo left-behind > /workspace/mark; echo first > /tmp/mark');
    await pollUntil('a warm sandbox to be ready', async () => ((await warmGauge()) === 1 ? true : undefined));

    const second = await create({ agent: 'pooled', env: { WHO: 'second' } });
    assert.notEqual(second, first);
    assert.equal((await createdEntry(second)).data['warm'], true);
    assert.equal(await run(second, 'echo "$WHO"'), 'second\n');
    assert.equal(
      await run(second, 'cat /workspace/mark /tmp/mark 2>&1; echo "exit $?"'),
      'cat: /workspace/mark: No such file or directory\ncat: /tmp/mark: No such file or directory\nexit 1\n',
    );
    // A command's own env still wins over the create request's.
    const own = await call('POST', `/v1/sandboxes/${second}/commands`, {
      cmd: 'echo "$WHO"',
      env: { WHO: 'command' },
    });
    assert.equal(own.json['stdout'], 'command\n');
    // Taken: the pool refills behind it.
    await pollUntil('the pool to refill', async () => ((await warmGauge()) === 1 ? true : undefined));
    for (const id of [first, second]) assert.equal((await call('DELETE', `/v1/sandboxes/${id}`)).status, 200);
  });

  it('an agent with secrets is never pooled', async () => {
    const before = await warmGauge();
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      ids.push(await create({ agent: 'with-secret' }));
      assert.equal((await createdEntry(ids.at(-1)!)).data['warm'], undefined);
    }
    assert.equal(await warmGauge(), before);
    for (const id of ids) await call('DELETE', `/v1/sandboxes/${id}`);
  });

  it('shutdown ends the warm sandboxes too (no scratch dir, no cgroup left)', async () => {
    await create({ agent: 'pooled' });
    await pollUntil('a warm sandbox to be ready', async () => ((await warmGauge()) >= 1 ? true : undefined));
    const held = sandboxDirs();
    assert.ok(held.length >= 2, `a created and a warm sandbox: ${held.join(', ')}`);
    await server.stop();
    assert.deepEqual(sandboxDirs(), [], 'no sandbox scratch dir left');
    for (const id of held) assert.deepEqual(findCgroupDirs(id), [], `cgroups of ${id} left`);
  });
});
