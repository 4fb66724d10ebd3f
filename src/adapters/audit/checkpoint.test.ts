/**
 * Ledger checkpoints on the real SQLite ledger and node key: pruning archives and drops entries under a signed
 * checkpoint, verify works from it — and the attacks: rows deleted without a checkpoint, a forged or edited
 * checkpoint, an edited archive, truncation after the checkpoint (witness), deletes the trigger must still refuse.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { checkpointMessage } from '../../domain/audit/checkpoint.ts';
import { formatExportLine } from '../../domain/audit/export-format.ts';
import type { AuditTampered } from '../../domain/audit/verify.ts';
import { archiveDir } from './checkpoint.ts';
import { verifyAuditExportFile } from './export-file.ts';
import { Ed25519NodeKey, nodeHasher } from './node-key.ts';
import { SqliteAuditLedger } from './sqlite-ledger.ts';
import { FileWitness } from './witness.ts';

const temps: string[] = [];
after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

let tick = 1_700_000_000_000;
const clock = { now: () => (tick += 1) };
const FAR = '2100-01-01T00:00:00.000Z';

function home() {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-ckpt-'));
  temps.push(dir);
  return {
    dir,
    db: join(dir, 'audit.db'),
    key: join(dir, 'keys', 'node-ed25519.pem'),
    witness: join(dir, 'witness'),
  };
}

type Paths = ReturnType<typeof home>;

function open(paths: Paths, options: { writer?: boolean; key?: string } = {}) {
  return SqliteAuditLedger.open({
    file: paths.db,
    signer: new Ed25519NodeKey(options.key ?? paths.key),
    hasher: nodeHasher,
    clock,
    headEvery: 5,
    witness: new FileWitness({ dir: paths.witness, ledgerFile: paths.db }),
    ...(options.writer === undefined ? {} : { writer: options.writer }),
  });
}

function appendRun(ledger: SqliteAuditLedger, ex: string): void {
  ledger.append('execution.started', ex, { instance: ex });
  ledger.append('execution.finished', ex, { status: 'succeeded', exitCode: 0, reason: null, durationMs: 1 });
}

async function filled(runs = 10): Promise<Paths> {
  const paths = home();
  const ledger = open(paths, { writer: true });
  for (let i = 1; i <= runs; i++) appendRun(ledger, `ex_${i}`);
  await ledger.close();
  return paths;
}

async function verify(paths: Paths) {
  const ledger = open(paths);
  try {
    return await ledger.verify();
  } finally {
    await ledger.close();
  }
}

/** A writer that prunes everything it may (keeping `keep`), then closes. */
async function prune(paths: Paths, keep: string[] = [], maxEntries?: number) {
  const ledger = open(paths, { writer: true });
  try {
    return await ledger.checkpoint({
      before: FAR,
      keep,
      dryRun: false,
      ...(maxEntries ? { maxEntries } : {}),
    });
  } finally {
    await ledger.close();
  }
}

/** SQL as someone with write access to the file: triggers dropped first. */
function tamper(file: string, sql: string, dropTriggers = true): void {
  const db = new DatabaseSync(file);
  try {
    if (dropTriggers) {
      for (const t of [
        'entries_append_only_delete',
        'entries_append_only_update',
        'heads_append_only_delete',
        'checkpoints_append_only_update',
        'checkpoints_append_only_delete',
      ]) {
        db.exec(`DROP TRIGGER IF EXISTS audit_${t}`);
      }
    }
    db.exec(sql);
  } finally {
    db.close();
  }
}

const count = (file: string, sql: string) => {
  const db = new DatabaseSync(file);
  try {
    return Number(Object.values(db.prepare(sql).get() ?? {})[0]);
  } finally {
    db.close();
  }
};

