/**
 * AEGIS as an MCP server (docs/adr/0081-aegis-as-an-mcp-server.md): every deployed agent's active revision is a
 * tool (name = agent name, inputSchema = spec.input), and executions and their logs are read-only resources.
 *
 * One `Server` (the official SDK) per request and principal: nothing is kept between requests, so `/mcp` is served
 * stateless (no session id) and every call is authorised by the key that made it. Calling a tool goes through the
 * same use-case as POST /v1/executions (queue, limits, ledger, spec.input); the scope checks are the use-cases' own.
 */
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import {
  CallToolRequestSchema,
  type CallToolResult,
  ErrorCode,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  ReadResourceRequestSchema,
  type Tool,
} from '@modelcontextprotocol/sdk/types.js';
import { listAgents } from '../../app/agents.ts';
import type { Principal } from '../../domain/auth/api-key.ts';
import { isAgentName } from '../../domain/deployment.ts';
import { AegisError } from '../../domain/errors.ts';
import { type ExecutionRecord, isTerminal } from '../../domain/execution.ts';
import type { ApiContext } from '../context.ts';
import { publicError, toAegisError } from '../errors.ts';
import { executionView } from '../http/schemas.ts';

export const MCP_SERVER_NAME = 'aegis';

/** The longest a tool call waits for its execution; past it the result names the execution to read later. */
export const MCP_CALL_WAIT_MS = 10 * 60_000;
/** Executions listed by resources/list (newest first). */
export const MCP_LISTED_EXECUTIONS = 50;
/** Log lines returned by one resources/read of `…/logs`. */
export const MCP_LOG_LINES = 1000;

const EXECUTION_URI = /^aegis:\/\/executions\/([A-Za-z0-9_-]{1,100})(\/logs)?$/;

export const executionUri = (id: string) => `aegis://executions/${id}`;

/** JSON-RPC error codes for AEGIS refusals that are not about the arguments (auth, limits, state). */
const SERVER_ERROR = -32000;

/**
 * A JSON-RPC error for the SDK to send: `code`, `message` and `data` are what it reads. (McpError would prefix its
 * message with "MCP error <code>:", which the client's McpError adds again.)
 */
export class RpcError extends Error {
  readonly code: number;
  readonly data: unknown;
  constructor(code: number, message: string, data?: unknown) {
    super(message);
    this.code = code;
    this.data = data;
  }
}

/** An AegisError as a JSON-RPC error: the code and hint travel in `data`, internals stay out (publicError). */
function toRpcError(error: unknown, ctx: ApiContext, log: McpServerOptions['log']): RpcError {
  if (error instanceof RpcError) return error;
  const aegis = toAegisError(error);
  if (aegis.code === 'INTERNAL')
    log?.({ level: 'error', msg: 'mcp request failed', error: String((error as Error)?.stack ?? error) });
  const safe = publicError(aegis, ctx.serverPaths ?? []);
  const rpcCode = safe.code === 'NOT_FOUND' || safe.code === 'USAGE' ? ErrorCode.InvalidParams : SERVER_ERROR;
  return new RpcError(rpcCode, `${safe.code}: ${safe.message}`, {
    code: safe.code,
    ...(safe.hint ? { hint: safe.hint } : {}),
  });
}

/** What a model reads back from a finished execution. */
export function toolResult(record: ExecutionRecord): CallToolResult {
  const link = {
    type: 'resource_link' as const,
    uri: executionUri(record.id),
    name: `execution ${record.id}`,
    mimeType: 'application/json',
  };
  const meta = { 'aegis.dev/execution': record.id, 'aegis.dev/status': record.status };
  if (record.status !== 'succeeded') {
    const why = record.reason ?? (record.exitCode === null ? record.status : `exit code ${record.exitCode}`);
    const still = !isTerminal(record.status);
    return {
      isError: true,
      content: [
        {
          type: 'text',
          text: still
            ? `execution ${record.id} of ${record.agent.name} is still ${record.status}; read ${executionUri(record.id)} later`
            : `execution ${record.id} of ${record.agent.name} ${record.status}: ${why}; its logs are at ${executionUri(record.id)}/logs`,
        },
        link,
      ],
      _meta: meta,
    };
  }
  const output = record.output;
  const text = typeof output === 'string' ? output : JSON.stringify(output ?? null);
  const structured =
    output !== null && typeof output === 'object' && !Array.isArray(output)
      ? { structuredContent: output as Record<string, unknown> }
      : {};
  return { content: [{ type: 'text', text }, link], ...structured, _meta: meta };
}

/** A fresh MCP server bound to one authenticated principal (one request in stateless HTTP). */
export interface McpServerOptions {
  /** Reported as serverInfo.version. */
  readonly version: string;
  /** Where internal errors are logged (their details never reach the client). */
  readonly log?: (entry: Record<string, unknown>) => void;
}

