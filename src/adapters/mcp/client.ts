/**
 * MCP servers as tools (docs/adr/0085-mcp-client.md): the McpServers port over the official
 * `@modelcontextprotocol/sdk` client. A server is connected on first use and kept; a stdio server is a child of
 * the orchestrator (outside every sandbox), an HTTP server is reached with the streamable-HTTP transport (session
 * based or not, as the server answers). Header values may come from the secret store; they never reach an agent.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { McpServers, McpToolInfo, SecretStore } from '../../app/ports.ts';
import { AegisError } from '../../domain/errors.ts';
import type { McpConfig, McpServerConfig } from '../../domain/mcp-config.ts';

const CLIENT_INFO = { name: 'aegis-tool-gateway', version: '1.0.0' };

export class SdkMcpServers implements McpServers {
  readonly #config: McpConfig;
  readonly #secrets: Pick<SecretStore, 'get'> | undefined;
  readonly #clients = new Map<string, Promise<Client>>();

  constructor(config: McpConfig, secrets?: Pick<SecretStore, 'get'>) {
    this.#config = config;
    this.#secrets = secrets;
  }

  has(server: string): boolean {
    return Object.hasOwn(this.#config.servers, server);
  }

  async listTools(server: string): Promise<readonly McpToolInfo[]> {
    const client = await this.#client(server);
    const tools: McpToolInfo[] = [];
    let cursor: string | undefined;
    do {
      const page = await client.listTools(cursor === undefined ? {} : { cursor });
      for (const tool of page.tools) {
        tools.push({
          name: tool.name,
          description: tool.description ?? '',
          inputSchema: tool.inputSchema as Record<string, unknown>,
        });
      }
      cursor = page.nextCursor;
    } while (cursor !== undefined && tools.length < 10_000);
    return tools;
  }

  async callTool(
    server: string,
    tool: string,
    args: Record<string, unknown>,
    timeoutMs: number,
  ): Promise<unknown> {
    const client = await this.#client(server);
    try {
      const result = await client.callTool({ name: tool, arguments: args }, undefined, {
        timeout: timeoutMs,
      });
      return JSON.parse(JSON.stringify(result));
    } catch (error) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `MCP server "${server}", tool ${tool}: ${error instanceof Error ? error.message : String(error)}`,
        {
          cause: error,
        },
      );
    }
  }

  async close(): Promise<void> {
    const clients = [...this.#clients.values()];
    this.#clients.clear();
    await Promise.allSettled(clients.map(async (client) => (await client).close()));
  }

  #client(server: string): Promise<Client> {
    let client = this.#clients.get(server);
    if (client === undefined) {
      const config = this.#config.servers[server];
      if (config === undefined) {
        return Promise.reject(
          new AegisError('NOT_FOUND', `no MCP server "${server}" in the orchestrator config`),
        );
      }
      client = this.#connect(server, config);
      this.#clients.set(server, client);
      client.catch(() => this.#clients.delete(server));
    }
    return client;
  }

  async #connect(server: string, config: McpServerConfig): Promise<Client> {
    const client = new Client(CLIENT_INFO);
    client.onclose = () => this.#clients.delete(server);
    try {
      if ('command' in config) {
        await client.connect(
          new StdioClientTransport({
            command: config.command,
            args: config.args,
            env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...config.env },
            stderr: 'ignore',
            ...(config.cwd === undefined ? {} : { cwd: config.cwd }),
          }),
        );
      } else {
        const headers: Record<string, string> = {};
        for (const [name, value] of Object.entries(config.headers)) {
          if (typeof value === 'string') headers[name] = value;
          else {
            const secret = await this.#secrets?.get(value.secret);
            if (secret === undefined) {
              throw new AegisError(
                'NOT_FOUND',
                `mcp.servers.${server}.headers.${name}: no secret ${value.secret}`,
                {
                  hint: `aegis secret set ${value.secret}`,
                },
              );
            }
            headers[name] = value.prefix + secret;
          }
        }
        await client.connect(
          new StreamableHTTPClientTransport(new URL(config.url), { requestInit: { headers } }),
        );
      }
    } catch (error) {
      if (error instanceof AegisError) throw error;
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `MCP server "${server}" could not be reached: ${error instanceof Error ? error.message : String(error)}`,
        {
          cause: error,
          hint: `check mcp.servers.${server} in $AEGIS_HOME/config.yaml`,
        },
      );
    }
    return client;
  }
}
