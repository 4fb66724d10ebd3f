/**
 * The REST API's shapes, as zod schemas: request bodies and queries are validated with them, responses are typed by
 * them, and /openapi.json is generated from them (openapi.ts). The SDK imports the inferred types.
 */
import { z } from 'zod';
import { SCOPES } from '../../domain/auth/api-key.ts';
import { type ExecutionRecord, MAX_EXECUTIONS_PAGE, TERMINAL_STATUSES } from '../../domain/execution.ts';

const STATUSES = ['created', 'queued', 'running', ...TERMINAL_STATUSES] as const;
export const ExecutionStatus = z.enum(STATUSES);

export const ErrorBody = z
  .object({
    error: z.object({
      code: z.string().meta({ description: 'Stable error code (README: error codes)', example: 'NOT_FOUND' }),
      message: z.string(),
      details: z
        .record(z.string(), z.unknown())
        .meta({ description: 'hint, problems (each with a JSON path), retryAfterMs, …' }),
    }),
  })
  .meta({ id: 'Error' });
export type ErrorBody = z.infer<typeof ErrorBody>;

export const Violation = z
  .object({
    kind: z.enum(['limit', 'network', 'filesystem', 'budget', 'tool', 'swarm']),
    rule: z.string(),
    message: z.string(),
    count: z.number().int().optional(),
  })
  .meta({ id: 'Violation' });

export const LlmUsage = z
  .object({
    calls: z.number().int().meta({ description: 'model calls that reached an upstream' }),
    inputTokens: z.number().int(),
    outputTokens: z.number().int(),
    usd: z.number().meta({ description: 'at the configured price table (0 for models without a price)' }),
  })
  .meta({ id: 'LlmUsage' });

export const Execution = z
  .object({
    id: z.string().meta({ example: 'ex_01jd5v9k3m8q2r7t4w6y0zabcd' }),
    agent: z.object({ name: z.string(), version: z.string(), revision: z.number().int().nullable() }),
    runtime: z.string(),
    status: z.enum(STATUSES),
    exitCode: z.number().int().nullable(),
    reason: z.string().nullable(),
    input: z.unknown(),
    output: z.unknown(),
    violations: z.array(Violation),
    createdAt: z.string(),
    startedAt: z.string().nullable(),
    finishedAt: z.string().nullable(),
    durationMs: z.number().nullable(),
    usage: z.object({ llm: LlmUsage.nullable() }).meta({
      description:
        'what the run consumed through AEGIS; llm is null for agents without spec.llm (and until the run ends)',
    }),
    parentId: z
      .string()
      .nullable()
      .meta({ description: 'the execution that spawned this one (aegis.swarm.spawn); null for a root' }),
    rootId: z
      .string()
      .nullable()
      .meta({ description: 'the root of its swarm (GET /v1/swarms/{rootId}); null for a root' }),
    node: z.string().nullable().meta({
      description:
        'the cluster node holding it (its last claimant, GET /v1/nodes); null while queued unclaimed or for a local run',
    }),
  })
  .meta({ id: 'Execution' });
export type Execution = z.infer<typeof Execution>;

export const SwarmTree = z
  .object({
    root: z.string(),
    executions: z.array(
      z.object({
        id: z.string(),
        parentId: z.string().nullable(),
        agent: z.string(),
        status: z.enum(STATUSES),
        reason: z.string().nullable(),
        createdAt: z.string(),
        finishedAt: z.string().nullable(),
        node: z.string().nullable(),
      }),
    ),
    messages: z
      .array(
        z.object({
          topic: z.string(),
          id: z.number().int(),
          sender: z.string(),
          sizeBytes: z.number().int(),
          digest: z.string(),
          publishedAt: z.string(),
        }),
      )
      .meta({ description: "the swarm bus's last 100 messages over all topics, oldest first (no content)" }),
    locks: z
      .array(
        z.object({
          name: z.string(),
          token: z.number().int(),
          holder: z.string().nullable(),
          node: z.string().nullable(),
          expiresAt: z.string().nullable(),
        }),
      )
      .meta({ description: "the swarm's locks: the last fencing token and the holder (null: free)" }),
  })
  .meta({ id: 'SwarmTree' });

/** The REST shape of an execution record (the CLI prints the same, locally and against a server). */
export function executionView(record: ExecutionRecord): Execution {
  return {
    id: record.id,
    agent: {
      name: record.agent.name,
      version: record.agent.version,
      revision: record.agent.revision ?? null,
    },
    runtime: record.runtime,
    status: record.status,
    exitCode: record.exitCode,
    reason: record.reason,
    input: record.input,
    output: record.output,
    violations: record.violations.map((v) => ({ ...v })),
    createdAt: record.createdAt,
    startedAt: record.startedAt,
    finishedAt: record.finishedAt,
    durationMs: record.durationMs,
    usage: { llm: record.usage?.llm ? { ...record.usage.llm } : null },
    parentId: record.parentId ?? null,
    rootId: record.rootId ?? null,
    node: record.node ?? null,
  };
}

