/**
 * The egress policy: default deny, deny rules first, then allow rules.
 *
 * Rule syntax (`spec.security.network.allow` / `deny`), each with an optional `:port` or `:low-high` port range
 * (no port = any port):
 *
 * | form            | example                               | matches                                               |
 * |-----------------|---------------------------------------|-------------------------------------------------------|
 * | exact host      | `api.openai.com`, `api.openai.com:443`| that name, as the agent asked for it                  |
 * | suffix wildcard | `*.example.com:8000-8100`             | any subdomain (`a.example.com`, `a.b.example.com`), **not** the apex `example.com` — list both if you want both |
 * | IPv4            | `10.0.0.5`, `10.0.0.5:22`             | the address a connection goes to                      |
 * | IPv6            | `::1`, `[2001:db8::1]:443`            | idem; brackets are required to give a port            |
 * | CIDR            | `10.0.0.0/8`, `[2001:db8::/32]:443`   | every address in the block                            |
 *
 * Host names are normalised (lowercase, one trailing dot removed) and must be ASCII (write IDNs in punycode).
 * Hostname rules match the name the agent asked for; IP/CIDR rules match the address the proxy resolved and dials.
 *
 * **Special addresses** (loopback, private, link-local, CGNAT, multicast, unspecified/broadcast, cloud metadata,
 * reserved — see `SPECIAL_RANGES`; IPv4-mapped IPv6 is normalised first) are refused unless an IP/CIDR *allow* rule
 * covers the address **and lies entirely inside the special block** the address belongs to. So `10.0.0.0/8` or
 * `127.0.0.1:8080` unlock what they name, while `0.0.0.0/0` means "the public IPv4 internet" and never reaches
 * 10/8 or metadata, and `169.254.0.0/16` unlocks link-local but not 169.254.169.254, which has to be listed by
 * itself. A hostname rule never unlocks a special address (that is what stops DNS rebinding to the inside).
 */
import type { Problem } from '../errors.ts';
import type { Violation } from '../execution.ts';
import {
  type Cidr,
  cidrContains,
  cidrWithin,
  formatCidr,
  formatIp,
  type IpAddress,
  parseCidr,
  parseIp,
  type SpecialClass,
  specialRangeOf,
} from './ip.ts';

export interface PortRange {
  readonly low: number;
  readonly high: number;
}

interface RuleBase {
  /** The rule as written (trimmed) — what decisions and messages quote. */
  readonly text: string;
  /** Undefined = any port. */
  readonly ports: PortRange | undefined;
}

export interface HostRule extends RuleBase {
  readonly kind: 'host';
  readonly host: string;
}

export interface WildcardRule extends RuleBase {
  readonly kind: 'wildcard';
  /** `.example.com` for `*.example.com`. */
  readonly suffix: string;
}

export interface AddressRule extends RuleBase {
  /** A single address is a CIDR with a full-length prefix. */
  readonly kind: 'cidr';
  readonly cidr: Cidr;
}

export type NetworkRule = HostRule | WildcardRule | AddressRule;

export type RuleParse =
  | { readonly ok: true; readonly rule: NetworkRule }
  | { readonly ok: false; readonly error: string };

export interface NetworkPolicy {
  readonly allow: readonly NetworkRule[];
  readonly deny: readonly NetworkRule[];
}

/** No rules: every connection is refused. */
export const DENY_ALL: NetworkPolicy = { allow: [], deny: [] };

// ---------------------------------------------------------------------------------------------------------------
// Host names.

