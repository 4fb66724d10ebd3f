/**
 * The ledger export: JSON Lines, verifiable offline.
 *
 *   line 1      {"type":"header","format":"aegis.audit.export/v1","publicKey":"-----BEGIN PUBLIC KEY-----…",…}
 *   then        {"type":"checkpoint","seq":…,"hash":…,"fromSeq":…,…}  every ledger checkpoint (checkpoint.ts), by seq
 *   then        {"type":"head","seq":…,"hash":…,"ts":…,"keyId":…,"signature":…}   every signed head, by seq
 *   then        {"type":"entry","seq":…,"ts":…,"execution":…,"kind":…,"data":{…},"prevHash":…,"hash":…}  by seq
 *
 * Heads come before entries so a reader can check each head as it walks the chain in one pass; a head after the
 * first entry is refused (otherwise moving a head line to the end would skip its check).
 */
import { type Checkpoint, checkCheckpoints } from './checkpoint.ts';
import { type AuditEntry, type SignedHead, toLink } from './entry.ts';
import type { EndorsedKey } from './keys.ts';
import { type AuditVerification, type ChainCrypto, ChainVerifier } from './verify.ts';

export const AUDIT_EXPORT_FORMAT = 'aegis.audit.export/v1';

export interface AuditExportHeader {
  readonly type: 'header';
  readonly format: typeof AUDIT_EXPORT_FORMAT;
  /** The node's Ed25519 public key, SPKI PEM. */
  readonly publicKey: string;
  readonly keyId: string;
  readonly hash: 'sha256';
  readonly canonicalization: 'rfc8785';
  readonly exportedAt: string;
  /**
   * The newest head the witness (outside the ledger's database) had recorded when the export was made: the export
   * must reach it, so an export of an emptied or truncated ledger fails even offline.
   */
  readonly witnessed?: SignedHead;
  /** Retired node keys, each endorsed by its successor (see keys.ts): heads signed before a rotation verify. */
  readonly keys?: readonly EndorsedKey[];
}

export type AuditExportRecord =
  | AuditExportHeader
  | ({ readonly type: 'checkpoint' } & Checkpoint)
  | ({ readonly type: 'head' } & SignedHead)
  | ({ readonly type: 'entry' } & AuditEntry);

export function formatExportLine(record: AuditExportRecord): string {
  return JSON.stringify(record);
}

type Parsed = { ok: true; record: AuditExportRecord } | { ok: false; message: string };

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isSeq = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 1;

/** Parses and shape-checks one line. */
export function parseExportLine(text: string): Parsed {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { ok: false, message: `not JSON (${(error as Error).message})` };
  }
  if (!isObject(value)) return { ok: false, message: 'not a JSON object' };
  switch (value['type']) {
    case 'header':
      if (value['format'] !== AUDIT_EXPORT_FORMAT) {
        return { ok: false, message: `unknown format ${JSON.stringify(value['format'])}` };
      }
      if (typeof value['publicKey'] !== 'string' || typeof value['keyId'] !== 'string') {
        return { ok: false, message: 'header without publicKey/keyId' };
      }
      return { ok: true, record: value as unknown as AuditExportHeader };
    case 'checkpoint':
      if (!isSeq(value['seq']) || !isSeq(value['fromSeq']) || typeof value['hash'] !== 'string') {
        return { ok: false, message: 'checkpoint without a valid seq, fromSeq and hash' };
      }
      return { ok: true, record: value as unknown as AuditExportRecord };
    case 'head':
      if (
        !isSeq(value['seq']) ||
        typeof value['hash'] !== 'string' ||
        typeof value['ts'] !== 'string' ||
        typeof value['keyId'] !== 'string' ||
        typeof value['signature'] !== 'string'
      ) {
        return { ok: false, message: 'head without a valid seq, hash, ts, keyId and signature' };
      }
      return { ok: true, record: value as unknown as AuditExportRecord };
    case 'entry':
      if (
        !isSeq(value['seq']) ||
        typeof value['ts'] !== 'string' ||
        !(typeof value['execution'] === 'string' || value['execution'] === null) ||
        typeof value['kind'] !== 'string' ||
        !isObject(value['data']) ||
        typeof value['prevHash'] !== 'string' ||
        typeof value['hash'] !== 'string'
      ) {
        return {
          ok: false,
          message: 'entry without a valid seq, ts, execution, kind, data, prevHash and hash',
        };
      }
      return { ok: true, record: value as unknown as AuditExportRecord };
    default:
      return { ok: false, message: `unknown record type ${JSON.stringify(value['type'])}` };
  }
}

export type ExportVerification = AuditVerification & { readonly header: AuditExportHeader | undefined };

