/**
 * The REST API's shapes, as the SDK sees them: plain types written here, so the package stands alone (nothing is
 * imported from the server's source). test/sdk-wire.test.ts holds them equal to the server's zod schemas
 * (src/api/http/schemas.ts, the source of /openapi.json), so they cannot drift apart.
 */

/** Every status an execution goes through; the last five are terminal. */
export const EXECUTION_STATUSES = [
  'created',
  'queued',
  'running',
  'succeeded',
  'failed',
  'timeout',
  'oom',
  'killed',
] as const;
export type ExecutionStatus = (typeof EXECUTION_STATUSES)[number];

/** The statuses an execution ends in. */
export const TERMINAL_STATUSES: readonly ExecutionStatus[] = [
  'succeeded',
  'failed',
  'timeout',
  'oom',
  'killed',
];

/** True when `status` is one an execution ends in (nothing changes after it). */
export function isTerminalStatus(status: string): boolean {
  return (TERMINAL_STATUSES as readonly string[]).includes(status);
}

/** What an API key may do. */
export const SCOPES = ['admin', 'deploy', 'execute', 'read'] as const;
export type Scope = (typeof SCOPES)[number];

/** The REST error body: `{"error": {code, message, details}}`. */
export interface ErrorBody {
  error: {
    /** Stable error code (`NOT_FOUND`, `MANIFEST_INVALID`, `QUEUE_FULL`, …). */
    code: string;
    message: string;
    /** `hint`, `problems` (each with a JSON path), `retryAfterMs`, … */
    details: Record<string, unknown>;
  };
}

export interface Violation {
  kind: 'limit' | 'network' | 'filesystem' | 'budget' | 'tool' | 'swarm';
  rule: string;
  message: string;
  count?: number | undefined;
}

export interface Execution {
  /** `ex_…` */
  id: string;
  agent: { name: string; version: string; revision: number | null };
  runtime: string;
  status: ExecutionStatus;
  exitCode: number | null;
  /** Why it ended as it did (`timeout after 10s`, …); null while running or when it succeeded. */
  reason: string | null;
  input: unknown;
  output: unknown;
  violations: Violation[];
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  durationMs: number | null;
  /** What the run consumed through AEGIS; `llm` is null for agents without `spec.llm` (and until the run ends). */
  usage: { llm: LlmUsage | null };
  /** The execution that spawned this one (`aegis.swarm.spawn`); null for a root. */
  parentId: string | null;
  /** The root of its swarm (`client.swarm(rootId)`); null for a root. */
  rootId: string | null;
  /** The cluster node holding it (its last claimant, `client.listNodes()`); null while queued unclaimed or run locally. */
  node: string | null;
}

/** `GET /v1/swarms/{rootId}`: a swarm's root execution and every descendant. */
export interface SwarmTree {
  root: string;
  executions: {
    id: string;
    parentId: string | null;
    agent: string;
    status: ExecutionStatus;
    reason: string | null;
    createdAt: string;
    finishedAt: string | null;
    node: string | null;
  }[];
  /** The swarm bus's last 100 messages over all topics, oldest first (no content). */
  messages: {
    topic: string;
    id: number;
    sender: string;
    sizeBytes: number;
    digest: string;
    publishedAt: string;
  }[];
  /** The swarm's locks: the last fencing token and the holder (null: free). */
  locks: {
    name: string;
    token: number;
    holder: string | null;
    node: string | null;
    expiresAt: string | null;
  }[];
}

/** Model calls an execution made through the LLM gateway (`spec.llm`). */
export interface LlmUsage {
  /** Calls that reached an upstream. */
  calls: number;
  inputTokens: number;
  outputTokens: number;
  /** At the server's price table (0 for models without a price). */
  usd: number;
}

export interface ExecutionList {
  executions: Execution[];
  /** Pass as `cursor` for the next page; null at the end. */
  nextCursor: string | null;
}