export const ExecutionList = z
  .object({
    executions: z.array(Execution),
    nextCursor: z
      .string()
      .nullable()
      .meta({ description: 'Pass as ?cursor= for the next page; null at the end' }),
  })
  .meta({ id: 'ExecutionList' });
export type ExecutionList = z.infer<typeof ExecutionList>;

export const CreateExecutionBody = z
  .strictObject({
    agent: z.string().min(1).meta({
      description: 'Agent name, optionally with @revision or @version',
      example: 'email-summarizer@2',
    }),
    input: z
      .unknown()
      .optional()
      .meta({ description: 'JSON handed to the agent on stdin and /run/aegis/input.json' }),
  })
  .meta({ id: 'CreateExecution' });
export type CreateExecutionBody = z.infer<typeof CreateExecutionBody>;

const Duration = z
  .string()
  .regex(/^\d+(ms|s|m)?$/, 'a duration like 30s, 1500ms or 2m')
  .meta({ example: '30s' });

export const WaitQuery = z.strictObject({
  wait: Duration.optional().meta({
    description: 'Hold the answer until the execution ends or this long passes (at most 5m)',
  }),
});

export const ListExecutionsQuery = z.strictObject({
  agent: z.string().optional(),
  status: z.enum(STATUSES).optional(),
  limit: z.coerce.number().int().min(1).max(MAX_EXECUTIONS_PAGE).optional(),
  cursor: z.string().optional(),
});

export const LogsQuery = z.strictObject({
  after: z.coerce.number().int().min(0).optional().meta({ description: 'Only lines with seq > after' }),
  limit: z.coerce.number().int().min(1).max(10_000).optional(),
  follow: z.enum(['true', 'false', '1', '0']).optional().meta({
    description:
      'Stream as Server-Sent Events until the execution ends (also chosen by Accept: text/event-stream)',
  }),
});

export const LogLine = z
  .object({
    seq: z.number().int(),
    ts: z.string(),
    stream: z.enum(['stdout', 'stderr', 'system']),
    text: z.string(),
  })
  .meta({ id: 'LogLine' });
export type LogLine = z.infer<typeof LogLine>;

export const LogPage = z
  .object({
    lines: z.array(LogLine),
    status: z.enum(STATUSES),
    nextAfter: z.number().int().meta({ description: 'Pass as ?after= to continue' }),
  })
  .meta({ id: 'LogPage' });
export type LogPage = z.infer<typeof LogPage>;

export const AgentRevision = z
  .object({
    agent: z.string(),
    revision: z.number().int(),
    version: z.string(),
    digest: z.string(),
    sizeBytes: z.number().int(),
    description: z.string().nullable(),
    createdAt: z.string(),
    deployedBy: z.string(),
  })
  .meta({ id: 'AgentRevision' });
export type AgentRevision = z.infer<typeof AgentRevision>;

