/**
 * The node's Ed25519 signing key and SHA-256, through node:crypto.
 *
 * The private key lives outside `$AEGIS_HOME` (see `defaultNodeKeyFile`: `/etc/aegis/node-ed25519.pem` for root,
 * beside the secrets key otherwise), so whoever can write the AEGIS home (the ledger) can't also read the key that
 * signs it. PKCS#8 PEM, mode 0600, directory 0700. It is created on first use — atomically, so two processes starting
 * at once end up with the same key — and refused when its file is readable by group or others (like ssh does).
 *
 * Rotation (`rotate`) replaces it with a new key that endorses the old one (domain/audit/keys.ts); the retired keys
 * are listed in `<key>.retired.jsonl` beside it, so heads they signed keep verifying.
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
import {
  appendFileSync,
  chmodSync,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import type { Hasher, Signer } from '../../app/ports.ts';
import { type EndorsedKey, endorsedKeys, endorsementMessage } from '../../domain/audit/keys.ts';
import { AegisError } from '../../domain/errors.ts';
import { defaultKeyFile } from '../secrets/file-secret-store.ts';

export const NODE_KEY_NAME = 'node-ed25519.pem';

/**
 * Where the node key lives when nobody says otherwise: `$AEGIS_NODE_KEY_FILE`, else `/etc/aegis/node-ed25519.pem`
 * for root, else beside the secrets key (`$XDG_CONFIG_HOME/aegis/`, or the directory of `$AEGIS_SECRETS_KEY_FILE`).
 */
export function defaultNodeKeyFile(env: Readonly<Record<string, string | undefined>>, uid: number): string {
  if (env['AEGIS_NODE_KEY_FILE']) return env['AEGIS_NODE_KEY_FILE'];
  if (uid === 0) return join('/etc/aegis', NODE_KEY_NAME);
  return join(dirname(defaultKeyFile(env, uid)), NODE_KEY_NAME);
}

/**
 * Moves a key from where older versions kept it (`$AEGIS_HOME/keys/node-ed25519.pem`) to `target` when `target` has
 * none yet (linked into place like a new key, so concurrent starts agree). A legacy key that differs from an
 * existing `target` is not used — anyone who can write the home could have planted it — and `warn` says so.
 */
export function migrateLegacyNodeKey(legacy: string, target: string, warn: (message: string) => void): void {
  if (legacy === target || !existsSync(legacy)) return;
  const pem = readFileSync(legacy, 'utf8');
  if (!existsSync(target)) {
    const dir = dirname(target);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const temp = `${target}.${process.pid}.${Date.now()}.tmp`;
    writeFileSync(temp, pem, { mode: 0o600, flag: 'wx' });
    try {
      linkSync(temp, target);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    } finally {
      unlinkSync(temp);
    }
  }
  if (readFileSync(target, 'utf8') === pem) {
    unlinkSync(legacy);
    warn(`moved the audit node key from ${legacy} to ${target} (keys no longer live in the AEGIS home)`);
  } else {
    warn(
      `ignoring ${legacy}: the node key is ${target}; a key inside the AEGIS home is not trusted ` +
        '(heads it signed will not verify — remove the file once you have checked it)',
    );
  }
}

export const nodeHasher: Hasher = {
  sha256Hex: (text: string) => hash('sha256', text, 'hex'),
};

export interface PendingKey {
  readonly privateKey: KeyObject;
  readonly keyId: string;
  readonly publicKeyPem: string;
}

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
  /** Retired keys, one JSON line each (EndorsedKey), beside the key. */
  readonly retiredFile: string;
  #key: KeyMaterial | undefined;
  #retired: Map<string, KeyObject> | undefined;

  constructor(file: string) {
    this.file = file;
    this.retiredFile = file.replace(/\.pem$/, '') + '.retired.jsonl';
  }

  /** Retired keys whose endorsement chain reaches the current key (what exports carry). */
  retiredKeys(): EndorsedKey[] {
    const current = this.#load(false);
    if (current === undefined) return [];
    let text: string;
    try {
      text = readFileSync(this.retiredFile, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const ring: EndorsedKey[] = [];
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      try {
        ring.push(JSON.parse(line) as EndorsedKey);
      } catch {
        // a torn last line (crash while rotating) is skipped
      }
    }
    return checkEndorsements(current.keyId, current.publicKey, ring);
  }

  /** A new key, not yet in use: record it (e.g. in the ledger, signed by the current key), then `rotateCommit`. */
  rotatePrepare(): PendingKey {
    const { privateKey } = generateKeyPairSync('ed25519');
    const publicKey = createPublicKey(privateKey);
    return {
      privateKey,
      keyId: publicKeyId(publicKey),
      publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    };
  }

  /**
   * Replaces the key with `next`, which endorses the current one (appended to `retiredFile` first, so a crash in
   * between leaves the old key in place and an endorsement nobody trusts). The old private key is gone after this.
   */
  rotateCommit(next: PendingKey, now: string): { from: string; to: string } {
    const old = this.#material();
    const retired: EndorsedKey = {
      keyId: old.keyId,
      publicKey: old.publicKeyPem,
      retiredAt: now,
      endorsedBy: next.keyId,
      endorsement: sign(
        null,
        Buffer.from(endorsementMessage({ keyId: old.keyId, publicKey: old.publicKeyPem }), 'utf8'),
        next.privateKey,
      ).toString('base64'),
    };
    const temp = `${this.file}.${process.pid}.${Date.now()}.tmp`;
    writeFileSync(temp, next.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), {
      mode: 0o600,
      flag: 'wx',
    });
    appendFileSync(this.retiredFile, `${JSON.stringify(retired)}\n`, { mode: 0o600 });
    renameSync(temp, this.file);
    this.#key = undefined;
    this.#retired = undefined;
    return { from: old.keyId, to: next.keyId };
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

  /** Never creates the key: with no key yet, nothing verifies. Retired keys endorsed by the current one verify. */
  verify(message: string, signature: string, keyId: string): boolean {
    const key = this.#load(false);
    if (key === undefined) return false;
    if (keyId === key.keyId) return verifyEd25519(key.publicKey, message, signature);
    this.#retired ??= new Map(this.retiredKeys().map((k) => [k.keyId, createPublicKey(k.publicKey)]));
    const retired = this.#retired.get(keyId);
    return retired !== undefined && verifyEd25519(retired, message, signature);
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

/** The keys of `ring` trusted through endorsements from `currentKeyId` (malformed entries are ignored). */
export function checkEndorsements(
  currentKeyId: string,
  currentKey: KeyObject,
  ring: readonly EndorsedKey[],
): EndorsedKey[] {
  const keys = new Map<string, KeyObject>([[currentKeyId, currentKey]]);
  const accepted = endorsedKeys([currentKeyId], ring, (key, endorser) => {
    try {
      if (typeof key.publicKey !== 'string' || typeof key.endorsement !== 'string') return false;
      const publicKey = parseEd25519PublicKey(key.publicKey);
      if (publicKeyId(publicKey) !== key.keyId) return false;
      const endorserKey = keys.get(endorser);
      if (
        endorserKey === undefined ||
        !verifyEd25519(endorserKey, endorsementMessage(key), key.endorsement)
      ) {
        return false;
      }
      keys.set(key.keyId, publicKey);
      return true;
    } catch {
      return false;
    }
  });
  return accepted;
}
