/**
 * OpenAI Responses (`POST /v1/responses`) → the canonical form, and back (JSON and SSE). Inbound only: upstream
 * providers are called with Chat Completions or Messages. Stateless subset: `previous_response_id`, `store` and
 * built-in tools are refused with a clear error, the agent sends the whole conversation in `input`.
 */

import type { SseEvent } from './anthropic-messages.ts';
import type {
  LlmMessage,
  LlmPart,
  LlmRequest,
  LlmResponse,
  LlmStreamEvent,
  LlmTool,
  LlmToolChoice,
} from './canonical.ts';
import { StreamAccumulator } from './canonical.ts';
import {
  arrayAt,
  bad,
  isObject,
  type Json,
  objectAt,
  optionalNumber,
  stringAt,
  textContent,
} from './json.ts';
import { pushMessage } from './openai-chat.ts';

function parseToolChoice(value: unknown): LlmToolChoice | null {
  if (value === undefined || value === null) return null;
  if (value === 'auto' || value === 'none' || value === 'required') return value;
  if (isObject(value) && value.type === 'function' && typeof value.name === 'string')
    return { name: value.name };
  throw bad('tool_choice', 'expected "auto", "none", "required" or {type: "function", name}');
}

export function parseResponsesRequest(body: unknown): LlmRequest {
  const b = objectAt(body, '<body>');
  if (b.previous_response_id !== undefined && b.previous_response_id !== null) {
    throw bad(
      'previous_response_id',
      'the AEGIS gateway keeps no conversation state',
      'send the whole conversation in "input"',
    );
  }
  const system: string[] = [];
  if (typeof b.instructions === 'string') system.push(b.instructions);
  const messages: LlmMessage[] = [];
  if (typeof b.input === 'string') {
    pushMessage(messages, 'user', [{ type: 'text', text: b.input }]);
  } else {
    arrayAt(b.input, 'input').forEach((item, i) => {
      const path = `input[${i}]`;
      const it = objectAt(item, path);
      const type = it.type ?? 'message';
      if (type === 'message') {
        const role = stringAt(it.role, `${path}.role`);
        const text = textContent(it.content, `${path}.content`);
        if (role === 'system' || role === 'developer') system.push(text);
        else if (role === 'user' || role === 'assistant')
          pushMessage(messages, role, [{ type: 'text', text }]);
        else throw bad(`${path}.role`, `unknown role "${role}"`);
      } else if (type === 'function_call') {
        pushMessage(messages, 'assistant', [
          {
            type: 'tool_call',
            id: stringAt(it.call_id, `${path}.call_id`),
            name: stringAt(it.name, `${path}.name`),
            arguments: typeof it.arguments === 'string' ? it.arguments : '{}',
          },
        ]);
      } else if (type === 'function_call_output') {
        pushMessage(messages, 'user', [
          {
            type: 'tool_result',
            toolCallId: stringAt(it.call_id, `${path}.call_id`),
            content: typeof it.output === 'string' ? it.output : JSON.stringify(it.output),
            isError: false,
          },
        ]);
      } else {
        throw bad(
          `${path}.type`,
          `input item "${String(type)}" is not supported by the gateway`,
          'send message, function_call and function_call_output items',
        );
      }
    });
  }
  const tools: LlmTool[] =
    b.tools === undefined || b.tools === null
      ? []
      : arrayAt(b.tools, 'tools').map((item, i) => {
          const t = objectAt(item, `tools[${i}]`);
          if (t.type !== 'function') {
            throw bad(
              `tools[${i}].type`,
              `built-in tool "${String(t.type)}" is not available through the gateway`,
              'declare function tools',
            );
          }
          return {
            name: stringAt(t.name, `tools[${i}].name`),
            ...(typeof t.description === 'string' ? { description: t.description } : {}),
            parameters: isObject(t.parameters) ? t.parameters : { type: 'object', properties: {} },
          };
        });
  return {
    model: stringAt(b.model, 'model'),
    system: system.length > 0 ? system.join('\n\n') : null,
    messages,
    tools,
    toolChoice: parseToolChoice(b.tool_choice),
    maxTokens: optionalNumber(b.max_output_tokens, 'max_output_tokens'),
    temperature: optionalNumber(b.temperature, 'temperature'),
    topP: optionalNumber(b.top_p, 'top_p'),
    stop: [],
    stream: b.stream === true,
  };
}

function outputItems(id: string, content: readonly LlmPart[]): Json[] {
  const items: Json[] = [];
  const text = content.map((p) => (p.type === 'text' ? p.text : '')).join('');
  if (text !== '') {
    items.push({
      type: 'message',
      id: `msg_${id}`,
      status: 'completed',
      role: 'assistant',
      content: [{ type: 'output_text', text, annotations: [] }],
    });
  }
  content.forEach((part, i) => {
    if (part.type === 'tool_call') {
      items.push({
        type: 'function_call',
        id: `fc_${id}_${i}`,
        call_id: part.id,
        name: part.name,
        arguments: part.arguments,
        status: 'completed',
      });
    }
  });
  return items;
}

