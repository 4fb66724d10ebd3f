/** `AnthropicProvider`: the Anthropic Messages API upstream. */
import type { LlmProvider, LlmUpstreamResult } from '../../app/llm-gateway.ts';
import { UpstreamError } from '../../app/llm-gateway.ts';
import {
  buildMessagesRequest,
  MessagesEventParser,
  parseMessagesResponse,
} from '../../domain/llm/anthropic-messages.ts';
import type { LlmRequest, LlmStreamEvent } from '../../domain/llm/canonical.ts';
import type { ModelRoute } from '../../domain/llm/config.ts';
import { postUpstream, sseOf } from './upstream-http.ts';

export const ANTHROPIC_VERSION = '2023-06-01';

export class AnthropicProvider implements LlmProvider {
  async call(
    route: ModelRoute,
    request: LlmRequest,
    apiKey: string | null,
    signal: AbortSignal,
  ): Promise<LlmUpstreamResult> {
    const body = buildMessagesRequest(request, route.model, route.maxTokens);
    const headers: Record<string, string> = { 'anthropic-version': ANTHROPIC_VERSION };
    if (apiKey !== null) headers['x-api-key'] = apiKey;
    const res = await postUpstream(`${route.baseUrl}/messages`, headers, body, signal);
    if (!request.stream) return { kind: 'complete', response: parseMessagesResponse(await res.json()) };
    return { kind: 'stream', events: messageEvents(res) };
  }
}

async function* messageEvents(res: Response): AsyncGenerator<LlmStreamEvent> {
  const parser = new MessagesEventParser();
  for await (const message of sseOf(res)) {
    let data: unknown;
    try {
      data = JSON.parse(message.data);
    } catch {
      throw new UpstreamError('upstream sent a malformed stream event', 502);
    }
    const error = (data as { type?: string; error?: { message?: string } }).error;
    if ((data as { type?: string }).type === 'error')
      throw new UpstreamError(error?.message ?? 'upstream stream error', 502);
    yield* parser.push(data);
    if (parser.ended) return;
  }
  throw new UpstreamError('upstream stream ended without message_stop', 502);
}
