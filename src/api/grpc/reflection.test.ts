import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Code, ConnectError, createClient, createRouterTransport } from '@connectrpc/connect';
import { AgentService } from './gen/aegis/v1/agents_pb.ts';
import { ExecutionService } from './gen/aegis/v1/executions_pb.ts';
import { ServerReflection } from './gen/grpc/reflection/v1/reflection_pb.ts';
import { REFLECTION_MAX_REQUESTS_PER_STREAM, registerReflection } from './reflection.ts';

/** An in-memory server with reflection registered first and the API services after it. */
function reflectionClient() {
  const transport = createRouterTransport((router) => {
    registerReflection(router);
    router.service(AgentService, {});
    router.service(ExecutionService, {});
  });
  return createClient(ServerReflection, transport);
}

describe('gRPC reflection service', () => {
  it('lists every service on the router, also those registered after it', async () => {
    async function* one() {
      yield { messageRequest: { case: 'listServices' as const, value: '*' } };
    }
    const names: string[] = [];
    for await (const answer of reflectionClient().serverReflectionInfo(one())) {
      assert.equal(answer.messageResponse.case, 'listServicesResponse');
      names.push(...answer.messageResponse.value.service.map((s) => s.name));
    }
    assert.deepEqual(names, [
      'aegis.v1.AgentService',
      'aegis.v1.ExecutionService',
      'grpc.reflection.v1.ServerReflection',
      'grpc.reflection.v1alpha.ServerReflection',
    ]);
  });

  it('attack: an endless stream of requests is cut off with resource_exhausted', async () => {
    async function* endless() {
      for (;;) yield { messageRequest: { case: 'fileContainingSymbol' as const, value: 'aegis.v1.Nope' } };
    }
    let answered = 0;
    await assert.rejects(
      (async () => {
        for await (const _ of reflectionClient().serverReflectionInfo(endless())) answered += 1;
      })(),
      (error: unknown) => error instanceof ConnectError && error.code === Code.ResourceExhausted,
    );
    assert.equal(answered, REFLECTION_MAX_REQUESTS_PER_STREAM);
  });
});
