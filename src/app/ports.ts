/**
 * Ports: what the use-cases need from the outside world. Adapters implement them; every port also has an
 * in-memory fake under app/fakes for use-case tests.
 */

import type { Checkpoint, CheckpointOutcome, CheckpointRequest } from '../domain/audit/checkpoint.ts';
import type { AuditDataByKind, AuditEntry, AuditKind } from '../domain/audit/entry.ts';
import type { AuditExportRecord } from '../domain/audit/export-format.ts';
import type { EndorsedKey } from '../domain/audit/keys.ts';
import type { LifecycleCoverage } from '../domain/audit/store-check.ts';
import type { AuditVerification } from '../domain/audit/verify.ts';
import type { ApiKeyRecord } from '../domain/auth/api-key.ts';
import type {
  ClaimedExecution,
  ExecutionFence,
  NodeLabels,
  NodeRecord,
  NodeRegistration,
  NodeState,
  NodeStatus,
} from '../domain/cluster/node.ts';
import type { MemoryFilter, MemoryRecord, MemoryScope } from '../domain/cortex/memory.ts';
import type { AgentRevision, AgentSummary } from '../domain/deployment.ts';
import type { EdgeNodeRecord, EdgeTokenRecord } from '../domain/edge/records.ts';
import type {
  ExecutionRecord,
  ExecutionStatus,
  ExecutionUsage,
  LimitName,
  LogLine,
  LogStream,
  OwnerRef,
  TerminalStatus,
  Violation,
} from '../domain/execution.ts';
import type { SandboxRecord } from '../domain/live-sandbox.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import type { NetworkPolicy, Verdict } from '../domain/policy/network-rules.ts';
import type { PlaceholderMap } from '../domain/secrets/placeholder.ts';
import type { LlmCallRecord } from './llm-gateway.ts';

// ---------------------------------------------------------------------------------------------------------------
// Runtime: the contract every isolation backend (sandbox, gvisor, docker, firecracker) fills.

export type InstanceId = string;
export type InstanceState = 'warm' | 'hot' | 'terminated' | 'failed';

export interface InstanceSpec {
  readonly executionId: string;
  readonly agent: CompiledAgent;
  /**
   * Receives every egress decision of the instance (each connection attempt through the egress proxy): denied ones
   * at once, allowed ones when the connection closes. All of them are delivered before `execute` resolves.
   */
  readonly onNetworkDecision?: (event: NetworkDecisionEvent) => void;
  /**
   * This execution's secrets (`agent.secrets` resolved by runAgent before spawn): `env` (variable → placeholder) is
   * added to the sandbox's environment; the egress proxy maps `placeholders` back to values only in plain-HTTP
   * requests toward each secret's bound hosts, and reports every placeholder it sees through `onSecretUse`.
   */
  readonly secrets?: InstanceSecrets;
  /**
   * Warm-pool instance: also start the agent's language runtime (Python/Node interpreter loaded, waiting) so that
   * `execute` only hands over the task. Runtimes that can't prewarm a language ignore it (the instance is still
   * Warm: namespaces, mounts, cgroups, seccomp, egress ready). Never combined with `secrets` (per-execution values).
   */
  readonly prewarm?: boolean;
  /**
   * Live sandbox (app/live-sandboxes.ts): the instance's command is the runtime's exec agent instead of the agent's
   * entrypoint, and `LiveRuntime.attach` (not `execute`) starts it. Never combined with `prewarm`.
   */
  readonly live?: boolean;
  /**
   * The in-sandbox API (issue 13): `handler` is served on 127.0.0.1:3129 *inside* the instance (its own loopback,
   * reachable with or without `network.allow`), from spawn until the instance is destroyed; `env` (AEGIS_API_URL,
   * AEGIS_TOKEN, OPENAI_BASE_URL, …) is added to the agent's environment. The runtime also mounts the in-sandbox
   * SDKs read-only (Python and Node, importable as the module "aegis"). Never combined with `prewarm`
   * (the token is per execution).
   */
  readonly inSandboxApi?: InSandboxApi;
}

/** A node:http-style request handler, opaque here (the app layer does no I/O). */
export type InSandboxHandler = (request: never, response: never) => void;

export interface InSandboxApi {
  readonly handler: InSandboxHandler;
  readonly env: Readonly<Record<string, string>>;
}

// ---------------------------------------------------------------------------------------------------------------
// Live sandboxes (app/live-sandboxes.ts): a long-lived instance driven from outside. PTY (openPty), port
// forwarding (connectPort) and the E2B layer sit on LiveSession too.

/** Paths (inside the sandbox) its file API may touch; the runtime enforces them from inside the sandbox. */
export interface LivePathPolicy {
  readonly readable: readonly string[];
  readonly writable: readonly string[];
  /** Largest file uploaded or downloaded. */
  readonly maxFileBytes: number;
}

export interface LiveCommandSpec {
  readonly argv: readonly string[];
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  /** Keep stdin open for `writeStdin`; false: the command reads end-of-file at once. */
  readonly stdin: boolean;
}

export interface LiveCommandEvents {
  onOutput(stream: 'stdout' | 'stderr', chunk: Uint8Array): void;
  /** Once: the exit status, or signal `ESHUTDOWN` when the sandbox ended under it. */
  onExit(code: number | null, signal: string | null): void;
}

