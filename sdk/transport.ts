/**
 * One request path for both transports: `node:http`/`node:https` to a TCP URL, or `node:http` over a unix socket
 * (`unix:/run/aegis/aegis.sock`). Answers come back as the streaming IncomingMessage, so JSON calls and SSE share it.
 */
import {
  type ClientRequest,
  request as httpRequest,
  type IncomingMessage,
  type RequestOptions,
} from 'node:http';
import { request as httpsRequest } from 'node:https';
import { AegisApiError } from './errors.ts';

export type Endpoint =
  | { readonly kind: 'tcp'; readonly url: URL; readonly display: string }
  | { readonly kind: 'unix'; readonly socketPath: string; readonly display: string };

/** `http(s)://host:port[/prefix]` or `unix:/path/to/aegis.sock` (also `unix:///path`). */
export function parseServer(server: string): Endpoint {
  const text = server.trim();
  if (text.startsWith('unix:')) {
    let socketPath = text.slice('unix:'.length);
    if (socketPath.startsWith('//')) socketPath = socketPath.slice(2);
    if (!socketPath.startsWith('/')) {
      throw usage(
        `server "${server}": a unix socket needs an absolute path`,
        'e.g. unix:/run/aegis/aegis.sock',
      );
    }
    return { kind: 'unix', socketPath, display: `unix:${socketPath}` };
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw usage(
      `server "${server}" is not a URL`,
      'e.g. http://127.0.0.1:8088 or unix:/run/aegis/aegis.sock',
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw usage(`server "${server}": only http, https and unix: are supported`, 'e.g. http://127.0.0.1:8088');
  }
  if (url.username || url.password) {
    throw usage(`server "${server}" has credentials in it`, 'pass the API key with AEGIS_API_KEY instead');
  }
  if (url.search || url.hash)
    throw usage(`server "${server}" has a query or fragment`, 'e.g. http://127.0.0.1:8088');
  const display = `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`;
  return { kind: 'tcp', url, display };
}

function usage(message: string, hint: string): AegisApiError {
  return new AegisApiError({ code: 'USAGE', status: 0, message, details: { hint } });
}

export interface RawRequest {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Absolute API path, e.g. `/v1/agents`, without query. */
  readonly path: string;
  readonly query?: Readonly<Record<string, string | number | undefined>>;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: Uint8Array;
  readonly signal?: AbortSignal;
}

export function queryString(query: RawRequest['query']): string {
  if (query === undefined) return '';
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) if (value !== undefined) params.set(key, String(value));
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}

/**
 * Sends one request and resolves with the answer's head (the body is still to be read). Rejects with the socket's
 * error (ECONNREFUSED, ENOENT, ECONNRESET, …) or the signal's AbortError.
 */
export function send(endpoint: Endpoint, req: RawRequest): Promise<IncomingMessage> {
  const path = req.path + queryString(req.query);
  const headers: Record<string, string> = { ...req.headers };
  if (req.body !== undefined) headers['content-length'] = String(req.body.byteLength);
  let options: RequestOptions;
  let start: (options: RequestOptions) => ClientRequest;
  if (endpoint.kind === 'unix') {
    options = {
      socketPath: endpoint.socketPath,
      path,
      method: req.method,
      headers: { host: 'localhost', ...headers },
    };
    start = httpRequest;
  } else {
    const base = endpoint.url.pathname.replace(/\/+$/, '');
    options = {
      protocol: endpoint.url.protocol,
      hostname: endpoint.url.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: endpoint.url.port === '' ? undefined : Number(endpoint.url.port),
      path: base + path,
      method: req.method,
      headers,
    };
    start = endpoint.url.protocol === 'https:' ? httpsRequest : httpRequest;
  }
  if (req.signal) options.signal = req.signal;
  return new Promise((resolve, reject) => {
    const request = start(options);
    request.once('response', resolve);
    request.once('error', reject);
    request.end(req.body);
  });
}

/** Reads an answer's whole body. */
export async function readBody(response: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Errors raised before anything reached the server: retrying them can never repeat an action. */
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOENT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/** The socket error code (ECONNREFUSED, …) of a failed request, if any. */
export function errnoOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

export function neverSent(error: unknown): boolean {
  const code = errnoOf(error);
  return code !== undefined && NOT_SENT.has(code);
}
