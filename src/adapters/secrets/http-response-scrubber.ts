/**
 * The egress proxy's response scrubbing for secrets (`HttpResponseScrubber`, see RESPONSE SCRUBBING in
 * adapters/egress/options.ts): every secret value of the execution — raw and in every form `secretEncodings` lists
 * (JSON, URL, base64/base64url including inside longer base64, hex) — is replaced by the secret's placeholder in
 * every plain-HTTP response before it enters the sandbox, so a host that reflects its request (an echo endpoint,
 * an error page quoting `Authorization`, a "whoami") hands back only the placeholder the agent already has.
 *
 * Bytes are matched as bytes (UTF-8 of each form), never decoded, and across reads and chunks: the scanner holds
 * back only a tail that could begin a value. Each secret found in a response is reported once through
 * `onSecretUse({where: 'response', reason: 'reflected'})`, so the ledger shows which host reflected which secret.
 * See docs/adr/0018-response-scrubbing.md for what this does not catch.
 */

import type { PlaceholderMap } from '../../domain/secrets/placeholder.ts';
import { createByteStreamRedactor, Redactor } from '../../domain/secrets/redactor.ts';
import type { HttpRequestHead, HttpResponseScrubber, ResponseScrub } from '../egress/proxy.ts';
import type { SecretUse } from './http-secret-rewriter.ts';

export interface HttpSecretScrubberOptions {
  /** This execution's placeholders → secret name and value (`placeholderMap`). */
  readonly placeholders: PlaceholderMap;
  /** Ledger hook (`secret.use`, `where: 'response'`). Throwing cuts the response. @default none */
  readonly onSecretUse?: (use: SecretUse) => void;
}

export class HttpSecretScrubber implements HttpResponseScrubber {
  readonly #redactor: Redactor;
  readonly #onSecretUse: ((use: SecretUse) => void) | undefined;

  constructor(options: HttpSecretScrubberOptions) {
    const placeholderOf = new Map<string, string>();
    const values: { name: string; value: string }[] = [];
    for (const [placeholder, entry] of options.placeholders) {
      placeholderOf.set(entry.name, placeholder);
      values.push({ name: entry.name, value: entry.value });
    }
    this.#redactor = new Redactor(values, {
      bytes: true,
      // Overlapping values of two secrets: both placeholders (the span is replaced whole).
      replacement: (names) => names.map((name) => placeholderOf.get(name)!).join(''),
    });
    this.#onSecretUse = options.onSecretUse;
  }

  /** Length of the longest byte pattern: the most a response can be held back by. */
  get maxPatternBytes(): number {
    return this.#redactor.maxLength;
  }

  begin(head: HttpRequestHead): ResponseScrub {
    const redactor = this.#redactor;
    const reported = new Set<string>();
    const found = (names: readonly string[]) => {
      for (const name of names) {
        if (reported.has(name)) continue;
        reported.add(name);
        this.#onSecretUse?.({
          name,
          host: head.host,
          port: head.port,
          injected: false,
          where: 'response',
          reason: 'reflected',
        });
      }
    };
    const body = createByteStreamRedactor(redactor, (span) => found(span.names));
    return {
      text: (text) => {
        const spans = redactor.spans(text);
        for (const span of spans) found(span.names);
        return redactor.render(text, spans, text.length);
      },
      push: (chunk) => body.push(chunk),
      end: () => body.end(),
    };
  }
}
