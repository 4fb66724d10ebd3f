/**
 * The server end to end, as its users drive it: a real `aegis server` process on loopback with the real sandbox,
 * the email-summarizer deployed through the CLI and executed over REST, gRPC (a real Connect/gRPC client) and the
 * CLI; logs followed live over SSE and gRPC streaming; /metrics; auth (401/403/429); malformed bodies and bundles.
 * The same suite runs on SQLite and on PostgreSQL.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { type Client, createClient, type Interceptor } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { pack } from 'tar-stream';
import { AgentService } from '../../src/api/grpc/gen/aegis/v1/agents_pb.ts';
import { ExecutionService } from '../../src/api/grpc/gen/aegis/v1/executions_pb.ts';
import {
  type Backend,
  cli,
  freshDatabase,
  killServers,
  pollUntil,
  postgresMissing,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

const temps: string[] = [];
after(async () => {
  await killServers();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

/** An agent directory with a python entrypoint, readable by the sandbox uid. */
function agentDir(name: string, main: string): string {
  const dir = mkdtempSync(join(tmpdir(), `aegis-api-agent-`));
  temps.push(dir);
  writeFileSync(
    join(dir, 'agent.yaml'),
    `apiVersion: aegis.dev/v1\nkind: Agent\nmetadata:\n  name: ${name}\n  version: 0.1.0\nspec:\n  runtime: { language: python, entrypoint: main.py }\n`,
  );
  writeFileSync(join(dir, 'main.py'), main);
  return join(dir, 'agent.yaml');
}

const TICKER = `import json, sys, time
n = json.load(sys.stdin).get("lines", 5)
for i in range(1, n + 1):
    print(f"tick {i}", flush=True)
    time.sleep(0.25)
print(json.dumps({"ticks": n}))
`;

// biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field by the assertions
type Json = any;

async function api(
  server: ServerProcess,
  method: string,
  path: string,
  options: {
    key?: string;
    body?: unknown;
    raw?: Uint8Array;
    contentType?: string;
    headers?: Record<string, string>;
  } = {},
) {
  const headers: Record<string, string> = { ...(options.headers ?? {}) };
  if (options.key) headers['authorization'] = `Bearer ${options.key}`;
  let body: string | Uint8Array | undefined;
  if (options.raw !== undefined) {
    body = options.raw;
    headers['content-type'] = options.contentType ?? 'application/gzip';
  } else if (options.body !== undefined) {
    body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
    headers['content-type'] = options.contentType ?? 'application/json';
  }
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body }),
  });
  const text = await response.text();
  let json: Json;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, json, text };
}

function tarGz(
  entries: {
    name: string;
    type?: 'file' | 'symlink' | 'directory';
    body?: string | Buffer;
    linkname?: string;
    size?: number;
  }[],
) {
  return new Promise<Buffer>((resolve, reject) => {
    const archive = pack();
    const chunks: Buffer[] = [];
    archive.on('data', (c) => chunks.push(c as Buffer));
    archive.on('end', () => resolve(gzipSync(Buffer.concat(chunks))));
    archive.on('error', reject);
    for (const entry of entries) {
      if (entry.type === 'symlink')
        archive.entry({ name: entry.name, type: 'symlink', linkname: entry.linkname ?? '/etc/shadow' });
      else if (entry.type === 'directory') archive.entry({ name: entry.name, type: 'directory' });
      else archive.entry({ name: entry.name }, entry.body ?? '');
    }
    archive.finalize();
  });
}

function bearer(key: string): Interceptor {
  return (next) => async (request) => {
    request.header.set('authorization', `Bearer ${key}`);
    return next(request);
  };
}

