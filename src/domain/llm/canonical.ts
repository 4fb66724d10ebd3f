/**
 * The gateway's one internal form of a model call. Every inbound protocol (OpenAI Chat Completions, OpenAI
 * Responses, Anthropic Messages) parses into it and renders out of it; every upstream provider is called from it.
 * So translation between the families is N parsers + N renderers, not N×N converters.
 */

export type LlmPart =
  | { readonly type: 'text'; readonly text: string }
  /** `arguments` is the JSON text the model produced (possibly invalid JSON: passed through as-is). */
  | { readonly type: 'tool_call'; readonly id: string; readonly name: string; readonly arguments: string }
  | {
      readonly type: 'tool_result';
      readonly toolCallId: string;
      readonly content: string;
      readonly isError: boolean;
    };

export interface LlmMessage {
  readonly role: 'user' | 'assistant';
  readonly content: readonly LlmPart[];
}

export interface LlmTool {
  readonly name: string;
  readonly description?: string;
  /** JSON Schema of the arguments. */
  readonly parameters: Readonly<Record<string, unknown>>;
}

export type LlmToolChoice = 'auto' | 'none' | 'required' | { readonly name: string };

export interface LlmRequest {
  /** The alias the agent asked for (`default`, `fast`, …). */
  readonly model: string;
  readonly system: string | null;
  readonly messages: readonly LlmMessage[];
  readonly tools: readonly LlmTool[];
  readonly toolChoice: LlmToolChoice | null;
  readonly maxTokens: number | null;
  readonly temperature: number | null;
  readonly topP: number | null;
  readonly stop: readonly string[];
  readonly stream: boolean;
}

export type StopReason = 'stop' | 'length' | 'tool_calls' | 'content_filter';

export interface LlmUsage {
  readonly inputTokens: number;
  readonly outputTokens: number;
}

export interface LlmResponse {
  readonly id: string;
  /** The upstream model that answered. */
  readonly model: string;
  /** Text and tool_call parts, in order. */
  readonly content: readonly LlmPart[];
  readonly stopReason: StopReason;
  readonly usage: LlmUsage;
}

export type LlmStreamEvent =
  | { readonly type: 'start'; readonly id: string; readonly model: string }
  | { readonly type: 'text'; readonly delta: string }
  | { readonly type: 'tool_call'; readonly index: number; readonly id: string; readonly name: string }
  | { readonly type: 'tool_args'; readonly index: number; readonly delta: string }
  | { readonly type: 'end'; readonly stopReason: StopReason; readonly usage: LlmUsage };

/** Folds a stream into the response it describes (for the ledger, and for non-streaming callers of a stream). */
export class StreamAccumulator {
  id = '';
  model = '';
  #text = '';
  readonly #parts: LlmPart[] = [];
  readonly #calls = new Map<number, { id: string; name: string; arguments: string }>();
  stopReason: StopReason = 'stop';
  usage: LlmUsage = { inputTokens: 0, outputTokens: 0 };
  ended = false;

  add(event: LlmStreamEvent): void {
    switch (event.type) {
      case 'start':
        this.id = event.id;
        this.model = event.model;
        break;
      case 'text':
        this.#text += event.delta;
        break;
      case 'tool_call':
        this.#flushText();
        this.#calls.set(event.index, { id: event.id, name: event.name, arguments: '' });
        break;
      case 'tool_args': {
        const call = this.#calls.get(event.index);
        if (call) call.arguments += event.delta;
        break;
      }
      case 'end':
        this.stopReason = event.stopReason;
        this.usage = event.usage;
        this.ended = true;
        break;
    }
  }

  #flushText(): void {
    if (this.#text !== '') this.#parts.push({ type: 'text', text: this.#text });
    this.#text = '';
  }

  response(): LlmResponse {
    this.#flushText();
    const calls = [...this.#calls.values()].map((call): LlmPart => ({ type: 'tool_call', ...call }));
    return {
      id: this.id,
      model: this.model,
      content: [...this.#parts, ...calls],
      stopReason: this.stopReason,
      usage: this.usage,
    };
  }
}

/** Splits a complete response into the stream that would have produced it (for streaming callers of a JSON upstream). */
export function* responseAsStream(response: LlmResponse): Generator<LlmStreamEvent> {
  yield { type: 'start', id: response.id, model: response.model };
  let index = 0;
  for (const part of response.content) {
    if (part.type === 'text') yield { type: 'text', delta: part.text };
    else if (part.type === 'tool_call') {
      yield { type: 'tool_call', index, id: part.id, name: part.name };
      yield { type: 'tool_args', index, delta: part.arguments };
      index++;
    }
  }
  yield { type: 'end', stopReason: response.stopReason, usage: response.usage };
}

export function textOf(parts: readonly LlmPart[]): string {
  return parts.map((part) => (part.type === 'text' ? part.text : '')).join('');
}
