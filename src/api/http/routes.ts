/**
 * The REST API as a table: each route names its method, path, scope-checking use-case, and zod schemas for params,
 * query, body and responses. server.ts registers the table on Fastify; openapi.ts turns the same table into
 * /openapi.json — one source, so the document can't drift from the code.
 */
import type { z } from 'zod';
import { deleteAgent, deployAgent, getAgent, listAgents, rollbackAgent } from '../../app/agents.ts';
import { createApiKey, listApiKeys, revokeApiKey } from '../../app/api-keys.ts';
import { type Principal, parseRateLimit, requireScope } from '../../domain/auth/api-key.ts';
import type {
  AgentRevision as AgentRevisionRecord,
  AgentSummary as AgentSummaryRecord,
} from '../../domain/deployment.ts';
import type { EdgeNodeRecord } from '../../domain/edge/records.ts';
import { AegisError } from '../../domain/errors.ts';
import { isTerminal } from '../../domain/execution.ts';
import { parseRetention, retentionPolicy } from '../../domain/retention.ts';
import { parseDuration } from '../../domain/units.ts';
import type { ApiContext } from '../context.ts';
import { decodeCursor, encodeCursor } from '../cursor.ts';
import { MEMORY_ROUTES } from './memory-routes.ts';
import * as S from './schemas.ts';

export interface RouteRequest {
  readonly principal: Principal;
  readonly params: Record<string, string>;
  readonly query: Record<string, unknown>;
  readonly body: unknown;
  readonly headers: Record<string, string | string[] | undefined>;
  /** Aborted when the client goes away. */
  readonly signal: AbortSignal;
}

export interface RouteReply {
  readonly status: number;
  readonly body?: unknown;
  readonly headers?: Record<string, string>;
}

export interface Route {
  readonly method: 'GET' | 'POST' | 'DELETE';
  /** Fastify syntax (`/v1/agents/:name`); openapi.ts rewrites it to `{name}`. */
  readonly path: string;
  readonly operationId: string;
  readonly summary: string;
  readonly tag: string;
  /** Scope named in the docs (the use-case enforces it). null: no key needed. */
  readonly scope: 'admin' | 'deploy' | 'execute' | 'read' | null;
  readonly params?: z.ZodType;
  readonly query?: z.ZodType;
  /** JSON body schema, or `bundle` for a raw `.tar.gz` upload. */
  readonly body?: z.ZodType | 'bundle';
  readonly responses: Readonly<
    Record<number, { description: string; schema?: z.ZodType; contentType?: string }>
  >;
  readonly handler: (ctx: ApiContext, request: RouteRequest) => Promise<RouteReply>;
  /** Routes that write their own response (SSE). */
  readonly streaming?: boolean;
}

/** The most a `?wait=` may hold a request. */
const MAX_WAIT_MS = 5 * 60_000;

export function parseWait(value: unknown, where: string): number | undefined {
  if (value === undefined) return undefined;
  const parsed = parseDuration(String(value));
  if (!parsed.ok) throw new AegisError('USAGE', `${where}: ${parsed.error}`);
  if (parsed.value > MAX_WAIT_MS) {
    throw new AegisError('USAGE', `${where}: at most 5m`, {
      hint: 'wait in several requests, or follow the logs (GET …/logs?follow=true)',
    });
  }
  return parsed.value;
}

/** The REST shape of an execution record (moved to schemas.ts so the CLI prints it without the route table). */
export const executionView = S.executionView;

const revisionView = (r: AgentRevisionRecord): S.AgentRevision => ({ ...r });
const agentView = (a: AgentSummaryRecord): S.AgentSummary => ({ ...a, active: revisionView(a.active) });

const errors = (...codes: number[]) =>
  Object.fromEntries(
    codes.map((code) => [code, { description: ERROR_DESCRIPTIONS[code] ?? 'error', schema: S.ErrorBody }]),
  );

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'Invalid request (details.problems name JSON paths)',
  401: 'No or unknown API key',
  403: 'The key lacks the scope, or a security rule refuses the request',
  404: 'No such agent, revision, execution or key',
  409: 'Conflicts with the current state',
  413: 'Body or bundle over its size cap',
  415: 'Body of a Content-Type the route does not take (application/json; deploys application/gzip)',
  429: 'Over the key rate or the queue is full (Retry-After)',
  503: 'Shutting down, or the host cannot run it',
};