export const AgentSummary = z
  .object({
    name: z.string(),
    activeRevision: z.number().int(),
    active: AgentRevision,
    revisions: z.number().int(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .meta({ id: 'Agent' });
export type AgentSummary = z.infer<typeof AgentSummary>;

export const AgentList = z.object({ agents: z.array(AgentSummary) }).meta({ id: 'AgentList' });
export const PoolView = z
  .object({
    agent: z.string(),
    revision: z.number().int(),
    target: z.number().int().meta({ description: 'spec.scaling.warm (or the server override)' }),
    warm: z.number().int().meta({ description: 'Instances Warm and ready now' }),
    spawning: z.number().int(),
    state: z
      .enum(['warm', 'cold'])
      .meta({ description: 'cold: no instance ready (scaled to zero or filling)' }),
    idleTimeoutMs: z.number().int(),
    lastUsedAt: z.string(),
  })
  .meta({ id: 'WarmPool' });
export type PoolView = z.infer<typeof PoolView>;

export const AgentDetail = z
  .object({
    agent: AgentSummary,
    revisions: z.array(AgentRevision),
    pools: z
      .array(PoolView)
      .meta({ description: "This node's warm pools of the agent (one per revision kept warm)" }),
  })
  .meta({ id: 'AgentDetail' });
export type AgentDetail = z.infer<typeof AgentDetail>;
export const RevisionList = z.object({ revisions: z.array(AgentRevision) }).meta({ id: 'RevisionList' });

export const DeployResult = z
  .object({ agent: AgentSummary, revision: AgentRevision, created: z.boolean() })
  .meta({ id: 'DeployResult' });
export type DeployResult = z.infer<typeof DeployResult>;

export const RollbackBody = z
  .strictObject({
    revision: z
      .number()
      .int()
      .min(1)
      .optional()
      .meta({ description: 'Default: the one before the active revision' }),
  })
  .meta({ id: 'Rollback' });
export const RollbackResult = z
  .object({ agent: AgentSummary, from: z.number().int() })
  .meta({ id: 'RollbackResult' });
export type RollbackResult = z.infer<typeof RollbackResult>;

export const AgentName = z.strictObject({ name: z.string().min(1).max(63) });
export const ExecutionId = z.strictObject({ id: z.string().min(1).max(100) });

/** A tool call waiting for a human (app/approvals.ts): the arguments are shown so the approver sees what runs. */
export const Approval = z
  .object({
    id: z.string(),
    subject: z.string().meta({ description: 'The sandbox or execution whose agent called' }),
    tool: z.string(),
    arguments: z.unknown().meta({ description: 'The arguments of the call, as the agent sent them' }),
    argsDigest: z.string().meta({ description: 'sha256 of their canonical JSON (what the ledger keeps)' }),
    by: z.string().meta({ description: 'agent, loop, or the API key id that called' }),
    owner: z.string().meta({ description: 'The key that owns the sandbox or execution' }),
    requestedAt: z.string(),
    expiresAt: z.string(),
  })
  .meta({ id: 'Approval' });
export const ApprovalList = z.object({ approvals: z.array(Approval) }).meta({ id: 'ApprovalList' });
export const ApprovalDecided = z
  .object({ decision: z.enum(['approved', 'denied']), approval: Approval })
  .meta({ id: 'ApprovalDecided' });

export const ApiKey = z
  .object({
    id: z.string(),
    name: z.string(),
    prefix: z.string(),
    scopes: z.array(z.enum(SCOPES)),
    rateLimit: z.object({ perSecond: z.number(), burst: z.number().int() }).nullable(),
    createdAt: z.string(),
    revokedAt: z.string().nullable(),
    lastUsedAt: z.string().nullable(),
  })
  .meta({ id: 'ApiKey' });
export type ApiKey = z.infer<typeof ApiKey>;

export const CreateKeyBody = z
  .strictObject({
    name: z.string().min(1).max(100),
    scopes: z.array(z.enum(SCOPES)).min(1),
    rate: z
      .string()
      .optional()
      .meta({ description: 'Per-key rate, e.g. 20/s or 600/m,burst=50', example: '20/s' }),
  })
  .meta({ id: 'CreateKey' });
export type CreateKeyBody = z.infer<typeof CreateKeyBody>;

export const CreatedKey = z
  .object({ key: z.string().meta({ description: 'Shown once; only its hash is stored' }), record: ApiKey })
  .meta({ id: 'CreatedKey' });
export type CreatedKey = z.infer<typeof CreatedKey>;
export const KeyList = z.object({ keys: z.array(ApiKey) }).meta({ id: 'KeyList' });

export const Node = z
  .object({
    id: z
      .string()
      .meta({ description: 'Stable node id (ADR 0100): ownership is id + epoch, never the host' }),
    kind: z.enum(['server', 'edge']),
    state: z.enum(['live', 'draining', 'dead']),
    host: z.string().meta({ description: 'Host name at its last registration (diagnostics only)' }),
    version: z.string(),
    labels: z.record(z.string(), z.string()),
    runtimes: z.array(z.string()),
    capacity: z.number().int().meta({ description: 'Executions it runs at once' }),
    running: z.number().int().meta({ description: 'Executions it holds now (claimed, created or running)' }),
    epoch: z
      .number()
      .int()
      .meta({ description: 'Bumped on each registration and when declared dead (fencing)' }),
    startedAt: z.string(),
    heartbeatAt: z.string(),
    leaseExpiresAt: z.string(),
    heartbeatAgeMs: z
      .number()
      .int()
      .meta({ description: "Milliseconds since its last heartbeat, by the answering server's clock" }),
  })
  .meta({ id: 'Node' });
export type Node = z.infer<typeof Node>;
export const NodeList = z.object({ nodes: z.array(Node) }).meta({ id: 'NodeList' });
export type NodeList = z.infer<typeof NodeList>;

const RetentionWindowText = z
  .string()
  .max(32)
  .meta({ description: 'A window such as 30d, 2w, 12h (s, m, h, d, w)' });
export const PruneBody = z
  .strictObject({
    olderThan: RetentionWindowText.optional().meta({
      description:
        "Finished executions, logs, ended sandboxes and ledger entries older than this; default: the server's --retain policy",
    }),
    logsOlderThan: RetentionWindowText.optional(),
    auditOlderThan: RetentionWindowText.optional(),
    dryRun: z.boolean().optional().meta({ description: 'Count only; remove nothing' }),
  })
  .meta({ id: 'PruneBody' });
export type PruneBody = z.infer<typeof PruneBody>;

const Cutoff = z.string().nullable();
export const PruneReport = z
  .object({
    dryRun: z.boolean(),
    before: z.object({ executions: Cutoff, logs: Cutoff, sandboxes: Cutoff, audit: Cutoff }),
    removed: z.object({
      executions: z.number().int(),
      logLines: z.number().int(),
      logBytes: z.number().int(),
      logsOfExecutions: z.number().int(),
      sandboxes: z.number().int(),
      ledgerEntries: z.number().int(),
    }),
    checkpoints: z.array(
      z.object({
        seq: z.number().int(),
        fromSeq: z.number().int(),
        count: z.number().int(),
        archive: z.string(),
        archiveSha256: z.string(),
      }),
    ),
    kept: z.array(
      z.object({ what: z.enum(['executions', 'logs', 'sandboxes', 'ledger']), reason: z.string() }),
    ),
    reclaimedBytes: z.number().int().nullable(),
  })
  .meta({ id: 'PruneReport' });
export type PruneReport = z.infer<typeof PruneReport>;

// Edge nodes (docs/adr/0108-edge-node-protocol.md).
const EdgeLabels = z.record(z.string(), z.string());
export const CreateEdgeTokenBody = z
  .strictObject({
    labels: EdgeLabels.optional().meta({ description: 'Labels the enrolled edge gets (placement)' }),
    ttl: z
      .string()
      .optional()
      .meta({ description: 'How long the token may be used: 1s to 30d', example: '15m' }),
  })
  .meta({ id: 'CreateEdgeToken' });
export type CreateEdgeTokenBody = z.infer<typeof CreateEdgeTokenBody>;
export const EdgeToken = z
  .object({
    id: z.string(),
    labels: EdgeLabels,
    createdAt: z.string(),
    expiresAt: z.string(),
    createdBy: z.string(),
    usedAt: z.string().nullable(),
    usedBy: z.string().nullable(),
  })
  .meta({ id: 'EdgeToken' });
export const CreatedEdgeToken = z
  .object({
    token: z.string().meta({ description: 'Single use; shown once, only its hash is stored' }),
    record: EdgeToken,
  })
  .meta({ id: 'CreatedEdgeToken' });
export type CreatedEdgeToken = z.infer<typeof CreatedEdgeToken>;
export const EdgeNode = z
  .object({
    id: z.string(),
    labels: EdgeLabels,
    runtimes: z.array(z.string()),
    capacity: z.number().int(),
    enrolledAt: z.string(),
    revokedAt: z.string().nullable(),
    connected: z.boolean(),
    running: z.number().int(),
  })
  .meta({ id: 'EdgeNode' });
export type EdgeNode = z.infer<typeof EdgeNode>;
export const EdgeNodeList = z.object({ nodes: z.array(EdgeNode) }).meta({ id: 'EdgeNodeList' });

export const AuditEntry = z
  .object({
    seq: z.number().int(),
    ts: z.string(),
    execution: z.string().nullable(),
    kind: z.string(),
    data: z.record(z.string(), z.unknown()),
    prevHash: z.string(),
    hash: z.string(),
    /** In a cluster: the node whose chain holds the entry (seq and hash are positions in that chain). */
    node: z.string().optional(),
  })
  .meta({ id: 'AuditEntry' });
export const AuditList = z.object({ entries: z.array(AuditEntry) }).meta({ id: 'AuditList' });

export const Health = z.object({ status: z.enum(['ok', 'starting', 'draining']) }).meta({ id: 'Health' });

/** What `aegis validate -o json` prints for a manifest `aegis run` would accept (errors are the Error body). */
export const Validation = z
  .object({
    valid: z.literal(true),
    file: z.string(),
    agent: z.object({
      name: z.string(),
      version: z.string(),
      isolation: z.string(),
      limits: z.object({
        cpuMillis: z.number().int(),
        memoryBytes: z.number().int(),
        pids: z.number().int(),
        diskBytes: z.number().int(),
        timeoutMs: z.number().int(),
      }),
    }),
    warnings: z.array(z.string()),
  })
  .meta({ id: 'Validation' });
export type Validation = z.infer<typeof Validation>;
