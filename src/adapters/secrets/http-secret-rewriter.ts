/**
 * The egress proxy's secrets hook (`HttpRequestRewriter`, see SECRETS HOOK in adapters/egress/options.ts): swaps
 * this execution's placeholders for the real values in allowed plain-HTTP requests toward the hosts each secret is
 * bound to — header values, the request target's path/query (URL-encoded), and (through `bodyHook`, the proxy's
 * `rewriteHttpBody`) Content-Length bodies up to a cap, with `Content-Length` recomputed. Chunked, length-less and
 * oversized bodies stream past unseen.
 *
 * Toward any other host a placeholder is forwarded unchanged — it is worthless there — and reported through
 * `onSecretUse({injected: false})` so the ledger records the attempt. Every injection is reported too. Values never
 * appear in errors or reports.
 *
 * TLS upgrade: `upgradesToTls` (the proxy's `upgradeHttpToTls` option) says yes for every destination bound to a
 * secret where cleartext is not allowed (by default: every name and every public IP literal), so the proxy sends plain-HTTP requests toward bound hosts upstream over TLS with certificate verification
 * (port 443 for the default port 80) and marks their head `tls: true`. Bindings are matched against that upstream
 * host:port.
 *
 * Cleartext: a request that is not upgraded goes upstream over plain TCP, so an injected value would cross the
 * network unencrypted. Injection is allowed when the head is upgraded (`head.tls`); otherwise it is refused (the
 * request fails with 502) unless the destination is a loopback or private IP literal; `allowCleartext` widens that
 * (tests). See docs/adr/0008-secrets.md.
 */
import { Buffer } from 'node:buffer';
import { specialRangeOf } from '../../domain/policy/ip.ts';
import { parseHost } from '../../domain/policy/network-rules.ts';
import { PLACEHOLDER_PREFIX, type PlaceholderMap, substitute } from '../../domain/secrets/placeholder.ts';
import { type SecretBinding, secretsForHost } from '../../domain/secrets/secret-ref.ts';
import type {
  HttpBodyRewriter,
  HttpRequestHead,
  HttpRequestRewriter,
  HttpTlsUpgrade,
} from '../egress/proxy.ts';

/** Where a placeholder was seen (`response`: a value came back from upstream and was scrubbed). */
export type SecretUseSite = 'header' | 'path' | 'body' | 'response';

/** One secret seen in one request: injected toward a bound host, or a placeholder sent elsewhere (not injected). */
export interface SecretUse {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly injected: boolean;
  readonly where: SecretUseSite;
  /**
   * Why it was not injected: `unbound-host`, `cleartext`, `unsafe-header-value`, `body-not-rewritable`;
   * `reflected` for `where: 'response'` (the value came back in a response and was replaced by the placeholder).
   */
  readonly reason?: string;
}

export interface HttpSecretRewriterOptions {
  readonly bindings: readonly SecretBinding[];
  /** This execution's placeholders → secret name and value (`placeholderMap`). */
  readonly placeholders: PlaceholderMap;
  /** Ledger hook (`secret.use`). Throwing refuses the request. */
  readonly onSecretUse: (use: SecretUse) => void;
  /** Largest body `rewriteBody` rewrites. @default 1048576 (1 MiB) */
  readonly maxBodyBytes?: number;
  /**
   * May a value be injected into a request that travels to `head.host` unencrypted? Not asked for upgraded
   * requests (`head.tls`), which are encrypted upstream.
   * @default only when the host is a loopback or private IP literal
   */
  readonly allowCleartext?: (head: HttpRequestHead) => boolean;
}

function localLiteral(head: HttpRequestHead): boolean {
  const parsed = parseHost(head.host);
  if (!parsed.ok || parsed.kind !== 'ip') return false;
  const cls = specialRangeOf(parsed.ip)?.class;
  return cls === 'loopback' || cls === 'private';
}

const jsonEscape = (value: string): string => JSON.stringify(value).slice(1, -1);
const UNSAFE_HEADER_VALUE = /[\r\n\0]/;

function header(head: HttpRequestHead, name: string): string | undefined {
  const lower = name.toLowerCase();
  return head.headers.find(([key]) => key.toLowerCase() === lower)?.[1];
}

/** A body up to this size, of this kind, and the encoding a value needs inside it. */
function bodyEncoder(head: HttpRequestHead): ((value: string) => string) | undefined {
  const type = (header(head, 'content-type') ?? '').toLowerCase();
  if (/^application\/([\w.+-]+\+)?json\b/.test(type)) return jsonEscape;
  if (type.startsWith('application/x-www-form-urlencoded')) return encodeURIComponent;
  return (value) => value;
}

export class HttpSecretRewriter {
  readonly #options: HttpSecretRewriterOptions;
  readonly #maxBodyBytes: number;
  readonly #allowCleartext: (head: HttpRequestHead) => boolean;

  constructor(options: HttpSecretRewriterOptions) {
    this.#options = options;
    this.#maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
    this.#allowCleartext = options.allowCleartext ?? localLiteral;
  }

