/**
 * Ledger checkpoints: how old entries leave the ledger without the chain losing its meaning.
 *
 * Before entries `fromSeq..seq` are dropped, the node writes them to an archive (export format, gzipped) and signs a
 * checkpoint over (seq, hash, fromSeq, prevHash, count, ts, archive name, archive SHA-256) with its node key; the
 * checkpoint's head is also signed as an ordinary head and recorded by the witness. Checkpoints chain: each one's
 * `fromSeq`/`prevHash` continue from the one before (the first from seq 1 and the genesis hash). So:
 *
 * - `verify` starts the walk at the newest checkpoint (seq + 1, linking to its hash) instead of at seq 1; a ledger
 *   whose entries start later than a valid checkpoint allows is `deleted` exactly as before;
 * - forging, editing or replaying a checkpoint needs the node key (`bad-signature`);
 * - with the archives (`verify --archive`), each archive must hash to the digest its checkpoint signed and its
 *   entries must form the chain `fromSeq..seq` from `prevHash` to `hash`, `count` of them.
 *
 * Pure: hashing and signature checks are injected (ChainCrypto).
 */
import { canonicalJson } from './canonical-json.ts';
import { type ChainLink, type ChainTip, GENESIS_HASH } from './entry.ts';
import type { AuditTampered, ChainCrypto } from './verify.ts';
import { ChainVerifier } from './verify.ts';

export interface Checkpoint {
  /** The last dropped entry. */
  readonly seq: number;
  /** Its hash: the entry at seq + 1 links to it. */
  readonly hash: string;
  /** The first entry in this checkpoint's archive (the previous checkpoint's seq + 1, or 1). */
  readonly fromSeq: number;
  /** The hash the archive's first entry links to (the previous checkpoint's hash, or the genesis hash). */
  readonly prevHash: string;
  /** Entries in the archive: seq - fromSeq + 1. */
  readonly count: number;
  readonly ts: string;
  /** File name of the archive, in the ledger's archive directory (`audit-archive/` beside `audit.db`). */
  readonly archive: string;
  /** Lowercase hex SHA-256 of the archive file's bytes. */
  readonly archiveSha256: string;
  readonly keyId: string;
  /** Base64 signature over `checkpointMessage`. */
  readonly signature: string;
}

/** What a prune asks of the ledger (AuditLog.checkpoint). */
export interface CheckpointRequest {
  /** Drop only entries older than this (ISO). */
  readonly before: string;
  /** Executions and sandboxes still running: none of their entries (nor any after their first) is dropped. */
  readonly keep: readonly string[];
  readonly dryRun: boolean;
  /** @default 100_000 */
  readonly maxEntries?: number;
  /**
   * A cluster node's ledger (ADR 0116): the newest seq its replicator shipped to PostgreSQL. Entries after it stay —
   * dropping them would take them out of the cluster ledger for good (never shipped) and halt replication (the chain
   * in PostgreSQL would no longer continue). @default no limit (not replicated)
   */
  readonly shippedThroughSeq?: number;
}

export interface CheckpointOutcome {
  /** Entries dropped (dry run: that would be). */
  readonly entries: number;
  /** The checkpoint written (undefined on a dry run or when nothing could be dropped). */
  readonly checkpoint?: Checkpoint;
  /** Seq through which entries are (or would be) dropped; 0 when none. */
  readonly throughSeq: number;
  /** Why entries older than the cutoff stay, when some do. */
  readonly kept?: string;
  /** More entries are prunable beyond `maxEntries`: call again. */
  readonly more: boolean;
}

export type UnsignedCheckpoint = Omit<Checkpoint, 'keyId' | 'signature'>;

/** Keeps a checkpoint signature from being valid as anything else the node key signs (a head, an endorsement). */
export const CHECKPOINT_SIGNATURE_CONTEXT = 'aegis.audit.checkpoint/v1\n';

/** The exact text a checkpoint signature covers. */
export function checkpointMessage(cp: UnsignedCheckpoint): string {
  return (
    CHECKPOINT_SIGNATURE_CONTEXT +
    canonicalJson({
      seq: cp.seq,
      hash: cp.hash,
      fromSeq: cp.fromSeq,
      prevHash: cp.prevHash,
      count: cp.count,
      ts: cp.ts,
      archive: cp.archive,
      archiveSha256: cp.archiveSha256,
    })
  );
}

/** `<from>-<to>.jsonl.gz`, zero-padded so a directory listing sorts by seq. */
export function archiveName(fromSeq: number, seq: number): string {
  return `${String(fromSeq).padStart(12, '0')}-${String(seq).padStart(12, '0')}.jsonl.gz`;
}

