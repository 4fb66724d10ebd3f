/**
 * Secrets at rest: `$AEGIS_HOME/secrets.json` (0600), every value sealed with AES-256-GCM under a 32-byte key kept
 * in a separate file, so a copy of the AEGIS home (backups, support bundles) holds no usable secret.
 *
 * - Each value: fresh random 12-byte IV, 16-byte tag, AAD = `aegis-secret/v1:<NAME>` — swapping two entries'
 *   ciphertexts, editing one, or changing the version is detected on `get`.
 * - The key file: `keyFile` option, else `$AEGIS_SECRETS_KEY_FILE`, else `/etc/aegis/secrets.key` for root and
 *   `$XDG_CONFIG_HOME/aegis/secrets.key` (`~/.config/...`) for everyone else. Created on the first `set` (0600, in a
 *   0700 directory, exclusively: two racing first writers end up with one key). Like ssh with private keys, a key
 *   file readable or writable by group/others, or owned by another user, is refused.
 * - Writes are atomic: a 0600 temp file in the same directory, fsync, rename, fsync of the directory.
 * - Values never appear in errors, `list()` or the file in clear.
 *
 * One process at a time should write (concurrent `set`s inside one process are serialised here; across processes
 * the last writer wins).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, link, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { AegisError } from '../../domain/errors.ts';
import { SECRET_NAME_PATTERN } from '../../domain/secrets/secret-ref.ts';

export const SECRETS_FILE = 'secrets.json';
const FORMAT_VERSION = 1;
const ALGORITHM = 'aes-256-gcm';
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Largest value accepted (API keys, tokens, small JSON credentials). */
export const MAX_SECRET_BYTES = 64 * 1024;

export interface FileSecretStoreOptions {
  /** The AEGIS home directory; the store file is `<home>/secrets.json`. */
  readonly home: string;
  /** @default $AEGIS_SECRETS_KEY_FILE, else /etc/aegis/secrets.key (root) or $XDG_CONFIG_HOME/aegis/secrets.key */
  readonly keyFile?: string;
  /** @default process.env */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** @default process.getuid() */
  readonly uid?: number;
  /** Wall clock, ms since epoch. @default Date.now */
  readonly now?: () => number;
}

export interface SecretInfo {
  readonly name: string;
  /** ISO-8601. */
  readonly createdAt: string;
  readonly updatedAt: string;
}

interface SealedEntry {
  readonly alg: typeof ALGORITHM;
  readonly iv: string;
  readonly tag: string;
  readonly data: string;
  readonly createdAt: string;
  readonly updatedAt: string;
}

interface StoreFile {
  readonly version: typeof FORMAT_VERSION;
  readonly secrets: Record<string, SealedEntry>;
}

/** Where the key lives when nobody says otherwise. */
export function defaultKeyFile(env: Readonly<Record<string, string | undefined>>, uid: number): string {
  const explicit = env.AEGIS_SECRETS_KEY_FILE;
  if (explicit) return explicit;
  if (uid === 0) return '/etc/aegis/secrets.key';
  const config = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(config, 'aegis', 'secrets.key');
}

function aad(name: string): Buffer {
  return Buffer.from(`aegis-secret/v${FORMAT_VERSION}:${name}`, 'utf8');
}

function checkName(name: string): void {
  if (!SECRET_NAME_PATTERN.test(name)) {
    throw new AegisError('USAGE', `"${name}" is not a valid secret name`, {
      hint: 'use upper case letters, digits and "_", starting with a letter, at most 64 characters (e.g. OPENAI_KEY)',
    });
  }
}