function envelope(response: LlmResponse, createdS: number, status: string): Json {
  const incomplete = status === 'completed' && response.stopReason === 'length';
  return {
    id: response.id.startsWith('resp_') ? response.id : `resp_${response.id}`,
    object: 'response',
    created_at: createdS,
    status: incomplete ? 'incomplete' : status,
    model: response.model,
    output: status === 'in_progress' ? [] : outputItems(response.id, response.content),
    usage:
      status === 'in_progress'
        ? null
        : {
            input_tokens: response.usage.inputTokens,
            output_tokens: response.usage.outputTokens,
            total_tokens: response.usage.inputTokens + response.usage.outputTokens,
            input_tokens_details: { cached_tokens: 0 },
            output_tokens_details: { reasoning_tokens: 0 },
          },
    error: null,
    incomplete_details: incomplete ? { reason: 'max_output_tokens' } : null,
    instructions: null,
    metadata: {},
    parallel_tool_calls: true,
    temperature: null,
    top_p: null,
    tool_choice: 'auto',
    tools: [],
  };
}

export function renderResponsesResponse(response: LlmResponse, createdS: number): Json {
  return envelope(response, createdS, 'completed');
}

/** Canonical stream events → Responses SSE events (`response.created` … `response.completed`). */
export class ResponsesStreamRenderer {
  readonly #created: number;
  readonly #acc = new StreamAccumulator();
  #seq = 0;
  #outputIndex = 0;
  #message: { index: number; id: string; text: string } | null = null;
  readonly #calls = new Map<
    number,
    { index: number; id: string; callId: string; name: string; args: string }
  >();

  constructor(createdS: number) {
    this.#created = createdS;
  }

  #emit(out: SseEvent[], type: string, data: Json): void {
    out.push({ event: type, data: { type, sequence_number: this.#seq++, ...data } });
  }

  #closeMessage(out: SseEvent[]): void {
    const m = this.#message;
    if (m === null) return;
    const part = { type: 'output_text', text: m.text, annotations: [] };
    this.#emit(out, 'response.output_text.done', {
      item_id: m.id,
      output_index: m.index,
      content_index: 0,
      text: m.text,
    });
    this.#emit(out, 'response.content_part.done', {
      item_id: m.id,
      output_index: m.index,
      content_index: 0,
      part,
    });
    this.#emit(out, 'response.output_item.done', {
      output_index: m.index,
      item: { type: 'message', id: m.id, status: 'completed', role: 'assistant', content: [part] },
    });
    this.#message = null;
  }

  render(event: LlmStreamEvent): SseEvent[] {
    this.#acc.add(event);
    const out: SseEvent[] = [];
    const id = this.#acc.id;
    switch (event.type) {
      case 'start': {
        const skeleton = envelope(this.#acc.response(), this.#created, 'in_progress');
        this.#emit(out, 'response.created', { response: skeleton });
        this.#emit(out, 'response.in_progress', { response: skeleton });
        break;
      }
      case 'text':
        if (this.#message === null) {
          this.#message = { index: this.#outputIndex++, id: `msg_${id}`, text: '' };
          const m = this.#message;
          this.#emit(out, 'response.output_item.added', {
            output_index: m.index,
            item: { type: 'message', id: m.id, status: 'in_progress', role: 'assistant', content: [] },
          });
          this.#emit(out, 'response.content_part.added', {
            item_id: m.id,
            output_index: m.index,
            content_index: 0,
            part: { type: 'output_text', text: '', annotations: [] },
          });
        }
        this.#message.text += event.delta;
        this.#emit(out, 'response.output_text.delta', {
          item_id: this.#message.id,
          output_index: this.#message.index,
          content_index: 0,
          delta: event.delta,
          logprobs: [],
        });
        break;
      case 'tool_call': {
        this.#closeMessage(out);
        const call = {
          index: this.#outputIndex++,
          id: `fc_${id}_${event.index}`,
          callId: event.id,
          name: event.name,
          args: '',
        };
        this.#calls.set(event.index, call);
        this.#emit(out, 'response.output_item.added', {
          output_index: call.index,
          item: {
            type: 'function_call',
            id: call.id,
            call_id: call.callId,
            name: call.name,
            arguments: '',
            status: 'in_progress',
          },
        });
        break;
      }
      case 'tool_args': {
        const call = this.#calls.get(event.index);
        if (call === undefined) break;
        call.args += event.delta;
        this.#emit(out, 'response.function_call_arguments.delta', {
          item_id: call.id,
          output_index: call.index,
          delta: event.delta,
        });
        break;
      }
      case 'end': {
        this.#closeMessage(out);
        for (const call of this.#calls.values()) {
          this.#emit(out, 'response.function_call_arguments.done', {
            item_id: call.id,
            output_index: call.index,
            arguments: call.args,
          });
          this.#emit(out, 'response.output_item.done', {
            output_index: call.index,
            item: {
              type: 'function_call',
              id: call.id,
              call_id: call.callId,
              name: call.name,
              arguments: call.args,
              status: 'completed',
            },
          });
        }
        const final = envelope(this.#acc.response(), this.#created, 'completed');
        this.#emit(out, final.status === 'incomplete' ? 'response.incomplete' : 'response.completed', {
          response: final,
        });
        break;
      }
    }
    return out;
  }
}
