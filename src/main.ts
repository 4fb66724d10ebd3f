/**
 * Composition root: the only place that picks and constructs adapters. The CLI (and later the server) ask it
 * for a context; nothing else calls adapter constructors.
 */
import { accessSync, constants as fsConstants, mkdirSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  defaultNodeKeyFile,
  Ed25519NodeKey,
  migrateLegacyNodeKey,
  NODE_KEY_NAME,
  nodeHasher,
} from './adapters/audit/node-key.ts';
import { SqliteAuditLedger } from './adapters/audit/sqlite-ledger.ts';
import { defaultWitnessDir, FileWitness } from './adapters/audit/witness.ts';
import { systemClock } from './adapters/clock/system-clock.ts';
import { loadConfig as loadConfigFile } from './adapters/config/config-file.ts';
import { ProcIdentity } from './adapters/host/process-identity.ts';
import { SortableIds } from './adapters/ids/ids.ts';
import { createLlmWiring } from './adapters/llm/wiring.ts';
import { RuntimeRouter } from './adapters/runtimes/registry.ts';
import { SandboxRuntime } from './adapters/runtimes/sandbox/runtime.ts';
import { FileSecretStore } from './adapters/secrets/file-secret-store.ts';
import { cryptoSecretRandom } from './adapters/secrets/random.ts';
import { SqliteStore } from './adapters/store/sqlite/store.ts';
import type { LlmCallRecord } from './app/llm-gateway.ts';
import type { LlmWiring } from './app/llm-wiring.ts';
import type {
  AuditLog,
  Clock,
  Ids,
  LlmSpendStore,
  ProcessIdentity,
  SecretRandom,
  Signer,
  Store,
} from './app/ports.ts';
import { AegisError } from './domain/errors.ts';

export interface AegisConfig {
  /** Data directory (store, audit ledger, keys). @default $AEGIS_HOME or ~/.aegis */
  readonly home: string;
  /** Sign the audit ledger's head every this many entries (and when the process closes it). @default 1000 */
  readonly auditHeadEvery?: number;
  /** Key that seals the secret store. @default $AEGIS_SECRETS_KEY_FILE, else the FileSecretStore default */
  readonly secretsKeyFile?: string;
  /**
   * The node key that signs the ledger's heads, outside the home. @default $AEGIS_NODE_KEY_FILE, else
   * /etc/aegis/node-ed25519.pem (root), else beside the secrets key
   */
  readonly nodeKeyFile?: string;
  /**
   * Where every signed head is also recorded (`<dir>/<ledger-id>.jsonl`). @default $AEGIS_AUDIT_WITNESS_DIR, else
   * /var/lib/aegis/witness (root), else $XDG_STATE_HOME/aegis/witness
   */
  readonly witnessDir?: string;
  /** Also send signed heads to syslog/journald (`logger`). @default $AEGIS_AUDIT_WITNESS_SYSLOG === '1' */
  readonly witnessSyslog?: boolean;
  /** Also POST signed heads here. @default $AEGIS_AUDIT_WITNESS_URL */
  readonly witnessUrl?: string;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): AegisConfig {
  const headEvery = env['AEGIS_AUDIT_HEAD_EVERY'];
  let auditHeadEvery: number | undefined;
  if (headEvery !== undefined && headEvery !== '') {
    auditHeadEvery = Number(headEvery);
    if (!Number.isSafeInteger(auditHeadEvery) || auditHeadEvery < 1) {
      throw new AegisError('USAGE', `AEGIS_AUDIT_HEAD_EVERY must be a whole number ≥ 1, got "${headEvery}"`);
    }
  }
  const uid = process.getuid?.() ?? 1000;
  return {
    home: resolve(env['AEGIS_HOME'] || join(homedir(), '.aegis')),
    ...(auditHeadEvery === undefined ? {} : { auditHeadEvery }),
    ...(env['AEGIS_SECRETS_KEY_FILE'] ? { secretsKeyFile: resolve(env['AEGIS_SECRETS_KEY_FILE']) } : {}),
    nodeKeyFile: resolve(defaultNodeKeyFile(env, uid)),
    witnessDir: defaultWitnessDir(env, uid),
    ...(env['AEGIS_AUDIT_WITNESS_SYSLOG'] === '1' ? { witnessSyslog: true } : {}),
    ...(env['AEGIS_AUDIT_WITNESS_URL'] ? { witnessUrl: env['AEGIS_AUDIT_WITNESS_URL'] } : {}),
  };
}

