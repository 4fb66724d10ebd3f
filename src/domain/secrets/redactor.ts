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
 * Works on UTF-16 code units of decoded text: decode bytes first (e.g. with a `StringDecoder`). With `bytes: true`
 * it matches the UTF-8 bytes of each form in latin1 text (one character per byte), so raw byte streams — an HTTP
 * response on its way into a sandbox — are scanned without decoding: `createByteStreamRedactor`.
 *
 * What is NOT caught: any transformation not listed in `secretEncodings` (mixed-case hex or percent-escapes, a
 * value compressed or encrypted, split by inserted characters, reversed, hashed, encoded twice in other
 * combinations than those listed, base64 at a nibble offset). Redaction is a net for the common ways a value is
 * echoed, not a guarantee against a party that holds the value and transforms it deliberately.
 */
import { Buffer } from 'node:buffer';

export interface SecretValue {
  readonly name: string;
  readonly value: string;
}

export interface RedactorOptions {
  /** What replaces a redacted span; gets the names of the secrets found there. @default `[REDACTED:<NAME>]` */
  readonly replacement?: (names: readonly string[]) => string;
  /** Also match the encodings of each value (see `secretEncodings`). @default true */
  readonly encodings?: boolean;
  /**
   * Match the UTF-8 bytes of every form in latin1-decoded text (one character per byte) instead of UTF-16 text:
   * for scanning raw bytes (`createByteStreamRedactor`). The replacement must then be ASCII. @default false
   */
  readonly bytes?: boolean;
}

/** A redacted span `[start, end)` and the secrets found in it. */
export interface RedactedSpan {
  readonly start: number;
  readonly end: number;
  readonly names: readonly string[];
}

/** Largest dense transition table a `Redactor` builds (cells of 4 bytes: 16 MiB); larger ones use maps. */
const MAX_DFA_CELLS = 4 * 1024 * 1024;

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

