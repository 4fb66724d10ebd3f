/**
 * Anthropic Messages (`POST /v1/messages`) ↔ the canonical form, in both roles: what an agent sends the gateway
 * (parse request, render response / SSE events) and what the gateway sends an Anthropic upstream.
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
import { pushMessage } from './openai-chat.ts';

function parseParts(value: unknown, path: string, role: 'user' | 'assistant'): LlmPart[] {
  if (typeof value === 'string') return [{ type: 'text', text: value }];
  return arrayAt(value, path).map((item, i): LlmPart => {
    const p = objectAt(item, `${path}[${i}]`);
    if (p.type === 'text') return { type: 'text', text: stringAt(p.text, `${path}[${i}].text`) };
    if (p.type === 'tool_use' && role === 'assistant') {
      return {
        type: 'tool_call',
        id: stringAt(p.id, `${path}[${i}].id`),
        name: stringAt(p.name, `${path}[${i}].name`),
        arguments: JSON.stringify(p.input ?? {}),
      };
    }
    if (p.type === 'tool_result' && role === 'user') {
      return {
        type: 'tool_result',
        toolCallId: stringAt(p.tool_use_id, `${path}[${i}].tool_use_id`),
        content: textContent(p.content, `${path}[${i}].content`),
        isError: p.is_error === true,
      };
    }
    throw bad(
      `${path}[${i}].type`,
      `content block "${String(p.type)}" is not supported here`,
      'send text, tool_use or tool_result blocks',
    );
  });
}

function parseToolChoice(value: unknown): LlmToolChoice | null {
  if (value === undefined || value === null) return null;
  const c = objectAt(value, 'tool_choice');
  if (c.type === 'auto') return 'auto';
  if (c.type === 'any') return 'required';
  if (c.type === 'none') return 'none';
  if (c.type === 'tool') return { name: stringAt(c.name, 'tool_choice.name') };
  throw bad('tool_choice.type', 'expected auto, any, none or tool');
}

export function parseMessagesRequest(body: unknown): LlmRequest {
  const b = objectAt(body, '<body>');
  const messages: LlmMessage[] = [];
  arrayAt(b.messages, 'messages').forEach((item, i) => {
    const m = objectAt(item, `messages[${i}]`);
    const role = m.role;
    if (role !== 'user' && role !== 'assistant') {
      throw bad(
        `messages[${i}].role`,
        `unknown role "${String(role)}"`,
        'use user or assistant; put the system prompt in "system"',
      );
    }
    pushMessage(messages, role, parseParts(m.content, `messages[${i}].content`, role));
  });
  const tools: LlmTool[] =
    b.tools === undefined
      ? []
      : arrayAt(b.tools, 'tools').map((item, i) => {
          const t = objectAt(item, `tools[${i}]`);
          return {
            name: stringAt(t.name, `tools[${i}].name`),
            ...(typeof t.description === 'string' ? { description: t.description } : {}),
            parameters: isObject(t.input_schema) ? t.input_schema : { type: 'object', properties: {} },
          };
        });
  return {
    model: stringAt(b.model, 'model'),
    system: b.system === undefined || b.system === null ? null : textContent(b.system, 'system'),
    messages,
    tools,
    toolChoice: parseToolChoice(b.tool_choice),
    maxTokens: optionalNumber(b.max_tokens, 'max_tokens'),
    temperature: optionalNumber(b.temperature, 'temperature'),
    topP: optionalNumber(b.top_p, 'top_p'),
    stop: stopList(b.stop_sequences, 'stop_sequences'),
    stream: b.stream === true,
  };
}

const STOP: Record<StopReason, string> = {
  stop: 'end_turn',
  length: 'max_tokens',
  tool_calls: 'tool_use',
  content_filter: 'refusal',
};

function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text === '' ? '{}' : text);
  } catch {
    return { _raw: text };
  }
}

function blockOf(part: LlmPart): Json | null {
  if (part.type === 'text') return { type: 'text', text: part.text };
  if (part.type === 'tool_call') {
    return { type: 'tool_use', id: part.id, name: part.name, input: parseArguments(part.arguments) };
  }
  return null;
}

export function renderMessagesResponse(response: LlmResponse): Json {
  return {
    id: response.id,
    type: 'message',
    role: 'assistant',
    model: response.model,
    content: response.content.flatMap((part) => blockOf(part) ?? []),
    stop_reason: STOP[response.stopReason],
    stop_sequence: null,
    usage: { input_tokens: response.usage.inputTokens, output_tokens: response.usage.outputTokens },
  };
}

export interface SseEvent {
  readonly event: string;
  readonly data: Json;
}

/** Canonical stream events → Anthropic SSE events (`message_start` … `message_stop`). */
export class MessagesStreamRenderer {
  #open: number | null = null;
  #next = 0;
  readonly #toolBlocks = new Map<number, number>();

