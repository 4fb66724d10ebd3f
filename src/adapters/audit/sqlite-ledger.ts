/**
 * The audit ledger on SQLite: `$AEGIS_HOME/audit.db` (its own file, see docs/adr/0006-audit-ledger.md), through
 * Node's built-in `node:sqlite`, in WAL mode.
 *
 * Appends are group-committed: `append` chains and hashes the entry in memory and returns it at once; buffered
 * entries are written in one transaction when `batchSize` of them are waiting (synchronously, inside that
 * `append` — the back-pressure) or `flushIntervalMs` after the first of them, and on `flush`/`close`.
 * A head is signed (in the same transaction) at every `headEvery`-th entry since the last signed head, and `close`
 * signs the final head, so a ledger closed cleanly is signed to its last entry.
 *
 * Several processes may append to one ledger (two `aegis run`s): each write takes SQLite's write lock and checks
 * the stored tip; if another process appended meanwhile, the buffered entries are re-chained onto its entries.
 *
 * Rows are guarded by triggers against UPDATE and DELETE. That stops accidents, not attackers (a trigger can be
 * dropped) — what detects an attacker is the chain and the signed heads (`verify`).
 */
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import type { AuditLog, Clock, Hasher, Signer } from '../../app/ports.ts';
import { CanonicalJsonError } from '../../domain/audit/canonical-json.ts';
import {
  type AuditDataByKind,
  type AuditEntry,
  type AuditKind,
  type ChainLink,
  type ChainTip,
  chainNext,
  EMPTY_TIP,
  fromLink,
  headMessage,
  linkHash,
  type SignedHead,
} from '../../domain/audit/entry.ts';
import { AUDIT_EXPORT_FORMAT, type AuditExportRecord } from '../../domain/audit/export-format.ts';
import { type AuditVerification, ChainVerifier } from '../../domain/audit/verify.ts';
import { AegisError } from '../../domain/errors.ts';
import { type Migration, migrate } from '../store/sqlite/migrations.ts';

export const AUDIT_MIGRATIONS: readonly Migration[] = [
  {
    id: 1,
    name: 'hash-chained entries and signed heads',
    sql: `
      CREATE TABLE audit_entries (
        seq       INTEGER PRIMARY KEY NOT NULL,
        ts        TEXT NOT NULL,
        execution TEXT,
        kind      TEXT NOT NULL,
        data      TEXT NOT NULL, -- canonical JSON (RFC 8785 style), exactly the text that was hashed
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL
      );
      CREATE INDEX audit_entries_by_execution ON audit_entries (execution, seq);
      CREATE TABLE audit_heads (
        seq       INTEGER PRIMARY KEY NOT NULL,
        hash      TEXT NOT NULL,
        ts        TEXT NOT NULL,
        key_id    TEXT NOT NULL,
        signature TEXT NOT NULL
      );
      CREATE TRIGGER audit_entries_append_only_update BEFORE UPDATE ON audit_entries
        BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
      CREATE TRIGGER audit_entries_append_only_delete BEFORE DELETE ON audit_entries
        BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
      CREATE TRIGGER audit_heads_append_only_update BEFORE UPDATE ON audit_heads
        BEGIN SELECT RAISE(ABORT, 'audit heads are append-only'); END;
      CREATE TRIGGER audit_heads_append_only_delete BEFORE DELETE ON audit_heads
        BEGIN SELECT RAISE(ABORT, 'audit heads are append-only'); END;
    `,
  },
];

export interface SqliteAuditLedgerOptions {
  /** Database file; `:memory:` for a private in-memory ledger. */
  readonly file: string;
  readonly signer: Signer;
  readonly hasher: Hasher;
  readonly clock: Pick<Clock, 'now'>;
  /** Sign the head at every this-many-th entry after the last signed head (and at close). @default 1000 */
  readonly headEvery?: number;
  /** Longest an appended entry waits in memory before it is written. @default 5 */
  readonly flushIntervalMs?: number;
  /** Write as soon as this many entries are waiting. @default 1000 */
  readonly batchSize?: number;
}

