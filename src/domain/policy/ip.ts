/**
 * IP addresses and CIDR blocks, in pure TypeScript (the domain may not use node:net): strict parsing of IPv4
 * dotted quads and every RFC 4291 IPv6 text form, canonical formatting (RFC 5952), prefix math, and the table of
 * special-purpose ranges an agent may never reach unless an IP/CIDR rule names them.
 *
 * Addresses are a family plus a bigint. IPv4-mapped IPv6 (`::ffff:10.0.0.1`) is *normalised to IPv4* everywhere,
 * because that is the address the kernel actually talks to — a check on the IPv6 spelling would be a bypass.
 */

export type IpFamily = 4 | 6;

export interface IpAddress {
  readonly family: IpFamily;
  /** 32-bit (IPv4) or 128-bit (IPv6) unsigned value. */
  readonly value: bigint;
}

export interface Cidr {
  readonly family: IpFamily;
  /** Network address (host bits zero). */
  readonly network: bigint;
  readonly prefix: number;
}

export type IpParse =
  | { readonly ok: true; readonly ip: IpAddress }
  | { readonly ok: false; readonly error: string };
export type CidrParse =
  | { readonly ok: true; readonly cidr: Cidr }
  | { readonly ok: false; readonly error: string };

export function bitsOf(family: IpFamily): number {
  return family === 4 ? 32 : 128;
}

