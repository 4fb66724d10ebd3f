/**
 * The ledger data of an egress decision and of a secret use, the same for executions (run-agent.ts) and live
 * sandboxes (live-sandboxes.ts). `clean` redacts secret values from everything the sandbox or a host could have
 * put in a field.
 */
import type { NetworkConnectData, SecretUseData } from '../domain/audit/entry.ts';
import type { NetworkDecisionEvent, SecretUseEvent } from './ports.ts';

export function networkConnectData(
  event: NetworkDecisionEvent,
  clean: (text: string) => string,
): NetworkConnectData {
  return {
    requested: clean(event.requested),
    host: event.host === null ? null : clean(event.host),
    resolved: [...event.resolved],
    address: event.address,
    port: event.port,
    protocol: event.protocol,
    rule: event.rule,
    verdict: event.verdict,
    reason: clean(event.reason),
    error: event.error === undefined ? null : clean(event.error),
    bytesUp: event.bytesUp,
    bytesDown: event.bytesDown,
  };
}

export function secretUseData(use: SecretUseEvent, clean: (text: string) => string): SecretUseData {
  return {
    name: use.name,
    host: clean(use.host),
    port: use.port,
    injected: use.injected,
    where: use.where,
    reason: use.reason ?? null,
  };
}
