/**
 * Offline verification of a ledger export (JSONL): streams the file through the domain's ExportVerifier with
 * SHA-256 and the Ed25519 public key from the export's header — or a key the user pins, which is what makes the
 * check meaningful against someone who could rewrite the whole file.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { type ExportVerification, ExportVerifier } from '../../domain/audit/export-format.ts';
import { AegisError } from '../../domain/errors.ts';
import {
  checkEndorsements,
  nodeHasher,
  parseEd25519PublicKey,
  publicKeyId,
  verifyEd25519,
} from './node-key.ts';

export interface VerifyExportOptions {
  /** SPKI PEM of the key the heads must be signed with; without it the header's key is trusted. */
  readonly publicKeyPem?: string;
}

export async function verifyAuditExportFile(
  file: string,
  options: VerifyExportOptions = {},
): Promise<ExportVerification> {
  const pinned = options.publicKeyPem === undefined ? undefined : parseEd25519PublicKey(options.publicKeyPem);
  const verifier = new ExportVerifier((header) => {
    const key = parseEd25519PublicKey(header.publicKey);
    const keyId = publicKeyId(key);
    if (keyId !== header.keyId) {
      throw new Error(`the export header names key ${header.keyId} but carries key ${keyId}`);
    }
    if (pinned !== undefined && publicKeyId(pinned) !== keyId) {
      throw new Error(`the export is signed by key ${keyId}, not by the pinned key ${publicKeyId(pinned)}`);
    }
    // Keys retired by rotation count only when endorsed, in a chain, by the (pinned) current key.
    const trusted = new Map([[keyId, key]]);
    for (const retired of checkEndorsements(keyId, key, header.keys ?? [])) {
      trusted.set(retired.keyId, parseEd25519PublicKey(retired.publicKey));
    }
    return {
      sha256Hex: nodeHasher.sha256Hex,
      verifySignature: (message, signature, headKeyId) => {
        const signer = trusted.get(headKeyId);
        return signer !== undefined && verifyEd25519(signer, message, signature);
      },
    };
  });
  const stream = createReadStream(file, { encoding: 'utf8' });
  const opened = new Promise<void>((resolve, reject) => {
    stream.once('open', () => resolve());
    stream.once('error', reject);
  });
  try {
    await opened;
  } catch (error) {
    throw new AegisError('NOT_FOUND', `cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
  try {
    for await (const line of lines) if (!verifier.pushLine(line)) break;
  } finally {
    lines.close();
    stream.destroy();
  }
  return verifier.finish();
}
