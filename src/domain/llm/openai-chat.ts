/**
 * OpenAI Chat Completions (`POST /v1/chat/completions`) ↔ the canonical form, in both roles: what an agent sends
 * the gateway (parse request, render response / SSE chunks), and what the gateway sends an OpenAI-compatible
 * upstream (build request, parse response / chunks).
 */
import type {
  LlmMessage,
  LlmPart,
  LlmRequest,
  LlmResponse,
  LlmStreamEvent,
  LlmTool,
  LlmToolChoice,
  LlmUsage,
  StopReason,
} from './canonical.ts';
import {
  arrayAt,
  bad,
  isObject,
  type Json,
  objectAt,
  optionalNumber,
  stopList,
  stringAt,
  textContent,
} from './json.ts';

/** Appends parts to the last message when it has the same role (Anthropic requires alternating roles). */
export function pushMessage(
  messages: LlmMessage[],
  role: LlmMessage['role'],
  parts: readonly LlmPart[],
): void {
  if (parts.length === 0) return;
  const last = messages[messages.length - 1];
  if (last && last.role === role)
    messages[messages.length - 1] = { role, content: [...last.content, ...parts] };
  else messages.push({ role, content: [...parts] });
}

function parseTools(value: unknown): LlmTool[] {
  if (value === undefined || value === null) return [];
  return arrayAt(value, 'tools').map((item, i) => {
    const tool = objectAt(item, `tools[${i}]`);
    const fn = objectAt(tool.function, `tools[${i}].function`);
    return {
      name: stringAt(fn.name, `tools[${i}].function.name`),
      ...(typeof fn.description === 'string' ? { description: fn.description } : {}),
      parameters: isObject(fn.parameters) ? fn.parameters : { type: 'object', properties: {} },
    };
  });
}

function parseToolChoice(value: unknown): LlmToolChoice | null {
  if (value === undefined || value === null) return null;
  if (value === 'auto' || value === 'none' || value === 'required') return value;
  if (isObject(value) && isObject(value.function) && typeof value.function.name === 'string') {
    return { name: value.function.name };
  }
  throw bad('tool_choice', 'expected "auto", "none", "required" or {type: "function", function: {name}}');
}

export function parseChatRequest(body: unknown): LlmRequest {
  const b = objectAt(body, '<body>');
  const system: string[] = [];
  const messages: LlmMessage[] = [];
  arrayAt(b.messages, 'messages').forEach((item, i) => {
    const path = `messages[${i}]`;
    const m = objectAt(item, path);
    const role = stringAt(m.role, `${path}.role`);
    if (role === 'system' || role === 'developer') {
      system.push(textContent(m.content, `${path}.content`));
    } else if (role === 'user') {
      pushMessage(messages, 'user', [{ type: 'text', text: textContent(m.content, `${path}.content`) }]);
    } else if (role === 'assistant') {
      const parts: LlmPart[] = [];
      const text = textContent(m.content, `${path}.content`);
      if (text !== '') parts.push({ type: 'text', text });
      if (m.tool_calls !== undefined && m.tool_calls !== null) {
        arrayAt(m.tool_calls, `${path}.tool_calls`).forEach((call, j) => {
          const c = objectAt(call, `${path}.tool_calls[${j}]`);
          const fn = objectAt(c.function, `${path}.tool_calls[${j}].function`);
          parts.push({
            type: 'tool_call',
            id: stringAt(c.id, `${path}.tool_calls[${j}].id`),
            name: stringAt(fn.name, `${path}.tool_calls[${j}].function.name`),
            arguments: typeof fn.arguments === 'string' ? fn.arguments : JSON.stringify(fn.arguments ?? {}),
          });
        });
      }
      pushMessage(messages, 'assistant', parts);
    } else if (role === 'tool') {
      pushMessage(messages, 'user', [
        {
          type: 'tool_result',
          toolCallId: stringAt(m.tool_call_id, `${path}.tool_call_id`),
          content: textContent(m.content, `${path}.content`),
          isError: false,
        },
      ]);
    } else {
      throw bad(`${path}.role`, `unknown role "${role}"`, 'use system, developer, user, assistant or tool');
    }
  });
  return {
    model: stringAt(b.model, 'model'),
    system: system.length > 0 ? system.join('\n\n') : null,
    messages,
    tools: parseTools(b.tools),
    toolChoice: parseToolChoice(b.tool_choice),
    maxTokens: optionalNumber(b.max_completion_tokens ?? b.max_tokens, 'max_tokens'),
    temperature: optionalNumber(b.temperature, 'temperature'),
    topP: optionalNumber(b.top_p, 'top_p'),
    stop: stopList(b.stop, 'stop'),
    stream: b.stream === true,
  };
}

