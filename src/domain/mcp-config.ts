/**
 * `mcp.servers` of the orchestrator config (docs/adr/0085-mcp-client.md): MCP servers whose tools agents may be
 * granted one by one (`spec.tools: [mcp:<server>/<tool>]`). A stdio server is a command the orchestrator runs — outside
 * every sandbox, so its credentials never reach an agent; an HTTP server is a streamable-HTTP URL whose headers may
 * take values from the secret store.
 */
import { z } from 'zod';

const SERVER_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export const McpHeaderValue = z.union([
  z.string(),
  z.strictObject({
    secret: z
      .string()
      .min(1)
      .meta({ description: 'A secret of `aegis secret set` whose value fills the header.' }),
    prefix: z.string().default('').meta({ description: 'Written before the value, e.g. "Bearer ".' }),
  }),
]);

export const McpServerConfig = z.union([
  z.strictObject({
    command: z.string().min(1).meta({ description: 'Run by the orchestrator (stdio transport).' }),
    args: z.array(z.string()).default([]),
    env: z.record(z.string(), z.string()).default({}),
    cwd: z.string().optional(),
  }),
  z.strictObject({
    url: z.url({ protocol: /^https?$/ }).meta({ description: 'A streamable-HTTP MCP endpoint.' }),
    headers: z.record(z.string(), McpHeaderValue).default({}),
  }),
]);
export type McpServerConfig = z.infer<typeof McpServerConfig>;

export const McpConfig = z.strictObject({
  servers: z
    .record(
      z.string().regex(SERVER_NAME, 'server names are lowercase letters, digits, "-" and "_"'),
      McpServerConfig,
    )
    .default({}),
});
export type McpConfig = z.infer<typeof McpConfig>;