export interface LogLine {
  seq: number;
  ts: string;
  stream: 'stdout' | 'stderr' | 'system';
  text: string;
}

export interface LogPage {
  lines: LogLine[];
  status: ExecutionStatus;
  /** Pass as `after` to continue. */
  nextAfter: number;
}

export interface AgentRevision {
  agent: string;
  revision: number;
  version: string;
  digest: string;
  sizeBytes: number;
  description: string | null;
  createdAt: string;
  deployedBy: string;
}

export interface AgentSummary {
  name: string;
  activeRevision: number;
  active: AgentRevision;
  revisions: number;
  createdAt: string;
  updatedAt: string;
}

/** One warm pool of an agent revision on the server's node. */
export interface PoolView {
  agent: string;
  revision: number;
  /** spec.scaling.warm (or the server override). */
  target: number;
  /** Instances warm and ready now. */
  warm: number;
  spawning: number;
  /** cold: no instance ready (scaled to zero or filling). */
  state: 'warm' | 'cold';
  idleTimeoutMs: number;
  lastUsedAt: string;
}

export interface AgentDetail {
  agent: AgentSummary;
  /** Newest first. */
  revisions: AgentRevision[];
  pools: PoolView[];
}

export interface AgentList {
  agents: AgentSummary[];
}

export interface RevisionList {
  revisions: AgentRevision[];
}

export interface DeployResult {
  agent: AgentSummary;
  revision: AgentRevision;
  /** false: the same bundle was already the active revision; nothing changed. */
  created: boolean;
}

export interface RollbackResult {
  agent: AgentSummary;
  /** The revision that was active before. */
  from: number;
}

export interface ApiKey {
  id: string;
  name: string;
  /** The first characters of the key, to recognise it. */
  prefix: string;
  scopes: Scope[];
  rateLimit: { perSecond: number; burst: number } | null;
  createdAt: string;
  revokedAt: string | null;
  lastUsedAt: string | null;
}

export interface KeyList {
  keys: ApiKey[];
}

/** GET /v1/nodes: one registered node of the cluster (server or edge). */
export interface Node {
  id: string;
  kind: 'server' | 'edge';
  state: 'live' | 'draining' | 'dead';
  /** Host name at its last registration (diagnostics only: ownership is id + epoch). */
  host: string;
  version: string;
  labels: Record<string, string>;
  runtimes: string[];
  /** Executions it runs at once. */
  capacity: number;
  /** Executions it holds now (claimed, created or running). */
  running: number;
  /** Bumped on each registration and when declared dead (fencing). */
  epoch: number;
  startedAt: string;
  heartbeatAt: string;
  leaseExpiresAt: string;
  /** Milliseconds since its last heartbeat, by the answering server's clock. */
  heartbeatAgeMs: number;
}

export interface NodeList {
  nodes: Node[];
}

/** POST /v1/admin/prune: windows such as 30d; without olderThan, the server's --retain policy. */
export interface PruneBody {
  olderThan?: string | undefined;
  logsOlderThan?: string | undefined;
  auditOlderThan?: string | undefined;
  dryRun?: boolean | undefined;
}

/** What a prune removed (or, dry run, would remove) and what it kept and why. */
export interface PruneReport {
  dryRun: boolean;
  before: { executions: string | null; logs: string | null; sandboxes: string | null; audit: string | null };
  removed: {
    executions: number;
    logLines: number;
    logBytes: number;
    logsOfExecutions: number;
    sandboxes: number;
    ledgerEntries: number;
  };
  checkpoints: { seq: number; fromSeq: number; count: number; archive: string; archiveSha256: string }[];
  kept: { what: 'executions' | 'logs' | 'sandboxes' | 'ledger'; reason: string }[];
  reclaimedBytes: number | null;
}

