/** `OpenAiProvider`: any OpenAI-compatible Chat Completions upstream (OpenAI, vLLM, Ollama, llama.cpp, LM Studio). */
import type { LlmProvider, LlmUpstreamResult } from '../../app/llm-gateway.ts';
import { UpstreamError } from '../../app/llm-gateway.ts';
import type { LlmRequest, LlmStreamEvent } from '../../domain/llm/canonical.ts';
import type { ModelRoute } from '../../domain/llm/config.ts';
import { buildChatRequest, ChatChunkParser, parseChatResponse } from '../../domain/llm/openai-chat.ts';
import { postUpstream, sseOf } from './upstream-http.ts';

export class OpenAiProvider implements LlmProvider {
  async call(
    route: ModelRoute,
    request: LlmRequest,
    apiKey: string | null,
    signal: AbortSignal,
  ): Promise<LlmUpstreamResult> {
    const body = buildChatRequest(request, route.model, route.maxTokens);
    const headers: Record<string, string> = apiKey === null ? {} : { authorization: `Bearer ${apiKey}` };
    const res = await postUpstream(`${route.baseUrl}/chat/completions`, headers, body, signal);
    if (!request.stream) return { kind: 'complete', response: parseChatResponse(await res.json()) };
    return { kind: 'stream', events: chatEvents(res) };
  }
}

async function* chatEvents(res: Response): AsyncGenerator<LlmStreamEvent> {
  const parser = new ChatChunkParser();
  for await (const message of sseOf(res)) {
    if (message.data === '[DONE]') {
      yield parser.finish();
      return;
    }
    let chunk: unknown;
    try {
      chunk = JSON.parse(message.data);
    } catch {
      throw new UpstreamError('upstream sent a malformed stream chunk', 502);
    }
    const error = (chunk as { error?: { message?: string } }).error;
    if (error) throw new UpstreamError(error.message ?? 'upstream stream error', 502);
    yield* parser.push(chunk);
  }
  throw new UpstreamError('upstream stream ended without [DONE]', 502);
}