const IPV4_SHAPE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** Strict dotted-quad IPv4: four decimal octets, no leading zeros (which some resolvers read as octal). */
export function parseIpv4(text: string): IpParse {
  const match = IPV4_SHAPE.exec(text);
  if (!match)
    return { ok: false, error: `"${text}" is not an IPv4 address (four decimal octets, e.g. 10.0.0.5)` };
  let value = 0n;
  for (const octet of match.slice(1, 5) as string[]) {
    if (octet.length > 1 && octet.startsWith('0')) {
      return {
        ok: false,
        error: `"${text}" has a leading zero in an octet, which some resolvers read as octal; write ${text
          .split('.')
          .map((part) => String(Number(part)))
          .join('.')} instead`,
      };
    }
    const number = Number(octet);
    if (number > 255)
      return { ok: false, error: `"${text}" has an octet above 255 (each of the four is 0-255)` };
    value = (value << 8n) | BigInt(number);
  }
  return { ok: true, ip: { family: 4, value } };
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Every RFC 4291 text form: full, `::`-compressed, with a dotted IPv4 tail. Zone ids (`%eth0`) are refused. */
export function parseIpv6(text: string): IpParse {
  const fail = (why: string): IpParse => ({
    ok: false,
    error: `"${text}" is not an IPv6 address: ${why} (e.g. 2001:db8::1 or ::1)`,
  });
  if (text.includes('%')) return fail('zone ids (%interface) are not supported');
  if (!text.includes(':')) return fail('no ":"');
  const halves = text.split('::');
  if (halves.length > 2) return fail('"::" may appear only once');

  const groupsOf = (part: string, allowIpv4Tail: boolean): number[] | string => {
    if (part === '') return [];
    const pieces = part.split(':');
    const groups: number[] = [];
    for (let index = 0; index < pieces.length; index++) {
      const piece = pieces[index]!;
      if (allowIpv4Tail && index === pieces.length - 1 && piece.includes('.')) {
        const v4 = parseIpv4(piece);
        if (!v4.ok) return `the IPv4 tail is invalid: ${v4.error}`;
        groups.push(Number(v4.ip.value >> 16n), Number(v4.ip.value & 0xffffn));
      } else if (HEX_GROUP.test(piece)) {
        groups.push(Number.parseInt(piece, 16));
      } else {
        return piece === '' ? 'empty group' : `"${piece}" is not a group of 1-4 hex digits`;
      }
    }
    return groups;
  };

  const head = groupsOf(halves[0]!, halves.length === 1);
  if (typeof head === 'string') return fail(head);
  let groups: number[];
  if (halves.length === 2) {
    const tail = groupsOf(halves[1]!, true);
    if (typeof tail === 'string') return fail(tail);
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return fail('too many groups for "::"');
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    if (head.length !== 8) return fail(`${head.length} groups instead of 8`);
    groups = head;
  }
  let value = 0n;
  for (const group of groups) value = (value << 16n) | BigInt(group);
  return { ok: true, ip: { family: 6, value } };
}

/** IPv4-mapped IPv6 (`::ffff:a.b.c.d`) → the IPv4 address it denotes; everything else unchanged. */
export function normalizeIp(ip: IpAddress): IpAddress {
  if (ip.family === 6 && ip.value >> 32n === 0xffffn) return { family: 4, value: ip.value & 0xffffffffn };
  return ip;
}

/** Parses IPv4 or IPv6 (no brackets) and normalises IPv4-mapped IPv6 to IPv4. */
export function parseIp(text: string): IpParse {
  const parsed = text.includes(':') ? parseIpv6(text) : parseIpv4(text);
  return parsed.ok ? { ok: true, ip: normalizeIp(parsed.ip) } : parsed;
}

/** Canonical text: dotted quad, or RFC 5952 IPv6 (lowercase, longest zero run compressed). */
export function formatIp(ip: IpAddress): string {
  if (ip.family === 4) {
    return [24n, 16n, 8n, 0n].map((shift) => String((ip.value >> shift) & 0xffn)).join('.');
  }
  const groups: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(Number((ip.value >> shift) & 0xffffn));
  if (ip.value >> 32n === 0xffffn) return `::ffff:${formatIp({ family: 4, value: ip.value & 0xffffffffn })}`;
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < 8; ) {
    if (groups[start] !== 0) {
      start++;
      continue;
    }
    let end = start;
    while (end < 8 && groups[end] === 0) end++;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end;
  }
  const hex = groups.map((group) => group.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

export function formatCidr(cidr: Cidr): string {
  return `${formatIp({ family: cidr.family, value: cidr.network })}/${cidr.prefix}`;
}

function hostMask(family: IpFamily, prefix: number): bigint {
  return (1n << BigInt(bitsOf(family) - prefix)) - 1n;
}

/** `10.0.0.0/8`, `2001:db8::/32`; host bits must be zero (a typo guard: `10.0.0.5/8` suggests `10.0.0.0/8`). */
export function parseCidr(text: string): CidrParse {
  const slash = text.indexOf('/');
  if (slash < 0) {
    const parsed = parseIp(text);
    if (!parsed.ok) return parsed;
    return {
      ok: true,
      cidr: { family: parsed.ip.family, network: parsed.ip.value, prefix: bitsOf(parsed.ip.family) },
    };
  }
  const addressText = text.slice(0, slash);
  const prefixText = text.slice(slash + 1);
  const raw = addressText.includes(':') ? parseIpv6(addressText) : parseIpv4(addressText);
  if (!raw.ok) return raw;
  const bits = bitsOf(raw.ip.family);
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > bits) {
    return {
      ok: false,
      error: `"${text}" has an invalid prefix length "${prefixText}" (0-${bits} for IPv${raw.ip.family}, e.g. ${
        raw.ip.family === 4 ? '10.0.0.0/8' : '2001:db8::/32'
      })`,
    };
  }
  let cidr: Cidr = { family: raw.ip.family, network: raw.ip.value, prefix: Number(prefixText) };
  const hostBits = cidr.network & hostMask(cidr.family, cidr.prefix);
  if (hostBits !== 0n) {
    const suggestion = formatCidr({ ...cidr, network: cidr.network & ~hostMask(cidr.family, cidr.prefix) });
    return {
      ok: false,
      error: `"${text}" has host bits set after the /${cidr.prefix}; did you mean ${suggestion}?`,
    };
  }
  // An IPv4-mapped IPv6 block denotes IPv4 addresses: ::ffff:10.0.0.0/104 is 10.0.0.0/8.
  if (cidr.family === 6 && cidr.prefix >= 96 && cidr.network >> 32n === 0xffffn) {
    cidr = { family: 4, network: cidr.network & 0xffffffffn, prefix: cidr.prefix - 96 };
  }
  return { ok: true, cidr };
}

export function cidrContains(cidr: Cidr, ip: IpAddress): boolean {
  if (cidr.family !== ip.family) return false;
  const shift = BigInt(bitsOf(cidr.family) - cidr.prefix);
  return ip.value >> shift === cidr.network >> shift;
}

/** Whether every address of `inner` lies in `outer`. */
export function cidrWithin(inner: Cidr, outer: Cidr): boolean {
  return (
    inner.family === outer.family &&
    inner.prefix >= outer.prefix &&
    cidrContains(outer, { family: inner.family, value: inner.network })
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Special-purpose addresses.

export type SpecialClass =
  | 'metadata'
  | 'unspecified'
  | 'broadcast'
  | 'loopback'
  | 'private'
  | 'link-local'
  | 'cgnat'
  | 'multicast'
  | 'reserved';

export interface SpecialRange {
  readonly class: SpecialClass;
  /** The special block the address lies in. A CIDR rule unlocks the address only if it lies within this block. */
  readonly block: Cidr;
  readonly note: string;
}

function block(text: string): Cidr {
  const parsed = parseCidr(text);
  if (!parsed.ok) throw new Error(`bad built-in block ${text}: ${parsed.error}`);
  return parsed.cidr;
}

/** Most specific first: the first entry that contains an address names its class. */
export const SPECIAL_RANGES: readonly SpecialRange[] = (
  [
    ['metadata', '169.254.169.254/32', 'cloud instance metadata (AWS, GCP, Azure, OCI, OpenStack)'],
    ['metadata', 'fd00:ec2::254/128', 'AWS instance metadata over IPv6'],
    ['metadata', '100.100.100.200/32', 'Alibaba Cloud instance metadata'],
    ['metadata', '168.63.129.16/32', 'Azure WireServer / platform DNS'],
    ['unspecified', '0.0.0.0/8', '"this network"; 0.0.0.0 reaches the local host on Linux'],
    ['unspecified', '::/128', 'unspecified; reaches the local host on Linux'],
    ['broadcast', '255.255.255.255/32', 'limited broadcast'],
    ['loopback', '127.0.0.0/8', 'loopback'],
    ['loopback', '::1/128', 'loopback'],
    ['private', '10.0.0.0/8', 'RFC 1918 private'],
    ['private', '172.16.0.0/12', 'RFC 1918 private'],
    ['private', '192.168.0.0/16', 'RFC 1918 private'],
    ['private', 'fc00::/7', 'IPv6 unique local'],
    ['private', 'fec0::/10', 'IPv6 site-local (deprecated)'],
    ['link-local', '169.254.0.0/16', 'IPv4 link-local'],
    ['link-local', 'fe80::/10', 'IPv6 link-local'],
    ['cgnat', '100.64.0.0/10', 'carrier-grade NAT shared space'],
    ['multicast', '224.0.0.0/4', 'IPv4 multicast'],
    ['multicast', 'ff00::/8', 'IPv6 multicast'],
    ['reserved', '240.0.0.0/4', 'reserved for future use'],
    ['reserved', '192.0.0.0/24', 'IETF protocol assignments'],
    ['reserved', '192.0.2.0/24', 'documentation (TEST-NET-1)'],
    ['reserved', '198.51.100.0/24', 'documentation (TEST-NET-2)'],
    ['reserved', '203.0.113.0/24', 'documentation (TEST-NET-3)'],
    ['reserved', '198.18.0.0/15', 'benchmarking'],
    ['reserved', '192.88.99.0/24', '6to4 relay anycast (deprecated)'],
    ['reserved', '::/96', 'IPv4-compatible IPv6 (deprecated)'],
    ['reserved', '::ffff:0:0:0/96', 'IPv4-translated (SIIT)'],
    ['reserved', '64:ff9b:1::/48', 'local-use IPv4/IPv6 translation'],
    ['reserved', '100::/64', 'discard-only'],
    ['reserved', '2001::/32', 'Teredo tunnelling'],
    ['reserved', '2001:db8::/32', 'documentation'],
  ] as const
).map(([cls, text, note]) => ({ class: cls, block: block(text), note }));

/** IPv6 prefixes that carry an IPv4 address the packet ends up at: NAT64 (64:ff9b::/96) and 6to4 (2002::/16). */
const EMBEDDING: readonly { readonly prefix: Cidr; readonly shift: bigint }[] = [
  { prefix: block('64:ff9b::/96'), shift: 0n },
  { prefix: block('2002::/16'), shift: 80n },
];

/** The special range an address falls in (after IPv4-mapped normalisation), or undefined for a public address. */
export function specialRangeOf(address: IpAddress): SpecialRange | undefined {
  const ip = normalizeIp(address);
  for (const range of SPECIAL_RANGES) if (cidrContains(range.block, ip)) return range;
  if (ip.family === 6) {
    for (const embedding of EMBEDDING) {
      if (!cidrContains(embedding.prefix, ip)) continue;
      const inner = specialRangeOf({ family: 4, value: (ip.value >> embedding.shift) & 0xffffffffn });
      if (!inner) return undefined;
      // The block of IPv6 addresses that embed the special IPv4 block.
      const network = embedding.prefix.network | (inner.block.network << embedding.shift);
      const prefix = 128 - Number(embedding.shift) - (32 - inner.block.prefix);
      return {
        class: inner.class,
        block: { family: 6, network, prefix },
        note: `${inner.note}, embedded in ${formatCidr(embedding.prefix)}`,
      };
    }
  }
  return undefined;
}
