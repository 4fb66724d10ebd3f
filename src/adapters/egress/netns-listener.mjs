// One-shot helper, run by the sandbox runtime through
//   nsenter --net=/proc/<sandbox-init>/ns/net -S 65534 -G 65534 -- node netns-listener.mjs <port>
// It is already inside the sandbox's network namespace (as nobody): it opens the egress proxy's listening socket
// there — 127.0.0.1:<port>, and [::1]:<port> when lo has IPv6 — hands the listening handles to the orchestrator
// over the IPC channel, and exits. The sockets keep their namespace: the orchestrator accepts on them from the
// host while the agent connects to them on its own lo. Plain JS, no imports beyond node:net, so it starts fast.
import net from 'node:net';

const port = Number(process.argv[2]);

function listen(host) {
  return new Promise((resolve, reject) => {
    const server = net.createServer({ allowHalfOpen: true });
    server.once('error', reject);
    // exclusive: the handle must be a real listening socket, not one shared through a cluster primary.
    server.listen({ host, port, exclusive: true, backlog: 511 }, () => resolve(server));
  });
}

function send(message, handle) {
  return new Promise((resolve, reject) => {
    process.send(message, handle, { keepOpen: false }, (error) => (error ? reject(error) : resolve()));
  });
}

try {
  const v4 = await listen('127.0.0.1');
  await send({ listening: '127.0.0.1', port }, v4);
  let v6;
  try {
    v6 = await listen('::1');
  } catch (error) {
    await send({ skipped: '::1', code: error.code ?? String(error) });
  }
  if (v6) await send({ listening: '::1', port }, v6);
  await send({ done: true });
  // Exit at once: our copies of the sockets must be gone before the agent runs (the orchestrator waits for this
  // exit), or this process could accept — and drop — the agent's first connection.
  process.exit(0);
} catch (error) {
  try {
    await send({ error: error.code ?? String(error), message: String(error.message ?? error) });
  } catch {}
  process.exit(1);
}
