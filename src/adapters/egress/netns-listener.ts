/**
 * Opens the egress proxy's listening socket *inside* a sandbox's network namespace and hands it to the
 * orchestrator — no forwarder process (see docs/adr/0007-egress-proxy-in-sandbox-netns.md).
 *
 * Runs `nsenter --net=/proc/<pid>/ns/net -S 65534 -G 65534 -- <node> netns-listener.mjs <port>` once, with an IPC
 * channel: root enters the namespace (it holds CAP_SYS_ADMIN over every user namespace, so `--user` is not needed),
 * drops to nobody, and the helper listens on 127.0.0.1:<port> (and [::1]:<port> when lo has IPv6) there, sends the
 * listening sockets to us and exits. From then on the sockets live only in the orchestrator: it accepts the agent's
 * connections from the host side while the agent connects on its own `lo`. Close them and the sandbox has no way
 * out at all (fail closed): nothing else listens or routes.
 */
import { spawn } from 'node:child_process';
import { realpathSync } from 'node:fs';
import type net from 'node:net';
import { join } from 'node:path';
import { AegisError } from '../../domain/errors.ts';
import { NOBODY, reachableCopy } from '../host/reachable-copy.ts';

/** The helper script: plain JS, imports only node:net, so Node's start-up is all it costs. */
export const NETNS_LISTENER_SCRIPT = join(import.meta.dirname, 'netns-listener.mjs');

/** The unprivileged identity the helper runs as after entering the namespace (the host's `nobody`). */
const HELPER_ID = NOBODY.uid;
/**
 * The helper's Node binary and script as uid 65534 can run them: themselves, or copies in `dir` when AEGIS sits
 * where nobody can traverse (a clone under /root). `dir` must be root-owned and searchable (0711).
 */
export function netnsHelperFiles(dir = '/run/aegis/static'): { nodeBinary: string; script: string } {
  return {
    nodeBinary: reachableCopy(realpathSync(process.execPath), 'node', NOBODY, dir),
    script: reachableCopy(NETNS_LISTENER_SCRIPT, 'netns-listener', NOBODY, dir),
  };
}

export interface NetnsListenOptions {
  /** A process inside the target network namespace (the sandbox's pid-namespace init). */
  readonly pid: number;
  readonly port: number;
  /** Node binary that runs the helper; uid 65534 must be able to reach it. @default netnsHelperFiles().nodeBinary */
  readonly nodeBinary?: string;
  /** The helper script; uid 65534 must be able to read it. @default netnsHelperFiles().script */
  readonly script?: string;
  /** @default "nsenter" (PATH) */
  readonly nsenterPath?: string;
  /** @default 10000 */
  readonly timeoutMs?: number;
}

interface HelperMessage {
  readonly listening?: string;
  readonly skipped?: string;
  readonly code?: string;
  readonly done?: boolean;
  readonly error?: string;
  readonly message?: string;
}

/** Listening servers on `port` inside the namespace of `pid` (IPv4 always, IPv6 when available). */
export function listenInNetns(options: NetnsListenOptions): Promise<net.Server[]> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const servers: net.Server[] = [];
    const stderr: string[] = [];
    let settled = false;
    let done = false;
    const child = spawn(
      options.nsenterPath ?? 'nsenter',
      [
        `--net=/proc/${options.pid}/ns/net`,
        '-S',
        String(HELPER_ID),
        '-G',
        String(HELPER_ID),
        '--',
        ...(options.nodeBinary !== undefined && options.script !== undefined
          ? [options.nodeBinary, options.script]
          : (() => {
              const files = netnsHelperFiles();
              return [options.nodeBinary ?? files.nodeBinary, options.script ?? files.script];
            })()),
        String(options.port),
      ],
      { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], env: {} },
    );
    const fail = (why: string, cause?: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      for (const server of servers) server.close();
      if (child.exitCode === null) child.kill('SIGKILL');
      reject(
        new AegisError(
          'RUNTIME_UNAVAILABLE',
          `cannot open the egress proxy inside the sandbox's network namespace: ${why}`,
          {
            ...(cause === undefined ? {} : { cause }),
            hint: 'egress needs nsenter (Debian: apt-get install util-linux), an orchestrator running as root, and the Node binary and src/adapters/egress/netns-listener.mjs readable by uid 65534; or remove spec.security.network.allow (no network at all)',
          },
        ),
      );
    };
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (text: string) => stderr.push(text));
    child.once('error', (error) => fail(error.message, error));
    child.on('message', (message: HelperMessage, handle: unknown) => {
      if (settled) {
        (handle as net.Server | undefined)?.close();
        return;
      }
      if (message.listening !== undefined && handle) servers.push(handle as net.Server);
      else if (message.error !== undefined) fail(`${message.error}: ${message.message ?? ''}`);
      else if (message.done) done = true;
    });
    // 'close': after the IPC channel and stderr are drained, so every message and the error text are in. Only
    // then is the orchestrator the sole holder of the listening sockets: a live helper could still accept one.
    child.once('close', (code, signal) => {
      if (done && code === 0 && servers.length > 0) {
        settled = true;
        clearTimeout(timer);
        resolve(servers);
        return;
      }
      fail(
        servers.length === 0 && done
          ? 'the helper opened no socket'
          : `nsenter exited with ${signal ?? `code ${code}`}: ${stderr.join('').trim() || 'no message'}`,
      );
    });
  });
}