export const ROUTES: readonly Route[] = [
  {
    method: 'POST',
    path: '/v1/agents',
    operationId: 'deployAgent',
    summary: 'Deploy an agent bundle (.tar.gz of the directory holding agent.yaml) as a new revision',
    tag: 'agents',
    scope: 'deploy',
    body: 'bundle',
    responses: {
      201: { description: 'A new revision, now active', schema: S.DeployResult },
      200: {
        description: 'The active revision already holds this bundle; nothing changed',
        schema: S.DeployResult,
      },
      ...errors(400, 401, 403, 413, 415, 429),
    },
    async handler(ctx, req) {
      const result = await deployAgent(ctx.agentDeps, req.principal, req.body as Uint8Array);
      return {
        status: result.created ? 201 : 200,
        body: {
          agent: agentView(result.agent),
          revision: revisionView(result.revision),
          created: result.created,
        },
      };
    },
  },
  {
    method: 'GET',
    path: '/v1/agents',
    operationId: 'listAgents',
    summary: 'List deployed agents',
    tag: 'agents',
    scope: 'read',
    responses: { 200: { description: 'Agents by name', schema: S.AgentList }, ...errors(401, 403, 429) },
    async handler(ctx, req) {
      return {
        status: 200,
        body: { agents: (await listAgents(ctx.agentDeps, req.principal)).map(agentView) },
      };
    },
  },
  {
    method: 'GET',
    path: '/v1/agents/:name',
    operationId: 'getAgent',
    summary: 'An agent with its revisions (newest first)',
    tag: 'agents',
    scope: 'read',
    params: S.AgentName,
    responses: { 200: { description: 'The agent', schema: S.AgentDetail }, ...errors(401, 403, 404, 429) },
    async handler(ctx, req) {
      const { agent, revisions } = await getAgent(ctx.agentDeps, req.principal, req.params['name']!);
      return {
        status: 200,
        body: {
          agent: agentView(agent),
          revisions: revisions.map(revisionView),
          pools: ctx.pools?.view(agent.name) ?? [],
        },
      };
    },
  },
  {
    method: 'GET',
    path: '/v1/agents/:name/revisions',
    operationId: 'listRevisions',
    summary: "An agent's revisions, newest first",
    tag: 'agents',
    scope: 'read',
    params: S.AgentName,
    responses: { 200: { description: 'Revisions', schema: S.RevisionList }, ...errors(401, 403, 404, 429) },
    async handler(ctx, req) {
      const { revisions } = await getAgent(ctx.agentDeps, req.principal, req.params['name']!);
      return { status: 200, body: { revisions: revisions.map(revisionView) } };
    },
  },
  {
    method: 'POST',
    path: '/v1/agents/:name/rollback',
    operationId: 'rollbackAgent',
    summary: 'Make an earlier revision active (default: the one before the active revision)',
    tag: 'agents',
    scope: 'deploy',
    params: S.AgentName,
    body: S.RollbackBody,
    responses: {
      200: { description: 'Rolled back', schema: S.RollbackResult },
      ...errors(400, 401, 403, 404, 409, 413, 415, 429),
    },
    async handler(ctx, req) {
      const body = (req.body ?? {}) as z.infer<typeof S.RollbackBody>;
      const result = await rollbackAgent(ctx.agentDeps, req.principal, req.params['name']!, body.revision);
      return { status: 200, body: { agent: agentView(result.agent), from: result.from } };
    },
  },
  {
    method: 'DELETE',
    path: '/v1/agents/:name',
    operationId: 'deleteAgent',
    summary: 'Delete an agent and its revisions (past executions stay)',
    tag: 'agents',
    scope: 'deploy',
    params: S.AgentName,
    responses: { 204: { description: 'Deleted' }, ...errors(401, 403, 404, 409, 429) },
    async handler(ctx, req) {
      await deleteAgent(ctx.agentDeps, req.principal, req.params['name']!);
      return { status: 204 };
    },
  },
  {
    method: 'POST',
    path: '/v1/executions',
    operationId: 'createExecution',
    summary: 'Start an execution (async; ?wait=30s holds the answer until it ends)',
    tag: 'executions',
    scope: 'execute',
    query: S.WaitQuery,
    body: S.CreateExecutionBody,
    responses: {
      202: { description: 'Accepted and queued (or running)', schema: S.Execution },
      200: { description: 'Finished within ?wait', schema: S.Execution },
      ...errors(400, 401, 403, 404, 413, 415, 429, 503),
    },
    async handler(ctx, req) {
      const wait = parseWait(req.query['wait'], 'query.wait');
      const body = req.body as S.CreateExecutionBody;
      let record = await ctx.executions.submit(req.principal, {
        agent: body.agent,
        input: body.input ?? null,
      });
      if (wait !== undefined) record = await ctx.executions.wait(req.principal, record.id, wait, req.signal);
      return {
        status: isTerminal(record.status) ? 200 : 202,
        body: executionView(record),
        headers: { location: `/v1/executions/${record.id}` },
      };
    },
  },
  {
    method: 'GET',
    path: '/v1/executions',
    operationId: 'listExecutions',
    summary: 'List executions, newest first, with cursor pagination',
    tag: 'executions',
    scope: 'read',
    query: S.ListExecutionsQuery,
    responses: { 200: { description: 'A page', schema: S.ExecutionList }, ...errors(400, 401, 403, 429) },
    async handler(ctx, req) {
      const query = req.query as z.infer<typeof S.ListExecutionsQuery>;
      const limit = query.limit ?? 50;
      const records = await ctx.executions.list(req.principal, {
        limit: limit + 1,
        ...(query.agent ? { agent: query.agent } : {}),
        ...(query.status ? { status: query.status } : {}),
        ...(query.cursor ? { after: decodeCursor(query.cursor, 'query.cursor') } : {}),
      });
      const page = records.slice(0, limit);
      const last = page.at(-1);
      return {
        status: 200,
        body: {
          executions: page.map(executionView),
          nextCursor: records.length > limit && last ? encodeCursor(last) : null,
        },
      };
    },
  },
  {
    method: 'GET',
    path: '/v1/executions/:id',
    operationId: 'getExecution',
    summary: 'One execution (?wait=30s holds the answer until it ends)',
    tag: 'executions',
    scope: 'read',
    params: S.ExecutionId,
    query: S.WaitQuery,
    responses: {
      200: { description: 'The execution', schema: S.Execution },
      ...errors(400, 401, 403, 404, 429),
    },
    async handler(ctx, req) {
      const wait = parseWait(req.query['wait'], 'query.wait');
      const id = req.params['id']!;
      const record =
        wait === undefined
          ? await ctx.executions.get(req.principal, id)
          : await ctx.executions.wait(req.principal, id, wait, req.signal);
      return { status: 200, body: executionView(record) };
    },
  },
  {
    method: 'GET',
    path: '/v1/swarms/:id',
    operationId: 'getSwarm',
    summary: 'A swarm: its root execution and every descendant, with statuses (issue 16)',
    tag: 'executions',
    scope: 'read',
    params: S.ExecutionId,
    responses: {
      200: { description: 'The tree', schema: S.SwarmTree },
      ...errors(400, 401, 403, 404, 429),
    },
    async handler(ctx, req) {
      return { status: 200, body: await ctx.executions.swarm(req.principal, req.params['id']!) };
    },
  },
  {
    method: 'POST',
    path: '/v1/executions/:id/cancel',
    operationId: 'cancelExecution',
    summary: 'Cancel a queued or running execution',
    tag: 'executions',
    scope: 'execute',
    params: S.ExecutionId,
    responses: {
      200: { description: 'The final record', schema: S.Execution },
      ...errors(401, 403, 404, 409, 429, 503),
    },
    async handler(ctx, req) {
      return {
        status: 200,
        body: executionView(await ctx.executions.cancel(req.principal, req.params['id']!)),
      };
    },
  },
  {
    method: 'GET',
    path: '/v1/executions/:id/logs',
    operationId: 'getLogs',
    summary:
      'Log lines (paged JSON), or live as Server-Sent Events with ?follow=true or Accept: text/event-stream (resume with Last-Event-ID)',
    tag: 'executions',
    scope: 'read',
    params: S.ExecutionId,
    query: S.LogsQuery,
    streaming: true,
    responses: {
      200: {
        description: 'A page of lines (JSON) or an event stream (`log` events with id = seq, then `end`)',
        schema: S.LogPage,
      },
      ...errors(400, 401, 403, 404, 429),
    },
    async handler() {
      throw new AegisError('INTERNAL', 'the logs route is served by server.ts');
    },
  },
  {
    method: 'GET',
    path: '/v1/executions/:id/audit',
    operationId: 'getExecutionAudit',
    summary:
      "The execution's audit ledger entries (hash-chained), by seq — in a cluster, from every node's chain (by node, then seq)",
    tag: 'executions',
    scope: 'read',
    params: S.ExecutionId,
    responses: { 200: { description: 'Entries', schema: S.AuditList }, ...errors(401, 403, 404, 429) },
    async handler(ctx, req) {
      const id = req.params['id']!;
      let record: Awaited<ReturnType<typeof ctx.executions.get>>;
      try {
        record = await ctx.executions.get(req.principal, id);
      } catch (error) {
        // A pruned execution is gone from the store; its ledger entries went under a checkpoint — say which.
        const pruned =
          error instanceof AegisError && error.code === 'NOT_FOUND'
            ? await ctx.audit.prunedAt?.(id)
            : undefined;
        if (pruned === undefined) throw error;
        throw prunedError(id, pruned);
      }
      // In a cluster, every node's chain (each entry names its node); else this node's ledger.
      if (ctx.clusterAudit !== undefined) await ctx.audit.flush(); // it reads what is stored, not buffered
      const entries = await (ctx.clusterAudit ?? ctx.audit).list(record.id);
      if (entries.length === 0) {
        const pruned = await ctx.audit.prunedAt?.(record.id);
        if (pruned !== undefined) throw prunedError(record.id, pruned);
      }
      return { status: 200, body: { entries } };
    },
  },
  {
    method: 'POST',
    path: '/v1/admin/prune',
    operationId: 'prune',
    summary:
      "Remove finished executions, logs, ended sandbox records and (under a signed checkpoint) ledger entries older than a window — the server's --retain policy by default",
    tag: 'keys',
    scope: 'admin',
    body: S.PruneBody,
    responses: {
      200: {
        description: 'What was removed (or would be, dryRun) and what was kept and why',
        schema: S.PruneReport,
      },
      ...errors(400, 401, 403, 413, 415, 429, 503),
    },
    async handler(ctx, req) {
      requireScope(req.principal, 'admin', 'pruning');
      if (ctx.prune === undefined) throw new AegisError('RUNTIME_UNAVAILABLE', 'this server cannot prune');
      const body = (req.body ?? {}) as S.PruneBody;
      const window = (text: string | undefined, where: string) => {
        if (text === undefined) return undefined;
        const parsed = parseRetention(text);
        if (!parsed.ok)
          throw new AegisError('USAGE', `${where}: ${parsed.error}`, { hint: 'e.g. "30d", "12h", "2w"' });
        return parsed.value;
      };
      const executionsMs = window(body.olderThan, 'body.olderThan');
      const logsMs = window(body.logsOlderThan, 'body.logsOlderThan');
      const auditMs = window(body.auditOlderThan, 'body.auditOlderThan');
      const policy =
        executionsMs === undefined && logsMs === undefined && auditMs === undefined
          ? undefined
          : retentionPolicy({
              ...(executionsMs === undefined ? {} : { executionsMs }),
              ...(logsMs === undefined ? {} : { logsMs }),
              ...(auditMs === undefined ? {} : { auditMs }),
            });
      const report = await ctx.prune({ policy, dryRun: body.dryRun === true, by: req.principal.id });
      return { status: 200, body: report };
    },
  },
  {
    method: 'POST',
    path: '/v1/keys',
    operationId: 'createKey',
    summary: 'Create an API key (the key text is in this answer only)',
    tag: 'keys',
    scope: 'admin',
    body: S.CreateKeyBody,
    responses: {
      201: { description: 'Created', schema: S.CreatedKey },
      ...errors(400, 401, 403, 413, 415, 429),
    },
    async handler(ctx, req) {
      const body = req.body as S.CreateKeyBody;
      requireScope(req.principal, 'admin', 'creating API keys');
      const created = await createApiKey(ctx.keyDeps, req.principal, {
        name: body.name,
        scopes: body.scopes,
        rateLimit: body.rate === undefined ? null : parseRateLimit(body.rate, 'body.rate'),
      });
      return { status: 201, body: created };
    },
  },
  {
    method: 'GET',
    path: '/v1/keys',
    operationId: 'listKeys',
    summary: 'List API keys (never their text or hash)',
    tag: 'keys',
    scope: 'admin',
    responses: { 200: { description: 'Keys, oldest first', schema: S.KeyList }, ...errors(401, 403, 429) },
    async handler(ctx, req) {
      return { status: 200, body: { keys: await listApiKeys(ctx.keyDeps, req.principal) } };
    },
  },
  {
    method: 'DELETE',
    path: '/v1/keys/:id',
    operationId: 'revokeKey',
    summary: 'Revoke an API key',
    tag: 'keys',
    scope: 'admin',
    params: S.ExecutionId,
    responses: { 200: { description: 'The revoked key', schema: S.ApiKey }, ...errors(401, 403, 404, 429) },
    async handler(ctx, req) {
      return { status: 200, body: await revokeApiKey(ctx.keyDeps, req.principal, req.params['id']!) };
    },
  },
  {
    method: 'POST',
    path: '/v1/edge/tokens',
    operationId: 'createEdgeToken',
    summary:
      'Create a single-use edge enrolment token (`aegis edge join --token`; the text is in this answer only)',
    tag: 'edge',
    scope: 'admin',
    body: S.CreateEdgeTokenBody,
    responses: {
      201: { description: 'Created', schema: S.CreatedEdgeToken },
      ...errors(400, 401, 403, 413, 415, 429, 503),
    },
    async handler(ctx, req) {
      const body = req.body as S.CreateEdgeTokenBody;
      let ttlMs: number | undefined;
      if (body.ttl !== undefined) {
        const parsed = parseDuration(body.ttl);
        if (!parsed.ok) throw new AegisError('USAGE', `body.ttl: ${parsed.error}`);
        ttlMs = parsed.value;
      }
      const created = await edgeOf(ctx).nodes.createToken(req.principal, {
        ...(body.labels ? { labels: body.labels } : {}),
        ...(ttlMs === undefined ? {} : { ttlMs }),
      });
      return { status: 201, body: created };
    },
  },
  {
    method: 'GET',
    path: '/v1/edge/nodes',
    operationId: 'listEdgeNodes',
    summary: 'Enrolled edge nodes, oldest first, revoked ones included, with their connection state',
    tag: 'edge',
    scope: 'admin',
    responses: {
      200: { description: 'Edge nodes', schema: S.EdgeNodeList },
      ...errors(401, 403, 429, 503),
    },
    async handler(ctx, req) {
      const edge = edgeOf(ctx);
      const view = edge.view();
      const nodes = (await edge.nodes.list(req.principal)).map((n) => edgeNodeView(n, view.get(n.id)));
      return { status: 200, body: { nodes } };
    },
  },
  {
    method: 'DELETE',
    path: '/v1/edge/nodes/:id',
    operationId: 'revokeEdgeNode',
    summary: 'Revoke an edge node: its connection is cut at once and it can never reconnect',
    tag: 'edge',
    scope: 'admin',
    params: S.ExecutionId,
    responses: {
      200: { description: 'The revoked edge', schema: S.EdgeNode },
      ...errors(401, 403, 404, 429, 503),
    },
    async handler(ctx, req) {
      const edge = edgeOf(ctx);
      const record = await edge.nodes.revoke(req.principal, req.params['id']!);
      return { status: 200, body: edgeNodeView(record, edge.view().get(record.id)) };
    },
  },
  {
    method: 'GET',
    path: '/v1/approvals',
    operationId: 'listApprovals',
    summary:
      'Tool calls waiting for a human decision (of sandboxes and executions the key owns; all for admin)',
    tag: 'approvals',
    scope: 'read',
    responses: {
      200: { description: 'Pending approvals, oldest first, with the arguments', schema: S.ApprovalList },
      ...errors(401, 403, 429, 503),
    },
    async handler(ctx, req) {
      return { status: 200, body: { approvals: approvalsOf(ctx).list(req.principal) } };
    },
  },
  ...(['approve', 'deny'] as const).map(
    (verb): Route => ({
      method: 'POST',
      path: `/v1/approvals/:id/${verb}`,
      operationId: `${verb}ToolCall`,
      summary: `${verb === 'approve' ? 'Approve' : 'Deny'} a pending tool call (the waiting call then ${verb === 'approve' ? 'runs' : 'is refused with the key id'})`,
      tag: 'approvals',
      scope: 'execute',
      params: S.ExecutionId,
      responses: {
        200: { description: 'Decided', schema: S.ApprovalDecided },
        ...errors(401, 403, 404, 429, 503),
      },
      async handler(ctx, req) {
        const approvals = approvalsOf(ctx);
        const id = req.params['id']!;
        const approval =
          verb === 'approve' ? approvals.approve(req.principal, id) : approvals.deny(req.principal, id);
        return { status: 200, body: { decision: verb === 'approve' ? 'approved' : 'denied', approval } };
      },
    }),
  ),
  {
    method: 'GET',
    path: '/v1/nodes',
    operationId: 'listNodes',
    summary: 'The cluster: every registered node (server and edge) with its state, capacity and heartbeat',
    tag: 'cluster',
    scope: 'read',
    responses: { 200: { description: 'Nodes by id', schema: S.NodeList }, ...errors(401, 403, 429) },
    async handler(ctx, req) {
      return { status: 200, body: { nodes: await listNodes(ctx, req.principal) } };
    },
  },
  ...MEMORY_ROUTES,
];

