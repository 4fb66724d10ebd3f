/**
 * Ledger checkpoints on SQLite (domain/audit/checkpoint.ts): the one sanctioned way entries leave `audit.db`.
 *
 * `writeCheckpoint` picks the newest seq it may drop (every entry up to it older than the cutoff, none of an
 * execution or sandbox that is still running, all verified link by link from the previous checkpoint), writes those
 * entries to `audit-archive/<from>-<to>.jsonl.gz` beside the database (fsync'd, then renamed into place), signs a
 * checkpoint over the range and the archive's SHA-256, signs the same tip as an ordinary head (recorded by the
 * witness), and then — in one transaction — stores both and deletes the entries. The DELETE trigger lets through
 * only entries at or below the newest stored checkpoint; anything else is still refused, and a checkpoint row
 * anyone could insert without the node key makes `verify` fail (`bad-signature`).
 *
 * Each call drops at most `maxEntries` (one archive each), so a big backlog is pruned in steps the caller spaces
 * out, never in one long write lock.
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  createWriteStream,
  fsyncSync,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
} from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { DatabaseSync } from 'node:sqlite';
import { createGunzip, createGzip } from 'node:zlib';
import type { Clock, Hasher, Signer } from '../../app/ports.ts';
import {
  ArchiveVerifier,
  archiveName,
  type Checkpoint,
  type CheckpointFailure,
  type CheckpointOutcome,
  type CheckpointRequest,
  checkCheckpoints,
  checkpointMessage,
  type UnsignedCheckpoint,
} from '../../domain/audit/checkpoint.ts';
import {
  type ChainLink,
  type ChainTip,
  EMPTY_TIP,
  fromLink,
  headMessage,
  linkHash,
  type SignedHead,
  toLink,
} from '../../domain/audit/entry.ts';
import { AUDIT_EXPORT_FORMAT, formatExportLine, parseExportLine } from '../../domain/audit/export-format.ts';
import type { ChainCrypto } from '../../domain/audit/verify.ts';
import { AegisError } from '../../domain/errors.ts';
import type { Migration } from '../store/sqlite/migrations.ts';

/** The ledger's one retention migration: checkpoints, the pruned-execution index, and a DELETE trigger that knows them. */
export const CHECKPOINT_MIGRATION: Migration = {
  id: 2,
  name: 'ledger checkpoints: entries a signed checkpoint covers may be dropped, nothing else',
  sql: `
    CREATE TABLE audit_checkpoints (
      seq            INTEGER PRIMARY KEY NOT NULL,
      hash           TEXT NOT NULL,
      from_seq       INTEGER NOT NULL,
      prev_hash      TEXT NOT NULL,
      count          INTEGER NOT NULL,
      ts             TEXT NOT NULL,
      archive        TEXT NOT NULL,
      archive_sha256 TEXT NOT NULL,
      key_id         TEXT NOT NULL,
      signature      TEXT NOT NULL
    );
    CREATE TRIGGER audit_checkpoints_append_only_update BEFORE UPDATE ON audit_checkpoints
      BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
    CREATE TRIGGER audit_checkpoints_append_only_delete BEFORE DELETE ON audit_checkpoints
      BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
    -- Which executions (and sandboxes) had entries dropped, and at which checkpoint: so a lookup can say so.
    -- An index for messages only; verify never trusts it.
    CREATE TABLE audit_pruned_executions (
      execution      TEXT PRIMARY KEY NOT NULL,
      checkpoint_seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    DROP TRIGGER audit_entries_append_only_delete;
    CREATE TRIGGER audit_entries_append_only_delete BEFORE DELETE ON audit_entries
      WHEN OLD.seq > (SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints)
      BEGIN SELECT RAISE(ABORT, 'audit entries are append-only (only entries under a checkpoint are dropped: aegis prune)'); END;
  `,
};

interface CheckpointRow {
  readonly seq: number;
  readonly hash: string;
  readonly from_seq: number;
  readonly prev_hash: string;
  readonly count: number;
  readonly ts: string;
  readonly archive: string;
  readonly archive_sha256: string;
  readonly key_id: string;
  readonly signature: string;
}