  #close(out: SseEvent[]): void {
    if (this.#open !== null) {
      out.push({ event: 'content_block_stop', data: { type: 'content_block_stop', index: this.#open } });
      this.#open = null;
    }
  }

  render(event: LlmStreamEvent): SseEvent[] {
    const out: SseEvent[] = [];
    switch (event.type) {
      case 'start':
        out.push({
          event: 'message_start',
          data: {
            type: 'message_start',
            message: {
              id: event.id,
              type: 'message',
              role: 'assistant',
              model: event.model,
              content: [],
              stop_reason: null,
              stop_sequence: null,
              usage: { input_tokens: 0, output_tokens: 0 },
            },
          },
        });
        break;
      case 'text':
        if (this.#open === null || this.#toolBlocks.size > 0) {
          this.#close(out);
          this.#open = this.#next++;
          out.push({
            event: 'content_block_start',
            data: {
              type: 'content_block_start',
              index: this.#open,
              content_block: { type: 'text', text: '' },
            },
          });
        }
        out.push({
          event: 'content_block_delta',
          data: {
            type: 'content_block_delta',
            index: this.#open,
            delta: { type: 'text_delta', text: event.delta },
          },
        });
        break;
      case 'tool_call': {
        this.#close(out);
        const index = this.#next++;
        this.#open = index;
        this.#toolBlocks.set(event.index, index);
        out.push({
          event: 'content_block_start',
          data: {
            type: 'content_block_start',
            index,
            content_block: { type: 'tool_use', id: event.id, name: event.name, input: {} },
          },
        });
        break;
      }
      case 'tool_args': {
        const index = this.#toolBlocks.get(event.index);
        if (index === undefined) break;
        out.push({
          event: 'content_block_delta',
          data: {
            type: 'content_block_delta',
            index,
            delta: { type: 'input_json_delta', partial_json: event.delta },
          },
        });
        break;
      }
      case 'end':
        this.#close(out);
        out.push({
          event: 'message_delta',
          data: {
            type: 'message_delta',
            delta: { stop_reason: STOP[event.stopReason], stop_sequence: null },
            usage: { input_tokens: event.usage.inputTokens, output_tokens: event.usage.outputTokens },
          },
        });
        out.push({ event: 'message_stop', data: { type: 'message_stop' } });
        break;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Upstream side: the gateway calling an Anthropic server.

export function buildMessagesRequest(
  request: LlmRequest,
  upstreamModel: string,
  defaultMaxTokens: number,
): Json {
  const messages = request.messages.map((message) => ({
    role: message.role,
    content: message.content.map((part) => {
      if (part.type === 'tool_result') {
        return {
          type: 'tool_result',
          tool_use_id: part.toolCallId,
          content: part.content,
          ...(part.isError ? { is_error: true } : {}),
        };
      }
      return blockOf(part);
    }),
  }));
  const body: Json = {
    model: upstreamModel,
    messages,
    max_tokens: request.maxTokens ?? defaultMaxTokens,
    stream: request.stream,
  };
  if (request.system !== null) body.system = request.system;
  if (request.tools.length > 0) {
    body.tools = request.tools.map((t) => ({
      name: t.name,
      ...(t.description ? { description: t.description } : {}),
      input_schema: t.parameters,
    }));
  }
  const choice = request.toolChoice;
  if (choice !== null) {
    body.tool_choice =
      choice === 'auto'
        ? { type: 'auto' }
        : choice === 'required'
          ? { type: 'any' }
          : choice === 'none'
            ? { type: 'none' }
            : { type: 'tool', name: choice.name };
  }
  if (request.temperature !== null) body.temperature = request.temperature;
  if (request.topP !== null) body.top_p = request.topP;
  if (request.stop.length > 0) body.stop_sequences = request.stop;
  return body;
}

function stopReasonOf(value: unknown): StopReason {
  if (value === 'max_tokens') return 'length';
  if (value === 'tool_use') return 'tool_calls';
  if (value === 'refusal') return 'content_filter';
  return 'stop';
}

export function parseMessagesResponse(body: unknown): LlmResponse {
  const b = objectAt(body, 'upstream response');
  const content: LlmPart[] = [];
  for (const block of arrayAt(b.content, 'upstream content')) {
    if (!isObject(block)) continue;
    if (block.type === 'text' && typeof block.text === 'string')
      content.push({ type: 'text', text: block.text });
    if (block.type === 'tool_use') {
      content.push({
        type: 'tool_call',
        id: String(block.id ?? ''),
        name: String(block.name ?? ''),
        arguments: JSON.stringify(block.input ?? {}),
      });
    }
  }
  const usage = isObject(b.usage) ? b.usage : {};
  return {
    id: typeof b.id === 'string' ? b.id : 'msg_upstream',
    model: typeof b.model === 'string' ? b.model : '',
    content,
    stopReason: stopReasonOf(b.stop_reason),
    usage: {
      inputTokens: typeof usage.input_tokens === 'number' ? usage.input_tokens : 0,
      outputTokens: typeof usage.output_tokens === 'number' ? usage.output_tokens : 0,
    },
  };
}

/** Upstream Anthropic SSE event data → canonical events. */
export class MessagesEventParser {
  #usage: LlmUsage = { inputTokens: 0, outputTokens: 0 };
  #stop: StopReason = 'stop';
  #tools = 0;
  readonly #toolOfBlock = new Map<number, number>();
  ended = false;

  push(data: unknown): LlmStreamEvent[] {
    if (!isObject(data)) return [];
    switch (data.type) {
      case 'message_start': {
        const m = isObject(data.message) ? data.message : {};
        const u = isObject(m.usage) ? m.usage : {};
        this.#usage = {
          inputTokens: Number(u.input_tokens ?? 0),
          outputTokens: Number(u.output_tokens ?? 0),
        };
        return [{ type: 'start', id: String(m.id ?? 'msg_upstream'), model: String(m.model ?? '') }];
      }
      case 'content_block_start': {
        const block = isObject(data.content_block) ? data.content_block : {};
        if (block.type === 'tool_use') {
          const index = this.#tools++;
          this.#toolOfBlock.set(Number(data.index), index);
          return [{ type: 'tool_call', index, id: String(block.id ?? ''), name: String(block.name ?? '') }];
        }
        if (block.type === 'text' && typeof block.text === 'string' && block.text !== '') {
          return [{ type: 'text', delta: block.text }];
        }
        return [];
      }
      case 'content_block_delta': {
        const delta = isObject(data.delta) ? data.delta : {};
        if (delta.type === 'text_delta' && typeof delta.text === 'string')
          return [{ type: 'text', delta: delta.text }];
        if (delta.type === 'input_json_delta' && typeof delta.partial_json === 'string') {
          const index = this.#toolOfBlock.get(Number(data.index));
          return index === undefined ? [] : [{ type: 'tool_args', index, delta: delta.partial_json }];
        }
        return [];
      }
      case 'message_delta': {
        const delta = isObject(data.delta) ? data.delta : {};
        if (delta.stop_reason !== undefined) this.#stop = stopReasonOf(delta.stop_reason);
        const u = isObject(data.usage) ? data.usage : {};
        this.#usage = {
          inputTokens: typeof u.input_tokens === 'number' ? u.input_tokens : this.#usage.inputTokens,
          outputTokens: typeof u.output_tokens === 'number' ? u.output_tokens : this.#usage.outputTokens,
        };
        return [];
      }
      case 'message_stop':
        this.ended = true;
        return [{ type: 'end', stopReason: this.#stop, usage: this.#usage }];
      default:
        return [];
    }
  }
}
