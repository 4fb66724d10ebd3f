/**
 * AEGIS as an MCP server, driven by the official MCP SDK client over both transports: streamable HTTP (`/mcp` on a
 * real `aegis server`) and stdio (`aegis mcp` spawned as a child, bridging to that server). Deployed agents are
 * tools with their spec.input as inputSchema; a call runs a real execution (record + ledger); a bad input, a key
 * without `execute` and a request without a key are refused; executions and logs are readable resources.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import {
  cli,
  killServers,
  ROOT,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

const temps: string[] = [];
const clients: Client[] = [];
after(async () => {
  for (const client of clients) await client.close().catch(() => {});
  await killServers();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

const INPUT_SCHEMA = {
  type: 'object',
  properties: { text: { type: 'string', minLength: 1 } },
  required: ['text'],
  additionalProperties: false,
};

function agentDir(name: string, extraSpec: string, main: string, description?: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-mcp-agent-'));
  temps.push(dir);
  writeFileSync(
    join(dir, 'agent.yaml'),
    `apiVersion: aegis.dev/v1\nkind: Agent\nmetadata:\n  name: ${name}\n  version: 0.1.0\n` +
      (description ? `  description: ${description}\n` : '') +
      `spec:\n  runtime: { language: python, entrypoint: main.py }\n${extraSpec}`,
  );
  writeFileSync(join(dir, 'main.py'), main);
  return join(dir, 'agent.yaml');
}

const UPPER = `import json, sys
text = json.load(sys.stdin)["text"]
print(f"upper-casing {len(text)} characters", flush=True)
print(json.dumps({"upper": text.upper()}))
`;
const FAILING = `import sys
print("about to fail", flush=True)
sys.exit(3)
`;

// biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field by the assertions
type Json = any;

async function rest(server: ServerProcess, key: string, path: string): Promise<Json> {
  const response = await fetch(`${server.url}${path}`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal(response.status, 200, path);
  return response.json();
}

function textOf(result: CallToolResult): string {
  return result.content
    .filter((item) => item.type === 'text')
    .map((item) => (item as { text: string }).text)
    .join('\n');
}

async function httpClient(server: ServerProcess, key: string | undefined): Promise<Client> {
  const client = new Client({ name: 'aegis-test', version: '0.0.0' });
  await client.connect(
    new StreamableHTTPClientTransport(new URL('/mcp', server.url), {
      ...(key ? { requestInit: { headers: { authorization: `Bearer ${key}` } } } : {}),
    }),
  );
  clients.push(client);
  return client;
}

async function stdioClient(server: ServerProcess, key: string): Promise<Client> {
  const client = new Client({ name: 'aegis-test-stdio', version: '0.0.0' });
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(server.env)) if (value !== undefined) env[name] = value;
  await client.connect(
    new StdioClientTransport({
      command: process.execPath,
      args: [join(ROOT, 'src/cli/bin.ts'), 'mcp'],
      env: { ...env, AEGIS_SERVER: server.url, AEGIS_API_KEY: key },
      stderr: 'pipe',
    }),
  );
  clients.push(client);
  return client;
}

describe('AEGIS as an MCP server', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  const keys = { caller: '', callerId: '', reader: '', deploy: '' };

  before(async () => {
    dirs = serverDirs();
    server = await startServerProcess({ dirs });
    for (const [name, scopes] of [
      ['caller', ['execute', 'read']],
      ['reader', ['read']],
      ['deploy', ['deploy']],
    ] as const) {
      const response = await fetch(`${server.url}/v1/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${server.adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: `mcp-${name}`, scopes }),
      });
      assert.equal(response.status, 201);
      const created = (await response.json()) as Json;
      keys[name] = created.key;
      if (name === 'caller') keys.callerId = created.record.id;
    }
    const env = { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: keys.deploy };
    for (const manifest of [
      agentDir('upper', `  input: ${JSON.stringify(INPUT_SCHEMA)}\n`, UPPER, 'Upper-cases a text'),
      agentDir('failing', '', FAILING),
    ]) {
      const deployed = await cli(['deploy', manifest], env);
      assert.equal(deployed.code, 0, deployed.stderr);
    }
  });

  after(async () => {
    if (server) await server.stop();
    dirs?.cleanup();
  });

  it('streamable HTTP: lists deployed agents as tools with their spec.input as inputSchema', async () => {
    const client = await httpClient(server, keys.caller);
    assert.equal(client.getServerVersion()?.name, 'aegis');
    const { tools } = await client.listTools();
    const upper = tools.find((tool) => tool.name === 'upper');
    const failing = tools.find((tool) => tool.name === 'failing');
    assert.ok(upper && failing, JSON.stringify(tools));
    assert.equal(upper.description, 'Upper-cases a text');
    assert.deepEqual(upper.inputSchema, INPUT_SCHEMA);
    assert.deepEqual(failing.inputSchema, { type: 'object' });
    assert.match(failing.description ?? '', /failing/);
  });

  it('stateless MCP 2026-07-28: tools/list and tools/call with no initialize and no session id', async () => {
    const rpc = async (id: number, method: string, params: Record<string, unknown>) => {
      const response = await fetch(`${server.url}/mcp`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${keys.caller}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': '2026-07-28',
        },
        body: JSON.stringify({ jsonrpc: '2.0', id, method, params }),
      });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('mcp-session-id'), null, 'no session');
      return (await response.json()) as { result?: Record<string, unknown>; error?: unknown };
    };
    const listed = await rpc(1, 'tools/list', {});
    assert.ok(
      ((listed.result?.['tools'] ?? []) as { name: string }[]).some((tool) => tool.name === 'upper'),
      JSON.stringify(listed),
    );
    const called = await rpc(2, 'tools/call', { name: 'upper', arguments: { text: 'stateless' } });
    assert.equal(called.result?.['isError'] ?? false, false, JSON.stringify(called));
    assert.match(JSON.stringify(called.result?.['content']), /STATELESS/);
  });

  it('streamable HTTP: a call runs an execution, returns its output, and leaves a record and ledger entries', async () => {
    const client = await httpClient(server, keys.caller);
    const result = (await client.callTool({
      name: 'upper',
      arguments: { text: 'hello mcp' },
    })) as CallToolResult;
    assert.notEqual(result.isError, true, JSON.stringify(result));
    assert.deepEqual(result.structuredContent, { upper: 'HELLO MCP' });
    assert.match(textOf(result), /HELLO MCP/);
    const id = result._meta?.['aegis.dev/execution'] as string;
    assert.match(id, /^\S+$/);
    const record = await rest(server, keys.caller, `/v1/executions/${id}`);
    assert.equal(record.status, 'succeeded');
    assert.deepEqual(record.input, { text: 'hello mcp' });
    const { entries } = await rest(server, keys.caller, `/v1/executions/${id}/audit`);
    const kinds = entries.map((entry: Json) => entry.kind);
    assert.ok(kinds.includes('execution.created') && kinds.includes('execution.finished'), kinds.join());
    const created = entries.find((entry: Json) => entry.kind === 'execution.created');
    assert.equal(created.data.requestedBy, keys.callerId);
  });

  it('streamable HTTP: input violating spec.input is refused with its JSON path, and nothing runs', async () => {
    const client = await httpClient(server, keys.caller);
    const before = (await rest(server, keys.caller, '/v1/executions?agent=upper')).executions.length;
    for (const [args, path] of [
      [{ text: 5 }, /input\.text must be string/],
      [{}, /input\.text is required/],
      [{ text: 'x', extra: true }, /input\.extra is not a field/],
    ] as const) {
      const result = (await client.callTool({ name: 'upper', arguments: args })) as CallToolResult;
      assert.equal(result.isError, true);
      assert.match(textOf(result), path);
    }
    const afterCount = (await rest(server, keys.caller, '/v1/executions?agent=upper')).executions.length;
    assert.equal(afterCount, before);
  });

  it('streamable HTTP: a failed execution is an isError result with the reason', async () => {
    const client = await httpClient(server, keys.caller);
    const result = (await client.callTool({ name: 'failing', arguments: {} })) as CallToolResult;
    assert.equal(result.isError, true);
    assert.match(textOf(result), /failed: .*exit code 3|failed: exit/);
    assert.equal(result._meta?.['aegis.dev/status'], 'failed');
  });

  it('refuses a call by a key without the execute scope, and a request without a key (401)', async () => {
    const reader = await httpClient(server, keys.reader);
    assert.ok((await reader.listTools()).tools.length >= 2, 'read is enough to list');
    const executionsBefore = (await rest(server, keys.caller, '/v1/executions')).executions.length;
    await assert.rejects(
      reader.callTool({ name: 'upper', arguments: { text: 'x' } }),
      /PERMISSION_DENIED: .*"execute" scope/,
    );
    const executionsAfter = (await rest(server, keys.caller, '/v1/executions')).executions.length;
    assert.equal(executionsAfter, executionsBefore, 'nothing was created');

    const anonymous = await fetch(`${server.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }),
    });
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Bearer/);
    assert.equal(((await anonymous.json()) as Json).error.code, 'UNAUTHENTICATED');
    await assert.rejects(httpClient(server, undefined));
    await assert.rejects(httpClient(server, `aegis_${'0'.repeat(64)}`));
  });

  it('streamable HTTP: lists executions as resources and reads one and its logs', async () => {
    const client = await httpClient(server, keys.caller);
    const call = (await client.callTool({ name: 'upper', arguments: { text: 'res' } })) as CallToolResult;
    const id = call._meta?.['aegis.dev/execution'] as string;
    const { resources } = await client.listResources();
    assert.ok(resources.some((resource) => resource.uri === `aegis://executions/${id}`));
    const { resourceTemplates } = await client.listResourceTemplates();
    assert.deepEqual(resourceTemplates.map((template) => template.uriTemplate).sort(), [
      'aegis://executions/{id}',
      'aegis://executions/{id}/logs',
    ]);
    const record = JSON.parse(
      ((await client.readResource({ uri: `aegis://executions/${id}` })).contents[0] as { text: string }).text,
    );
    assert.equal(record.status, 'succeeded');
    assert.deepEqual(record.output, { upper: 'RES' });
    const logs = JSON.parse(
      ((await client.readResource({ uri: `aegis://executions/${id}/logs` })).contents[0] as { text: string })
        .text,
    );
    assert.ok(logs.lines.some((line: Json) => /upper-casing 3 characters/.test(line.text)));
    await assert.rejects(client.readResource({ uri: 'aegis://executions/nope' }), /NOT_FOUND/);
    await assert.rejects(client.readResource({ uri: 'file:///etc/passwd' }), /unknown resource/);
  });

  it('stdio: `aegis mcp` lists the same tools, runs one, refuses bad input and reads resources', async () => {
    const client = await stdioClient(server, keys.caller);
    const { tools } = await client.listTools();
    assert.deepEqual(tools.find((tool) => tool.name === 'upper')?.inputSchema, INPUT_SCHEMA);
    const result = (await client.callTool({ name: 'upper', arguments: { text: 'stdio' } })) as CallToolResult;
    assert.notEqual(result.isError, true, JSON.stringify(result));
    assert.deepEqual(result.structuredContent, { upper: 'STDIO' });
    const id = result._meta?.['aegis.dev/execution'] as string;
    assert.equal((await rest(server, keys.caller, `/v1/executions/${id}`)).status, 'succeeded');
    const bad = (await client.callTool({ name: 'upper', arguments: { text: '' } })) as CallToolResult;
    assert.equal(bad.isError, true);
    assert.match(textOf(bad), /input\.text/);
    const read = await client.readResource({ uri: `aegis://executions/${id}` });
    assert.equal(JSON.parse((read.contents[0] as { text: string }).text).status, 'succeeded');
  });

  it('stdio: a key without execute is refused through the bridge too', async () => {
    const client = await stdioClient(server, keys.reader);
    await assert.rejects(client.callTool({ name: 'upper', arguments: { text: 'x' } }), /PERMISSION_DENIED/);
  });
});
