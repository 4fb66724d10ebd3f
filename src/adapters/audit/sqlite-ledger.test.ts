/**
 * The SQLite ledger on a temp AEGIS_HOME, with the real node key: group commit, heads, several writers — and
 * tampering with the real rows (triggers dropped first, as an attacker would), which `verify` must name.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { pollUntil } from '../../../test/support/poll.ts';
import { entryPreimage, linkHash } from '../../domain/audit/entry.ts';
import { formatExportLine } from '../../domain/audit/export-format.ts';
import type { AuditTampered, AuditVerification } from '../../domain/audit/verify.ts';
import { AegisError } from '../../domain/errors.ts';
import { verifyAuditExportFile } from './export-file.ts';
import { Ed25519NodeKey, nodeHasher } from './node-key.ts';
import { SqliteAuditLedger, type SqliteAuditLedgerOptions } from './sqlite-ledger.ts';
import { FileWitness } from './witness.ts';

const temps: string[] = [];
after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

function home(): { dir: string; db: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-audit-'));
  temps.push(dir);
  return { dir, db: join(dir, 'audit.db'), key: join(dir, 'keys', 'node-ed25519.pem') };
}

let tick = 1_700_000_000_000;
const clock = { now: () => (tick += 1) };

function open(paths: { db: string; key: string }, options: Partial<SqliteAuditLedgerOptions> = {}) {
  return SqliteAuditLedger.open({
    file: paths.db,
    signer: new Ed25519NodeKey(paths.key),
    hasher: nodeHasher,
    clock,
    ...options,
  });
}

/** A closed ledger of `count` entries (3 per execution), heads every `headEvery`. */
async function filled(count = 12, headEvery = 1000) {
  const paths = home();
  const ledger = open(paths, { headEvery });
  for (let i = 1; i <= count; i++) {
    const ex = `ex_${Math.ceil(i / 3)}`;
    if (i % 3 === 1) {
      ledger.append('execution.created', ex, {
        agent: 'demo',
        version: '1.0.0',
        runtime: 'sandbox',
        isolation: 'sandbox',
        limits: { cpuMillis: 1000, memoryBytes: 1, pids: 64, diskBytes: 1, timeoutMs: 1000 },
      });
    } else if (i % 3 === 2) ledger.append('execution.started', ex, { instance: ex });
    else
      ledger.append('execution.finished', ex, {
        status: 'succeeded',
        exitCode: 0,
        reason: null,
        durationMs: i,
      });
  }
  await ledger.close();
  return paths;
}

/** Runs SQL against the ledger file directly, as someone with write access to the file would. */
function tamper(file: string, sql: string): void {
  const db = new DatabaseSync(file);
  try {
    for (const t of [
      'entries_append_only_update',
      'entries_append_only_delete',
      'heads_append_only_update',
      'heads_append_only_delete',
    ]) {
      db.exec(`DROP TRIGGER IF EXISTS audit_${t}`);
    }
    db.exec(sql);
  } finally {
    db.close();
  }
}

async function verifyFile(paths: { db: string; key: string }): Promise<AuditVerification> {
  const ledger = open(paths);
  try {
    return await ledger.verify();
  } finally {
    await ledger.close();
  }
}

function expectProblem(result: AuditVerification, problem: string, firstBadSeq: number): AuditTampered {
  assert.equal(result.ok, false, `tampering not detected: ${JSON.stringify(result)}`);
  const t = result as AuditTampered;
  assert.equal(t.problem, problem, t.message);
  assert.equal(t.firstBadSeq, firstBadSeq, t.message);
  assert.match(t.message, new RegExp(`seq ${firstBadSeq}\\b|${firstBadSeq}–`));
  return t;
}