export interface LiveProcess {
  /** Its pid inside the sandbox. */
  readonly pid: number;
  writeStdin(chunk: Uint8Array, eof: boolean): Promise<void>;
  kill(signal: string): Promise<void>;
}

/** A command on a pseudo-terminal inside the sandbox (docs/adr/0068-live-sandbox-pty.md). */
export interface LivePtySpec {
  readonly argv: readonly string[];
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  readonly cols: number;
  readonly rows: number;
}

export interface LivePtyEvents {
  /** Terminal output (stdout and stderr are one stream on a terminal). */
  onOutput(chunk: Uint8Array): void;
  /** Once: the exit status, or signal `ESHUTDOWN` when the sandbox ended under it. */
  onExit(code: number | null, signal: string | null): void;
}

export interface LivePty {
  /** The PTY helper's pid inside the sandbox. */
  readonly pid: number;
  /** Keystrokes: written to the terminal's master side. */
  write(chunk: Uint8Array): Promise<void>;
  /** TIOCSWINSZ on the master; the command gets SIGWINCH. */
  resize(cols: number, rows: number): Promise<void>;
  kill(signal: string): Promise<void>;
}

/**
 * A TCP connection to 127.0.0.1:<port> inside the sandbox's network namespace: a Node `net.Socket`, typed
 * structurally so app/ stays free of node:net (the API layer, which pipes it, knows the real type).
 */
export interface LivePortSocket {
  readonly bytesRead: number;
  readonly bytesWritten: number;
  destroy(): void;
}

export interface LiveFileEntry {
  readonly path: string;
  readonly name: string;
  readonly type: 'file' | 'dir' | 'symlink' | 'other';
  readonly size: number;
  readonly mode: number;
  readonly modifiedAt: string;
}

export interface LiveUsage {
  readonly cpuUsageNs: number | null;
  readonly memoryPeakBytes: number | null;
  readonly oomKills: number;
  /** Memory charged to the sandbox now, bytes (null: the runtime cannot read it). */
  readonly memoryBytes: number | null;
  /** Processes in the sandbox now (null: the runtime cannot read it). */
  readonly pids: number | null;
}

/** The control channel of one live instance. Everything it reports comes from inside the sandbox (untrusted). */
export interface LiveSession {
  exec(spec: LiveCommandSpec, events: LiveCommandEvents): Promise<LiveProcess>;
  stat(path: string): Promise<LiveFileEntry>;
  list(path: string): Promise<readonly LiveFileEntry[]>;
  mkdir(path: string): Promise<void>;
  move(from: string, to: string): Promise<void>;
  remove(path: string): Promise<void>;
  writeFile(path: string, chunks: AsyncIterable<Uint8Array>): Promise<{ bytes: number }>;
  /** `abandoned` settles if the runtime gives up on a reader that fell too far behind (its `chunks` then throw). */
  readFile(
    path: string,
  ): Promise<{ size: number; chunks: AsyncIterable<Uint8Array>; abandoned?: Promise<void> }>;
  usage(): LiveUsage;
  /** Freezes every process of the sandbox (cgroup freezer); resolves once they are all stopped. */
  pause(): Promise<void>;
  /** Lets a paused sandbox run again. */
  resume(): Promise<void>;
  /** Ends every process of the sandbox. */
  kill(): void;
  /** Runs a command on a pseudo-terminal. Optional: a runtime without it answers PTY requests "not supported". */
  openPty?(spec: LivePtySpec, events: LivePtyEvents): Promise<LivePty>;
  /**
   * Connects to 127.0.0.1:`port` inside the sandbox (its own loopback: the sandbox gets no host-reachable
   * address). Optional like openPty. Rejects when nothing listens there.
   */
  connectPort?(port: number): Promise<LivePortSocket>;
  /** Settles when the sandbox has ended (killed, or its agent died). */
  readonly closed: Promise<{ code: number | null; signal: string | null }>;
}

/** A runtime that can hold live instances: spawn with `live: true`, then `openLive`. */
export interface LiveRuntime {
  spawn(spec: InstanceSpec): Promise<InstanceId>;
  openLive(id: InstanceId, policy: LivePathPolicy): Promise<LiveSession>;
  terminate(id: InstanceId): Promise<void>;
  /** The runtime `agent` would run on (a router of several runtimes says which). */
  nameFor?(agent: CompiledAgent): string;
}

/** What a pooled instance learns when an execution claims it (it was spawned under a pool id). */
export interface InstanceBinding {
  readonly executionId: string;
  readonly onNetworkDecision?: (event: NetworkDecisionEvent) => void;
}

export interface InstanceSecrets {
  readonly env: Readonly<Record<string, string>>;
  readonly placeholders: PlaceholderMap;
  readonly onSecretUse: (use: SecretUseEvent) => void;
}

/** One secret seen in one request through the egress proxy. Never carries the value. */
export interface SecretUseEvent {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly injected: boolean;
  /** `response`: the value came back from upstream and was replaced by the placeholder (`reason: reflected`). */
  readonly where: 'header' | 'path' | 'body' | 'response';
  readonly reason?: string;
}