/**
 * Verifies an export fed line by line. `cryptoFor` turns the header (its public key) into the checks; it may throw
 * to refuse a key (e.g. one that isn't the key the user pinned), which is reported as `bad-signature`.
 */
export class ExportVerifier {
  readonly #cryptoFor: (header: AuditExportHeader) => ChainCrypto;
  #line = 0;
  #header: AuditExportHeader | undefined;
  readonly #heads: SignedHead[] = [];
  readonly #checkpoints: Checkpoint[] = [];
  #chain: ChainVerifier | undefined;
  #lastSeq = 0;
  #failure: AuditVerification | undefined;

  constructor(cryptoFor: (header: AuditExportHeader) => ChainCrypto) {
    this.#cryptoFor = cryptoFor;
  }

  /** Feeds the next line (without its newline). Returns false once the verdict is known. */
  pushLine(text: string): boolean {
    if (this.#failure !== undefined) return false;
    this.#line += 1;
    if (text.trim() === '') return true;
    const parsed = parseExportLine(text);
    if (!parsed.ok) return this.#malformed(parsed.message);
    const record = parsed.record;
    if (this.#header === undefined) {
      if (record.type !== 'header') return this.#malformed('the first line must be the header');
      this.#header = record;
      return true;
    }
    switch (record.type) {
      case 'header':
        return this.#malformed('a second header');
      case 'checkpoint': {
        if (this.#chain !== undefined || this.#heads.length > 0) {
          return this.#malformed('a checkpoint after the heads or entries began');
        }
        const { type: _type, ...checkpoint } = record;
        this.#checkpoints.push(checkpoint);
        return true;
      }
      case 'head': {
        if (this.#chain !== undefined) return this.#malformed('a signed head after the entries began');
        const { type: _type, ...head } = record;
        this.#heads.push(head);
        return true;
      }
      case 'entry': {
        const chain = this.#chainVerifier();
        if (chain === undefined) return false;
        const { type: _type, ...entry } = record;
        let link: ReturnType<typeof toLink>;
        try {
          link = toLink(entry as AuditEntry);
        } catch (error) {
          return this.#malformed((error as Error).message);
        }
        this.#lastSeq = entry.seq;
        return chain.push(link);
      }
    }
  }

  finish(): ExportVerification {
    if (this.#failure === undefined && this.#header === undefined) this.#malformed('the export is empty');
    if (this.#failure !== undefined) return { ...this.#failure, header: this.#header };
    const chain = this.#chainVerifier();
    if (chain === undefined) return { ...this.#failure!, header: this.#header };
    const result = chain.finish();
    if (result.ok && result.heads === 0) {
      // Nothing in it is signed: anyone could have written it (an empty export "verified" before).
      return {
        ok: false,
        problem: 'emptied',
        firstBadSeq: 1,
        message: `the export holds no signed head (${result.entries} entries): nothing in it is attested by a node key`,
        entries: result.entries,
        header: this.#header,
      };
    }
    return { ...result, header: this.#header };
  }

  #chainVerifier(): ChainVerifier | undefined {
    if (this.#chain !== undefined) return this.#chain;
    let crypto: ChainCrypto;
    try {
      crypto = this.#cryptoFor(this.#header!);
    } catch (error) {
      this.#failure = {
        ok: false,
        problem: 'bad-signature',
        firstBadSeq: this.#heads.length === 0 ? 1 : Math.min(...this.#heads.map((h) => h.seq)),
        message: (error as Error).message,
        entries: 0,
      };
      return undefined;
    }
    const checked = checkCheckpoints(this.#checkpoints, crypto);
    if (!checked.ok) {
      const { ok: _ok, ...failure } = checked;
      this.#failure = { ok: false, ...failure, entries: 0 };
      return undefined;
    }
    const witnessed = this.#header?.witnessed;
    this.#chain = new ChainVerifier(crypto, this.#heads, {
      ...(witnessed ? { witnessed: [witnessed] } : {}),
      ...(checked.from ? { from: checked.from } : {}),
    });
    return this.#chain;
  }

  #malformed(message: string): false {
    this.#failure = {
      ok: false,
      problem: 'malformed',
      firstBadSeq: this.#lastSeq + 1,
      message: `line ${this.#line} is not a valid ledger record: ${message}`,
      entries: this.#chain?.verified ?? 0,
    };
    return false;
  }
}

/** Records of a ledger held in memory, in export order (for fakes and tests). */
export function* exportRecords(
  header: AuditExportHeader,
  heads: readonly SignedHead[],
  entries: Iterable<AuditEntry>,
): Generator<AuditExportRecord> {
  yield header;
  for (const head of [...heads].sort((a, b) => a.seq - b.seq)) yield { type: 'head', ...head };
  for (const entry of entries) yield { type: 'entry', ...entry };
}
