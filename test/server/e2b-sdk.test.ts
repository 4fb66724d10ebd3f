/**
 * The official `e2b` npm package (2.x, a devDependency installed by `npm ci`, not a mock) against a real AEGIS
 * server: E2B_API_URL / E2B_SANDBOX_URL / E2B_API_KEY point at AEGIS, the template is a deployed agent. Creates a
 * sandbox, runs commands with streaming callbacks and a background command, round-trips files, changes the timeout,
 * lists and kills — and checks the ledger holds every command and file operation. Playing the attacker: another
 * tenant's key cannot list, connect to, exec in, read or kill the sandbox; no key, or a bogus one, is refused; and
 * `user: "root"` is refused rather than run.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AuthenticationError, CommandExitError, Sandbox } from 'e2b';
import {
  cli,
  killServers,
  pollUntil,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

interface AuditEntry {
  kind: string;
  data: Record<string, unknown>;
}

describe('the e2b SDK against AEGIS', { concurrency: true }, () => {
  let server: ServerProcess;
  const dirs = serverDirs();
  const agentDir = mkdtempSync(join(tmpdir(), 'aegis-e2b-agent-'));

  async function api(key: string, method: string, path: string, body?: unknown) {
    const response = await fetch(`${server.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${key}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return { status: response.status, text, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }
  async function makeKey(name: string): Promise<string> {
    const created = await api(server.adminKey, 'POST', '/v1/keys', { name, scopes: ['execute'] });
    assert.equal(created.status, 201, created.text);
    return created.json['key'] as string;
  }
  async function auditOf(id: string): Promise<AuditEntry[]> {
    return (await api(server.adminKey, 'GET', `/v1/sandboxes/${id}/audit`)).json['entries'] as AuditEntry[];
  }

  before(async () => {
    writeFileSync(
      join(agentDir, 'agent.yaml'),
      'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: e2b-tpl }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n  security:\n    resources: { disk: 256Mi, memory: 512Mi, timeout: 10m }\n',
    );
    writeFileSync(join(agentDir, 'main.sh'), 'echo unused\n');
    server = await startServerProcess({ dirs });
    const deployed = await cli(['deploy', join(agentDir, 'agent.yaml')], {
      ...server.env,
      AEGIS_SERVER: server.url,
      AEGIS_API_KEY: server.adminKey,
    });
    assert.equal(deployed.code, 0, deployed.stderr);
    // As a user would configure the SDK: environment variables only.
    process.env['E2B_API_URL'] = `${server.url}/e2b`;
    process.env['E2B_SANDBOX_URL'] = `${server.url}/e2b/envd`;
    process.env['E2B_API_KEY'] = await makeKey('e2b-user');
  });
  after(async () => {
    await killServers();
    dirs.cleanup();
    rmSync(agentDir, { recursive: true, force: true });
  });

  it('create, run with callbacks, background command, files, setTimeout, list, kill — all in the ledger', async () => {
    const sandbox = await Sandbox.create('e2b-tpl', { metadata: { suite: 'e2b-sdk' }, timeoutMs: 600_000 });
    assert.match(sandbox.sandboxId, /^sb_/);

    const stdout: string[] = [];
    const stderr: string[] = [];
    const result = await sandbox.commands.run('echo hi; echo oops >&2; echo "$GREETING"', {
      envs: { GREETING: 'from-env' },
      onStdout: (data) => void stdout.push(data),
      onStderr: (data) => void stderr.push(data),
    });
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout, 'hi\nfrom-env\n');
    assert.equal(result.stderr, 'oops\n');
    assert.equal(stdout.join(''), 'hi\nfrom-env\n');
    assert.equal(stderr.join(''), 'oops\n');

    await assert.rejects(sandbox.commands.run('exit 3'), (error: unknown) => {
      assert.ok(error instanceof CommandExitError, String(error));
      assert.equal(error.exitCode, 3);
      return true;
    });

    const background = await sandbox.commands.run('echo started; sleep 600', { background: true });
    assert.ok(background.pid > 0);
    const listed = await sandbox.commands.list();
    assert.ok(
      listed.some((process) => process.pid === background.pid),
      JSON.stringify(listed),
    );
    await pollUntil('the background command to print', async () =>
      background.stdout === 'started\n' ? true : undefined,
    );
    assert.equal(await background.kill(), true);
    await assert.rejects(background.wait(), CommandExitError);

    const written = await sandbox.files.write('/workspace/notes/hello.txt', 'hello from e2b\n');
    assert.equal(written.path, '/workspace/notes/hello.txt');
    assert.equal(await sandbox.files.read('/workspace/notes/hello.txt'), 'hello from e2b\n');
    const bytes = new Uint8Array(300_000).map((_, i) => i % 251);
    await sandbox.files.write('/workspace/blob.bin', bytes.buffer, { useOctetStream: true });
    assert.deepEqual(await sandbox.files.read('/workspace/blob.bin', { format: 'bytes' }), bytes);
    const entries = await sandbox.files.list('/workspace/notes');
    assert.deepEqual(
      entries.map((entry) => [entry.name, entry.type]),
      [['hello.txt', 'file']],
    );
    assert.equal(await sandbox.files.exists('/workspace/notes/hello.txt'), true);
    await sandbox.files.remove('/workspace/notes/hello.txt');
    assert.equal(await sandbox.files.exists('/workspace/notes/hello.txt'), false);

    const before = await sandbox.getInfo();
    await sandbox.setTimeout(30_000);
    const afterTimeout = await sandbox.getInfo();
    assert.ok(afterTimeout.endAt < before.endAt, `${afterTimeout.endAt} < ${before.endAt}`);
    assert.equal(afterTimeout.templateId, 'e2b-tpl');
    assert.deepEqual(afterTimeout.metadata, { suite: 'e2b-sdk' });

    const page = await Sandbox.list({ query: { metadata: { suite: 'e2b-sdk' } } }).nextItems();
    assert.deepEqual(
      page.map((info) => [info.sandboxId, info.state]),
      [[sandbox.sandboxId, 'running']],
    );

    await sandbox.kill();
    assert.equal(await Sandbox.kill(sandbox.sandboxId), false, 'a killed sandbox is gone for E2B');
    await assert.rejects(Sandbox.getInfo(sandbox.sandboxId), /not found/i);

    const audit = await auditOf(sandbox.sandboxId);
    const execs = audit.filter((entry) => entry.kind === 'sandbox.exec').map((entry) => entry.data);
    assert.ok(
      execs.some((data) => JSON.stringify(data['argv']).includes('echo hi') && data['exitCode'] === 0),
      JSON.stringify(execs),
    );
    assert.ok(
      execs.some((data) => JSON.stringify(data['argv']).includes('exit 3') && data['exitCode'] === 3),
    );
    const files = audit
      .filter((entry) => entry.kind === 'sandbox.file')
      .map((entry) => `${entry.data['op']} ${entry.data['path']}`);
    for (const expected of [
      'write /workspace/notes/hello.txt',
      'read /workspace/notes/hello.txt',
      'write /workspace/blob.bin',
      'list /workspace/notes',
      'remove /workspace/notes/hello.txt',
    ]) {
      assert.ok(files.includes(expected), `${expected} in ${JSON.stringify(files)}`);
    }
    assert.ok(audit.some((entry) => entry.kind === 'sandbox.terminated'));
  });

  it("attack: another tenant's key cannot list, connect to, exec in, read or kill the sandbox", async () => {
    const mallory = await makeKey('mallory');
    const sandbox = await Sandbox.create('e2b-tpl');
    const id = sandbox.sandboxId;

    const seen = await Sandbox.list({ apiKey: mallory }).nextItems();
    assert.ok(!seen.some((info) => info.sandboxId === id));
    await assert.rejects(Sandbox.connect(id, { apiKey: mallory }), /not found/i);
    await assert.rejects(Sandbox.getInfo(id, { apiKey: mallory }), /not found/i);
    assert.equal(await Sandbox.kill(id, { apiKey: mallory }), false);
    await assert.rejects(Sandbox.setTimeout(id, 1000, { apiKey: mallory }), /not found/i);

    // The data plane with mallory's key as the access token, aimed at the victim's sandbox id.
    const SandboxClass = Sandbox as unknown as new (opts: Record<string, unknown>) => Sandbox;
    const forged = new SandboxClass({
      sandboxId: id,
      envdAccessToken: mallory,
      envdVersion: '0.5.7',
      apiKey: mallory,
    });
    await assert.rejects(forged.commands.run('touch /workspace/pwned'), /not found|no sandbox/i);
    await assert.rejects(forged.files.read('/workspace'), /not found|no sandbox/i);
    await assert.rejects(forged.files.write('/workspace/pwned', 'x'), /not found|no sandbox/i);
    await assert.rejects(forged.commands.list(), /not found|no sandbox/i);

    // The sandbox is untouched and the attacker left no trace of work in it.
    assert.equal(await sandbox.files.exists('/workspace/pwned'), false);
    const audit = await auditOf(id);
    const mine = (await api(server.adminKey, 'GET', `/v1/sandboxes/${id}`)).json['owner'];
    for (const entry of audit) {
      const by = entry.data['by'];
      if (by !== undefined && by !== null) assert.equal(by, mine, JSON.stringify(entry));
    }
    assert.equal((await sandbox.getInfo()).state, 'running');
    await sandbox.kill();
  });

  it('attack: no key or a bogus key is refused on both planes; root is never granted', async () => {
    const noKey = await fetch(`${server.url}/e2b/v2/sandboxes`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ templateID: 'e2b-tpl' }),
    });
    assert.equal(noKey.status, 401, await noKey.text());
    await assert.rejects(
      Sandbox.create('e2b-tpl', { apiKey: `aegis_${'0'.repeat(64)}` }),
      (error: unknown) => error instanceof AuthenticationError,
    );

    const sandbox = await Sandbox.create('e2b-tpl');
    const rpc = await fetch(`${server.url}/e2b/envd/process.Process/List`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'e2b-sandbox-id': sandbox.sandboxId },
      body: '{}',
    });
    assert.equal(rpc.status, 401, await rpc.text());
    const file = await fetch(`${server.url}/e2b/envd/files?path=/workspace`, {
      headers: { 'e2b-sandbox-id': sandbox.sandboxId },
    });
    assert.equal(file.status, 401, await file.text());

    await assert.rejects(sandbox.commands.run('id -u', { user: 'root' }), /never run anything as root/);
    await assert.rejects(sandbox.files.read('/etc/hostname', { user: 'root' }), /never run anything as root/);
    const uid = await sandbox.commands.run('id -u');
    assert.notEqual(uid.stdout.trim(), '0');
    await sandbox.kill();
  });

  it('what AEGIS does not offer answers "not implemented", clearly', async () => {
    const sandbox = await Sandbox.create('e2b-tpl');
    await assert.rejects(
      sandbox.files.watchDir('/workspace', () => {}),
      /not implemented/,
    );
    await assert.rejects(sandbox.getMetrics(), /not implemented/);
    const volumes = await fetch(`${server.url}/e2b/v2/sandboxes`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': String(process.env['E2B_API_KEY']) },
      body: JSON.stringify({ templateID: 'e2b-tpl', volumeMounts: [{ name: 'v', path: '/data' }] }),
    });
    assert.equal(volumes.status, 501, await volumes.text());
    await sandbox.kill();
  });
});