/** A tool call waiting for a human decision (`approval: required` grants), with the arguments it would run with. */
export interface Approval {
  id: string;
  /** The sandbox or execution whose agent called. */
  subject: string;
  tool: string;
  arguments: unknown;
  argsDigest: string;
  /** agent, loop, or the API key id that called. */
  by: string;
  /** The key that owns the sandbox or execution. */
  owner: string;
  requestedAt: string;
  expiresAt: string;
}

export interface ApprovalList {
  approvals: Approval[];
}

export interface ApprovalDecided {
  decision: 'approved' | 'denied';
  approval: Approval;
}

export interface CreateKeyBody {
  name: string;
  scopes: Scope[];
  /** `20/s`, `600/m,burst=50`. */
  rate?: string | undefined;
}

export interface CreatedKey {
  /** Shown once; only its hash is stored. */
  key: string;
  record: ApiKey;
}

/** Edge nodes (docs/adr/0108-edge-node-protocol.md). */
export interface CreateEdgeTokenBody {
  /** Labels the enrolled edge gets (placement). */
  labels?: Record<string, string> | undefined;
  /** How long the token may be used: 1s to 30d. */
  ttl?: string | undefined;
}

export interface EdgeToken {
  id: string;
  labels: Record<string, string>;
  createdAt: string;
  expiresAt: string;
  createdBy: string;
  usedAt: string | null;
  usedBy: string | null;
}

export interface CreatedEdgeToken {
  /** Single use; shown once, only its hash is stored. */
  token: string;
  record: EdgeToken;
}

export interface EdgeNode {
  id: string;
  labels: Record<string, string>;
  runtimes: string[];
  capacity: number;
  enrolledAt: string;
  revokedAt: string | null;
  connected: boolean;
  running: number;
}

export interface EdgeNodeList {
  nodes: EdgeNode[];
}

export interface CreateExecutionBody {
  /** Agent name, optionally with `@revision` or `@version`. */
  agent: string;
  /** JSON handed to the agent on stdin and /run/aegis/input.json. */
  input?: unknown;
}

export interface AuditEntry {
  seq: number;
  ts: string;
  execution: string | null;
  kind: string;
  data: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

export interface AuditList {
  entries: AuditEntry[];
}

export interface HealthStatus {
  status: 'ok' | 'starting' | 'draining';
}

// ── agent memory (Cortex) ─────────────────────────────────────────────────────────────────────────────────────

export type MemoryOutcome = 'succeeded' | 'failed';
/** Who stored a memory: the agent's SDK, the indexing of an ended execution, or the API. */
export type MemorySource = 'sdk' | 'execution' | 'api';

export interface Memory {
  /** `mem_…` */
  id: string;
  agent: string;
  namespace: string;
  text: string;
  meta: Record<string, unknown>;
  createdAt: string;
  /** When spec.memory.ttl forgets it; null: never. */
  expiresAt: string | null;
  executionId: string | null;
  outcome: MemoryOutcome | null;
  source: MemorySource;
  /** The embedder of its vector (`hash-v1/512`, `openai:<provider>/<model>`). */
  embedder: string;
}

/** A memory as recall scores it: score = similarity × recency × outcomeWeight. */
export interface RecalledMemory extends Memory {
  score: number;
  similarity: number;
  recency: number;
  outcomeWeight: number;
}

export interface MemoryList {
  memories: Memory[];
  /** Pass as `after` for the next page; null on the last one. */
  next: string | null;
}

export interface MemorySearchBody {
  query: string;
  /** @default 5 */
  k?: number | undefined;
  filter?:
    | {
        meta?: Record<string, string | number | boolean | null> | undefined;
        outcome?: MemoryOutcome | null | undefined;
        source?: MemorySource | undefined;
        executionId?: string | undefined;
        createdAfter?: string | undefined;
      }
    | undefined;
  /** Minimum score in [0, 1]. @default the server's */
  threshold?: number | undefined;
}

export interface MemorySearchResult {
  memories: RecalledMemory[];
}

export interface MemoryForgotten {
  id: string;
  forgotten: true;
}

export interface MemoryReembedded {
  count: number;
  embedder: string;
}
