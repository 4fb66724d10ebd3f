/**
 * `aegis sandbox shell ID [-- ARGV…]`: attaches this terminal to a command on a pseudo-terminal in a live sandbox
 * (GET /v1/sandboxes/{id}/pty, a WebSocket). On a TTY: raw mode, the size sent at start and on SIGWINCH, the
 * terminal restored on every way out. Without a TTY (a pipe, a script) stdin is forwarded as is. Exits with the
 * command's code.
 */
import WebSocket from 'ws';
import { AegisError } from '../../domain/errors.ts';
import { type ServerFlags, withServer } from './connect.ts';
import { commandExitCode } from './sandboxes.ts';

/** ws:// URL of the terminal endpoint (ws+unix: for a unix-socket server). */
export function ptyUrl(server: string, id: string, query: URLSearchParams): string {
  const path = `/v1/sandboxes/${encodeURIComponent(id)}/pty?${query}`;
  if (server.startsWith('unix:')) return `ws+unix://${server.slice('unix:'.length)}:${path}`;
  return `${server.replace(/\/+$/, '').replace(/^http/, 'ws')}${path}`;
}

export async function commandSandboxShell(
  id: string,
  argv: readonly string[],
  flags: ServerFlags & { cwd?: string },
): Promise<number> {
  return withServer(flags, async ({ server, apiKey }) => {
    const stdin = process.stdin;
    const tty = stdin.isTTY === true && process.stdout.isTTY === true;
    const query = new URLSearchParams();
    query.set('cols', String(tty ? process.stdout.columns : 80));
    query.set('rows', String(tty ? process.stdout.rows : 24));
    for (const arg of argv) query.append('cmd', arg);
    if (flags.cwd !== undefined) query.set('cwd', flags.cwd);
    const ws = new WebSocket(ptyUrl(server, id, query), {
      headers: apiKey === undefined ? {} : { authorization: `Bearer ${apiKey}` },
      perMessageDeflate: false,
    });
    let exit: { exitCode: number | null; signal: string | null } | undefined;
    const restore = () => {
      if (tty && stdin.isRaw) stdin.setRawMode(false);
    };
    const onResize = () => {
      if (ws.readyState === ws.OPEN) {
        ws.send(JSON.stringify({ type: 'resize', cols: process.stdout.columns, rows: process.stdout.rows }));
      }
    };
    const onInput = (chunk: Buffer) => {
      if (ws.readyState === ws.OPEN) ws.send(chunk, { binary: true });
    };
    try {
      return await new Promise<number>((resolve, reject) => {
        ws.once('unexpected-response', (_request, response) => {
          let body = '';
          response.setEncoding('utf8');
          response.on('data', (text: string) => (body += text));
          response.once('end', () => {
            let message = `the server refused the terminal (HTTP ${response.statusCode})`;
            let hint: string | undefined;
            try {
              const error = (
                JSON.parse(body) as { error?: { message?: string; details?: { hint?: string } } }
              ).error;
              if (error?.message) message = error.message;
              hint = error?.details?.hint;
            } catch {}
            reject(
              new AegisError(
                response.statusCode === 404 ? 'NOT_FOUND' : 'USAGE',
                message,
                hint ? { hint } : {},
              ),
            );
          });
        });
        ws.once('error', (error) =>
          reject(
            new AegisError('UNAVAILABLE', `cannot reach the server: ${error.message}`, { cause: error }),
          ),
        );
        ws.once('open', () => {
          if (tty) {
            stdin.setRawMode(true);
            process.on('SIGWINCH', onResize);
          }
          stdin.on('data', onInput);
          stdin.resume();
        });
        ws.on('message', (data, binary) => {
          const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer);
          if (binary) process.stdout.write(bytes);
          else {
            try {
              const message = JSON.parse(bytes.toString('utf8')) as {
                type?: string;
                exitCode?: number | null;
                signal?: string | null;
              };
              if (message.type === 'exit')
                exit = { exitCode: message.exitCode ?? null, signal: message.signal ?? null };
            } catch {}
          }
        });
        ws.once('close', (code, reason) => {
          if (exit) resolve(commandExitCode(exit.exitCode, exit.signal));
          else {
            process.stderr.write(
              `\r\naegis: the terminal closed (${code}${reason.length ? ` ${reason}` : ''})\r\n`,
            );
            resolve(1);
          }
        });
      });
    } finally {
      restore();
      process.off('SIGWINCH', onResize);
      stdin.off('data', onInput);
      stdin.pause();
    }
  });
}