export type HostnameParse =
  | { readonly ok: true; readonly name: string }
  | { readonly ok: false; readonly error: string };

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** Lowercases, strips one trailing dot, and checks DNS shape (ASCII labels of letters, digits, `-`, `_`). */
export function parseHostname(text: string): HostnameParse {
  if (/[^\x00-\x7f]/.test(text)) {
    return {
      ok: false,
      error: `"${text}" contains non-ASCII characters; write internationalised names in their ASCII (punycode) form, e.g. xn--bcher-kva.example for bücher.example`,
    };
  }
  const name = (text.endsWith('.') ? text.slice(0, -1) : text).toLowerCase();
  if (name === '') return { ok: false, error: 'empty host name (e.g. api.example.com)' };
  if (name.length > 253) return { ok: false, error: `"${text}" is longer than 253 characters` };
  const labels = name.split('.');
  for (const label of labels) {
    if (!LABEL.test(label)) {
      return {
        ok: false,
        error:
          label === ''
            ? `"${text}" has an empty label (".." or a leading dot)`
            : `"${text}" has an invalid label "${label}": letters, digits, "-" and "_", 1-63 characters, not starting or ending with "-" (e.g. api.example.com)`,
      };
    }
  }
  const last = labels[labels.length - 1]!;
  if (/^[0-9]+$/.test(last) || /^0x[0-9a-f]*$/.test(last)) {
    return {
      ok: false,
      error: `"${text}" looks like a numeric IPv4 address but is not a dotted quad; write all four octets, e.g. 127.0.0.1`,
    };
  }
  return { ok: true, name };
}

export type HostParse =
  | { readonly ok: true; readonly kind: 'ip'; readonly ip: IpAddress }
  | { readonly ok: true; readonly kind: 'name'; readonly name: string }
  | { readonly ok: false; readonly error: string };

/**
 * A destination host as an agent gives it (HTTP authority, CONNECT target, SOCKS5 domain): an IP literal
 * (IPv6 with or without brackets) or a host name.
 */
export function parseHost(text: string): HostParse {
  if (text.startsWith('[') && text.endsWith(']')) {
    const parsed = parseIp(text.slice(1, -1));
    return parsed.ok ? { ok: true, kind: 'ip', ip: parsed.ip } : parsed;
  }
  if (text.includes(':') || /^[0-9.]+$/.test(text)) {
    const parsed = parseIp(text);
    return parsed.ok ? { ok: true, kind: 'ip', ip: parsed.ip } : parsed;
  }
  const parsed = parseHostname(text);
  return parsed.ok ? { ok: true, kind: 'name', name: parsed.name } : parsed;
}

// ---------------------------------------------------------------------------------------------------------------
// Rules.

const PORT_EXAMPLE = 'e.g. api.example.com:443 or 10.0.0.5:8000-8100';

function parsePort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : undefined;
}

function parsePorts(text: string, rule: string): PortRange | string {
  const dash = text.indexOf('-');
  const lowText = dash < 0 ? text : text.slice(0, dash);
  const highText = dash < 0 ? text : text.slice(dash + 1);
  const low = parsePort(lowText);
  const high = parsePort(highText);
  if (low === undefined || high === undefined) {
    return `network rule "${rule}": "${text}" is not a port (1-65535) or port range (low-high); ${PORT_EXAMPLE}`;
  }
  if (low > high) return `network rule "${rule}": port range ${text} is reversed; write ${high}-${low}`;
  return { low, high };
}

