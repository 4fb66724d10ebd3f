/**
 * REST for operators over Cortex (issue 17; app/memory-access.ts decides the scopes): an agent's memories listed,
 * searched, forgotten and re-embedded. Reading needs `read` (memories hold what the agent's executions held, which
 * `read` already sees); forgetting and re-embedding change what the agent knows: `deploy` (every agent: `admin`).
 */
import { z } from 'zod';
import {
  forgetMemory,
  listMemories,
  type OperatorMemoryDeps,
  reembedMemories,
  searchMemories,
} from '../../app/memory-access.ts';
import { AegisError } from '../../domain/errors.ts';
import type { ApiContext } from '../context.ts';
import type { Route } from './routes.ts';
import * as S from './schemas.ts';

const Namespace = z.string().min(1).max(63).optional().meta({
  description: "The memory namespace. @default the agent's spec.memory.namespace (else default)",
});

const NamespaceQuery = z.strictObject({ namespace: Namespace });
const ListQuery = z.strictObject({
  namespace: Namespace,
  limit: z.coerce.number().int().min(1).max(1000).optional(),
  after: z.string().max(200).optional().meta({ description: 'The `next` of the previous page' }),
});
const MemoryParams = z.strictObject({ name: z.string().min(1).max(63), id: z.string().min(1).max(128) });

export const Memory = z
  .object({
    id: z.string(),
    agent: z.string(),
    namespace: z.string(),
    text: z.string(),
    meta: z.record(z.string(), z.unknown()),
    createdAt: z.string(),
    expiresAt: z.string().nullable(),
    executionId: z.string().nullable(),
    outcome: z.enum(['succeeded', 'failed']).nullable(),
    source: z.enum(['sdk', 'execution', 'api']),
    embedder: z.string(),
  })
  .meta({ id: 'Memory' });
export const RecalledMemory = Memory.extend({
  score: z.number(),
  similarity: z.number(),
  recency: z.number(),
  outcomeWeight: z.number(),
}).meta({ id: 'RecalledMemory' });

export const MemoryList = z.object({ memories: z.array(Memory), next: z.string().nullable() });
export const MemorySearchResult = z.object({ memories: z.array(RecalledMemory) });
export const MemoryForgotten = z.object({ id: z.string(), forgotten: z.literal(true) });
export const MemoryReembedded = z.object({ count: z.number(), embedder: z.string() });

export const MemorySearchBody = z.strictObject({
  query: z.string().min(1),
  k: z.number().int().min(1).max(100).optional().meta({ description: '@default 5' }),
  filter: z
    .strictObject({
      meta: z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()])).optional(),
      outcome: z.enum(['succeeded', 'failed']).nullable().optional(),
      source: z.enum(['sdk', 'execution', 'api']).optional(),
      executionId: z.string().optional(),
      createdAfter: z.string().optional(),
    })
    .optional(),
  threshold: z.number().min(0).max(1).optional(),
});

const errors = (...codes: number[]) =>
  Object.fromEntries(codes.map((code) => [code, { description: 'error', schema: S.ErrorBody }]));

function memoryOf(ctx: ApiContext): OperatorMemoryDeps {
  if (ctx.memory === undefined)
    throw new AegisError('RUNTIME_UNAVAILABLE', 'this AEGIS server has no agent memory (Cortex)');
  return ctx.memory;
}

const ns = (query: Record<string, unknown>) => query['namespace'] as string | undefined;

export const MEMORY_ROUTES: readonly Route[] = [
  {
    method: 'GET',
    path: '/v1/agents/:name/memories',
    operationId: 'listMemories',
    summary: "An agent's memories, newest first (paged: ?after=<next>)",
    tag: 'memory',
    scope: 'read',
    params: S.AgentName,
    query: ListQuery,
    responses: {
      200: {
        description: 'Memories',
        schema: MemoryList,
      },
      ...errors(400, 401, 403, 409, 429, 503),
    },
    async handler(ctx, req) {
      const q = req.query as z.infer<typeof ListQuery>;
      const body = await listMemories(memoryOf(ctx), req.principal, req.params['name']!, {
        ...(q.namespace === undefined ? {} : { namespace: q.namespace }),
        ...(q.limit === undefined ? {} : { limit: q.limit }),
        after: q.after ?? null,
      });
      return { status: 200, body };
    },
  },
  {
    method: 'POST',
    path: '/v1/agents/:name/memories/search',
    operationId: 'searchMemories',
    summary: 'What the agent would recall for a query, in its own scope (scored, best first)',
    tag: 'memory',
    scope: 'read',
    params: S.AgentName,
    query: NamespaceQuery,
    body: MemorySearchBody,
    responses: {
      200: { description: 'Recalled memories', schema: MemorySearchResult },
      ...errors(400, 401, 403, 409, 413, 415, 429, 503),
    },
    async handler(ctx, req) {
      const body = await searchMemories(
        memoryOf(ctx),
        req.principal,
        req.params['name']!,
        req.body,
        ns(req.query),
      );
      return { status: 200, body };
    },
  },
  {
    method: 'DELETE',
    path: '/v1/agents/:name/memories/:id',
    operationId: 'forgetMemory',
    summary: 'Forget one memory of the agent',
    tag: 'memory',
    scope: 'deploy',
    params: MemoryParams,
    query: NamespaceQuery,
    responses: {
      200: { description: 'Forgotten', schema: MemoryForgotten },
      ...errors(401, 403, 404, 429, 503),
    },
    async handler(ctx, req) {
      const body = await forgetMemory(
        memoryOf(ctx),
        req.principal,
        req.params['name']!,
        req.params['id']!,
        ns(req.query),
      );
      return { status: 200, body };
    },
  },
  {
    method: 'POST',
    path: '/v1/agents/:name/memories/reembed',
    operationId: 'reembedMemories',
    summary: "Re-embed the agent's memories with the server's embedder (after the embedder changed)",
    tag: 'memory',
    scope: 'deploy',
    params: S.AgentName,
    query: NamespaceQuery,
    responses: {
      200: { description: 'Re-embedded', schema: MemoryReembedded },
      ...errors(401, 403, 429, 503),
    },
    async handler(ctx, req) {
      const body = await reembedMemories(memoryOf(ctx), req.principal, req.params['name']!, ns(req.query));
      return { status: 200, body };
    },
  },
  {
    method: 'POST',
    path: '/v1/memories/reembed',
    operationId: 'reembedAllMemories',
    summary: "Re-embed every agent's memories with the server's embedder",
    tag: 'memory',
    scope: 'admin',
    responses: {
      200: { description: 'Re-embedded', schema: MemoryReembedded },
      ...errors(401, 403, 429, 503),
    },
    async handler(ctx, req) {
      return { status: 200, body: await reembedMemories(memoryOf(ctx), req.principal, null) };
    },
  },
];
