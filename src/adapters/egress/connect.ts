/** The egress proxy's HTTP CONNECT tunnels: decide on the authority, dial the checked address, pipe opaque bytes. */

import type http from 'node:http';
import type net from 'node:net';
import { type Attempt, endAndClose, errorCode, malformed, type ProxyCore, plainResponse } from './core.ts';
import { parseAuthority } from './target.ts';

export async function handleConnect(
  core: ProxyCore,
  attempt: Attempt,
  req: http.IncomingMessage,
  client: net.Socket,
  head: Buffer,
): Promise<void> {
  const target = parseAuthority(req.url ?? '');
  if (!target.ok) {
    attempt.decision = malformed(`CONNECT target ${target.error}`);
    endAndClose(client, plainResponse(400, `network: ${attempt.decision.reason}`));
    core.finish(attempt);
    return;
  }
  await core.decide(attempt, target.host, target.port);
  if (core.closing) {
    attempt.error = 'proxy-closed';
    client.destroy();
    core.finish(attempt);
    return;
  }
  const decision = attempt.decision!;
  if (decision.verdict === 'deny') {
    endAndClose(client, core.denyResponse(attempt, decision));
    core.finish(attempt);
    return;
  }
  let upstream: net.Socket;
  try {
    upstream = await core.dial(attempt);
  } catch (error) {
    attempt.error = errorCode(error);
    const failure = core.dialFailure(attempt);
    endAndClose(client, plainResponse(failure.status, failure.message));
    core.finish(attempt);
    return;
  }
  if (client.destroyed) {
    upstream.destroy();
    upstream.once('close', () => core.finish(attempt));
    return;
  }
  client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
  if (head.length > 0) upstream.write(head);
  core.tunnel(client, upstream, attempt);
}