describe('SqliteAuditLedger', () => {
  it('returns each entry at once, chained and hashed; lists, verifies, and continues the chain after reopening', async () => {
    const paths = home();
    const ledger = open(paths);
    const first = ledger.append('execution.started', 'ex_a', { instance: 'i1' });
    const second = ledger.append('limit.hit', 'ex_a', { rule: 'memory', count: 1 });
    ledger.append('execution.started', 'ex_b', { instance: 'i2' });
    assert.equal(first.seq, 1);
    assert.equal(first.prevHash, '0'.repeat(64));
    assert.match(first.hash, /^[0-9a-f]{64}$/);
    assert.equal(second.prevHash, first.hash);
    assert.deepEqual(
      (await ledger.list('ex_a')).map((e) => [e.seq, e.kind, e.data]),
      [
        [1, 'execution.started', { instance: 'i1' }],
        [2, 'limit.hit', { rule: 'memory', count: 1 }],
      ],
    );
    assert.deepEqual((await ledger.list('ex_a'))[1], second);
    await ledger.close();
    await ledger.close(); // idempotent

    const reopened = open(paths);
    const third = reopened.append('execution.finished', 'ex_a', {
      status: 'succeeded',
      exitCode: 0,
      reason: null,
      durationMs: 3,
    });
    assert.equal(third.seq, 4);
    const result = await reopened.verify();
    assert.equal(result.ok, true);
    assert.equal(result.ok && result.entries, 4);
    await reopened.close();
    const closed = await verifyFile(paths);
    assert.ok(closed.ok);
    assert.equal(closed.heads, 2, 'each close signs the head');
    assert.equal(closed.signedThroughSeq, 4);
    assert.equal(closed.unsignedTail, 0);
  });

  it('group-commits: entries reach the file on flush, after a few ms, or synchronously at batchSize', async () => {
    const paths = home();
    const ledger = open(paths, { batchSize: 10, flushIntervalMs: 5 });
    const count = () => {
      const db = new DatabaseSync(paths.db);
      try {
        return Number(db.prepare('SELECT COUNT(*) AS n FROM audit_entries').get()?.['n']);
      } finally {
        db.close();
      }
    };
    ledger.append('execution.started', 'ex', { instance: 'a' });
    assert.equal(count(), 0, 'buffered, not yet written');
    const deadline = Date.now() + 5000;
    while (count() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    assert.equal(count(), 1, 'written by the timer');
    for (let i = 0; i < 10; i++) ledger.append('execution.started', 'ex', { instance: `b${i}` });
    assert.equal(count(), 11, 'the tenth buffered entry wrote the batch synchronously');
    ledger.append('execution.started', 'ex', { instance: 'c' });
    await ledger.flush();
    assert.equal(count(), 12);
    await ledger.close();
  });

  it('durable(): a waiter gets the entries of its turn committed in one write at the end of the turn, not after the interval', async () => {
    const paths = home();
    // An interval no test waits out: only the waiter's own write can resolve it.
    const ledger = open(paths, { flushIntervalMs: 3_600_000 });
    const count = () => {
      const db = new DatabaseSync(paths.db);
      try {
        return Number(db.prepare('SELECT COUNT(*) AS n FROM audit_entries').get()?.['n']);
      } finally {
        db.close();
      }
    };
    ledger.append('execution.started', 'ex', { instance: 'a' });
    const first = ledger.durable();
    // Appended later in the same turn: shares the commit.
    ledger.append('execution.started', 'ex', { instance: 'b' });
    const second = ledger.durable();
    assert.equal(count(), 0, 'nothing written before the turn ends');
    await Promise.all([first, second]);
    assert.equal(count(), 2, 'both entries durable once their waiters resolve');
    // Nothing buffered: resolves at once.
    await ledger.durable();
    await ledger.close();
  });

  it('signs the head every N entries and at close', async () => {
    const paths = home();
    const ledger = open(paths, { headEvery: 5, batchSize: 1 });
    for (let i = 0; i < 12; i++) ledger.append('execution.started', 'ex', { instance: `i${i}` });
    await ledger.close();
    const db = new DatabaseSync(paths.db);
    const heads = db
      .prepare('SELECT seq FROM audit_heads ORDER BY seq')
      .all()
      .map((r) => r['seq']);
    db.close();
    assert.deepEqual(heads, [5, 10, 12]);
  });

  it('keeps one chain when two processes append to the same file (re-chains onto the other writer)', async () => {
    const paths = home();
    const a = open(paths);
    const b = open(paths);
    for (let i = 0; i < 50; i++) {
      a.append('execution.started', 'ex_a', { instance: `a${i}` });
      b.append('execution.started', 'ex_b', { instance: `b${i}` });
      if (i % 7 === 0) await a.flush();
      if (i % 5 === 0) await b.flush();
    }
    await a.close();
    await b.close();
    const result = await verifyFile(paths);
    assert.ok(result.ok, JSON.stringify(result));
    assert.equal(result.entries, 100);
    assert.equal(result.unsignedTail, 0);
  });

  it('creates the node key 0600 in a 0700 directory, on first use, and refuses one readable by others', async () => {
    const paths = home();
    const key = new Ed25519NodeKey(paths.key);
    assert.equal(key.exists(), false);
    assert.equal(key.verify('m', 'c2ln', 'x'), false, 'verifying never creates a key');
    assert.equal(key.exists(), false);
    assert.match(key.publicKeyPem(), /^-----BEGIN PUBLIC KEY-----/);
    assert.match(key.keyId(), /^[0-9a-f]{16}$/);
    assert.equal(statSync(paths.key).mode & 0o777, 0o600);
    assert.equal(statSync(join(paths.dir, 'keys')).mode & 0o777, 0o700);
    assert.match(readFileSync(paths.key, 'utf8'), /BEGIN PRIVATE KEY/);
    const signature = key.sign('hello');
    assert.equal(
      new Ed25519NodeKey(paths.key).verify('hello', signature, key.keyId()),
      true,
      'same key on reload',
    );
    assert.equal(key.verify('hellO', signature, key.keyId()), false);
    chmodSync(paths.key, 0o644);
    assert.throws(
      () => new Ed25519NodeKey(paths.key).keyId(),
      (error: unknown) => {
        assert.ok(error instanceof AegisError);
        assert.match(error.message, /readable by others/);
        return true;
      },
    );
  });

  it('refuses data JSON cannot represent, and is append-only at the SQL level', async () => {
    const paths = await filled(3);
    const ledger = open(paths);
    assert.throws(
      () => ledger.append('limit.hit', 'ex', { rule: 'memory', count: Number.NaN }),
      /audit entry limit\.hit: data \$\.count is NaN/,
    );
    await ledger.close();
    const db = new DatabaseSync(paths.db);
    assert.throws(() => db.exec("UPDATE audit_entries SET data = '{}' WHERE seq = 1"), /append-only/);
    assert.throws(() => db.exec('DELETE FROM audit_entries WHERE seq = 1'), /append-only/);
    assert.throws(() => db.exec('DELETE FROM audit_heads'), /append-only/);
    db.close();
  });

  describe('detects tampering with the rows and names the first bad seq', () => {
    it('UPDATE of an entry’s data → edited', async () => {
      const paths = await filled();
      tamper(paths.db, `UPDATE audit_entries SET data = '{"instance":"elsewhere"}' WHERE seq = 5`);
      const t = expectProblem(await verifyFile(paths), 'edited', 5);
      assert.deepEqual(t.entry, { seq: 5, kind: 'execution.started', execution: 'ex_2' });
    });

    it('DELETE of a row → deleted', async () => {
      const paths = await filled();
      tamper(paths.db, 'DELETE FROM audit_entries WHERE seq = 7');
      expectProblem(await verifyFile(paths), 'deleted', 7);
    });

    it('INSERT of a forged row (with a correctly computed hash, later rows shifted) → inserted', async () => {
      const paths = await filled();
      const db = new DatabaseSync(paths.db);
      const prev = db.prepare('SELECT hash FROM audit_entries WHERE seq = 4').get()?.['hash'] as string;
      db.close();
      const forged = {
        seq: 5,
        ts: '2025-01-01T00:00:00.000Z',
        execution: 'ex_2',
        kind: 'execution.finished',
        dataJson: '{"durationMs":1,"exitCode":0,"reason":null,"status":"succeeded"}',
        prevHash: prev,
      };
      const hash = linkHash(forged, nodeHasher.sha256Hex);
      tamper(
        paths.db,
        `UPDATE audit_entries SET seq = seq + 1000 WHERE seq >= 5;
         UPDATE audit_entries SET seq = seq - 999 WHERE seq >= 1000;
         INSERT INTO audit_entries (seq, ts, execution, kind, data, prev_hash, hash)
           VALUES (5, '${forged.ts}', 'ex_2', '${forged.kind}', '${forged.dataJson}', '${prev}', '${hash}');`,
      );
      expectProblem(await verifyFile(paths), 'inserted', 5);
    });

    it('swap of two seqs → reordered', async () => {
      const paths = await filled();
      tamper(
        paths.db,
        `UPDATE audit_entries SET seq = -4 WHERE seq = 4;
         UPDATE audit_entries SET seq = 4 WHERE seq = 3;
         UPDATE audit_entries SET seq = 3 WHERE seq = -4;`,
      );
      expectProblem(await verifyFile(paths), 'reordered', 3);
    });

    it('DELETE of the tail → truncated', async () => {
      const paths = await filled(12);
      tamper(paths.db, 'DELETE FROM audit_entries WHERE seq > 9');
      expectProblem(await verifyFile(paths), 'truncated', 10);
    });

    it('an altered signed head → bad-signature', async () => {
      const paths = await filled(12, 5);
      const db = new DatabaseSync(paths.db);
      const hash4 = db.prepare('SELECT hash FROM audit_entries WHERE seq = 4').get()?.['hash'] as string;
      db.close();
      tamper(paths.db, `UPDATE audit_heads SET seq = 4, hash = '${hash4}' WHERE seq = 5`);
      expectProblem(await verifyFile(paths), 'bad-signature', 4);
    });

    it('a head re-signed with another key (the node key replaced) → bad-signature', async () => {
      const paths = await filled(6);
      rmSync(paths.key);
      expectProblem(await verifyFile(paths), 'bad-signature', 6);
    });
  });

  describe('export', () => {
    async function exportTo(paths: { db: string; key: string }): Promise<string> {
      const ledger = open(paths);
      const lines: string[] = [];
      for await (const record of ledger.export()) lines.push(formatExportLine(record));
      await ledger.close();
      const file = join(paths.db, '..', 'export.jsonl');
      writeFileSync(file, `${lines.join('\n')}\n`);
      return file;
    }

    it('verifies offline with the key in the header, or a pinned key; detects an edited line', async () => {
      const paths = await filled(12, 5);
      const file = await exportTo(paths);
      const lines = readFileSync(file, 'utf8').trim().split('\n');
      assert.equal(JSON.parse(lines[0]!).type, 'header');
      assert.equal(lines.filter((l) => l.includes('"type":"head"')).length, 3);
      assert.equal(lines.filter((l) => l.includes('"type":"entry"')).length, 12);
      const intact = await verifyAuditExportFile(file);
      assert.ok(intact.ok, JSON.stringify(intact));
      assert.equal(intact.entries, 12);
      const publicKeyPem = new Ed25519NodeKey(paths.key).publicKeyPem();
      assert.ok((await verifyAuditExportFile(file, { publicKeyPem })).ok);

      const other = home();
      const otherKey = new Ed25519NodeKey(other.key).publicKeyPem();
      const pinned = await verifyAuditExportFile(file, { publicKeyPem: otherKey });
      assert.equal(pinned.ok, false);
      assert.equal(!pinned.ok && pinned.problem, 'bad-signature');

      const i = lines.findIndex((l) => l.includes('"type":"entry"') && l.includes('"seq":8,'));
      lines[i] = lines[i]!.replace('"instance":"ex_3"', '"instance":"ex_9"');
      writeFileSync(file, `${lines.join('\n')}\n`);
      expectProblem(await verifyAuditExportFile(file), 'edited', 8);
    });
  });
});

describe('SqliteAuditLedger with a witness', () => {
  const witnessFor = (paths: { dir: string; db: string }) =>
    new FileWitness({ dir: join(paths.dir, 'witness'), ledgerFile: paths.db });

  it('signs a head within signAfterMs of an append while idle, and records it in the witness', async () => {
    const paths = home();
    const witness = witnessFor(paths);
    const ledger = open(paths, { witness, signAfterMs: 20 });
    try {
      ledger.append('execution.started', 'ex_1', { instance: 'i' });
      await pollUntil('a head by the timer', () => (witness.read().length === 1 ? true : undefined));
      assert.equal(witness.read()[0]!.seq, 1);
    } finally {
      await ledger.close();
    }
  });

  it('a writer reopened right after a crash signs the dead writer’s unsigned tail once the grace has passed (export then holds it)', async () => {
    const paths = home();
    const realClock = { now: () => Date.now() };
    // The first life: its entries are written, but it dies (kill -9) before any head covers them.
    const dead = open(paths, { witness: witnessFor(paths), clock: realClock, signAfterMs: 3_600_000 });
    dead.append('execution.started', 'ex_tail', { instance: 'i' });
    dead.append('execution.finished', 'ex_tail', {
      status: 'succeeded',
      exitCode: 0,
      reason: null,
      durationMs: 1,
    });
    await dead.flush();
    // Restarted at once (within the grace), then idle: no append of its own would ever sign over the tail.
    const ledger = open(paths, {
      witness: witnessFor(paths),
      clock: realClock,
      writer: true,
      tailGraceMs: 300,
      signAfterMs: 20,
    });
    const exported = async () => {
      const kinds: string[] = [];
      for await (const record of ledger.export()) {
        if (record.type === 'entry') kinds.push(`${record.kind}:${record.execution ?? ''}`);
      }
      return kinds;
    };
    try {
      assert.deepEqual(await exported(), [], 'nothing signed yet: the export holds no entry');
      const kinds = await pollUntil('the adopted tail in the export', async () => {
        const now = await exported();
        return now.includes('execution.finished:ex_tail') ? now : undefined;
      });
      assert.deepEqual(kinds, [
        'execution.started:ex_tail',
        'execution.finished:ex_tail',
        'audit.tail-adopted:',
      ]);
      assert.equal((await ledger.verify()).ok, true);
    } finally {
      await ledger.close();
    }
  });

  it('a reader never signs; a writer refuses to sign a chain rewritten after the witnessed head', async () => {
    const paths = home();
    const witness = witnessFor(paths);
    const first = open(paths, { witness });
    first.append('execution.started', 'ex_1', { instance: 'a' });
    first.append('execution.started', 'ex_2', { instance: 'b' });
    await first.close();
    assert.equal(witness.read().length, 1);
    // Rewrite entry 1 and re-chain entry 2 (no key needed), delete the heads.
    const db = new DatabaseSync(paths.db);
    db.exec('DROP TRIGGER audit_entries_append_only_update; DROP TRIGGER audit_heads_append_only_delete');
    const rows = db.prepare('SELECT * FROM audit_entries ORDER BY seq').all() as unknown as {
      seq: number;
      ts: string;
      execution: string | null;
      kind: string;
      data: string;
    }[];
    let prev = '0'.repeat(64);
    for (const row of rows) {
      const link = {
        seq: row.seq,
        ts: row.ts,
        execution: row.execution,
        kind: row.kind,
        dataJson: row.seq === 1 ? '{"instance":"forged"}' : row.data,
        prevHash: prev,
      };
      const hash = nodeHasher.sha256Hex(prev + entryPreimage(link));
      db.prepare('UPDATE audit_entries SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?').run(
        link.dataJson,
        prev,
        hash,
        link.seq,
      );
      prev = hash;
    }
    db.exec('DELETE FROM audit_heads');
    db.close();

    const reader = open(paths, { witness });
    const verdict = await reader.verify();
    await reader.close();
    assert.equal(verdict.ok, false);
    assert.equal(witness.read().length, 1, 'a reader signed');

    const warnings: string[] = [];
    const writer = open(paths, { witness, writer: true, warn: (m) => warnings.push(m) });
    writer.append('execution.started', 'ex_3', { instance: 'c' });
    await writer.close();
    assert.equal(witness.read().length, 1, 'a writer signed over a forged chain');
    assert.match(warnings.join('\n'), /no longer has the hash of the head this node trusts/);
    const db2 = new DatabaseSync(paths.db);
    assert.equal((db2.prepare('SELECT COUNT(*) AS n FROM audit_heads').get() as { n: number }).n, 0);
    db2.close();
  });
});