const FINISH: Record<StopReason, string> = {
  stop: 'stop',
  length: 'length',
  tool_calls: 'tool_calls',
  content_filter: 'content_filter',
};

function chatUsage(usage: LlmUsage): Json {
  return {
    prompt_tokens: usage.inputTokens,
    completion_tokens: usage.outputTokens,
    total_tokens: usage.inputTokens + usage.outputTokens,
  };
}

export function renderChatResponse(response: LlmResponse, createdS: number): Json {
  const text = response.content.map((p) => (p.type === 'text' ? p.text : '')).join('');
  const calls = response.content.flatMap((p) =>
    p.type === 'tool_call'
      ? [{ id: p.id, type: 'function', function: { name: p.name, arguments: p.arguments } }]
      : [],
  );
  return {
    id: response.id,
    object: 'chat.completion',
    created: createdS,
    model: response.model,
    choices: [
      {
        index: 0,
        message: {
          role: 'assistant',
          content: text === '' && calls.length > 0 ? null : text,
          refusal: null,
          ...(calls.length > 0 ? { tool_calls: calls } : {}),
        },
        finish_reason: FINISH[response.stopReason],
        logprobs: null,
      },
    ],
    usage: chatUsage(response.usage),
  };
}

/** Canonical stream events → `chat.completion.chunk` objects (each sent as one `data:` line; then `[DONE]`). */
export class ChatStreamRenderer {
  #id = 'chatcmpl-aegis';
  #model = '';
  readonly #created: number;
  readonly #includeUsage: boolean;

  constructor(createdS: number, includeUsage: boolean) {
    this.#created = createdS;
    this.#includeUsage = includeUsage;
  }

