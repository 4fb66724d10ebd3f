/**
 * A cluster on this machine for the multi-process tests (test/cluster/cluster.test.ts) and the cluster bench
 * (bench/scenarios/cluster.ts): one private PostgreSQL database, N `aegis server` processes sharing it, each with its
 * own $AEGIS_HOME, scratch dir, ledger, witness and node key, a loopback port picked by the kernel, and — when we
 * are root — its own hostname (a UTS namespace per node), so nodes look like separate machines to anything that asks
 * `os.hostname()`.
 *
 * A node is a child process behind a handle: start, kill -9, SIGSTOP/SIGCONT, restart (optionally under a new
 * hostname, with the same home), stop. The kind of process is a `NodeKind` (how to spawn it, how to tell it is
 * ready): `serverKind` and `edgeKind` (an `aegis edge join …` process, test/cluster/cluster-edge.test.ts).
 *
 * Every process this module starts is recorded by pid and ended by that pid in `Cluster.close()` (call it from an
 * `after` hook), and — as a last resort, should the test process exit without it — by a synchronous `exit` handler.
 * Stopped (SIGSTOP) processes are sent SIGCONT before SIGTERM so they can exit.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';

export const ROOT = resolve(import.meta.dirname, '../..');
const CLI_ENTRY = join(ROOT, 'src/cli/bin.ts');
const START_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 15_000;

// ---------------------------------------------------------------------------------------------------------------
// Last-resort cleanup: every child this module spawned, by pid.

const livePids = new Set<number>();
function killLive(): void {
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGCONT');
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.once('exit', killLive);
// Ctrl-C of a bench run or a test: the nodes go too (a signal's default action skips the 'exit' event).
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killLive();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL

/**
 * The URL of a PostgreSQL server for tests: AEGIS_TEST_DATABASE_URL when set (npm test starts one), else the
 * checkout's private cluster, started by scripts/test-postgres.sh (it reuses a running one).
 */
