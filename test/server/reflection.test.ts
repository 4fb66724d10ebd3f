/**
 * gRPC server reflection against a real server, with the real `buf curl` (both reflection protocols) and a Connect
 * client for the edge cases: unknown names, dependencies not resent, oversized requests, and that reflection
 * (anonymous by design, ADR 0055) opens nothing else.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { create, fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import {
  ExtensionRequestSchema,
  ServerReflection,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from '../../src/api/grpc/gen/grpc/reflection/v1/reflection_pb.ts';
import {
  killServers,
  ROOT,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

const BUF = join(ROOT, 'node_modules/.bin/buf');

interface BufResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function bufCurl(args: readonly string[]): Promise<BufResult> {
  return new Promise((resolve) => {
    execFile(
      BUF,
      ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', ...args],
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Sends `requests` on one reflection stream and collects the answers. */
async function reflect(
  client: ReturnType<typeof createClient<typeof ServerReflection>>,
  requests: readonly ServerReflectionRequest['messageRequest'][],
): Promise<ServerReflectionResponse[]> {
  async function* send() {
    for (const messageRequest of requests) yield { messageRequest };
  }
  const answers: ServerReflectionResponse[] = [];
  for await (const answer of client.serverReflectionInfo(send())) answers.push(answer);
  return answers;
}

after(killServers);

describe('gRPC server reflection', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let sessions: Http2SessionManager;
  let client: ReturnType<typeof createClient<typeof ServerReflection>>;

  before(async () => {
    dirs = serverDirs();
    server = await startServerProcess({ dirs });
    sessions = new Http2SessionManager(server.url);
    client = createClient(
      ServerReflection,
      createGrpcTransport({ baseUrl: server.url, sessionManager: sessions }),
    );
  });

  after(async () => {
    sessions?.abort();
    if (server) assert.equal(await server.stop(), 0, server.stderr());
    dirs?.cleanup();
  });

  for (const protocol of ['grpc-v1', 'grpc-v1alpha'] as const) {
    it(`buf curl --reflect-protocol ${protocol}: lists the services and calls an RPC found by reflection`, async () => {
      const listed = await bufCurl(['--reflect-protocol', protocol, '--list-services', server.url]);
      assert.equal(listed.code, 0, listed.stderr);
      const services = listed.stdout.trim().split('\n');
      for (const name of [
        'aegis.v1.AgentService',
        'aegis.v1.ExecutionService',
        'grpc.reflection.v1.ServerReflection',
      ]) {
        assert.ok(services.includes(name), `${name} in ${listed.stdout}`);
      }

      const methods = await bufCurl(['--reflect-protocol', protocol, '--list-methods', server.url]);
      assert.equal(methods.code, 0, methods.stderr);
      assert.match(methods.stdout, /^aegis\.v1\.ExecutionService\/CreateExecution$/m);

      // A unary RPC: buf curl learns its request and response types (and their dependencies) by reflection.
      const called = await bufCurl([
        '--reflect-protocol',
        protocol,
        '-H',
        `authorization: Bearer ${server.adminKey}`,
        '-d',
        '{"limit": 5}',
        `${server.url}/aegis.v1.ExecutionService/ListExecutions`,
      ]);
      assert.equal(called.code, 0, called.stderr);
      assert.deepEqual(JSON.parse(called.stdout), {});
    });
  }

  it('attack: reflection needs no key, but the RPCs it reveals still refuse a caller without one', async () => {
    const anonymous = await bufCurl(['-d', '{}', `${server.url}/aegis.v1.AgentService/ListAgents`]);
    assert.notEqual(anonymous.code, 0);
    assert.match(anonymous.stderr, /unauthenticated/);
    const forged = await bufCurl([
      '-H',
      'authorization: Bearer aegis_0000000000000000000000000000000000000000000000000000000000000000',
      '-d',
      '{}',
      `${server.url}/aegis.v1.AgentService/ListAgents`,
    ]);
    assert.notEqual(forged.code, 0);
    assert.match(forged.stderr, /unauthenticated/);
  });

  it('answers unknown names with an error response and keeps the stream; sends each dependency once', async () => {
    const answers = await reflect(client, [
      { case: 'fileContainingSymbol', value: 'aegis.v1.Nope' },
      { case: 'fileByFilename', value: '../../etc/passwd' },
      {
        case: 'fileContainingExtension',
        value: create(ExtensionRequestSchema, {
          containingType: 'aegis.v1.Execution',
          extensionNumber: 1000,
        }),
      },
      { case: undefined },
      { case: 'fileContainingSymbol', value: 'aegis.v1.AgentService.Deploy' },
      { case: 'fileContainingSymbol', value: 'aegis.v1.ExecutionService' },
      { case: 'allExtensionNumbersOfType', value: 'aegis.v1.Execution' },
    ]);
    assert.equal(answers.length, 7);
    const errors = answers.slice(0, 4).map((a) => {
      assert.equal(a.messageResponse.case, 'errorResponse');
      return a.messageResponse.value;
    });
    assert.deepEqual(
      errors.map((e) => e.errorCode),
      [Code.NotFound, Code.NotFound, Code.NotFound, Code.InvalidArgument],
    );
    assert.match(errors[0]!.errorMessage, /no symbol "aegis\.v1\.Nope"/);
    assert.equal(answers[0]!.originalRequest?.messageRequest.value, 'aegis.v1.Nope');

    const names = (answer: ServerReflectionResponse) => {
      assert.equal(answer.messageResponse.case, 'fileDescriptorResponse');
      return answer.messageResponse.value.fileDescriptorProto.map(
        (bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name,
      );
    };
    const agentsFiles = names(answers[4]!);
    assert.equal(agentsFiles[0], 'aegis/v1/agents.proto');
    const executionsFiles = names(answers[5]!);
    assert.equal(executionsFiles[0], 'aegis/v1/executions.proto');
    // What agents.proto pulled in already is not sent again on the same stream.
    for (const name of executionsFiles.slice(1)) assert.ok(!agentsFiles.includes(name), name);
    const extensions = answers[6]!.messageResponse;
    assert.equal(extensions.case, 'allExtensionNumbersResponse');
    assert.equal(extensions.value.baseTypeName, 'aegis.v1.Execution');
    assert.deepEqual(extensions.value.extensionNumber, []);
  });

  it('attack: an oversized reflection request is refused (the anonymous service has its own 64 KiB cap)', async () => {
    await assert.rejects(
      reflect(client, [{ case: 'fileContainingSymbol', value: 'a'.repeat(256 * 1024) }]),
      (error: unknown) => error instanceof ConnectError && error.code === Code.ResourceExhausted,
    );
    // The server is fine afterwards.
    const [answer] = await reflect(client, [{ case: 'listServices', value: '' }]);
    assert.equal(answer?.messageResponse.case, 'listServicesResponse');
  });
});
