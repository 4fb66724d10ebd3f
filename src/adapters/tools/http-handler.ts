/**
 * The tool gateway on the in-sandbox API (127.0.0.1:3129 inside each sandbox with `spec.tools`, same token as the
 * LLM routes):
 *
 *   GET  /v1/tools           the granted tools with their argument schemas   → {tools: [{name, description, inputSchema}]}
 *   POST /v1/tools/{name}    body {arguments: {...}}                        → {tool, outcome: 'allowed', result}
 *
 * A refused call is 403 `{error: {type: 'tool_denied', code: 'tool_denied', message, rule}}` (the SDKs raise
 * ToolDenied with the message, which is phrased for a model to read). Any other path goes to `next`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { InSandboxTools } from '../../app/live-sandboxes.ts';
import type { InSandboxHandler } from '../../app/ports.ts';
import { AegisError, ERROR_CODES } from '../../domain/errors.ts';
import { sendJson as send, bearerMatches as tokenMatches } from '../in-sandbox/http-common.ts';

const MAX_BODY_BYTES = 2 * 1024 * 1024;

function fail(response: ServerResponse, error: unknown): void {
  if (error instanceof AegisError) {
    send(response, ERROR_CODES[error.code].httpStatus, {
      error: {
        type: error.code,
        code: error.code,
        message: error.hint ? `${error.message} (${error.hint})` : error.message,
      },
    });
    return;
  }
  send(response, 500, {
    error: { type: 'INTERNAL', code: 'INTERNAL', message: 'internal error in the AEGIS tool gateway' },
  });
}

async function readJson(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES)
      throw new AegisError('USAGE', `a tool call body is at most ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new AegisError('USAGE', 'the body is not JSON', { hint: 'send {"arguments": {...}}' });
  }
}

export function createToolsHandler(
  token: string,
  tools: InSandboxTools,
  next: InSandboxHandler | undefined,
): InSandboxHandler {
  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const path = (request.url ?? '/').split('?')[0] as string;
    if (path !== '/v1/tools' && !path.startsWith('/v1/tools/')) {
      if (next) (next as unknown as (q: IncomingMessage, r: ServerResponse) => void)(request, response);
      else
        send(response, 404, { error: { type: 'NOT_FOUND', code: 'NOT_FOUND', message: `no route ${path}` } });
      return;
    }
    if (!tokenMatches(request, token)) {
      send(response, 401, {
        error: { type: 'auth', code: 'invalid_token', message: 'missing or wrong AEGIS_TOKEN' },
      });
      return;
    }
    try {
      if (path === '/v1/tools') {
        if (request.method !== 'GET')
          throw new AegisError('USAGE', 'GET /v1/tools lists; POST /v1/tools/{name} calls');
        send(response, 200, { tools: await tools.list() });
        return;
      }
      if (request.method !== 'POST') throw new AegisError('USAGE', 'call a tool with POST /v1/tools/{name}');
      let name: string;
      try {
        name = decodeURIComponent(path.slice('/v1/tools/'.length));
      } catch {
        throw new AegisError('USAGE', 'the tool name in the path is not valid percent-encoding');
      }
      const body = await readJson(request);
      const args =
        body !== null && typeof body === 'object' && !Array.isArray(body)
          ? (body as Record<string, unknown>)['arguments']
          : undefined;
      const result = await tools.call(name, args ?? {});
      if (result.outcome === 'denied') {
        send(response, 403, {
          error: { type: 'tool_denied', code: 'tool_denied', message: result.reason, rule: result.rule },
        });
        return;
      }
      send(response, 200, result);
    } catch (error) {
      fail(response, error);
    }
  };
  return ((request: IncomingMessage, response: ServerResponse) => {
    void handle(request, response).catch(() => response.destroy());
  }) as unknown as InSandboxHandler;
}
