/**
 * The gRPC API (`aegis.v1.AgentService`, `aegis.v1.ExecutionService`, `aegis.v1.SandboxService`,
 * `aegis.v1.NodeService`, proto/aegis/v1) over the same use-cases as REST. Served with Connect, so one route answers gRPC, gRPC-Web and the Connect protocol.
 *
 * Every call passes `ctx.gate.admit` first (the `authorization` header; the unix socket is trusted — the transport
 * comes from the `kTransport` context value the server sets per request). Errors leave as ConnectError: the code
 * from `ERROR_CODES[code].grpcCode`, the AegisError's message, and `{code, retryable, hint, problems, details}` as
 * JSON in the `aegis-error-details` header/trailer. Anything else is `internal` with a generic message.
 */
import { create } from '@bufbuild/protobuf';
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createContextKey,
  type HandlerContext,
} from '@connectrpc/connect';
import { deleteAgent, deployAgent, getAgent, listAgents, rollbackAgent } from '../../app/agents.ts';
import { followLogs } from '../../app/follow-logs.ts';
import type { ListExecutionsQuery } from '../../app/ports.ts';
import { type Principal, requireScope } from '../../domain/auth/api-key.ts';
import type { AgentRevision as AgentRevisionRecord, AgentSummary } from '../../domain/deployment.ts';
import { AegisError, ERROR_CODES } from '../../domain/errors.ts';
import {
  type ExecutionRecord,
  type ExecutionStatus,
  type LogLine as LogLineRecord,
  MAX_EXECUTIONS_PAGE,
  TERMINAL_STATUSES,
} from '../../domain/execution.ts';
import type { ApiContext } from '../context.ts';
import { decodeCursor, encodeCursor } from '../cursor.ts';
import { publicError, type ServerPath } from '../errors.ts';
import { listNodes } from '../http/routes.ts';
import {
  type Agent,
  type AgentRevision as AgentRevisionMessage,
  AgentRevisionSchema,
  AgentSchema,
  AgentService,
} from './gen/aegis/v1/agents_pb.ts';
import {
  type Execution,
  ExecutionSchema,
  ExecutionService,
  type LogLine as LogLineMessage,
  LogLineSchema,
} from './gen/aegis/v1/executions_pb.ts';
import { NodeService } from './gen/aegis/v1/nodes_pb.ts';
import { SandboxService } from './gen/aegis/v1/sandboxes_pb.ts';
import { sandboxServiceImpl } from './sandboxes.ts';

/** How the request arrived; the server sets it per request (`contextValues`). Default: TCP, which needs a key. */
export const kTransport = createContextKey<'tcp' | 'unix'>('tcp');

/** Response header (unary, Connect) or trailer (gRPC streams) with an AegisError's hint, problems and details. */
export const ERROR_DETAILS_HEADER = 'aegis-error-details';

/** Longest `wait_ms` honoured, as REST's `?wait=` (5 minutes). */
const MAX_WAIT_MS = 300_000;
const DEFAULT_LIST_LIMIT = 50;
const MAX_LIST_LIMIT = MAX_EXECUTIONS_PAGE;
const STATUSES: readonly ExecutionStatus[] = ['created', 'queued', 'running', ...TERMINAL_STATUSES];

export interface GrpcServicesOptions {
  /** Hears every error that became `internal` (a bug): log it. The client only sees a generic message. */
  readonly onInternalError?: (error: unknown, procedure: string) => void;
}

