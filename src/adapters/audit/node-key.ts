/**
 * The node's Ed25519 signing key and SHA-256, through node:crypto.
 *
 * The private key lives at `$AEGIS_HOME/keys/node-ed25519.pem` (PKCS#8 PEM, mode 0600, directory 0700). It is created
 * on first use — atomically, so two processes starting at once end up with the same key — and refused when its
 * file is readable by group or others (like ssh does), since anyone who can read it can forge signed heads.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  hash,
  type KeyObject,
  sign,
  verify,
} from 'node:crypto';
import { chmodSync, linkSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Hasher, Signer } from '../../app/ports.ts';
import { AegisError } from '../../domain/errors.ts';

export const nodeHasher: Hasher = {
  sha256Hex: (text: string) => hash('sha256', text, 'hex'),
};

interface KeyMaterial {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly publicKeyPem: string;
  readonly keyId: string;
}

/** First 16 hex digits of SHA-256 over the SPKI DER encoding of an Ed25519 public key. */
export function publicKeyId(publicKey: KeyObject): string {
  return createHash('sha256')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest('hex')
    .slice(0, 16);
}

/** Parses an SPKI PEM public key and checks it is Ed25519. */
export function parseEd25519PublicKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (error) {
    throw new AegisError('USAGE', `not a PEM public key: ${(error as Error).message}`, { cause: error });
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new AegisError(
      'USAGE',
      `expected an Ed25519 public key, got ${key.asymmetricKeyType ?? 'unknown'}`,
    );
  }
  return key;
}

/** Verifies an Ed25519 signature (base64) over the UTF-8 bytes of `message`; false for anything malformed. */
export function verifyEd25519(publicKey: KeyObject, message: string, signatureBase64: string): boolean {
  try {
    const signature = Buffer.from(signatureBase64, 'base64');
    if (signature.length !== 64) return false;
    return verify(null, Buffer.from(message, 'utf8'), publicKey, signature);
  } catch {
    return false;
  }
}

export class Ed25519NodeKey implements Signer {
  readonly file: string;
  #key: KeyMaterial | undefined;

  constructor(file: string) {
    this.file = file;
  }

  /** True when the key file exists (does not create it). */
  exists(): boolean {
    return this.#load(false) !== undefined;
  }

  keyId(): string {
    return this.#material().keyId;
  }

  publicKeyPem(): string {
    return this.#material().publicKeyPem;
  }

  sign(message: string): string {
    return sign(null, Buffer.from(message, 'utf8'), this.#material().privateKey).toString('base64');
  }

  /** Never creates the key: with no key yet, nothing verifies. */
  verify(message: string, signature: string, keyId: string): boolean {
    const key = this.#load(false);
    if (key === undefined || keyId !== key.keyId) return false;
    return verifyEd25519(key.publicKey, message, signature);
  }

  #material(): KeyMaterial {
    return this.#load(true)!;
  }

  #load(create: boolean): KeyMaterial | undefined {
    if (this.#key !== undefined) return this.#key;
    let pem: string;
    try {
      const mode = statSync(this.file).mode & 0o777;
      if ((mode & 0o077) !== 0) {
        throw new AegisError(
          'POLICY_DENIED',
          `the node key ${this.file} is readable by others (mode ${mode.toString(8).padStart(4, '0')})`,
          { hint: `chmod 600 ${this.file} — anyone who can read it can forge signed audit heads` },
        );
      }
      pem = readFileSync(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      if (!create) return undefined;
      pem = this.#create();
    }
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey(pem);
    } catch (error) {
      throw new AegisError('INTERNAL', `the node key ${this.file} is not a PEM private key`, {
        cause: error,
      });
    }
    if (privateKey.asymmetricKeyType !== 'ed25519') {
      throw new AegisError('INTERNAL', `the node key ${this.file} is not an Ed25519 key`);
    }
    const publicKey = createPublicKey(privateKey);
    this.#key = {
      privateKey,
      publicKey,
      publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      keyId: publicKeyId(publicKey),
    };
    return this.#key;
  }

  /** Writes a new key under a temporary name and links it into place: whoever links first wins. */
  #create(): string {
    const dir = dirname(this.file);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    const { privateKey } = generateKeyPairSync('ed25519');
    const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const temp = `${this.file}.${process.pid}.${Date.now()}.tmp`;
    writeFileSync(temp, pem, { mode: 0o600, flag: 'wx' });
    try {
      linkSync(temp, this.file);
      return pem;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      return readFileSync(this.file, 'utf8');
    } finally {
      unlinkSync(temp);
    }
  }
}