/** One connection attempt leaving (or trying to leave) a sandbox, and what became of it. */
export interface NetworkDecisionEvent {
  /** `host:port` as the agent asked (raw request target when it could not be parsed). */
  readonly requested: string;
  /** The name asked for (normalised) or the IP literal; null when the request could not be parsed. */
  readonly host: string | null;
  /** Every address the name resolved to, or the literal itself. */
  readonly resolved: readonly string[];
  /** The one address dialled; null when denied. */
  readonly address: string | null;
  readonly port: number;
  /** `http`, `connect` (HTTP CONNECT tunnel) or `socks5`. */
  readonly protocol: string;
  /** The rule text, or a pseudo-rule (`default-deny`, `special-address:<class>`, `unresolvable`, `malformed`, …). */
  readonly rule: string;
  readonly verdict: Verdict;
  readonly reason: string;
  /** `network: denied connect to 10.0.0.5:22 — not in allow-list`. */
  readonly message: string;
  /** Allowed, but the upstream connection failed or was cut. */
  readonly error?: string;
  readonly bytesUp: number;
  readonly bytesDown: number;
}

export interface TaskInput {
  /** JSON value handed to the agent on stdin and at /run/aegis/input.json. */
  readonly input: unknown;
  /** Receives each complete stdout/stderr line as it is produced. */
  readonly onLog: (stream: LogStream, text: string) => void;
  /** Aborting kills the instance; the outcome is `killed`. */
  readonly signal?: AbortSignal;
}

export interface TaskOutput {
  readonly status: TerminalStatus;
  readonly exitCode: number | null;
  readonly reason: string | null;
  /** Parsed /run/aegis/output.json, else the last stdout line if it is JSON, else null. */
  readonly output: unknown;
  readonly limitsHit: readonly LimitName[];
  readonly violations: readonly Violation[];
  /** When the agent's process was released to run (wall clock, ms since epoch, fractional). */
  readonly releasedAtMs: number;
  readonly finishedAtMs: number;
}

export interface Runtime {
  /** Stable name: `sandbox`, `gvisor`, … */
  readonly name: string;
  /**
   * Prepares an instance up to (not including) the agent's first instruction: namespaces, mounts, cgroups joined.
   * Throws RUNTIME_UNAVAILABLE / LIMIT_UNENFORCEABLE when the host can't enforce what the agent asks for.
   */
  spawn(spec: InstanceSpec): Promise<InstanceId>;
  /** Runs the task in a spawned instance and resolves when it ends; the instance is destroyed afterwards. */
  execute(id: InstanceId, task: TaskInput): Promise<TaskOutput>;
  /** Kills the instance and releases everything it holds. Idempotent. */
  terminate(id: InstanceId): Promise<void>;
  /** `failed` also when a Warm instance died before it was used (a pool replaces it). */
  status(id: InstanceId): InstanceState | undefined;
  /**
   * Claims a Warm instance spawned for a pool for one execution: egress decisions go to the binding's callback and
   * `setNetworkPolicy(binding.executionId)` reaches it from now on. Throws USAGE when the instance is not Warm.
   */
  bind?(id: InstanceId, binding: InstanceBinding): void;
  /**
   * The runtime that runs `agent` (a router resolves `isolation: auto` to the strongest one available here); what
   * the execution records as its runtime. Throws RUNTIME_UNAVAILABLE / LIMIT_UNENFORCEABLE when none can.
   * @default `name`
   */
  nameFor?(agent: CompiledAgent): string;
  /**
   * Brings what `nameFor` decides from up to date with the cluster (the edge nodes enrolled through any server);
   * called before `nameFor` for agents with `spec.placement`.
   */
  refreshPlacement?(): Promise<void>;
  /** Releases what dead orchestrators left behind (processes, cgroups, scratch dirs); returns their execution ids. */
  reapOrphans(): Promise<readonly string[]>;
  /**
   * Replaces the egress rules of a live execution's instance for connections that start from now on (open ones
   * keep their decision). Returns false when the runtime has no live instance for that execution or it runs
   * without an egress proxy (no allow rules at spawn: its namespace has no way out to open).
   */
  setNetworkPolicy?(executionId: string, policy: NetworkPolicy): Promise<boolean>;
}

// ---------------------------------------------------------------------------------------------------------------
// Store: executions and their logs.

export interface ExecutionPatch {
  readonly status?: ExecutionStatus;
  readonly exitCode?: number | null;
  readonly reason?: string | null;
  readonly output?: unknown;
  readonly violations?: readonly Violation[];
  readonly startedAt?: string | null;
  readonly finishedAt?: string | null;
  readonly durationMs?: number | null;
  /** Set when a process takes over a queued execution (server restart). */
  readonly owner?: OwnerRef | null;
  /** Replaces the record's usage (set once, when the run ends). */
  readonly usage?: ExecutionUsage;
  /**
   * Gives the execution back to the shared queue: no node holds it any more (its fence stays, so the last holder's
   * late writes are still refused). With `status: 'queued'` (retry after node loss, over a per-agent limit).
   */
  readonly unclaim?: true;
}

export interface ListExecutionsQuery {
  /** @default 50, at most MAX_EXECUTIONS_LIST (1001: a page of 1000 and the look-ahead record) */
  readonly limit?: number;
  readonly agent?: string;
  readonly status?: ExecutionStatus;
  /**
   * Cursor: only executions strictly after this one in the list order (created_at desc, id desc) — pass the
   * `createdAt` and `id` of the last record of the previous page.
   */
  readonly after?: { readonly createdAt: string; readonly id: string };
}

export interface ChildLimits {
  readonly maxChildren: number;
  readonly maxDescendants: number | null;
}

