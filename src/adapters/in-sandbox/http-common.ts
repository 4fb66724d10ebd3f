/**
 * What every in-sandbox API handler (tools, memory, swarm on 127.0.0.1:3129) does the same way: JSON answers, the
 * per-execution bearer token compared in constant time, and a bounded JSON body.
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { AegisError } from '../../domain/errors.ts';

export function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  response.end(text);
}

/** `Authorization: Bearer <token>` equals the execution's token (constant time). */
export function bearerMatches(request: IncomingMessage, token: string): boolean {
  const header = request.headers.authorization ?? '';
  const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** The body as JSON (empty: `{}`); PAYLOAD_TOO_LARGE past `maxBytes`, read no further. */
export async function readJsonBody(
  request: IncomingMessage,
  maxBytes: number,
  what: string,
  hint: string,
): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) {
      throw new AegisError('PAYLOAD_TOO_LARGE', `a ${what} body is at most ${maxBytes} bytes`, { hint });
    }
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text === '' ? '{}' : text);
  } catch {
    throw new AegisError('USAGE', 'the body is not JSON');
  }
}