/** Where the ledger, its witness and the node key live (the key and the witness outside the home). */
export function auditPaths(config: AegisConfig): {
  ledger: string;
  nodeKey: string;
  legacyNodeKey: string;
  witnessDir: string;
} {
  return {
    ledger: join(config.home, 'audit.db'),
    nodeKey: config.nodeKeyFile ?? resolve(defaultNodeKeyFile(process.env, process.getuid?.() ?? 1000)),
    legacyNodeKey: join(config.home, 'keys', NODE_KEY_NAME),
    witnessDir: config.witnessDir ?? defaultWitnessDir(process.env, process.getuid?.() ?? 1000),
  };
}

export interface StoreContext {
  readonly config: AegisConfig;
  readonly store: SqliteStore;
  readonly clock: Clock;
  readonly identity: ProcessIdentity;
}

export interface AuditContext {
  readonly config: AegisConfig;
  readonly audit: AuditLog;
  readonly nodeKey: Signer;
}

export interface LocalContext extends StoreContext {
  /** Routes each agent to the runtime its spec.isolation names (registry.ts). */
  readonly runtime: RuntimeRouter;
  /** The sandbox runtime behind the router (tests and the bench reach its scratch root and cgroups). */
  readonly sandbox: SandboxRuntime;
  readonly ids: Ids;
  readonly audit: AuditLog;
  readonly secrets: FileSecretStore;
  readonly random: SecretRandom;
  /** Closes the audit ledger (writing what is buffered and signing its head), then the store. */
  close(): Promise<void>;
}

/** package.json's version, read once. */
export const AEGIS_VERSION: string = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

export { systemClock };

/**
 * Makes sure the data directory is usable before a store opens in it: a bad AEGIS_HOME (a file, unwritable, under a
 * read-only mount) is the user's configuration — USAGE (exit 2) with a hint — never an internal error.
 */
