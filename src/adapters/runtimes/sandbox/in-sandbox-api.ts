/**
 * The in-sandbox API's host side, shared by every runtime (docs/adr/0048-in-sandbox-api.md, 0072): the orchestrator
 * serves the app's handler on API_PORT *inside* an instance's network namespace (listeners opened there by
 * netns-listener.ts, the way the egress proxy's are), and the in-sandbox SDKs are mounted read-only.
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type net from 'node:net';
import { join } from 'node:path';
import type { InstanceSpec } from '../../../app/ports.ts';
import { listenInNetns, type NetnsListenOptions } from '../../egress/netns-listener.ts';
import { API_PORT, NODE_SDK_INSIDE, PYTHON_SDK_INSIDE } from './environment.ts';

/** The in-sandbox SDKs (sdk/in-sandbox): host file → target inside, mounted (or copied) read-only. */
const SDK_ROOT = join(import.meta.dirname, '..', '..', '..', '..', 'sdk', 'in-sandbox');
export const SDK_FILES: Readonly<Record<string, string>> = {
  [join(SDK_ROOT, 'python', 'aegis', '__init__.py')]: `${PYTHON_SDK_INSIDE}/aegis/__init__.py`,
  [join(SDK_ROOT, 'node', 'aegis', 'index.js')]: `${NODE_SDK_INSIDE}/index.js`,
  [join(SDK_ROOT, 'node', 'aegis', 'package.json')]: `${NODE_SDK_INSIDE}/package.json`,
};

export interface InSandboxApiServer {
  close(): Promise<void>;
}

/**
 * Serves `handler` on listening sockets opened inside a sandbox's netns: one HTTP server fed their connections.
 * Closing it closes the sockets and every open connection (the agent's API dies with the instance).
 */
export function serveInSandboxApi(
  handler: NonNullable<InstanceSpec['inSandboxApi']>['handler'],
  listeners: net.Server[],
): InSandboxApiServer {
  // Bounded: a request (body included) must arrive within 60 s, and one sandbox holds at most 64 connections —
  // the agent cannot pin orchestrator memory with slow or endless uploads. Streaming answers are not limited by this.
  const http: HttpServer = createHttpServer(
    { requestTimeout: 60_000, headersTimeout: 30_000 },
    handler as unknown as Parameters<typeof createHttpServer>[1],
  );
  for (const listener of listeners) {
    listener.maxConnections = 64;
    listener.on('connection', (socket) => http.emit('connection', socket));
  }
  return {
    close: async () => {
      for (const listener of listeners) listener.close();
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

/** Opens API_PORT inside the network namespace of `listen.pid` and serves `handler` there. */
export async function openInSandboxApiInNetns(
  handler: NonNullable<InstanceSpec['inSandboxApi']>['handler'],
  listen: Omit<NetnsListenOptions, 'port'>,
): Promise<InSandboxApiServer> {
  return serveInSandboxApi(handler, await listenInNetns({ ...listen, port: API_PORT }));
}
