/**
 * The egress proxy of one instance, wired the same way for every runtime: decisions go to the instance's current
 * route (bind() re-points a pooled instance), and with secrets the plain-HTTP rewriter and response scrubber are on.
 * The runtime opens the proxy's listener where its agent can reach it (the sandbox: inside its network namespace).
 */
import type {
  InstanceBinding,
  InstanceId,
  InstanceSpec,
  InstanceState,
  NetworkDecisionEvent,
} from '../../../app/ports.ts';
import { AegisError } from '../../../domain/errors.ts';
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';
import type { NetworkPolicy } from '../../../domain/policy/network-rules.ts';
import { listenInNetns, type NetnsListenOptions } from '../../egress/netns-listener.ts';
import { EgressProxy } from '../../egress/proxy.ts';
import { HttpSecretScrubber } from '../../secrets/http-response-scrubber.ts';
import { HttpSecretRewriter } from '../../secrets/http-secret-rewriter.ts';
import { PROXY_PORT } from './environment.ts';

/** Where an instance's egress decisions go: the spawn's execution, or the binding's (pooled instances). */
export interface Route {
  executionId: string;
  onNetworkDecision: InstanceSpec['onNetworkDecision'];
}

export function createEgressProxy(
  agent: CompiledAgent,
  executionId: string,
  secrets: InstanceSpec['secrets'],
  route: Route,
): EgressProxy {
  return new EgressProxy({
    execution: executionId,
    policy: agent.network.policy,
    // Through `route`: bind() re-points a pooled instance at its execution (the event's own `execution`
    // stamp is restamped with it too).
    onDecision: (event) => {
      const restamped: NetworkDecisionEvent & { execution: string } = {
        ...event,
        execution: route.executionId,
      };
      route.onNetworkDecision?.(restamped);
    },
    // Plain-HTTP requests only (CONNECT/SOCKS streams are opaque): placeholders → values toward bound hosts.
    // Requests toward a bound host:port are upgraded to TLS upstream (port 80 → 443, certificate verified for
    // the host); other hops get values only when they are loopback/private IP literals (the cleartext guard).
    // Content-Length bodies (up to the rewriter's cap) are buffered and rewritten too; other bodies stream.
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
            // Every plain-HTTP response, from any host: a value reflected by upstream comes back as its
            // placeholder (ADR 0018).
            scrubHttpResponse: new HttpSecretScrubber({
              placeholders: secrets.placeholders,
              onSecretUse: (use) => secrets.onSecretUse(use),
            }),
          };
        })()
      : {}),
  });
}

/**
 * The instance's egress proxy, served on PROXY_PORT inside the network namespace of `listen.pid` (the sandbox's,
 * container's or gVisor launcher's first process) — every runtime's agents reach it at the same address. Closes the
 * proxy again when the listener cannot be opened.
 */
export async function openEgressInNetns(
  agent: CompiledAgent,
  executionId: string,
  secrets: InstanceSpec['secrets'],
  route: Route,
  listen: Omit<NetnsListenOptions, 'port'>,
): Promise<EgressProxy> {
  const proxy = createEgressProxy(agent, executionId, secrets, route);
  try {
    const servers = await listenInNetns({ ...listen, port: PROXY_PORT });
    for (const server of servers) proxy.serve(server);
  } catch (error) {
    await proxy.close().catch(() => {});
    throw error;
  }
  return proxy;
}

/** What `bindWarm` and `setPolicyOfExecution` need of a runtime's instance. */
export interface RoutedInstance {
  bound: boolean;
  readonly route: Route;
  readonly proxy: EgressProxy | undefined;
}

/** `Runtime.bind` for runtimes whose pooled instances route egress decisions: a Warm, unbound instance only. */
export function bindWarm(
  id: InstanceId,
  instance: RoutedInstance | undefined,
  state: InstanceState | undefined,
  binding: InstanceBinding,
): void {
  if (!instance) throw new AegisError('NOT_FOUND', `no instance ${id}`);
  if (state !== 'warm')
    throw new AegisError('USAGE', `instance ${id} is ${state}; only a Warm instance can be bound`);
  if (instance.bound) {
    throw new AegisError(
      'USAGE',
      `instance ${id} is already bound to execution ${instance.route.executionId}`,
    );
  }
  instance.bound = true;
  instance.route.executionId = binding.executionId;
  instance.route.onNetworkDecision = binding.onNetworkDecision;
}

/** `Runtime.setNetworkPolicy`: the live instance of `executionId` with an egress proxy gets the new rules. */
export function setPolicyOfExecution(
  instances: Iterable<RoutedInstance>,
  executionId: string,
  policy: NetworkPolicy,
): boolean {
  for (const instance of instances) {
    if (instance.route.executionId === executionId && instance.proxy) {
      instance.proxy.setPolicy(policy);
      return true;
    }
  }
  return false;
}