interface CompiledOptions {
  readonly headEvery: number;
  readonly flushIntervalMs: number;
  readonly batchSize: number;
}

function withDefaults(options: SqliteAuditLedgerOptions): CompiledOptions {
  const positive = (name: string, value: number | undefined, fallback: number) => {
    const v = value ?? fallback;
    if (!Number.isSafeInteger(v) || v < 1) {
      throw new AegisError('USAGE', `audit ledger option ${name} must be a whole number ≥ 1, got ${v}`);
    }
    return v;
  };
  return {
    headEvery: positive('headEvery', options.headEvery, 1000),
    flushIntervalMs: positive('flushIntervalMs', options.flushIntervalMs, 5),
    batchSize: positive('batchSize', options.batchSize, 1000),
  };
}

interface EntryRow {
  readonly seq: number;
  readonly ts: string;
  readonly execution: string | null;
  readonly kind: string;
  readonly data: string;
  readonly prev_hash: string;
  readonly hash: string;
}

/** An EntryRow as an array, in ENTRY_COLUMNS order. */
type EntryArray = readonly [number, string, string | null, string, string, string, string];

interface HeadRow {
  readonly seq: number;
  readonly hash: string;
  readonly ts: string;
  readonly key_id: string;
  readonly signature: string;
}

const ENTRY_COLUMNS = 'seq, ts, execution, kind, data, prev_hash, hash';
const EXPORT_PAGE = 10_000;

export class SqliteAuditLedger implements AuditLog {
  readonly #db: DatabaseSync;
  readonly #signer: Signer;
  readonly #hasher: Hasher;
  readonly #clock: Pick<Clock, 'now'>;
  readonly #options: CompiledOptions;
  readonly #insertEntry: StatementSync;
  readonly #insertHead: StatementSync;
  readonly #tip: StatementSync;
  readonly #lastHead: StatementSync;
  readonly #byExecution: StatementSync;
  readonly #allEntries: StatementSync;
  readonly #entryPage: StatementSync;
  readonly #allHeads: StatementSync;
  /** Tip of the chain including buffered entries. */
  #head: ChainTip;
  /** Tip of what this process last saw stored. */
  #stored: ChainTip;
  #buffer: ChainLink[] = [];
  #timer: NodeJS.Timeout | undefined;
  /** Why the last write failed (cleared by a successful one). */
  #writeError: unknown;
  #closed = false;

