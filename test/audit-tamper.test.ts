/**
 * Every way of tampering with the audit ledger, each on its own copy of a real $AEGIS_HOME (made by real
 * `aegis run`s), with a private witness directory and node key: `aegis audit verify` must exit 4 naming what
 * happened — and must never sign a head over what it was given (the witness and the stored heads stay as they were).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, before, describe, it } from 'node:test';
import { nodeHasher, publicKeyId } from '../src/adapters/audit/node-key.ts';
import { ledgerId } from '../src/adapters/audit/witness.ts';
import { headMessage, linkHash } from '../src/domain/audit/entry.ts';

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin/aegis.mjs');
const base = mkdtempSync(join(tmpdir(), 'aegis-tamper-'));
after(() => rmSync(base, { recursive: true, force: true }));

interface Node {
  readonly dir: string;
  readonly home: string;
  readonly witnessDir: string;
  readonly keyFile: string;
}

const nodeAt = (dir: string): Node => ({
  dir,
  home: join(dir, 'home'),
  witnessDir: join(dir, 'witness'),
  keyFile: join(dir, 'keys', 'node-ed25519.pem'),
});

function aegis(node: Node, args: string[]) {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: {
      ...process.env,
      AEGIS_HOME: node.home,
      AEGIS_AUDIT_WITNESS_DIR: node.witnessDir,
      AEGIS_NODE_KEY_FILE: node.keyFile,
      AEGIS_AUDIT_HEAD_EVERY: '2',
      AEGIS_DATABASE_URL: '',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((done) =>
    child.on('close', (code) => done({ code, stdout, stderr })),
  );
}

const witnessFile = (node: Node) => join(node.witnessDir, `${ledgerId(join(node.home, 'audit.db'))}.jsonl`);

/** A copy of the real node: home, key and witness (rewritten for the copy's ledger path, as an operator would). */
function copyOf(original: Node, name: string): Node {
  const copy = nodeAt(join(base, name));
  cpSync(original.home, copy.home, { recursive: true });
  mkdirSync(join(copy.dir, 'keys'), { recursive: true, mode: 0o700 });
  cpSync(original.keyFile, copy.keyFile);
  mkdirSync(copy.witnessDir, { recursive: true });
  const ledger = resolve(copy.home, 'audit.db');
  const lines = readFileSync(witnessFile(original), 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.stringify({ ...JSON.parse(line), ledger }));
  writeFileSync(witnessFile(copy), `${lines.join('\n')}\n`);
  return copy;
}

interface Row {
  seq: number;
  ts: string;
  execution: string | null;
  kind: string;
  data: string;
  prev_hash: string;
  hash: string;
}

function withDb<T>(node: Node, body: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(join(node.home, 'audit.db'));
  try {
    for (const table of ['audit_entries', 'audit_heads']) {
      for (const op of ['update', 'delete']) db.exec(`DROP TRIGGER IF EXISTS ${table}_append_only_${op}`);
    }
    return body(db);
  } finally {
    db.close();
  }
}

const rows = (db: DatabaseSync) =>
  db.prepare('SELECT * FROM audit_entries ORDER BY seq').all() as unknown as Row[];

function replaceRows(db: DatabaseSync, list: readonly Row[]) {
  db.exec('DELETE FROM audit_entries');
  const insert = db.prepare(
    'INSERT INTO audit_entries (seq, ts, execution, kind, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)',
  );
  for (const r of list) insert.run(r.seq, r.ts, r.execution, r.kind, r.data, r.prev_hash, r.hash);
}

/** Recomputes every link from `from` on (what anyone can do without the key). */
function rechain(list: Row[], from: number): Row[] {
  for (let i = from - 1; i < list.length; i++) {
    const r = list[i]!;
    const prevHash = i === 0 ? '0'.repeat(64) : list[i - 1]!.hash;
    const link = { seq: i + 1, ts: r.ts, execution: r.execution, kind: r.kind, dataJson: r.data, prevHash };
    list[i] = { ...r, seq: i + 1, prev_hash: prevHash, hash: linkHash(link, nodeHasher.sha256Hex) };
  }
  return list;
}

/** The stored heads (none when the file has no tables: replaced by an empty one). */
function heads(node: Node): unknown[] {
  const db = new DatabaseSync(join(node.home, 'audit.db'));
  try {
    const table = db
      .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_heads'")
      .get();
    return table === undefined ? [] : db.prepare('SELECT seq, hash FROM audit_heads ORDER BY seq').all();
  } finally {
    db.close();
  }
}

async function expectTampered(node: Node, problem: string, message: RegExp) {
  const witnessBefore = readFileSync(witnessFile(node), 'utf8');
  const headsBefore = heads(node);
  const result = await aegis(node, ['audit', 'verify', '-o', 'json']);
  assert.equal(result.code, 4, `exit 4 expected:\n${result.stdout}\n${result.stderr}`);
  const verdict = JSON.parse(result.stdout) as { ok: boolean; problem: string; message: string };
  assert.equal(verdict.ok, false);
  assert.equal(verdict.problem, problem, verdict.message);
  assert.match(verdict.message, message);
  assert.match(result.stderr, /AUDIT_TAMPERED/);
  // verify signs nothing: the witness and the stored heads are what they were.
  assert.equal(readFileSync(witnessFile(node), 'utf8'), witnessBefore, 'verify wrote to the witness');
  assert.deepEqual(heads(node), headsBefore, 'verify signed a head');
  // And a second verify says the same (no laundering by the first).
  const again = await aegis(node, ['audit', 'verify', '-o', 'json']);
  assert.equal(again.code, 4);
}

