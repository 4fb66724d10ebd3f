/**
 * Verification of an audit chain and its signed heads — pure: hashing and signature checks are injected.
 *
 * The verifier walks the entries in stored order, one at a time (a million entries never sit in memory at once).
 * At the first entry that does not fit it keeps reading a short window ahead, then names what happened:
 *
 * - `edited`: an entry's content no longer matches its hash (or a hash was recomputed and the next entry still
 *   links to the original);
 * - `deleted`: seqs are missing (or later entries were renumbered to close the gap);
 * - `inserted`: an entry that the chain skips over — its successor links to its predecessor;
 * - `reordered`: the entries are all there but stored out of order;
 * - `rewritten`: the chain is self-consistent but differs from a signed head (everything after some point was
 *   recomputed);
 * - `truncated`: the ledger ends before the newest signed head's seq;
 * - `bad-signature`: a head's signature doesn't verify with the node key (forged or altered head);
 * - `malformed`: (export files) a line that is not a ledger record at all;
 * - `heads-deleted`: a head the witness recorded (outside the database) is missing from the ledger or differs;
 * - `emptied`: the ledger has no entries, but the witness attests that it had some (tables emptied, file replaced);
 * - `unsigned-tail`: entries after the newest signed head that no live writer is about to sign (older than the
 *   grace period): nothing vouches for them, so they may have been appended by someone without the node key;
 * - `missing-entries`: (with the store cross-check) executions the store knows lack their lifecycle entries.
 *
 * The result names the first bad seq. Entries after the newest signed head are verified as a chain but are not
 * covered by a signature; the result counts them (`unsignedTail`).
 */
import {
  type ChainLink,
  type ChainTip,
  GENESIS_HASH,
  headMessage,
  linkHash,
  type Sha256Hex,
  type SignedHead,
} from './entry.ts';

export type AuditProblem =
  | 'edited'
  | 'deleted'
  | 'inserted'
  | 'reordered'
  | 'rewritten'
  | 'truncated'
  | 'bad-signature'
  | 'malformed'
  | 'heads-deleted'
  | 'emptied'
  | 'unsigned-tail'
  | 'missing-entries';

export interface AuditIntact {
  readonly ok: true;
  /** Entries verified. */
  readonly entries: number;
  /** Signed heads verified. */
  readonly heads: number;
  readonly lastSeq: number;
  readonly lastHash: string;
  /** Seq of the newest signed head (0 when none). */
  readonly signedThroughSeq: number;
  /** Entries after the newest signed head: chained, not yet signed. */
  readonly unsignedTail: number;
}

export interface AuditTampered {
  readonly ok: false;
  readonly problem: AuditProblem;
  /** The first seq whose entry is not what was recorded (for `truncated`: the first missing seq). */
  readonly firstBadSeq: number;
  /** One sentence naming the seq and what happened. */
  readonly message: string;
  /** The entry found where the problem starts, when there is one. */
  readonly entry?: { readonly seq: number; readonly kind: string; readonly execution: string | null };
  /** Entries that verified before the problem. */
  readonly entries: number;
}

export type AuditVerification = AuditIntact | AuditTampered;

export interface ChainCrypto {
  readonly sha256Hex: Sha256Hex;
  /** True when `signature` (base64) is a valid signature of `message` by the key `keyId`. */
  verifySignature(message: string, signature: string, keyId: string): boolean;
}

/** What the verifier checks beyond the chain and the heads stored with it. */
export interface ChainVerifierOptions {
  /**
   * Heads recorded by the witness, outside the ledger's database. Each must also be in the ledger (else
   * `heads-deleted`), the chain must reach the newest (else `truncated`/`emptied`) and match each (else `rewritten`).
   */
  readonly witnessed?: readonly SignedHead[];
  /**
   * Current time (ms since the epoch). With it, an unsigned tail whose newest entry is older than `tailGraceMs`
   * (or further than that in the future) is `unsigned-tail`; without it the tail is only counted.
   */
  readonly nowMs?: number;
  /** @default 10_000 — writers sign within ~1 s of an append, so a tail older than this has no live signer. */
  readonly tailGraceMs?: number;
  /**
   * Where the walk starts: the tip of a verified ledger checkpoint (domain/audit/checkpoint.ts) — the first entry
   * must be `from.seq + 1` and link to `from.hash`. Entries before it were archived and dropped. @default genesis
   */
  readonly from?: ChainTip;
}

