/** SOCKS5 (RFC 1928) wire constants and replies: the subset the egress proxy speaks (no-auth, CONNECT). */

export const SOCKS_VERSION = 0x05;
export const SOCKS4_VERSION = 0x04;

export const AUTH_NONE = 0x00;
export const AUTH_NO_ACCEPTABLE = 0xff;

export const COMMAND = { connect: 0x01, bind: 0x02, udpAssociate: 0x03 } as const;
export const COMMAND_NAMES: Readonly<Record<number, string>> = {
  1: 'CONNECT',
  2: 'BIND',
  3: 'UDP ASSOCIATE',
};

export const ADDRESS_TYPE = { ipv4: 0x01, domain: 0x03, ipv6: 0x04 } as const;

/** Reply codes (the REP field). */
export const REPLY = {
  succeeded: 0x00,
  generalFailure: 0x01,
  notAllowedByRuleset: 0x02,
  networkUnreachable: 0x03,
  hostUnreachable: 0x04,
  connectionRefused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const;

/**
 * A reply with a zero bound address (0.0.0.0:0): clients only need the code, and the proxy's real local
 * address is the host's business, not the agent's.
 */
export function reply(code: number): Buffer {
  return Buffer.from([SOCKS_VERSION, code, 0x00, ADDRESS_TYPE.ipv4, 0, 0, 0, 0, 0, 0]);
}

/** Maps an upstream connect failure to the reply code a SOCKS client expects. */
export function replyForError(code: string | undefined): number {
  switch (code) {
    case 'ECONNREFUSED':
      return REPLY.connectionRefused;
    case 'ENETUNREACH':
      return REPLY.networkUnreachable;
    case 'EHOSTUNREACH':
    case 'ETIMEDOUT':
      return REPLY.hostUnreachable;
    default:
      return REPLY.generalFailure;
  }
}