  /**
   * Opens (creating if needed) the ledger at `options.file`. A missing parent directory is created 0700, a new
   * database file 0600.
   */
  static open(options: SqliteAuditLedgerOptions): SqliteAuditLedger {
    const compiled = withDefaults(options);
    if (options.file !== ':memory:') {
      mkdirSync(dirname(options.file), { recursive: true, mode: 0o700 });
      createPrivateFile(options.file);
    }
    const db = new DatabaseSync(options.file);
    try {
      db.exec('PRAGMA journal_mode = WAL');
      db.exec('PRAGMA synchronous = NORMAL');
      db.exec('PRAGMA busy_timeout = 5000');
      migrate(db, AUDIT_MIGRATIONS);
      return new SqliteAuditLedger(db, options, compiled);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  private constructor(db: DatabaseSync, options: SqliteAuditLedgerOptions, compiled: CompiledOptions) {
    this.#db = db;
    this.#signer = options.signer;
    this.#hasher = options.hasher;
    this.#clock = options.clock;
    this.#options = compiled;
    this.#insertEntry = db.prepare(
      `INSERT INTO audit_entries (${ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#insertHead = db.prepare(
      'INSERT INTO audit_heads (seq, hash, ts, key_id, signature) VALUES (?, ?, ?, ?, ?)',
    );
    this.#tip = db.prepare('SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1');
    this.#lastHead = db.prepare('SELECT MAX(seq) AS seq FROM audit_heads');
    this.#byExecution = db.prepare(
      `SELECT ${ENTRY_COLUMNS} FROM audit_entries WHERE execution = ? ORDER BY seq`,
    );
    this.#allEntries = db.prepare(`SELECT ${ENTRY_COLUMNS} FROM audit_entries ORDER BY seq`);
    // Rows as arrays: a quarter less time than named rows when verify walks a million of them.
    this.#allEntries.setReturnArrays(true);
    this.#entryPage = db.prepare(
      `SELECT ${ENTRY_COLUMNS} FROM audit_entries WHERE seq > ? ORDER BY seq LIMIT ${EXPORT_PAGE}`,
    );
    this.#allHeads = db.prepare('SELECT seq, hash, ts, key_id, signature FROM audit_heads ORDER BY seq');
    this.#stored = this.#readTip();
    this.#head = this.#stored;
  }

  append<K extends AuditKind>(kind: K, execution: string | null, data: AuditDataByKind[K]): AuditEntry {
    if (this.#closed) throw new AegisError('INTERNAL', 'the audit ledger is closed');
    const ts = new Date(this.#clock.now()).toISOString();
    let next: ReturnType<typeof chainNext>;
    try {
      next = chainNext(this.#head, { ts, execution, kind, data }, this.#hasher.sha256Hex);
    } catch (error) {
      if (error instanceof CanonicalJsonError) {
        throw new AegisError('INTERNAL', `audit entry ${kind}: data ${error.message}`, { cause: error });
      }
      throw error;
    }
    this.#buffer.push(next.link);
    this.#head = next.link;
    if (this.#buffer.length >= this.#options.batchSize) {
      this.#write();
      // Fail closed: a caller that keeps appending while nothing can be stored must find out.
      if (this.#writeError !== undefined) throw this.#unwritable();
    } else {
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        this.#write();
      }, this.#options.flushIntervalMs).unref();
    }
    return next.entry;
  }

  async flush(): Promise<void> {
    this.#write();
    if (this.#writeError !== undefined) throw this.#unwritable();
  }

  async list(executionId: string): Promise<readonly AuditEntry[]> {
    await this.flush();
    return this.#byExecution
      .all(executionId)
      .map((row) => fromLink(toLinkFromRow(row as unknown as EntryRow)));
  }

  async verify(): Promise<AuditVerification> {
    await this.flush();
    // One read transaction: heads and entries from the same snapshot, whatever other writers do meanwhile.
    this.#db.exec('BEGIN');
    try {
      const heads = this.#allHeads.all().map((row) => toHead(row as unknown as HeadRow));
      const verifier = new ChainVerifier(
        {
          sha256Hex: this.#hasher.sha256Hex,
          verifySignature: (message, signature, keyId) => this.#signer.verify(message, signature, keyId),
        },
        heads,
      );
      for (const row of this.#allEntries.iterate() as Iterable<unknown> as Iterable<EntryArray>) {
        const link: ChainLink = {
          seq: row[0],
          ts: row[1],
          execution: row[2],
          kind: row[3],
          dataJson: row[4],
          prevHash: row[5],
          hash: row[6],
        };
        if (!verifier.push(link)) break;
      }
      return verifier.finish();
    } finally {
      this.#db.exec('COMMIT');
    }
  }

  async *export(): AsyncIterable<AuditExportRecord> {
    await this.flush();
    yield {
      type: 'header',
      format: AUDIT_EXPORT_FORMAT,
      publicKey: this.#signer.publicKeyPem(),
      keyId: this.#signer.keyId(),
      hash: 'sha256',
      canonicalization: 'rfc8785',
      exportedAt: new Date(this.#clock.now()).toISOString(),
    };
    // Heads first (see export-format.ts), then entries page by page; entries appended meanwhile are included
    // as an unsigned tail.
    const heads = this.#allHeads.all().map((row) => toHead(row as unknown as HeadRow));
    for (const head of heads) yield { type: 'head', ...head };
    let after = 0;
    for (;;) {
      const rows = this.#entryPage.all(after) as unknown as EntryRow[];
      for (const row of rows) yield { type: 'entry', ...fromLink(toLinkFromRow(row)) };
      if (rows.length < EXPORT_PAGE) break;
      after = rows[rows.length - 1]!.seq;
    }
  }

  /** Writes what is buffered, signs the final head and closes the database. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    try {
      this.#write();
      if (this.#writeError !== undefined) throw this.#unwritable();
      this.#transaction(() => {
        const tip = this.#readTip();
        if (tip.seq > this.#readLastHeadSeq()) this.#signHead(tip);
      });
    } finally {
      if (this.#db.isOpen) this.#db.close();
    }
  }

  /** Writes the buffer in one transaction; records (does not throw) a failure, keeping the buffer for a retry. */
  #write(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#buffer.length === 0 || !this.#db.isOpen) return;
    try {
      this.#transaction(() => {
        const tip = this.#readTip();
        const links =
          tip.seq === this.#stored.seq && tip.hash === this.#stored.hash ? this.#buffer : this.#rechain(tip);
        let lastHead = this.#readLastHeadSeq();
        for (const l of links) {
          this.#insertEntry.run(l.seq, l.ts, l.execution, l.kind, l.dataJson, l.prevHash, l.hash);
          if (l.seq - lastHead >= this.#options.headEvery) {
            this.#signHead(l);
            lastHead = l.seq;
          }
        }
        const last = links[links.length - 1]!;
        this.#stored = last;
        this.#head = last;
      });
      this.#buffer = [];
      this.#writeError = undefined;
    } catch (error) {
      this.#writeError = error;
    }
  }

  /** The buffered entries moved onto `tip` (another process appended since this one last wrote). */
  #rechain(tip: ChainTip): ChainLink[] {
    let prev = tip;
    return this.#buffer.map((link) => {
      const moved = { ...link, seq: prev.seq + 1, prevHash: prev.hash };
      const next = { ...moved, hash: linkHash(moved, this.#hasher.sha256Hex) };
      prev = next;
      return next;
    });
  }

  #signHead(tip: ChainTip): void {
    const head = { seq: tip.seq, hash: tip.hash, ts: new Date(this.#clock.now()).toISOString() };
    this.#insertHead.run(
      head.seq,
      head.hash,
      head.ts,
      this.#signer.keyId(),
      this.#signer.sign(headMessage(head)),
    );
  }

  #readTip(): ChainTip {
    const row = this.#tip.get() as { seq: number; hash: string } | undefined;
    return row === undefined ? EMPTY_TIP : { seq: row.seq, hash: row.hash };
  }

  #readLastHeadSeq(): number {
    return Number(this.#lastHead.get()?.['seq'] ?? 0);
  }

  #transaction(body: () => void): void {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      body();
      this.#db.exec('COMMIT');
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw error;
    }
  }

  #unwritable(): AegisError {
    const cause = this.#writeError;
    return new AegisError(
      'INTERNAL',
      `the audit ledger cannot be written (${this.#buffer.length} entries waiting): ${
        cause instanceof Error ? cause.message : String(cause)
      }`,
      { cause },
    );
  }
}

function toLinkFromRow(row: EntryRow): ChainLink {
  return {
    seq: row.seq,
    ts: row.ts,
    execution: row.execution,
    kind: row.kind,
    dataJson: row.data,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

function toHead(row: HeadRow): SignedHead {
  return { seq: row.seq, hash: row.hash, ts: row.ts, keyId: row.key_id, signature: row.signature };
}

/** Creates `file` with mode 0600 if it doesn't exist yet, so SQLite (and its -wal/-shm files) inherit that mode. */
function createPrivateFile(file: string): void {
  try {
    closeSync(openSync(file, 'wx', 0o600));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
}
