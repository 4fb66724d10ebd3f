/**
 * In-memory AuditLog for use-case tests. Chains, signs heads and verifies exactly like the real ledger (the same
 * domain code); only the primitives are stand-ins: by default a non-cryptographic 256-bit hash and a toy signer
 * (pass real ones from a test to exercise the domain with SHA-256/Ed25519). `links` and `heads` are exposed so a
 * test can tamper with them.
 */

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
  type SignedHead,
} from '../../domain/audit/entry.ts';
import {
  AUDIT_EXPORT_FORMAT,
  type AuditExportRecord,
  exportRecords,
} from '../../domain/audit/export-format.ts';
import { addCoverage, LIFECYCLE_KINDS, type LifecycleCoverage } from '../../domain/audit/store-check.ts';
import { type AuditVerification, verifyChain } from '../../domain/audit/verify.ts';
import { AegisError } from '../../domain/errors.ts';
import type { AuditLog, Clock, Hasher, Signer } from '../ports.ts';
import { ManualClock } from './manual-clock.ts';

/** 256 bits from eight FNV-1a lanes: stable and well spread, NOT collision resistant — for fakes only. */
export const toyHasher: Hasher = {
  sha256Hex(text: string): string {
    let out = '';
    for (let lane = 0; lane < 8; lane++) {
      let h = (0x811c9dc5 ^ Math.imul(lane + 1, 0x9e3779b1)) >>> 0;
      for (let i = 0; i < text.length; i++) {
        h ^= text.charCodeAt(i);
        h = Math.imul(h, 0x01000193) >>> 0;
      }
      out += h.toString(16).padStart(8, '0');
    }
    return out;
  },
};

/** A signer whose "signature" anyone can compute; for tests of the ledger logic, not of cryptography. */
export function toySigner(keyId = 'fa4e0000fa4e0000'): Signer {
  const signature = (message: string) => toyHasher.sha256Hex(`toy-signer:${keyId}:${message}`);
  return {
    keyId: () => keyId,
    publicKeyPem: () => `TOY PUBLIC KEY ${keyId}`,
    sign: signature,
    verify: (message, sig, id) => id === keyId && sig === signature(message),
  };
}

export interface MemoryAuditLogOptions {
  /** @default a `ManualClock` (time stands still unless a test moves it) */
  readonly clock?: Pick<Clock, 'now'>;
  /** @default toyHasher */
  readonly hasher?: Hasher;
  /** @default toySigner() */
  readonly signer?: Signer;
  /** Sign the head every this many entries (and at close). @default 1000 */
  readonly headEvery?: number;
}

export class MemoryAuditLog implements AuditLog {
  /** Stored form of every entry, by seq. */
  readonly links: ChainLink[] = [];
  readonly heads: SignedHead[] = [];
  readonly #clock: Pick<Clock, 'now'>;
  readonly #hasher: Hasher;
  readonly #signer: Signer;
  readonly #headEvery: number;
  #tip: ChainTip = EMPTY_TIP;
  #closed = false;

  constructor(options: MemoryAuditLogOptions = {}) {
    this.#clock = options.clock ?? new ManualClock();
    this.#hasher = options.hasher ?? toyHasher;
    this.#signer = options.signer ?? toySigner();
    this.#headEvery = options.headEvery ?? 1000;
  }

  /** Entries as appended, by seq (parsed from the stored form). */
  get entries(): readonly AuditEntry[] {
    return this.links.map(fromLink);
  }

  append<K extends AuditKind>(kind: K, execution: string | null, data: AuditDataByKind[K]): AuditEntry {
    if (this.#closed) throw new AegisError('INTERNAL', 'the audit ledger is closed');
    const ts = new Date(this.#clock.now()).toISOString();
    const { entry, link } = chainNext(this.#tip, { ts, execution, kind, data }, this.#hasher.sha256Hex);
    this.links.push(link);
    this.#tip = link;
    const lastHead = this.heads.at(-1)?.seq ?? 0;
    if (link.seq - lastHead >= this.#headEvery) this.#signHead();
    return entry;
  }

  async flush(): Promise<void> {}

  async durable(): Promise<void> {}

  async lifecycleCoverage(): Promise<ReadonlyMap<string, LifecycleCoverage>> {
    const map = new Map<string, LifecycleCoverage>();
    for (const link of this.links) {
      if (link.execution === null || !LIFECYCLE_KINDS.includes(link.kind)) continue;
      addCoverage(map, link.execution, link.kind, (JSON.parse(link.dataJson) as { status?: unknown }).status);
    }
    return map;
  }

  async list(executionId: string): Promise<readonly AuditEntry[]> {
    return this.links.filter((l) => l.execution === executionId).map(fromLink);
  }

  async verify(): Promise<AuditVerification> {
    return verifyChain(this.links, this.heads, {
      sha256Hex: this.#hasher.sha256Hex,
      verifySignature: (message, signature, keyId) => this.#signer.verify(message, signature, keyId),
    });
  }

  async *export(): AsyncIterable<AuditExportRecord> {
    const header = {
      type: 'header',
      format: AUDIT_EXPORT_FORMAT,
      publicKey: this.#signer.publicKeyPem(),
      keyId: this.#signer.keyId(),
      hash: 'sha256',
      canonicalization: 'rfc8785',
      exportedAt: new Date(this.#clock.now()).toISOString(),
    } as const;
    yield* exportRecords(header, this.heads, this.links.map(fromLink));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#tip.seq > (this.heads.at(-1)?.seq ?? 0)) this.#signHead();
  }

  #signHead(): void {
    const head = { seq: this.#tip.seq, hash: this.#tip.hash, ts: new Date(this.#clock.now()).toISOString() };
    this.heads.push({
      ...head,
      keyId: this.#signer.keyId(),
      signature: this.#signer.sign(headMessage(head)),
    });
  }
}
