/**
 * The E2B-compatible API (docs/E2B.md), mounted on the API server under `/e2b`: point the official `e2b` SDK's
 * E2B_API_URL at `<server>/e2b` (control plane, control.ts) and E2B_SANDBOX_URL at `<server>/e2b/envd` (data plane:
 * Connect-RPC services in envd.ts, `/files` and `/health` in files.ts).
 */
import { createContextValues } from '@connectrpc/connect';
import { fastifyConnectPlugin } from '@connectrpc/connect-fastify';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ApiContext } from '../context.ts';
import { kTransport } from '../grpc/services.ts';
import { e2bControlRoutes } from './control.ts';
import { registerE2bEnvd } from './envd.ts';
import { e2bFileRoutes } from './files.ts';

export const E2B_PREFIX = '/e2b';

/** How the server tells a request's listener (unix socket: trusted; TCP: needs a key). */
export type TransportOf = (raw: FastifyRequest['raw']) => 'tcp' | 'unix';

export async function registerE2b(
  app: FastifyInstance,
  ctx: ApiContext,
  transportOf: TransportOf,
): Promise<void> {
  await app.register(e2bControlRoutes(ctx, transportOf), { prefix: E2B_PREFIX });
  await app.register(e2bFileRoutes(ctx, transportOf), { prefix: `${E2B_PREFIX}/envd` });
  await app.register(fastifyConnectPlugin, {
    prefix: `${E2B_PREFIX}/envd`,
    routes: (router) => registerE2bEnvd(router, ctx),
    contextValues: (request: FastifyRequest) =>
      createContextValues().set(kTransport, transportOf(request.raw)),
  });
}