const HEX64 = /^[0-9a-f]{64}$/;
const ARCHIVE_NAME = /^\d{12}-\d{12}\.jsonl\.gz$/;
const isSeq = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 1;

/** Why a checkpoint can't be trusted on its own (shape, arithmetic, signature), or undefined. */
export function checkpointProblem(cp: Checkpoint, crypto: ChainCrypto): string | undefined {
  if (!isSeq(cp.seq) || !isSeq(cp.fromSeq) || cp.fromSeq > cp.seq) return 'has an invalid seq range';
  if (cp.count !== cp.seq - cp.fromSeq + 1)
    return `counts ${cp.count} entries for seqs ${cp.fromSeq}–${cp.seq}`;
  if (!HEX64.test(cp.hash) || !HEX64.test(cp.prevHash) || !HEX64.test(cp.archiveSha256)) {
    return 'has a malformed hash';
  }
  if (typeof cp.archive !== 'string' || !ARCHIVE_NAME.test(cp.archive))
    return 'names an invalid archive file';
  if (typeof cp.ts !== 'string' || typeof cp.keyId !== 'string' || typeof cp.signature !== 'string') {
    return 'is incomplete';
  }
  if (!crypto.verifySignature(checkpointMessage(cp), cp.signature, cp.keyId)) {
    return 'has a signature that does not verify with the node key';
  }
  return undefined;
}

export type CheckpointFailure = Omit<AuditTampered, 'ok' | 'entries'>;

/**
 * Checks every checkpoint (signature, and that each continues the one before) and returns where the live chain
 * starts: the newest checkpoint's tip, or undefined when there is none. A failure names the first bad checkpoint.
 */
export function checkCheckpoints(
  checkpoints: readonly Checkpoint[],
  crypto: ChainCrypto,
): { readonly ok: true; readonly from: ChainTip | undefined } | ({ readonly ok: false } & CheckpointFailure) {
  let prev: ChainTip = { seq: 0, hash: GENESIS_HASH };
  for (const cp of [...checkpoints].sort((a, b) => a.seq - b.seq)) {
    const problem = checkpointProblem(cp, crypto);
    if (problem !== undefined) {
      return {
        ok: false,
        problem: 'bad-signature',
        firstBadSeq: isSeq(cp.fromSeq) ? cp.fromSeq : 1,
        message: `the ledger checkpoint at seq ${cp.seq} ${problem}: it was forged or altered`,
      };
    }
    if (cp.fromSeq !== prev.seq + 1 || cp.prevHash !== prev.hash) {
      return {
        ok: false,
        problem: 'deleted',
        firstBadSeq: prev.seq + 1,
        message:
          `the ledger checkpoint at seq ${cp.seq} starts at seq ${cp.fromSeq} but the one before it ends at ` +
          `seq ${prev.seq}: a checkpoint is missing or does not continue the chain`,
      };
    }
    prev = { seq: cp.seq, hash: cp.hash };
  }
  return { ok: true, from: prev.seq === 0 ? undefined : prev };
}

/**
 * Verifies the entries of one checkpoint's archive, fed in order: they must chain from `prevHash` at `fromSeq` to
 * `hash` at `seq`, `count` of them. (The archive file's digest is checked by the adapter before.)
 */
export class ArchiveVerifier {
  readonly #checkpoint: Checkpoint;
  readonly #chain: ChainVerifier;

  constructor(checkpoint: Checkpoint, crypto: ChainCrypto) {
    this.#checkpoint = checkpoint;
    this.#chain = new ChainVerifier(crypto, [], {
      from: { seq: checkpoint.fromSeq - 1, hash: checkpoint.prevHash },
    });
  }

  push(link: ChainLink): boolean {
    return this.#chain.push(link);
  }

  finish(): { readonly ok: true; readonly entries: number } | ({ readonly ok: false } & CheckpointFailure) {
    const cp = this.#checkpoint;
    const result = this.#chain.finish();
    const where = `archive ${cp.archive} (checkpoint at seq ${cp.seq})`;
    if (!result.ok) {
      return {
        ok: false,
        problem: result.problem,
        firstBadSeq: result.firstBadSeq,
        message: `${where}: ${result.message}`,
      };
    }
    if (result.lastSeq !== cp.seq || result.lastHash !== cp.hash || result.entries !== cp.count) {
      return {
        ok: false,
        problem: result.lastSeq < cp.seq ? 'truncated' : 'rewritten',
        firstBadSeq: Math.min(result.lastSeq + 1, cp.seq),
        message:
          `${where}: holds ${result.entries} entries ending at seq ${result.lastSeq}, but the checkpoint signed ` +
          `${cp.count} ending at seq ${cp.seq} with hash ${cp.hash.slice(0, 12)}…`,
      };
    }
    return { ok: true, entries: result.entries };
  }
}
