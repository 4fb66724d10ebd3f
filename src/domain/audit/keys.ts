/**
 * Node key rotation: which public keys may have signed a ledger's heads.
 *
 * When the node key is rotated, the new key endorses the retired one: it signs
 * `"aegis.audit.key-endorsement/v1\n" ‖ canonical-JSON({keyId, publicKey})`. A verifier that trusts the current key
 * (its own, or one pinned by the user) therefore also trusts every retired key reachable through endorsements, and
 * nothing else — a key an attacker adds to the list has no endorsement they could have made.
 */
import { canonicalJson } from './canonical-json.ts';

/** A retired node key and the endorsement by its successor. */
export interface EndorsedKey {
  /** First 16 hex of SHA-256 over the SPKI DER public key. */
  readonly keyId: string;
  /** SPKI PEM. */
  readonly publicKey: string;
  /** When it stopped signing. */
  readonly retiredAt: string;
  /** The key that replaced it and signed `endorsement`. */
  readonly endorsedBy: string;
  /** Base64 Ed25519 signature by `endorsedBy` over `endorsementMessage(this)`. */
  readonly endorsement: string;
}

export const KEY_ENDORSEMENT_CONTEXT = 'aegis.audit.key-endorsement/v1\n';

export function endorsementMessage(key: { readonly keyId: string; readonly publicKey: string }): string {
  return KEY_ENDORSEMENT_CONTEXT + canonicalJson({ keyId: key.keyId, publicKey: key.publicKey });
}

/**
 * The retired keys trusted through a chain of endorsements starting at `trustedKeyIds`. `checkEndorsement(key)`
 * verifies `key.endorsement` with the key `key.endorsedBy` (already trusted) and that `key.keyId` names
 * `key.publicKey`; it is only called for keys whose endorser is trusted.
 */
export function endorsedKeys(
  trustedKeyIds: readonly string[],
  ring: readonly EndorsedKey[],
  checkEndorsement: (key: EndorsedKey, endorser: string) => boolean,
): EndorsedKey[] {
  const trusted = new Set(trustedKeyIds);
  const accepted: EndorsedKey[] = [];
  let grew = true;
  while (grew) {
    grew = false;
    for (const key of ring) {
      if (trusted.has(key.keyId) || !trusted.has(key.endorsedBy)) continue;
      if (!checkEndorsement(key, key.endorsedBy)) continue;
      trusted.add(key.keyId);
      accepted.push(key);
      grew = true;
    }
  }
  return accepted;
}