  #chunk(delta: Json, finish: string | null): Json {
    return {
      id: this.#id,
      object: 'chat.completion.chunk',
      created: this.#created,
      model: this.#model,
      choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
    };
  }

  render(event: LlmStreamEvent): Json[] {
    switch (event.type) {
      case 'start':
        this.#id = event.id;
        this.#model = event.model;
        return [this.#chunk({ role: 'assistant', content: '' }, null)];
      case 'text':
        return [this.#chunk({ content: event.delta }, null)];
      case 'tool_call':
        return [
          this.#chunk(
            {
              tool_calls: [
                {
                  index: event.index,
                  id: event.id,
                  type: 'function',
                  function: { name: event.name, arguments: '' },
                },
              ],
            },
            null,
          ),
        ];
      case 'tool_args':
        return [
          this.#chunk({ tool_calls: [{ index: event.index, function: { arguments: event.delta } }] }, null),
        ];
      case 'end': {
        const out = [this.#chunk({}, FINISH[event.stopReason])];
        if (this.#includeUsage) {
          out.push({
            id: this.#id,
            object: 'chat.completion.chunk',
            created: this.#created,
            model: this.#model,
            choices: [],
            usage: chatUsage(event.usage),
          });
        }
        return out;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Upstream side: the gateway calling an OpenAI-compatible server.

export function buildChatRequest(request: LlmRequest, upstreamModel: string, defaultMaxTokens: number): Json {
  const messages: Json[] = [];
  if (request.system !== null) messages.push({ role: 'system', content: request.system });
  for (const message of request.messages) {
    if (message.role === 'user') {
      let text = '';
      for (const part of message.content) {
        if (part.type === 'tool_result') {
          messages.push({ role: 'tool', tool_call_id: part.toolCallId, content: part.content });
        } else if (part.type === 'text') text += part.text;
      }
      if (text !== '') messages.push({ role: 'user', content: text });
    } else {
      const text = message.content.map((p) => (p.type === 'text' ? p.text : '')).join('');
      const calls = message.content.flatMap((p) =>
        p.type === 'tool_call'
          ? [{ id: p.id, type: 'function', function: { name: p.name, arguments: p.arguments } }]
          : [],
      );
      messages.push({
        role: 'assistant',
        content: text === '' ? null : text,
        ...(calls.length > 0 ? { tool_calls: calls } : {}),
      });
    }
  }
  const body: Json = {
    model: upstreamModel,
    messages,
    max_tokens: request.maxTokens ?? defaultMaxTokens,
    stream: request.stream,
  };
  if (request.stream) body.stream_options = { include_usage: true };
  if (request.tools.length > 0) {
    body.tools = request.tools.map((t) => ({
      type: 'function',
      function: {
        name: t.name,
        ...(t.description ? { description: t.description } : {}),
        parameters: t.parameters,
      },
    }));
  }
  if (request.toolChoice !== null) {
    body.tool_choice =
      typeof request.toolChoice === 'string'
        ? request.toolChoice
        : { type: 'function', function: { name: request.toolChoice.name } };
  }
  if (request.temperature !== null) body.temperature = request.temperature;
  if (request.topP !== null) body.top_p = request.topP;
  if (request.stop.length > 0) body.stop = request.stop;
  return body;
}

function stopReasonOf(finish: unknown): StopReason {
  if (finish === 'length') return 'length';
  if (finish === 'tool_calls' || finish === 'function_call') return 'tool_calls';
  if (finish === 'content_filter') return 'content_filter';
  return 'stop';
}

function usageOf(value: unknown): LlmUsage {
  const u = isObject(value) ? value : {};
  return {
    inputTokens: typeof u.prompt_tokens === 'number' ? u.prompt_tokens : 0,
    outputTokens: typeof u.completion_tokens === 'number' ? u.completion_tokens : 0,
  };
}

export function parseChatResponse(body: unknown): LlmResponse {
  const b = objectAt(body, 'upstream response');
  const choice = objectAt(arrayAt(b.choices, 'upstream choices')[0], 'upstream choices[0]');
  const message = objectAt(choice.message, 'upstream choices[0].message');
  const content: LlmPart[] = [];
  if (typeof message.content === 'string' && message.content !== '') {
    content.push({ type: 'text', text: message.content });
  }
  if (Array.isArray(message.tool_calls)) {
    for (const call of message.tool_calls) {
      if (!isObject(call) || !isObject(call.function)) continue;
      content.push({
        type: 'tool_call',
        id: String(call.id ?? ''),
        name: String(call.function.name ?? ''),
        arguments: String(call.function.arguments ?? ''),
      });
    }
  }
  return {
    id: typeof b.id === 'string' ? b.id : 'chatcmpl-upstream',
    model: typeof b.model === 'string' ? b.model : '',
    content,
    stopReason: stopReasonOf(choice.finish_reason),
    usage: usageOf(b.usage),
  };
}

/** Upstream `chat.completion.chunk`s → canonical events; `finish()` yields the end once usage is known. */
export class ChatChunkParser {
  #started = false;
  #stop: StopReason = 'stop';
  #usage: LlmUsage = { inputTokens: 0, outputTokens: 0 };

  push(chunk: unknown): LlmStreamEvent[] {
    if (!isObject(chunk)) return [];
    const out: LlmStreamEvent[] = [];
    if (!this.#started) {
      this.#started = true;
      out.push({
        type: 'start',
        id: typeof chunk.id === 'string' ? chunk.id : 'chatcmpl-upstream',
        model: typeof chunk.model === 'string' ? chunk.model : '',
      });
    }
    if (isObject(chunk.usage)) this.#usage = usageOf(chunk.usage);
    const choice = Array.isArray(chunk.choices) && isObject(chunk.choices[0]) ? chunk.choices[0] : null;
    if (choice === null) return out;
    const delta = isObject(choice.delta) ? choice.delta : {};
    if (typeof delta.content === 'string' && delta.content !== '')
      out.push({ type: 'text', delta: delta.content });
    if (Array.isArray(delta.tool_calls)) {
      for (const call of delta.tool_calls) {
        if (!isObject(call)) continue;
        const index = typeof call.index === 'number' ? call.index : 0;
        const fn = isObject(call.function) ? call.function : {};
        if (typeof call.id === 'string') {
          out.push({ type: 'tool_call', index, id: call.id, name: String(fn.name ?? '') });
        }
        if (typeof fn.arguments === 'string' && fn.arguments !== '') {
          out.push({ type: 'tool_args', index, delta: fn.arguments });
        }
      }
    }
    if (typeof choice.finish_reason === 'string') this.#stop = stopReasonOf(choice.finish_reason);
    return out;
  }

  finish(): LlmStreamEvent {
    return { type: 'end', stopReason: this.#stop, usage: this.#usage };
  }
}