function toCheckpoint(row: CheckpointRow): Checkpoint {
  return {
    seq: row.seq,
    hash: row.hash,
    fromSeq: row.from_seq,
    prevHash: row.prev_hash,
    count: row.count,
    ts: row.ts,
    archive: row.archive,
    archiveSha256: row.archive_sha256,
    keyId: row.key_id,
    signature: row.signature,
  };
}

export function readCheckpoints(db: DatabaseSync): Checkpoint[] {
  return db
    .prepare('SELECT * FROM audit_checkpoints ORDER BY seq')
    .all()
    .map((row) => toCheckpoint(row as unknown as CheckpointRow));
}

/** The checkpoint that dropped entries of `execution`, if one did. */
export function prunedAt(db: DatabaseSync, execution: string): Checkpoint | undefined {
  const row = db
    .prepare(
      'SELECT c.* FROM audit_pruned_executions p JOIN audit_checkpoints c ON c.seq = p.checkpoint_seq WHERE p.execution = ?',
    )
    .get(execution);
  return row === undefined ? undefined : toCheckpoint(row as unknown as CheckpointRow);
}

export function chainCrypto(signer: Signer, hasher: Hasher): ChainCrypto {
  return {
    sha256Hex: hasher.sha256Hex,
    verifySignature: (message, signature, keyId) => signer.verify(message, signature, keyId),
  };
}

export interface CheckpointDeps {
  readonly db: DatabaseSync;
  readonly signer: Signer;
  readonly hasher: Hasher;
  readonly clock: Pick<Clock, 'now'>;
  /** The ledger's database file: archives go to `audit-archive/` beside it. */
  readonly file: string;
  /** The chain up to here was verified by the ledger; nothing after it is dropped. */
  readonly verifiedTip: ChainTip;
  /** Inserts a head row and records it with the witness (the ledger's own path). */
  readonly storeHead: (head: SignedHead) => void;
  readonly witnessHead: (head: SignedHead) => void;
}

export function archiveDir(ledgerFile: string): string {
  return join(ledgerFile, '..', 'audit-archive');
}

