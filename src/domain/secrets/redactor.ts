/**
 * Redaction of secret values from text that leaves AEGIS's control (logs, agent output, events, errors).
 *
 * A `Redactor` is built once per execution from the secret values and their common encodings (JSON string escaping,
 * URL encoding, base64 and base64url — including the forms a value takes *inside* a longer base64 text, at each of
 * the three byte alignments, as in `Authorization: Basic base64(user:secret)`). Matching is one Aho-Corasick pass:
 * O(text + matches) whatever the number of values. Overlapping occurrences are merged, so no part of any value
 * survives. `createStreamRedactor` does the same over a stream of chunks, holding back at most the longest
 * pattern minus one character (plus a match that straddles the cut), so a value split across chunks is still caught.
 *
 * Works on UTF-16 code units of decoded text: decode bytes first (e.g. with a `StringDecoder`).
 */
import { Buffer } from 'node:buffer';

export interface SecretValue {
  readonly name: string;
  readonly value: string;
}

export interface RedactorOptions {
  /** What replaces a redacted span; gets the names of the secrets found there. @default `[REDACTED:<NAME>]` */
  readonly replacement?: (names: readonly string[]) => string;
  /** Also match the encodings of each value (JSON, URL, base64, base64url). @default true */
  readonly encodings?: boolean;
}

/** A redacted span `[start, end)` and the secrets found in it. */
export interface RedactedSpan {
  readonly start: number;
  readonly end: number;
  readonly names: readonly string[];
}

/** Shortest base64 fragment matched inside longer base64 text (shorter ones would match by chance). */
const MIN_BASE64_CORE = 6;

/** The part of base64(prefix + value + suffix) that depends only on `value`, for a value at byte offset `shift`. */
function base64Core(bytes: Buffer, shift: number, alphabet: 'base64' | 'base64url'): string {
  const padded = Buffer.concat([Buffer.alloc(shift), bytes, Buffer.alloc(3)]);
  const encoded = padded.toString(alphabet);
  const firstBit = 8 * shift;
  const endBit = 8 * (shift + bytes.length);
  const from = Math.ceil(firstBit / 6);
  const to = Math.floor(endBit / 6); // exclusive: chars [from, to) lie entirely inside the value's bits
  return to > from ? encoded.slice(from, to) : '';
}

/** The value and the forms it commonly takes on the way out. */
export function secretEncodings(value: string): string[] {
  const forms = new Set<string>([value]);
  forms.add(JSON.stringify(value).slice(1, -1));
  const url = encodeURIComponent(value);
  forms.add(url);
  forms.add(url.replace(/%[0-9A-F]{2}/g, (hex) => hex.toLowerCase()));
  forms.add(url.replace(/%20/g, '+'));
  const bytes = Buffer.from(value, 'utf8');
  const base64 = bytes.toString('base64');
  forms.add(base64);
  forms.add(base64.replace(/=+$/, ''));
  forms.add(bytes.toString('base64url'));
  for (const alphabet of ['base64', 'base64url'] as const) {
    for (let shift = 0; shift < 3; shift++) {
      const core = base64Core(bytes, shift, alphabet);
      if (core.length >= MIN_BASE64_CORE) forms.add(core);
    }
  }
  forms.delete('');
  return [...forms];
}

const defaultReplacement = (names: readonly string[]): string => `[REDACTED:${names.join(',')}]`;

export class Redactor {
  /** Length of the longest pattern (0 when there is nothing to redact). */
  readonly maxLength: number;
  readonly #replacement: (names: readonly string[]) => string;
  // Aho-Corasick automaton over UTF-16 code units.
  readonly #next: Map<number, number>[] = [new Map()];
  readonly #fail: number[] = [0];
  /** Length of the longest pattern ending at this state (0: none) and its secret's name. */
  readonly #outLength: number[] = [0];
  readonly #outName: string[] = [''];