for (const backend of ['sqlite', 'postgres'] as Backend[]) {
  const missing = backend === 'postgres' ? postgresMissing() : false;
  describe(`aegis server on ${backend}`, {
    skip: missing && process.env['AEGIS_SKIP_POSTGRES'] === '1' ? missing : false,
  }, () => {
    let dirs: ServerDirs;
    let server: ServerProcess;
    let dropDatabase: (() => Promise<void>) | undefined;
    const keys: Record<'deploy' | 'execute' | 'read' | 'slow', string> = {
      deploy: '',
      execute: '',
      read: '',
      slow: '',
    };
    let cliEnv: NodeJS.ProcessEnv;
    let sessions: Http2SessionManager;
    let grpc: { agents: Client<typeof AgentService>; executions: Client<typeof ExecutionService> };

    before(async () => {
      if (missing) throw new Error(missing);
      dirs = serverDirs();
      let databaseUrl: string | undefined;
      if (backend === 'postgres') {
        const db = await freshDatabase();
        databaseUrl = db!.url;
        dropDatabase = db!.drop;
      }
      server = await startServerProcess({
        dirs,
        ...(databaseUrl ? { databaseUrl } : {}),
        args: ['--max-concurrent', '2'],
      });
      for (const [name, scopes, rate] of [
        ['deploy', ['deploy'], undefined],
        ['execute', ['execute'], undefined],
        ['read', ['read'], undefined],
        ['slow', ['read'], '1/s,burst=2'],
      ] as const) {
        const created = await api(server, 'POST', '/v1/keys', {
          key: server.adminKey,
          body: { name: `test-${name}`, scopes, ...(rate ? { rate } : {}) },
        });
        assert.equal(created.status, 201, created.text);
        assert.match(created.json.key, /^aegis_[0-9a-f]{64}$/);
        keys[name] = created.json.key;
      }
      cliEnv = { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: keys.deploy };
      sessions = new Http2SessionManager(server.url);
      const transport = createGrpcTransport({
        baseUrl: server.url,
        sessionManager: sessions,
        interceptors: [bearer(keys.execute)],
      });
      grpc = {
        agents: createClient(AgentService, transport),
        executions: createClient(ExecutionService, transport),
      };
    });

    after(async () => {
      sessions?.abort();
      if (server) {
        const code = await server.stop();
        assert.equal(code, 0, `server exit: ${server.stderr()}`);
        assert.match(server.stderr(), /stopped: /);
      }
      await dropDatabase?.();
      dirs?.cleanup();
    });

    it('serves health, readiness and an OpenAPI 3.1 document generated from the route table', async () => {
      assert.deepEqual((await api(server, 'GET', '/healthz')).json, { status: 'ok' });
      assert.deepEqual((await api(server, 'GET', '/readyz')).json, { status: 'ok' });
      const doc = (await api(server, 'GET', '/openapi.json')).json;
      assert.equal(doc.openapi, '3.1.0');
      assert.ok(doc.paths['/v1/executions'].post.requestBody);
      assert.ok(doc.paths['/v1/executions/{id}/logs'].get.responses['200'].content['text/event-stream']);
      assert.ok(doc.components.schemas.Execution.properties.status.enum.includes('queued'));
    });

    it('answers 401 without a valid key, 403 for a missing scope, 429 over the key rate', async () => {
      const none = await api(server, 'GET', '/v1/agents');
      assert.equal(none.status, 401);
      assert.equal(none.json.error.code, 'UNAUTHENTICATED');
      const bogus = await api(server, 'GET', '/v1/agents', { key: `aegis_${'0'.repeat(64)}` });
      assert.equal(bogus.status, 401);
      const malformed = await api(server, 'GET', '/v1/agents', { headers: { authorization: 'Basic abc' } });
      assert.equal(malformed.status, 401);
      const readOnly = await api(server, 'POST', '/v1/executions', {
        key: keys.read,
        body: { agent: 'email-summarizer' },
      });
      assert.equal(readOnly.status, 403);
      assert.equal(readOnly.json.error.code, 'PERMISSION_DENIED');
      assert.match(readOnly.json.error.message, /needs the "execute" scope/);
      const notAdmin = await api(server, 'GET', '/v1/keys', { key: keys.deploy });
      assert.equal(notAdmin.status, 403);
      const statuses: number[] = [];
      let limited: Awaited<ReturnType<typeof api>> | undefined;
      for (let i = 0; i < 4; i++) {
        const response = await api(server, 'GET', '/v1/agents', { key: keys.slow });
        statuses.push(response.status);
        if (response.status === 429) limited = response;
      }
      assert.deepEqual(statuses.slice(0, 2), [200, 200]);
      assert.ok(limited, `expected a 429 after the burst: ${statuses}`);
      assert.equal(limited.json.error.code, 'RATE_LIMITED');
      assert.ok(Number(limited.headers.get('retry-after')) >= 1);
      // gRPC: the same gate.
      const anonymous = createClient(
        ExecutionService,
        createGrpcTransport({ baseUrl: server.url, sessionManager: sessions }),
      );
      await assert.rejects(anonymous.listExecutions({}), /unauthenticated|Unauthenticated|needs an API key/i);
    });

    it('deploys the email-summarizer with the CLI, then runs it over REST, gRPC and the CLI', async () => {
      const deployed = await cli(['deploy', 'examples/email-summarizer/agent.yaml'], cliEnv);
      assert.equal(deployed.code, 0, deployed.stderr);
      assert.match(deployed.stdout + deployed.stderr, /deployed email-summarizer@1/);
      const again = await cli(['deploy', 'examples/email-summarizer/agent.yaml'], cliEnv);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout + again.stderr, /unchanged/);

      // REST, synchronous via ?wait.
      const rest = await api(server, 'POST', '/v1/executions?wait=60s', {
        key: keys.execute,
        body: { agent: 'email-summarizer', input: { max_items: 3 } },
      });
      assert.equal(rest.status, 200, rest.text);
      assert.equal(rest.json.status, 'succeeded', rest.text);
      assert.deepEqual(rest.json.agent, { name: 'email-summarizer', version: '1.0.0', revision: 1 });
      assert.equal(rest.json.output.mailbox, '/data/mailbox');
      assert.equal(rest.headers.get('location'), `/v1/executions/${rest.json.id}`);

      // gRPC (HTTP/2 on the same port).
      const viaGrpc = await grpc.executions.createExecution({
        agent: 'email-summarizer@1',
        inputJson: JSON.stringify({ max_items: 2 }),
        waitMs: 60_000,
      });
      assert.equal(viaGrpc.status, 'succeeded');
      assert.equal(JSON.parse(viaGrpc.outputJson ?? 'null').mailbox, '/data/mailbox');

      // CLI.
      const viaCli = await cli(
        ['exec', 'email-summarizer', '--input', '{"max_items": 1}', '--wait', '-o', 'json'],
        { ...cliEnv, AEGIS_API_KEY: keys.execute },
      );
      assert.equal(viaCli.code, 0, viaCli.stderr);
      const printed = JSON.parse(viaCli.stdout);
      assert.equal(printed.status ?? printed.execution?.status, 'succeeded');
      // `--wait` before the agent: its optional value is the agent's name, not a duration.
      const waitFirst = await cli(['exec', '--wait', 'email-summarizer', '-o', 'json'], {
        ...cliEnv,
        AEGIS_API_KEY: keys.execute,
      });
      assert.equal(waitFirst.code, 0, waitFirst.stderr);
      assert.equal(JSON.parse(waitFirst.stdout).status, 'succeeded');

      // The audit trail of a server execution names who asked for it.
      const audit = await api(server, 'GET', `/v1/executions/${rest.json.id}/audit`, { key: keys.read });
      const created = audit.json.entries.find((e: { kind: string }) => e.kind === 'execution.created');
      assert.equal(created.data.revision, 1);
      assert.match(created.data.requestedBy, /^key_/);
      assert.deepEqual(
        audit.json.entries.map((e: { kind: string }) => e.kind),
        ['execution.created', 'policy.mount', 'execution.started', 'execution.finished'],
      );
    });

    it('follows logs live over SSE (resuming with Last-Event-ID) and over gRPC streaming', async () => {
      const deployed = await cli(['deploy', agentDir('ticker', TICKER)], cliEnv);
      assert.equal(deployed.code, 0, deployed.stderr);

      const started = await api(server, 'POST', '/v1/executions', {
        key: keys.execute,
        body: { agent: 'ticker', input: { lines: 6 } },
      });
      assert.equal(started.status, 202, started.text);
      const id = started.json.id as string;
      const response = await fetch(`${server.url}/v1/executions/${id}/logs?follow=true`, {
        headers: { authorization: `Bearer ${keys.read}` },
      });
      assert.equal(response.headers.get('content-type'), 'text/event-stream; charset=utf-8');
      const reader = response.body!.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      const lines: string[] = [];
      let sawLineWhileRunning = false;
      let end: Json;
      while (end === undefined) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        for (let cut = buffer.indexOf('\n\n'); cut !== -1; cut = buffer.indexOf('\n\n')) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const type = /^event: (.*)$/m.exec(event)?.[1];
          const data = /^data: (.*)$/m.exec(event)?.[1];
          if (type === 'log') {
            lines.push(JSON.parse(data!).text);
            if (lines.length === 1) {
              const now = await api(server, 'GET', `/v1/executions/${id}`, { key: keys.read });
              sawLineWhileRunning = now.json.status === 'running';
            }
          } else if (type === 'end') {
            end = JSON.parse(data!);
          }
        }
      }
      assert.ok(sawLineWhileRunning, 'the first line arrived while the agent was still running');
      assert.deepEqual(lines.slice(0, 6), ['tick 1', 'tick 2', 'tick 3', 'tick 4', 'tick 5', 'tick 6']);
      assert.equal(end.status, 'succeeded');

      const resumed = await fetch(`${server.url}/v1/executions/${id}/logs`, {
        headers: { authorization: `Bearer ${keys.read}`, accept: 'text/event-stream', 'last-event-id': '4' },
      });
      const text = await resumed.text();
      assert.deepEqual(
        [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1])),
        [5, 6, 7],
      );
      assert.match(text, /event: end/);

      // gRPC server streaming, following a fresh execution from its start.
      const second = await grpc.executions.createExecution({ agent: 'ticker', inputJson: '{"lines": 3}' });
      const streamed: string[] = [];
      let final: string | undefined;
      for await (const event of grpc.executions.streamLogs({ executionId: second.id, follow: true })) {
        if (event.event.case === 'line') streamed.push(event.event.value.text);
        else if (event.event.case === 'end') final = event.event.value.status;
      }
      assert.deepEqual(streamed.slice(0, 3), ['tick 1', 'tick 2', 'tick 3']);
      assert.equal(final, 'succeeded');

      // The CLI follows too.
      const third = await api(server, 'POST', '/v1/executions', {
        key: keys.execute,
        body: { agent: 'ticker', input: { lines: 2 } },
      });
      const logs = await cli(['logs', third.json.id, '-f'], { ...cliEnv, AEGIS_API_KEY: keys.read });
      assert.equal(logs.code, 0, logs.stderr);
      assert.match(logs.stdout, /tick 1\ntick 2\n/);
    });

    it('cancels a running execution, pages through executions with a cursor, and exports /metrics', async () => {
      const started = await api(server, 'POST', '/v1/executions', {
        key: keys.execute,
        body: { agent: 'ticker', input: { lines: 200 } },
      });
      const id = started.json.id as string;
      await pollUntil('running', async () =>
        (await api(server, 'GET', `/v1/executions/${id}`, { key: keys.read })).json.status === 'running'
          ? true
          : undefined,
      );
      const cancelled = await api(server, 'POST', `/v1/executions/${id}/cancel`, { key: keys.execute });
      assert.equal(cancelled.status, 200, cancelled.text);
      assert.equal(cancelled.json.status, 'killed');
      assert.match(cancelled.json.reason, /^cancelled by key_/);
      const again = await api(server, 'POST', `/v1/executions/${id}/cancel`, { key: keys.execute });
      assert.equal(again.status, 409);

      const seen = new Set<string>();
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page = await api(server, 'GET', `/v1/executions?limit=2${cursor ? `&cursor=${cursor}` : ''}`, {
          key: keys.read,
        });
        assert.equal(page.status, 200, page.text);
        for (const execution of page.json.executions) {
          assert.ok(!seen.has(execution.id), 'no execution on two pages');
          seen.add(execution.id);
        }
        cursor = page.json.nextCursor;
        pages++;
      } while (cursor !== null && pages < 50);
      assert.ok(seen.size >= 6 && pages >= 3, `${seen.size} executions over ${pages} pages`);
      const byAgent = await api(server, 'GET', '/v1/executions?agent=ticker&status=killed', {
        key: keys.read,
      });
      assert.deepEqual(
        byAgent.json.executions.map((e: { id: string }) => e.id),
        [id],
      );

      const metrics = await api(server, 'GET', '/metrics', { key: keys.read });
      assert.equal(metrics.status, 200);
      assert.match(metrics.text, /aegis_executions_total\{status="succeeded"\} [1-9]/);
      assert.match(metrics.text, /aegis_executions_total\{status="killed"\} 1/);
      assert.match(
        metrics.text,
        /aegis_execution_start_seconds_bucket\{le="\+Inf",start="(cold|warm)"\} [1-9]/,
      );
      assert.match(metrics.text, /aegis_sandboxes_running 0/);
      assert.match(metrics.text, /aegis_queue_depth 0/);
    });

    it('manages agents: versions, rollback and delete through the CLI', async () => {
      const dir = agentDir('versioned', 'print("{\\"v\\": 1}")\n');
      assert.equal((await cli(['deploy', dir], cliEnv)).code, 0);
      writeFileSync(dir.replace('agent.yaml', 'main.py'), 'print("{\\"v\\": 2}")\n');
      const second = await cli(['deploy', dir], cliEnv);
      assert.match(second.stdout + second.stderr, /versioned@2/);
      const run = async () =>
        (
          await api(server, 'POST', '/v1/executions?wait=60s', {
            key: keys.execute,
            body: { agent: 'versioned' },
          })
        ).json.output;
      assert.deepEqual(await run(), { v: 2 });
      const versions = await cli(['agents', 'versions', 'versioned', '-o', 'json'], cliEnv);
      assert.equal(versions.code, 0, versions.stderr);
      assert.deepEqual(
        JSON.parse(versions.stdout).revisions.map((r: { revision: number }) => r.revision),
        [2, 1],
      );
      const rolled = await cli(['agents', 'rollback', 'versioned'], cliEnv);
      assert.equal(rolled.code, 0, rolled.stderr);
      assert.deepEqual(await run(), { v: 1 });
      const pinned = await api(server, 'POST', '/v1/executions?wait=60s', {
        key: keys.execute,
        body: { agent: 'versioned@2' },
      });
      assert.deepEqual(pinned.json.output, { v: 2 });
      const removed = await cli(['agents', 'rm', 'versioned', '--yes'], cliEnv);
      assert.equal(removed.code, 0, removed.stderr);
      const gone = await api(server, 'GET', '/v1/agents/versioned', { key: keys.read });
      assert.equal(gone.status, 404);
      const ls = await cli(['agents', 'ls', '-o', 'json'], cliEnv);
      assert.ok(!JSON.parse(ls.stdout).agents.some((a: { name: string }) => a.name === 'versioned'));
    });

    it('rejects malformed bodies with the JSON path, oversized ones with 413, and hostile bundles cleanly', async () => {
      const cases: [string, Parameters<typeof api>[3], number, RegExp][] = [
        ['invalid JSON', { key: keys.execute, body: '{"agent": ' }, 400, /not valid JSON/],
        [
          'unknown field',
          { key: keys.execute, body: { agent: 'ticker', inptu: {} } },
          400,
          /body\.inptu: unknown field/,
        ],
        ['wrong type', { key: keys.execute, body: { agent: 42 } }, 400, /body\.agent/],
        ['bad selector', { key: keys.execute, body: { agent: 'No Such/Agent' } }, 400, /not an agent name/],
        ['unknown agent', { key: keys.execute, body: { agent: 'nobody' } }, 404, /no agent named nobody/],
        [
          'too large',
          { key: keys.execute, body: { agent: 'ticker', input: 'x'.repeat(2 * 1024 * 1024) } },
          413,
          /size cap/,
        ],
        ['bad wait', { key: keys.execute, body: { agent: 'ticker' } }, 400, /wait/],
      ];
      for (const [name, options, status, pattern] of cases) {
        const path = name === 'bad wait' ? '/v1/executions?wait=forever' : '/v1/executions';
        const response = await api(server, 'POST', path, options);
        assert.equal(response.status, status, `${name}: ${response.text}`);
        assert.match(JSON.stringify(response.json.error), pattern, name);
      }
      const badCursor = await api(server, 'GET', '/v1/executions?cursor=garbage', { key: keys.read });
      assert.equal(badCursor.status, 400);
      assert.match(badCursor.json.error.message, /cursor/);
      const noRoute = await api(server, 'GET', '/v1/nope', { key: keys.read });
      assert.equal(noRoute.status, 404);

      const yaml =
        'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: evil }\nspec:\n  runtime: { language: python, entrypoint: main.py }\n';
      const bundles: [string, Uint8Array, number, RegExp][] = [
        ['random bytes', Buffer.from('definitely not a tarball'), 400, /gzip|tar/],
        [
          'path traversal',
          await tarGz([
            { name: 'agent.yaml', body: yaml },
            { name: '../escape.py', body: 'x' },
          ]),
          400,
          /\.\./,
        ],
        [
          'absolute path',
          await tarGz([
            { name: 'agent.yaml', body: yaml },
            { name: '/etc/cron.d/x', body: 'x' },
          ]),
          400,
          /absolute/,
        ],
        [
          'symlink',
          await tarGz([
            { name: 'agent.yaml', body: yaml },
            { name: 'main.py', type: 'symlink' },
          ]),
          400,
          /link/,
        ],
        ['no manifest', await tarGz([{ name: 'main.py', body: 'print(1)' }]), 400, /agent\.yaml/],
        [
          'bad manifest',
          await tarGz([{ name: 'agent.yaml', body: 'apiVersion: nope\n' }]),
          400,
          /"file":"agent\.yaml","line":1,"column":13/,
        ],
        [
          'huge file',
          await tarGz([
            { name: 'agent.yaml', body: yaml },
            { name: 'main.py', body: Buffer.alloc(65 * 1024 * 1024) },
          ]),
          413,
          /cap/,
        ],
      ];
      for (const [name, bytes, status, pattern] of bundles) {
        const response = await api(server, 'POST', '/v1/agents', { key: keys.deploy, raw: bytes });
        assert.equal(response.status, status, `${name}: ${response.text}`);
        assert.match(JSON.stringify(response.json.error), pattern, name);
      }
      const agents = await api(server, 'GET', '/v1/agents', { key: keys.read });
      assert.ok(!agents.json.agents.some((a: { name: string }) => a.name === 'evil'), 'nothing deployed');
      const wrongType = await api(server, 'POST', '/v1/agents', {
        key: keys.deploy,
        body: { not: 'a bundle' },
      });
      assert.equal(wrongType.status, 415, wrongType.text);
      assert.equal(wrongType.json.error.code, 'UNSUPPORTED_MEDIA_TYPE');
    });

    it('trusts the unix socket as the local user (no key), and only there', async () => {
      const viaSocket = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpRequest({ socketPath: server.socketPath, path: '/v1/keys', method: 'GET' }, (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end();
      });
      assert.equal(viaSocket.status, 200, viaSocket.body);
      assert.ok(JSON.parse(viaSocket.body).keys.length >= 5);
      const spoofed = await api(server, 'GET', '/v1/keys', {
        headers: { 'x-forwarded-for': 'unix', host: 'localhost' },
      });
      assert.equal(spoofed.status, 401);
    });
  });
}