/** Picks the range, archives it, signs and stores the checkpoint and drops the entries. See the module comment. */
export async function writeCheckpoint(
  deps: CheckpointDeps,
  request: CheckpointRequest,
): Promise<CheckpointOutcome> {
  const { db } = deps;
  const crypto = chainCrypto(deps.signer, deps.hasher);
  const existing = readCheckpoints(db);
  const checked = checkCheckpoints(existing, crypto);
  if (!checked.ok) {
    throw new AegisError('AUDIT_TAMPERED', `the ledger's checkpoints do not verify: ${checked.message}`, {
      hint: 'run `aegis audit verify`; nothing is pruned from a ledger that does not verify',
    });
  }
  const prev = checked.from ?? EMPTY_TIP;
  const one = (sql: string, ...params: (string | number)[]) =>
    Number(Object.values(db.prepare(sql).get(...params) ?? {})[0] ?? 0);
  const tip = one('SELECT COALESCE(MAX(seq), 0) FROM audit_entries');
  const firstNewer = one('SELECT COALESCE(MIN(seq), 0) FROM audit_entries WHERE ts >= ?', request.before);
  let through = firstNewer === 0 ? tip : firstNewer - 1;
  let kept: string | undefined;
  if (request.keep.length > 0) {
    const row = db
      .prepare(
        'SELECT seq, execution FROM audit_entries WHERE execution IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT 1',
      )
      .get(JSON.stringify(request.keep)) as { seq: number; execution: string } | undefined;
    if (row !== undefined && row.seq - 1 < through) {
      through = row.seq - 1;
      kept = `ledger entries from seq ${row.seq} on are kept: ${row.execution} is still running`;
    }
  }
  // The newest entry always stays: the chain's tip is where the next append links.
  through = Math.min(through, tip - 1);
  if (request.shippedThroughSeq !== undefined && through > request.shippedThroughSeq) {
    through = request.shippedThroughSeq;
    kept ??= `ledger entries after seq ${through} are kept: not yet shipped to the cluster ledger (PostgreSQL)`;
  }
  if (through > deps.verifiedTip.seq) {
    through = deps.verifiedTip.seq;
    kept ??= `ledger entries after seq ${through} are kept: not yet verified by this process`;
  }
  const max = request.maxEntries ?? 100_000;
  let more = false;
  if (through - prev.seq > max) {
    through = prev.seq + max;
    more = true;
  }
  if (through <= prev.seq) return { entries: 0, throughSeq: 0, more: false, ...(kept ? { kept } : {}) };
  const entries = through - prev.seq;
  if (request.dryRun) return { entries, throughSeq: through, more, ...(kept ? { kept } : {}) };

  const dir = archiveDir(deps.file);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const name = archiveName(prev.seq + 1, through);
  const last = await writeArchive(deps, join(dir, name), prev, through);
  const archiveSha256 = await sha256File(join(dir, name));
  const ts = new Date(deps.clock.now()).toISOString();
  const unsigned: UnsignedCheckpoint = {
    seq: through,
    hash: last.hash,
    fromSeq: prev.seq + 1,
    prevHash: prev.hash,
    count: entries,
    ts,
    archive: name,
    archiveSha256,
  };
  const checkpoint: Checkpoint = {
    ...unsigned,
    keyId: deps.signer.keyId(),
    signature: deps.signer.sign(checkpointMessage(unsigned)),
  };
  const headFields = { seq: through, hash: last.hash, ts };
  const head: SignedHead = {
    ...headFields,
    keyId: deps.signer.keyId(),
    signature: deps.signer.sign(headMessage(headFields)),
  };
  let newHead = false;
  db.exec('BEGIN IMMEDIATE');
  try {
    const stored = db.prepare('SELECT hash FROM audit_entries WHERE seq = ?').get(through) as
      | { hash: string }
      | undefined;
    if (stored?.hash !== last.hash) {
      throw new AegisError(
        'AUDIT_TAMPERED',
        `the ledger entry at seq ${through} changed while it was archived`,
      );
    }
    const headRow = db.prepare('SELECT hash FROM audit_heads WHERE seq = ?').get(through) as
      | { hash: string }
      | undefined;
    if (headRow === undefined) {
      deps.storeHead(head);
      newHead = true;
    }
    db.prepare(
      'INSERT INTO audit_checkpoints (seq, hash, from_seq, prev_hash, count, ts, archive, archive_sha256, key_id, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    ).run(
      checkpoint.seq,
      checkpoint.hash,
      checkpoint.fromSeq,
      checkpoint.prevHash,
      checkpoint.count,
      checkpoint.ts,
      checkpoint.archive,
      checkpoint.archiveSha256,
      checkpoint.keyId,
      checkpoint.signature,
    );
    db.prepare(
      'INSERT OR REPLACE INTO audit_pruned_executions (execution, checkpoint_seq) SELECT DISTINCT execution, ? FROM audit_entries WHERE seq <= ? AND execution IS NOT NULL',
    ).run(through, through);
    db.prepare('DELETE FROM audit_entries WHERE seq <= ?').run(through);
    db.exec('COMMIT');
  } catch (error) {
    if (db.isTransaction) db.exec('ROLLBACK');
    rmSync(join(dir, name), { force: true });
    throw error;
  }
  if (newHead) deps.witnessHead(head);
  return { entries, checkpoint, throughSeq: through, more, ...(kept ? { kept } : {}) };
}

