/**
 * A Server-Sent Events parser (WHATWG HTML, "Parsing an event stream"): lines end in CRLF, LF or CR (a CR at the
 * end of one chunk and an LF at the start of the next are one line end); `:` starts a comment; `data:` lines
 * accumulate with `\n` between them; an empty line dispatches the event; `id:` sets the last event id (kept
 * across events); `retry:` with digits only sets the reconnection time. Feed it decoded text in any chunking.
 */

export interface SseEvent {
  /** `event:` field; `message` when the event had none. */
  readonly type: string;
  /** The `data:` lines joined with `\n`. */
  readonly data: string;
  /** The last event id seen on this stream so far (this event's, or an earlier one's); '' when none. */
  readonly lastEventId: string;
}

export class SseParser {
  #buffer = '';
  #skipLeadingLf = false;
  #bomChecked = false;
  #type = '';
  #data: string[] = [];
  #lastEventId = '';
  /** Milliseconds from the last valid `retry:` field; undefined until the server sends one. */
  retryMs: number | undefined;

  /** Parses another chunk of text; returns the events it completed, in order. */
  push(text: string): SseEvent[] {
    let chunk = text;
    if (!this.#bomChecked && chunk.length > 0) {
      this.#bomChecked = true;
      if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1);
    }
    if (this.#skipLeadingLf && chunk.length > 0) {
      this.#skipLeadingLf = false;
      if (chunk[0] === '\n') chunk = chunk.slice(1);
    }
    this.#buffer += chunk;
    const events: SseEvent[] = [];
    let start = 0;
    for (;;) {
      const cr = this.#buffer.indexOf('\r', start);
      const lf = this.#buffer.indexOf('\n', start);
      if (cr === -1 && lf === -1) break;
      let end: number;
      let next: number;
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        end = cr;
        if (cr + 1 < this.#buffer.length) {
          next = this.#buffer[cr + 1] === '\n' ? cr + 2 : cr + 1;
        } else {
          // CR is the last character we have: the LF that may follow belongs to this line end.
          next = cr + 1;
          this.#skipLeadingLf = true;
        }
      } else {
        end = lf;
        next = lf + 1;
      }
      const event = this.#line(this.#buffer.slice(start, end));
      if (event) events.push(event);
      start = next;
    }
    this.#buffer = this.#buffer.slice(start);
    return events;
  }

  /** The stream ended: an event without its closing blank line is discarded (as the spec says). */
  end(): void {
    this.#buffer = '';
    this.#type = '';
    this.#data = [];
  }

  #line(line: string): SseEvent | undefined {
    if (line === '') return this.#dispatch();
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.#type = value;
        break;
      case 'data':
        this.#data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.#lastEventId = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retryMs = Number(value);
        break;
      default:
        break;
    }
    return undefined;
  }

  #dispatch(): SseEvent | undefined {
    const type = this.#type || 'message';
    const data = this.#data;
    this.#type = '';
    this.#data = [];
    if (data.length === 0) return undefined;
    return { type, data: data.join('\n'), lastEventId: this.#lastEventId };
  }
}