  /** The `rewriteHttpRequest` option of `EgressProxy`. */
  readonly rewriteHead: HttpRequestRewriter = (head) => {
    const allowed = this.#allowed(head);
    const uses: SecretUse[] = [];
    const headers = head.headers.map(([name, value]): readonly [string, string] => {
      const result = this.#substitute(head, value, allowed, 'header', (text) => text, uses);
      for (const injected of result.injected) {
        if (UNSAFE_HEADER_VALUE.test(this.#valueOf(injected))) {
          this.#report({
            name: injected,
            host: head.host,
            port: head.port,
            injected: false,
            where: 'header',
            reason: 'unsafe-header-value',
          });
          throw new Error(`secret ${injected} cannot go in a header: its value contains a line break or NUL`);
        }
      }
      return [name, result.text];
    });
    const path = this.#substitute(head, head.path, allowed, 'path', encodeURIComponent, uses).text;
    for (const use of uses) this.#report(use);
    return { ...head, path, headers };
  };

  /** The `rewriteHttpBody` option of `EgressProxy`: `wantsBody` / `rewriteBody`. */
  readonly bodyHook: HttpBodyRewriter = {
    wants: (head) => this.wantsBody(head),
    rewrite: (head, body) => this.rewriteBody(head, body),
  };

  /**
   * The `upgradeHttpToTls` option of `EgressProxy`: a destination (host and upstream port) bound to at least one
   * secret goes upstream over TLS.
   */
  readonly upgradesToTls: HttpTlsUpgrade = (destination) => {
    if (secretsForHost(this.#options.bindings, destination.host, destination.port).size === 0) return false;
    // Destinations where cleartext injection is already allowed (by default loopback/private IP literals: local
    // services, which rarely speak TLS) stay plain HTTP, as before.
    const probe: HttpRequestHead = {
      method: 'GET',
      host: destination.host,
      port: destination.port,
      path: '/',
      headers: [],
    };
    return !this.#allowCleartext(probe);
  };

  /** Whether the proxy should buffer this request's body and pass it to `rewriteBody`. */
  wantsBody(head: HttpRequestHead): boolean {
    const length = Number(header(head, 'content-length') ?? 'NaN');
    return (
      header(head, 'transfer-encoding') === undefined &&
      Number.isSafeInteger(length) &&
      length > 0 &&
      length <= this.#maxBodyBytes
    );
  }

  /**
   * Substitutes placeholders in a complete Content-Length body (`head` as returned by `rewriteHead`) and returns the
   * new head (Content-Length recomputed) and body. Compressed, chunked or oversized bodies are returned unchanged;
   * placeholders found in them are reported as not injected.
   */
  rewriteBody(head: HttpRequestHead, body: Buffer): { head: HttpRequestHead; body: Buffer } {
    const encoding = (header(head, 'content-encoding') ?? 'identity').toLowerCase();
    const text = body.toString('latin1'); // byte-preserving; placeholders are ASCII
    if (!text.includes(PLACEHOLDER_PREFIX)) return { head, body };
    const rewritable = this.wantsBody(head) && body.length <= this.#maxBodyBytes && encoding === 'identity';
    const uses: SecretUse[] = [];
    if (!rewritable) {
      const seen = substitute(text, this.#options.placeholders, new Set());
      for (const name of seen.refused) {
        this.#report({
          name,
          host: head.host,
          port: head.port,
          injected: false,
          where: 'body',
          reason: 'body-not-rewritable',
        });
      }
      return { head, body };
    }
    const encode = bodyEncoder(head)!;
    const toLatin1 = (value: string) => Buffer.from(encode(value), 'utf8').toString('latin1');
    const result = this.#substitute(head, text, this.#allowed(head), 'body', toLatin1, uses);
    for (const use of uses) this.#report(use);
    if (result.injected.size === 0) return { head, body };
    const rewritten = Buffer.from(result.text, 'latin1');
    const headers = head.headers.map(([name, value]): readonly [string, string] =>
      name.toLowerCase() === 'content-length' ? [name, String(rewritten.length)] : [name, value],
    );
    return { head: { ...head, headers }, body: rewritten };
  }

  #allowed(head: HttpRequestHead): { names: ReadonlySet<string>; cleartextRefused: ReadonlySet<string> } {
    const bound = secretsForHost(this.#options.bindings, head.host, head.port);
    if (bound.size === 0 || head.tls === true || this.#allowCleartext(head))
      return { names: bound, cleartextRefused: new Set() };
    return { names: new Set(), cleartextRefused: bound };
  }

  #substitute(
    head: HttpRequestHead,
    text: string,
    allowed: { names: ReadonlySet<string>; cleartextRefused: ReadonlySet<string> },
    where: SecretUseSite,
    encode: (value: string) => string,
    uses: SecretUse[],
  ): { text: string; injected: ReadonlySet<string> } {
    const result = substitute(text, this.#options.placeholders, allowed.names, encode);
    const add = (name: string, injected: boolean, reason?: string) => {
      if (uses.some((use) => use.name === name && use.where === where)) return;
      uses.push({ name, host: head.host, port: head.port, injected, where, ...(reason ? { reason } : {}) });
    };
    for (const name of result.injected) add(name, true);
    for (const name of result.refused) {
      add(name, false, allowed.cleartextRefused.has(name) ? 'cleartext' : 'unbound-host');
    }
    if ([...result.refused].some((name) => allowed.cleartextRefused.has(name))) {
      for (const use of uses) this.#report(use);
      uses.length = 0;
      throw new Error(
        `refusing to send a secret to ${head.host}:${head.port} over unencrypted HTTP (see docs/adr/0008-secrets.md)`,
      );
    }
    return { text: result.text, injected: result.injected };
  }

  #valueOf(name: string): string {
    for (const entry of this.#options.placeholders.values()) if (entry.name === name) return entry.value;
    return '';
  }

  #report(use: SecretUse): void {
    this.#options.onSecretUse(use);
  }
}

/** Convenience: the hook function alone. */
export function createHttpSecretRewriter(options: HttpSecretRewriterOptions): HttpRequestRewriter {
  return new HttpSecretRewriter(options).rewriteHead;
}