/** Streams entries prev.seq+1..through into a gzipped export-format file, checking every link; returns the last. */
async function writeArchive(
  deps: CheckpointDeps,
  file: string,
  prev: ChainTip,
  through: number,
): Promise<ChainLink> {
  const temp = `${file}.${process.pid}.tmp`;
  const gzip = createGzip();
  const out = createWriteStream(temp, { mode: 0o600, flags: 'wx' });
  const done = new Promise<void>((resolve, reject) => {
    out.once('finish', resolve);
    out.once('error', reject);
    gzip.once('error', reject);
  });
  gzip.pipe(out);
  const write = async (line: string) => {
    if (!gzip.write(`${line}\n`)) await new Promise((resolve) => gzip.once('drain', resolve));
  };
  let last: ChainLink | undefined;
  try {
    await write(
      formatExportLine({
        type: 'header',
        format: AUDIT_EXPORT_FORMAT,
        publicKey: deps.signer.publicKeyPem(),
        keyId: deps.signer.keyId(),
        hash: 'sha256',
        canonicalization: 'rfc8785',
        exportedAt: new Date(deps.clock.now()).toISOString(),
      }),
    );
    const page = deps.db.prepare(
      'SELECT seq, ts, execution, kind, data, prev_hash, hash FROM audit_entries WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT 5000',
    );
    let at: ChainTip = prev;
    while (at.seq < through) {
      const rows = page.all(at.seq, through) as unknown as {
        seq: number;
        ts: string;
        execution: string | null;
        kind: string;
        data: string;
        prev_hash: string;
        hash: string;
      }[];
      if (rows.length === 0) break;
      for (const row of rows) {
        const link: ChainLink = {
          seq: row.seq,
          ts: row.ts,
          execution: row.execution,
          kind: row.kind,
          dataJson: row.data,
          prevHash: row.prev_hash,
          hash: row.hash,
        };
        if (
          link.seq !== at.seq + 1 ||
          link.prevHash !== at.hash ||
          linkHash(link, deps.hasher.sha256Hex) !== link.hash
        ) {
          throw new AegisError(
            'AUDIT_TAMPERED',
            `the ledger entry at seq ${at.seq + 1} does not follow from the chain before it: nothing was pruned`,
            { hint: 'run `aegis audit verify`' },
          );
        }
        await write(formatExportLine({ type: 'entry', ...fromLink(link) }));
        at = link;
        last = link;
      }
    }
    if (last === undefined || last.seq !== through) {
      throw new AegisError('AUDIT_TAMPERED', `the ledger has no entry at seq ${through}: nothing was pruned`);
    }
    gzip.end();
    await done;
    const fd = openSync(temp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, file);
    return last;
  } catch (error) {
    gzip.destroy();
    out.destroy();
    rmSync(temp, { force: true });
    throw error;
  }
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * `verify --archive`: every checkpoint's archive is present, hashes to the digest the checkpoint signed, and holds
 * exactly the chain the checkpoint names. Returns the first failure, or the entries verified.
 */
export async function verifyArchives(
  dir: string,
  checkpoints: readonly Checkpoint[],
  crypto: ChainCrypto,
): Promise<
  | { readonly ok: true; readonly entries: number; readonly archives: number }
  | ({ readonly ok: false } & CheckpointFailure)
> {
  const checked = checkCheckpoints(checkpoints, crypto);
  if (!checked.ok) return checked;
  let entries = 0;
  for (const cp of [...checkpoints].sort((a, b) => a.seq - b.seq)) {
    const file = join(dir, cp.archive);
    let digest: string;
    try {
      digest = await sha256File(file);
    } catch (error) {
      return {
        ok: false,
        problem: 'deleted',
        firstBadSeq: cp.fromSeq,
        message: `the archive of the checkpoint at seq ${cp.seq} (${file}) cannot be read: ${(error as Error).message}`,
      };
    }
    if (digest !== cp.archiveSha256) {
      return {
        ok: false,
        problem: 'edited',
        firstBadSeq: cp.fromSeq,
        message: `the archive ${cp.archive} has SHA-256 ${digest.slice(0, 16)}…, not the ${cp.archiveSha256.slice(0, 16)}… its checkpoint (seq ${cp.seq}) signed: it was altered or replaced`,
      };
    }
    const verifier = new ArchiveVerifier(cp, crypto);
    const lines = createInterface({
      input: createReadStream(file).pipe(createGunzip()),
      crlfDelay: Number.POSITIVE_INFINITY,
    });
    let lineNo = 0;
    for await (const line of lines) {
      lineNo += 1;
      if (line.trim() === '') continue;
      const parsed = parseExportLine(line);
      if (!parsed.ok || (parsed.record.type !== 'header' && parsed.record.type !== 'entry')) {
        return {
          ok: false,
          problem: 'malformed',
          firstBadSeq: cp.fromSeq,
          message: `archive ${cp.archive} line ${lineNo} is not a ledger entry`,
        };
      }
      if (parsed.record.type === 'entry') {
        const { type: _type, ...entry } = parsed.record;
        if (!verifier.push(toLink(entry))) break;
      }
    }
    const result = verifier.finish();
    if (!result.ok) return result;
    entries += result.entries;
  }
  return { ok: true, entries, archives: checkpoints.length };
}
