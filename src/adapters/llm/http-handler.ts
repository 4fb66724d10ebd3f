/**
 * The gateway on the wire: a node:http request handler, mountable on any listener (tests: loopback; later the
 * in-sandbox endpoint `http://127.0.0.1:3129` in each sandbox's network namespace).
 *
 *   POST /v1/chat/completions   OpenAI Chat Completions      auth: Authorization: Bearer <token>
 *   POST /v1/responses          OpenAI Responses             auth: Authorization: Bearer <token>
 *   POST /v1/messages           Anthropic Messages           auth: x-api-key: <token> (Bearer also accepted)
 *   GET  /v1/models             the aliases this token may call (OpenAI list shape)
 *
 * Errors come back in the shape of the protocol the agent spoke, so the official SDKs raise their own typed errors.
 * A spent budget is 429 with `x-should-retry: false` (OpenAI's `insufficient_quota` convention): both official SDKs
 * then raise RateLimitError at once instead of retrying.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { LlmGateway } from '../../app/llm-gateway.ts';
import { AegisError, ERROR_CODES } from '../../domain/errors.ts';
import {
  MessagesStreamRenderer,
  parseMessagesRequest,
  renderMessagesResponse,
} from '../../domain/llm/anthropic-messages.ts';
import {
  type LlmResponse,
  type LlmStreamEvent,
  responseAsStream,
  StreamAccumulator,
} from '../../domain/llm/canonical.ts';
import { isObject } from '../../domain/llm/json.ts';
import { ChatStreamRenderer, parseChatRequest, renderChatResponse } from '../../domain/llm/openai-chat.ts';
import {
  parseResponsesRequest,
  ResponsesStreamRenderer,
  renderResponsesResponse,
} from '../../domain/llm/openai-responses.ts';
import { startSse, writeSse } from './sse.ts';

const MAX_BODY_BYTES = 4 * 1024 * 1024;

type Family = 'openai' | 'anthropic';

interface LlmErrorInfo {
  readonly kind: string;
  readonly status: number;
  readonly retryAfterS?: number;
}

function infoOf(error: unknown): { message: string; info: LlmErrorInfo } {
  if (error instanceof AegisError) {
    const llm = error.details.llm as LlmErrorInfo | undefined;
    const message = error.hint ? `${error.message} (${error.hint})` : error.message;
    return {
      message,
      info: llm ?? {
        kind: error.code === 'USAGE' ? 'invalid' : 'internal',
        status: ERROR_CODES[error.code].httpStatus,
      },
    };
  }
  return { message: 'internal error in the AEGIS LLM gateway', info: { kind: 'internal', status: 500 } };
}

const OPENAI_TYPE: Record<string, [string, string | null]> = {
  auth: ['authentication_error', 'invalid_api_key'],
  denied: ['permission_denied', 'model_not_allowed'],
  budget: ['insufficient_quota', 'budget_exhausted'],
  rate: ['rate_limit_exceeded', 'rate_limit_exceeded'],
  invalid: ['invalid_request_error', null],
  upstream: ['api_error', 'upstream_error'],
  timeout: ['api_error', 'upstream_timeout'],
  internal: ['api_error', null],
};
const ANTHROPIC_TYPE: Record<string, string> = {
  auth: 'authentication_error',
  denied: 'permission_error',
  budget: 'rate_limit_error',
  rate: 'rate_limit_error',
  invalid: 'invalid_request_error',
  upstream: 'api_error',
  timeout: 'api_error',
  internal: 'api_error',
};

export function errorBody(family: Family, message: string, info: LlmErrorInfo): Record<string, unknown> {
  if (family === 'anthropic') {
    return { type: 'error', error: { type: ANTHROPIC_TYPE[info.kind] ?? 'api_error', message } };
  }
  const [type, code] = OPENAI_TYPE[info.kind] ?? ['api_error', null];
  return { error: { message, type, param: null, code } };
}

function sendError(res: ServerResponse, family: Family, error: unknown): void {
  const { message, info } = infoOf(error);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (info.kind === 'budget' || info.kind === 'denied' || info.kind === 'auth')
    headers['x-should-retry'] = 'false';
  if (info.retryAfterS !== undefined) headers['retry-after'] = String(info.retryAfterS);
  res.writeHead(info.status, headers);
  res.end(JSON.stringify(errorBody(family, message, info)));
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).byteLength;
    if (size > MAX_BODY_BYTES) {
      throw new AegisError('PAYLOAD_TOO_LARGE', `request body over ${MAX_BODY_BYTES} bytes`, {
        details: { llm: { kind: 'invalid', status: 413 } },
      });
    }
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new AegisError('USAGE', 'request body is not valid JSON', {
      details: { llm: { kind: 'invalid', status: 400 } },
    });
  }
}

function presentedToken(req: IncomingMessage): string | null {
  const auth = req.headers.authorization;
  if (typeof auth === 'string' && /^Bearer\s+/i.test(auth))
    return auth.replace(/^Bearer\s+/i, '').trim() || null;
  const key = req.headers['x-api-key'];
  return typeof key === 'string' && key !== '' ? key : null;
}

interface Route {
  readonly family: Family;
  readonly protocol: 'chat' | 'responses' | 'messages';
}

const ROUTES: Record<string, Route> = {
  '/v1/chat/completions': { family: 'openai', protocol: 'chat' },
  '/v1/responses': { family: 'openai', protocol: 'responses' },
  '/v1/messages': { family: 'anthropic', protocol: 'messages' },
};

export interface LlmHandlerOptions {
  /** Wall clock, seconds (the `created` fields). @default Date.now()/1000 */
  readonly nowS?: () => number;
  /**
   * The one token this handler accepts (the sandbox it is served in): another execution's token — leaked to this
   * agent somehow — is refused as unknown here, so it cannot spend that execution's budget. @default any issued token
   */
  readonly onlyToken?: string;
  /**
   * Told every request for a path or method this API does not serve (answered 403 without reading the body): the
   * in-sandbox API audits them. `path` is the raw request target, cut to 256 characters.
   */
  readonly onDenied?: (method: string, path: string) => void;
}

