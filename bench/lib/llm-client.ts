/**
 * Timing one OpenAI Chat Completions call over HTTP, the way an agent's client sees it: total latency of a
 * non-streamed call (request sent → whole body read), and time to first token of a streamed one (request sent →
 * first SSE chunk carrying non-empty `content`, then drained).
 */

export interface ChatTarget {
  /** Up to and including `/v1`. */
  readonly baseUrl: string;
  readonly apiKey: string;
  readonly model: string;
}

function post(target: ChatTarget, stream: boolean, text: string): Promise<Response> {
  return fetch(`${target.baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${target.apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: target.model,
      stream,
      messages: [{ role: 'user', content: text }],
    }),
  });
}

/** ms from sending a non-streamed request to having its whole JSON answer. */
export async function timeChat(target: ChatTarget, text: string): Promise<number> {
  const started = performance.now();
  const res = await post(target, false, text);
  const body = (await res.json()) as { choices?: { message?: { content?: string } }[] };
  const elapsed = performance.now() - started;
  if (res.status !== 200 || typeof body.choices?.[0]?.message?.content !== 'string') {
    throw new Error(`chat call failed: ${res.status} ${JSON.stringify(body).slice(0, 200)}`);
  }
  return elapsed;
}

const FIRST_TOKEN = /"content":"[^"]/;

/** ms from sending a streamed request to the first chunk with text (the rest of the stream is drained). */
export async function timeFirstToken(target: ChatTarget, text: string): Promise<number> {
  const started = performance.now();
  const res = await post(target, true, text);
  if (res.status !== 200 || res.body === null) throw new Error(`stream call failed: ${res.status}`);
  const decoder = new TextDecoder();
  let seen = '';
  let first: number | undefined;
  for await (const chunk of res.body) {
    if (first === undefined) {
      seen += decoder.decode(chunk as Uint8Array, { stream: true });
      if (FIRST_TOKEN.test(seen)) first = performance.now() - started;
    }
  }
  if (first === undefined) throw new Error(`stream ended without content: ${seen.slice(0, 200)}`);
  return first;
}