/** GET /v1/nodes and gRPC ListNodes: the registry, with each heartbeat's age by this server's clock. */
export async function listNodes(ctx: ApiContext, principal: Principal): Promise<S.Node[]> {
  requireScope(principal, 'read', 'listing the cluster nodes');
  const now = ctx.clock.now();
  return (await ctx.store.listNodes()).map((n) => ({
    id: n.id,
    kind: n.kind,
    state: n.state,
    host: n.host,
    version: n.version,
    labels: { ...n.labels },
    runtimes: [...n.runtimes],
    capacity: n.capacity,
    running: n.running,
    epoch: n.epoch,
    startedAt: n.startedAt,
    heartbeatAt: n.heartbeatAt,
    leaseExpiresAt: n.leaseExpiresAt,
    heartbeatAgeMs: Math.max(0, Math.round(now - Date.parse(n.heartbeatAt))),
  }));
}

function prunedError(id: string, checkpoint: { seq: number; ts: string; archive: string }): AegisError {
  return new AegisError(
    'NOT_FOUND',
    `execution ${id} was pruned: its audit entries were archived and dropped at ledger checkpoint ${checkpoint.seq} (${checkpoint.ts})`,
    {
      hint: `they are in the ledger archive ${checkpoint.archive} on the server (aegis audit verify --archive checks it)`,
      details: { id, prunedAtCheckpoint: checkpoint.seq, archive: checkpoint.archive },
    },
  );
}

function edgeOf(ctx: ApiContext): NonNullable<ApiContext['edge']> {
  if (ctx.edge === undefined) throw new AegisError('RUNTIME_UNAVAILABLE', 'this server takes no edge nodes');
  return ctx.edge;
}

function edgeNodeView(
  record: EdgeNodeRecord,
  state: { connected: boolean; running: number } | undefined,
): S.EdgeNode {
  return {
    id: record.id,
    labels: { ...record.labels },
    runtimes: [...record.runtimes],
    capacity: record.capacity,
    enrolledAt: record.enrolledAt,
    revokedAt: record.revokedAt,
    connected: state?.connected ?? false,
    running: state?.running ?? 0,
  };
}

function approvalsOf(ctx: ApiContext): NonNullable<ApiContext['approvals']> {
  if (ctx.approvals === undefined) {
    throw new AegisError('RUNTIME_UNAVAILABLE', 'this server has no tool gateway, so no approvals');
  }
  return ctx.approvals;
}