describe('ledger checkpoints', () => {
  it('archives and drops entries under a signed checkpoint; verify, --archive, export and lookups work from it', async () => {
    const paths = await filled(10);
    const outcome = await prune(paths, [], 12);
    assert.equal(outcome.entries, 12);
    assert.equal(outcome.more, true);
    const cp = outcome.checkpoint!;
    assert.deepEqual([cp.fromSeq, cp.seq, cp.count], [1, 12, 12]);
    assert.equal(count(paths.db, 'SELECT MIN(seq) FROM audit_entries'), 13);
    const archive = join(archiveDir(paths.db), cp.archive);
    const lines = gunzipSync(readFileSync(archive)).toString('utf8').trim().split('\n');
    assert.equal(lines.length, 13, 'header + 12 entries');

    const ledger = open(paths, { writer: true });
    try {
      const verified = await ledger.verify();
      assert.equal(verified.ok, true, JSON.stringify(verified));
      const archives = await ledger.verifyArchives();
      assert.deepEqual(archives, { ok: true, entries: 12, archives: 1 });
      assert.equal((await ledger.prunedAt('ex_3'))?.seq, 12);
      assert.equal(await ledger.prunedAt('ex_9'), undefined);
      assert.equal((await ledger.list('ex_9')).length, 2);
      // A second checkpoint continues the first: the rest, up to the ledger.checkpoint entry.
      const second = await ledger.checkpoint({ before: FAR, keep: [], dryRun: false });
      assert.equal(second.checkpoint?.fromSeq, 13);
      assert.equal(second.checkpoint?.prevHash, cp.hash);
      assert.equal((await ledger.verify()).ok, true);
      assert.equal((await ledger.verifyArchives()).ok, true);
      // The export carries the checkpoints: it verifies offline, from the newest.
      const exported = join(paths.dir, 'export.jsonl');
      const text: string[] = [];
      for await (const record of ledger.export()) text.push(formatExportLine(record));
      writeFileSync(exported, `${text.join('\n')}\n`);
      const offline = await verifyAuditExportFile(exported);
      assert.equal(offline.ok, true, JSON.stringify(offline));
    } finally {
      await ledger.close();
    }
    // The dropped entries' checkpoints are in the ledger, as entries.
    const reread = open(paths);
    try {
      const kinds = [];
      for await (const r of reread.export()) if (r.type === 'entry') kinds.push(r.kind);
      assert.ok(kinds.includes('ledger.checkpoint'));
    } finally {
      await reread.close();
    }
  });

  it('keeps the entries of a running execution and everything after its first one', async () => {
    const paths = await filled(6);
    const outcome = await prune(paths, ['ex_4']);
    assert.equal(outcome.throughSeq, 6);
    assert.match(outcome.kept ?? '', /ex_4 is still running/);
    assert.equal(count(paths.db, "SELECT COUNT(*) FROM audit_entries WHERE execution = 'ex_4'"), 2);
    assert.equal((await verify(paths)).ok, true);
  });

  it('a dry run drops nothing and writes no archive', async () => {
    const paths = await filled(3);
    const ledger = open(paths, { writer: true });
    try {
      const outcome = await ledger.checkpoint({ before: FAR, keep: [], dryRun: true });
      assert.equal(outcome.entries, 5, 'the newest entry always stays');
      assert.equal(outcome.checkpoint, undefined);
    } finally {
      await ledger.close();
    }
    assert.equal(count(paths.db, 'SELECT COUNT(*) FROM audit_entries'), 6);
    assert.equal(existsSync(archiveDir(paths.db)), false);
  });
});