export type ChildInsert =
  | { readonly ok: true }
  | { readonly ok: false; readonly limit: 'maxChildren' | 'budget.executions'; readonly count: number };

export interface NewLogLine {
  readonly stream: LogStream;
  readonly text: string;
  readonly ts: string;
}

export interface ExecutionStore {
  createExecution(record: ExecutionRecord): Promise<void>;
  /**
   * Applies the patch and returns the updated record; NOT_FOUND if the id is unknown. With `fence` (a claimed
   * execution, ADR 0101) the write happens only while the execution is still held under that fence by that node at
   * that epoch, and the node is not dead — else FENCED, and nothing changed.
   */
  updateExecution(id: string, patch: ExecutionPatch, fence?: ExecutionFence): Promise<ExecutionRecord>;
  getExecution(id: string): Promise<ExecutionRecord | undefined>;
  /** Newest first (created_at desc, then id desc). */
  listExecutions(query?: ListExecutionsQuery): Promise<readonly ExecutionRecord[]>;
  /** Executions in a non-terminal state (created, queued, running), oldest first — for recovery after a crash. */
  listUnfinished(): Promise<readonly ExecutionRecord[]>;
  /**
   * Swarm (ADR 0140): inserts `record` — a child, `parentId` and `rootId` set — only while its parent has spawned
   * fewer than `limits.maxChildren` children and its whole tree (every execution with its `rootId`) holds fewer than
   * `limits.maxDescendants` (null: no tree limit). Check and insert are one atomic step across concurrent spawners
   * (and nodes, on PostgreSQL). Refused: which limit, and the count it found.
   */
  createChildExecution(record: ExecutionRecord, limits: ChildLimits): Promise<ChildInsert>;
  /** Swarm: every execution whose root is `rootId` (not the root itself), oldest first. */
  listSwarm(rootId: string): Promise<readonly ExecutionRecord[]>;
  /** Appends lines in order; sequence numbers continue from the last stored line of that execution. */
  appendLogs(executionId: string, lines: readonly NewLogLine[]): Promise<void>;
  /** Lines with seq > afterSeq, in order. */
  readLogs(executionId: string, options?: { afterSeq?: number; limit?: number }): Promise<readonly LogLine[]>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------------
// Store: deployed agents (revisions + their bundles) and API keys. The server's `Store` is all three parts.

export interface NewAgentRevision {
  readonly agent: string;
  readonly version: string;
  readonly digest: string;
  readonly sizeBytes: number;
  readonly description: string | null;
  readonly createdAt: string;
  readonly deployedBy: string;
}

export interface DeployOutcome {
  readonly revision: AgentRevision;
  /** False when the agent's active revision already held this bundle (nothing changed). */
  readonly created: boolean;
}

export interface AgentStore {
  /**
   * Makes `bundle` (whose SHA-256 is `input.digest`) the agent's new active revision, numbered one above the
   * agent's highest; creates the agent on first deploy. When the active revision already has this digest, changes
   * nothing and returns it with `created: false`. Bundle bytes are stored once per digest. Atomic: concurrent deploys
   * of one agent get distinct revision numbers.
   */
  deployRevision(input: NewAgentRevision, bundle: Uint8Array): Promise<DeployOutcome>;
  getAgent(name: string): Promise<AgentSummary | undefined>;
  /** By name. */
  listAgents(): Promise<readonly AgentSummary[]>;
  /** Newest first; empty when the agent does not exist. */
  listRevisions(name: string): Promise<readonly AgentRevision[]>;
  /** Points the agent at one of its revisions; NOT_FOUND for an unknown agent or revision. */
  setActiveRevision(name: string, revision: number, at: string): Promise<AgentSummary>;
  /** Removes the agent, its revisions and bundles no other revision uses. False when there was no such agent. */
  deleteAgent(name: string): Promise<boolean>;
  /** The `.tar.gz` bytes with this digest, if any revision references it. */
  readBundle(digest: string): Promise<Uint8Array | undefined>;
}

export interface ApiKeyStore {
  /** CONFLICT when the id or hash exists already. */
  createKey(record: ApiKeyRecord): Promise<void>;
  findKeyByHash(hash: string): Promise<ApiKeyRecord | undefined>;
  /** Oldest first, revoked ones included. */
  listKeys(): Promise<readonly ApiKeyRecord[]>;
  /** Marks the key revoked (idempotent: an already revoked key keeps its first revokedAt); NOT_FOUND if unknown. */
  revokeKey(id: string, at: string): Promise<ApiKeyRecord>;
  /** Records when a key was last used (best effort; callers throttle it). */
  touchKey(id: string, at: string): Promise<void>;
}

/** Records of live sandboxes, so a restart after a crash can account for them. */
export interface SandboxStore {
  /** Inserts the record, or replaces the one with its id. */
  putSandbox(record: SandboxRecord): Promise<void>;
  getSandbox(id: string): Promise<SandboxRecord | undefined>;
  /** Newest first (by createdAt, then id); `unfinished`: only those not `terminated`. */
  listSandboxes(filter?: {
    readonly unfinished?: boolean;
    readonly limit?: number;
  }): Promise<readonly SandboxRecord[]>;
}

/** Everything the server persists, behind one port: one adapter per engine (SQLite, PostgreSQL). */
/** What one server budget scope (`key:<id>`, `agent:<name>`) spent in one window (`llm.budgets`). */
export interface LlmSpend {
  readonly calls: number;
  readonly tokens: number;
  readonly usd: number;
}

/** Persisted spend of the server's LLM budgets, so a restart doesn't reset them. */
export interface LlmSpendStore {
  /** What `scope` spent in the window starting at `windowStartMs` (0: a budget without a window); zeros if none. */
  getLlmSpend(scope: string, windowStartMs: number): Promise<LlmSpend>;
  /** Adds `delta` to the scope's window, atomically (concurrent adders never lose an increment). */
  addLlmSpend(scope: string, windowStartMs: number, delta: LlmSpend): Promise<void>;
}

/**
 * Retention (app/retention.ts): one bounded batch of finished executions, their logs, or ended sandbox records
 * older than `before`. Never touches an execution that is not terminal or a sandbox that is not terminated.
 */
export interface PruneBatch {
  /** ISO time: executions that finished (sandboxes whose lifetime ended, `expiresAt`) before it. */
  readonly before: string;
  /** Only executions that finished at or after this (ISO): the logs pass leaves the executions pass its own. */
  readonly notBefore?: string;
  /** Only these agents' executions. */
  readonly agents?: readonly string[];
  /** Not these agents' executions (they have their own `spec.retention`). */
  readonly exceptAgents?: readonly string[];
  /** At most this many executions (or sandboxes) per call; ignored by a dry run, which counts them all. */
  readonly limit: number;
  /** Count only. */
  readonly dryRun: boolean;
}

export interface PrunedRows {
  /** Executions (records and their logs) removed, or — for `pruneLogs` — whose logs were removed. */
  readonly executions: number;
  readonly logLines: number;
  /** UTF-8 bytes of the removed log lines' text. */
  readonly logBytes: number;
}

export interface RetentionStore {
  /** Removes finished executions and their logs. */
  pruneExecutions(batch: PruneBatch): Promise<PrunedRows>;
  /** Removes the logs of finished executions; their records stay. */
  pruneLogs(batch: PruneBatch): Promise<PrunedRows>;
  /** Removes records of terminated live sandboxes; returns how many. */
  pruneSandboxes(batch: Omit<PruneBatch, 'agents' | 'exceptAgents'>): Promise<number>;
  /** Gives freed space back to the file system where the engine can (SQLite); bytes before and after. */
  reclaimSpace?(): Promise<{ readonly beforeBytes: number; readonly afterBytes: number }>;
}

/** Edge nodes: single-use enrolment tokens (hashed) and the enrolled edges (docs/adr/0108-edge-node-protocol.md). */
export interface EdgeStore {
  /** CONFLICT when the id or hash exists already. */
  createEdgeToken(record: EdgeTokenRecord): Promise<void>;
  /**
   * Marks the unused token with this hash used by `nodeId`, atomically (of two concurrent enrolments with one token,
   * exactly one gets it). Returns the record as it was before; undefined when no such token or it was used.
   */
  consumeEdgeToken(hash: string, at: string, nodeId: string): Promise<EdgeTokenRecord | undefined>;
  /** Inserts the edge, or replaces the one with its id. */
  putEdgeNode(record: EdgeNodeRecord): Promise<void>;
  getEdgeNode(id: string): Promise<EdgeNodeRecord | undefined>;
  /** Oldest first (enrolledAt, then id), revoked ones included. */
  listEdgeNodes(): Promise<readonly EdgeNodeRecord[]>;
}

// ---------------------------------------------------------------------------------------------------------------
// Cluster (docs/adr/0101-cluster-claims-and-fencing.md): the node registry and the shared execution queue.

export interface ClaimRequest {
  readonly nodeId: string;
  /** The claiming node's current epoch: a node no longer live at this epoch claims nothing. */
  readonly epoch: number;
  readonly labels: NodeLabels;
  /** Runtimes the node offers: only executions whose `runtime` is one of them are claimed. */
  readonly runtimes: readonly string[];
  /** At most this many (the node's free slots). */
  readonly limit: number;
  /** Agents not to claim now (this node runs as many as their `spec.scaling.maxConcurrent` allows). */
  readonly excludeAgents?: readonly string[];
  /** Diagnostics recorded as the execution's `owner`. */
  readonly owner: OwnerRef;
  readonly at: string;
  readonly leaseMs: number;
}

export interface Heartbeat {
  readonly nodeId: string;
  readonly epoch: number;
  readonly at: string;
  readonly leaseMs: number;
}

/** What changed, for nodes waiting on it: new queued work, a cancel request, a status change, new log lines. */
/** `swarm`: a swarm topic got a message or a swarm lock was released (app/swarm-bus.ts, swarm-locks.ts). */
/** `edge`: an edge node was enrolled or revoked (app/edge-nodes.ts): servers reload it, and cut it when revoked. */
export type ClusterTopic = 'queue' | 'cancel' | 'status' | 'logs' | 'swarm' | 'edge';

export interface ClusterStore {
  /**
   * Registers the node, or re-registers it (same id: a restart): state `live`, a fresh lease, and an epoch one above
   * the last one this id had (1 for a new id). Returns the stored record.
   */
  registerNode(registration: NodeRegistration): Promise<NodeRecord>;
  /**
   * Renews the node's lease (and its executions' leases) while it is `live` or `draining` at `epoch`; returns the ids
   * of its executions someone asked to cancel. Undefined when the node was declared dead or re-registered since:
   * it is fenced out and must stop what it runs, then register again.
   */
  heartbeatNode(heartbeat: Heartbeat): Promise<{ readonly cancelRequested: readonly string[] } | undefined>;
  /** Every registered node, by id, with the number of executions it holds. */
  listNodes(): Promise<readonly NodeStatus[]>;
  /** Sets a live node's state (`draining` on shutdown; `dead` when it leaves); false when not at `epoch`. */
  setNodeState(nodeId: string, epoch: number, state: NodeState, at: string): Promise<boolean>;
  /**
   * Declares the node dead when it is still at `epoch`, not dead, and its lease expired before `at`: its epoch is
   * bumped in the same transaction, so exactly one of many concurrent sweepers gets true.
   */
  declareNodeDead(nodeId: string, epoch: number, at: string): Promise<boolean>;
  /**
   * Claims up to `limit` queued executions the node may run (placement labels, runtime, not an excluded agent),
   * oldest first (judges before anything): each becomes the node's, with its fence incremented and a lease.
   * Concurrent claimers never get the same execution (PostgreSQL: FOR UPDATE SKIP LOCKED).
   */
  claimExecutions(request: ClaimRequest): Promise<readonly ClaimedExecution<ExecutionRecord>[]>;
  /**
   * Claimed, unfinished executions (queued — claimed, not started —, created, running) whose holder is gone: its node is dead or has a newer epoch
   * than the claim. Each with the fence it is held under now (for `takeOverExecution`).
   */
  listOrphanedExecutions(): Promise<readonly ClaimedExecution<ExecutionRecord>[]>;
  /**
   * Moves an execution still held under `expected` to `claimant` (fence incremented); undefined when anyone wrote it
   * since (another sweeper won, the holder finished it).
   */
  takeOverExecution(
    id: string,
    expected: ExecutionFence,
    claimant: { readonly nodeId: string; readonly epoch: number; readonly owner: OwnerRef },
    at: string,
    leaseMs: number,
  ): Promise<ClaimedExecution<ExecutionRecord> | undefined>;
  /**
   * Applies `patch` only while the execution is `queued` (cancelling one nobody claimed yet), incrementing its fence
   * so a claim in flight loses; undefined when it was not queued any more.
   */
  updateQueuedExecution(id: string, patch: ExecutionPatch): Promise<ExecutionRecord | undefined>;
  /** Flags an unfinished execution for cancellation (its holder aborts it); false when it has ended or is unknown. */
  requestCancel(id: string): Promise<boolean>;
  /** Executions waiting in the shared queue (QUEUE_FULL bounds it). */
  countQueued(): Promise<number>;
  /** Tells every node sharing this store (this one too) that `topic` changed for `id`. Best effort. */
  signal(topic: ClusterTopic, id: string): Promise<void>;
  /**
   * Calls `listener` for every signal from any node sharing this store (PostgreSQL: LISTEN/NOTIFY; SQLite and the
   * fake: this process). Best effort — nodes also poll. Returns the unsubscribe function.
   */
  onSignal(listener: (topic: ClusterTopic, id: string) => void): () => void;
}

export interface Store
  extends ExecutionStore,
    AgentStore,
    ApiKeyStore,
    SandboxStore,
    LlmSpendStore,
    RetentionStore,
    ClusterStore,
    EdgeStore {}

// ---------------------------------------------------------------------------------------------------------------
// Audit: the tamper-evident ledger (domain/audit). Data never holds secret values.

export interface AuditLog {
  /**
   * Appends an entry and returns it at once, chained and hashed. It is written within a few milliseconds (group
   * commit); `flush()` waits for it. If another process appended to the same ledger in between, the entry is
   * re-chained onto theirs when written — `list`/`export` return the stored form.
   * Throws when the ledger has been failing to write (fail closed) or `data` is not representable as JSON.
   */
  append<K extends AuditKind>(kind: K, execution: string | null, data: AuditDataByKind[K]): AuditEntry;
  /** Resolves once every entry appended so far is stored; rejects when the ledger can't be written. */
  flush(): Promise<void>;
  /**
   * Like `flush`, but waits for the next group commit (a few ms) instead of forcing a write of its own: what a
   * request handler awaits before acknowledging, so concurrent requests still share one transaction.
   */
  durable(): Promise<void>;
  /**
   * Which lifecycle entries (`execution.created`, `execution.finished`, `execution.recovered`) the ledger holds per
   * execution — for recovery and `aegis audit verify --store`.
   */
  lifecycleCoverage(): Promise<ReadonlyMap<string, LifecycleCoverage>>;
  /** The entries about one execution, by seq. */
  list(executionId: string): Promise<readonly AuditEntry[]>;
  /** Walks the whole chain and checks the signed heads. */
  verify(): Promise<AuditVerification>;
  /** Header, signed heads, entries — the JSONL export, one record per line. */
  export(): AsyncIterable<AuditExportRecord>;
  /** Flushes, signs the head, releases the ledger. Idempotent. */
  close(): Promise<void>;
  /**
   * Retention (app/retention.ts): archives entries older than `request.before` under a signed checkpoint and drops
   * them (domain/audit/checkpoint.ts). Optional: a ledger without it is never pruned.
   */
  checkpoint?(request: CheckpointRequest): Promise<CheckpointOutcome>;
  /** The checkpoint that dropped this execution's (or sandbox's) entries, if one did. */
  prunedAt?(executionId: string): Promise<Checkpoint | undefined>;
  /** Gives freed pages back to the file system (SQLite); bytes of the database before and after. */
  reclaimSpace?(): Promise<{ readonly beforeBytes: number; readonly afterBytes: number }>;
}

/** The node's signing key (Ed25519). Created on first use. */
export interface Signer {
  /** First 16 hex digits of SHA-256 over the public key (SPKI DER). */
  keyId(): string;
  /** SPKI PEM. */
  publicKeyPem(): string;
  /** Base64 signature of the UTF-8 bytes of `message`. */
  sign(message: string): string;
  /**
   * True when `signature` is this node key's signature of `message` and `keyId` names this key — or a retired key
   * the current one endorsed (rotation).
   */
  verify(message: string, signature: string, keyId: string): boolean;
  /** Retired keys, each endorsed by its successor (exports carry them). */
  retiredKeys?(): readonly EndorsedKey[];
}

export interface Hasher {
  /** Lowercase hex SHA-256 of the UTF-8 bytes of `text`. */
  sha256Hex(text: string): string;
}

// ---------------------------------------------------------------------------------------------------------------
// Agent bundles: the `.tar.gz` a deploy uploads, unpacked where sandboxes can read it.

export interface BundleLimits {
  /** Compressed size cap. @default 64 MiB */
  readonly maxBundleBytes: number;
  /** Total size of all files once unpacked (guards against gzip bombs). @default 256 MiB */
  readonly maxUnpackedBytes: number;
  /** Largest single file. @default 64 MiB */
  readonly maxFileBytes: number;
  /** Files + directories. @default 10 000 */
  readonly maxEntries: number;
}

export interface AgentBundles {
  readonly limits: BundleLimits;
  /** Lowercase hex SHA-256 of the bundle bytes: its content address. */
  digest(bundle: Uint8Array): string;
  /**
   * Checks and unpacks a bundle (once per digest; later calls reuse the unpacked directory) and loads its
   * `agent.yaml`. Errors: USAGE naming the entry (not gzip/tar, absolute or `..` paths, links, devices, duplicate
   * or missing agent.yaml), PAYLOAD_TOO_LARGE (a cap), MANIFEST_INVALID (`agent.yaml:line:col`).
   */
  open(digest: string, bundle: Uint8Array): Promise<CompiledAgent>;
  /** Removes the unpacked copy of a bundle no revision uses any more. Idempotent. */
  forget(digest: string): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------------
// Secrets.

/** Sealed secret values by name (`aegis secret set`). */
export interface SecretStore {
  /** The value; NOT_FOUND (hint `aegis secret set NAME`) when there is none. Errors never carry values. */
  get(name: string): Promise<string>;
}

/** Randomness for placeholders. */
export interface SecretRandom {
  /** 32 fresh lowercase hex digits (16 bytes) from a CSPRNG per call. */
  hex128(): string;
}

// ---------------------------------------------------------------------------------------------------------------
// Small ports.

/** A pending timer from `Clock.setTimeout` / `Clock.setInterval`. */
export interface Timer {
  /** Stops it; harmless when it already fired or was cancelled. */
  cancel(): void;
}

export interface TimerOptions {
  /** When true, the timer alone does not keep the process alive (Node's `unref`). @default false */
  readonly background?: boolean;
}

/**
 * Time, for use-cases: `domain/` and `app/` never read the ambient clock or start ambient timers
 * (`test/architecture.test.ts` checks), so tests can drive time with `app/fakes/manual-clock.ts`. The adapter is
 * `adapters/clock/system-clock.ts`.
 */
export interface Clock {
  /** Wall clock, ms since epoch (fractional allowed). */
  now(): number;
  /** Calls `fn` once, `ms` from now. */
  setTimeout(fn: () => void, ms: number, options?: TimerOptions): Timer;
  /** Calls `fn` every `ms` until cancelled. */
  setInterval(fn: () => void, ms: number, options?: TimerOptions): Timer;
}

/** Counters and histograms the server exports (Prometheus). Use-cases call these; the adapter keeps the numbers. */
export interface ExecutionMetrics {
  /** An execution reached a terminal status. */
  executionFinished(status: TerminalStatus): void;
  /** Time from leaving the queue to the agent running (sandbox start, from a warm pool or cold), in ms. */
  sandboxStarted(startMs: number, start: 'warm' | 'cold'): void;
  /** Time an execution waited in the queue, in ms. */
  dequeued(waitMs: number): void;
}

export interface Ids {
  executionId(): string;
  /** `key_` + a sortable id. */
  keyId(): string;
}

/** Identity of the running orchestrator process; `isAlive` tells whether another owner still runs. */
export interface ProcessIdentity {
  current(): { host: string; pid: number; startTicks: number };
  isAlive(owner: { host: string; pid: number; startTicks: number }): boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// Tracing (OpenTelemetry when the operator sets OTEL_EXPORTER_OTLP_ENDPOINT; adapters/telemetry/otel-tracer.ts).

/** What an execution span is opened with. */
export interface ExecutionSpanStart {
  readonly executionId: string;
  readonly agent: string;
  /** Deployed revision; null for `aegis run` of a directory. */
  readonly revision: number | null;
  readonly runtime: string;
  /** Wall-clock ms (Clock.now()). */
  readonly startedAtMs: number;
}

/** One model call as a tracer sees it: the gateway's `llm.call` record (prompts only when recordContent is on). */
export type TracedLlmCall = LlmCallRecord;

/** An open execution span: child spans per model call, then `end` once with the outcome. */
export interface ExecutionSpan {
  /** A model call that ended at `endedAtMs` (wall ms); its span starts `call.latencyMs` earlier. */
  llmCall(call: TracedLlmCall, endedAtMs: number): void;
  end(outcome: { readonly status: string; readonly reason: string | null }, endedAtMs: number): void;
}

/** Port: exports execution traces. Must never throw into the use-case, nor block it. */
export interface Tracer {
  startExecution(start: ExecutionSpanStart): ExecutionSpan;
}

// ---------------------------------------------------------------------------------------------------------------
// MCP servers as tools (app/tools.ts, docs/adr/0085-mcp-client.md): servers named in the orchestrator config,
// run or reached by the orchestrator — never from inside a sandbox.

export interface McpToolInfo {
  readonly name: string;
  readonly description: string;
  /** JSON Schema of the arguments, as the server declares it. */
  readonly inputSchema: Record<string, unknown>;
}

export interface McpServers {
  /** Is `server` configured? */
  has(server: string): boolean;
  listTools(server: string): Promise<readonly McpToolInfo[]>;
  /** The server's result (`content`, `structuredContent`, `isError`), as JSON. */
  callTool(server: string, tool: string, args: Record<string, unknown>, timeoutMs: number): Promise<unknown>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------------
// Cortex: agent memory (app/cortex.ts). Embedders turn text into vectors; a VectorStore keeps memories and their
// vectors and finds the nearest ones within the scopes it is given.

export type {
  MemoryFilter,
  MemoryMeta,
  MemoryOutcome,
  MemoryRecord,
  MemoryScope,
  MemorySource,
} from '../domain/cortex/memory.ts';

export interface Embedder {
  /** Names the model and its settings; vectors from different ids are never compared (`minilm-l6-v2`, `hash-v1/256`). */
  readonly id: string;
  readonly dimension: number;
  /** One L2-normalised vector of `dimension` floats per text, in order. */
  embed(texts: readonly string[]): Promise<Float32Array[]>;
}

export interface VectorSearchQuery {
  /** Only memories in these scopes are candidates. An empty list finds nothing. */
  readonly scopes: readonly MemoryScope[];
  /** L2-normalised, of the dimension of the memories searched. */
  readonly vector: Float32Array;
  /** Only memories stored with this embedder are compared. */
  readonly embedderId: string;
  readonly k: number;
  readonly filter?: MemoryFilter;
  /** ISO-8601: memories expired at this time are not returned. */
  readonly now: string;
}

export interface VectorHit {
  readonly record: MemoryRecord;
  /** Cosine similarity (dot product of the normalised vectors). */
  readonly similarity: number;
}

export interface MemoryPage {
  readonly items: readonly MemoryRecord[];
  /** Pass as `after` for the next page; null on the last. */
  readonly next: string | null;
}

export interface MemoryListQuery {
  /** @default 50, at most 1000 */
  readonly limit?: number;
  /** The `next` of the previous page. */
  readonly after?: string | null;
  readonly filter?: MemoryFilter;
  /** ISO-8601: expired memories are not listed. */
  readonly now: string;
}

/** Which embedders the vectors of one scope came from (more than one only mid-`reembed`). */
export interface ScopeEmbedder {
  readonly embedderId: string;
  readonly dimension: number;
  readonly count: number;
}

export interface VectorPut {
  readonly record: MemoryRecord;
  readonly vector: Float32Array;
}

export interface VectorStore {
  /** `exact` scans every vector of the scopes; `ann` uses an approximate index. */
  readonly searchMode: 'exact' | 'ann';
  /** Inserts, or replaces the memory with the same id (its scope must not change). */
  put(record: MemoryRecord, vector: Float32Array): Promise<void>;
  /** `put` for each item as one write: all are stored or, when one is refused, none. */
  putMany(items: readonly VectorPut[]): Promise<void>;
  /** The `k` nearest memories by cosine similarity, best first (ties by id). */
  search(query: VectorSearchQuery): Promise<VectorHit[]>;
  /** A memory of `scope`, or null (also when `id` exists in another scope). */
  get(scope: MemoryScope, id: string): Promise<MemoryRecord | null>;
  /** The vector stored for a memory of `scope`, or null. */
  getVector(scope: MemoryScope, id: string): Promise<Float32Array | null>;
  /** Newest first, paged. */
  list(scope: MemoryScope, query: MemoryListQuery): Promise<MemoryPage>;
  /** Deletes a memory of `scope`; false when there is none (or it belongs to another scope). */
  forget(scope: MemoryScope, id: string): Promise<boolean>;
  /** Deletes every memory whose `expiresAt` ≤ `now`; returns how many. */
  forgetExpired(now: string): Promise<number>;
  /** Memories in `scope` (all scopes when omitted), expired ones included until `forgetExpired`. */
  count(scope?: MemoryScope): Promise<number>;
  /** Every scope that holds at least one memory. */
  scopes(): Promise<MemoryScope[]>;
  embedders(scope: MemoryScope): Promise<ScopeEmbedder[]>;
  close(): Promise<void>;
}

/** New memory ids: `mem_` + a sortable id. */
export interface MemoryIds {
  memoryId(): string;
}
