/**
 * The cluster over gRPC against a real server: `aegis.v1.NodeService/ListNodes` (the registry, as GET /v1/nodes),
 * `node` on the Execution message (as REST's `node`), and reflection listing the service (`buf curl`).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError, createClient, type Interceptor } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { ExecutionService } from '../../src/api/grpc/gen/aegis/v1/executions_pb.ts';
import { NodeService } from '../../src/api/grpc/gen/aegis/v1/nodes_pb.ts';
import {
  apiCall,
  cli,
  killServers,
  ROOT,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

const BUF = join(ROOT, 'node_modules/.bin/buf');

function bufCurl(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      BUF,
      ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', ...args],
      (error, stdout, stderr) => {
        resolve({
          code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1,
          stdout,
          stderr,
        });
      },
    );
  });
}

const temps: string[] = [];
after(async () => {
  await killServers();
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

describe('gRPC NodeService and Execution.node (real server)', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let sessions: Http2SessionManager;

  const clients = (key: string | undefined) => {
    const bearer: Interceptor = (next) => (request) => {
      if (key !== undefined) request.header.set('authorization', `Bearer ${key}`);
      return next(request);
    };
    const transport = createGrpcTransport({
      baseUrl: server.url,
      sessionManager: sessions,
      interceptors: [bearer],
    });
    return {
      nodes: createClient(NodeService, transport),
      executions: createClient(ExecutionService, transport),
    };
  };

  before(async () => {
    dirs = serverDirs();
    server = await startServerProcess({ dirs, args: ['--node-id', 'node-grpc', '--label', 'zone=g'] });
    sessions = new Http2SessionManager(server.url);
  });

  after(async () => {
    sessions?.abort();
    if (server) assert.equal(await server.stop(), 0, server.stderr());
    dirs?.cleanup();
  });

  it('ListNodes answers the registry as GET /v1/nodes does', async () => {
    const { nodes } = await clients(server.adminKey).nodes.listNodes({});
    const rest = await apiCall(server.url, server.adminKey, 'GET', '/v1/nodes');
    assert.equal(rest.status, 200, rest.text);
    const restNodes = rest.json['nodes'] as Record<string, unknown>[];
    assert.deepEqual(
      nodes.map((n) => n.id),
      restNodes.map((n) => n['id']),
    );
    const node = nodes.find((n) => n.id === 'node-grpc');
    assert.ok(node, JSON.stringify(restNodes));
    const same = restNodes.find((n) => n['id'] === 'node-grpc')!;
    assert.equal(node.kind, 'server');
    assert.equal(node.state, 'live');
    assert.deepEqual(node.labels, { zone: 'g' });
    assert.deepEqual(node.runtimes, same['runtimes']);
    assert.equal(node.capacity, same['capacity']);
    assert.ok(node.capacity > 0);
    assert.equal(node.epoch, BigInt(same['epoch'] as number));
    assert.ok(node.epoch >= 1n);
    assert.equal(node.startedAt, same['startedAt']);
    assert.ok(node.heartbeatAgeMs >= 0n);
    assert.ok(Date.parse(node.leaseExpiresAt) > 0, node.leaseExpiresAt);
  });

  it('attack: ListNodes without a key, or with a forged one, is refused (Unauthenticated)', async () => {
    for (const key of [undefined, `aegis_${'0'.repeat(64)}`]) {
      await assert.rejects(
        clients(key).nodes.listNodes({}),
        (error: unknown) => error instanceof ConnectError && error.code === Code.Unauthenticated,
      );
    }
  });

  it('an execution carries the node that ran it, as REST does', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-grpc-nodes-agent-'));
    temps.push(dir);
    writeFileSync(
      join(dir, 'agent.yaml'),
      'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: grpc-node-echo }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n',
    );
    writeFileSync(join(dir, 'main.sh'), 'echo \'{"ok":true}\'\n');
    const env = { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey };
    const deployed = await cli(['deploy', join(dir, 'agent.yaml')], env);
    assert.equal(deployed.code, 0, deployed.stderr);

    const { executions } = clients(server.adminKey);
    const done = await executions.createExecution({
      agent: 'grpc-node-echo',
      inputJson: '{}',
      waitMs: 60_000,
    });
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
    assert.equal(done.node, 'node-grpc');
    const rest = await apiCall(server.url, server.adminKey, 'GET', `/v1/executions/${done.id}`);
    assert.equal(rest.json['node'], done.node);
    const listed = await executions.listExecutions({ agent: 'grpc-node-echo' });
    assert.equal(listed.executions[0]?.node, 'node-grpc');
  });

  it('reflection lists NodeService; buf curl calls ListNodes by reflection', async () => {
    const listed = await bufCurl(['--list-services', server.url]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.ok(listed.stdout.trim().split('\n').includes('aegis.v1.NodeService'), listed.stdout);
    const called = await bufCurl([
      '-H',
      `authorization: Bearer ${server.adminKey}`,
      '-d',
      '{}',
      `${server.url}/aegis.v1.NodeService/ListNodes`,
    ]);
    assert.equal(called.code, 0, called.stderr);
    const answer = JSON.parse(called.stdout) as { nodes: { id: string; epoch: string }[] };
    assert.ok(
      answer.nodes.some((n) => n.id === 'node-grpc'),
      called.stdout,
    );
  });
});