export function registerGrpcServices(
  router: ConnectRouter,
  ctx: ApiContext,
  options: GrpcServicesOptions = {},
): void {
  const fail = (error: unknown, call: HandlerContext): ConnectError => {
    const mapped = toConnectError(error, ctx.serverPaths);
    if (mapped.code === Code.Internal && !(error instanceof ConnectError)) {
      options.onInternalError?.(error, `${call.service.typeName}/${call.method.name}`);
    }
    return mapped;
  };
  /** A unary handler: admit, run, map errors. */
  const unary =
    <I, O>(run: (request: I, principal: Principal, call: HandlerContext) => Promise<O>) =>
    async (request: I, call: HandlerContext): Promise<O> => {
      try {
        return await run(request, await admit(ctx, call), call);
      } catch (error) {
        throw fail(error, call);
      }
    };

  router.service(AgentService, {
    listAgents: unary(async (_request, principal) => ({
      agents: (await listAgents(ctx.agentDeps, principal)).map(toAgent),
    })),
    getAgent: unary(async (request, principal) => {
      const detail = await getAgent(ctx.agentDeps, principal, required(request.name, 'name'));
      return {
        agent: toAgent(detail.agent),
        revisions: detail.revisions.map(toRevision),
        pools: (ctx.pools?.view(detail.agent.name) ?? []).map((pool) => ({
          ...pool,
          idleTimeoutMs: BigInt(pool.idleTimeoutMs),
        })),
      };
    }),
    listRevisions: unary(async (request, principal) => {
      const detail = await getAgent(ctx.agentDeps, principal, required(request.name, 'name'));
      return { revisions: detail.revisions.map(toRevision) };
    }),
    deploy: unary(async (request, principal) => {
      const result = await deployAgent(ctx.agentDeps, principal, request.bundle);
      return { agent: toAgent(result.agent), revision: toRevision(result.revision), created: result.created };
    }),
    rollback: unary(async (request, principal) => {
      const result = await rollbackAgent(
        ctx.agentDeps,
        principal,
        required(request.name, 'name'),
        request.revision,
      );
      return { agent: toAgent(result.agent), from: result.from };
    }),
    deleteAgent: unary(async (request, principal) => {
      await deleteAgent(ctx.agentDeps, principal, required(request.name, 'name'));
      return {};
    }),
  });

  router.service(ExecutionService, {
    createExecution: unary(async (request, principal, call) => {
      const waitMs = waitOf(request.waitMs);
      const record = await ctx.executions.submit(principal, {
        agent: required(request.agent, 'agent'),
        input: parseInput(request.inputJson),
      });
      return toExecution(
        waitMs > 0 ? await ctx.executions.wait(principal, record.id, waitMs, call.signal) : record,
      );
    }),
    getExecution: unary(async (request, principal, call) => {
      const id = required(request.id, 'id');
      const waitMs = waitOf(request.waitMs);
      return toExecution(
        waitMs > 0
          ? await ctx.executions.wait(principal, id, waitMs, call.signal)
          : await ctx.executions.get(principal, id),
      );
    }),
    listExecutions: unary(async (request, principal) => {
      const limit = request.limit ?? DEFAULT_LIST_LIMIT;
      if (limit < 1 || limit > MAX_LIST_LIMIT) {
        throw new AegisError('USAGE', `limit: ${limit} is out of range; pass 1 to ${MAX_LIST_LIMIT}`);
      }
      const status = request.status;
      if (status !== undefined && !(STATUSES as readonly string[]).includes(status)) {
        throw new AegisError('USAGE', `status: unknown status "${status}"`, {
          hint: `one of ${STATUSES.join(', ')}`,
        });
      }
      // One more than asked: whether it comes back says if there is a next page (as REST).
      const query: ListExecutionsQuery = {
        limit: limit + 1,
        ...(request.agent !== undefined && { agent: request.agent }),
        ...(status !== undefined && { status: status as ExecutionStatus }),
        ...(request.cursor !== undefined && { after: decodeCursor(request.cursor, 'cursor') }),
      };
      const records = await ctx.executions.list(principal, query);
      const page = records.slice(0, limit);
      const last = page.at(-1);
      return {
        executions: page.map(toExecution),
        ...(records.length > limit && last !== undefined && { nextCursor: encodeCursor(last) }),
      };
    }),
    cancelExecution: unary(async (request, principal) =>
      toExecution(await ctx.executions.cancel(principal, required(request.id, 'id'))),
    ),
    async *streamLogs(request, call) {
      try {
        const principal = await admit(ctx, call);
        requireScope(principal, 'read', "reading an execution's logs");
        const stream = followLogs(
          { store: ctx.store, events: ctx.events, clock: ctx.clock },
          required(request.executionId, 'execution_id'),
          { afterSeq: Number(request.afterSeq), follow: request.follow, signal: call.signal },
        );
        for await (const item of stream) {
          yield item.type === 'line'
            ? { event: { case: 'line', value: toLogLine(item.line) } }
            : { event: { case: 'end', value: toExecution(item.execution) } };
        }
      } catch (error) {
        throw fail(error, call);
      }
    },
  });

  router.service(
    SandboxService,
    sandboxServiceImpl(ctx, unary, (call) => admit(ctx, call), fail),
  );

  router.service(NodeService, {
    listNodes: unary(async (_request, principal) => ({
      nodes: (await listNodes(ctx, principal)).map((node) => ({
        ...node,
        epoch: BigInt(node.epoch),
        heartbeatAgeMs: BigInt(node.heartbeatAgeMs),
      })),
    })),
  });
}

function admit(ctx: ApiContext, call: HandlerContext): Promise<Principal> {
  return ctx.gate.admit({
    transport: call.values.get(kTransport),
    authorization: call.requestHeader.get('authorization') ?? undefined,
  });
}

