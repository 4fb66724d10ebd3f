/**
 * The REST shapes of live sandboxes (sandbox-routes.ts) as zod schemas, and the routes described for /openapi.json.
 * The routes themselves are a Fastify plugin (they stream raw bodies and SSE), so they are not in the ROUTES table;
 * this list is what openapi.ts documents, and test/openapi-sandboxes.test.ts checks it against the plugin.
 */

import { z } from 'zod';
import type { Route } from './routes.ts';
import { PORT_METHODS } from './sandbox-ports.ts';
import { ErrorBody } from './schemas.ts';

const Duration = z.union([z.string().max(32), z.number().int().nonnegative()]);
const StringMap = z.record(z.string().max(256), z.string().max(64 * 1024));

export const CreateSandboxBody = z
  .strictObject({
    agent: z.string().min(1).max(200).meta({ description: '`name` or `name@revision` of a deployed agent' }),
    timeout: Duration.optional().meta({
      description: 'lifetime, e.g. "10m" (default: the manifest timeout)',
    }),
    idleTimeout: Duration.nullable()
      .optional()
      .meta({ description: 'ended after this long without API calls or running commands' }),
    metadata: StringMap.optional(),
    env: StringMap.optional(),
  })
  .meta({ id: 'CreateSandboxBody' });

export const ExecBody = z
  .strictObject({
    cmd: z
      .union([
        z
          .string()
          .min(1)
          .max(128 * 1024),
        z
          .array(z.string().max(128 * 1024))
          .min(1)
          .max(4096),
      ])
      .meta({ description: 'argv, or a string run with /bin/sh -c' }),
    cwd: z.string().max(4096).optional(),
    env: StringMap.optional(),
    stdin: z
      .string()
      .max(1024 * 1024)
      .optional(),
    keepStdin: z.boolean().optional(),
    background: z.boolean().optional(),
    timeout: Duration.optional(),
  })
  .meta({ id: 'ExecBody' });

export const KillBody = z
  .strictObject({ signal: z.string().max(16).optional() })
  .meta({ id: 'KillCommandBody' });
export const PathBody = z.strictObject({ path: z.string().max(4096) }).meta({ id: 'SandboxPathBody' });
export const MoveBody = z
  .strictObject({ from: z.string().max(4096), to: z.string().max(4096) })
  .meta({ id: 'SandboxMoveBody' });

export const Sandbox = z
  .object({
    id: z.string(),
    agent: z.object({ name: z.string(), revision: z.number().int(), version: z.string() }),
    runtime: z.string(),
    status: z.enum(['running', 'paused', 'terminated']),
    reason: z.string().nullable(),
    createdAt: z.string(),
    expiresAt: z.string(),
    idleTimeoutMs: z.number().nullable(),
    metadata: z.record(z.string(), z.string()),
    owner: z.string(),
    usage: z
      .object({
        cpuUsageNs: z.number().nullable(),
        memoryPeakBytes: z.number().nullable(),
        oomKills: z.number().int(),
        memoryBytes: z.number().nullable(),
        pids: z.number().int().nullable(),
      })
      .nullable(),
  })
  .meta({ id: 'Sandbox' });

export const SandboxList = z.object({ sandboxes: z.array(Sandbox) }).meta({ id: 'SandboxList' });

export const SandboxCommand = z
  .object({
    id: z.string(),
    pid: z.number().int(),
    argv: z.array(z.string()),
    status: z.enum(['running', 'exited']),
    exitCode: z.number().int().nullable(),
    signal: z.string().nullable(),
    timedOut: z.boolean(),
    startedAt: z.string(),
    durationMs: z.number().nullable(),
  })
  .meta({ id: 'SandboxCommand' });

export const SandboxCommandList = z
  .object({ commands: z.array(SandboxCommand) })
  .meta({ id: 'SandboxCommandList' });

export const CommandResult = z
  .object({ command: SandboxCommand, stdout: z.string(), stderr: z.string() })
  .meta({ id: 'SandboxCommandResult' });

export const SandboxFileEntry = z
  .object({
    path: z.string(),
    name: z.string(),
    type: z.enum(['file', 'dir', 'symlink', 'other']),
    size: z.number(),
    mode: z.number().int(),
    modifiedAt: z.string(),
  })
  .meta({ id: 'SandboxFileEntry' });

