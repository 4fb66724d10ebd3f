/**
 * Ships this node's local ledger (`$AEGIS_HOME/audit.db`) to the cluster ledger in PostgreSQL
 * (postgres-cluster-ledger.ts; docs/adr/0116-cluster-ledger.md).
 *
 * - Only what is durable locally: it reads committed rows through its own read-only connection to the SQLite file
 *   (so entries written by any local process — a server, `aegis run` — are shipped), never the writer's buffer.
 * - Batched, asynchronous, ordered, idempotent: every `intervalMs` (and on `stop`) it ships the entries after
 *   PostgreSQL's tip for this node, `batchSize` per transaction, each run continuing the chain there, then the heads
 *   those entries reach. A crash between two batches loses nothing: on start it resumes from PostgreSQL's tip.
 * - Falling behind is fine (PostgreSQL down: it retries; the lag metrics grow); diverging is not: when the chain in
 *   PostgreSQL no longer continues into the local one (its rows were changed, or the local ledger was), it stops
 *   shipping and records an incident. When PostgreSQL holds less than this node shipped (the state file, outside
 *   the home beside the witness, says how far), the deleted rows are reported and shipped again.
 * - The node's key is published first; a different key already published for this node id makes it refuse to ship
 *   anything (and the incident names both keys).
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import type { Clock, Signer } from '../../app/ports.ts';
import {
  type ChainLink,
  type ChainTip,
  EMPTY_TIP,
  fromLink,
  type SignedHead,
} from '../../domain/audit/entry.ts';
import { AegisError } from '../../domain/errors.ts';
import type { NodeAuditEntry, PostgresClusterLedger } from './postgres-cluster-ledger.ts';

export interface LedgerReplicatorOptions {
  /** This node's id (`$AEGIS_HOME/node-id` / `--node-id`). */
  readonly node: string;
  /** The local ledger file (`$AEGIS_HOME/audit.db`). */
  readonly ledgerFile: string;
  readonly cluster: PostgresClusterLedger;
  readonly signer: Pick<Signer, 'keyId' | 'publicKeyPem'>;
  readonly clock: Pick<Clock, 'now'>;
  /** Where the newest shipped entry is recorded (outside the home: beside the witness). @default none */
  readonly stateFile?: string;
  /** Ship at most this long after an entry is stored. @default 1000 */
  readonly intervalMs?: number;
  /** Entries per PostgreSQL transaction. @default 1000 */
  readonly batchSize?: number;
  /** Where problems go. @default stderr */
  readonly warn?: (message: string) => void;
}

export type ReplicationState = 'starting' | 'replicating' | 'refused' | 'diverged' | 'stopped';

export interface ReplicationStatus {
  readonly node: string;
  readonly state: ReplicationState;
  /** Newest local entry / newest entry in PostgreSQL. */
  readonly localSeq: number;
  readonly replicatedSeq: number;
  /** Entries stored locally, not yet in PostgreSQL. */
  readonly lagEntries: number;
  /** Age of the oldest entry not yet in PostgreSQL (0 when caught up). */
  readonly lagMs: number;
  /** Why it stopped shipping (refused, diverged) or the last failure to reach PostgreSQL. */
  readonly problem: string | undefined;
}

type EntryArray = readonly [number, string, string | null, string, string, string, string];

export class LedgerReplicator {
  readonly #o: LedgerReplicatorOptions;
  readonly #intervalMs: number;
  readonly #batchSize: number;
  readonly #warn: (message: string) => void;
  readonly #db: DatabaseSync;
  readonly #after: StatementSync;
  readonly #tip: StatementSync;
  readonly #at: StatementSync;
  readonly #heads: StatementSync;
  readonly #byExecution: StatementSync;
  #state: ReplicationState = 'starting';
  #problem: string | undefined;
  #replicated: ChainTip = EMPTY_TIP;
  #headSeq = 0;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #resumed = false;
  /** Ship no entry past this seq (while proving a key rotation before the new key is published). */
  #limitSeq = Number.MAX_SAFE_INTEGER;

