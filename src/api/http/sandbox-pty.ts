/**
 * `GET /v1/sandboxes/{id}/pty` — an interactive terminal in a live sandbox over WebSocket
 * (docs/adr/0068-live-sandbox-pty.md, docs/adr/0070-websocket-library.md).
 *
 * Query: `cols`, `rows` (default 80×24), `cmd` (repeatable: argv; one value with spaces runs under `sh -c`;
 * default an interactive shell), `cwd`. Frames: binary = terminal bytes, both ways; a text frame
 * `{"type":"resize","cols":N,"rows":N}` resizes (TIOCSWINSZ). When the command exits the server sends
 * `{"type":"exit","exitCode":N,"signal":S}` and closes with 1000. Closing the socket hangs the command up (SIGHUP,
 * then SIGKILL). The terminal's bytes are never stored or audited; `sandbox.exec` records argv, exit and duration.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import type { LiveSandboxes } from '../../app/live-sandboxes.ts';
import type { Principal } from '../../domain/auth/api-key.ts';
import { AegisError } from '../../domain/errors.ts';

/** Output queued toward a client that does not read: past this the terminal is closed (1013), not buffered. */
export const PTY_CLIENT_BUFFER_BYTES = 8 * 1024 * 1024;
const HANGUP_GRACE_MS = 2000;

function dimension(query: URLSearchParams, name: 'cols' | 'rows', fallback: number): number {
  const raw = query.get(name);
  if (raw === null) return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < 1 || n > 1000) {
    throw new AegisError(
      'USAGE',
      `query.${name} must be an integer from 1 to 1000, got ${raw.slice(0, 20)}`,
      {
        problems: [{ path: `query.${name}`, message: 'out of range' }],
      },
    );
  }
  return n;
}

/** The argv of `?cmd=a&cmd=b` (one value with a space: a shell command line). */
function commandOf(query: URLSearchParams): readonly string[] | string | undefined {
  const values = query.getAll('cmd');
  if (values.length === 0) return undefined;
  if (values.length === 1 && /\s/.test(values[0]!)) return values[0]!;
  return values;
}

/**
 * Opens the terminal, then completes the WebSocket handshake; a refusal before that throws (the caller answers it
 * as a plain HTTP error, status and JSON body like every other route).
 */
export async function servePty(
  sandboxes: LiveSandboxes,
  principal: Principal,
  id: string,
  query: URLSearchParams,
  upgrade: { wss: WebSocketServer; request: IncomingMessage; socket: Duplex; head: Buffer },
): Promise<void> {
  const cols = dimension(query, 'cols', 80);
  const rows = dimension(query, 'rows', 24);
  let ws: WebSocket | undefined;
  const early: Uint8Array[] = [];
  let exit: { exitCode: number | null; signal: string | null } | undefined;
  const finish = () => {
    if (!ws || !exit) return;
    if (ws.readyState === ws.OPEN) {
      ws.send(JSON.stringify({ type: 'exit', ...exit }), () =>
        ws?.close(1000, `exit ${exit?.exitCode ?? exit?.signal}`),
      );
    }
  };
  const { pty } = await sandboxes.openPty(
    principal,
    id,
    {
      ...(commandOf(query) === undefined ? {} : { cmd: commandOf(query)! }),
      ...(query.get('cwd') === null ? {} : { cwd: query.get('cwd')! }),
      cols,
      rows,
    },
    {
      onOutput: (chunk) => {
        if (!ws) {
          early.push(chunk);
          return;
        }
        if (ws.readyState !== ws.OPEN) return;
        if (ws.bufferedAmount > PTY_CLIENT_BUFFER_BYTES) {
          ws.close(1013, 'client too slow: terminal output over the buffer');
          return;
        }
        ws.send(chunk, { binary: true });
      },
      onExit: (code, signal) => {
        exit = { exitCode: code, signal };
        finish();
      },
    },
  );
  const { wss, request, socket, head } = upgrade;
  wss.handleUpgrade(request, socket, head, (client) => {
    ws = client;
    for (const chunk of early.splice(0)) client.send(chunk, { binary: true });
    client.on('message', (data, isBinary) => {
      const bytes = Buffer.isBuffer(data)
        ? data
        : Array.isArray(data)
          ? Buffer.concat(data)
          : Buffer.from(data as ArrayBuffer);
      if (isBinary) {
        void pty.write(bytes).catch(() => {});
        return;
      }
      let message: { type?: unknown; cols?: unknown; rows?: unknown };
      try {
        message = JSON.parse(bytes.toString('utf8')) as typeof message;
      } catch {
        client.close(1003, 'text frames are JSON control messages; send terminal bytes as binary frames');
        return;
      }
      const ok = (n: unknown): n is number =>
        Number.isInteger(n) && (n as number) >= 1 && (n as number) <= 1000;
      if (message.type === 'resize' && ok(message.cols) && ok(message.rows)) {
        void pty.resize(message.cols, message.rows).catch(() => {});
      } else {
        client.close(1003, 'unknown control message; expected {"type":"resize","cols":N,"rows":N}');
      }
    });
    client.once('close', () => {
      if (exit) return;
      void pty.kill('SIGHUP').catch(() => {});
      setTimeout(() => {
        if (!exit) void pty.kill('SIGKILL').catch(() => {});
      }, HANGUP_GRACE_MS).unref();
    });
    client.on('error', () => {});
    finish();
  });
}