export const SandboxFileList = z
  .object({ entries: z.array(SandboxFileEntry) })
  .meta({ id: 'SandboxFileList' });
export const UploadResult = z
  .object({ path: z.string(), bytes: z.number().int() })
  .meta({ id: 'SandboxUpload' });

const IdParams = z.object({ id: z.string().meta({ description: 'sandbox id' }) });
const CommandParams = z.object({ id: z.string(), command: z.string().meta({ description: 'command id' }) });
const PtyQuery = z.object({
  cols: z.string().optional().meta({ description: 'terminal width, 1-1000 (default 80)' }),
  rows: z.string().optional().meta({ description: 'terminal height, 1-1000 (default 24)' }),
  cmd: z
    .string()
    .optional()
    .meta({ description: 'argv (repeat for each argument); default an interactive shell' }),
  cwd: z.string().optional().meta({ description: 'working directory (default /workspace)' }),
});
const PortParams = z.object({ id: z.string(), port: z.string().meta({ description: 'an exposed port' }) });
const PortPathParams = PortParams.extend({
  '*': z.string().meta({ description: 'path on the sandbox server' }),
});
const PathQuery = z.object({ path: z.string().meta({ description: 'absolute path inside the sandbox' }) });

const ERRORS: Record<number, string> = {
  400: 'Invalid request (details.problems name JSON paths)',
  401: 'No or unknown API key',
  403: 'The key lacks the scope, the sandbox is another key’s, or the policy refuses the path',
  404: 'No such sandbox, command or file',
  409: 'The sandbox is not running (terminated or paused)',
  413: 'Upload over the file size cap',
  429: 'Over the key rate, or the node runs --max-sandboxes already',
  503: 'This server runs no live sandboxes',
};
const errors = (...codes: number[]) =>
  Object.fromEntries(
    codes.map((code) => [code, { description: ERRORS[code] ?? 'error', schema: ErrorBody }]),
  );

/** A route as /openapi.json describes it: the ROUTES shape without the handler, plus PUT and raw bodies. */
export interface DocumentedRoute extends Omit<Route, 'handler' | 'method' | 'body'> {
  readonly method: Route['method'] | 'PUT';
  readonly body?: Route['body'] | 'octet-stream';
}

const route = (r: Omit<DocumentedRoute, 'tag'>): DocumentedRoute => ({ tag: 'sandboxes', ...r });
const SSE = {
  description: 'Command events (stdout, stderr, exit) as Server-Sent Events',
  contentType: 'text/event-stream',
  schema: z.string(),
};