  constructor(options: LedgerReplicatorOptions) {
    this.#o = options;
    this.#intervalMs = options.intervalMs ?? 1000;
    this.#batchSize = options.batchSize ?? 1000;
    this.#warn = options.warn ?? ((message) => process.stderr.write(`aegis: warning: ${message}\n`));
    this.#db = new DatabaseSync(options.ledgerFile, { readOnly: true });
    this.#db.exec('PRAGMA busy_timeout = 5000');
    const cols = 'seq, ts, execution, kind, data, prev_hash, hash';
    this.#after = this.#db.prepare(`SELECT ${cols} FROM audit_entries WHERE seq > ? ORDER BY seq LIMIT ?`);
    this.#after.setReturnArrays(true);
    this.#tip = this.#db.prepare('SELECT seq, ts FROM audit_entries ORDER BY seq DESC LIMIT 1');
    this.#at = this.#db.prepare('SELECT seq, hash, ts FROM audit_entries WHERE seq = ?');
    this.#heads = this.#db.prepare(
      'SELECT seq, hash, ts, key_id, signature FROM audit_heads WHERE seq > ? AND seq <= ? ORDER BY seq',
    );
    this.#byExecution = this.#db.prepare(
      `SELECT ${cols} FROM audit_entries WHERE execution = ? AND seq > ? ORDER BY seq`,
    );
    this.#byExecution.setReturnArrays(true);
  }

  get node(): string {
    return this.#o.node;
  }

  /**
   * Publishes the key, resumes from PostgreSQL's tip for this node, checks it against the local chain and the state
   * file, ships what is waiting, and keeps shipping every `intervalMs`. Throws only when PostgreSQL can't be reached.
   */
  async start(): Promise<void> {
    const { cluster, node, signer, clock } = this.#o;
    const now = () => new Date(clock.now()).toISOString();
    const key = { keyId: signer.keyId(), publicKey: signer.publicKeyPem() };
    let published = await cluster.publishKey(node, key, now(), { quiet: true });
    if (!published.ok) {
      // After `aegis audit rotate-key` the entry that hands over to this key, and the old key's head over it, may
      // still be local only: ship up to the newest head a published key signed, then ask again.
      const trusted = new Set(published.published.keys.map((k) => k.keyId));
      const lastTrusted = (this.#heads.all(0, Number.MAX_SAFE_INTEGER) as unknown as HeadRow[])
        .filter((h) => trusted.has(h.key_id))
        .reduce((max, h) => Math.max(max, h.seq), 0);
      if (lastTrusted > 0 && (await this.#resume())) {
        this.#state = 'replicating';
        this.#limitSeq = lastTrusted;
        await this.replicateOnce();
        this.#limitSeq = Number.MAX_SAFE_INTEGER;
        if (this.#state === 'replicating') this.#state = 'starting';
      }
      if (this.#state !== 'starting') return;
      published = await cluster.publishKey(node, key, now());
    }
    if (!published.ok) {
      return this.#halt(
        'refused',
        `node id ${node} is published with key ${published.published.keyId}, not this node's key ${signer.keyId()}: ` +
          'this node ships nothing to the cluster ledger (give it its own --node-id, or restore its key)',
      );
    }
    if (!(await this.#resume())) return;
    this.#state = 'replicating';
    await this.replicateOnce();
    this.#schedule();
  }

  /**
   * Resumes from PostgreSQL's tip for this node (once): reports rows the state file says were shipped but are gone,
   * and halts (false) when that tip is not an entry of the local chain.
   */
  async #resume(): Promise<boolean> {
    if (this.#resumed) return true;
    const { cluster, node, clock } = this.#o;
    const now = () => new Date(clock.now()).toISOString();
    this.#replicated = await cluster.tip(node);
    this.#headSeq = await cluster.headSeq(node);
    const shipped = this.#readState();
    if (shipped !== undefined && shipped.seq > this.#replicated.seq) {
      const message =
        `PostgreSQL holds node ${node}'s chain only through seq ${this.#replicated.seq}, but this node shipped it ` +
        `through seq ${shipped.seq}: replicated rows were deleted; shipping them again`;
      this.#warn(message);
      await cluster.recordIncident(node, 'replica-truncated', message, now());
    }
    if (this.#replicated.seq > 0) {
      const local = this.#at.get(this.#replicated.seq) as { hash: string } | undefined;
      if (local?.hash !== this.#replicated.hash) {
        const message =
          local === undefined
            ? `PostgreSQL holds node ${node}'s chain through seq ${this.#replicated.seq}, beyond the local ledger`
            : `node ${node}'s entry at seq ${this.#replicated.seq} differs between PostgreSQL and the local ledger`;
        await cluster.recordIncident(node, 'replica-diverged', message, now());
        this.#halt('diverged', `${message}: replication stopped — run \`aegis audit verify --cluster\``);
        return false;
      }
    }
    this.#resumed = true;
    return true;
  }

  /** Ships everything stored locally that PostgreSQL lacks (in batches). Returns how many entries went. */
  async replicateOnce(): Promise<number> {
    if (this.#state !== 'replicating') return 0;
    if (this.#running !== undefined) await this.#running;
    let shipped = 0;
    const run = (async () => {
      for (;;) {
        const rows = (
          this.#after.all(this.#replicated.seq, this.#batchSize) as unknown as EntryArray[]
        ).filter((row) => row[0] <= this.#limitSeq);
        const links = rows.map(toLink);
        const through = links.at(-1)?.seq ?? this.#replicated.seq;
        const heads = (this.#heads.all(this.#headSeq, through) as unknown as HeadRow[]).map(toHead);
        if (links.length === 0 && heads.length === 0) return;
        const result = await this.#o.cluster.ship(this.#o.node, links, heads);
        if (!result.ok && result.found.seq < this.#replicated.seq) {
          const local = this.#at.get(result.found.seq) as { hash: string } | undefined;
          if (result.found.seq === 0 || local?.hash === result.found.hash) {
            // Rows this node shipped are gone from PostgreSQL: say so, then ship them again.
            const message =
              `PostgreSQL lost node ${this.#o.node}'s replicated entries ${result.found.seq + 1}–` +
              `${this.#replicated.seq} (deleted): reported, shipping them again`;
            this.#warn(message);
            await this.#o.cluster.recordIncident(
              this.#o.node,
              'replica-truncated',
              message,
              new Date(this.#o.clock.now()).toISOString(),
            );
            this.#replicated = result.found;
            this.#headSeq = await this.#o.cluster.headSeq(this.#o.node);
            continue;
          }
        }
        if (!result.ok) {
          const message =
            `node ${this.#o.node}'s chain in PostgreSQL ends at seq ${result.found.seq}, which the local chain ` +
            `does not continue from (expected seq ${this.#replicated.seq}): replication stopped`;
          await this.#o.cluster.recordIncident(
            this.#o.node,
            'replica-diverged',
            message,
            new Date(this.#o.clock.now()).toISOString(),
          );
          this.#halt('diverged', message);
          return;
        }
        shipped += links.length;
        this.#replicated = result.tip;
        this.#headSeq = heads.at(-1)?.seq ?? this.#headSeq;
        this.#problem = undefined;
        this.#writeState();
        if (rows.length < this.#batchSize) return;
      }
    })();
    this.#running = run;
    try {
      await run;
    } catch (error) {
      const first = this.#problem === undefined;
      this.#problem = `cannot ship to PostgreSQL (will retry): ${(error as Error).message}`;
      if (first) this.#warn(this.#problem); // once per outage; the lag metrics show how far behind it falls
    } finally {
      this.#running = undefined;
    }
    return shipped;
  }

  status(): ReplicationStatus {
    const tip = this.#tip.get() as { seq: number; ts: string } | undefined;
    const localSeq = tip?.seq ?? 0;
    const lagEntries = Math.max(0, localSeq - this.#replicated.seq);
    let lagMs = 0;
    if (lagEntries > 0) {
      const oldest = this.#at.get(this.#replicated.seq + 1) as { ts: string } | undefined;
      if (oldest !== undefined) lagMs = Math.max(0, this.#o.clock.now() - Date.parse(oldest.ts));
    }
    return {
      node: this.#o.node,
      state: this.#state,
      localSeq,
      replicatedSeq: this.#replicated.seq,
      lagEntries,
      lagMs,
      problem: this.#problem,
    };
  }

  /**
   * One execution's entries from every node's chain: what PostgreSQL holds, plus this node's entries not shipped
   * yet (from the local ledger). Each entry names its node. By node, then seq.
   */
  async list(execution: string): Promise<NodeAuditEntry[]> {
    const replicated = await this.#o.cluster.entriesOf(execution);
    const ownThrough = replicated
      .filter((e) => e.node === this.#o.node)
      .reduce((m, e) => Math.max(m, e.seq), 0);
    const tail = (this.#byExecution.all(execution, ownThrough) as unknown as EntryArray[]).map((row) => ({
      node: this.#o.node,
      ...fromLink(toLink(row)),
    }));
    return [...replicated, ...tail].sort((a, b) =>
      a.node < b.node ? -1 : a.node > b.node ? 1 : a.seq - b.seq,
    );
  }

  /** Ships what is left (best effort), stops the timer and closes the local connection. Idempotent. */
  async stop(): Promise<void> {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#state === 'replicating') await this.replicateOnce();
    if (this.#state !== 'refused' && this.#state !== 'diverged') this.#state = 'stopped';
    if (this.#running !== undefined) await this.#running.catch(() => {});
    if (this.#db.isOpen) this.#db.close();
  }

  #schedule(): void {
    if (this.#state !== 'replicating') return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.replicateOnce().finally(() => this.#schedule());
    }, this.#intervalMs).unref();
  }

  #halt(state: 'refused' | 'diverged', message: string): void {
    this.#state = state;
    this.#problem = message;
    this.#warn(message);
  }

  #readState(): ChainTip | undefined {
    const file = this.#o.stateFile;
    if (file === undefined) return undefined;
    try {
      const value = JSON.parse(readFileSync(file, 'utf8')) as {
        node?: unknown;
        seq?: unknown;
        hash?: unknown;
      };
      if (value.node !== this.#o.node || !Number.isSafeInteger(value.seq) || typeof value.hash !== 'string') {
        return undefined;
      }
      return { seq: value.seq as number, hash: value.hash };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new AegisError(
        'INTERNAL',
        `cannot read the ledger replication state ${file}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  }

  #writeState(): void {
    const file = this.#o.stateFile;
    if (file === undefined) return;
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.tmp`;
    const at = new Date(this.#o.clock.now()).toISOString();
    writeFileSync(
      tmp,
      `${JSON.stringify({ node: this.#o.node, seq: this.#replicated.seq, hash: this.#replicated.hash, at })}\n`,
      { mode: 0o600 },
    );
    renameSync(tmp, file);
  }
}

/** What a node's replication state file says it shipped (for `verify --cluster` on that node). */
export function readReplicationState(file: string): { node: string; seq: number; hash: string } | undefined {
  try {
    const value = JSON.parse(readFileSync(file, 'utf8')) as { node?: unknown; seq?: unknown; hash?: unknown };
    if (
      typeof value.node !== 'string' ||
      !Number.isSafeInteger(value.seq) ||
      typeof value.hash !== 'string'
    ) {
      return undefined;
    }
    return { node: value.node, seq: value.seq as number, hash: value.hash };
  } catch {
    return undefined;
  }
}

interface HeadRow {
  readonly seq: number;
  readonly hash: string;
  readonly ts: string;
  readonly key_id: string;
  readonly signature: string;
}

function toHead(row: HeadRow): SignedHead {
  return { seq: row.seq, hash: row.hash, ts: row.ts, keyId: row.key_id, signature: row.signature };
}

function toLink(row: EntryArray): ChainLink {
  return {
    seq: row[0],
    ts: row[1],
    execution: row[2],
    kind: row[3],
    dataJson: row[4],
    prevHash: row[5],
    hash: row[6],
  };
}
