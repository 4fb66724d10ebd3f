/**
 * Plain-HTTP responses through the secrets hook's response half (`HttpResponseScrubber` in options.ts): the status
 * message, headers and body are scrubbed before anything reaches the client; an encoded body is decoded first.
 */

import type http from 'node:http';
import type net from 'node:net';
import { pipeline, Transform } from 'node:stream';
import zlib from 'node:zlib';
import type { Attempt } from './core.ts';
import { errorCode } from './core.ts';
import type { HttpRequestHead, ResponseScrub } from './options.ts';

/** Content codings the proxy can decode (and so scrub), by name. */
const DECODERS: Readonly<Record<string, () => Transform>> = {
  gzip: () => zlib.createGunzip(),
  'x-gzip': () => zlib.createGunzip(),
  deflate: () => zlib.createInflate(),
  br: () => zlib.createBrotliDecompress(),
  ...('createZstdDecompress' in zlib && typeof zlib.createZstdDecompress === 'function'
    ? { zstd: () => (zlib.createZstdDecompress as () => Transform)() }
    : {}),
};

/** Headers that describe the bytes as the server sent them: wrong once the body is decoded or scrubbed. */
const BODY_FRAMING = new Set([
  'content-length',
  'content-encoding',
  'content-md5',
  'digest',
  'content-digest',
]);

/** The codings applied to the body, in the order they were applied (`identity` dropped). */
function contentCodings(headers: readonly (readonly [string, string])[]): string[] {
  return headers
    .filter(([name]) => name.toLowerCase() === 'content-encoding')
    .flatMap(([, value]) => value.split(','))
    .map((token) => token.trim().toLowerCase())
    .filter((token) => token !== '' && token !== 'identity');
}

function hasBody(method: string, status: number): boolean {
  return method.toUpperCase() !== 'HEAD' && status >= 200 && status !== 204 && status !== 304;
}

export interface ScrubbedResponse {
  readonly attempt: Attempt;
  readonly scrub: ResponseScrub;
  readonly request: HttpRequestHead;
  readonly upstreamResponse: http.IncomingMessage;
  /** End-to-end response headers as received. */
  readonly headers: readonly (readonly [string, string])[];
  readonly res: http.ServerResponse;
  readonly upstream: net.Socket;
  /** Answers the client with a proxy error (only while nothing of the response was sent). */
  readonly respond: (status: number, body: string) => void;
  /** Called once, when the response was refused or its body pipeline has settled (ended or failed). */
  readonly onSettled: () => void;
}

/**
 * Writes the scrubbed head and pipes the scrubbed (decoded) body to the client. Refuses (502) a body in a coding it
 * cannot decode. Any failure later (a corrupt compressed body, the scrub throwing) cuts the response: nothing
 * unscrubbed is ever written.
 */
export function forwardScrubbed(r: ScrubbedResponse): void {
  const { attempt, scrub, res, upstream, upstreamResponse } = r;
  const status = upstreamResponse.statusCode ?? 502;
  const body = hasBody(r.request.method, status);
  const codings = body ? contentCodings(r.headers) : [];
  const unknown = codings.find((coding) => DECODERS[coding] === undefined);
  if (unknown !== undefined) {
    attempt.error = `unscrubbable-encoding: ${unknown.slice(0, 64)}`;
    upstream.destroy();
    r.respond(
      502,
      `network: ${attempt.requested} sent a body in Content-Encoding "${unknown.slice(0, 64)}", which the proxy cannot decode to remove secrets from it; ask for "identity" (or gzip, deflate, br)`,
    );
    r.onSettled();
    return;
  }
  let headers: [string, string][];
  let statusMessage: string;
  try {
    statusMessage = scrub.text(upstreamResponse.statusMessage ?? '');
    headers = [];
    for (const [name, value] of r.headers) {
      if (body && BODY_FRAMING.has(name.toLowerCase())) continue;
      const scrubbedName = scrub.text(name);
      if (scrubbedName !== name) continue; // a header named after a secret: dropped
      headers.push([name, scrub.text(value)]);
    }
    res.writeHead(status, statusMessage, headers.flat());
  } catch (error) {
    attempt.error = `bad-response: ${errorCode(error)}`;
    upstream.destroy();
    r.respond(502, `network: ${attempt.requested} sent a response the proxy cannot forward`);
    r.onSettled();
    return;
  }
  if (!body) {
    upstreamResponse.resume();
    res.end();
    r.onSettled();
    return;
  }
  const decoders = codings.reverse().map((coding) => {
    const decoder = DECODERS[coding]!();
    decoder.once('error', (error) => {
      attempt.error ??= `bad-encoding: ${coding}: ${errorCode(error)}`;
    });
    return decoder;
  });
  const scrubber = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      try {
        const out = scrub.push(chunk);
        callback(null, out.length > 0 ? out : undefined);
      } catch (error) {
        attempt.error ??= `scrub-failed: ${errorCode(error)}`;
        callback(error as Error);
      }
    },
    flush(callback) {
      try {
        const out = scrub.end();
        callback(null, out.length > 0 ? out : undefined);
      } catch (error) {
        attempt.error ??= `scrub-failed: ${errorCode(error)}`;
        callback(error as Error);
      }
    },
  });
  pipeline([upstreamResponse, ...decoders, scrubber, res], (error) => {
    if (error) {
      upstream.destroy();
      res.destroy();
    }
    r.onSettled();
  });
}
