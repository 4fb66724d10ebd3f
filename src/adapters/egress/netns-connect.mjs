// One-shot helper, run by the sandbox runtime through
//   nsenter --net=/proc/<sandbox-init>/ns/net -S 65534 -G 65534 -- node netns-connect.mjs <port>
// It is inside the sandbox's network namespace (as nobody, no capabilities): it connects to 127.0.0.1:<port> there
// — the sandbox's own loopback — hands the connected socket to the orchestrator over the IPC channel, and exits.
// The socket keeps its namespace: the orchestrator then talks to the sandbox's server directly. Plain JS, node:net
// only (docs/adr/0069-live-sandbox-ports.md).
import net from 'node:net';

const port = Number(process.argv[2]);

function send(message, handle) {
  return new Promise((resolve, reject) => {
    process.send(message, handle, { keepOpen: false }, (error) => (error ? reject(error) : resolve()));
  });
}

try {
  const socket = await new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
  socket.pause();
  await send({ connected: port }, socket);
  process.exit(0);
} catch (error) {
  try {
    await send({ error: error.code ?? String(error), message: String(error.message ?? error) });
  } catch {}
  process.exit(1);
}
