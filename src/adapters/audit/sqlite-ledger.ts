/**
 * The audit ledger on SQLite: `$AEGIS_HOME/audit.db` (its own file, see docs/adr/0006-audit-ledger.md), through
 * Node's built-in `node:sqlite`, in WAL mode.
 *
 * Appends are group-committed: `append` chains and hashes the entry in memory and returns it at once; buffered
 * entries are written in one transaction when `batchSize` of them are waiting (synchronously, inside that
 * `append` — the back-pressure) or `flushIntervalMs` after the first of them, and on `flush`/`close`. Once someone
 * awaits `durable()`, the write happens at the end of the current turn of the event loop instead (setImmediate):
 * every append and waiter of that turn share one commit, and an acknowledgement never waits out the interval.
 * A head is signed (in the same transaction) at every `headEvery`-th entry since the last signed head, at most
 * `signAfterMs` after an append (so the unsigned tail is short in time too) and on `close` — by a process that
 * appended something: reading, verifying or exporting never signs. Each head is then recorded by the witness
 * (witness.ts), outside the database.
 *
 * Never launder: a head is signed only over a chain this process verified link by link from the last head it trusts
 * (the newest head in the witness, or a stored head whose signature verifies). Entries this process appended are
 * chained by itself; anything another process wrote is re-read and checked before it is signed over. A chain that
 * doesn't check out is never signed; `warn` says why and `verify` reports it.
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
  type Checkpoint,
  type CheckpointOutcome,
  type CheckpointRequest,
  checkCheckpoints,
} from '../../domain/audit/checkpoint.ts';
import {
  AUDIT_KINDS,
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
import { addCoverage, LIFECYCLE_KINDS, type LifecycleCoverage } from '../../domain/audit/store-check.ts';
import { type AuditVerification, ChainVerifier } from '../../domain/audit/verify.ts';
import { AegisError } from '../../domain/errors.ts';
import { type Migration, migrate } from '../store/sqlite/migrations.ts';
import { reclaimSqliteSpace } from '../store/sqlite/reclaim.ts';
import {
  archiveDir,
  CHECKPOINT_MIGRATION,
  chainCrypto,
  prunedAt,
  readCheckpoints,
  verifyArchives,
  writeCheckpoint,
} from './checkpoint.ts';
import type { AuditWitness } from './witness.ts';

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
  CHECKPOINT_MIGRATION,
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
  /** Sign a head at most this long after an append that no head covers yet. @default 1000 */
  readonly signAfterMs?: number;
  /** Records every signed head outside the database; verify checks the ledger against it. @default none */
  readonly witness?: AuditWitness;
  /**
   * This process will write (a server, `aegis run`): entries left unsigned by a writer that crashed are recorded
   * (`audit.tail-adopted`) and then signed. Readers (`aegis audit …`) leave them alone. @default false
   */
  readonly writer?: boolean;
  /** An unsigned tail older than this has no live writer: `verify` reports it, a writer adopts it. @default 10000 */
  readonly tailGraceMs?: number;
  /** Where warnings go (a refused signature, a moved key). @default stderr */
  readonly warn?: (message: string) => void;
}

