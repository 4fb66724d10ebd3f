/**
 * `aegis mcp`: an MCP server on stdin/stdout for hosts that spawn their servers (Claude Desktop, IDEs), bridging to
 * the configured AEGIS server's `/mcp` (--server / AEGIS_SERVER, key from AEGIS_API_KEY or --api-key-file). Tools
 * and resources are the server's, so both transports list and run exactly the same thing under the same key's
 * scopes, limits and ledger. Nothing but MCP messages goes to stdout; diagnostics go to stderr.
 */
import { request as httpRequest } from 'node:http';
import { Readable } from 'node:stream';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import type { FetchLike } from '@modelcontextprotocol/sdk/shared/transport.js';
import {
  CallToolRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  ReadResourceRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';
import { MCP_CALL_WAIT_MS, MCP_SERVER_NAME, RpcError } from '../../api/mcp/server.ts';
import { AegisError } from '../../domain/errors.ts';
import { AEGIS_VERSION } from '../../main.ts';
import { type ServerFlags, withServer } from './connect.ts';

/** fetch over a unix socket (`unix:/path/aegis.sock`): the socket is trusted, so no key is sent. */
function unixFetch(socketPath: string): FetchLike {
  return async (url, init) => {
    const target = new URL(url);
    const headers = Object.fromEntries(new Headers(init?.headers).entries());
    const body = init?.body === undefined || init.body === null ? undefined : String(init.body);
    return new Promise<Response>((resolve, reject) => {
      const req = httpRequest(
        { socketPath, path: target.pathname + target.search, method: init?.method ?? 'GET', headers },
        (res) => {
          const out = new Headers();
          for (const [name, value] of Object.entries(res.headers)) {
            if (value !== undefined) out.set(name, Array.isArray(value) ? value.join(', ') : value);
          }
          const empty = res.statusCode === 202 || res.statusCode === 204;
          if (empty) res.resume();
          resolve(
            new Response(empty ? null : (Readable.toWeb(res) as ReadableStream), {
              status: res.statusCode ?? 500,
              headers: out,
            }),
          );
        },
      );
      req.once('error', reject);
      init?.signal?.addEventListener('abort', () => req.destroy(new Error('aborted')), { once: true });
      req.end(body);
    });
  };
}

/** Errors of the upstream HTTP transport (401, 429, connection refused) as JSON-RPC errors the host can show. */
function asRpcError(error: unknown): RpcError {
  if (error instanceof McpError) {
    // The client's McpError prefixes "MCP error <code>: "; pass the server's own message on unchanged.
    return new RpcError(error.code, error.message.replace(/^MCP error -?\d+: /, ''), error.data);
  }
  return new RpcError(-32000, `AEGIS server: ${(error as Error)?.message ?? String(error)}`);
}

export async function commandMcp(options: Pick<ServerFlags, 'server' | 'apiKeyFile'>): Promise<number> {
  return withServer(options, async (connection) => {
    const unix = connection.server.startsWith('unix:');
    const endpoint = unix
      ? new URL('http://localhost/mcp')
      : new URL(`${connection.server.replace(/\/+$/, '')}/mcp`);
    const upstreamTransport = new StreamableHTTPClientTransport(endpoint, {
      ...(unix ? { fetch: unixFetch(connection.server.slice('unix:'.length).replace(/^\/\//, '')) } : {}),
      ...(connection.apiKey !== undefined && !unix
        ? { requestInit: { headers: { authorization: `Bearer ${connection.apiKey}` } } }
        : {}),
    });
    const upstream = new Client({ name: 'aegis-mcp-stdio', version: AEGIS_VERSION });
    try {
      await upstream.connect(upstreamTransport);
    } catch (error) {
      throw new AegisError(
        'UNAVAILABLE',
        `cannot reach the MCP endpoint of ${connection.server}: ${(error as Error).message}`,
        {
          cause: error,
          hint: 'is `aegis server` running there, and is AEGIS_API_KEY (or --api-key-file) a valid key?',
        },
      );
    }
    const upstreamInfo = upstream.getServerVersion();
    const server = new Server(
      {
        name: MCP_SERVER_NAME,
        version: upstreamInfo?.version ?? AEGIS_VERSION,
        title: 'AEGIS deployed agents',
      },
      {
        capabilities: { tools: {}, resources: {} },
        ...(upstream.getInstructions() ? { instructions: upstream.getInstructions()! } : {}),
      },
    );
    const forward =
      <R>(call: (signal: AbortSignal) => Promise<R>) =>
      async (_request: unknown, extra: { signal: AbortSignal }): Promise<R> => {
        try {
          return await call(extra.signal);
        } catch (error) {
          throw asRpcError(error);
        }
      };
    server.setRequestHandler(ListToolsRequestSchema, (request, extra) =>
      forward((signal) => upstream.listTools(request.params, { signal }))(request, extra),
    );
    server.setRequestHandler(CallToolRequestSchema, (request, extra) =>
      forward((signal) =>
        upstream.callTool(request.params, undefined, { signal, timeout: MCP_CALL_WAIT_MS + 30_000 }),
      )(request, extra),
    );
    server.setRequestHandler(ListResourcesRequestSchema, (request, extra) =>
      forward((signal) => upstream.listResources(request.params, { signal }))(request, extra),
    );
    server.setRequestHandler(ListResourceTemplatesRequestSchema, (request, extra) =>
      forward((signal) => upstream.listResourceTemplates(request.params, { signal }))(request, extra),
    );
    server.setRequestHandler(ReadResourceRequestSchema, (request, extra) =>
      forward((signal) => upstream.readResource(request.params, { signal }))(request, extra),
    );
    const closed = new Promise<void>((resolve) => {
      server.onclose = () => resolve();
    });
    await server.connect(new StdioServerTransport());
    // The host ends the session by closing our stdin.
    process.stdin.once('end', () => void server.close().catch(() => {}));
    process.stderr.write(`aegis mcp: serving the agents of ${connection.server} on stdio\n`);
    await closed;
    await upstream.close().catch(() => {});
    return 0;
  });
}
