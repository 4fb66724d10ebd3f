/**
 * Swarm spawn (issue 16, ADR 0140): what the in-sandbox `/v1/swarm/*` routes call, bound to one parent execution,
 * and the tree view `GET /v1/swarms/{rootId}` answers. The spawning itself (limits, authority ceiling, the shared
 * queue) is `SwarmHost.spawnChild`, which app/executions.ts implements; this file checks the request body and
 * shapes what the model reads.
 */
import { AegisError } from '../domain/errors.ts';
import { type ExecutionRecord, isTerminal, type Violation } from '../domain/execution.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import type { LlmUsageTotals } from './llm-gateway.ts';
import type { InSandboxHandler } from './ports.ts';
import type { MessageView, SwarmBus } from './swarm-bus.ts';
import type { InSandboxBus } from './swarm-bus-access.ts';
import type { LockView, SwarmLocks } from './swarm-locks.ts';

/** The longest a spawn with `wait` blocks (the child keeps running after; poll `GET /v1/swarm/children/{id}`). */
export const MAX_SPAWN_WAIT_MS = 10 * 60_000;
/** @default how long a spawn with `wait` blocks without `timeout`. */
export const DEFAULT_SPAWN_WAIT_MS = 60_000;

export interface SpawnChildRequest {
  readonly agent: string;
  readonly input: unknown;
}

/** What runs the parent: it spawns, waits for and reads children (app/executions.ts). */
export interface SwarmHost {
  /** Starts a child of `parent` (refused: an AegisError the model can read, and `onRefused` told). */
  spawnChild(
    parent: SwarmParent,
    request: SpawnChildRequest,
    onRefused: (violation: Violation) => void,
  ): Promise<ExecutionRecord>;
  /** The record as it is once terminal or after `timeoutMs`. */
  waitFor(id: string, timeoutMs: number, signal?: AbortSignal): Promise<ExecutionRecord>;
  getExecution(id: string): Promise<ExecutionRecord | undefined>;
}

/** The parent as it runs: its record and its (already narrowed) compiled manifest. */
export interface SwarmParent {
  readonly record: ExecutionRecord;
  readonly agent: CompiledAgent;
  readonly requestedBy?: string;
  /** What the parent has spent on models so far (its children get its budget minus this). */
  readonly spent?: () => LlmUsageTotals | undefined;
}

/** A child as the parent sees it. */
export interface ChildView {
  readonly id: string;
  readonly agent: string;
  readonly status: ExecutionRecord['status'];
  readonly done: boolean;
  readonly reason: string | null;
  readonly output: unknown;
}

/** The spawn half of `/v1/swarm/*`, bound to one parent execution. */
export interface InSandboxSpawn {
  spawn(body: unknown): Promise<ChildView>;
  child(id: string): Promise<ChildView>;
}

/** Everything `/v1/swarm/*` calls for one execution: spawn and children (here), bus and locks (swarm-bus-access.ts). */
export type InSandboxSwarm = InSandboxSpawn & InSandboxBus;

/**
 * The swarm as runAgent serves it: one handler chain for `/v1/swarm/*` (adapters/swarm/http-handler.ts), the bus and
 * locks over the server's store (adapters/swarm/wiring.ts), and the host that spawns (app/executions.ts adds it).
 */
export interface SwarmWiring {
  readonly handlerFor: (
    token: string,
    swarm: InSandboxSwarm,
    next: InSandboxHandler | undefined,
  ) => InSandboxHandler;
  readonly newToken: () => string;
  readonly host: SwarmHost;
  readonly bus: SwarmBus;
  readonly locks: SwarmLocks;
  /** The swarm of an execution: its root's id (`swarmIdOf`: `rootId ?? id`), so a parent and its children share. */
  readonly swarmOf: (executionId: string) => Promise<string>;
  /** This node's id (cluster), or null. */
  readonly nodeId: string | null;
}

export function childView(record: ExecutionRecord): ChildView {
  return {
    id: record.id,
    agent: record.agent.name,
    status: record.status,
    done: isTerminal(record.status),
    reason: record.reason,
    output: record.output,
  };
}

/** The spawn API of one parent. `signal`: the parent's run (a wait ends with it). */
export function executionSpawn(
  host: SwarmHost,
  parent: SwarmParent,
  options: { readonly onRefused: (violation: Violation) => void; readonly signal?: AbortSignal },
): InSandboxSpawn {
  return {
    async spawn(body) {
      const request = parseSpawnBody(body);
      const record = await host.spawnChild(
        parent,
        { agent: request.agent, input: request.input },
        options.onRefused,
      );
      if (!request.wait) return childView(record);
      return childView(await host.waitFor(record.id, request.timeoutMs, options.signal));
    },
    async child(id) {
      const record = await host.getExecution(id);
      if (record === undefined || record.parentId !== parent.record.id) {
        throw new AegisError('NOT_FOUND', `execution ${id.slice(0, 80)} is not a child of this execution`, {
          hint: 'use the id aegis.swarm.spawn returned',
        });
      }
      return childView(record);
    },
  };
}

interface SpawnBody {
  readonly agent: string;
  readonly input: unknown;
  readonly wait: boolean;
  readonly timeoutMs: number;
}

function parseSpawnBody(body: unknown): SpawnBody {
  const usage = (message: string) =>
    new AegisError('USAGE', `swarm spawn: ${message}`, {
      hint: 'POST /v1/swarm/spawn {"agent": "researcher", "input": {...}, "wait": true, "timeout": 60}',
    });
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw usage('the body is a JSON object');
  const { agent, input, wait, timeout } = body as Record<string, unknown>;
  if (typeof agent !== 'string' || agent === '') throw usage('"agent" is the name of a deployed agent');
  if (wait !== undefined && typeof wait !== 'boolean') throw usage('"wait" is true or false');
  if (
    timeout !== undefined &&
    (typeof timeout !== 'number' || !(timeout > 0) || timeout * 1000 > MAX_SPAWN_WAIT_MS)
  )
    throw usage(`"timeout" is seconds to wait, more than 0 and at most ${MAX_SPAWN_WAIT_MS / 1000}`);
  return {
    agent,
    input: input ?? null,
    wait: wait === true,
    timeoutMs: typeof timeout === 'number' ? Math.ceil(timeout * 1000) : DEFAULT_SPAWN_WAIT_MS,
  };
}

/** `GET /v1/swarms/{rootId}`: the root and every descendant, the bus's last messages and the swarm's locks. */
export interface SwarmTree {
  readonly root: string;
  readonly executions: readonly {
    readonly id: string;
    readonly parentId: string | null;
    readonly agent: string;
    readonly status: ExecutionRecord['status'];
    readonly reason: string | null;
    readonly createdAt: string;
    readonly finishedAt: string | null;
    readonly node: string | null;
  }[];
  /** The last messages (at most 100) over all topics, oldest first: metadata, never content. */
  readonly messages: readonly MessageView[];
  readonly locks: readonly LockView[];
}

export function swarmTree(
  root: ExecutionRecord,
  descendants: readonly ExecutionRecord[],
  bus: { readonly messages: readonly MessageView[]; readonly locks: readonly LockView[] } = {
    messages: [],
    locks: [],
  },
): SwarmTree {
  return {
    root: root.id,
    executions: [root, ...descendants].map((r) => ({
      id: r.id,
      parentId: r.parentId ?? null,
      agent: r.agent.name,
      status: r.status,
      reason: r.reason,
      createdAt: r.createdAt,
      finishedAt: r.finishedAt,
      node: r.node ?? null,
    })),
    messages: bus.messages,
    locks: bus.locks,
  };
}
