/**
 * The SDK's own wire types (sdk/wire.ts, written by hand so the package imports nothing from src/) must be the REST
 * API's shapes: the zod schemas the server validates with and /openapi.json is generated from
 * (src/api/http/schemas.ts). The type half is checked by `tsc --noEmit` (part of `npm test`): each pair must be
 * assignable both ways, so a field added, dropped, renamed, retyped or made optional on either side fails the
 * build. The runtime half compares the SDK's enum lists with the OpenAPI document the server serves.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { z } from 'zod';
import * as sdk from '../sdk/index.ts';
import type * as wire from '../sdk/wire.ts';
import type * as memory from '../src/api/http/memory-routes.ts';
import { buildOpenApi } from '../src/api/http/openapi.ts';
import type * as server from '../src/api/http/schemas.ts';

/** true when A and B are assignable to each other (same fields, same optionality, same types), else false. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Check<T extends true> = T;

export type WireTypesAgree = [
  Check<Same<wire.ErrorBody, z.infer<typeof server.ErrorBody>>>,
  Check<Same<wire.PruneBody, z.infer<typeof server.PruneBody>>>,
  Check<Same<wire.PruneReport, z.infer<typeof server.PruneReport>>>,
  Check<Same<wire.Approval, z.infer<typeof server.Approval>>>,
  Check<Same<wire.CreateEdgeTokenBody, z.infer<typeof server.CreateEdgeTokenBody>>>,
  Check<Same<wire.EdgeToken, z.infer<typeof server.EdgeToken>>>,
  Check<Same<wire.CreatedEdgeToken, z.infer<typeof server.CreatedEdgeToken>>>,
  Check<Same<wire.EdgeNode, z.infer<typeof server.EdgeNode>>>,
  Check<Same<wire.EdgeNodeList, z.infer<typeof server.EdgeNodeList>>>,
  Check<Same<wire.ApprovalDecided, z.infer<typeof server.ApprovalDecided>>>,
  Check<Same<wire.Violation, z.infer<typeof server.Violation>>>,
  Check<Same<wire.LlmUsage, z.infer<typeof server.LlmUsage>>>,
  Check<Same<wire.Execution, z.infer<typeof server.Execution>>>,
  Check<Same<wire.ExecutionList, z.infer<typeof server.ExecutionList>>>,
  Check<Same<wire.SwarmTree, z.infer<typeof server.SwarmTree>>>,
  Check<Same<wire.CreateExecutionBody, z.infer<typeof server.CreateExecutionBody>>>,
  Check<Same<wire.LogLine, z.infer<typeof server.LogLine>>>,
  Check<Same<wire.LogPage, z.infer<typeof server.LogPage>>>,
  Check<Same<wire.AgentRevision, z.infer<typeof server.AgentRevision>>>,
  Check<Same<wire.AgentSummary, z.infer<typeof server.AgentSummary>>>,
  Check<Same<wire.AgentList, z.infer<typeof server.AgentList>>>,
  Check<Same<wire.PoolView, z.infer<typeof server.PoolView>>>,
  Check<Same<wire.AgentDetail, z.infer<typeof server.AgentDetail>>>,
  Check<Same<wire.RevisionList, z.infer<typeof server.RevisionList>>>,
  Check<Same<wire.DeployResult, z.infer<typeof server.DeployResult>>>,
  Check<Same<{ revision?: number | undefined }, z.infer<typeof server.RollbackBody>>>,
  Check<Same<wire.RollbackResult, z.infer<typeof server.RollbackResult>>>,
  Check<Same<wire.ApiKey, z.infer<typeof server.ApiKey>>>,
  Check<Same<wire.KeyList, z.infer<typeof server.KeyList>>>,
  Check<Same<wire.Node, z.infer<typeof server.Node>>>,
  Check<Same<wire.NodeList, z.infer<typeof server.NodeList>>>,
  Check<Same<wire.CreateKeyBody, z.infer<typeof server.CreateKeyBody>>>,
  Check<Same<wire.CreatedKey, z.infer<typeof server.CreatedKey>>>,
  Check<Same<wire.AuditEntry, z.infer<typeof server.AuditEntry>>>,
  Check<Same<wire.AuditList, z.infer<typeof server.AuditList>>>,
  Check<Same<wire.HealthStatus, z.infer<typeof server.Health>>>,
  Check<Same<wire.Memory, z.infer<typeof memory.Memory>>>,
  Check<Same<wire.RecalledMemory, z.infer<typeof memory.RecalledMemory>>>,
  Check<Same<wire.MemoryList, z.infer<typeof memory.MemoryList>>>,
  Check<Same<wire.MemorySearchBody, z.infer<typeof memory.MemorySearchBody>>>,
  Check<Same<wire.MemorySearchResult, z.infer<typeof memory.MemorySearchResult>>>,
  Check<Same<wire.MemoryForgotten, z.infer<typeof memory.MemoryForgotten>>>,
  Check<Same<wire.MemoryReembedded, z.infer<typeof memory.MemoryReembedded>>>,
];

// biome-ignore lint/suspicious/noExplicitAny: the OpenAPI document is walked field by field below
type Json = any;

describe('SDK wire types ≡ the server REST shapes', () => {
  const openapi: Json = buildOpenApi({ version: 'test' });
  const schemas: Json = openapi.components.schemas;

  it('the SDK sources import only node: modules, tar-stream and each other — nothing from src/', () => {
    const dir = join(import.meta.dirname, '../sdk');
    const sources = readdirSync(dir).filter((name) => name.endsWith('.ts') && !name.endsWith('.test.ts'));
    assert.ok(sources.includes('client.ts') && sources.includes('pack.ts'));
    for (const name of sources) {
      const text = readFileSync(join(dir, name), 'utf8');
      for (const [, specifier] of text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'([^']+)'/gm)) {
        const ok =
          /^node:/.test(specifier!) || specifier === 'tar-stream' || /^\.\/[\w-]+\.ts$/.test(specifier!);
        assert.ok(
          ok,
          `sdk/${name} imports '${specifier}': the package must stand alone (see sdk/package.json)`,
        );
      }
    }
  });

  it('execution statuses are the OpenAPI Execution.status enum, in order', () => {
    assert.deepEqual(schemas.Execution.properties.status.enum, [...sdk.EXECUTION_STATUSES]);
    assert.deepEqual(schemas.LogPage.properties.status.enum, [...sdk.EXECUTION_STATUSES]);
    const terminal = sdk.EXECUTION_STATUSES.filter((status) => sdk.isTerminalStatus(status));
    assert.deepEqual(terminal, ['succeeded', 'failed', 'timeout', 'oom', 'killed']);
  });

  it('scopes are the OpenAPI ApiKey.scopes enum', () => {
    assert.deepEqual(schemas.ApiKey.properties.scopes.items.enum, [...sdk.SCOPES]);
  });

  it('every route the SDK calls is in the OpenAPI document with that method', () => {
    const calls: [string, string][] = [
      ['post', '/v1/agents'],
      ['get', '/v1/agents'],
      ['get', '/v1/agents/{name}'],
      ['get', '/v1/agents/{name}/revisions'],
      ['post', '/v1/agents/{name}/rollback'],
      ['delete', '/v1/agents/{name}'],
      ['post', '/v1/executions'],
      ['get', '/v1/executions'],
      ['get', '/v1/executions/{id}'],
      ['post', '/v1/executions/{id}/cancel'],
      ['get', '/v1/executions/{id}/logs'],
      ['get', '/v1/executions/{id}/audit'],
      ['post', '/v1/keys'],
      ['get', '/v1/keys'],
      ['delete', '/v1/keys/{id}'],
      ['get', '/v1/agents/{name}/memories'],
      ['post', '/v1/agents/{name}/memories/search'],
      ['delete', '/v1/agents/{name}/memories/{id}'],
      ['post', '/v1/agents/{name}/memories/reembed'],
      ['post', '/v1/memories/reembed'],
    ];
    for (const [method, path] of calls) {
      assert.ok(openapi.paths[path]?.[method], `${method.toUpperCase()} ${path} is not in /openapi.json`);
    }
  });
});