/** How many entries past the first anomaly are read to tell its kind. */
const LOOKAHEAD = 64;

const HEX64 = /^[0-9a-f]{64}$/;

type Failure = Omit<AuditTampered, 'ok' | 'entries'>;

export class ChainVerifier {
  readonly #crypto: ChainCrypto;
  /** Heads whose signature verified, by seq. */
  readonly #heads = new Map<number, SignedHead>();
  readonly #maxHeadSeq: number;
  /** The lowest head whose signature failed. */
  readonly #badHead: Failure | undefined;
  /** The lowest witnessed head that the ledger lost or altered. */
  readonly #lostHead: Failure | undefined;
  readonly #witnessedSeq: number;
  readonly #witnessedCount: number;
  readonly #nowMs: number | undefined;
  readonly #tailGraceMs: number;
  #verified = 0;
  /** The last entry that verified. */
  #prev: ChainLink | undefined;
  /** Seq of the last signed head the walk has matched. */
  #matchedHeadSeq = 0;
  /** First link that did not fit, and the links read after it. */
  #suspect: { link: ChainLink; headMismatch: boolean } | undefined;
  readonly #window: ChainLink[] = [];
  #failure: Failure | undefined;

  constructor(crypto: ChainCrypto, heads: readonly SignedHead[], options: ChainVerifierOptions = {}) {
    this.#crypto = crypto;
    let badHead: Failure | undefined;
    let maxHeadSeq = 0;
    const stored = new Map<number, SignedHead>();
    for (const head of [...heads].sort((a, b) => a.seq - b.seq)) {
      const problem = headProblem(head, crypto);
      if (problem !== undefined) {
        badHead ??= {
          problem: 'bad-signature',
          firstBadSeq: Number.isSafeInteger(head.seq) ? head.seq : 0,
          message: `the signed head at seq ${head.seq} ${problem}: it was forged or altered`,
        };
        continue;
      }
      stored.set(head.seq, head);
      this.#heads.set(head.seq, head);
      maxHeadSeq = Math.max(maxHeadSeq, head.seq);
    }
    // Witnessed heads win over stored ones: the witness is outside the reach of whoever can edit the database.
    let lostHead: Failure | undefined;
    let witnessedSeq = 0;
    let witnessedCount = 0;
    for (const head of [...(options.witnessed ?? [])].sort((a, b) => a.seq - b.seq)) {
      const problem = headProblem(head, crypto);
      if (problem !== undefined) {
        badHead ??= {
          problem: 'bad-signature',
          firstBadSeq: Number.isSafeInteger(head.seq) ? head.seq : 0,
          message: `the witnessed head at seq ${head.seq} ${problem}: the witness or the key was replaced`,
        };
        continue;
      }
      witnessedCount += 1;
      witnessedSeq = Math.max(witnessedSeq, head.seq);
      const own = stored.get(head.seq);
      if (own === undefined || own.hash !== head.hash) {
        lostHead ??= {
          problem: 'heads-deleted',
          firstBadSeq: head.seq,
          message:
            own === undefined
              ? `the head signed at seq ${head.seq} (${head.ts}) is recorded by the witness but missing from the ledger: signed heads were deleted`
              : `the head stored at seq ${head.seq} differs from the one the witness recorded (${head.ts}): signed heads were replaced`,
        };
      }
      this.#heads.set(head.seq, head);
      maxHeadSeq = Math.max(maxHeadSeq, head.seq);
    }
    const from = options.from;
    if (from !== undefined && from.seq > 0) {
      // The chain before the checkpoint is gone: the walk continues from its tip, which a head at that seq must match.
      this.#prev = {
        seq: from.seq,
        hash: from.hash,
        ts: '',
        execution: null,
        kind: '',
        dataJson: '',
        prevHash: '',
      };
      this.#matchedHeadSeq = from.seq;
      const head = this.#heads.get(from.seq);
      if (head !== undefined && head.hash !== from.hash) {
        badHead ??= {
          problem: 'rewritten',
          firstBadSeq: from.seq,
          message: `the ledger checkpoint at seq ${from.seq} differs from the head signed at that seq`,
        };
      }
    }
    this.#badHead = badHead;
    this.#lostHead = lostHead;
    this.#maxHeadSeq = maxHeadSeq;
    this.#witnessedSeq = witnessedSeq;
    this.#witnessedCount = witnessedCount;
    this.#nowMs = options.nowMs;
    this.#tailGraceMs = options.tailGraceMs ?? 10_000;
  }

  /** Entries verified so far. */
  get verified(): number {
    return this.#verified;
  }

  /** Feeds the next link in stored order. Returns false once no more links are needed (the problem is named). */
  push(link: ChainLink): boolean {
    if (this.#failure !== undefined) return false;
    if (this.#suspect !== undefined) {
      this.#window.push(link);
      if (this.#window.length < LOOKAHEAD) return true;
      this.#failure = this.#diagnose();
      return false;
    }
    const expectedSeq = (this.#prev?.seq ?? 0) + 1;
    const expectedPrev = this.#prev?.hash ?? GENESIS_HASH;
    if (link.seq !== expectedSeq || link.prevHash !== expectedPrev || !this.#selfConsistent(link)) {
      this.#suspect = { link, headMismatch: false };
      return true;
    }
    const head = this.#heads.get(link.seq);
    if (head !== undefined && head.hash !== link.hash) {
      this.#suspect = { link, headMismatch: true };
      return true;
    }
    if (head !== undefined) this.#matchedHeadSeq = link.seq;
    this.#prev = link;
    this.#verified += 1;
    return true;
  }

  /** Verdict over everything pushed. */
  finish(): AuditVerification {
    if (this.#failure === undefined && this.#suspect !== undefined) this.#failure = this.#diagnose();
    let failure = this.#failure;
    const lastSeq = this.#prev?.seq ?? 0;
    if (failure === undefined && this.#prev === undefined && this.#witnessedSeq > 0) {
      failure = {
        problem: 'emptied',
        firstBadSeq: 1,
        message:
          `the ledger has no entries, but the witness recorded ${this.#witnessedCount} signed head(s) up to ` +
          `seq ${this.#witnessedSeq}: its tables were emptied or its file replaced`,
      };
    }
    if (failure === undefined && this.#maxHeadSeq > lastSeq) {
      failure = {
        problem: 'truncated',
        firstBadSeq: lastSeq + 1,
        message:
          `the ledger ends at seq ${lastSeq} but a head was signed at seq ${this.#maxHeadSeq}: ` +
          `entries ${lastSeq + 1}–${this.#maxHeadSeq} were removed from the end`,
      };
    }
    if (
      failure === undefined &&
      this.#nowMs !== undefined &&
      this.#prev !== undefined &&
      lastSeq > this.#maxHeadSeq
    ) {
      const lastMs = Date.parse(this.#prev.ts);
      const ageMs = this.#nowMs - lastMs;
      if (!Number.isFinite(lastMs) || ageMs > this.#tailGraceMs || ageMs < -this.#tailGraceMs) {
        const from = this.#maxHeadSeq + 1;
        failure = {
          problem: 'unsigned-tail',
          firstBadSeq: from,
          message:
            `entries ${from}–${lastSeq} follow the newest signed head (seq ${this.#maxHeadSeq}) and no signature ` +
            `covers them (the newest is from ${this.#prev.ts}): they may have been appended without the node key ` +
            '(after a crash, the next AEGIS start records and adopts such a tail)',
        };
      }
    }
    for (const other of [this.#lostHead, this.#badHead]) {
      if (other !== undefined && (failure === undefined || other.firstBadSeq < failure.firstBadSeq)) {
        failure = other;
      }
    }
    if (failure !== undefined) return { ok: false, ...failure, entries: this.#verified };
    return {
      ok: true,
      entries: this.#verified,
      heads: this.#heads.size,
      lastSeq,
      lastHash: this.#prev?.hash ?? GENESIS_HASH,
      signedThroughSeq: this.#maxHeadSeq,
      unsignedTail: lastSeq - this.#maxHeadSeq,
    };
  }

  #selfConsistent(link: ChainLink, seq: number = link.seq): boolean {
    return linkHash(seq === link.seq ? link : { ...link, seq }, this.#crypto.sha256Hex) === link.hash;
  }

  /** Names the anomaly at the suspect link, using the last good link before it and the window after it. */
  #diagnose(): Failure {
    const { link: e, headMismatch } = this.#suspect!;
    const prev = this.#prev;
    const window = this.#window;
    const s = (prev?.seq ?? 0) + 1;
    const expectedPrev = prev?.hash ?? GENESIS_HASH;
    const at = { seq: e.seq, kind: e.kind, execution: e.execution };
    const fail = (problem: AuditProblem, firstBadSeq: number, message: string): Failure => ({
      problem,
      firstBadSeq,
      message,
      entry: at,
    });
    const next = window[0];

    if (headMismatch) {
      if (next !== undefined && next.prevHash === e.prevHash) {
        return fail(
          'inserted',
          e.seq,
          `entry seq ${e.seq} was inserted: the next entry links past it to seq ${s - 1}`,
        );
      }
      const from = this.#matchedHeadSeq + 1;
      return fail(
        'rewritten',
        from,
        `entries ${from}–${e.seq} were rewritten: the chain is consistent but its hash at seq ${e.seq} ` +
          `differs from the head signed at seq ${e.seq}`,
      );
    }
    if (!Number.isSafeInteger(e.seq)) {
      return fail('edited', s, `the entry after seq ${s - 1} has an invalid seq ${String(e.seq)}`);
    }
    if (e.seq < s) {
      if (prev !== undefined && e.hash === prev.hash) {
        return fail('inserted', s, `a copy of entry seq ${e.seq} was inserted after it`);
      }
      return fail('reordered', s, `entry seq ${e.seq} is stored after seq ${s - 1}: entries were reordered`);
    }
    if (e.seq > s) {
      if (window.some((later) => later.seq === s)) {
        return fail('reordered', s, `entry seq ${s} is stored after seq ${e.seq}: entries were reordered`);
      }
      const range = e.seq - 1 === s ? `entry seq ${s} is` : `entries ${s}–${e.seq - 1} are`;
      return fail('deleted', s, `${range} missing: deleted from the ledger`);
    }
    // e.seq === s from here on.
    if (e.prevHash === expectedPrev) {
      // Links correctly, so its own content changed — unless the chain skips over it.
      if (next !== undefined && next.prevHash === e.prevHash && next.prevHash !== e.hash) {
        return fail(
          'inserted',
          s,
          `entry seq ${s} was inserted: the next entry links past it to seq ${s - 1}`,
        );
      }
      return fail('edited', s, `entry seq ${s} was edited: its content no longer matches its hash`);
    }
    if (prev !== undefined && e.prevHash === prev.prevHash) {
      return fail(
        'inserted',
        prev.seq,
        `entry seq ${prev.seq} was inserted: the entry after it links past it to seq ${prev.seq - 1}`,
      );
    }
    if (window.some((later) => later.prevHash === expectedPrev)) {
      return fail(
        'reordered',
        s,
        `entry seq ${s} is out of order: the entry that follows seq ${s - 1} is stored further on`,
      );
    }
    if (this.#selfConsistent(e)) {
      // Intact itself, but it links to a hash the previous entry no longer has: that one was edited and re-hashed.
      const edited = Math.max(1, s - 1);
      return fail(
        'edited',
        edited,
        `entry seq ${edited} was edited and its hash recomputed: entry seq ${s} still links to the original`,
      );
    }
    for (let gap = 1; gap <= LOOKAHEAD; gap++) {
      if (this.#selfConsistent(e, s + gap)) {
        const range = gap === 1 ? `entry seq ${s} was` : `entries ${s}–${s + gap - 1} were`;
        return fail('deleted', s, `${range} deleted and the later entries renumbered to hide the gap`);
      }
    }
    return fail(
      'edited',
      s,
      `entry seq ${s} was edited: its content no longer matches its hash or the chain`,
    );
  }
}

/** Why a head can't be trusted, or undefined when its signature verifies. */
function headProblem(head: SignedHead, crypto: ChainCrypto): string | undefined {
  if (!Number.isSafeInteger(head.seq) || head.seq < 1) return 'has an invalid seq';
  if (typeof head.hash !== 'string' || !HEX64.test(head.hash)) return 'has an invalid hash';
  if (typeof head.ts !== 'string' || typeof head.signature !== 'string' || typeof head.keyId !== 'string') {
    return 'is incomplete';
  }
  if (!crypto.verifySignature(headMessage(head), head.signature, head.keyId)) {
    return 'has a signature that does not verify with the node key';
  }
  return undefined;
}

/** Verifies a whole chain held in memory (tests, small ledgers); adapters stream through ChainVerifier instead. */
export function verifyChain(
  links: Iterable<ChainLink>,
  heads: readonly SignedHead[],
  crypto: ChainCrypto,
  options: ChainVerifierOptions = {},
): AuditVerification {
  const verifier = new ChainVerifier(crypto, heads, options);
  for (const link of links) if (!verifier.push(link)) break;
  return verifier.finish();
}
