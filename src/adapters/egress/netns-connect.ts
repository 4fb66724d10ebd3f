/**
 * Connects to 127.0.0.1:<port> *inside* a sandbox's network namespace and hands the connected socket to the
 * orchestrator — how a live sandbox's exposed ports are reached (docs/adr/0069-live-sandbox-ports.md). The sandbox
 * never gets a host-reachable address: the orchestrator holds a socket whose far end is the sandbox's own `lo`.
 *
 * Same shape as netns-listener.ts: `nsenter --net=/proc/<pid>/ns/net -S 65534 -G 65534 -- <node> netns-connect.mjs
 * <port>` with an IPC channel; root enters the namespace, drops to nobody, the helper connects and sends the socket.
 */
import { spawn } from 'node:child_process';
import { realpathSync } from 'node:fs';
import type net from 'node:net';
import { join } from 'node:path';
import { AegisError } from '../../domain/errors.ts';
import { NOBODY, reachableCopy } from '../host/reachable-copy.ts';

export const NETNS_CONNECT_SCRIPT = join(import.meta.dirname, 'netns-connect.mjs');

/** The helper's Node binary and script as uid 65534 can run them (see netnsHelperFiles). */
export function netnsConnectFiles(dir = '/run/aegis/static'): { nodeBinary: string; script: string } {
  return {
    nodeBinary: reachableCopy(realpathSync(process.execPath), 'node', NOBODY, dir),
    script: reachableCopy(NETNS_CONNECT_SCRIPT, 'netns-connect', NOBODY, dir),
  };
}

export interface NetnsConnectOptions {
  /** A process inside the target network namespace (the sandbox's pid-namespace init). */
  readonly pid: number;
  readonly port: number;
  readonly nodeBinary: string;
  readonly script: string;
  /** @default "nsenter" (PATH) */
  readonly nsenterPath?: string;
  /** @default 10000 */
  readonly timeoutMs?: number;
}

interface HelperMessage {
  readonly connected?: number;
  readonly error?: string;
  readonly message?: string;
}

/** A socket connected to 127.0.0.1:`port` in the namespace of `pid`. ECONNREFUSED → UNAVAILABLE (nothing listens yet). */
export function connectInNetns(options: NetnsConnectOptions): Promise<net.Socket> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    let socket: net.Socket | undefined;
    let refusal: HelperMessage | undefined;
    let settled = false;
    const stderr: string[] = [];
    const child = spawn(
      options.nsenterPath ?? 'nsenter',
      [
        `--net=/proc/${options.pid}/ns/net`,
        '-S',
        String(NOBODY.uid),
        '-G',
        String(NOBODY.gid),
        '--',
        options.nodeBinary,
        options.script,
        String(options.port),
      ],
      { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], env: {} },
    );
    const finish = (error: AegisError | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null) child.kill('SIGKILL');
      if (error) {
        socket?.destroy();
        reject(error);
      } else resolve(socket!);
    };
    const timer = setTimeout(
      () =>
        finish(new AegisError('UNAVAILABLE', `no connection to port ${options.port} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (text: string) => stderr.push(text));
    child.once('error', (error) =>
      finish(
        new AegisError(
          'RUNTIME_UNAVAILABLE',
          `cannot enter the sandbox's network namespace: ${error.message}`,
          {
            cause: error,
            hint: 'port forwarding needs nsenter (util-linux) and an orchestrator running as root',
          },
        ),
      ),
    );
    child.on('message', (message: HelperMessage, handle: unknown) => {
      if (message.connected !== undefined && handle) socket = handle as net.Socket;
      else if (message.error !== undefined) refusal = message;
    });
    child.once('close', (code, signal) => {
      if (socket && code === 0) return finish(undefined);
      if (refusal?.error === 'ECONNREFUSED') {
        return finish(
          new AegisError('UNAVAILABLE', `nothing listens on 127.0.0.1:${options.port} in the sandbox`, {
            hint: 'start the server inside the sandbox first, bound to 127.0.0.1 (or 0.0.0.0)',
          }),
        );
      }
      finish(
        new AegisError(
          'RUNTIME_UNAVAILABLE',
          `cannot connect to port ${options.port} in the sandbox: ${
            refusal
              ? `${refusal.error}: ${refusal.message ?? ''}`
              : `nsenter exited with ${signal ?? `code ${code}`}`
          } ${stderr.join('').trim()}`.trim(),
        ),
      );
    });
  });
}