export function ensureHome(config: AegisConfig): void {
  const home = config.home;
  const bad = (why: string, cause?: unknown) =>
    new AegisError('USAGE', `AEGIS_HOME ${home} cannot be used: ${why}`, {
      ...(cause === undefined ? {} : { cause }),
      hint: 'point AEGIS_HOME at a directory you can write (it is created if missing), or unset it for ~/.aegis',
    });
  try {
    mkdirSync(home, { recursive: true, mode: 0o700 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTDIR') throw bad('it is not a directory', error);
    throw bad((error as Error).message, error);
  }
  if (!statSync(home).isDirectory()) throw bad('it is not a directory');
  try {
    accessSync(home, fsConstants.W_OK | fsConstants.X_OK);
  } catch (error) {
    throw bad('it is not writable by this user', error);
  }
}

export function openStoreContext(config: AegisConfig = loadConfig()): StoreContext {
  ensureHome(config);
  const store = SqliteStore.open(join(config.home, 'aegis.db'));
  return { config, store, clock: systemClock, identity: new ProcIdentity() };
}

/** The whole local store (`$AEGIS_HOME/aegis.db`), e.g. for `aegis prune`. Close it when done. */
export function openLocalStore(config: AegisConfig = loadConfig()): Store {
  ensureHome(config);
  return SqliteStore.open(join(config.home, 'aegis.db'));
}

const warnStderr = (message: string) => process.stderr.write(`aegis: warning: ${message}\n`);

/**
 * The audit ledger (`$AEGIS_HOME/audit.db`), its witness and the node key that signs its heads. `writer`: this
 * process appends (a server, `aegis run`) — it adopts a tail a crashed writer left unsigned. Close `audit` when done.
 */
export function openAuditContext(
  config: AegisConfig = loadConfig(),
  options: { readonly writer?: boolean } = {},
): AuditContext & { readonly witness: FileWitness; readonly nodeKey: Ed25519NodeKey } {
  ensureHome(config);
  const paths = auditPaths(config);
  migrateLegacyNodeKey(paths.legacyNodeKey, paths.nodeKey, warnStderr);
  const nodeKey = new Ed25519NodeKey(paths.nodeKey);
  const witness = new FileWitness({
    dir: paths.witnessDir,
    ledgerFile: paths.ledger,
    ...(config.witnessSyslog ? { syslog: true } : {}),
    ...(config.witnessUrl ? { url: config.witnessUrl } : {}),
    warn: warnStderr,
  });
  const audit = SqliteAuditLedger.open({
    file: paths.ledger,
    signer: nodeKey,
    hasher: nodeHasher,
    clock: systemClock,
    witness,
    writer: options.writer === true,
    warn: warnStderr,
    ...(config.auditHeadEvery === undefined ? {} : { headEvery: config.auditHeadEvery }),
  });
  return { config, audit, nodeKey, witness };
}

/** Where a node records how far it shipped its ledger to the cluster: beside its witness, outside the home. */
export function replicationStateFile(witness: FileWitness): string {
  return witness.location.replace(/\.jsonl$/, '.replicated.json');
}

/**
 * The cluster ledger in PostgreSQL (ADR 0116) and, for a server, the replicator that ships this node's ledger into
 * it (started: key published, backlog shipped). Close with `replicator.stop()` (after the local ledger closed, so its
 * last head goes too), then `cluster.close()`.
 */
export async function openLedgerReplication(
  audit: { readonly nodeKey: Ed25519NodeKey; readonly witness: FileWitness; readonly config: AegisConfig },
  nodeId: string,
  databaseUrl: string,
  warn: (message: string) => void = warnStderr,
): Promise<{
  readonly cluster: import('./adapters/audit/postgres-cluster-ledger.ts').PostgresClusterLedger;
  readonly replicator: import('./adapters/audit/ledger-replicator.ts').LedgerReplicator;
}> {
  const { PostgresClusterLedger } = await import('./adapters/audit/postgres-cluster-ledger.ts');
  const { LedgerReplicator } = await import('./adapters/audit/ledger-replicator.ts');
  const cluster = await PostgresClusterLedger.open(databaseUrl);
  const replicator = new LedgerReplicator({
    node: nodeId,
    ledgerFile: auditPaths(audit.config).ledger,
    cluster,
    signer: audit.nodeKey,
    clock: systemClock,
    stateFile: replicationStateFile(audit.witness),
    warn,
  });
  try {
    await replicator.start();
  } catch (error) {
    await replicator.stop().catch(() => {});
    await cluster.close().catch(() => {});
    throw error;
  }
  return { cluster, replicator };
}

/**
 * The secret store: `$AEGIS_HOME/secrets.json`, sealed under the key file (`AEGIS_SECRETS_KEY_FILE`, else
 * /etc/aegis/secrets.key for root, `$XDG_CONFIG_HOME/aegis/secrets.key` otherwise).
 */
export function openSecretStore(config: AegisConfig = loadConfig()): FileSecretStore {
  ensureHome(config);
  return new FileSecretStore({
    home: config.home,
    ...(config.secretsKeyFile === undefined ? {} : { keyFile: config.secretsKeyFile }),
  });
}

/**
 * The orchestrator's LLM gateway: providers and aliases from the config file (`$AEGIS_CONFIG`, else
 * `$AEGIS_HOME/config.yaml`, else /etc/aegis/config.yaml; none: no models configured), provider keys from the sealed
 * secret store. One per process; agents reach it through the in-sandbox API.
 */
export async function openLlmWiring(
  secrets: { get(name: string): Promise<string> },
  options: {
    readonly env?: NodeJS.ProcessEnv;
    readonly observe?: (record: LlmCallRecord) => void;
    /** Where `llm.budgets` spend is kept (the store); without it, a config with budgets is refused. */
    readonly spend?: LlmSpendStore;
    readonly onSpendError?: (error: unknown) => void;
  } = {},
): Promise<LlmWiring> {
  const loaded = await loadConfigFile(options.env ?? process.env);
  return createLlmWiring({
    settings: loaded.llm,
    secrets,
    ...(options.observe ? { observe: options.observe } : {}),
    ...(options.spend ? { spend: options.spend } : {}),
    ...(options.onSpendError ? { onSpendError: options.onSpendError } : {}),
  });
}

export function openLocalContext(config: AegisConfig = loadConfig()): LocalContext {
  const base = openStoreContext(config);
  let audit: AuditLog;
  try {
    audit = openAuditContext(config, { writer: true }).audit;
  } catch (error) {
    void base.store.close();
    throw error;
  }
  const sandbox = new SandboxRuntime({
    identity: base.identity,
    protectedPaths: [config.home],
    ...(process.env['AEGIS_SCRATCH_DIR'] ? { scratchRoot: process.env['AEGIS_SCRATCH_DIR'] } : {}),
    ...(process.env['AEGIS_CGROUP_PARENT'] ? { cgroupParent: process.env['AEGIS_CGROUP_PARENT'] } : {}),
    ...(process.env['AEGIS_NODE_BINARY'] ? { nodeBinary: process.env['AEGIS_NODE_BINARY'] } : {}),
  });
  // The other runtimes share the sandbox's scratch root and Node binary (created on first use: registry.ts).
  const runtime = new RuntimeRouter(
    {
      identity: base.identity,
      protectedPaths: [config.home],
      scratchRoot: sandbox.scratchRoot,
      imageCacheDir: join(config.home, 'images'),
      ...(process.env['AEGIS_NODE_BINARY'] ? { nodeBinary: process.env['AEGIS_NODE_BINARY'] } : {}),
    },
    undefined,
    [sandbox],
  );
  const close = async () => {
    try {
      await audit.close();
    } finally {
      await base.store.close();
    }
  };
  return {
    ...base,
    runtime,
    sandbox,
    ids: new SortableIds(),
    audit,
    secrets: openSecretStore(config),
    random: cryptoSecretRandom,
    close,
  };
}