/** Parses one rule. Errors say what is wrong and show an example. */
export function parseNetworkRule(input: string): RuleParse {
  const text = input.trim();
  const fail = (error: string): RuleParse => ({ ok: false, error });
  if (text === '') return fail(`network rule is empty; ${PORT_EXAMPLE}`);
  if (/\s/.test(text))
    return fail(`network rule "${text}" contains whitespace; give one destination per entry`);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  if (scheme) {
    return fail(
      `network rule "${text}" is a URL; write the host (and port) without "${scheme[1]}://", e.g. ${
        text.slice(scheme[0].length).split('/')[0] || 'api.example.com'
      }${scheme[1]!.toLowerCase() === 'https' ? ':443' : ''}`,
    );
  }

  // Split off the port: `[v6]:port`, `[v6]`, bare IPv6 (2+ colons, never a port), `host:port`.
  let hostText: string;
  let portText: string | undefined;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return fail(`network rule "${text}" has "[" without "]"; e.g. [2001:db8::1]:443`);
    hostText = text.slice(1, close);
    const rest = text.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) {
        return fail(`network rule "${text}": expected ":port" after "]", e.g. [2001:db8::1]:443`);
      }
      portText = rest.slice(1);
    }
    if (!hostText.includes(':')) {
      return fail(`network rule "${text}": brackets are for IPv6 addresses only, e.g. [2001:db8::1]:443`);
    }
  } else if ((text.match(/:/g) ?? []).length >= 2) {
    hostText = text;
  } else {
    const colon = text.indexOf(':');
    hostText = colon < 0 ? text : text.slice(0, colon);
    portText = colon < 0 ? undefined : text.slice(colon + 1);
  }

  let ports: PortRange | undefined;
  if (portText !== undefined) {
    const parsedPorts = parsePorts(portText, text);
    if (typeof parsedPorts === 'string') return fail(parsedPorts);
    ports = parsedPorts;
  }

  // Addresses and CIDR blocks.
  if (hostText.includes(':') || hostText.includes('/') || /^[0-9.]+$/.test(hostText)) {
    if (hostText.includes('/') && !/^[0-9a-fA-F.:]+\/[^/]*$/.test(hostText)) {
      return fail(
        `network rule "${text}" looks like a URL path; rules name hosts, not URLs — write e.g. ${
          hostText.split('/')[0]
        }${portText ? `:${portText}` : ''}`,
      );
    }
    const cidr = parseCidr(hostText);
    if (!cidr.ok) return fail(`network rule "${text}": ${cidr.error}`);
    return { ok: true, rule: { kind: 'cidr', text, ports, cidr: cidr.cidr } };
  }

  // Host names and wildcards.
  if (hostText === '*') {
    return fail(
      `network rule "${text}": a bare "*" is not allowed; to allow every public address write 0.0.0.0/0 and ::/0 (special addresses stay refused), or name the hosts`,
    );
  }
  if (hostText.startsWith('*.')) {
    const base = parseHostname(hostText.slice(2));
    if (!base.ok) return fail(`network rule "${text}": ${base.error}`);
    return { ok: true, rule: { kind: 'wildcard', text, ports, suffix: `.${base.name}` } };
  }
  if (hostText.includes('*')) {
    return fail(
      `network rule "${text}": "*" is only allowed as the whole first label, e.g. *.example.com (which matches subdomains, not example.com itself)`,
    );
  }
  const name = parseHostname(hostText);
  if (!name.ok) return fail(`network rule "${text}": ${name.error}`);
  return { ok: true, rule: { kind: 'host', text, ports, host: name.name } };
}

export type PolicyCompile =
  | { readonly ok: true; readonly policy: NetworkPolicy }
  | { readonly ok: false; readonly problems: readonly Problem[] };

/**
 * Parses every rule; problems carry JSON paths under `basePath` (`spec.security.network.allow[2]`), so a manifest
 * loader can map them to file positions.
 */
export function compileNetworkPolicy(
  input: { readonly allow?: readonly string[]; readonly deny?: readonly string[] },
  basePath = 'spec.security.network',
): PolicyCompile {
  const problems: Problem[] = [];
  const compile = (list: readonly string[] | undefined, key: 'allow' | 'deny'): NetworkRule[] =>
    (list ?? []).flatMap((text, index) => {
      const parsed = parseNetworkRule(text);
      if (parsed.ok) return [parsed.rule];
      problems.push({ message: parsed.error, path: `${basePath}.${key}[${index}]` });
      return [];
    });
  const policy = { allow: compile(input.allow, 'allow'), deny: compile(input.deny, 'deny') };
  return problems.length > 0 ? { ok: false, problems } : { ok: true, policy };
}

// ---------------------------------------------------------------------------------------------------------------
// Evaluation.

export type Verdict = 'allow' | 'deny';

/** Why: an allow or deny rule, the default, a special address, or input that could not be understood. */
export type DecisionBasis =
  | 'allow-rule'
  | 'deny-rule'
  | 'default-deny'
  | 'special-address'
  | 'malformed'
  | 'unresolvable';

export interface NetworkDecision {
  readonly verdict: Verdict;
  /** The rule text, or `default-deny`, `special-address:<class>`, `malformed`, `unresolvable`. */
  readonly rule: string;
  readonly reason: string;
  readonly basis: DecisionBasis;
  /** Set when the address is a special one (loopback, private, metadata, …). */
  readonly addressClass?: SpecialClass;
}

export interface Destination {
  /** The name the agent asked for; absent (or an IP literal) when it asked for an address. */
  readonly host?: string;
  /** The address the connection would go to. */
  readonly address: string;
  readonly port: number;
}

function portMatches(rule: NetworkRule, port: number): boolean {
  return rule.ports === undefined || (port >= rule.ports.low && port <= rule.ports.high);
}

