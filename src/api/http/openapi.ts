/**
 * /openapi.json, generated from the route table and its zod schemas (zod's own JSON Schema output, draft 2020-12,
 * which OpenAPI 3.1 uses). Schemas with a `.meta({ id })` become components; the rest are inlined.
 */
import { z } from 'zod';
import { ROUTES } from './routes.ts';
import * as SandboxSchemas from './sandbox-schemas.ts';
import { type DocumentedRoute, SANDBOX_ROUTES } from './sandbox-schemas.ts';
import * as S from './schemas.ts';

type Json = Record<string, unknown>;

const COMPONENT_REF = (id: string) => `#/components/schemas/${id}`;

/** Every id'd schema reachable from the API, converted once with cross-references as $refs. */
function componentSchemas(): Record<string, Json> {
  const registry = z.registry<{ id: string }>();
  const seen = new Set<string>();
  for (const value of [...Object.values(S), ...Object.values(SandboxSchemas)]) {
    if (!(value instanceof z.ZodType)) continue;
    const id = (z.globalRegistry.get(value) as { id?: string } | undefined)?.id;
    if (id === undefined || seen.has(id)) continue;
    seen.add(id);
    registry.add(value, { id });
  }
  const out = z.toJSONSchema(registry, { uri: COMPONENT_REF, unrepresentable: 'any', io: 'output' }) as {
    schemas: Record<string, Json>;
  };
  for (const schema of Object.values(out.schemas)) delete schema['$schema'];
  return out.schemas;
}

function schemaRef(schema: z.ZodType, io: 'input' | 'output'): Json {
  const id = (z.globalRegistry.get(schema) as { id?: string } | undefined)?.id;
  if (id !== undefined) return { $ref: COMPONENT_REF(id) };
  const json = z.toJSONSchema(schema, { unrepresentable: 'any', io }) as Json;
  delete json['$schema'];
  return json;
}

function parameters(route: DocumentedRoute): Json[] {
  const out: Json[] = [];
  const add = (schema: z.ZodType | undefined, where: 'path' | 'query') => {
    if (schema === undefined) return;
    const json = z.toJSONSchema(schema, { unrepresentable: 'any', io: 'input' }) as {
      properties?: Record<string, Json>;
      required?: string[];
    };
    for (const [name, property] of Object.entries(json.properties ?? {})) {
      const { description, ...rest } = property as Json;
      out.push({
        name,
        in: where,
        required: where === 'path' || (json.required ?? []).includes(name),
        ...(description ? { description } : {}),
        schema: rest,
      });
    }
  };
  add(route.params, 'path');
  add(route.query, 'query');
  return out;
}

export function buildOpenApi(info: { version: string }): Json {
  const paths: Record<string, Json> = {};
  for (const route of [...ROUTES, ...SANDBOX_ROUTES] as readonly DocumentedRoute[]) {
    const path = route.path.replace(/:(\w+)/g, '{$1}');
    const operation: Json = {
      operationId: route.operationId,
      summary: route.summary,
      tags: [route.tag],
      ...(route.scope === null ? { security: [] } : { 'x-aegis-scope': route.scope }),
      parameters: parameters(route),
      responses: Object.fromEntries(
        Object.entries(route.responses).map(([status, response]) => [
          status,
          {
            description: response.description,
            ...(response.schema
              ? {
                  content: {
                    [response.contentType ?? 'application/json']: {
                      schema: schemaRef(response.schema, 'output'),
                    },
                  },
                }
              : {}),
          },
        ]),
      ),
    };
    if (route.body === 'bundle') {
      operation['requestBody'] = {
        required: true,
        content: { 'application/gzip': { schema: { type: 'string', format: 'binary' } } },
      };
    } else if (route.body === 'octet-stream') {
      operation['requestBody'] = {
        required: true,
        content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } },
      };
    } else if (route.body !== undefined) {
      operation['requestBody'] = {
        required: true,
        content: { 'application/json': { schema: schemaRef(route.body, 'input') } },
      };
    }
    if (route.streaming) {
      (operation['responses'] as Record<string, Json>)['200'] = {
        ...((operation['responses'] as Record<string, Json>)['200'] ?? {}),
        content: {
          'application/json': { schema: { $ref: COMPONENT_REF('LogPage') } },
          'text/event-stream': { schema: { type: 'string' } },
        },
      };
    }
    const item = (paths[path] ?? {}) as Json;
    item[route.method.toLowerCase()] = operation;
    paths[path] = item;
  }
  const open = (summary: string, schema?: Json, contentType = 'application/json'): Json => ({
    get: {
      summary,
      security: [],
      responses: {
        200: { description: 'OK', ...(schema ? { content: { [contentType]: { schema } } } : {}) },
      },
    },
  });
  paths['/healthz'] = open('Liveness', { $ref: COMPONENT_REF('Health') });
  paths['/readyz'] = open('Readiness: recovered and accepting (503 while starting or draining)', {
    $ref: COMPONENT_REF('Health'),
  });
  paths['/metrics'] = {
    get: {
      summary: 'Prometheus metrics (text exposition); needs the read scope',
      responses: {
        200: { description: 'OK', content: { 'text/plain': { schema: { type: 'string' } } } },
        401: { description: 'no key, or an unknown or revoked one' },
        403: { description: 'the key lacks the read scope' },
      },
    },
  };
  paths['/mcp'] = {
    post: {
      summary:
        'Model Context Protocol, streamable HTTP, stateless (no session id): deployed agents as tools (call needs execute, list needs read), executions and logs as resources',
      requestBody: {
        required: true,
        content: {
          'application/json': { schema: { type: 'object', description: 'A JSON-RPC 2.0 message' } },
        },
      },
      responses: {
        200: {
          description: 'JSON-RPC response',
          content: { 'application/json': { schema: { type: 'object' } } },
        },
        202: { description: 'Notification accepted' },
        401: { description: 'no key, or an unknown or revoked one' },
      },
    },
  };
  paths['/openapi.json'] = open('This document', { type: 'object' });
  return {
    openapi: '3.1.0',
    info: {
      title: 'AEGIS orchestrator API',
      version: info.version,
      description:
        'Deploy agents and run them in sandboxes. Errors are {error: {code, message, details}}; codes are listed in the README. gRPC/Connect services aegis.v1.AgentService, aegis.v1.ExecutionService and aegis.v1.SandboxService are served on the same port (proto/).',
    },
    servers: [{ url: '/' }],
    security: [{ apiKey: [] }],
    components: {
      securitySchemes: {
        apiKey: {
          type: 'http',
          scheme: 'bearer',
          description: 'An API key: aegis_… (scopes admin, deploy, execute, read)',
        },
      },
      schemas: componentSchemas(),
    },
    paths,
  };
}