interface CompiledOptions {
  readonly headEvery: number;
  readonly flushIntervalMs: number;
  readonly batchSize: number;
  readonly signAfterMs: number;
  readonly tailGraceMs: number;
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
    signAfterMs: positive('signAfterMs', options.signAfterMs, 1000),
    tailGraceMs: positive('tailGraceMs', options.tailGraceMs, 10_000),
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
  readonly #range: StatementSync;
  readonly #witness: AuditWitness | undefined;
  readonly #file: string;
  readonly #warn: (message: string) => void;
  /** The newest head this process trusts: witnessed, or stored with a signature that verifies. */
  #trusted: ChainTip;
  /** The stored chain up to here was checked link by link from `#trusted` (or chained by this process). */
  #verifiedTip: ChainTip;
  /** Why this process refuses to sign (the stored chain does not follow from the trusted head). */
  #refusal: string | undefined;
  /** Seq of the newest stored head, as of the last write. */
  #lastHeadSeq = 0;
  /** This process appended something (only writers sign). */
  #appended = false;
  #signTimer: NodeJS.Timeout | undefined;
  /** A fresh stale tail found at open: adopted once it is older than the grace, unless a head covers it by then. */
  #adoptTimer: NodeJS.Timeout | undefined;
  /** `durable()` callers waiting for the next group commit. */
  #waiters: { resolve: () => void; reject: (error: unknown) => void }[] = [];
  /** Tip of the chain including buffered entries. */
  #head: ChainTip;
  /** Tip of what this process last saw stored. */
  #stored: ChainTip;
  #buffer: ChainLink[] = [];
  #timer: NodeJS.Timeout | undefined;
  /** The write a `durable()` waiter asked for: at the end of this turn of the event loop. */
  #soon: NodeJS.Immediate | undefined;
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
      // A new ledger gives pruned pages back to the file system (checkpoint → reclaimSpace); no effect on old ones.
      db.exec('PRAGMA auto_vacuum = INCREMENTAL');
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
    this.#range = db.prepare(
      `SELECT ${ENTRY_COLUMNS} FROM audit_entries WHERE seq >= ? AND seq <= ? ORDER BY seq`,
    );
    this.#range.setReturnArrays(true);
    this.#witness = options.witness;
    this.#file = options.file;
    this.#warn = options.warn ?? ((message) => process.stderr.write(`aegis: warning: ${message}\n`));
    this.#stored = this.#readTip();
    this.#head = this.#stored;
    this.#trusted = this.#trustedHead();
    this.#verifiedTip = this.#trusted;
    this.#lastHeadSeq = this.#readLastHeadSeq();
    if (options.writer === true) this.#adoptStaleTail();
  }

  /** The witness's newest head, or a newer stored head whose signature verifies with the node key. */
  #trustedHead(): ChainTip {
    let trusted: ChainTip = EMPTY_TIP;
    for (const head of this.#witness?.read() ?? []) {
      if (head.seq > trusted.seq && this.#signer.verify(headMessage(head), head.signature, head.keyId)) {
        trusted = { seq: head.seq, hash: head.hash };
      }
    }
    const stored = this.#allHeads.all().map((row) => toHead(row as unknown as HeadRow));
    for (let i = stored.length - 1; i >= 0; i--) {
      const head = stored[i]!;
      if (head.seq <= trusted.seq) break;
      if (this.#signer.verify(headMessage(head), head.signature, head.keyId)) {
        return { seq: head.seq, hash: head.hash };
      }
    }
    return trusted;
  }

  /**
   * Entries after the trusted head that no live writer will sign (a crash): recorded, then signed like any. A tail
   * younger than the grace may still be another live writer's: it is looked at again once the grace has passed —
   * a node restarted at once after a kill -9 and then idle would otherwise never sign its previous life's last
   * entries, and an export (signed entries only) would miss them.
   */
  #adoptStaleTail(): void {
    if (this.#closed || this.#stored.seq <= this.#trusted.seq) return;
    // Signed over since (this process appended, or the other writer signed): nothing is stale any more.
    if (this.#readLastHeadSeq() >= this.#stored.seq) return;
    const last = this.#range.get(this.#stored.seq, this.#stored.seq) as unknown as EntryArray | undefined;
    if (last === undefined) return;
    const ageMs = this.#clock.now() - Date.parse(last[1]);
    if (!(ageMs > this.#options.tailGraceMs)) {
      this.#adoptTimer ??= setTimeout(
        () => {
          this.#adoptTimer = undefined;
          try {
            this.#adoptStaleTail();
          } catch (error) {
            this.#warn(
              `adopting the unsigned tail failed: ${error instanceof Error ? error.message : String(error)}`,
            );
          }
        },
        Math.max(1, this.#options.tailGraceMs - Math.max(0, ageMs) + 1),
      ).unref();
      return;
    }
    this.append(AUDIT_KINDS.auditTailAdopted, null, {
      fromSeq: this.#trusted.seq + 1,
      toSeq: this.#stored.seq,
      newestTs: last[1],
      reason: 'found after the newest signed head when the ledger was opened for writing (a writer crashed?)',
    });
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
    this.#appended = true;
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

  durable(): Promise<void> {
    if (this.#buffer.length === 0) {
      return this.#writeError === undefined ? Promise.resolve() : Promise.reject(this.#unwritable());
    }
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
      // Someone waits (an acknowledgement, a start): commit once the callbacks of this turn have run — concurrent
      // requests of the turn share the transaction — not after the interval. A pending immediate keeps the process
      // alive, and a failed write rejects the waiters (the buffer stays for the next attempt).
      this.#soon ??= setImmediate(() => {
        this.#soon = undefined;
        this.#write();
      });
    });
  }

  async lifecycleCoverage(): Promise<ReadonlyMap<string, LifecycleCoverage>> {
    await this.flush();
    const map = new Map<string, LifecycleCoverage>();
    const rows = this.#db
      .prepare(
        `SELECT execution, kind, CASE WHEN kind = ? THEN json_extract(data, '$.status') END AS status
           FROM audit_entries WHERE execution IS NOT NULL AND kind IN (${LIFECYCLE_KINDS.map(() => '?').join(', ')})`,
      )
      .iterate(AUDIT_KINDS.executionRecovered, ...LIFECYCLE_KINDS);
    for (const row of rows as Iterable<{ execution: string; kind: string; status: unknown }>) {
      addCoverage(map, row.execution, row.kind, row.status);
    }
    return map;
  }

  async list(executionId: string): Promise<readonly AuditEntry[]> {
    await this.flush();
    return this.#byExecution
      .all(executionId)
      .map((row) => fromLink(toLinkFromRow(row as unknown as EntryRow)));
  }

  async verify(): Promise<AuditVerification> {
    await this.flush();
    // The witness first: it is written after the database, so everything it holds is already in the snapshot.
    const witnessed = this.#witness?.read() ?? [];
    // One read transaction: heads and entries from the same snapshot, whatever other writers do meanwhile.
    this.#db.exec('BEGIN');
    try {
      const heads = this.#allHeads.all().map((row) => toHead(row as unknown as HeadRow));
      // Entries a signed checkpoint covers were archived and dropped: the walk starts after the newest one.
      const checked = checkCheckpoints(readCheckpoints(this.#db), chainCrypto(this.#signer, this.#hasher));
      if (!checked.ok) {
        const { ok: _ok, ...failure } = checked;
        return { ok: false, ...failure, entries: 0 };
      }
      const verifier = new ChainVerifier(
        {
          sha256Hex: this.#hasher.sha256Hex,
          verifySignature: (message, signature, keyId) => this.#signer.verify(message, signature, keyId),
        },
        heads,
        {
          witnessed: witnessed.map(asSignedHead),
          nowMs: this.#clock.now(),
          tailGraceMs: this.#options.tailGraceMs,
          ...(checked.from ? { from: checked.from } : {}),
        },
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
    // The witness's newest head goes into the header: the export must reach it (see export-format.ts).
    const witnessed = this.#witness?.read() ?? [];
    const newest = witnessed.reduce<WitnessedHead | undefined>(
      (a, b) => (a === undefined || b.seq > a.seq ? b : a),
      undefined,
    );
    const retired = this.#signer.retiredKeys?.() ?? [];
    yield {
      type: 'header',
      format: AUDIT_EXPORT_FORMAT,
      publicKey: this.#signer.publicKeyPem(),
      keyId: this.#signer.keyId(),
      hash: 'sha256',
      canonicalization: 'rfc8785',
      exportedAt: new Date(this.#clock.now()).toISOString(),
      ...(newest === undefined ? {} : { witnessed: asSignedHead(newest) }),
      ...(retired.length === 0 ? {} : { keys: retired }),
    };
    // Heads first (see export-format.ts), then the entries that a head covers, page by page: entries not signed
    // yet stay out (nothing would vouch for them offline).
    for (const checkpoint of readCheckpoints(this.#db)) yield { type: 'checkpoint', ...checkpoint };
    const heads = this.#allHeads.all().map((row) => toHead(row as unknown as HeadRow));
    for (const head of heads) yield { type: 'head', ...head };
    const through = Math.max(newest?.seq ?? 0, ...heads.map((h) => h.seq));
    let after = 0;
    while (after < through) {
      const rows = this.#entryPage.all(after) as unknown as EntryRow[];
      for (const row of rows) {
        if (row.seq > through) return;
        yield { type: 'entry', ...fromLink(toLinkFromRow(row)) };
      }
      if (rows.length < EXPORT_PAGE) break;
      after = rows[rows.length - 1]!.seq;
    }
  }

  /**
   * Archives and drops old entries under a signed checkpoint (adapters/audit/checkpoint.ts), then records
   * `ledger.checkpoint`. Refused while this process distrusts the stored chain.
   */
  async checkpoint(request: CheckpointRequest): Promise<CheckpointOutcome> {
    if (this.#closed) throw new AegisError('INTERNAL', 'the audit ledger is closed');
    await this.flush();
    if (this.#refusal !== undefined) {
      throw new AegisError('AUDIT_TAMPERED', `nothing is pruned from an altered ledger: ${this.#refusal}`, {
        hint: 'run `aegis audit verify`',
      });
    }
    const outcome = await writeCheckpoint(
      {
        db: this.#db,
        signer: this.#signer,
        hasher: this.#hasher,
        clock: this.#clock,
        file: this.#file,
        verifiedTip: this.#verifiedTip,
        storeHead: (head) => {
          this.#insertHead.run(head.seq, head.hash, head.ts, head.keyId, head.signature);
        },
        witnessHead: (head) => this.#witnessHead(head),
      },
      request,
    );
    const cp = outcome.checkpoint;
    if (cp !== undefined) {
      this.append(AUDIT_KINDS.ledgerCheckpoint, null, {
        seq: cp.seq,
        hash: cp.hash,
        fromSeq: cp.fromSeq,
        count: cp.count,
        archive: cp.archive,
        archiveSha256: cp.archiveSha256,
      });
      await this.flush();
    }
    return outcome;
  }

  /** The checkpoint that dropped entries of this execution (or sandbox), if any did. */
  async prunedAt(executionId: string): Promise<Checkpoint | undefined> {
    return prunedAt(this.#db, executionId);
  }

  async checkpoints(): Promise<readonly Checkpoint[]> {
    return readCheckpoints(this.#db);
  }

  /** `verify --archive`: each checkpoint's archive matches its signed digest and chain. */
  verifyArchives(dir: string = archiveDir(this.#file)): ReturnType<typeof verifyArchives> {
    return verifyArchives(dir, readCheckpoints(this.#db), chainCrypto(this.#signer, this.#hasher));
  }

  /** Gives free pages back to the file system; returns the database file's bytes before and after. */
  async reclaimSpace(): Promise<{ readonly beforeBytes: number; readonly afterBytes: number }> {
    await this.flush();
    return reclaimSqliteSpace(this.#db);
  }

  /** Writes what is buffered, signs the final head and closes the database. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#soon !== undefined) clearImmediate(this.#soon);
    this.#soon = undefined;
    if (this.#signTimer !== undefined) clearTimeout(this.#signTimer);
    this.#signTimer = undefined;
    if (this.#adoptTimer !== undefined) clearTimeout(this.#adoptTimer);
    this.#adoptTimer = undefined;
    try {
      this.#write(this.#appended);
      if (this.#writeError !== undefined) throw this.#unwritable();
    } finally {
      if (this.#db.isOpen) this.#db.close();
    }
  }

  /**
   * Writes the buffer in one transaction (and, with `signTip`, signs the tip even if no `headEvery` boundary was
   * crossed); records (does not throw) a failure, keeping the buffer for a retry.
   */
  #write(signTip = false): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#soon !== undefined) {
      clearImmediate(this.#soon);
      this.#soon = undefined;
    }
    if ((this.#buffer.length === 0 && !signTip) || !this.#db.isOpen) {
      this.#settleWaiters();
      return;
    }
    const signed: SignedHead[] = [];
    try {
      this.#transaction(() => {
        const tip = this.#readTip();
        if (tip.seq !== this.#verifiedTip.seq || tip.hash !== this.#verifiedTip.hash) this.#checkStored(tip);
        const links =
          tip.seq === this.#stored.seq && tip.hash === this.#stored.hash ? this.#buffer : this.#rechain(tip);
        let lastHead = this.#readLastHeadSeq();
        for (const l of links) {
          this.#insertEntry.run(l.seq, l.ts, l.execution, l.kind, l.dataJson, l.prevHash, l.hash);
          if (this.#refusal === undefined) this.#verifiedTip = l;
          if (l.seq - lastHead >= this.#options.headEvery && this.#refusal === undefined) {
            signed.push(this.#signHead(l));
            lastHead = l.seq;
          }
        }
        const last = links.at(-1) ?? tip;
        if (signTip && last.seq > lastHead && this.#refusal === undefined) {
          signed.push(this.#signHead(last));
          lastHead = last.seq;
        }
        this.#stored = last;
        this.#head = last;
        this.#lastHeadSeq = lastHead;
      });
      this.#buffer = [];
      for (const head of signed) this.#witnessHead(head);
      this.#writeError = undefined;
    } catch (error) {
      this.#writeError = error;
    }
    this.#settleWaiters();
    this.#armSignTimer();
  }

  #settleWaiters(): void {
    if (this.#waiters.length === 0) return;
    const waiters = this.#waiters;
    if (this.#writeError === undefined && this.#buffer.length === 0) {
      this.#waiters = [];
      for (const w of waiters) w.resolve();
    } else if (this.#writeError !== undefined) {
      this.#waiters = [];
      const error = this.#unwritable();
      for (const w of waiters) w.reject(error);
    }
  }

  /** A head within `signAfterMs` of an append it doesn't cover yet (not reset by later appends). */
  #armSignTimer(): void {
    if (this.#signTimer !== undefined || this.#closed || !this.#appended || this.#refusal !== undefined)
      return;
    if (this.#head.seq <= this.#lastHeadSeq) return;
    this.#signTimer = setTimeout(() => {
      this.#signTimer = undefined;
      this.#write(true);
    }, this.#options.signAfterMs).unref();
  }

  /**
   * Checks, link by link, the stored entries from the last verified point (at first: the trusted head) to `tip`
   * — entries written by another process, or by someone with write access to the file. A chain that doesn't follow
   * is never signed over.
   */
  #checkStored(tip: ChainTip): void {
    if (this.#refusal !== undefined) return;
    let from = this.#verifiedTip;
    const checked = checkCheckpoints(readCheckpoints(this.#db), chainCrypto(this.#signer, this.#hasher));
    // Another process pruned under a checkpoint since: its (signed) tip is where the stored chain now starts.
    let fromCheckpoint = false;
    if (checked.ok && checked.from !== undefined && checked.from.seq >= from.seq) {
      from = checked.from;
      fromCheckpoint = true;
    }
    let refusal: string | undefined;
    if (tip.seq < from.seq) {
      refusal = `the ledger ends at seq ${tip.seq}, before the head this node trusts (seq ${from.seq})`;
    } else {
      let prev: ChainTip | undefined = from.seq === 0 || fromCheckpoint ? from : undefined;
      for (const row of this.#range.iterate(
        fromCheckpoint ? from.seq + 1 : Math.max(1, from.seq),
        tip.seq,
      ) as Iterable<unknown> as Iterable<EntryArray>) {
        const link: ChainLink = {
          seq: row[0],
          ts: row[1],
          execution: row[2],
          kind: row[3],
          dataJson: row[4],
          prevHash: row[5],
          hash: row[6],
        };
        if (prev === undefined) {
          // The first row is the trusted head's own entry.
          if (link.seq !== from.seq || link.hash !== from.hash) {
            refusal = `the entry at seq ${from.seq} no longer has the hash of the head this node trusts`;
            break;
          }
          prev = link;
          continue;
        }
        if (
          link.seq !== prev.seq + 1 ||
          link.prevHash !== prev.hash ||
          linkHash(link, this.#hasher.sha256Hex) !== link.hash
        ) {
          refusal = `the stored entry at seq ${prev.seq + 1} does not follow from the chain before it`;
          break;
        }
        prev = link;
      }
      if (refusal === undefined && (prev === undefined || prev.seq !== tip.seq || prev.hash !== tip.hash)) {
        refusal = `the stored chain does not lead from seq ${from.seq} to its tip at seq ${tip.seq}`;
      }
    }
    if (refusal === undefined) {
      this.#verifiedTip = tip;
      return;
    }
    this.#refusal = refusal;
    this.#warn(
      `the audit ledger was altered (${refusal}): no head will be signed over it — run \`aegis audit verify\``,
    );
  }

  #witnessHead(head: SignedHead): void {
    this.#witness?.record(head, this.#signer.publicKeyPem());
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

  #signHead(tip: ChainTip): SignedHead {
    const head = { seq: tip.seq, hash: tip.hash, ts: new Date(this.#clock.now()).toISOString() };
    const signed: SignedHead = {
      ...head,
      keyId: this.#signer.keyId(),
      signature: this.#signer.sign(headMessage(head)),
    };
    this.#insertHead.run(signed.seq, signed.hash, signed.ts, signed.keyId, signed.signature);
    this.#trusted = tip;
    return signed;
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

type WitnessedHead = ReturnType<AuditWitness['read']>[number];

function asSignedHead(head: SignedHead): SignedHead {
  return { seq: head.seq, hash: head.hash, ts: head.ts, keyId: head.keyId, signature: head.signature };
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
