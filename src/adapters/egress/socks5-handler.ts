/**
 * The egress proxy's SOCKS5 side (RFC 1928): no-auth, CONNECT only. Reads the handshake byte by byte (never more
 * than the head limit), decides on the requested host, dials the checked address and pipes opaque bytes.
 */

import type net from 'node:net';
import { formatIp } from '../../domain/policy/ip.ts';
import { formatHostPort, type NetworkDecision } from '../../domain/policy/network-rules.ts';
import { endAndClose, errorCode, malformed, type ProxyCore, pseudoDecision } from './core.ts';
import {
  ADDRESS_TYPE,
  AUTH_NO_ACCEPTABLE,
  AUTH_NONE,
  COMMAND,
  COMMAND_NAMES,
  REPLY,
  reply,
  replyForError,
  SOCKS_VERSION,
} from './socks5.ts';

/** Buffers a socket's bytes for a handshake parser; `release` hands back what was read beyond it. */
class ByteReader {
  #buffer = Buffer.alloc(0);
  #waiting: { size: number; resolve: (bytes: Buffer) => void; reject: (error: Error) => void } | undefined;
  #failure: Error | undefined;
  readonly #socket: net.Socket;
  readonly #limit: number;

  constructor(socket: net.Socket, limit: number) {
    this.#socket = socket;
    this.#limit = limit;
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onEnd);
  }

  #onData = (chunk: Buffer): void => {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    // A handshake needs a few hundred bytes; anything beyond the limit waits in the kernel (backpressure) until
    // the tunnel is up, instead of piling up here while the destination is resolved and dialled.
    if (this.#buffer.length > this.#limit) this.#socket.pause();
    this.#drain();
  };

  #onEnd = (): void => this.fail(new Error('connection closed during the SOCKS5 handshake'));

  fail(error: Error): void {
    this.#failure ??= error;
    this.#drain();
  }

  #drain(): void {
    const waiting = this.#waiting;
    if (!waiting) return;
    if (this.#buffer.length >= waiting.size) {
      this.#waiting = undefined;
      const bytes = this.#buffer.subarray(0, waiting.size);
      this.#buffer = this.#buffer.subarray(waiting.size);
      waiting.resolve(bytes);
    } else if (this.#failure) {
      this.#waiting = undefined;
      waiting.reject(this.#failure);
    }
  }

  read(size: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.#waiting = { size, resolve, reject };
      this.#drain();
    });
  }

  release(): Buffer {
    this.#socket.off('data', this.#onData);
    this.#socket.off('end', this.#onEnd);
    this.#socket.off('close', this.#onEnd);
    this.#socket.pause();
    const rest = this.#buffer;
    this.#buffer = Buffer.alloc(0);
    return rest;
  }
}

export async function handleSocks5(core: ProxyCore, client: net.Socket): Promise<void> {
  const attempt = core.begin('socks5', '');
  const reader = new ByteReader(client, core.options.maxHeaderBytes);
  const onTimeout = () =>
    reader.fail(new Error(`no complete SOCKS5 request within ${core.options.handshakeTimeoutMs} ms`));
  client.setTimeout(core.options.handshakeTimeoutMs);
  client.on('timeout', onTimeout);
  client.resume();
  const refuse = (code: number, decision: NetworkDecision) => {
    attempt.decision = decision;
    endAndClose(client, reply(code));
    core.finish(attempt);
  };
  try {
    const greeting = await reader.read(2);
    const methods = await reader.read(greeting[1]!);
    if (!methods.includes(AUTH_NONE)) {
      attempt.decision = malformed(
        'no acceptable SOCKS5 authentication method (only "no authentication" is offered)',
      );
      endAndClose(client, Buffer.from([SOCKS_VERSION, AUTH_NO_ACCEPTABLE]));
      core.finish(attempt);
      return;
    }
    client.write(Buffer.from([SOCKS_VERSION, AUTH_NONE]));

    const head = await reader.read(4);
    const [version, command, reserved, addressType] = head as unknown as [number, number, number, number];
    if (version !== SOCKS_VERSION || reserved !== 0) {
      refuse(
        REPLY.generalFailure,
        malformed(`bad SOCKS5 request header (version ${version}, reserved ${reserved})`),
      );
      return;
    }
    let host: string;
    if (addressType === ADDRESS_TYPE.ipv4) {
      host = [...(await reader.read(4))].join('.');
    } else if (addressType === ADDRESS_TYPE.ipv6) {
      const bytes = await reader.read(16);
      host = formatIp({
        family: 6,
        value: bytes.reduce((value, byte) => (value << 8n) | BigInt(byte), 0n),
      });
    } else if (addressType === ADDRESS_TYPE.domain) {
      const [length] = await reader.read(1);
      host = (await reader.read(length!)).toString('latin1');
    } else {
      refuse(REPLY.addressTypeNotSupported, malformed(`SOCKS5 address type ${addressType} is not supported`));
      return;
    }
    const port = (await reader.read(2)).readUInt16BE(0);
    attempt.requested = formatHostPort(host, port);
    attempt.port = port;
    if (command !== COMMAND.connect) {
      attempt.host = host;
      refuse(
        REPLY.commandNotSupported,
        pseudoDecision(
          'unsupported',
          `SOCKS5 ${COMMAND_NAMES[command!] ?? `command ${command}`} is not supported (only CONNECT)`,
        ),
      );
      return;
    }
    if (port === 0) {
      refuse(REPLY.generalFailure, malformed('port 0'));
      return;
    }

    await core.decide(attempt, host, port);
    if (core.closing) {
      attempt.error = 'proxy-closed';
      client.destroy();
      core.finish(attempt);
      return;
    }
    const decision = attempt.decision!;
    if (decision.verdict === 'deny') {
      const code =
        decision.basis === 'unresolvable'
          ? REPLY.hostUnreachable
          : decision.basis === 'malformed'
            ? REPLY.generalFailure
            : REPLY.notAllowedByRuleset;
      refuse(code, decision);
      return;
    }
    let upstream: net.Socket;
    try {
      upstream = await core.dial(attempt);
    } catch (error) {
      attempt.error = errorCode(error);
      endAndClose(client, reply(replyForError(attempt.error)));
      core.finish(attempt);
      return;
    }
    client.off('timeout', onTimeout);
    client.setTimeout(0);
    const rest = reader.release();
    if (client.destroyed) {
      upstream.destroy();
      upstream.once('close', () => core.finish(attempt));
      return;
    }
    client.write(reply(REPLY.succeeded));
    if (rest.length > 0) upstream.write(rest);
    core.tunnel(client, upstream, attempt);
  } catch (error) {
    attempt.decision ??= malformed(error instanceof Error ? error.message : String(error));
    client.destroy();
    if (attempt.upstream) attempt.upstream.destroy();
    core.finish(attempt);
  }
}
