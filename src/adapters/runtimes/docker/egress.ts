/**
 * The egress proxy of one container: the same EgressProxy, policy, secret rewriter and response scrubber the
 * `sandbox` runtime uses, served on a listener opened inside the container's network namespace.
 * (A minimal twin of the block inside sandbox/runtime.ts spawn(); to be unified once that file is split.)
 */
import type { InstanceSpec, NetworkDecisionEvent } from '../../../app/ports.ts';
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';
import { listenInNetns } from '../../egress/netns-listener.ts';
import { EgressProxy } from '../../egress/proxy.ts';
import { HttpSecretScrubber } from '../../secrets/http-response-scrubber.ts';
import { HttpSecretRewriter } from '../../secrets/http-secret-rewriter.ts';

/** Where the proxy listens on the container's own lo (same as the sandbox). */
export const PROXY_PORT = 3128;
const PROXY_URL = `http://127.0.0.1:${PROXY_PORT}`;

/** Environment pointing HTTP clients at the proxy (the sandbox's PROXY_ENV). */
export const PROXY_ENV: Readonly<Record<string, string>> = {
  HTTP_PROXY: PROXY_URL,
  HTTPS_PROXY: PROXY_URL,
  http_proxy: PROXY_URL,
  https_proxy: PROXY_URL,
  ALL_PROXY: `socks5h://127.0.0.1:${PROXY_PORT}`,
  all_proxy: `socks5h://127.0.0.1:${PROXY_PORT}`,
  NODE_USE_ENV_PROXY: '1',
};

export interface Route {
  executionId: string;
  onNetworkDecision: InstanceSpec['onNetworkDecision'];
}

/** Starts the proxy for `agent` and serves it inside the network namespace of `pid` (the container's init). */
export async function openEgress(options: {
  readonly agent: CompiledAgent;
  readonly executionId: string;
  readonly secrets: InstanceSpec['secrets'];
  readonly route: Route;
  readonly pid: number;
  readonly nsenterPath?: string;
  readonly timeoutMs: number;
}): Promise<EgressProxy> {
  const { agent, secrets, route } = options;
  const proxy = new EgressProxy({
    execution: options.executionId,
    policy: agent.network.policy,
    onDecision: (event) => {
      const restamped: NetworkDecisionEvent & { execution: string } = {
        ...event,
        execution: route.executionId,
      };
      route.onNetworkDecision?.(restamped);
    },
    ...(secrets
      ? (() => {
          const rewriter = new HttpSecretRewriter({
            bindings: agent.secrets,
            placeholders: secrets.placeholders,
            onSecretUse: (use) => secrets.onSecretUse(use),
          });
          return {
            rewriteHttpRequest: rewriter.rewriteHead,
            rewriteHttpBody: rewriter.bodyHook,
            upgradeHttpToTls: rewriter.upgradesToTls,
            scrubHttpResponse: new HttpSecretScrubber({
              placeholders: secrets.placeholders,
              onSecretUse: (use) => secrets.onSecretUse(use),
            }),
          };
        })()
      : {}),
  });
  try {
    const servers = await listenInNetns({
      pid: options.pid,
      port: PROXY_PORT,
      ...(options.nsenterPath ? { nsenterPath: options.nsenterPath } : {}),
      timeoutMs: options.timeoutMs,
    });
    for (const server of servers) proxy.serve(server);
  } catch (error) {
    await proxy.close().catch(() => {});
    throw error;
  }
  return proxy;
}
