/**
 * AegisClient against a stub HTTP server (node:http on 127.0.0.1:0, and on a unix socket) that answers with the
 * REST API's shapes: error mapping, retries, SSE parsing and resumption, both transports.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import {
  AegisApiError,
  AegisClient,
  type Execution,
  type LogLine,
  type LogStreamItem,
  SseParser,
} from './index.ts';

type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

class Stub {
  readonly server: Server;
  handler: Handler = (_req, res) => reply(res, 404, notFound());
  seen: Seen[] = [];

  constructor() {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        this.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
        this.handler(req, res, body);
      });
    });
  }

  reset(): void {
    this.seen = [];
    this.handler = (_req, res) => reply(res, 404, notFound());
  }
}

function reply(
  res: ServerResponse,
  status: number,
  body?: unknown,
  headers: Record<string, string> = {},
): void {
  if (body === undefined) {
    res.writeHead(status, headers).end();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
}

function apiError(code: string, message: string, details: Record<string, unknown> = {}) {
  return { error: { code, message, details } };
}
const notFound = () => apiError('NOT_FOUND', 'no such route');

function execution(id: string, status: Execution['status'], output: unknown = null): Execution {
  return {
    id,
    agent: { name: 'hello', version: '1.0.0', revision: 1 },
    runtime: 'sandbox',
    status,
    exitCode: status === 'succeeded' ? 0 : null,
    reason: null,
    input: null,
    output,
    violations: [],
    createdAt: '2025-01-01T00:00:00.000Z',
    startedAt: null,
    finishedAt: null,
    durationMs: null,
    usage: { llm: null },
    parentId: null,
    rootId: null,
    node: null,
  };
}

function logLine(seq: number, text = `line ${seq}`): LogLine {
  return { seq, ts: '2025-01-01T00:00:00.000Z', stream: 'stdout', text };
}

function sseLog(line: LogLine): string {
  return `event: log\nid: ${line.seq}\ndata: ${JSON.stringify(line)}\n\n`;
}

async function collect(iterable: AsyncIterable<LogStreamItem>): Promise<LogStreamItem[]> {
  const items: LogStreamItem[] = [];
  for await (const item of iterable) items.push(item);
  return items;
}

const stub = new Stub();
let base = '';
const KEY = `aegis_${'a'.repeat(64)}`;
let client: AegisClient;

before(async () => {
  stub.server.listen(0, '127.0.0.1');
  await once(stub.server, 'listening');
  base = `http://127.0.0.1:${(stub.server.address() as AddressInfo).port}`;
  client = new AegisClient({ server: base, apiKey: KEY, userAgent: 'sdk-test/1' });
});
after(() => {
  stub.server.closeAllConnections();
  stub.server.close();
});
beforeEach(() => stub.reset());

describe('AegisClient: requests and answers', () => {
  it('sends the key, user agent and JSON body, and returns the parsed answer', async () => {
    stub.handler = (req, res) => {
      if (req.method === 'POST' && req.url === '/v1/executions?wait=30s') {
        reply(res, 200, execution('ex_1', 'succeeded', { ok: true }));
      } else reply(res, 404, notFound());
    };
    const result = await client.createExecution(
      { agent: 'hello@1', input: { name: 'Ada' } },
      { wait: '30s' },
    );
    assert.equal(result.id, 'ex_1');
    assert.deepEqual(result.output, { ok: true });
    const [seen] = stub.seen;
    assert.equal(seen?.headers['authorization'], `Bearer ${KEY}`);
    assert.equal(seen?.headers['user-agent'], 'sdk-test/1');
    assert.equal(seen?.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(seen!.body.toString()), { agent: 'hello@1', input: { name: 'Ada' } });
  });

  it('uploads a bundle as application/gzip and unwraps list answers', async () => {
    const summary = { name: 'hello', activeRevision: 1 };
    stub.handler = (req, res, body) => {
      if (req.url === '/v1/agents' && req.method === 'POST') {
        reply(res, 201, { agent: summary, revision: { revision: 1, size: body.length }, created: true });
      } else if (req.url === '/v1/agents' && req.method === 'GET') reply(res, 200, { agents: [summary] });
      else if (req.url === '/v1/agents/hello' && req.method === 'DELETE') reply(res, 204);
      else reply(res, 404, notFound());
    };
    const bytes = new Uint8Array([0x1f, 0x8b, 8, 0, 1, 2, 3]);
    const deployed = await client.deploy(bytes);
    assert.equal(deployed.created, true);
    assert.equal(stub.seen[0]?.headers['content-type'], 'application/gzip');
    assert.deepEqual(new Uint8Array(stub.seen[0]!.body), bytes);
    assert.deepEqual(await client.listAgents(), [summary]);
    assert.equal(await client.deleteAgent('hello'), undefined);
  });

  it('builds query strings, leaving unset options out, and escapes path segments', async () => {
    stub.handler = (_req, res) => reply(res, 200, { executions: [], nextCursor: null });
    await client.listExecutions({ agent: 'hello', limit: 5 });
    await client.listExecutions();
    stub.handler = (_req, res) => reply(res, 200, { lines: [], status: 'running', nextAfter: 0 });
    await client.logs('ex/../x', { after: 3 });
    assert.deepEqual(
      stub.seen.map((s) => s.url),
      ['/v1/executions?agent=hello&limit=5', '/v1/executions', '/v1/executions/ex%2F..%2Fx/logs?after=3'],
    );
  });

  it('keeps a path prefix of the server URL', async () => {
    stub.handler = (_req, res) => reply(res, 200, { status: 'ok' });
    const prefixed = new AegisClient({ server: `${base}/aegis/` });
    assert.deepEqual(await prefixed.health(), { status: 'ok' });
    assert.equal(stub.seen[0]?.url, '/aegis/healthz');
    assert.equal(stub.seen[0]?.headers['authorization'], undefined);
  });
});

describe('AegisClient: errors', () => {
  it('maps an error body to AegisApiError with code, status, hint and problems', async () => {
    stub.handler = (_req, res) =>
      reply(
        res,
        400,
        apiError('MANIFEST_INVALID', 'agent.yaml is invalid', {
          hint: 'fix the manifest',
          problems: [
            { path: 'spec.limits.memory', message: 'not a size', file: 'agent.yaml', line: 7, column: 13 },
          ],
        }),
      );
    const error = await client.deploy(new Uint8Array([1])).then(
      () => assert.fail('expected an error'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof AegisApiError);
    assert.equal(error.code, 'MANIFEST_INVALID');
    assert.equal(error.status, 400);
    assert.equal(error.message, 'agent.yaml is invalid');
    assert.equal(error.hint, 'fix the manifest');
    assert.deepEqual(error.problems, [
      { path: 'spec.limits.memory', message: 'not a size', file: 'agent.yaml', line: 7, column: 13 },
    ]);
    assert.equal(error.retryable, false);
    assert.equal(stub.seen.length, 1);
  });

  it('does not retry a 400, even on a GET', async () => {
    stub.handler = (_req, res) => reply(res, 400, apiError('USAGE', 'bad query'));
    await assert.rejects(client.listExecutions({ limit: 5 }), { code: 'USAGE', status: 400 });
    assert.equal(stub.seen.length, 1);
  });

  it('turns an answer that is not an AEGIS error into one, by status', async () => {
    stub.handler = (_req, res) =>
      res.writeHead(404, { 'content-type': 'text/html' }).end('<h1>Not Found</h1>');
    await assert.rejects(client.getAgent('x'), (error: unknown) => {
      assert.ok(error instanceof AegisApiError);
      assert.equal(error.code, 'NOT_FOUND');
      assert.match(error.message, /HTTP 404 Not Found: <h1>Not Found<\/h1>/);
      assert.match(error.hint ?? '', /an AEGIS server\?/);
      return true;
    });
  });

  it('reports an unreachable server as UNAVAILABLE with status 0', async () => {
    const probe = createServer();
    probe.listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const port = (probe.address() as AddressInfo).port;
    probe.close();
    await once(probe, 'close');
    const down = new AegisClient({ server: `http://127.0.0.1:${port}`, retry: { attempts: 2 } });
    await assert.rejects(down.listAgents(), (error: unknown) => {
      assert.ok(error instanceof AegisApiError);
      assert.equal(error.code, 'UNAVAILABLE');
      assert.equal(error.status, 0);
      assert.match(
        error.message,
        new RegExp(`cannot reach the AEGIS server at http://127.0.0.1:${port} \\(ECONNREFUSED\\)`),
      );
      return true;
    });
  });

  it('refuses a server option it cannot use', () => {
    assert.throws(() => new AegisClient({ server: 'ftp://x' }), { code: 'USAGE' });
    assert.throws(() => new AegisClient({ server: 'unix:relative.sock' }), { code: 'USAGE' });
    assert.throws(() => new AegisClient({ server: 'http://user:pw@host' }), { code: 'USAGE' });
    assert.throws(() => new AegisClient({ server: 'not a url' }), { code: 'USAGE' });
  });
});

describe('AegisClient: retries', () => {
  it('retries createExecution after 429 QUEUE_FULL, honouring Retry-After', async () => {
    let calls = 0;
    stub.handler = (_req, res) => {
      calls += 1;
      if (calls === 1) {
        reply(res, 429, apiError('QUEUE_FULL', 'the queue is full'), { 'retry-after': '1' });
      } else reply(res, 202, execution('ex_2', 'queued'));
    };
    const started = Date.now();
    const result = await client.createExecution({ agent: 'hello' });
    assert.equal(result.id, 'ex_2');
    assert.equal(calls, 2);
    assert.ok(Date.now() - started >= 950, `waited ${Date.now() - started} ms, Retry-After said 1 s`);
  });

  it('prefers details.retryAfterMs and gives up after the attempts, keeping retryAfterMs', async () => {
    stub.handler = (_req, res) =>
      reply(res, 429, apiError('RATE_LIMITED', 'slow down', { retryAfterMs: 20 }), { 'retry-after': '1' });
    const started = Date.now();
    await assert.rejects(client.createExecution({ agent: 'hello' }), (error: unknown) => {
      assert.ok(error instanceof AegisApiError);
      assert.equal(error.code, 'RATE_LIMITED');
      assert.equal(error.retryAfterMs, 20);
      assert.equal(error.retryable, true);
      return true;
    });
    assert.equal(stub.seen.length, 3);
    assert.ok(Date.now() - started < 900, 'used retryAfterMs (20 ms), not Retry-After (1 s)');
  });

  it('does not retry createExecution on 503 (it may have been created) nor wait past maxDelayMs', async () => {
    stub.handler = (_req, res) =>
      reply(res, 503, apiError('UNAVAILABLE', 'draining'), { 'retry-after': '1' });
    await assert.rejects(client.createExecution({ agent: 'hello' }), { code: 'UNAVAILABLE', status: 503 });
    assert.equal(stub.seen.length, 1);
    stub.reset();
    stub.handler = (_req, res) => reply(res, 429, apiError('QUEUE_FULL', 'full'), { 'retry-after': '120' });
    await assert.rejects(client.createExecution({ agent: 'hello' }), { code: 'QUEUE_FULL' });
    assert.equal(stub.seen.length, 1);
  });

  it('retries a GET after 503 and after a dropped connection', async () => {
    let calls = 0;
    stub.handler = (req, res) => {
      calls += 1;
      if (calls === 1) reply(res, 503, apiError('UNAVAILABLE', 'starting'), { 'retry-after': '0' });
      else if (calls === 2) req.socket.destroy();
      else reply(res, 200, execution('ex_3', 'running'));
    };
    const result = await client.getExecution('ex_3');
    assert.equal(result.status, 'running');
    assert.equal(calls, 3);
  });

  it('does not retry a write after a dropped connection, nor with retries turned off', async () => {
    stub.handler = (req) => req.socket.destroy();
    await assert.rejects(client.cancelExecution('ex_4'), { code: 'UNAVAILABLE', status: 0 });
    assert.equal(stub.seen.length, 1);
    stub.reset();
    stub.handler = (_req, res) =>
      reply(res, 503, apiError('UNAVAILABLE', 'starting'), { 'retry-after': '0' });
    const once = new AegisClient({ server: base, retry: { attempts: 1 } });
    await assert.rejects(once.listKeys(), { code: 'UNAVAILABLE', status: 503 });
    assert.equal(stub.seen.length, 1);
  });
});

describe('SseParser', () => {
  it('joins multi-line data, skips comments, keeps the last id, reads retry', () => {
    const parser = new SseParser();
    const events = parser.push(
      ': ping\n\nevent: log\nid: 7\ndata: first\ndata:second\ndata\n\nretry: 250\n\n',
    );
    assert.deepEqual(events, [{ type: 'log', data: 'first\nsecond\n', lastEventId: '7' }]);
    assert.equal(parser.retryMs, 250);
    assert.deepEqual(parser.push('data: x\n\n'), [{ type: 'message', data: 'x', lastEventId: '7' }]);
  });

  it('handles CRLF, lone CR, a CR/LF pair split across chunks, a BOM and any chunking', () => {
    const text = '\ufeffevent: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\rdata: 3\n\n';
    const whole = new SseParser().push(text);
    assert.deepEqual(
      whole.map((e) => [e.type, e.data]),
      [
        ['a', '1'],
        ['b', '2'],
        ['message', '3'],
      ],
    );
    for (let size = 1; size <= 5; size++) {
      const parser = new SseParser();
      const events = [];
      for (let i = 0; i < text.length; i += size) events.push(...parser.push(text.slice(i, i + size)));
      assert.deepEqual(events, whole, `chunks of ${size}`);
    }
  });

  it('does not dispatch an event without data nor one cut off by the end of the stream', () => {
    const parser = new SseParser();
    assert.deepEqual(parser.push('event: end\n\nevent: log\ndata: half'), []);
    parser.end();
    assert.deepEqual(parser.push('\n\n'), []);
  });
});

describe('AegisClient.followLogs', () => {
  it('streams lines then the end, resuming with Last-Event-ID after a dropped connection', async () => {
    let connections = 0;
    stub.handler = (req, res) => {
      connections += 1;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
      if (connections === 1) {
        res.write(`retry: 10\n\n: ping\n\n${sseLog(logLine(1))}${sseLog(logLine(2))}`);
        // Half an event, then the connection drops.
        res.write('event: log\nid: 3\ndata: {"seq":3,');
        setTimeout(() => req.socket.destroy(), 20);
      } else {
        res.write(sseLog(logLine(2)));
        res.write(sseLog(logLine(3, 'multi\nline')));
        res.end(`event: end\ndata: ${JSON.stringify(execution('ex_5', 'succeeded', { n: 3 }))}\n\n`);
      }
    };
    const items = await collect(client.followLogs('ex_5'));
    assert.deepEqual(
      items.map((i) => (i.type === 'line' ? i.line.seq : i.execution.status)),
      [1, 2, 3, 'succeeded'],
    );
    assert.equal(items[2]?.type === 'line' && items[2].line.text, 'multi\nline');
    assert.equal(stub.seen.length, 2);
    assert.equal(stub.seen[0]?.url, '/v1/executions/ex_5/logs?follow=true');
    assert.equal(stub.seen[0]?.headers['accept'], 'text/event-stream');
    assert.equal(stub.seen[0]?.headers['last-event-id'], undefined);
    assert.equal(stub.seen[1]?.url, '/v1/executions/ex_5/logs?follow=true&after=2');
    assert.equal(stub.seen[1]?.headers['last-event-id'], '2');
  });

  it('reconnects when the stream goes silent, and starts after `after`', async () => {
    const idle = new AegisClient({ server: base, streamIdleTimeoutMs: 150 });
    let connections = 0;
    stub.handler = (_req, res) => {
      connections += 1;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (connections === 1) res.write(`retry: 10\n\n${sseLog(logLine(5))}`);
      else res.end(`event: end\ndata: ${JSON.stringify(execution('ex_6', 'failed'))}\n\n`);
    };
    const items = await collect(idle.followLogs('ex_6', { after: 4 }));
    assert.deepEqual(
      items.map((i) => i.type),
      ['line', 'end'],
    );
    assert.equal(stub.seen[0]?.headers['last-event-id'], '4');
    assert.equal(stub.seen[1]?.headers['last-event-id'], '5');
  });

  it('waits out a restarting server (503, refused) once streaming, but not before the first connection', async () => {
    const impatient = new AegisClient({ server: base, retry: { attempts: 1 } });
    let connections = 0;
    stub.handler = (req, res) => {
      connections += 1;
      if (connections === 1) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(sseLog(logLine(1)));
        setTimeout(() => req.socket.destroy(), 10);
      } else if (connections === 2) {
        reply(res, 503, apiError('UNAVAILABLE', 'starting'), { 'retry-after': '0' });
      } else if (connections === 3) {
        req.socket.destroy();
      } else {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end(
          `${sseLog(logLine(2))}event: end\ndata: ${JSON.stringify(execution('ex_r', 'succeeded'))}\n\n`,
        );
      }
    };
    const items = await collect(impatient.followLogs('ex_r'));
    assert.deepEqual(
      items.map((i) => (i.type === 'line' ? i.line.seq : i.type)),
      [1, 2, 'end'],
    );
    assert.equal(connections, 4);
    assert.equal(stub.seen[3]?.headers['last-event-id'], '1');

    stub.reset();
    stub.handler = (_req, res) =>
      reply(res, 503, apiError('UNAVAILABLE', 'starting'), { 'retry-after': '0' });
    await assert.rejects(collect(impatient.followLogs('ex_r')), { code: 'UNAVAILABLE', status: 503 });
    assert.equal(stub.seen.length, 1);
  });

  it('throws API errors at once and stops on the signal', async () => {
    stub.handler = (_req, res) => reply(res, 404, apiError('NOT_FOUND', 'no execution ex_7'));
    await assert.rejects(collect(client.followLogs('ex_7')), { code: 'NOT_FOUND', status: 404 });
    assert.equal(stub.seen.length, 1);

    stub.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(sseLog(logLine(1)));
    };
    const controller = new AbortController();
    const lines: number[] = [];
    await assert.rejects(
      (async () => {
        for await (const item of client.followLogs('ex_8', { signal: controller.signal })) {
          if (item.type === 'line') lines.push(item.line.seq);
          controller.abort();
        }
      })(),
      { name: 'AbortError' },
    );
    assert.deepEqual(lines, [1]);
  });

  it('gives up after the reconnect budget when the stream never progresses', async () => {
    const flaky = new AegisClient({ server: base, streamReconnects: 2 });
    stub.handler = (_req, res) =>
      res.writeHead(200, { 'content-type': 'text/event-stream' }).end('retry: 5\n\n');
    await assert.rejects(collect(flaky.followLogs('ex_9')), {
      code: 'UNAVAILABLE',
      message: /dropped 3 times/,
    });
    assert.equal(stub.seen.length, 3);
  });
});

describe('AegisClient over a unix socket', () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-sdk-'));
  const socketPath = join(dir, 'aegis.sock');
  const unixStub = new Stub();
  before(async () => {
    unixStub.server.listen(socketPath);
    await once(unixStub.server, 'listening');
  });
  after(() => {
    unixStub.server.closeAllConnections();
    unixStub.server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('talks HTTP over the socket and never sends the key there', async () => {
    unixStub.handler = (req, res) => {
      if (req.url === '/v1/keys') reply(res, 200, { keys: [] });
      else if (req.url?.startsWith('/v1/executions/ex_u/logs')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end(
          `${sseLog(logLine(1))}event: end\ndata: ${JSON.stringify(execution('ex_u', 'succeeded'))}\n\n`,
        );
      } else reply(res, 404, notFound());
    };
    for (const server of [`unix:${socketPath}`, `unix://${socketPath}`]) {
      const local = new AegisClient({ server, apiKey: KEY });
      assert.equal(local.isUnixSocket, true);
      assert.equal(local.server, `unix:${socketPath}`);
      assert.deepEqual(await local.listKeys(), []);
      const items = await collect(local.followLogs('ex_u'));
      assert.deepEqual(
        items.map((i) => i.type),
        ['line', 'end'],
      );
    }
    assert.equal(unixStub.seen[0]?.headers['authorization'], undefined);
    assert.equal(unixStub.seen[0]?.headers['host'], 'localhost');
  });

  it('reports a missing socket as UNAVAILABLE', async () => {
    const missing = new AegisClient({ server: `unix:${join(dir, 'nope.sock')}`, retry: { attempts: 1 } });
    await assert.rejects(missing.health(), { code: 'UNAVAILABLE', status: 0, message: /ENOENT/ });
  });
});