/** JSON string escaping as other serialisers do it: every non-ASCII character as `\uXXXX` (Python's default). */
function jsonAsciiEscape(value: string): string {
  return JSON.stringify(value)
    .slice(1, -1)
    .replace(/[\u0080-\uffff]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Percent-encoding of everything but RFC 3986 unreserved characters (`encodeURIComponent` keeps `!'()*`). */
function strictUrlEncode(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/**
 * The value and the forms it commonly takes on the way out: raw; JSON-escaped (also with `\uXXXX` for non-ASCII
 * and `\/`); URL-encoded (upper- and lower-case `%XX`, form `+` for spaces, with and without `!'()*` escaped);
 * base64 and base64url (padded, unpadded, and the stable middle of the value inside a longer base64 text at each
 * of the three byte alignments, as in `Basic base64(user:value)`; also URL-encoded); hex (lower and upper case).
 */
export function secretEncodings(value: string): string[] {
  const forms = new Set<string>([value]);
  forms.add(JSON.stringify(value).slice(1, -1));
  forms.add(jsonAsciiEscape(value));
  for (const url of [encodeURIComponent(value), strictUrlEncode(value)]) {
    forms.add(url);
    forms.add(url.replace(/%[0-9A-F]{2}/g, (hex) => hex.toLowerCase()));
    forms.add(url.replace(/%20/g, '+'));
  }
  const bytes = Buffer.from(value, 'utf8');
  const hex = bytes.toString('hex');
  forms.add(hex);
  forms.add(hex.toUpperCase());
  const base64 = bytes.toString('base64');
  const base64Forms = [base64, base64.replace(/=+$/, ''), bytes.toString('base64url')];
  for (const alphabet of ['base64', 'base64url'] as const) {
    for (let shift = 0; shift < 3; shift++) {
      const core = base64Core(bytes, shift, alphabet);
      if (core.length >= MIN_BASE64_CORE) base64Forms.push(core);
    }
  }
  for (const form of base64Forms) {
    forms.add(form);
    forms.add(encodeURIComponent(form)); // base64 in a query string: + / = escaped
  }
  // PHP and some others escape `/` in JSON strings.
  for (const form of [...forms]) if (form.includes('/')) forms.add(form.replaceAll('/', '\\/'));
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
  /** Length of the pattern prefix each state stands for. */
  readonly #depth: number[] = [0];
  /**
   * The same automaton compiled to a dense DFA (failure links resolved) over the alphabet the patterns use:
   * `#delta[state * #classes + #classOf[code]]`; class 0 is "in no pattern" and always leads back to the root.
   * Built while small enough (`MAX_DFA_CELLS`); otherwise matching walks the maps and failure links.
   */
  #delta: Int32Array | undefined;
  #classOf: Uint16Array | undefined;
  #classes = 0;

  constructor(secrets: readonly SecretValue[], options: RedactorOptions = {}) {
    this.#replacement = options.replacement ?? defaultReplacement;
    const encodings = options.encodings ?? true;
    const asBytes = options.bytes === true;
    let maxLength = 0;
    const depth = this.#depth;
    for (const secret of secrets) {
      if (secret.value === '') continue;
      for (const form of encodings ? secretEncodings(secret.value) : [secret.value]) {
        const pattern = asBytes ? Buffer.from(form, 'utf8').toString('latin1') : form;
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
    this.#compile(queue);
  }

  #compile(order: readonly number[]): void {
    const codes: number[] = [0];
    const classOf = new Uint16Array(65536);
    for (const transitions of this.#next) {
      for (const code of transitions.keys()) {
        if (classOf[code] === 0) {
          classOf[code] = codes.length;
          codes.push(code);
        }
      }
    }
    const classes = codes.length;
    if (this.#next.length * classes > MAX_DFA_CELLS || classes >= 65536) return;
    const delta = new Int32Array(this.#next.length * classes);
    // Breadth-first, so a state's failure state (shallower) is complete before the state itself.
    for (const state of [0, ...order]) {
      const transitions = this.#next[state]!;
      const base = state * classes;
      const fallback = this.#fail[state]! * classes;
      for (let cls = 1; cls < classes; cls++) {
        const to = transitions.get(codes[cls]!);
        delta[base + cls] = to !== undefined ? to : state === 0 ? 0 : delta[fallback + cls]!;
      }
    }
    this.#delta = delta;
    this.#classOf = classOf;
    this.#classes = classes;
  }

  /** The spans to redact, sorted, non-overlapping (overlapping occurrences merged). */
  spans(text: string): RedactedSpan[] {
    return this.scan(text).spans;
  }

  /**
   * `spans`, and `tail`: the length of the longest suffix of `text` that begins some pattern — an occurrence
   * completed by text that follows can start no earlier than `text.length - tail`.
   */
  scan(text: string): { spans: RedactedSpan[]; tail: number } {
    const spans: { start: number; end: number; names: Set<string> }[] = [];
    if (this.maxLength === 0) return { spans: [], tail: 0 };
    let state = 0;
    const delta = this.#delta;
    const classOf = this.#classOf!;
    const classes = this.#classes;
    const outLength = this.#outLength;
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      if (delta !== undefined) {
        state = delta[state * classes + classOf[code]!]!;
        if (outLength[state] === 0) continue;
      } else
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
    return {
      spans: spans.map((span) => ({ start: span.start, end: span.end, names: [...span.names].sort() })),
      tail: this.#depth[state]!,
    };
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

/**
 * `onSpan` is told of every redacted span as it is emitted (e.g. to record which secrets a stream carried); its
 * offsets are those of the text scanned in that call, not of the whole stream.
 */
export function createStreamRedactor(
  redactor: Redactor,
  onSpan: (span: RedactedSpan) => void = () => {},
): StreamRedactor {
  let pending = '';
  return {
    push(chunk) {
      const text = pending + chunk;
      // Only the longest suffix that begins some pattern is held back (at most the longest pattern minus one
      // character): an occurrence not yet complete starts at or after `cut`; a complete one straddling it is
      // held back whole.
      const { spans, tail } = redactor.scan(text);
      let cut = text.length - tail;
      if (cut <= 0) {
        pending = text;
        return '';
      }
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
      for (const span of emitted) onSpan(span);
      return redactor.render(text, emitted, cut);
    },
    end() {
      const spans = redactor.spans(pending);
      for (const span of spans) onSpan(span);
      const rest = redactor.render(pending, spans, pending.length);
      pending = '';
      return rest;
    },
  };
}

export interface ByteStreamRedactor {
  /** Redacted bytes that are safe to emit now (possibly empty); the rest is held back. */
  push(chunk: Uint8Array): Buffer;
  /** Redacted remainder; call once at the end of the stream. */
  end(): Buffer;
}

/**
 * `createStreamRedactor` over raw bytes, for a `Redactor` built with `bytes: true`: holds back at most the longest
 * pattern minus one byte (plus a match that straddles the cut), so a value split across reads, TCP segments or HTTP
 * chunks is still caught. Bytes are never decoded, so any charset (or none) passes through unchanged.
 */
export function createByteStreamRedactor(
  redactor: Redactor,
  onSpan?: (span: RedactedSpan) => void,
): ByteStreamRedactor {
  const text = createStreamRedactor(redactor, onSpan);
  return {
    push: (chunk) => Buffer.from(text.push(Buffer.from(chunk).toString('latin1')), 'latin1'),
    end: () => Buffer.from(text.end(), 'latin1'),
  };
}
