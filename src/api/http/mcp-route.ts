/**
 * `/mcp`: the MCP streamable-HTTP endpoint (docs/adr/0081-aegis-as-an-mcp-server.md), served stateless — each POST
 * is authenticated like any API request (`Authorization: Bearer aegis_…`; the unix socket is trusted), answered by
 * a fresh SDK server bound to that principal, with a JSON response and no session id. GET (a server-initiated SSE
 * stream) and DELETE (ending a session) have nothing to serve without sessions: 405, which the SDK clients expect.
 */
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Principal } from '../../domain/auth/api-key.ts';
import type { ApiContext } from '../context.ts';
import { createMcpServer } from '../mcp/server.ts';

export const MCP_PATH = '/mcp';

export interface McpRouteOptions {
  readonly principalOf: (request: FastifyRequest) => Promise<Principal>;
  readonly version: string;
  readonly log: (entry: Record<string, unknown>) => void;
}

/**
 * Stateless revisions newer than the SDK knows (MCP 2026-07-28: no initialize handshake, no session id). AEGIS
 * already serves every request on its own, without a session, so such a request is answered as the newest revision
 * the SDK implements — whose message shapes `tools/*` and `resources/*` share — instead of being refused.
 */
const STATELESS_REVISIONS = new Set(['2026-07-28']);

function webHeaders(headers: FastifyRequest['headers']): Headers {
  const out = new Headers();
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(':') || value === undefined) continue; // HTTP/2 pseudo-headers
    for (const one of Array.isArray(value) ? value : [value]) {
      if (name === 'mcp-protocol-version' && STATELESS_REVISIONS.has(one.trim()))
        out.append(name, LATEST_PROTOCOL_VERSION);
      else out.append(name, one);
    }
  }
  return out;
}

const methodNotAllowed = {
  jsonrpc: '2.0',
  error: {
    code: -32000,
    message: 'Method not allowed: AEGIS serves MCP stateless; send JSON-RPC requests with POST /mcp',
  },
  id: null,
};

export function registerMcpRoutes(app: FastifyInstance, ctx: ApiContext, options: McpRouteOptions): void {
  app.post(MCP_PATH, async (request, reply) => {
    let principal: Principal;
    try {
      principal = await options.principalOf(request);
    } catch (error) {
      // RFC 6750: a 401 names the scheme it wants.
      void reply.header('www-authenticate', 'Bearer realm="aegis"');
      throw error;
    }
    const server = createMcpServer(ctx, principal, { version: options.version, log: options.log });
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
      enableJsonResponse: true,
    });
    await server.connect(transport);
    // A client that goes away while a tool runs: close the server, which aborts the handler's wait (the
    // execution itself goes on and stays readable as a resource).
    reply.raw.once('close', () => void server.close().catch(() => {}));
    try {
      const response = await transport.handleRequest(
        new Request(new URL(MCP_PATH, 'http://aegis.invalid'), {
          method: 'POST',
          headers: webHeaders(request.headers),
        }),
        { parsedBody: request.body },
      );
      reply.code(response.status);
      response.headers.forEach((value, name) => void reply.header(name, value));
      const text = await response.text();
      return text === '' ? reply.send() : reply.send(text);
    } finally {
      await server.close().catch(() => {});
    }
  });
  for (const method of ['GET', 'DELETE'] as const) {
    app.route({
      method,
      url: MCP_PATH,
      handler: async (_request, reply) => reply.code(405).header('allow', 'POST').send(methodNotAllowed),
    });
  }
}
