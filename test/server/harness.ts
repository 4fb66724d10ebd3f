/**
 * Starts a real `aegis server` process for end-to-end tests: temp AEGIS_HOME and bundle dir, a free loopback port,
 * SQLite or a fresh PostgreSQL database (from AEGIS_TEST_DATABASE_URL, started by scripts/test-postgres.sh).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';

export const ROOT = resolve(import.meta.dirname, '../..');
export const BIN = join(ROOT, 'bin/aegis.mjs');
const CLI_ENTRY = join(ROOT, 'src/cli/bin.ts');

export type Backend = 'sqlite' | 'postgres';

/** Servers started by this test file and not yet stopped; `killServers` (in an `after` hook) ends them by pid. */
const live = new Set<ChildProcess>();

export async function killServers(): Promise<void> {
  await Promise.all(
    [...live].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    ),
  );
  live.clear();
}

/** Creates an empty PostgreSQL database for one server; undefined when no test PostgreSQL is configured. */
export async function freshDatabase(): Promise<{ url: string; drop: () => Promise<void> } | undefined> {
  const base = process.env['AEGIS_TEST_DATABASE_URL'];
  if (!base) return undefined;
  const name = `aegis_api_${process.pid}_${Math.floor(Math.random() * 1e9)}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const client = new pg.Client({ connectionString: base });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    },
  };
}

export function postgresMissing(): string | false {
  if (process.env['AEGIS_TEST_DATABASE_URL']) return false;
  return 'AEGIS_TEST_DATABASE_URL is not set: run `bash scripts/test-postgres.sh start` (npm test does this)';
}

export interface ServerProcess {
  readonly url: string;
  readonly home: string;
  readonly socketPath: string;
  readonly adminKey: string;
  readonly child: ChildProcess;
  readonly env: NodeJS.ProcessEnv;
  stderr(): string;
  /** SIGTERM and wait for exit. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for exit (crash). */
  kill9(): Promise<void>;
}

export interface ServerDirs {
  readonly home: string;
  readonly bundles: string;
  readonly cleanup: () => void;
}

export function serverDirs(): ServerDirs {
  const base = mkdtempSync(join(tmpdir(), 'aegis-srv-'));
  // The bundle dir must be traversable by the sandbox uid (agents are bound from there).
  chmodSync(base, 0o755);
  const home = join(base, 'home');
  const bundles = join(base, 'bundles');
  mkdirSync(home, { mode: 0o700 });
  return { home, bundles, cleanup: () => rmSync(base, { recursive: true, force: true }) };
}

export async function startServerProcess(options: {
  dirs: ServerDirs;
  databaseUrl?: string;
  args?: readonly string[];
  /** Extra environment for the server (e.g. AEGIS_SECRETS_KEY_FILE). */
  env?: NodeJS.ProcessEnv;
}): Promise<ServerProcess> {
  const { home, bundles } = options.dirs;
  const socketPath = join(home, 'run', 'aegis.sock');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    AEGIS_HOME: home,
    AEGIS_BUNDLE_DIR: bundles,
    // The ledger's witness and node key live outside the home: private to this server's temp dir.
    AEGIS_AUDIT_WITNESS_DIR: join(home, '..', 'witness'),
    AEGIS_NODE_KEY_FILE: join(home, '..', 'keys', 'node-ed25519.pem'),
    ...(options.databaseUrl ? { AEGIS_DATABASE_URL: options.databaseUrl } : { AEGIS_DATABASE_URL: '' }),
    // memory.embedder auto → hashing, whether or not the word-vector package is installed here (deterministic ids)
    AEGIS_WORD_VECTORS: 'off',
    ...options.env,
  };
  // Started directly on this Node (not through bin/aegis.mjs's re-exec) so signals reach the server itself.
  const child = spawn(
    process.execPath,
    [CLI_ENTRY, 'server', '--listen', '127.0.0.1:0', '--socket', socketPath, ...(options.args ?? [])],
    { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  live.add(child);
  child.once('exit', () => live.delete(child));
  let stderr = '';
  child.stdout!.on('data', (d) => (stderr += d));
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 60 s:\n${stderr}`)), 60_000);
    child.stderr!.on('data', (d) => {
      stderr += d;
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
      if (match) {
        clearTimeout(timer);
        resolveUrl(match[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${stderr}`));
    });
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    url,
    home,
    socketPath,
    adminKey: readFileSync(join(home, 'admin.key'), 'utf8').trim(),
    child,
    env,
    stderr: () => stderr,
    async stop() {
      child.kill('SIGTERM');
      return exited;
    },
    async kill9() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the `aegis` CLI (as users do, through bin/aegis.mjs) against a server. */
export function cli(args: readonly string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((r) => child.on('close', (code) => r({ code, stdout, stderr })));
}

export { pollUntil } from '../support/poll.ts';

/** One JSON API call as a key: status, the body as text, and parsed when it is JSON (else `{}`). */
export async function apiCall(
  url: string,
  key: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown>; text: string }> {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = {};
  }
  return { status: response.status, json, text };
}
