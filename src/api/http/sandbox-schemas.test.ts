/**
 * /openapi.json documents the live-sandbox routes: every route the Fastify plugin registers is in SANDBOX_ROUTES
 * (and so in the document) with its method, and nothing is documented that the plugin does not serve. The SDK's
 * hand-written sandbox wire types are the schemas' types (checked by tsc, both ways).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import type { z } from 'zod';
import type * as wire from '../../../sdk/sandbox-wire.ts';
import type { ApiContext } from '../context.ts';
import { buildOpenApi } from './openapi.ts';
import { sandboxRoutes } from './sandbox-routes.ts';
import type * as S from './sandbox-schemas.ts';
import { SANDBOX_ROUTES } from './sandbox-schemas.ts';

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Check<T extends true> = T;
type Mutable<T> = { -readonly [K in keyof T]: T[K] extends readonly (infer U)[] ? U[] : T[K] };
export type SandboxWireAgrees = [
  Check<Same<Mutable<wire.Sandbox>, z.infer<typeof S.Sandbox>>>,
  Check<Same<Mutable<wire.SandboxCommand>, z.infer<typeof S.SandboxCommand>>>,
  Check<Same<Mutable<wire.SandboxFileEntry>, z.infer<typeof S.SandboxFileEntry>>>,
];

async function registeredRoutes(): Promise<Set<string>> {
  const app = Fastify();
  const seen = new Set<string>();
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) {
      if (method !== 'HEAD') seen.add(`${method} ${route.url}`);
    }
  });
  await app.register(
    sandboxRoutes({
      ctx: {} as ApiContext,
      principalOf: async () => {
        throw new Error('not called');
      },
      serverPaths: [],
      streams: new Set(),
    }),
  );
  await app.ready();
  await app.close();
  return seen;
}

describe('/openapi.json: live sandboxes', () => {
  it('documents exactly the routes the sandbox plugin serves', async () => {
    const served = await registeredRoutes();
    const documented = new Set(SANDBOX_ROUTES.map((r) => `${r.method} ${r.path}`));
    assert.ok(served.size >= 15, `only ${served.size} routes seen`);
    assert.deepEqual([...served].sort(), [...documented].sort());
  });

  it('puts each of them in the document with its scope and schemas', () => {
    // biome-ignore lint/suspicious/noExplicitAny: the OpenAPI document is walked field by field
    const doc: any = buildOpenApi({ version: 'test' });
    for (const route of SANDBOX_ROUTES) {
      const path = route.path.replace(/:(\w+)/g, '{$1}');
      const operation = doc.paths[path]?.[route.method.toLowerCase()];
      assert.ok(operation, `${route.method} ${path} is not in /openapi.json`);
      assert.equal(operation.operationId, route.operationId);
      assert.equal(operation['x-aegis-scope'], route.scope);
    }
    const create = doc.paths['/v1/sandboxes'].post;
    assert.deepEqual(create.requestBody.content['application/json'].schema, {
      $ref: '#/components/schemas/CreateSandboxBody',
    });
    assert.equal(doc.components.schemas.Sandbox.properties.status.enum.includes('running'), true);
    const upload = doc.paths['/v1/sandboxes/{id}/files'].put;
    assert.ok(upload.requestBody.content['application/octet-stream']);
    assert.deepEqual(
      upload.parameters.map((p: { name: string; in: string }) => `${p.in}:${p.name}`),
      ['path:id', 'query:path'],
    );
    const events = doc.paths['/v1/sandboxes/{id}/commands/{command}/events'].get;
    assert.ok(events.responses['200'].content['text/event-stream']);
  });
});