describe('audit tampering on a copy of a real AEGIS home', () => {
  const real = nodeAt(join(base, 'real'));
  let entries = 0;

  before(async () => {
    for (const name of ['Ada', 'Grace']) {
      const run = await aegis(real, [
        'run',
        'examples/hello-python/agent.yaml',
        '--input',
        `{"name":"${name}"}`,
      ]);
      assert.equal(run.code, 0, run.stderr);
    }
    const verify = await aegis(real, ['audit', 'verify', '-o', 'json']);
    assert.equal(verify.code, 0, verify.stderr);
    const intact = JSON.parse(verify.stdout) as { ok: true; entries: number; signedThroughSeq: number };
    entries = intact.entries;
    assert.equal(entries, 6);
    assert.equal(intact.signedThroughSeq, 6);
    // Heads at 2, 4 and 6 (every 2nd entry), and maybe one more by the 1 s timer during a slow start.
    assert.ok(readFileSync(witnessFile(real), 'utf8').trim().split('\n').length >= 3);
  });

  it('an untouched copy verifies', async () => {
    const copy = copyOf(real, 'untouched');
    const result = await aegis(copy, ['audit', 'verify']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /intact: 6 entries/);
  });

  it('edit', async () => {
    const node = copyOf(real, 'edit');
    withDb(node, (db) => db.exec(`UPDATE audit_entries SET data = '{"instance":"elsewhere"}' WHERE seq = 2`));
    await expectTampered(node, 'edited', /entry seq 2 was edited/);
  });

  it('insert', async () => {
    const node = copyOf(real, 'insert');
    withDb(node, (db) => {
      const list = rows(db);
      const forged = { ...list[2]!, data: '{"forged":true}' };
      const shifted = [...list.slice(0, 3), forged, ...list.slice(3)].map((r, i) => ({ ...r, seq: i + 1 }));
      replaceRows(db, shifted);
    });
    await expectTampered(node, 'inserted', /inserted/);
  });

  it('delete', async () => {
    const node = copyOf(real, 'delete');
    withDb(node, (db) => db.exec('DELETE FROM audit_entries WHERE seq = 3'));
    await expectTampered(node, 'deleted', /entry seq 3 is missing/);
  });

  it('reorder', async () => {
    const node = copyOf(real, 'reorder');
    withDb(node, (db) => {
      const list = rows(db);
      const swapped = [list[0]!, list[2]!, list[1]!, ...list.slice(3)].map((r, i) => ({ ...r, seq: i + 1 }));
      replaceRows(db, swapped);
    });
    await expectTampered(node, 'reordered', /reordered|out of order/);
  });

  it('truncate', async () => {
    const node = copyOf(real, 'truncate');
    withDb(node, (db) => {
      db.exec('DELETE FROM audit_entries WHERE seq > 4');
      db.exec('DELETE FROM audit_heads WHERE seq > 4');
    });
    await expectTampered(node, 'truncated', /ends at seq 4 but a head was signed at seq 6/);
  });

  it('rechain after deleting the heads (no key needed) — and a later writer refuses to sign over it', async () => {
    const node = copyOf(real, 'rechain');
    withDb(node, (db) => {
      const list = rows(db);
      list[1] = { ...list[1]!, data: '{"instance":"elsewhere"}' };
      replaceRows(db, rechain(list, 2));
      db.exec('DELETE FROM audit_heads');
    });
    await expectTampered(node, 'rewritten', /rewritten/);
    // A writer (`aegis run`) appends, but never signs a chain that does not follow from the witnessed head.
    const witnessBefore = readFileSync(witnessFile(node), 'utf8');
    const run = await aegis(node, ['run', 'examples/hello-python/agent.yaml', '--input', '{"name":"Eve"}']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /the audit ledger was altered .* no head will be signed/);
    assert.equal(readFileSync(witnessFile(node), 'utf8'), witnessBefore);
    assert.deepEqual(heads(node), []);
    const after = await aegis(node, ['audit', 'verify', '-o', 'json']);
    assert.equal(after.code, 4);
  });

  it('delete the heads', async () => {
    const node = copyOf(real, 'heads');
    withDb(node, (db) => db.exec('DELETE FROM audit_heads'));
    await expectTampered(node, 'heads-deleted', /recorded by the witness but missing from the ledger/);
  });

  it('empty both tables', async () => {
    const node = copyOf(real, 'empty-tables');
    withDb(node, (db) => db.exec('DELETE FROM audit_entries; DELETE FROM audit_heads'));
    await expectTampered(node, 'emptied', /no entries, but the witness recorded \d+ signed head/);
  });

  it('replace audit.db with an empty file', async () => {
    const node = copyOf(real, 'empty-file');
    for (const suffix of ['', '-wal', '-shm']) rmSync(join(node.home, `audit.db${suffix}`), { force: true });
    writeFileSync(join(node.home, 'audit.db'), '');
    await expectTampered(node, 'emptied', /emptied or its file replaced/);
  });

  it('replace the key: a planted key in the home re-signs a rewritten chain', async () => {
    const node = copyOf(real, 'key');
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    mkdirSync(join(node.home, 'keys'), { recursive: true, mode: 0o700 });
    writeFileSync(
      join(node.home, 'keys', 'node-ed25519.pem'),
      privateKey.export({ type: 'pkcs8', format: 'pem' }),
      { mode: 0o600 },
    );
    withDb(node, (db) => {
      const list = rows(db);
      list[1] = { ...list[1]!, data: '{"instance":"elsewhere"}' };
      replaceRows(db, rechain(list, 2));
      db.exec('DELETE FROM audit_heads');
      const last = list.at(-1)!;
      const head = { seq: last.seq, hash: last.hash, ts: new Date().toISOString() };
      const signature = sign(null, Buffer.from(headMessage(head)), privateKey).toString('base64');
      db.prepare('INSERT INTO audit_heads (seq, hash, ts, key_id, signature) VALUES (?, ?, ?, ?, ?)').run(
        head.seq,
        head.hash,
        head.ts,
        publicKeyId(publicKey),
        signature,
      );
    });
    const result = await aegis(node, ['audit', 'verify']);
    assert.equal(result.code, 4, result.stdout);
    assert.match(result.stderr, /ignoring .*keys\/node-ed25519\.pem: the node key is/);
    await expectTampered(node, 'rewritten', /rewritten/);
  });

  it('a forged tail: entries appended after the newest head, chained correctly', async () => {
    const node = copyOf(real, 'tail');
    withDb(node, (db) => {
      const list = rows(db);
      const last = list.at(-1)!;
      const forged = {
        ...last,
        seq: last.seq + 1,
        kind: 'execution.finished',
        data: '{"status":"succeeded"}',
      };
      replaceRows(db, rechain([...list, forged], forged.seq));
    });
    await expectTampered(node, 'unsigned-tail', /entries 7–7 follow the newest signed head .* no signature/);
  });

  it('exports: an empty export and the export of an emptied ledger fail offline with the pinned key', async () => {
    const key = await aegis(real, ['audit', 'key']);
    const keyFile = join(base, 'node.pub');
    writeFileSync(keyFile, key.stdout);
    const fresh = nodeAt(join(base, 'offline'));
    const intact = join(base, 'intact.jsonl');
    assert.equal((await aegis(real, ['audit', 'export', '--out', intact])).code, 0);
    const ok = await aegis(fresh, ['audit', 'verify', '--file', intact, '--public-key', keyFile]);
    assert.equal(ok.code, 0, ok.stderr);

    const header = readFileSync(intact, 'utf8').split('\n')[0]!;
    const { witnessed: _w, ...bare } = JSON.parse(header) as Record<string, unknown>;
    const empty = join(base, 'empty.jsonl');
    writeFileSync(empty, `${JSON.stringify(bare)}\n`);
    const emptyResult = await aegis(fresh, ['audit', 'verify', '--file', empty, '--public-key', keyFile]);
    assert.equal(emptyResult.code, 4, emptyResult.stdout);
    assert.match(emptyResult.stderr, /no signed head/);

    const emptied = copyOf(real, 'emptied-export');
    withDb(emptied, (db) => db.exec('DELETE FROM audit_entries; DELETE FROM audit_heads'));
    const out = join(base, 'emptied.jsonl');
    assert.equal((await aegis(emptied, ['audit', 'export', '--out', out])).code, 0);
    const offline = await aegis(fresh, ['audit', 'verify', '--file', out, '--public-key', keyFile]);
    assert.equal(offline.code, 4, offline.stdout);
    assert.match(offline.stderr, /emptied|heads-deleted|truncated/);
  });

  it('the store cross-check names an execution the ledger has no entries for', async () => {
    const node = copyOf(real, 'store');
    // An execution the store knows but the ledger never recorded (what deleting its entries, or a crash before
    // the group commit, leaves): a copy of a real row under another id.
    const store = new DatabaseSync(join(node.home, 'aegis.db'));
    try {
      const columns = (store.prepare('PRAGMA table_info(executions)').all() as { name: string }[])
        .map((c) => c.name)
        .filter((name) => name !== 'id');
      store.exec(
        `INSERT INTO executions (id, ${columns.join(', ')}) SELECT 'ex_ghost', ${columns.join(', ')} FROM executions LIMIT 1`,
      );
    } finally {
      store.close();
    }
    const result = await aegis(node, ['audit', 'verify']);
    assert.equal(result.code, 4, result.stdout);
    assert.match(
      result.stderr,
      /1 of the 3 executions in the store lack their ledger entries: ex_ghost \(no execution\.created, no execution\.finished\)/,
    );
    const skipped = await aegis(node, ['audit', 'verify', '--no-store']);
    assert.equal(skipped.code, 0, skipped.stderr);
  });
});