export function createMcpServer(ctx: ApiContext, principal: Principal, options: McpServerOptions): Server {
  const server = new Server(
    { name: MCP_SERVER_NAME, version: options.version, title: 'AEGIS deployed agents' },
    {
      capabilities: { tools: {}, resources: {} },
      instructions:
        'Each tool runs one deployed AEGIS agent in a sandbox and returns its output. Executions and their logs are resources (aegis://executions/{id}, …/logs).',
    },
  );
  const guarded =
    <A extends unknown[], R>(handler: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      try {
        return await handler(...args);
      } catch (error) {
        throw toRpcError(error, ctx, options.log);
      }
    };

  server.setRequestHandler(
    ListToolsRequestSchema,
    guarded(async () => {
      const agents = await listAgents(ctx.agentDeps, principal);
      const tools: Tool[] = [];
      for (const summary of agents) {
        const agent = await ctx.executions.compiledAgent(summary.active);
        const description =
          summary.active.description ??
          `AEGIS agent ${summary.name} (revision ${summary.activeRevision}, version ${summary.active.version})`;
        tools.push({
          name: summary.name,
          title: summary.name,
          description,
          inputSchema: (agent.input ?? { type: 'object' }) as Tool['inputSchema'],
          _meta: {
            'aegis.dev/revision': summary.activeRevision,
            'aegis.dev/version': summary.active.version,
          },
        });
      }
      return { tools };
    }),
  );

  server.setRequestHandler(
    CallToolRequestSchema,
    guarded(async (request, extra): Promise<CallToolResult> => {
      const name = request.params.name;
      if (!isAgentName(name)) {
        throw new RpcError(ErrorCode.InvalidParams, `no tool "${name.slice(0, 100)}": tools are agent names`);
      }
      let record: ExecutionRecord;
      try {
        record = await ctx.executions.submit(principal, {
          agent: name,
          input: request.params.arguments ?? {},
        });
      } catch (error) {
        // A bad input is the model's to fix: say so as a tool error it can read (MCP: input validation errors are
        // tool execution errors). Everything else (scope, unknown agent, full queue) is a protocol error.
        if (error instanceof AegisError && error.code === 'USAGE') {
          const safe = publicError(error, ctx.serverPaths ?? []);
          return {
            isError: true,
            content: [{ type: 'text', text: `${safe.message}${safe.hint ? ` (${safe.hint})` : ''}` }],
          };
        }
        throw error;
      }
      record = await ctx.executions.wait(principal, record.id, MCP_CALL_WAIT_MS, extra.signal);
      return toolResult(record);
    }),
  );

  server.setRequestHandler(
    ListResourcesRequestSchema,
    guarded(async () => {
      const records = await ctx.executions.list(principal, { limit: MCP_LISTED_EXECUTIONS });
      return {
        resources: records.map((record) => ({
          uri: executionUri(record.id),
          name: `${record.agent.name} ${record.id}`,
          description: `execution of ${record.agent.name}: ${record.status}, created ${record.createdAt}`,
          mimeType: 'application/json',
        })),
      };
    }),
  );

  server.setRequestHandler(
    ListResourceTemplatesRequestSchema,
    guarded(async () => ({
      resourceTemplates: [
        {
          uriTemplate: 'aegis://executions/{id}',
          name: 'execution',
          description: 'One execution record (status, input, output, violations), as GET /v1/executions/{id}',
          mimeType: 'application/json',
        },
        {
          uriTemplate: 'aegis://executions/{id}/logs',
          name: 'execution logs',
          description: `The first ${MCP_LOG_LINES} log lines of an execution (stream, text)`,
          mimeType: 'application/json',
        },
      ],
    })),
  );

  server.setRequestHandler(
    ReadResourceRequestSchema,
    guarded(async (request) => {
      const uri = request.params.uri;
      const match = EXECUTION_URI.exec(uri);
      if (match === null) {
        throw new RpcError(
          ErrorCode.InvalidParams,
          `unknown resource ${uri.slice(0, 200)}: AEGIS serves aegis://executions/{id} and aegis://executions/{id}/logs`,
        );
      }
      const record = await ctx.executions.get(principal, match[1]!);
      if (match[2] === undefined) {
        return {
          contents: [{ uri, mimeType: 'application/json', text: JSON.stringify(executionView(record)) }],
        };
      }
      const lines = await ctx.store.readLogs(record.id, { afterSeq: 0, limit: MCP_LOG_LINES });
      const body = {
        status: record.status,
        lines: lines.map((line) => ({ seq: line.seq, stream: line.stream, text: line.text })),
        truncated: lines.length === MCP_LOG_LINES,
      };
      return { contents: [{ uri, mimeType: 'application/json', text: JSON.stringify(body) }] };
    }),
  );
  return server;
}