export function createLlmHandler(gateway: LlmGateway, options: LlmHandlerOptions = {}) {
  const nowS = options.nowS ?? (() => Math.floor(Date.now() / 1000));
  const only = options.onlyToken;
  const tokenOf = (req: IncomingMessage): string | null => {
    const token = presentedToken(req);
    return only === undefined || token === only ? token : null;
  };
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0]!.replace(/\/+$/, '');
    const route = ROUTES[path];
    const family: Family = route?.family ?? (req.headers['anthropic-version'] ? 'anthropic' : 'openai');
    try {
      if (req.method === 'GET' && path === '/v1/models') {
        const created = nowS();
        const data = gateway
          .models(tokenOf(req))
          .map((id) => ({ id, object: 'model', created, owned_by: 'aegis' }));
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ object: 'list', data }));
        return;
      }
      if (route === undefined || req.method !== 'POST') {
        // Only what the manifest grants answers; anything else is refused (and audited by the caller).
        const target = (req.url ?? '/').slice(0, 256);
        options.onDenied?.(String(req.method), target);
        throw new AegisError(
          'PERMISSION_DENIED',
          `${String(req.method)} ${path.slice(0, 256)} is not granted to this agent`,
          {
            details: { llm: { kind: 'denied', status: 403 } },
            hint: 'the in-sandbox API serves POST /v1/chat/completions, /v1/responses, /v1/messages and GET /v1/models (spec.llm)',
          },
        );
      }
      const token = tokenOf(req);
      // Authenticate before reading a byte of the body: without a valid token, nothing is buffered.
      gateway.models(token);
      const body = await readJson(req);
      const request =
        route.protocol === 'chat'
          ? parseChatRequest(body)
          : route.protocol === 'responses'
            ? parseResponsesRequest(body)
            : parseMessagesRequest(body);
      const result = await gateway.call(token, request, route.protocol);
      const created = nowS();
      if (!request.stream) {
        let response: LlmResponse;
        if (result.kind === 'complete') response = result.response;
        else {
          const acc = new StreamAccumulator();
          for await (const event of result.events) acc.add(event);
          response = acc.response();
        }
        const rendered =
          route.protocol === 'chat'
            ? renderChatResponse(response, created)
            : route.protocol === 'responses'
              ? renderResponsesResponse(response, created)
              : renderMessagesResponse(response);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(rendered));
        return;
      }
      const events: AsyncIterable<LlmStreamEvent> =
        result.kind === 'stream' ? result.events : toAsync(responseAsStream(result.response));
      await streamTo(res, route, events, created, body);
    } catch (error) {
      if (res.headersSent) {
        if (!res.writableEnded) res.end();
        return;
      }
      sendError(res, family, error);
    }
  };
}

async function* toAsync<T>(items: Iterable<T>): AsyncGenerator<T> {
  yield* items;
}

async function streamTo(
  res: ServerResponse,
  route: Route,
  events: AsyncIterable<LlmStreamEvent>,
  created: number,
  body: unknown,
): Promise<void> {
  const includeUsage =
    isObject(body) && isObject(body.stream_options) && body.stream_options.include_usage === true;
  const chat = route.protocol === 'chat' ? new ChatStreamRenderer(created, includeUsage) : null;
  const named =
    route.protocol === 'responses'
      ? new ResponsesStreamRenderer(created)
      : route.protocol === 'messages'
        ? new MessagesStreamRenderer()
        : null;
  const iterator = events[Symbol.asyncIterator]();
  // Pull the first event before committing to 200, so an upstream that fails at once gets a proper error status.
  let next = await iterator.next();
  startSse(res);
  let clientGone = false;
  res.on('close', () => {
    clientGone = !res.writableFinished;
  });
  try {
    while (!next.done) {
      if (clientGone) {
        await iterator.return?.();
        return;
      }
      if (chat) for (const chunk of chat.render(next.value)) writeSse(res, chunk);
      if (named) for (const e of named.render(next.value)) writeSse(res, e.data, e.event);
      next = await iterator.next();
    }
    if (chat) writeSse(res, '[DONE]');
  } catch (error) {
    const { message, info } = infoOf(error);
    if (route.family === 'anthropic') writeSse(res, errorBody('anthropic', message, info), 'error');
    else if (route.protocol === 'responses')
      writeSse(
        res,
        {
          type: 'error',
          message,
          code: OPENAI_TYPE[info.kind]?.[1] ?? null,
          param: null,
          sequence_number: 0,
        },
        'error',
      );
    else writeSse(res, errorBody('openai', message, info));
  }
  res.end();
}
