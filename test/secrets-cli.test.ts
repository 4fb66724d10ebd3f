/**
 * `aegis secret set|ls|rm` as a user drives it: real processes, a temp AEGIS_HOME and a temp key file
 * (AEGIS_SECRETS_KEY_FILE), so the tests never touch /etc/aegis or ~/.config.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileSecretStore } from '../src/adapters/secrets/file-secret-store.ts';

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin/aegis.mjs');
const home = mkdtempSync(join(tmpdir(), 'aegis-secret-cli-home-'));
const keyDir = mkdtempSync(join(tmpdir(), 'aegis-secret-cli-key-'));
const keyFile = join(keyDir, 'secrets.key');
after(() => {
  rmSync(home, { recursive: true, force: true });
  rmSync(keyDir, { recursive: true, force: true });
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function aegis(args: string[], stdin = ''): Promise<Result> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: { ...process.env, AEGIS_HOME: home, AEGIS_SECRETS_KEY_FILE: keyFile },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  child.stdin.end(stdin);
  return new Promise((resolveDone) => child.on('close', (code) => resolveDone({ code, stdout, stderr })));
}

describe('aegis secret', { concurrency: false }, () => {
  const VALUE = 'sk-cli-0123456789abcdef';

  it('set reads the value from stdin (one trailing newline stripped) and prints no value', async () => {
    const result = await aegis(['secret', 'set', 'API_KEY'], `${VALUE}\n`);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(!result.stdout.includes(VALUE) && !result.stderr.includes(VALUE));
    const store = new FileSecretStore({ home, keyFile });
    assert.equal(await store.get('API_KEY'), VALUE);
    assert.ok(!readFileSync(join(home, 'secrets.json'), 'utf8').includes(VALUE), 'sealed at rest');
  });

  it('set refuses a value on the command line', async () => {
    const result = await aegis(['secret', 'set', 'OTHER', 'sk-from-argv']);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /never taken from the command line/);
    assert.ok(!result.stderr.includes('sk-from-argv'));
    assert.deepEqual(
      (await new FileSecretStore({ home, keyFile }).list()).map((s) => s.name),
      ['API_KEY'],
    );
  });

  it('set refuses an empty value and a bad name', async () => {
    assert.equal((await aegis(['secret', 'set', 'EMPTY'], '')).code, 2);
    assert.equal((await aegis(['secret', 'set', 'lower-case'], 'x')).code, 2);
  });

  it('ls shows names and dates, never values', async () => {
    const text = await aegis(['secret', 'ls']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /API_KEY/);
    assert.ok(!text.stdout.includes(VALUE));
    const json = await aegis(['secret', 'ls', '--output', 'json']);
    assert.equal(json.code, 0, json.stderr);
    const list = JSON.parse(json.stdout) as { name: string; createdAt: string; updatedAt: string }[];
    assert.deepEqual(
      list.map((s) => Object.keys(s).sort()),
      [['createdAt', 'name', 'updatedAt']],
    );
    assert.equal(list[0]!.name, 'API_KEY');
    assert.ok(!json.stdout.includes(VALUE));
  });

  it('rm deletes; rm of an unknown secret is NOT_FOUND', async () => {
    const removed = await aegis(['secret', 'rm', 'API_KEY']);
    assert.equal(removed.code, 0, removed.stderr);
    assert.deepEqual(await new FileSecretStore({ home, keyFile }).list(), []);
    const again = await aegis(['secret', 'rm', 'API_KEY']);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /no secret named API_KEY/);
  });
});