  constructor(secrets: readonly SecretValue[], options: RedactorOptions = {}) {
    this.#replacement = options.replacement ?? defaultReplacement;
    const encodings = options.encodings ?? true;
    let maxLength = 0;
    const depth: number[] = [0];
    for (const secret of secrets) {
      if (secret.value === '') continue;
      for (const pattern of encodings ? secretEncodings(secret.value) : [secret.value]) {
        let state = 0;
        for (let i = 0; i < pattern.length; i++) {
          const code = pattern.charCodeAt(i);
          let to = this.#next[state]!.get(code);
          if (to === undefined) {
            to = this.#next.length;
            this.#next.push(new Map());
            this.#fail.push(0);
            this.#outLength.push(0);
            this.#outName.push('');
            depth.push(depth[state]! + 1);
            this.#next[state]!.set(code, to);
          }
          state = to;
        }
        if (this.#outLength[state] === 0) {
          this.#outLength[state] = pattern.length;
          this.#outName[state] = secret.name;
        }
        maxLength = Math.max(maxLength, pattern.length);
      }
    }
    this.maxLength = maxLength;
    // Breadth-first: failure links, and each state's longest output (its own, else its failure state's).
    const queue: number[] = [...this.#next[0]!.values()];
    for (let head = 0; head < queue.length; head++) {
      const state = queue[head]!;
      for (const [code, to] of this.#next[state]!) {
        let fallback = this.#fail[state]!;
        while (fallback !== 0 && !this.#next[fallback]!.has(code)) fallback = this.#fail[fallback]!;
        const target = this.#next[fallback]!.get(code);
        this.#fail[to] = target !== undefined && target !== to ? target : 0;
        if (this.#outLength[to] === 0) {
          this.#outLength[to] = this.#outLength[this.#fail[to]!]!;
          this.#outName[to] = this.#outName[this.#fail[to]!]!;
        }
        queue.push(to);
      }
    }
  }

  /** The spans to redact, sorted, non-overlapping (overlapping occurrences merged). */
  spans(text: string): RedactedSpan[] {
    const spans: { start: number; end: number; names: Set<string> }[] = [];
    if (this.maxLength === 0) return [];
    let state = 0;
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      for (;;) {
        const to = this.#next[state]!.get(code);
        if (to !== undefined) {
          state = to;
          break;
        }
        if (state === 0) break;
        state = this.#fail[state]!;
      }
      const length = this.#outLength[state]!;
      if (length === 0) continue;
      let start = i + 1 - length;
      const names = new Set([this.#outName[state]!]);
      // Merge with every earlier span this one overlaps (they end before i + 1, so only the tail of the list).
      while (spans.length > 0 && spans[spans.length - 1]!.end > start) {
        const last = spans.pop()!;
        start = Math.min(start, last.start);
        for (const name of last.names) names.add(name);
      }
      spans.push({ start, end: i + 1, names });
    }
    return spans.map((span) => ({ start: span.start, end: span.end, names: [...span.names].sort() }));
  }

  /** `text` with every occurrence of every value (and encoding) replaced by `[REDACTED:<NAME>]`. */
  redact(text: string): string {
    return this.render(text, this.spans(text), text.length);
  }

  /** `text.slice(0, end)` with `spans` (all ending at or before `end`) replaced. */
  render(text: string, spans: readonly RedactedSpan[], end: number): string {
    if (spans.length === 0) return text.slice(0, end);
    let out = '';
    let at = 0;
    for (const span of spans) {
      out += text.slice(at, span.start) + this.#replacement(span.names);
      at = span.end;
    }
    return out + text.slice(at, end);
  }
}

export interface StreamRedactor {
  /** Redacted text that is safe to emit now (possibly empty); the rest is held back. */
  push(chunk: string): string;
  /** Redacted remainder; call once at the end of the stream. */
  end(): string;
}

export function createStreamRedactor(redactor: Redactor): StreamRedactor {
  let pending = '';
  const holdBack = Math.max(0, redactor.maxLength - 1);
  return {
    push(chunk) {
      const text = pending + chunk;
      // An occurrence not yet complete starts at or after `cut`; a complete one straddling it is held back whole.
      let cut = text.length - holdBack;
      if (cut <= 0) {
        pending = text;
        return '';
      }
      const spans = redactor.spans(text);
      const emitted: RedactedSpan[] = [];
      for (const span of spans) {
        if (span.end <= cut) emitted.push(span);
        else {
          if (span.start < cut) cut = span.start;
          break;
        }
      }
      // Never split a surrogate pair between two outputs.
      if (cut > 0 && cut < text.length) {
        const code = text.charCodeAt(cut - 1);
        if (code >= 0xd800 && code <= 0xdbff) cut--;
      }
      while (emitted.length > 0 && emitted[emitted.length - 1]!.end > cut) {
        cut = Math.min(cut, emitted.pop()!.start);
      }
      pending = text.slice(cut);
      return redactor.render(text, emitted, cut);
    },
    end() {
      const rest = redactor.redact(pending);
      pending = '';
      return rest;
    },
  };
}