describe('ledger checkpoints under attack', () => {
  it('the DELETE trigger still refuses entries no checkpoint covers', async () => {
    const paths = await filled(4);
    await prune(paths, [], 4);
    assert.throws(() => tamper(paths.db, 'DELETE FROM audit_entries WHERE seq = 5', false), /append-only/);
    assert.throws(() => tamper(paths.db, 'DELETE FROM audit_checkpoints', false), /append-only/);
    assert.equal((await verify(paths)).ok, true);
  });

  it('rows deleted directly, without a checkpoint, fail verify and it says where', async () => {
    const paths = await filled(5);
    tamper(paths.db, 'DELETE FROM audit_entries WHERE seq <= 4');
    const result = (await verify(paths)) as AuditTampered;
    assert.equal(result.ok, false);
    assert.equal(result.problem, 'deleted');
    assert.equal(result.firstBadSeq, 1);
    assert.match(result.message, /entries 1–4 are missing/);
  });

  it('rows deleted after a checkpoint (beyond what it covers) fail verify', async () => {
    const paths = await filled(8);
    await prune(paths, [], 6);
    tamper(paths.db, 'DELETE FROM audit_entries WHERE seq IN (7, 8)');
    const result = (await verify(paths)) as AuditTampered;
    assert.equal(result.problem, 'deleted');
    assert.equal(result.firstBadSeq, 7);
  });

  it('a checkpoint forged with another key, or with an edited count, fails verify', async () => {
    const paths = await filled(6);
    // Forged: the attacker signs a checkpoint over seqs 1–4 with a key of their own, then deletes those rows.
    const own = new Ed25519NodeKey(join(paths.dir, 'attacker.pem'));
    const db = new DatabaseSync(paths.db);
    const row = db.prepare('SELECT hash FROM audit_entries WHERE seq = 4').get() as { hash: string };
    db.close();
    const unsigned = {
      seq: 4,
      hash: row.hash,
      fromSeq: 1,
      prevHash: '0'.repeat(64),
      count: 4,
      ts: new Date().toISOString(),
      archive: '000000000001-000000000004.jsonl.gz',
      archiveSha256: 'a'.repeat(64),
    };
    const sig = own.sign(checkpointMessage(unsigned));
    tamper(
      paths.db,
      `INSERT INTO audit_checkpoints VALUES (4, '${row.hash}', 1, '${'0'.repeat(64)}', 4, '${unsigned.ts}', '${unsigned.archive}', '${'a'.repeat(64)}', '${own.keyId()}', '${sig}');
       DELETE FROM audit_entries WHERE seq <= 4;`,
      false,
    );
    const forged = (await verify(paths)) as AuditTampered;
    assert.equal(forged.problem, 'bad-signature');
    assert.match(forged.message, /checkpoint at seq 4/);

    const real = await filled(6);
    await prune(real, [], 4);
    tamper(real.db, 'UPDATE audit_checkpoints SET count = 3, from_seq = 2');
    const edited = (await verify(real)) as AuditTampered;
    assert.equal(edited.problem, 'bad-signature');
  });

  it('an edited or replaced archive fails verify --archive', async () => {
    const paths = await filled(6);
    const { checkpoint } = await prune(paths, [], 6);
    const file = join(archiveDir(paths.db), checkpoint!.archive);
    const text = gunzipSync(readFileSync(file)).toString('utf8').replace('"succeeded"', '"failed"');
    writeFileSync(file, gzipSync(text));
    const ledger = open(paths);
    try {
      assert.equal((await ledger.verify()).ok, true, 'the live chain is intact');
      const archives = await ledger.verifyArchives();
      assert.equal(archives.ok, false);
      assert.match((archives as AuditTampered).message, /altered or replaced/);
      rmSync(file);
      assert.match(((await ledger.verifyArchives()) as AuditTampered).message, /cannot be read/);
    } finally {
      await ledger.close();
    }
  });

  it('the witness still detects truncation beyond the checkpoint (entries and heads removed from the end)', async () => {
    const paths = await filled(10);
    await prune(paths, [], 6);
    const tip = count(paths.db, 'SELECT MAX(seq) FROM audit_entries');
    tamper(paths.db, `DELETE FROM audit_entries WHERE seq > 10; DELETE FROM audit_heads WHERE seq > 10;`);
    const result = (await verify(paths)) as AuditTampered;
    assert.equal(result.ok, false, `tip was ${tip}`);
    assert.ok(['heads-deleted', 'truncated'].includes(result.problem), result.problem);
  });
});