export const SANDBOX_ROUTES: readonly DocumentedRoute[] = [
  route({
    method: 'POST',
    path: '/v1/sandboxes',
    operationId: 'createSandbox',
    summary: 'Create a live sandbox from a deployed agent revision (its manifest is the policy)',
    scope: 'execute',
    body: CreateSandboxBody,
    responses: { 201: { description: 'Running', schema: Sandbox }, ...errors(400, 401, 403, 404, 429, 503) },
  }),
  route({
    method: 'GET',
    path: '/v1/sandboxes',
    operationId: 'listSandboxes',
    summary: 'Your sandboxes (all of them with an admin key)',
    scope: 'read',
    responses: { 200: { description: 'Sandboxes', schema: SandboxList }, ...errors(401, 403, 429) },
  }),
  route({
    method: 'GET',
    path: '/v1/sandboxes/:id',
    operationId: 'getSandbox',
    summary: 'A sandbox, with its resource usage',
    scope: 'read',
    params: IdParams,
    responses: { 200: { description: 'The sandbox', schema: Sandbox }, ...errors(401, 403, 404, 429) },
  }),
  route({
    method: 'DELETE',
    path: '/v1/sandboxes/:id',
    operationId: 'deleteSandbox',
    summary: 'Kill every process of the sandbox; its record stays readable',
    scope: 'execute',
    params: IdParams,
    responses: { 200: { description: 'Terminated', schema: Sandbox }, ...errors(401, 403, 404, 429) },
  }),
  route({
    method: 'POST',
    path: '/v1/sandboxes/:id/pause',
    operationId: 'pauseSandbox',
    summary:
      'Freeze every process (cgroup freezer): no CPU, commands refused, timeouts stopped until resumed',
    scope: 'execute',
    params: IdParams,
    responses: { 200: { description: 'Paused', schema: Sandbox }, ...errors(401, 403, 404, 409, 503) },
  }),
  route({
    method: 'POST',
    path: '/v1/sandboxes/:id/resume',
    operationId: 'resumeSandbox',
    summary: 'Let a paused sandbox run again; expiresAt moves forward by the time it was paused',
    scope: 'execute',
    params: IdParams,
    responses: { 200: { description: 'Running again', schema: Sandbox }, ...errors(401, 403, 404, 409) },
  }),
  route({
    method: 'GET',
    path: '/v1/sandboxes/:id/audit',
    operationId: 'sandboxAudit',
    summary: "The sandbox's audit ledger entries",
    scope: 'read',
    params: IdParams,
    responses: {
      200: { description: 'Entries by seq', schema: z.object({ entries: z.array(z.unknown()) }) },
      ...errors(401, 403, 404),
    },
  }),
  route({
    method: 'POST',
    path: '/v1/sandboxes/:id/commands',
    operationId: 'runSandboxCommand',
    summary:
      'Run a command: collected output (JSON), streamed events (Accept: text/event-stream), or in the background',
    scope: 'execute',
    params: IdParams,
    body: ExecBody,
    responses: {
      200: { description: 'The command ended; its output (at most 4 MiB per stream)', schema: CommandResult },
      201: { description: 'Started in the background', schema: SandboxCommand },
      ...errors(400, 401, 403, 404, 409, 429),
    },
  }),
  route({
    method: 'GET',
    path: '/v1/sandboxes/:id/commands',
    operationId: 'listSandboxCommands',
    summary: "The sandbox's commands",
    scope: 'read',
    params: IdParams,
    responses: { 200: { description: 'Commands', schema: SandboxCommandList }, ...errors(401, 403, 404) },
  }),
  route({
    method: 'GET',
    path: '/v1/sandboxes/:id/commands/:command',
    operationId: 'getSandboxCommand',
    summary: 'A command',
    scope: 'read',
    params: CommandParams,
    responses: { 200: { description: 'The command', schema: SandboxCommand }, ...errors(401, 403, 404) },
  }),
  route({
    method: 'GET',
    path: '/v1/sandboxes/:id/commands/:command/events',
    operationId: 'sandboxCommandEvents',
    summary:
      "A command's events as SSE; resume with Last-Event-ID (or ?after=SEQ); ?follow=false replays only",
    scope: 'read',
    params: CommandParams,
    query: z.object({ after: z.string().optional(), follow: z.enum(['true', 'false']).optional() }),
    responses: { 200: SSE, ...errors(401, 403, 404) },
  }),
  route({
    method: 'POST',
    path: '/v1/sandboxes/:id/commands/:command/stdin',
    operationId: 'writeSandboxCommandStdin',
    summary: "Write the raw body to a command's stdin (started with keepStdin); ?eof=true closes it",
    scope: 'execute',
    params: CommandParams,
    query: z.object({ eof: z.enum(['true', 'false']).optional() }),
    body: 'octet-stream',
    responses: { 204: { description: 'Written' }, ...errors(401, 403, 404, 409) },
  }),
  route({
    method: 'POST',
    path: '/v1/sandboxes/:id/commands/:command/kill',
    operationId: 'killSandboxCommand',
    summary: 'Signal a command (default SIGKILL)',
    scope: 'execute',
    params: CommandParams,
    body: KillBody,
    responses: { 200: { description: 'The command', schema: SandboxCommand }, ...errors(400, 401, 403, 404) },
  }),
  route({
    method: 'PUT',
    path: '/v1/sandboxes/:id/files',
    operationId: 'uploadSandboxFile',
    summary:
      'Write the raw body to ?path= (streamed; size-capped; only where the policy makes paths writable)',
    scope: 'execute',
    params: IdParams,
    query: PathQuery,
    body: 'octet-stream',
    responses: {
      201: { description: 'Written', schema: UploadResult },
      ...errors(400, 401, 403, 404, 409, 413),
    },
  }),
  route({
    method: 'GET',
    path: '/v1/sandboxes/:id/files',
    operationId: 'downloadSandboxFile',
    summary: 'The bytes of ?path=',
    scope: 'read',
    params: IdParams,
    query: PathQuery,
    responses: {
      200: { description: 'The file', contentType: 'application/octet-stream', schema: z.string() },
      ...errors(400, 401, 403, 404, 409),
    },
  }),
  route({
    method: 'GET',
    path: '/v1/sandboxes/:id/files/stat',
    operationId: 'statSandboxFile',
    summary: 'Type, size, mode and mtime of ?path=',
    scope: 'read',
    params: IdParams,
    query: PathQuery,
    responses: {
      200: { description: 'The entry', schema: SandboxFileEntry },
      ...errors(400, 401, 403, 404, 409),
    },
  }),
  route({
    method: 'GET',
    path: '/v1/sandboxes/:id/files/list',
    operationId: 'listSandboxFiles',
    summary: 'The entries of the directory ?path=',
    scope: 'read',
    params: IdParams,
    query: PathQuery,
    responses: {
      200: { description: 'Entries', schema: SandboxFileList },
      ...errors(400, 401, 403, 404, 409),
    },
  }),
  route({
    method: 'POST',
    path: '/v1/sandboxes/:id/tools/:name',
    operationId: 'callSandboxTool',
    summary:
      'Call a tool granted by spec.tools (MCP tools percent-encode the "/": mcp:github%2Fsearch_issues)',
    scope: 'execute',
    params: IdParams.extend({
      name: z.string().meta({ description: 'fs.read, cmd.run, http.fetch, mcp:<server>/<tool>…' }),
    }),
    body: z.object({ arguments: z.record(z.string(), z.unknown()).optional() }),
    responses: {
      200: {
        description: '{tool, outcome: allowed, result}',
        schema: z.object({ tool: z.string(), outcome: z.string(), result: z.unknown() }),
      },
      ...errors(400, 401, 403, 404, 409),
    },
  }),
  route({
    method: 'POST',
    path: '/v1/sandboxes/:id/files/mkdir',
    operationId: 'mkdirSandboxFile',
    summary: 'Create a directory',
    scope: 'execute',
    params: IdParams,
    body: PathBody,
    responses: { 204: { description: 'Created' }, ...errors(400, 401, 403, 404, 409) },
  }),
  route({
    method: 'POST',
    path: '/v1/sandboxes/:id/files/move',
    operationId: 'moveSandboxFile',
    summary: 'Rename a file or directory',
    scope: 'execute',
    params: IdParams,
    body: MoveBody,
    responses: { 204: { description: 'Moved' }, ...errors(400, 401, 403, 404, 409) },
  }),
  route({
    method: 'DELETE',
    path: '/v1/sandboxes/:id/files',
    operationId: 'removeSandboxFile',
    summary: 'Remove ?path=',
    scope: 'execute',
    params: IdParams,
    query: PathQuery,
    responses: { 204: { description: 'Removed' }, ...errors(400, 401, 403, 404, 409) },
  }),
  route({
    method: 'GET',
    path: '/v1/sandboxes/:id/pty',
    operationId: 'sandboxPty',
    summary:
      'WebSocket: a command on a pseudo-terminal (query cols, rows, cmd (repeatable), cwd). Binary frames = terminal bytes both ways; text frame {"type":"resize","cols":N,"rows":N}; on exit the server sends {"type":"exit","exitCode":N,"signal":S} and closes (1000)',
    scope: 'execute',
    params: IdParams,
    query: PtyQuery,
    responses: {
      101: { description: 'Switching Protocols (WebSocket)' },
      ...errors(400, 401, 403, 404, 409, 429, 503),
    },
  }),
  ...PORT_METHODS.flatMap((method) =>
    ['/v1/sandboxes/:id/ports/:port', '/v1/sandboxes/:id/ports/:port/*'].map((path) =>
      route({
        method,
        path,
        operationId: `sandboxPort${method[0]}${method.slice(1).toLowerCase()}${path.endsWith('*') ? 'Path' : ''}`,
        summary:
          'An exposed port (spec.security.network.expose) of the sandbox: the request goes to its 127.0.0.1:{port} with the prefix removed and without Authorization; WebSocket upgrades too. Each connection is a sandbox.port ledger entry',
        scope: 'execute',
        params: path.endsWith('*') ? PortPathParams : PortParams,
        responses: {
          200: { description: "The sandbox server's answer, whatever its status" },
          ...errors(401, 403, 404, 409, 503),
        },
      }),
    ),
  ),
];
