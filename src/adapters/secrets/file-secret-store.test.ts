import assert from 'node:assert/strict';
import {
  chmodSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { AegisError } from '../../domain/errors.ts';
import { defaultKeyFile, FileSecretStore } from './file-secret-store.ts';

const root = mkdtempSync(join(tmpdir(), 'aegis-secrets-'));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;

function fresh(options: { now?: () => number } = {}) {
  const dir = join(root, `s${++counter}`);
  const home = join(dir, 'home');
  const keyFile = join(dir, 'config', 'aegis', 'secrets.key');
  return { home, keyFile, store: new FileSecretStore({ home, keyFile, ...options }) };
}

const VALUE = 'sk-proj-SUPERsecret-0123456789';

async function rejectsWith(promise: Promise<unknown>, code: string, pattern?: RegExp): Promise<AegisError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof AegisError, String(error));
    assert.equal(error.code, code, error.message);
    if (pattern) assert.match(`${error.message}\n${error.hint ?? ''}`, pattern);
    assert.ok(!`${error.message}${error.hint}${JSON.stringify(error.details)}`.includes(VALUE));
    return error;
  }
  assert.fail(`expected ${code}`);
}

describe('FileSecretStore', () => {
  it('round-trips, lists names and timestamps only, updates, removes', async () => {
    let clock = Date.parse('2026-01-01T00:00:00Z');
    const { store } = fresh({ now: () => clock });
    await store.set('OPENAI_KEY', VALUE);
    await store.set('OTHER', 'ünïcødé value\nwith newline');
    assert.equal(await store.get('OPENAI_KEY'), VALUE);
    assert.equal(await store.get('OTHER'), 'ünïcødé value\nwith newline');
    clock += 60_000;
    await store.set('OPENAI_KEY', `${VALUE}-2`);
    assert.equal(await store.get('OPENAI_KEY'), `${VALUE}-2`);
    const list = await store.list();
    assert.deepEqual(list, [
      { name: 'OPENAI_KEY', createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-01T00:01:00.000Z' },
      { name: 'OTHER', createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-01T00:00:00.000Z' },
    ]);
    assert.ok(!JSON.stringify(list).includes(VALUE));
    await store.remove('OTHER');
    assert.deepEqual(
      (await store.list()).map((info) => info.name),
      ['OPENAI_KEY'],
    );
    await rejectsWith(store.remove('OTHER'), 'NOT_FOUND');
  });

  it('get of an unknown secret is NOT_FOUND with the command to fix it', async () => {
    const { store } = fresh();
    const error = await rejectsWith(store.get('MISSING'), 'NOT_FOUND', /no secret named MISSING/);
    assert.equal(error.hint, 'aegis secret set MISSING');
    await rejectsWith(store.get('bad name'), 'USAGE');
    await rejectsWith(store.set('OK', ''), 'USAGE');
  });

  it('never writes the plaintext: the store holds ciphertext, the key lives elsewhere with tight modes', async () => {
    const { store, home, keyFile } = fresh();
    await store.set('OPENAI_KEY', VALUE);
    const bytes = readFileSync(store.path);
    for (const form of [VALUE, Buffer.from(VALUE).toString('base64'), Buffer.from(VALUE).toString('hex')]) {
      assert.equal(bytes.indexOf(form), -1, `store contains ${form.slice(0, 8)}…`);
    }
    assert.equal(statSync(store.path).mode & 0o777, 0o600);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    assert.equal(statSync(join(keyFile, '..')).mode & 0o777, 0o700);
    assert.ok(!readFileSync(keyFile).includes(VALUE));
    assert.ok(!store.path.startsWith(join(keyFile, '..')));
    assert.deepEqual(readdirSync(home), ['secrets.json']);
  });

  it('detects a tampered ciphertext, tag or IV, and an entry moved to another name (AAD)', async () => {
    const { store } = fresh();
    await store.set('A', VALUE);
    await store.set('B', 'another-value-xyz');
    const original = readFileSync(store.path, 'utf8');
    const edit = (change: (file: { secrets: Record<string, Record<string, string>> }) => void) => {
      const file = JSON.parse(original);
      change(file);
      writeFileSync(store.path, JSON.stringify(file));
    };
    const flip = (b64: string) => {
      const buffer = Buffer.from(b64, 'base64');
      buffer[0]! ^= 1;
      return buffer.toString('base64');
    };
    edit((file) => (file.secrets.A!.data = flip(file.secrets.A!.data!)));
    await rejectsWith(store.get('A'), 'AUDIT_TAMPERED', /failed verification/);
    edit((file) => (file.secrets.A!.tag = flip(file.secrets.A!.tag!)));
    await rejectsWith(store.get('A'), 'AUDIT_TAMPERED');
    edit((file) => (file.secrets.A!.iv = flip(file.secrets.A!.iv!)));
    await rejectsWith(store.get('A'), 'AUDIT_TAMPERED');
    edit((file) => {
      const a = file.secrets.A!;
      file.secrets.A = file.secrets.B!;
      file.secrets.B = a;
    });
    await rejectsWith(store.get('A'), 'AUDIT_TAMPERED');
    await rejectsWith(store.get('B'), 'AUDIT_TAMPERED');
    writeFileSync(store.path, '{not json');
    await rejectsWith(store.get('A'), 'AUDIT_TAMPERED', /not valid JSON/);
    writeFileSync(store.path, original);
    assert.equal(await store.get('A'), VALUE);
  });

  it('refuses a key file readable or writable by group/others, a symlink, and a store without its key', async () => {
    const { store, keyFile, home } = fresh();
    await store.set('A', VALUE);
    for (const mode of [0o640, 0o604, 0o620]) {
      chmodSync(keyFile, mode);
      const error = await rejectsWith(store.get('A'), 'POLICY_DENIED', /group or others/);
      assert.equal(error.hint, `chmod 600 ${keyFile}`);
      await rejectsWith(store.set('A', VALUE), 'POLICY_DENIED');
    }
    chmodSync(keyFile, 0o600);
    assert.equal(await store.get('A'), VALUE);
    const linked = join(root, `link-${++counter}.key`);
    symlinkSync(keyFile, linked);
    await rejectsWith(
      new FileSecretStore({ home, keyFile: linked }).get('A'),
      'POLICY_DENIED',
      /symbolic link/,
    );
    const other = new FileSecretStore({ home, keyFile: join(root, `absent-${++counter}.key`) });
    await rejectsWith(other.get('A'), 'NOT_FOUND', /does not exist/);
    const wrongKey = fresh();
    await wrongKey.store.set('Z', 'z-value');
    const foreign = new FileSecretStore({ home, keyFile: wrongKey.keyFile });
    await rejectsWith(foreign.get('A'), 'AUDIT_TAMPERED', /different key/);
  });

  it('rewrites atomically: a new file replaces the old one, no temp files remain, concurrent sets all land', async () => {
    const { store, home } = fresh();
    await store.set('A', VALUE);
    const before = statSync(store.path).ino;
    await store.set('B', 'b');
    assert.notEqual(statSync(store.path).ino, before, 'rename, not in-place write');
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.set(`C${i}`, `value-${i}`)));
    assert.equal((await store.list()).length, 22);
    assert.equal(await store.get('C7'), 'value-7');
    assert.deepEqual(readdirSync(home), ['secrets.json']);
    assert.equal(statSync(store.path).mode & 0o777, 0o600);
  });

  it('chooses the key file: explicit, AEGIS_SECRETS_KEY_FILE, /etc for root, XDG config for others', () => {
    assert.equal(defaultKeyFile({ AEGIS_SECRETS_KEY_FILE: '/k' }, 1000), '/k');
    assert.equal(defaultKeyFile({}, 0), '/etc/aegis/secrets.key');
    assert.equal(defaultKeyFile({ XDG_CONFIG_HOME: '/x' }, 1000), '/x/aegis/secrets.key');
    assert.equal(defaultKeyFile({ HOME: '/home/u' }, 1000), '/home/u/.config/aegis/secrets.key');
    assert.equal(new FileSecretStore({ home: '/h', keyFile: '/explicit' }).keyFile, '/explicit');
  });
});
