/**
 * Deterministic stand-ins for model providers on loopback: an OpenAI-compatible Chat Completions server and an
 * Anthropic Messages server in one listener. Each answers `echo: <last user text>` (or a `get_weather` tool call
 * when tools are offered and the text mentions weather), 10 input / 5 output tokens, JSON or SSE. `failNext`
 * queues refusals (e.g. a 429 with Retry-After). `script` queues exact replies for Chat Completions (a text or
 * tool calls), taken in order before the default behaviour. Every request is kept in `requests` (headers and body).
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SeenRequest {
  readonly path: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: Record<string, unknown>;
}

/** One scripted Chat Completions reply: a final text, or tool calls (arguments as objects or raw JSON text). */
export type ScriptedReply =
  | { readonly text: string }
  | { readonly toolCalls: readonly { readonly name: string; readonly arguments: unknown }[] };

export interface ScriptedLlm {
  readonly baseUrl: string;
  readonly requests: SeenRequest[];
  failNext(status: number, headers?: Record<string, string>, times?: number): void;
  /** Queues replies (non-streaming Chat Completions), used in order. */
  script(...replies: ScriptedReply[]): void;
  /** Scripted replies not used yet. */
  readonly pending: () => number;
  close(): Promise<void>;
}

type Msg = { role: string; content: unknown };

function lastUserText(messages: Msg[]): string {
  const last = [...messages].reverse().find((m) => m.role === 'user' || m.role === 'tool');
  if (!last) return '';
  if (typeof last.content === 'string') return last.content;
  if (Array.isArray(last.content)) {
    return last.content
      .map(
        (p: { text?: string; content?: unknown }) =>
          p.text ?? (typeof p.content === 'string' ? `tool:${p.content}` : ''),
      )
      .join('');
  }
  return '';
}

export async function startScriptedLlm(): Promise<ScriptedLlm> {
  const requests: SeenRequest[] = [];
  const failures: { status: number; headers: Record<string, string> }[] = [];
  const scripted: ScriptedReply[] = [];
  let callNo = 0;
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
    const path = req.url ?? '/';
    requests.push({ path, headers: req.headers, body });
    const failure = failures.shift();
    if (failure) {
      res.writeHead(failure.status, { 'content-type': 'application/json', ...failure.headers });
      res.end(JSON.stringify({ error: { message: `scripted ${failure.status}`, type: 'scripted' } }));
      return;
    }
    const reply = path.endsWith('/chat/completions') && !body.stream ? scripted.shift() : undefined;
    if (reply) {
      const message =
        'text' in reply
          ? { role: 'assistant', content: reply.text }
          : {
              role: 'assistant',
              content: null,
              tool_calls: reply.toolCalls.map((call) => ({
                id: `call_${++callNo}`,
                type: 'function',
                function: {
                  name: call.name,
                  arguments:
                    typeof call.arguments === 'string' ? call.arguments : JSON.stringify(call.arguments),
                },
              })),
            };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          id: 'chatcmpl-scripted',
          object: 'chat.completion',
          created: 1,
          model: String(body.model),
          choices: [{ index: 0, message, finish_reason: 'text' in reply ? 'stop' : 'tool_calls' }],
          usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
        }),
      );
      return;
    }
    const messages = (body.messages ?? []) as Msg[];
    const text = lastUserText(messages);
    const wantsTool = Array.isArray(body.tools) && body.tools.length > 0 && /weather/i.test(text);
    const answer = `echo: ${text}`;
    const model = String(body.model);
    if (path.endsWith('/chat/completions')) {
      const call = {
        id: 'call_1',
        type: 'function',
        function: { name: 'get_weather', arguments: '{"city":"Paris"}' },
      };
      if (!body.stream) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            id: 'chatcmpl-up',
            object: 'chat.completion',
            created: 1,
            model,
            choices: [
              {
                index: 0,
                message: wantsTool
                  ? { role: 'assistant', content: null, tool_calls: [call] }
                  : { role: 'assistant', content: answer },
                finish_reason: wantsTool ? 'tool_calls' : 'stop',
              },
            ],
            usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
          }),
        );
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = (delta: unknown, finish: string | null, extra: Record<string, unknown> = {}) =>
        `data: ${JSON.stringify({ id: 'chatcmpl-up', object: 'chat.completion.chunk', created: 1, model, choices: [{ index: 0, delta, finish_reason: finish }], ...extra })}\n\n`;
      res.write(chunk({ role: 'assistant', content: '' }, null));
      if (wantsTool) {
        res.write(
          chunk(
            {
              tool_calls: [
                {
                  index: 0,
                  id: 'call_1',
                  type: 'function',
                  function: { name: 'get_weather', arguments: '' },
                },
              ],
            },
            null,
          ),
        );
        res.write(chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }, null));
        res.write(chunk({ tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] }, null));
      } else {
        for (const piece of answer.match(/.{1,4}/gs) ?? []) res.write(chunk({ content: piece }, null));
      }
      res.write(chunk({}, wantsTool ? 'tool_calls' : 'stop'));
      res.write(
        `data: ${JSON.stringify({ id: 'chatcmpl-up', object: 'chat.completion.chunk', created: 1, model, choices: [], usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } })}\n\n`,
      );
      res.end('data: [DONE]\n\n');
      return;
    }
    if (path.endsWith('/messages')) {
      const toolBlock = { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } };
      if (!body.stream) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            id: 'msg_up',
            type: 'message',
            role: 'assistant',
            model,
            content: wantsTool ? [toolBlock] : [{ type: 'text', text: answer }],
            stop_reason: wantsTool ? 'tool_use' : 'end_turn',
            stop_sequence: null,
            usage: { input_tokens: 10, output_tokens: 5 },
          }),
        );
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const ev = (event: string, data: Record<string, unknown>) =>
        res.write(`event: ${event}\ndata: ${JSON.stringify({ type: event, ...data })}\n\n`);
      ev('message_start', {
        message: {
          id: 'msg_up',
          type: 'message',
          role: 'assistant',
          model,
          content: [],
          stop_reason: null,
          usage: { input_tokens: 10, output_tokens: 0 },
        },
      });
      if (wantsTool) {
        ev('content_block_start', {
          index: 0,
          content_block: { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: {} },
        });
        ev('content_block_delta', {
          index: 0,
          delta: { type: 'input_json_delta', partial_json: '{"city":' },
        });
        ev('content_block_delta', {
          index: 0,
          delta: { type: 'input_json_delta', partial_json: '"Paris"}' },
        });
      } else {
        ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } });
        for (const piece of answer.match(/.{1,4}/gs) ?? [])
          ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: piece } });
      }
      ev('content_block_stop', { index: 0 });
      ev('message_delta', {
        delta: { stop_reason: wantsTool ? 'tool_use' : 'end_turn', stop_sequence: null },
        usage: { output_tokens: 5 },
      });
      ev('message_stop', {});
      res.end();
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    requests,
    failNext(status, headers = {}, times = 1) {
      for (let i = 0; i < times; i++) failures.push({ status, headers });
    },
    script(...replies) {
      scripted.push(...replies);
    },
    pending: () => scripted.length,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