/** AegisError → its gRPC code and message (details in `aegis-error-details`); anything else → a generic internal. */
export function toConnectError(unsafe: unknown, serverPaths: readonly ServerPath[] = []): ConnectError {
  if (unsafe instanceof ConnectError) return unsafe;
  if (unsafe instanceof AegisError) {
    const error = publicError(unsafe, serverPaths);
    const info = ERROR_CODES[error.code];
    const body = {
      code: error.code,
      retryable: info.retryable,
      ...(error.hint !== undefined && { hint: error.hint }),
      ...(error.problems.length > 0 && { problems: error.problems }),
      ...(Object.keys(error.details).length > 0 && { details: error.details }),
    };
    const metadata = new Headers({ [ERROR_DETAILS_HEADER]: asciiJson(body) });
    return new ConnectError(error.message, info.grpcCode as Code, metadata, undefined, unsafe);
  }
  return new ConnectError(
    'internal error: the server failed to handle this request',
    Code.Internal,
    undefined,
    undefined,
    unsafe,
  );
}

/** JSON with every non-ASCII character escaped (`\u2026`): still the same JSON, and a valid header value. */
function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[\u007f-\uffff]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

function required(value: string, field: string): string {
  if (value === '') throw new AegisError('USAGE', `${field}: required`);
  return value;
}

function waitOf(waitMs: number | undefined): number {
  if (waitMs === undefined) return 0;
  if (waitMs > MAX_WAIT_MS) {
    throw new AegisError('USAGE', `wait_ms: ${waitMs} is more than ${MAX_WAIT_MS} (5 minutes)`, {
      hint: 'wait in several calls, or stream the logs with StreamLogs(follow: true)',
    });
  }
  return waitMs;
}

/** `input_json`: JSON text, or empty for no input. */
function parseInput(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new AegisError(
      'USAGE',
      `input_json: not JSON (${error instanceof Error ? error.message : String(error)})`,
      {
        hint: 'send the input as JSON text, e.g. {"text":"hello"}, or leave input_json empty for none',
      },
    );
  }
}

function toRevision(revision: AgentRevisionRecord): AgentRevisionMessage {
  return create(AgentRevisionSchema, {
    agent: revision.agent,
    revision: revision.revision,
    version: revision.version,
    digest: revision.digest,
    sizeBytes: BigInt(revision.sizeBytes),
    ...(revision.description !== null && { description: revision.description }),
    createdAt: revision.createdAt,
    deployedBy: revision.deployedBy,
  });
}

function toAgent(summary: AgentSummary): Agent {
  return create(AgentSchema, {
    name: summary.name,
    activeRevision: summary.activeRevision,
    active: toRevision(summary.active),
    revisions: summary.revisions,
    createdAt: summary.createdAt,
    updatedAt: summary.updatedAt,
  });
}

export function toExecution(record: ExecutionRecord): Execution {
  return create(ExecutionSchema, {
    id: record.id,
    agent: {
      name: record.agent.name,
      version: record.agent.version,
      ...(typeof record.agent.revision === 'number' && { revision: record.agent.revision }),
    },
    runtime: record.runtime,
    status: record.status,
    ...(record.exitCode !== null && { exitCode: record.exitCode }),
    ...(record.reason !== null && { reason: record.reason }),
    inputJson: JSON.stringify(record.input ?? null),
    outputJson: JSON.stringify(record.output ?? null),
    violations: record.violations.map((violation) => ({
      kind: violation.kind,
      rule: violation.rule,
      message: violation.message,
      ...(violation.count !== undefined && { count: violation.count }),
    })),
    createdAt: record.createdAt,
    ...(record.startedAt !== null && { startedAt: record.startedAt }),
    ...(record.finishedAt !== null && { finishedAt: record.finishedAt }),
    ...(record.durationMs !== null && { durationMs: record.durationMs }),
    usage: {
      ...(record.usage?.llm && {
        llm: {
          calls: BigInt(record.usage.llm.calls),
          inputTokens: BigInt(record.usage.llm.inputTokens),
          outputTokens: BigInt(record.usage.llm.outputTokens),
          usd: record.usage.llm.usd,
        },
      }),
    },
    ...(record.parentId !== undefined && { parentId: record.parentId }),
    ...(record.rootId !== undefined && { rootId: record.rootId }),
    ...(record.node !== undefined && { node: record.node }),
  });
}

function toLogLine(line: LogLineRecord): LogLineMessage {
  return create(LogLineSchema, { seq: BigInt(line.seq), ts: line.ts, stream: line.stream, text: line.text });
}
