/** What both providers share: POST JSON upstream, map a refusal to UpstreamError (with Retry-After), stream SSE. */
import { UpstreamError } from '../../app/llm-gateway.ts';
import { parseSse, type SseMessage } from './sse.ts';

/** Retry-After as seconds or an HTTP date (RFC 9110 §10.2.3), plus OpenAI's `retry-after-ms`. */
export function retryAfterMs(headers: Headers, nowMs = Date.now()): number | null {
  const ms = headers.get('retry-after-ms');
  if (ms !== null && /^\d+(\.\d+)?$/.test(ms.trim())) return Number(ms);
  const value = headers.get('retry-after');
  if (value === null) return null;
  if (/^\d+$/.test(value.trim())) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - nowMs);
}

const MAX_ERROR_BODY = 2000;

export async function postUpstream(
  url: string,
  headers: Record<string, string>,
  body: unknown,
  signal: AbortSignal,
): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
      signal,
      redirect: 'error',
    });
  } catch (error) {
    const e = error as Error & { cause?: { code?: string } };
    if (e.name === 'TimeoutError' || e.name === 'AbortError') throw error;
    throw new UpstreamError(e.cause?.code ?? e.message, null, null, { cause: error });
  }
  if (!res.ok) {
    const text = (await res.text().catch(() => '')).slice(0, MAX_ERROR_BODY);
    let message = text;
    try {
      const parsed = JSON.parse(text) as { error?: { message?: string } | string; message?: string };
      message =
        (typeof parsed.error === 'object' ? parsed.error?.message : parsed.error) ?? parsed.message ?? text;
    } catch {
      // not JSON: keep the text
    }
    throw new UpstreamError(message || res.statusText, res.status, retryAfterMs(res.headers));
  }
  return res;
}

export async function* sseOf(res: Response): AsyncGenerator<SseMessage> {
  if (res.body === null) throw new UpstreamError('upstream stream has no body', 502);
  yield* parseSse(res.body as AsyncIterable<Uint8Array>);
}
