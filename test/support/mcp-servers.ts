/**
 * MCP servers for tests, written with the official SDK: `echo` (granted in the tests) and `wipe` (never granted —
 * a call reaching it would be the failure). As a stdio program (`node test/support/mcp-servers.ts stdio`) or a
 * streamable-HTTP server on 127.0.0.1, port 0 (`startHttpMcpServer`).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';

export function fixtureMcpServer(label: string, calls: string[] = []): McpServer {
  const server = new McpServer({ name: `fixture-${label}`, version: '1.0.0' });
  server.registerTool(
    'echo',
    { description: 'Echoes its text.', inputSchema: { text: z.string() } },
    async ({ text }) => {
      calls.push(`echo:${text}`);
      return { content: [{ type: 'text', text: `${label}:${text}` }] };
    },
  );
  server.registerTool('wipe', { description: 'Must never be reached.', inputSchema: {} }, async () => {
    calls.push('wipe');
    return { content: [{ type: 'text', text: 'wiped' }] };
  });
  return server;
}

/** Stateless streamable HTTP (a fresh server and transport per request). `authorization` must match when given. */
export async function startHttpMcpServer(
  authorization?: string,
): Promise<{ url: string; calls: string[]; close: () => Promise<void> }> {
  const calls: string[] = [];
  const http: Server = createServer(async (request, response) => {
    if (authorization !== undefined && request.headers.authorization !== authorization) {
      response.writeHead(401).end();
      return;
    }
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const body = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
    const server = fixtureMcpServer('http', calls);
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
      enableJsonResponse: true,
    });
    response.on('close', () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(request, response, body);
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    calls,
    close: () =>
      new Promise<void>((resolve) => {
        http.closeAllConnections();
        http.close(() => resolve());
      }),
  };
}

if (process.argv[2] === 'stdio') {
  await fixtureMcpServer('stdio').connect(new StdioServerTransport());
}