export function testPostgresUrl(): string {
  const given = process.env['AEGIS_TEST_DATABASE_URL'];
  if (given) return given;
  return execFileSync('bash', [join(ROOT, 'scripts/test-postgres.sh'), 'start'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
}

/** A fresh, empty database on `baseUrl` for one cluster; `drop` removes it (connections forced closed). */
export async function createDatabase(baseUrl: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `aegis_cluster_${process.pid}_${Math.floor(Math.random() * 1e9)}`;
  const admin = new pg.Client({ connectionString: baseUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const client = new pg.Client({ connectionString: baseUrl });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// What the server on this checkout supports (the cluster options arrive on branch `cluster`).

export interface ServerFeatures {
  readonly nodeId: boolean;
  readonly lease: boolean;
  readonly label: boolean;
}

let features: ServerFeatures | undefined;

/** Reads `aegis server --help` once: which cluster options this checkout's server has. */
export function serverFeatures(): ServerFeatures {
  if (features) return features;
  const help = execFileSync(process.execPath, [CLI_ENTRY, 'server', '--help'], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1' },
  });
  features = {
    nodeId: help.includes('--node-id'),
    lease: help.includes('--lease'),
    label: help.includes('--label'),
  };
  return features;
}

/** Why the cluster tests cannot run on this checkout, or false when they can. */
export function clusterMissing(): string | false {
  const f = serverFeatures();
  const missing = [!f.nodeId && '--node-id', !f.lease && '--lease'].filter(Boolean);
  if (missing.length === 0) return false;
  return `this server has no ${missing.join(' or ')} (issue 15's cluster, branch \`cluster\`, is not merged)`;
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

// ---------------------------------------------------------------------------------------------------------------
// Nodes

/** Where a node lives on disk: kept across restarts (a restart reuses the home — the node's identity). */
export interface NodeDirs {
  readonly base: string;
  readonly home: string;
  readonly scratch: string;
  readonly witness: string;
  readonly nodeKey: string;
}

/** How to spawn one kind of node and tell when it is ready. */
export interface NodeKind {
  readonly name: string;
  /** argv after the Node binary and src/cli/bin.ts. */
  argv(node: NodeConfig): string[];
  env(node: NodeConfig): NodeJS.ProcessEnv;
  /** The node's URL (and node id, when it says) from its log so far, once it is ready; undefined until then. */
  ready(log: string): { url: string; nodeId?: string } | undefined;
}

export interface NodeConfig {
  /** Test-facing name, e.g. `n1`. */
  readonly name: string;
  /**
   * `--node-id` (when the server supports it). Unset: the node picks its own (kept in its $AEGIS_HOME) and the
   * harness reads it from the node's ready line.
   */
  readonly nodeId?: string;
  readonly dirs: NodeDirs;
  readonly databaseUrl: string;
  /** `--lease` (e.g. `2s`), when the server supports it. */
  readonly lease?: string;
  readonly labels?: readonly string[];
  readonly maxConcurrent?: number;
  /** Extra server arguments. */
  readonly args?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /** CPUs to pin the node to (`taskset -c`), e.g. `0` or `0,1`. */
  readonly cpus?: string;
}

export const serverKind: NodeKind = {
  name: 'server',
  argv(node) {
    const f = serverFeatures();
    return [
      'server',
      ...['--listen', '127.0.0.1:0', '--no-socket'],
      ...['--max-queued', '20000', '--rate', '100000/s,burst=100000'],
      ...(node.maxConcurrent === undefined ? [] : ['--max-concurrent', String(node.maxConcurrent)]),
      ...(f.nodeId && node.nodeId ? ['--node-id', node.nodeId] : []),
      ...(f.lease && node.lease ? ['--lease', node.lease] : []),
      ...(f.label ? (node.labels ?? []).flatMap((label) => ['--label', label]) : []),
      ...(node.args ?? []),
    ];
  },
  env(node) {
    return {
      AEGIS_HOME: node.dirs.home,
      AEGIS_SCRATCH_DIR: node.dirs.scratch,
      AEGIS_AUDIT_WITNESS_DIR: node.dirs.witness,
      AEGIS_NODE_KEY_FILE: node.dirs.nodeKey,
      AEGIS_DATABASE_URL: node.databaseUrl,
    };
  },
  ready(log) {
    // `aegis server listening on http://127.0.0.1:PORT[ and unix:…] (node ID)`: the id on cluster-aware servers.
    const line = /listening on (http:\/\/127\.0\.0\.1:\d+)[^\n]*/.exec(log);
    if (!line) return undefined;
    const nodeId = /\(node ([^)\s]+)\)/.exec(line[0])?.[1];
    return { url: line[1]!, ...(nodeId ? { nodeId } : {}) };
  },
};

/**
 * An edge node (`aegis edge join`, ADR 0108/0134): `config.args` are the server URL to connect out to (a proxy the
 * test controls, say) then join flags (`--token …` on the first start; ignored once its data dir holds its key).
 * Its data dir is `<base>/edge` (traversable: the sandbox user reads bundles there), its capacity
 * `config.maxConcurrent`, its extra labels `config.labels`. No store and no ledger: the server it connects to
 * records its work. Ready once connected; its URL is the server it reached, its node id the one it enrolled as.
 */
export const edgeKind: NodeKind = {
  name: 'edge',
  argv(node) {
    return [
      'edge',
      'join',
      ...(node.args ?? []),
      ...['--data-dir', join(node.dirs.base, 'edge')],
      ...(node.maxConcurrent === undefined ? [] : ['--capacity', String(node.maxConcurrent)]),
      ...(node.labels ?? []).flatMap((label) => ['--label', label]),
    ];
  },
  env(node) {
    return { AEGIS_HOME: node.dirs.home, AEGIS_SCRATCH_DIR: node.dirs.scratch };
  },
  ready(log) {
    const line = /aegis edge: connected to (\S+) as (\S+)/.exec(log);
    return line ? { url: line[1]!, nodeId: line[2]! } : undefined;
  },
};

export type NodeState = 'stopped' | 'running' | 'paused';

/** One node process: a handle the tests drive (kill -9, pause, resume, restart). */
export class ClusterNode {
  readonly name: string;
  readonly kind: NodeKind;
  readonly config: NodeConfig;
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #url = '';
  #nodeId: string | undefined;
  #hostname: string;
  #state: NodeState = 'stopped';
  /** Everything the node wrote on stdout/stderr, over all its starts (a start is marked with a `## start` line). */
  #log = '';

  constructor(kind: NodeKind, config: NodeConfig, hostname: string) {
    this.kind = kind;
    this.config = config;
    this.name = config.name;
    this.#hostname = hostname;
  }

  get url(): string {
    return this.#url;
  }
  /** The node's cluster id: as configured, else as it said when it became ready (undefined before clusters). */
  get nodeId(): string | undefined {
    return this.config.nodeId ?? this.#nodeId;
  }
  get pid(): number | undefined {
    return this.#child?.pid;
  }
  get state(): NodeState {
    return this.#state;
  }
  get hostname(): string {
    return this.#hostname;
  }
  get home(): string {
    return this.config.dirs.home;
  }
  /** The environment the node runs with (for `aegis audit export` on its home, say). */
  get env(): NodeJS.ProcessEnv {
    return { ...process.env, ...this.kind.env(this.config), ...this.config.env };
  }
  log(): string {
    return this.#log;
  }

  /** Starts the process and resolves once it is ready (its URL is known). */
  async start(options: { hostname?: string } = {}): Promise<void> {
    if (this.#state !== 'stopped') throw new Error(`node ${this.name} is ${this.#state}, not stopped`);
    if (options.hostname) this.#hostname = options.hostname;
    const nodeArgv = [CLI_ENTRY, ...this.kind.argv(this.config)];
    // As root: a UTS namespace of its own, so os.hostname() in the node is its own (`unshare` execs, the shell
    // execs: the pid we hold is the node's). Not root: the host's name, said in the log line below.
    let file = process.execPath;
    let argv = nodeArgv;
    if (isRoot()) {
      file = 'unshare';
      argv = [
        '--uts',
        'sh',
        '-c',
        'hostname "$0" && exec "$@"',
        this.#hostname,
        ...(this.config.cpus ? ['taskset', '-c', this.config.cpus] : []),
        process.execPath,
        ...nodeArgv,
      ];
    } else if (this.config.cpus) {
      file = 'taskset';
      argv = ['-c', this.config.cpus, process.execPath, ...nodeArgv];
    }
    this.#log += `## start ${new Date().toISOString()} hostname=${isRoot() ? this.#hostname : '(host)'}\n`;
    const child = spawn(file, argv, { cwd: ROOT, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    this.#state = 'running';
    livePids.add(child.pid!);
    this.#exited = new Promise<void>((done) =>
      child.once('exit', () => {
        livePids.delete(child.pid!);
        if (this.#child === child) this.#state = 'stopped';
        done();
      }),
    );
    const append = (chunk: Buffer) => {
      this.#log += chunk.toString('utf8');
    };
    child.stdout!.on('data', append);
    child.stderr!.on('data', append);
    const since = this.#log.length;
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const ready = this.kind.ready(this.#log.slice(since));
      if (ready) {
        this.#url = ready.url;
        if (ready.nodeId) this.#nodeId = ready.nodeId;
        return;
      }
      if (this.state === 'stopped') {
        throw new Error(`node ${this.name} exited before it was ready:\n${this.#log.slice(since)}`);
      }
      if (Date.now() > deadline) {
        await this.kill9();
        throw new Error(`node ${this.name} not ready in ${START_TIMEOUT_MS} ms:\n${this.#log.slice(since)}`);
      }
      await new Promise((done) => setTimeout(done, 20));
    }
  }

  #signal(signal: NodeJS.Signals): void {
    const pid = this.#child?.pid;
    if (pid === undefined || this.#state === 'stopped') return;
    process.kill(pid, signal);
  }

  /** SIGKILL; resolves once the process is gone. Its sandboxes die with it (bwrap --die-with-parent). */
  async kill9(): Promise<void> {
    if (this.#state === 'stopped') return;
    this.#signal('SIGKILL');
    await this.#exited;
  }

  /** SIGSTOP: the process stops dead (no heartbeats, no lease renewals); its sandboxes keep running. */
  pause(): void {
    if (this.#state !== 'running') throw new Error(`node ${this.name} is ${this.#state}, not running`);
    this.#signal('SIGSTOP');
    this.#state = 'paused';
  }

  /** SIGCONT after `pause`. */
  resume(): void {
    if (this.#state !== 'paused') throw new Error(`node ${this.name} is ${this.#state}, not paused`);
    this.#signal('SIGCONT');
    this.#state = 'running';
  }

  /** SIGTERM (graceful: drains), SIGKILL after the grace period; resolves once the process is gone. */
  async stop(graceMs = STOP_GRACE_MS): Promise<void> {
    if (this.#state === 'stopped') return;
    if (this.#state === 'paused') this.resume();
    this.#signal('SIGTERM');
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<boolean>((done) => {
      timer = setTimeout(() => done(true), graceMs);
    });
    if (await Promise.race([this.#exited.then(() => false), late])) this.#signal('SIGKILL');
    clearTimeout(timer);
    await this.#exited;
  }

  /** kill -9 (unless already stopped) and start again with the same home; `hostname` gives it a new name. */
  async restart(options: { hostname?: string; graceful?: boolean } = {}): Promise<void> {
    if (options.graceful) await this.stop();
    else await this.kill9();
    await this.start(options);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The cluster

export interface ClusterOptions {
  /** Server nodes to start (more can be added with `addNode`). @default 3 */
  readonly servers?: number;
  /** `--lease` of every node. @default 2s */
  readonly lease?: string;
  /** `--max-concurrent` of every node. @default 2 */
  readonly maxConcurrent?: number;
  /** Pin node i to CPU `cpus[i % cpus.length]` with taskset. */
  readonly cpus?: readonly string[];
  /** Extra server arguments for every node. */
  readonly args?: readonly string[];
  /** An existing PostgreSQL server (a fresh database is created on it). @default testPostgresUrl() */
  readonly postgresUrl?: string;
}

export interface ApiResult {
  readonly status: number;
  readonly json: Record<string, unknown>;
  readonly text: string;
}

export class Cluster {
  readonly nodes: ClusterNode[] = [];
  readonly base: string;
  readonly bundles: string;
  readonly databaseUrl: string;
  readonly cgroupParent: string;
  readonly options: ClusterOptions;
  #drop: () => Promise<void>;
  #db: pg.Pool | undefined;
  #adminKey = '';
  #closed = false;

  private constructor(options: ClusterOptions, database: { url: string; drop: () => Promise<void> }) {
    this.options = options;
    this.databaseUrl = database.url;
    this.#drop = database.drop;
    this.base = mkdtempSync(join(tmpdir(), 'aegis-cluster-'));
    // The sandbox uid reads agents from the bundle dir: it must be able to traverse the base.
    chmodSync(this.base, 0o755);
    this.bundles = join(this.base, 'bundles');
    this.cgroupParent = `aegis-cluster-${process.pid}-${Math.floor(Math.random() * 1e6)}`;
  }

  /** Creates the database and starts `options.servers` server nodes (in parallel); the first node's admin key. */
  static async start(options: ClusterOptions = {}): Promise<Cluster> {
    const database = await createDatabase(options.postgresUrl ?? testPostgresUrl());
    const cluster = new Cluster(options, database);
    try {
      const count = options.servers ?? 3;
      // The first node creates the schema and the first admin key; the others join an initialised database.
      await cluster.addNode();
      cluster.#adminKey = readFileSync(join(cluster.nodes[0]!.home, 'admin.key'), 'utf8').trim();
      await Promise.all(Array.from({ length: count - 1 }, () => cluster.addNode()));
      return cluster;
    } catch (error) {
      await cluster.close();
      throw error;
    }
  }

  /** The admin key the first node created; keys live in PostgreSQL, so every node accepts it. */
  get adminKey(): string {
    return this.#adminKey;
  }

  /** The directories of a new node (0700 home; scratch and bundles reachable by the sandbox uid). */
  nodeDirs(name: string): NodeDirs {
    const base = join(this.base, name);
    mkdirSync(base, { mode: 0o755 });
    const dirs = {
      base,
      home: join(base, 'home'),
      scratch: join(base, 'scratch'),
      witness: join(base, 'witness'),
      nodeKey: join(base, 'keys', 'node-ed25519.pem'),
    };
    mkdirSync(dirs.home, { mode: 0o700 });
    return dirs;
  }

  /** Adds and starts a node of `kind` (default: a server), named n<k>. */
  async addNode(overrides: Partial<NodeConfig> = {}, kind: NodeKind = serverKind): Promise<ClusterNode> {
    const index = this.nodes.length;
    const name = overrides.name ?? `n${index + 1}`;
    const cpus = this.options.cpus;
    const config: NodeConfig = {
      name,
      nodeId: `node-${name}`,
      dirs: this.nodeDirs(name),
      databaseUrl: this.databaseUrl,
      lease: this.options.lease ?? '2s',
      maxConcurrent: this.options.maxConcurrent ?? 2,
      labels: [`name=${name}`],
      ...(cpus && cpus.length > 0 ? { cpus: cpus[index % cpus.length]! } : {}),
      ...(this.options.args ? { args: this.options.args } : {}),
      ...overrides,
      env: {
        AEGIS_BUNDLE_DIR: this.bundles,
        AEGIS_CGROUP_PARENT: this.cgroupParent,
        ...overrides.env,
      },
    };
    const node = new ClusterNode(kind, config, `aegis-${name}`);
    this.nodes.push(node);
    await node.start();
    return node;
  }

  node(name: string): ClusterNode {
    const found = this.nodes.find((n) => n.name === name);
    if (!found) throw new Error(`no node ${name}`);
    return found;
  }

  /** Nodes whose process runs (not stopped, not paused). */
  running(): ClusterNode[] {
    return this.nodes.filter((n) => n.state === 'running');
  }

  /** One JSON API call on `node` with the admin key. */
  async api(node: ClusterNode, method: string, path: string, body?: unknown): Promise<ApiResult> {
    const response = await fetch(`${node.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.#adminKey}`,
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

  /** Deploys an agent directory (agent.yaml + files) through `node` (default: the first) with `aegis deploy`. */
  async deploy(agentYaml: string, node: ClusterNode = this.nodes[0]!): Promise<void> {
    const result = await runCli(['deploy', agentYaml], {
      ...process.env,
      AEGIS_SERVER: node.url,
      AEGIS_API_KEY: this.#adminKey,
    });
    if (result.code !== 0)
      throw new Error(`aegis deploy ${agentYaml} failed (${result.code}):\n${result.stderr}`);
  }

  /** Every execution the cluster knows, through `node` (all pages). */
  async listExecutions(node: ClusterNode, status?: string): Promise<ExecutionView[]> {
    const all: ExecutionView[] = [];
    let cursor: string | null = null;
    do {
      const query = new URLSearchParams({ limit: '1000' });
      if (status) query.set('status', status);
      if (cursor) query.set('cursor', cursor);
      const page = await this.api(node, 'GET', `/v1/executions?${query}`);
      if (page.status !== 200)
        throw new Error(`list executions on ${node.name}: ${page.status} ${page.text}`);
      all.push(...(page.json['executions'] as ExecutionView[]));
      cursor = (page.json['nextCursor'] as string | null) ?? null;
    } while (cursor);
    return all;
  }

  /** The ledger entries of every node's home (`aegis audit export`), the same entry (by hash) counted once. */
  async ledgerEntries(): Promise<LedgerEntry[]> {
    const byHash = new Map<string, LedgerEntry>();
    for (const node of this.nodes) {
      const exported = await runCli(['audit', 'export'], node.env);
      if (exported.code !== 0) {
        throw new Error(`aegis audit export on ${node.name} failed (${exported.code}):\n${exported.stderr}`);
      }
      for (const line of exported.stdout.split('\n')) {
        if (line === '') continue;
        const record = JSON.parse(line) as Record<string, unknown>;
        if (record['type'] !== 'entry') continue;
        const entry = { ...(record as unknown as LedgerEntry), node: node.name };
        if (!byHash.has(entry.hash)) byHash.set(entry.hash, entry);
      }
    }
    return [...byHash.values()];
  }

  /** A read of the cluster's database, as the test sees it (white-box: what the store holds, not what an API says). */
  async sql<Row extends Record<string, unknown>>(
    text: string,
    params: readonly unknown[] = [],
  ): Promise<Row[]> {
    this.#db ??= new pg.Pool({ connectionString: this.databaseUrl, max: 2 });
    return (await this.#db.query<Row>(text, [...params])).rows;
  }

  /**
   * The node holding each execution (`executions.node_id`: the last claimer; it stays on a finished row), by id.
   * The REST view of an execution does not name its node, so the tests ask the store.
   */
  async holders(ids: Iterable<string>): Promise<Map<string, string | null>> {
    const rows = await this.sql<{ id: string; node_id: string | null }>(
      'SELECT id, node_id FROM executions WHERE id = ANY($1::text[])',
      [[...ids]],
    );
    return new Map(rows.map((row) => [row.id, row.node_id]));
  }

  /** The node holding one execution, or undefined (queued, unknown). */
  async holder(id: string): Promise<string | undefined> {
    return (await this.holders([id])).get(id) ?? undefined;
  }

  /** Stops every node (by pid), drops the database, removes the files and this cluster's cgroups. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.nodes.map((node) => node.kill9()));
    await this.#db?.end().catch(() => {});
    await this.#drop().catch(() => {});
    removeCgroups(this.cgroupParent);
    rmSync(this.base, { recursive: true, force: true });
  }
}

export interface ExecutionView {
  readonly id: string;
  readonly status: string;
  readonly reason: string | null;
  readonly output: unknown;
  readonly createdAt: string;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
  readonly owner?: unknown;
  readonly [key: string]: unknown;
}

export interface LedgerEntry {
  readonly seq: number;
  readonly ts: string;
  readonly execution: string | null;
  readonly kind: string;
  readonly data: Record<string, unknown>;
  readonly hash: string;
  /** The node whose export held it first. */
  readonly node: string;
}

export const TERMINAL = new Set(['succeeded', 'failed', 'timeout', 'oom', 'killed']);

/** Runs the CLI on this Node (not through bin/aegis.mjs's re-exec). */
export function runCli(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI_ENTRY, ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  livePids.add(child.pid!);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  return new Promise((done) =>
    child.on('close', (code) => {
      livePids.delete(child.pid!);
      done({ code, stdout, stderr });
    }),
  );
}

/** Removes this cluster's (empty, by now) cgroup directories under every controller, deepest first. */
function removeCgroups(parent: string): void {
  const roots: string[] = [];
  const walk = (dir: string, depth: number) => {
    if (depth > 6) return;
    let entries: import('node:fs').Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      if (!entry.isDirectory()) continue;
      const path = join(dir, entry.name);
      if (entry.name === parent) roots.push(path);
      else walk(path, depth + 1);
    }
  };
  if (existsSync('/sys/fs/cgroup')) walk('/sys/fs/cgroup', 0);
  const removeTree = (dir: string) => {
    try {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        if (entry.isDirectory()) removeTree(join(dir, entry.name));
      }
      rmdirSync(dir);
    } catch {
      // busy or gone: the runtime's own reaper deals with it on a later start
    }
  };
  for (const root of roots) removeTree(root);
}
