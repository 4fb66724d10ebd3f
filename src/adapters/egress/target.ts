/**
 * Where an agent asks to go, as the proxy protocols spell it: the authority of a CONNECT (`host:port`), of an
 * absolute-form HTTP request (`http://host[:port]/path`). Host validity (names vs IP literals) is the domain's
 * `parseHost`; this only splits the text.
 */

export interface Target {
  /** Host as written, brackets removed for IPv6. */
  readonly host: string;
  readonly port: number;
}

export type TargetParse = ({ readonly ok: true } & Target) | { readonly ok: false; readonly error: string };

export interface HttpTarget extends Target {
  /** `host[:port]` for the upstream Host header (port omitted when it is 80). */
  readonly authority: string;
  /** Origin-form request target: path and query, never empty, no fragment. */
  readonly path: string;
}

export type HttpTargetParse =
  | ({ readonly ok: true } & HttpTarget)
  | { readonly ok: false; readonly error: string };

function parsePort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/** `host:port`, `[v6]:port`; without a port, `defaultPort` (or an error when none is given). */
export function parseAuthority(text: string, defaultPort?: number): TargetParse {
  if (text === '') return { ok: false, error: 'empty host' };
  if (text.includes('@'))
    return { ok: false, error: 'credentials in the authority (user@host) are not supported' };
  let host: string;
  let portText: string | undefined;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return { ok: false, error: `"${text}" has "[" without "]"` };
    host = text.slice(1, close);
    const rest = text.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':'))
      return { ok: false, error: `"${text}": expected ":port" after "]"` };
    portText = rest === '' ? undefined : rest.slice(1);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon >= 0 && text.indexOf(':') !== colon) {
      return { ok: false, error: `"${text}": IPv6 addresses must be in brackets, e.g. [2001:db8::1]:443` };
    }
    host = colon < 0 ? text : text.slice(0, colon);
    portText = colon < 0 ? undefined : text.slice(colon + 1);
  }
  if (host === '') return { ok: false, error: `"${text}" has an empty host` };
  if (portText === undefined) {
    if (defaultPort === undefined)
      return { ok: false, error: `"${text}" has no port (host:port, e.g. api.example.com:443)` };
    return { ok: true, host, port: defaultPort };
  }
  const port = parsePort(portText);
  if (port === undefined)
    return { ok: false, error: `"${text}" has an invalid port "${portText}" (1-65535)` };
  return { ok: true, host, port };
}

/** An absolute-form request target: `http://host[:port][/path][?query]`. */
export function parseHttpTarget(url: string): HttpTargetParse {
  if (url.startsWith('/') || url === '*') {
    return {
      ok: false,
      error: `"${url}" is origin-form; this is a forward proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port`,
    };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url);
  if (!scheme) return { ok: false, error: `"${url}" is not an absolute http:// URL` };
  if (scheme[1]!.toLowerCase() !== 'http') {
    return {
      ok: false,
      error: `${scheme[1]}:// URLs cannot be proxied as plain requests; use CONNECT host:port (HTTPS proxies do this)`,
    };
  }
  const rest = url.slice(scheme[0].length);
  const end = rest.search(/[/?#]/);
  const authorityText = end < 0 ? rest : rest.slice(0, end);
  let path = end < 0 ? '/' : rest.slice(end);
  const hash = path.indexOf('#');
  if (hash >= 0) path = path.slice(0, hash);
  if (path === '' || path.startsWith('?')) path = `/${path}`;
  const authority = parseAuthority(authorityText, 80);
  if (!authority.ok) return authority;
  const hostPart = authority.host.includes(':') ? `[${authority.host}]` : authority.host;
  return {
    ok: true,
    host: authority.host,
    port: authority.port,
    authority: authority.port === 80 ? hostPart : `${hostPart}:${authority.port}`,
    path,
  };
}