function errno(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

async function writeAtomic(path: string, data: string | Buffer): Promise<void> {
  const temp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  const dir = await open(dirname(path), constants.O_RDONLY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

export class FileSecretStore {
  readonly path: string;
  readonly keyFile: string;
  readonly #home: string;
  readonly #uid: number;
  readonly #now: () => number;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: FileSecretStoreOptions) {
    this.#home = options.home;
    this.path = join(options.home, SECRETS_FILE);
    this.#uid = options.uid ?? process.getuid?.() ?? 0;
    this.keyFile = options.keyFile ?? defaultKeyFile(options.env ?? process.env, this.#uid);
    this.#now = options.now ?? Date.now;
  }

  /** Stores (or replaces) a secret. */
  async set(name: string, value: string): Promise<void> {
    checkName(name);
    if (typeof value !== 'string' || value === '') {
      throw new AegisError('USAGE', `secret ${name}: the value is empty`, {
        hint: `pipe the value in: printf %s "$VALUE" | aegis secret set ${name}`,
      });
    }
    if (Buffer.byteLength(value, 'utf8') > MAX_SECRET_BYTES) {
      throw new AegisError('USAGE', `secret ${name}: the value is larger than ${MAX_SECRET_BYTES} bytes`);
    }
    return this.#serial(async () => {
      const key = await this.#key(true);
      const file = await this.#read();
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv(ALGORITHM, key, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(aad(name));
      const data = Buffer.concat([cipher.update(value, 'utf8'), cipher.final()]);
      const now = new Date(this.#now()).toISOString();
      const previous = file.secrets[name];
      file.secrets[name] = {
        alg: ALGORITHM,
        iv: iv.toString('base64'),
        tag: cipher.getAuthTag().toString('base64'),
        data: data.toString('base64'),
        createdAt: previous?.createdAt ?? now,
        updatedAt: now,
      };
      await this.#write(file);
    });
  }

  /** The value; NOT_FOUND when there is no such secret. */
  async get(name: string): Promise<string> {
    checkName(name);
    const file = await this.#read();
    const entry = Object.hasOwn(file.secrets, name) ? file.secrets[name] : undefined;
    if (entry === undefined) {
      throw new AegisError('NOT_FOUND', `no secret named ${name}`, {
        hint: `aegis secret set ${name}`,
        details: { secret: name },
      });
    }
    const key = await this.#key(false);
    try {
      if (entry.alg !== ALGORITHM) throw new Error(`unknown algorithm ${String(entry.alg)}`);
      const tag = Buffer.from(entry.tag, 'base64');
      if (tag.length !== TAG_BYTES) throw new Error('bad tag length');
      const decipher = createDecipheriv(ALGORITHM, key, Buffer.from(entry.iv, 'base64'), {
        authTagLength: TAG_BYTES,
      });
      decipher.setAAD(aad(name));
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(Buffer.from(entry.data, 'base64')), decipher.final()]).toString(
        'utf8',
      );
    } catch (error) {
      throw new AegisError(
        'AUDIT_TAMPERED',
        `secret ${name} in ${this.path} failed verification: it was altered, moved from another name, or sealed under a different key than ${this.keyFile}`,
        {
          cause: error instanceof Error ? new Error(error.message) : undefined,
          details: { secret: name, store: this.path },
          hint: `set it again: aegis secret set ${name}`,
        },
      );
    }
  }

  /** Names and timestamps, sorted by name — never values. */
  async list(): Promise<SecretInfo[]> {
    const file = await this.#read();
    return Object.keys(file.secrets)
      .sort()
      .map((name) => ({
        name,
        createdAt: file.secrets[name]!.createdAt,
        updatedAt: file.secrets[name]!.updatedAt,
      }));
  }

  /** Deletes a secret; NOT_FOUND when there is none. */
  async remove(name: string): Promise<void> {
    checkName(name);
    return this.#serial(async () => {
      const file = await this.#read();
      if (!Object.hasOwn(file.secrets, name)) {
        throw new AegisError('NOT_FOUND', `no secret named ${name}`, { hint: 'aegis secret ls' });
      }
      delete file.secrets[name];
      await this.#write(file);
    });
  }

  #serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #read(): Promise<{ version: typeof FORMAT_VERSION; secrets: Record<string, SealedEntry> }> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (error) {
      if (errno(error) === 'ENOENT') return { version: FORMAT_VERSION, secrets: Object.create(null) };
      throw new AegisError('INTERNAL', `cannot read ${this.path}: ${errno(error) ?? 'error'}`, {
        cause: error,
      });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new AegisError('AUDIT_TAMPERED', `${this.path} is not valid JSON`, {
        hint: `restore it from a backup, or move it away and set the secrets again`,
      });
    }
    const file = parsed as Partial<StoreFile> | null;
    if (file?.version !== FORMAT_VERSION || typeof file.secrets !== 'object' || file.secrets === null) {
      throw new AegisError(
        'AUDIT_TAMPERED',
        `${this.path} is not a version ${FORMAT_VERSION} AEGIS secret store`,
      );
    }
    const secrets: Record<string, SealedEntry> = Object.create(null);
    for (const [name, entry] of Object.entries(file.secrets)) {
      if (SECRET_NAME_PATTERN.test(name)) secrets[name] = entry;
    }
    return { version: FORMAT_VERSION, secrets };
  }

  async #write(file: StoreFile): Promise<void> {
    await mkdir(this.#home, { recursive: true, mode: 0o700 });
    await writeAtomic(this.path, `${JSON.stringify(file, null, 2)}\n`);
  }

  /** Loads the key (creating it on first use when `create`), refusing unsafe key files. */
  async #key(create: boolean): Promise<Buffer> {
    for (;;) {
      let handle: Awaited<ReturnType<typeof open>>;
      try {
        handle = await open(this.keyFile, constants.O_RDONLY | constants.O_NOFOLLOW);
      } catch (error) {
        const code = errno(error);
        if (code === 'ENOENT' && create) {
          await this.#createKey();
          continue;
        }
        if (code === 'ENOENT') {
          throw new AegisError('NOT_FOUND', `secrets key file ${this.keyFile} does not exist`, {
            hint: `restore it, or point AEGIS_SECRETS_KEY_FILE at it; without it the secrets in ${this.path} cannot be read`,
          });
        }
        if (code === 'ELOOP') {
          throw new AegisError('POLICY_DENIED', `secrets key file ${this.keyFile} is a symbolic link`, {
            hint: 'point AEGIS_SECRETS_KEY_FILE at the real file',
          });
        }
        throw new AegisError('INTERNAL', `cannot open secrets key file ${this.keyFile}: ${code ?? 'error'}`);
      }
      try {
        const info = await handle.stat();
        if (!info.isFile()) {
          throw new AegisError('POLICY_DENIED', `secrets key file ${this.keyFile} is not a regular file`);
        }
        if ((info.mode & 0o077) !== 0) {
          throw new AegisError(
            'POLICY_DENIED',
            `secrets key file ${this.keyFile} is accessible by group or others (mode ${(info.mode & 0o777).toString(8)}); refusing to use it`,
            { hint: `chmod 600 ${this.keyFile}` },
          );
        }
        if (info.uid !== this.#uid && this.#uid !== 0) {
          throw new AegisError(
            'POLICY_DENIED',
            `secrets key file ${this.keyFile} belongs to uid ${info.uid}, not to this user (uid ${this.#uid}); refusing to use it`,
          );
        }
        const text = (await handle.readFile('utf8')).trim();
        if (!/^[0-9a-f]{64}$/.test(text)) {
          throw new AegisError(
            'POLICY_DENIED',
            `secrets key file ${this.keyFile} does not hold a 32-byte hex key`,
          );
        }
        return Buffer.from(text, 'hex');
      } finally {
        await handle.close();
      }
    }
  }

  async #createKey(): Promise<void> {
    const dir = dirname(this.keyFile);
    const existed = await stat(dir).then(
      () => true,
      () => false,
    );
    await mkdir(dir, { recursive: true, mode: 0o700 });
    if (!existed) await chmod(dir, 0o700);
    // Written in full to a temp file, then linked into place: link() fails if the name exists, so two racing first
    // writers end up sharing one key and nobody ever reads a half-written one.
    const temp = `${this.keyFile}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      try {
        await handle.writeFile(`${randomBytes(KEY_BYTES).toString('hex')}\n`);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await link(temp, this.keyFile).catch((error: unknown) => {
        if (errno(error) !== 'EEXIST') throw error; // another writer made it first: use theirs
      });
    } catch (error) {
      throw new AegisError(
        'INTERNAL',
        `cannot create secrets key file ${this.keyFile}: ${errno(error) ?? 'error'}`,
        {
          cause: error,
        },
      );
    } finally {
      await rm(temp, { force: true });
    }
  }
}
