/**
 * The ledger's witness: every signed head is also written somewhere whoever can edit `$AEGIS_HOME` can't reach, so
 * `verify` can tell an emptied, replaced, truncated or re-signed ledger from an intact one.
 *
 * - A file (on by default): one JSON line per head, appended (O_APPEND, fsync'd) to
 *   `<dir>/<ledger-id>.jsonl`, where `dir` is `$AEGIS_AUDIT_WITNESS_DIR`, else `/var/lib/aegis/witness` for root,
 *   else `$XDG_STATE_HOME/aegis/witness` (`~/.local/state/...`), and the ledger id is the first 16 hex of SHA-256
 *   over the ledger file's absolute path (derived from where the ledger is, not from anything stored in it).
 * - Optionally syslog/journald (`AEGIS_AUDIT_WITNESS_SYSLOG=1`: `logger -t aegis-audit`) and an HTTP witness
 *   (`AEGIS_AUDIT_WITNESS_URL`: a POST of the same JSON). Those are for shipping heads off the host; `verify` reads
 *   back only the file.
 */
import { spawn } from 'node:child_process';
import { hash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { SignedHead } from '../../domain/audit/entry.ts';
import { AegisError } from '../../domain/errors.ts';

/** One witness line: a signed head, which ledger it belongs to and the public key that signed it. */
export interface WitnessRecord extends SignedHead {
  readonly ledger: string;
  readonly publicKey: string;
}

export interface AuditWitness {
  /** Where verify reads the heads back from (shown in messages). */
  readonly location: string;
  /** Records a head and the public key that signed it; throws when the file can't be written (fail closed). */
  record(head: SignedHead, publicKey: string): void;
  /** The heads recorded so far for this ledger, oldest first (a torn last line is skipped). */
  read(): WitnessRecord[];
}

export function defaultWitnessDir(env: Readonly<Record<string, string | undefined>>, uid: number): string {
  if (env['AEGIS_AUDIT_WITNESS_DIR']) return resolve(env['AEGIS_AUDIT_WITNESS_DIR']);
  if (uid === 0) return '/var/lib/aegis/witness';
  return join(env['XDG_STATE_HOME'] || join(env['HOME'] || homedir(), '.local', 'state'), 'aegis', 'witness');
}

/** First 16 hex of SHA-256 over the ledger file's absolute path. */
export function ledgerId(ledgerFile: string): string {
  return hash('sha256', resolve(ledgerFile), 'hex').slice(0, 16);
}

export interface FileWitnessOptions {
  readonly dir: string;
  readonly ledgerFile: string;
  /** Also send each head to syslog/journald through `logger`. @default false */
  readonly syslog?: boolean;
  /** Also POST each head (JSON) to this URL; failures are reported to `warn`, not fatal. */
  readonly url?: string;
  readonly warn?: (message: string) => void;
}

export class FileWitness implements AuditWitness {
  readonly location: string;
  readonly #ledger: string;
  readonly #options: FileWitnessOptions;

  constructor(options: FileWitnessOptions) {
    this.#ledger = resolve(options.ledgerFile);
    this.location = join(options.dir, `${ledgerId(this.#ledger)}.jsonl`);
    this.#options = options;
  }

  record(head: SignedHead, publicKey: string): void {
    const record: WitnessRecord = {
      seq: head.seq,
      hash: head.hash,
      ts: head.ts,
      keyId: head.keyId,
      signature: head.signature,
      ledger: this.#ledger,
      publicKey,
    };
    const line = `${JSON.stringify(record)}\n`;
    try {
      mkdirSync(dirname(this.location), { recursive: true, mode: 0o700 });
      const fd = openSync(this.location, 'a', 0o600);
      try {
        writeSync(fd, line);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    } catch (error) {
      throw new AegisError(
        'INTERNAL',
        `cannot write the audit witness ${this.location}: ${(error as Error).message}`,
        { cause: error, hint: 'set AEGIS_AUDIT_WITNESS_DIR to a writable directory outside $AEGIS_HOME' },
      );
    }
    const warn = this.#options.warn ?? (() => {});
    if (this.#options.syslog) {
      try {
        const child = spawn('logger', ['-t', 'aegis-audit', '--', line.trim()], { stdio: 'ignore' });
        child.on('error', (error) => warn(`audit witness: logger failed: ${error.message}`));
        child.unref();
      } catch (error) {
        warn(`audit witness: logger failed: ${(error as Error).message}`);
      }
    }
    if (this.#options.url) {
      const url = this.#options.url;
      void fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: line }).then(
        (response) => {
          if (!response.ok) warn(`audit witness: POST ${url} answered ${response.status}`);
        },
        (error: unknown) => warn(`audit witness: POST ${url} failed: ${String(error)}`),
      );
    }
  }

  read(): WitnessRecord[] {
    let text: string;
    try {
      text = readFileSync(this.location, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new AegisError('INTERNAL', `cannot read the audit witness ${this.location}`, { cause: error });
    }
    const records: WitnessRecord[] = [];
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        continue; // a torn line from a crash mid-write
      }
      const r = value as Partial<WitnessRecord>;
      if (r.ledger !== this.#ledger) continue;
      records.push(r as WitnessRecord);
    }
    return records;
  }
}