function nameMatches(rule: NetworkRule, name: string | undefined): boolean {
  if (name === undefined) return false;
  if (rule.kind === 'host') return rule.host === name;
  if (rule.kind === 'wildcard') return name.endsWith(rule.suffix) && name.length > rule.suffix.length;
  return false;
}

function ruleMatches(rule: NetworkRule, name: string | undefined, ip: IpAddress, port: number): boolean {
  if (!portMatches(rule, port)) return false;
  return rule.kind === 'cidr' ? cidrContains(rule.cidr, ip) : nameMatches(rule, name);
}

/** The requested name in normalised form, or undefined when it is absent, an IP literal, or not a host name. */
function requestedName(host: string | undefined): string | undefined {
  if (host === undefined || host === '') return undefined;
  const parsed = parseHost(host);
  return parsed.ok && parsed.kind === 'name' ? parsed.name : undefined;
}

export function formatHostPort(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

function article(word: string): string {
  return /^[aeiou]/.test(word) ? 'an' : 'a';
}

/** Decides one connection to one address. Deny rules first, then special addresses, then allow rules. */
export function evaluate(policy: NetworkPolicy, destination: Destination): NetworkDecision {
  const parsed = parseIp(destination.address);
  if (!parsed.ok) {
    return { verdict: 'deny', rule: 'malformed', basis: 'malformed', reason: `malformed: ${parsed.error}` };
  }
  const ip = parsed.ip;
  const address = formatIp(ip);
  const port = destination.port;
  const name = requestedName(destination.host);

  for (const rule of policy.deny) {
    if (ruleMatches(rule, name, ip, port)) {
      return {
        verdict: 'deny',
        rule: rule.text,
        basis: 'deny-rule',
        reason: `matches deny rule ${rule.text}`,
      };
    }
  }

  const matching = policy.allow.filter((rule) => ruleMatches(rule, name, ip, port));
  const special = specialRangeOf(ip);
  if (special) {
    const unlocking = matching.find((rule) => rule.kind === 'cidr' && cidrWithin(rule.cidr, special.block));
    if (unlocking) {
      return {
        verdict: 'allow',
        rule: unlocking.text,
        basis: 'allow-rule',
        addressClass: special.class,
        reason: `matches allow rule ${unlocking.text} (which names this ${special.class} address explicitly)`,
      };
    }
    if (matching.length > 0) {
      const cls = special.class;
      return {
        verdict: 'deny',
        rule: `special-address:${cls}`,
        basis: 'special-address',
        addressClass: cls,
        reason:
          name !== undefined
            ? `${name} resolved to ${cls} address ${address}`
            : `${address} is ${article(cls)} ${cls} address (${special.note}); only an IP/CIDR allow rule inside ${formatCidr(
                special.block,
              )} can allow it`,
      };
    }
    return {
      verdict: 'deny',
      rule: 'default-deny',
      basis: 'default-deny',
      addressClass: special.class,
      reason: 'not in allow-list',
    };
  }

  const allowed = matching[0];
  if (allowed) {
    return {
      verdict: 'allow',
      rule: allowed.text,
      basis: 'allow-rule',
      reason: `matches allow rule ${allowed.text}`,
    };
  }
  return { verdict: 'deny', rule: 'default-deny', basis: 'default-deny', reason: 'not in allow-list' };
}

/**
 * Decides what can be decided from the name alone, *before* any DNS query — so a name that no rule could allow
 * never leaves the host as a DNS query (a DNS-exfiltration channel). Returns undefined when resolution is needed:
 * a hostname allow rule matches, or some IP/CIDR allow rule covers the port.
 */
export function evaluateName(
  policy: NetworkPolicy,
  destination: { readonly host: string; readonly port: number },
): NetworkDecision | undefined {
  const name = requestedName(destination.host);
  if (name === undefined) {
    return {
      verdict: 'deny',
      rule: 'malformed',
      basis: 'malformed',
      reason: `malformed: "${destination.host}" is not a host name`,
    };
  }
  const port = destination.port;
  for (const rule of policy.deny) {
    if (rule.kind !== 'cidr' && portMatches(rule, port) && nameMatches(rule, name)) {
      return {
        verdict: 'deny',
        rule: rule.text,
        basis: 'deny-rule',
        reason: `matches deny rule ${rule.text}`,
      };
    }
  }
  const couldAllow = policy.allow.some(
    (rule) => portMatches(rule, port) && (rule.kind === 'cidr' || nameMatches(rule, name)),
  );
  return couldAllow
    ? undefined
    : { verdict: 'deny', rule: 'default-deny', basis: 'default-deny', reason: 'not in allow-list' };
}

export interface ResolvedDecision {
  readonly decision: NetworkDecision;
  /** When allowed: the one address (normalised) the connection must go to — never re-resolve. */
  readonly address?: string;
}

/**
 * Decides a connection to a name that resolved to `addresses`. Every address is checked: if any is denied by a
 * deny rule, or is a special address not explicitly allowed, the whole connection is refused (a DNS answer that
 * mixes an allowed address with an internal one is a rebinding attempt). Otherwise the first allowed address wins.
 */
export function evaluateResolved(
  policy: NetworkPolicy,
  destination: { readonly host: string; readonly addresses: readonly string[]; readonly port: number },
): ResolvedDecision {
  const { host, addresses, port } = destination;
  if (addresses.length === 0) {
    return {
      decision: {
        verdict: 'deny',
        rule: 'unresolvable',
        basis: 'unresolvable',
        reason: `${host} did not resolve to any address`,
      },
    };
  }
  const decisions = addresses.map((address) => {
    const parsed = parseIp(address);
    return {
      address: parsed.ok ? formatIp(parsed.ip) : address,
      decision: evaluate(policy, { host, address, port }),
    };
  });
  const refusing = decisions.find(
    ({ decision }) =>
      decision.basis === 'deny-rule' ||
      decision.basis === 'special-address' ||
      decision.basis === 'malformed',
  );
  if (refusing) return { decision: refusing.decision };
  const allowed = decisions.find(({ decision }) => decision.verdict === 'allow');
  if (!allowed) return { decision: decisions[0]!.decision };
  const hiddenSpecial = decisions.find(
    ({ decision }) => decision.verdict === 'deny' && decision.addressClass !== undefined,
  );
  if (hiddenSpecial) {
    const cls = hiddenSpecial.decision.addressClass!;
    const name = requestedName(host) ?? host;
    return {
      decision: {
        verdict: 'deny',
        rule: `special-address:${cls}`,
        basis: 'special-address',
        addressClass: cls,
        reason: `${name} resolved to ${cls} address ${hiddenSpecial.address}`,
      },
    };
  }
  return { decision: allowed.decision, address: allowed.address };
}

/** `network: denied connect to 10.0.0.5:22 — not in allow-list` — phrased for a human or an LLM to act on. */
export function violationMessage(
  decision: Pick<NetworkDecision, 'verdict' | 'reason'>,
  destination: { readonly host?: string; readonly address?: string; readonly port: number },
): string {
  const target = formatHostPort(destination.host || destination.address || '?', destination.port);
  const verb = decision.verdict === 'allow' ? 'allowed' : 'denied';
  return `network: ${verb} connect to ${target} — ${decision.reason}`;
}

/** A denied decision as an execution violation (for the run record). */
export function toViolation(
  decision: NetworkDecision,
  destination: { readonly host?: string; readonly address?: string; readonly port: number },
): Violation {
  return { kind: 'network', rule: decision.rule, message: violationMessage(decision, destination) };
}

/** Canonical text of a rule's destination part (for docs and debugging). */
export function describeRule(rule: NetworkRule): string {
  const ports =
    rule.ports === undefined
      ? ''
      : rule.ports.low === rule.ports.high
        ? `:${rule.ports.low}`
        : `:${rule.ports.low}-${rule.ports.high}`;
  if (rule.kind === 'host') return `${rule.host}${ports}`;
  if (rule.kind === 'wildcard') return `*${rule.suffix}${ports}`;
  const cidr = rule.cidr;
  const full = cidr.prefix === (cidr.family === 4 ? 32 : 128);
  const body = full ? formatIp({ family: cidr.family, value: cidr.network }) : formatCidr(cidr);
  return cidr.family === 6 && ports ? `[${body}]${ports}` : `${body}${ports}`;
}
