/**
 * The swarm bus and locks as one execution reaches them from inside its sandbox (`/v1/swarm/*` but spawn, served by
 * adapters/swarm/http-handler.ts): bodies are checked here, the caller (execution, agent, swarm, node) is fixed by
 * runAgent — an agent never names the swarm it talks to. Units on the wire are seconds (`ttl`, `wait`, `timeout`).
 */
import { AegisError } from '../domain/errors.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import type { SwarmWiring } from './swarm.ts';
import type { SwarmCaller } from './swarm-bus.ts';

export type BusOp = 'publish' | 'subscribe' | 'lock' | 'unlock' | 'renew' | 'fence';
export const BUS_OPS: readonly BusOp[] = ['publish', 'subscribe', 'lock', 'unlock', 'renew', 'fence'];

/** The bus-and-locks half of `/v1/swarm/*`, bound to one execution. */
export type InSandboxBus = Record<BusOp, (body: unknown, signal?: AbortSignal) => Promise<unknown>>;

export interface ExecutionBusContext {
  readonly agent: CompiledAgent;
  readonly executionId: string;
  readonly swarmId: string;
  /** A refused request: the caller audits it (`api.denied`). */
  readonly onDenied: (op: string, reason: string) => void;
}

function object(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new AegisError('USAGE', 'the body must be a JSON object');
  return body as Record<string, unknown>;
}

function seconds(value: unknown, field: string, fallback: number, max: number): number {
  if (value === undefined || value === null) return fallback * 1000;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > max)
    throw new AegisError('USAGE', `${field} must be a number of seconds between 0 and ${max}`, {
      details: { field },
    });
  return Math.round(value * 1000);
}

function wholeNumber(value: unknown, field: string, fallback?: number): number {
  if (value === undefined && fallback !== undefined) return fallback;
  const n = typeof value === 'string' && /^\d{1,15}$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0)
    throw new AegisError('USAGE', `${field} must be a whole number ≥ 0`, { details: { field } });
  return n;
}

/** The in-sandbox bus and locks of one execution. */
export function executionBus(
  wiring: Pick<SwarmWiring, 'bus' | 'locks' | 'nodeId'>,
  context: ExecutionBusContext,
): InSandboxBus {
  const caller: SwarmCaller = {
    executionId: context.executionId,
    agent: context.agent.name,
    swarmId: context.swarmId,
    swarm: context.agent.swarm,
    nodeId: wiring.nodeId,
  };
  const { bus, locks } = wiring;
  const denied = context.onDenied;
  return {
    async publish(body) {
      const b = object(body);
      return bus.publish(caller, b['topic'] as string, b['message'], denied);
    },
    async subscribe(body, signal) {
      const b = object(body);
      return bus.subscribe(
        caller,
        b['topic'] as string,
        {
          after: wholeNumber(b['after'] ?? undefined, 'after', 0),
          limit: wholeNumber(b['limit'], 'limit', 100),
          timeoutMs: seconds(b['timeout'], 'timeout', 0, 60),
          ...(signal ? { signal } : {}),
        },
        denied,
      );
    },
    async lock(body, signal) {
      const b = object(body);
      const lease = await locks.lock(
        caller,
        b['name'] as string,
        {
          ttlMs: Math.max(1, seconds(b['ttl'], 'ttl', 30, 3600)),
          waitMs: seconds(b['wait'], 'wait', 30, 600),
          global: b['global'] === true,
          ...(signal ? { signal } : {}),
        },
        denied,
      );
      return {
        name: lease.name,
        token: lease.token,
        expiresAt: lease.expiresAt,
        global: b['global'] === true,
      };
    },
    async unlock(body) {
      const b = object(body);
      await locks.release(
        caller,
        b['name'] as string,
        wholeNumber(b['token'], 'token'),
        {
          global: b['global'] === true,
        },
        denied,
      );
      return { name: b['name'], released: true };
    },
    async renew(body) {
      const b = object(body);
      const lease = await locks.renew(
        caller,
        b['name'] as string,
        wholeNumber(b['token'], 'token'),
        { ttlMs: Math.max(1, seconds(b['ttl'], 'ttl', 30, 3600)), global: b['global'] === true },
        denied,
      );
      return { name: lease.name, token: lease.token, expiresAt: lease.expiresAt };
    },
    async fence(body) {
      const b = object(body);
      return locks.checkFence(
        caller,
        b['name'] as string,
        wholeNumber(b['token'], 'token'),
        {
          global: b['global'] === true,
        },
        denied,
      );
    },
  };
}
