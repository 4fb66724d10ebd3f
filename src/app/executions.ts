/**
 * Use-cases for executions on a server node: accept (durably, as `queued`, before answering), run with a
 * concurrency limit, cancel, wait, list — and recover after a crash or a node's death.
 *
 * The queue is the store (docs/adr/0101-cluster-claims-and-fencing.md): every node of a cluster claims queued
 * executions up to its free slots (placement labels, runtime, per-agent maxConcurrent), renews its lease by a
 * heartbeat, and writes each claimed execution only under its fence. Each node also sweeps: a node whose lease
 * expired is declared dead and its executions are taken over — `failed` (node-lost) or queued again
 * (`spec.scaling.retryOnNodeLoss`). Backpressure, never drops: the shared queue is bounded (QUEUE_FULL).
 */

import { AUDIT_KINDS } from '../domain/audit/entry.ts';
import { type LifecycleCoverage, missingEntries } from '../domain/audit/store-check.ts';
import { type Principal, requireScope } from '../domain/auth/api-key.ts';
import {
  type ClaimedExecution,
  type ExecutionFence,
  leaseExpired,
  type NodeIdentity,
  type NodeLabels,
  type NodeLossCause,
  nodeLossCause,
  nodeLostReason,
} from '../domain/cluster/node.ts';
import {
  type AgentRevision,
  formatAgentSelector,
  parseAgentSelector,
  resolveRevision,
} from '../domain/deployment.ts';
import { AegisError, isAegisError } from '../domain/errors.ts';
import {
  type ExecutionRecord,
  type ExecutionStatus,
  isTerminal,
  type Violation,
} from '../domain/execution.ts';
import { checkInputDepth } from '../domain/input-bounds.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import { inputValidator } from '../domain/manifest/input-schema.ts';
import type { AuthorityCeiling } from '../domain/swarm/authority.ts';
import { ceilingOf, llmLeftOf, mayStart, narrowAgent, narrowedAway } from '../domain/swarm/narrow.ts';
import type { LoopJudge } from './agent-loop.ts';
import { loadRevision, notFoundAgent } from './agents.ts';
import type { ExecutionEvents } from './execution-events.ts';
import type { ToolsWiring } from './live-sandboxes.ts';
import type { LlmWiring } from './llm-wiring.ts';
import type { MemoryWiring } from './memory-access.ts';
import type {
  AgentBundles,
  AuditLog,
  ChildLimits,
  Clock,
  ExecutionMetrics,
  ExecutionStore,
  Ids,
  ListExecutionsQuery,
  ProcessIdentity,
  Runtime,
  SecretRandom,
  SecretStore,
  Store,
  Timer,
  Tracer,
} from './ports.ts';
import { createdAuditData, type DeclarativeWiring, runAgent } from './run-agent.ts';
import {
  type SpawnChildRequest,
  type SwarmHost,
  type SwarmParent,
  type SwarmTree,
  type SwarmWiring,
  swarmTree,
} from './swarm.ts';
import type { WarmPools } from './warm-pools.ts';

export interface ExecutionsDeps {
  /** The LLM gateway (agents with spec.llm). */
  readonly llm?: LlmWiring;
  /** The tool gateway (agents with spec.tools): MCP tools from one-shot executions; built-ins need a live sandbox. */
  readonly tools?: ToolsWiring;
  readonly runtime: Runtime;
  readonly store: Store;
  readonly bundles: AgentBundles;
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly ids: Pick<Ids, 'executionId'>;
  readonly identity: ProcessIdentity;
  readonly events: ExecutionEvents;
  readonly metrics: ExecutionMetrics;
  readonly secrets?: SecretStore;
  readonly random?: SecretRandom;
  /** Warm pools; without them every execution starts cold. */
  readonly pools?: WarmPools;
  /** Execution and model-call spans (OpenTelemetry when configured). */
  readonly tracer?: Tracer;
  /** Declarative agents (spec.task): the loop's runtime and tools. */
  readonly loop?: DeclarativeWiring;
  /** Cortex (agents with spec.memory): in-sandbox memory API, indexing, recall (app/memory-access.ts). */
  readonly memory?: MemoryWiring;
  /**
   * Swarm (`/v1/swarm/*` in the in-sandbox API: spawn, bus, locks; adapters/swarm/wiring.ts) — this class adds the
   * spawning host. An orphaned execution's leases end when it is settled (its node died). Absent: no swarm API.
   */
  readonly swarm?: Omit<SwarmWiring, 'host'>;
  /** This node (ADR 0100). @default `{nodeId: 'local', labels: {}}` */
  readonly node?: NodeIdentity;
  /** What the registry shows (`aegis nodes ls`). */
  readonly version?: string;
  /**
   * Called when this node finds itself fenced out (declared dead while paused or partitioned) after it aborted its
   * executions: reap what else it holds (live sandboxes), before it registers again.
   */
  readonly onFencedOut?: () => Promise<void>;
  /**
   * Called after this node's sweep declared another node dead (it won `declareNodeDead`): settle what else that
   * node held (its live sandboxes become `terminated`, node-lost).
   */
  readonly onNodeDead?: (nodeId: string) => Promise<unknown>;
  /** Log events (JSON-able). */
  readonly log?: (entry: Record<string, unknown>) => void;
  /**
   * Claims this node makes on behalf of the nodes it runs work for — edge nodes connected to it (ADR 0108): each
   * with the edge's labels, its runtimes and free capacity. Such executions hold none of this node's own slots.
   */
  readonly delegates?: () => readonly DelegateClaim[];
}

/** One claim on behalf of another node (an edge): its labels, runtimes (`edge`) and free capacity. */
export interface DelegateClaim {
  readonly labels: NodeLabels;
  readonly runtimes: readonly string[];
  readonly limit: number;
}

export interface ExecutionsOptions {
  /** Executions running at once on this node. */
  readonly maxConcurrent: number;
  /** Executions waiting for a slot; beyond it, QUEUE_FULL. */
  readonly maxQueued: number;
  /** A node that has not heartbeated for this long is declared dead by the others. @default 10 000 */
  readonly leaseMs?: number;
  /**
   * Interval of the lease renewal (with the cancel requests it returns) and, on a separate timer, of the sweep and
   * claim housekeeping. @default leaseMs / 3
   */
  readonly heartbeatMs?: number;
  /** Longest wait between two claim attempts of an idle node (polling backs off up to it). @default 2000 */
  readonly maxPollMs?: number;
  /** Runtimes this node offers (claims only executions recorded for one of them). @default [runtime.name] */
  readonly runtimes?: readonly string[];
}

export interface SubmitRequest {
  /** `name`, `name@revision` or `name@version`. */
  readonly agent: string;
  readonly input?: unknown;
}

export interface ExecutionStats {
  readonly running: number;
  readonly queued: number;
  readonly maxConcurrent: number;
  readonly maxQueued: number;
  readonly accepting: boolean;
}

interface Job {
  record: ExecutionRecord;
  /** Claimed for a delegate (an edge): runs there, holds none of this node's slots. */
  readonly delegated?: boolean;
  readonly fence: ExecutionFence;
  readonly controller: AbortController;
  readonly done: Promise<void>;
}

/**
 * How deep `judge` validators nest: a judged execution's judge runs (depth 1), but a judge's own judge validator is
 * refused (CONFLICT) — a judge chain would spend one more slot, sandbox and budget per level.
 */
export const MAX_JUDGE_DEPTH = 1;

const REMOTE_CANCEL = 'cancelled through another node of the cluster';
const FENCED_OUT =
  'node-fenced-out: this node was declared dead (its lease expired) while it ran this execution; another node took it over';

/** A swarm child's submission: its place in the tree, its ceiling and the limits its insert is checked against. */
interface ChildSubmit {
  readonly parentId: string;
  readonly rootId: string;
  readonly authority: AuthorityCeiling;
  readonly limits: ChildLimits;
  readonly onLimit: (limit: 'maxChildren' | 'budget.executions', count: number) => never;
}

function least(...values: (number | null)[]): number | null {
  const set = values.filter((v): v is number => v !== null);
  return set.length === 0 ? null : Math.min(...set);
}

const RESTARTED =
  'orchestrator-restarted: the server stopped while this execution ran; its sandbox was reaped on restart';

export class Executions {
  readonly #deps: ExecutionsDeps;
  readonly #options: ExecutionsOptions;
  readonly #node: NodeIdentity;
  readonly #leaseMs: number;
  /** Queued executions in the shared queue, as last counted. */
  #queued = 0;
  /** This node's epoch since it (re-)registered; undefined before `recover()` and after `drain()`. */
  #epoch: number | undefined;
  /** Jobs in #running claimed for delegates (edges). */
  #delegated = 0;
  #claiming = false;
  #claimAgain = false;
  /** Fenced out, stopping its runs before it registers again: claims nothing meanwhile. */
  #rejoining = false;
  /**
   * Until when this node's lease is surely valid by its own clock: the start of its last successful registration or
   * heartbeat plus the lease. Past it, other nodes may have declared it dead and taken its claims over.
   */
  #leaseValidUntil = 0;
  #pollMs = 250;
  #pollTimer: Timer | undefined;
  #heartbeatTimer: Timer | undefined;
  /** Lease renewal runs on a timer of its own: a slow sweep or claim never delays it past the lease. */
  #renewTimer: Timer | undefined;
  #beating: Promise<void> | undefined;
  #renewing: Promise<void> | undefined;
  #unsubscribe: (() => void) | undefined;
  /** Who asked for each queued execution (server LLM budgets per key); recovered ones read it from the ledger. */
  readonly #requestedBy = new Map<string, string>();
  /** Compiled manifests by bundle digest (revisions are immutable); bounded. */
  readonly #compiled = new Map<string, CompiledAgent>();
  /** Revisions by `name@revision`, as resolved at submit; bounded. */
  readonly #revisions = new Map<string, AgentRevision>();
  /** `spec.scaling.maxConcurrent` per agent name, as of the revision last submitted or run. */
  readonly #agentLimits = new Map<string, number | null>();
  readonly #running = new Map<string, Job>();
  /** Submissions between the capacity check and the enqueue (async store writes in between). */
  #reserved = 0;
  /** Judge executions (validator `judge`) by id: the execution they judge and their depth. */
  readonly #judges = new Map<string, { readonly of: string; readonly depth: number }>();
  /** Running executions now waiting for their judge: each lends its slot (no deadlock at maxConcurrent). */
  #lent = 0;
  #accepting = true;

  constructor(deps: ExecutionsDeps, options: ExecutionsOptions) {
    this.#deps = deps;
    this.#options = options;
    this.#node = deps.node ?? { nodeId: 'local', labels: {} };
    this.#leaseMs = options.leaseMs ?? 10_000;
  }

  /** This node's id and its current epoch (undefined while not registered). */
  nodeState(): { readonly nodeId: string; readonly epoch: number | undefined } {
    return { nodeId: this.#node.nodeId, epoch: this.#epoch };
  }

  stats(): ExecutionStats {
    return {
      running: this.#running.size,
      queued: this.#queued,
      maxConcurrent: this.#options.maxConcurrent,
      maxQueued: this.#options.maxQueued,
      accepting: this.#accepting,
    };
  }

  submit(principal: Principal, request: SubmitRequest): Promise<ExecutionRecord> {
    return this.#submit(principal, request, undefined);
  }

  async #submit(
    principal: Principal,
    request: SubmitRequest,
    judge: { readonly of: string; readonly depth: number } | undefined,
    child?: ChildSubmit,
  ): Promise<ExecutionRecord> {
    requireScope(principal, 'execute', 'starting an execution');
    checkInputDepth(request.input);
    if (!this.#accepting) {
      throw new AegisError('UNAVAILABLE', 'the server is shutting down and accepts no new executions', {
        hint: 'retry against another node or after the restart',
      });
    }
    this.#reserved++;
    try {
      const { store, clock, identity, audit, runtime } = this.#deps;
      // The shared queue (every node's submissions) is what is bounded.
      this.#queued = await store.countQueued();
      if (this.#queued + this.#reserved - 1 >= this.#options.maxQueued) {
        throw new AegisError(
          'QUEUE_FULL',
          `the execution queue is full (${this.#options.maxQueued} waiting, ${this.#running.size} running here); nothing was created`,
          {
            hint: 'retry later; operators can raise --max-queued or --max-concurrent, or add nodes',
            details: { queued: this.#queued, running: this.#running.size, retryAfterMs: 1000 },
          },
        );
      }
      const selector = parseAgentSelector(request.agent, 'agent');
      const summary = await store.getAgent(selector.name);
      if (summary === undefined) throw notFoundAgent(selector.name);
      const revisions = await store.listRevisions(selector.name);
      const revision = resolveRevision(summary, revisions, selector);
      if (revision === undefined) {
        throw new AegisError(
          'NOT_FOUND',
          `agent ${selector.name} has no revision ${formatAgentSelector(selector)}`,
          {
            hint: `revisions: ${revisions
              .slice(0, 10)
              .map((r) => `${r.revision} (${r.version})`)
              .join(', ')}`,
          },
        );
      }
      const agent = await this.#compiledFor(revision);
      // Refused before anything is stored or audited, like any other malformed request.
      if (agent.input) inputValidator(agent.input, agent.name).check(request.input ?? null);
      // Placement sees every edge of the cluster, also those enrolled through another server since this one started.
      if (agent.placement) await runtime.refreshPlacement?.();
      const runtimeName = runtime.nameFor?.(agent) ?? runtime.name;
      const record: ExecutionRecord = {
        id: this.#deps.ids.executionId(),
        agent: { name: agent.name, version: agent.version, revision: revision.revision },
        runtime: runtimeName,
        status: 'queued',
        exitCode: null,
        reason: null,
        input: request.input ?? null,
        output: null,
        violations: [],
        createdAt: new Date(clock.now()).toISOString(),
        startedAt: null,
        finishedAt: null,
        durationMs: null,
        owner: identity.current(),
        ...(agent.placement ? { placement: agent.placement.labels } : {}),
        // A judge goes first: the execution it judges waits for it and lends it its slot.
        ...(judge ? { priority: 1 } : {}),
        ...(child ? { parentId: child.parentId, rootId: child.rootId, authority: child.authority } : {}),
      };
      if (child === undefined) await store.createExecution(record);
      else {
        const inserted = await store.createChildExecution(record, child.limits);
        if (!inserted.ok) child.onLimit(inserted.limit, inserted.count);
      }
      audit.append(
        AUDIT_KINDS.executionCreated,
        record.id,
        createdAuditData(agent, runtimeName, {
          revision: revision.revision,
          requestedBy: principal.id,
          ...(judge ? { judgeOf: judge.of } : {}),
        }),
      );
      // Not acknowledged before its `execution.created` entry is durable (the next group commit, shared with
      // concurrent requests). A crash before this leaves a stored execution nobody was told about; recovery
      // records it (`execution.recovered`).
      await audit.durable();
      this.#requestedBy.set(record.id, principal.id);
      if (judge) this.#judges.set(record.id, judge);
      this.#queued++;
      this.#pump();
      // Wake idle nodes (best effort: they poll too).
      store.signal('queue', record.id).catch(() => {});
      return record;
    } finally {
      this.#reserved--;
    }
  }

  async get(principal: Principal, id: string): Promise<ExecutionRecord> {
    requireScope(principal, 'read', 'reading an execution');
    const record = await this.#deps.store.getExecution(id);
    if (record === undefined) {
      throw new AegisError('NOT_FOUND', `no execution ${id}`, {
        hint: 'list executions with `aegis ps` or GET /v1/executions',
      });
    }
    return record;
  }

  async list(principal: Principal, query: ListExecutionsQuery): Promise<readonly ExecutionRecord[]> {
    requireScope(principal, 'read', 'listing executions');
    return this.#deps.store.listExecutions(query);
  }

  /**
   * Waits until the execution is terminal or `timeoutMs` passes; returns the record as it is then (check
   * `isTerminal(record.status)`).
   */
  async wait(
    principal: Principal,
    id: string,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<ExecutionRecord> {
    const { events, clock } = this.#deps;
    // Subscribed before the first read: a status change between the read and the wait still wakes us.
    let changed = false;
    let wake: (() => void) | undefined;
    const unsubscribe = events.subscribe(id, (event) => {
      if (event !== 'status') return;
      changed = true;
      wake?.();
    });
    try {
      const deadline = clock.now() + timeoutMs;
      for (;;) {
        changed = false;
        const record = await this.get(principal, id);
        const left = deadline - clock.now();
        if (isTerminal(record.status) || left <= 0 || signal?.aborted) return record;
        if (changed) continue;
        await new Promise<void>((resolve) => {
          const timer = clock.setTimeout(done, Math.min(left, 500));
          function done() {
            timer.cancel();
            signal?.removeEventListener('abort', done);
            wake = undefined;
            resolve();
          }
          wake = done;
          signal?.addEventListener('abort', done, { once: true });
        });
      }
    } finally {
      unsubscribe();
    }
  }

  /** Cancels a queued or running execution; CONFLICT when it has already ended. Resolves with the final record. */
  async cancel(principal: Principal, id: string): Promise<ExecutionRecord> {
    requireScope(principal, 'execute', 'cancelling an execution');
    const record = await this.get(principal, id);
    if (isTerminal(record.status)) {
      throw new AegisError('CONFLICT', `execution ${id} has already ended (${record.status})`, {
        details: { status: record.status },
      });
    }
    const reason = `cancelled by ${principal.id}`;
    const { audit, store, clock, events } = this.#deps;
    const job = this.#running.get(id);
    if (job !== undefined) {
      audit.append(AUDIT_KINDS.executionCancelled, id, { by: principal.id, status: record.status });
      job.controller.abort(reason);
      await job.done;
      return this.get(principal, id);
    }
    if (record.status === 'queued') {
      // Nobody holds it: one conditional write (a node claiming it at the same moment loses, or we do).
      const final = await store.updateQueuedExecution(id, {
        status: 'killed',
        reason: `${reason} before it started`,
        finishedAt: new Date(clock.now()).toISOString(),
      });
      if (final !== undefined) {
        this.#requestedBy.delete(id);
        this.#judges.delete(id);
        audit.append(AUDIT_KINDS.executionCancelled, id, { by: principal.id, status: 'queued' });
        audit.append(AUDIT_KINDS.executionFinished, id, {
          status: 'killed',
          exitCode: null,
          reason: `${reason} before it started`,
          durationMs: null,
        });
        await audit.flush();
        this.#deps.metrics.executionFinished('killed');
        events.emit(id, 'status');
        store.signal('status', id).catch(() => {});
        return final;
      }
    }
    // Another node holds it (or claimed it just now): flag it; its holder aborts it at its next signal or heartbeat.
    if (!(await store.requestCancel(id))) return this.get(principal, id);
    audit.append(AUDIT_KINDS.executionCancelled, id, { by: principal.id, status: record.status });
    await store.signal('cancel', id).catch(() => {});
    const local = this.#running.get(id);
    if (local !== undefined) local.controller.abort(reason);
    return this.wait(principal, id, 2 * this.#leaseMs + 5000);
  }

  /**
   * On start: register this node (a new epoch: the executions of its previous life — same node id, any hostname —
   * become orphans), reap sandboxes dead processes left, then sweep: orphans (of this node's previous life, or of a
   * node whose lease expired) are settled — never started: back to the queue; started: `failed`
   * (`orchestrator-restarted` for our own, `node-lost` for another node's) or queued again when the agent sets
   * `spec.scaling.retryOnNodeLoss`. Node-less executions of a dead process (before the cluster migration) are
   * settled as before.
   *
   * Then the ledger is checked against the store: every execution the store knows whose `execution.created` or
   * (ended) `execution.finished` entry was lost — a crash before the group commit — gets an `execution.recovered`
   * entry saying what was missing and the status the store holds, so the two agree again.
   */
  async recover(): Promise<{ requeued: string[]; failed: string[]; reconciled: string[] }> {
    const { runtime, store, identity, audit, clock } = this.#deps;
    await runtime.reapOrphans();
    await this.#register();
    const me = identity.current();
    const requeued: string[] = [];
    const failed: string[] = [];
    const coverage = await audit.lifecycleCoverage();
    const recorded = new Set<string>();
    for (const record of await store.listUnfinished()) {
      // Claimed executions are the sweep's; queued ones any node claims.
      if (record.node !== undefined || record.status === 'queued') continue;
      const owner = record.owner;
      if (owner !== null && (isSameProcess(owner, me) || identity.isAlive(owner))) continue;
      audit.append(AUDIT_KINDS.executionRecovered, record.id, {
        status: 'failed',
        reason: RESTARTED,
        missing: missingEntries('failed', coverage.get(record.id)),
      });
      recorded.add(record.id);
      await store.updateExecution(record.id, {
        status: 'failed',
        reason: RESTARTED,
        finishedAt: new Date(clock.now()).toISOString(),
      });
      this.#deps.metrics.executionFinished('failed');
      failed.push(record.id);
    }
    const swept = await this.#sweep(coverage, recorded);
    requeued.push(...swept.requeued);
    failed.push(...swept.failed);
    const reconciled: string[] = [];
    // With other nodes in the cluster, an execution no node holds (queued, or cancelled while queued) may have its
    // entries in another node's chain not shipped yet (replication lag, or that node is down): only the executions
    // this node held are its to reconcile — never an `execution.recovered` for what another node created or settled.
    // Edge nodes keep no ledger of their own in the store (their server records their work).
    const alone = (await store.listNodes()).every(
      (node) => node.id === this.#node.nodeId || node.kind === 'edge',
    );
    for await (const record of allExecutions(store)) {
      if (recorded.has(record.id)) continue;
      // Another node's executions are in its ledger; live ones write their own entries.
      if (record.node !== undefined && record.node !== this.#node.nodeId) continue;
      if (record.node === undefined && !alone) continue;
      if (!isTerminal(record.status) && record.node !== undefined) continue;
      const owner = record.owner;
      if (
        !isTerminal(record.status) &&
        owner !== null &&
        !isSameProcess(owner, me) &&
        identity.isAlive(owner)
      ) {
        continue;
      }
      const missing = missingEntries(record.status, coverage.get(record.id));
      if (missing.length === 0) continue;
      audit.append(AUDIT_KINDS.executionRecovered, record.id, {
        status: record.status,
        reason: record.reason,
        missing,
      });
      reconciled.push(record.id);
    }
    await audit.flush();
    this.#pump();
    return { requeued, failed, reconciled };
  }

  /**
   * Graceful stop: accept nothing new (the node is `draining`: it still heartbeats, claims nothing), let running
   * executions finish until `deadlineMs`, then cancel the rest (`killed`, reason `orchestrator-shutdown`), and leave
   * the cluster. Queued executions stay queued in the store for any node.
   */
  async drain(deadlineMs: number): Promise<{ finished: number; cancelled: number; leftQueued: number }> {
    this.#accepting = false;
    const { store, clock } = this.#deps;
    const jobs = [...this.#running.values()];
    const all = Promise.all(jobs.map((job) => job.done));
    // The deadline starts now, before any store round trip.
    let timer: Timer | undefined;
    const deadline = new Promise<boolean>((resolve) => {
      timer = clock.setTimeout(() => resolve(true), deadlineMs);
    });
    const epoch = this.#epoch;
    if (epoch !== undefined) {
      await store
        .setNodeState(this.#node.nodeId, epoch, 'draining', new Date(clock.now()).toISOString())
        .catch(() => false);
    }
    const leftQueued = await store.countQueued().catch(() => this.#queued);
    const timedOut = await Promise.race([all.then(() => false), deadline]);
    timer?.cancel();
    let cancelled = 0;
    if (timedOut) {
      for (const job of this.#running.values()) {
        cancelled++;
        job.controller.abort('orchestrator-shutdown: the server stopped before this execution finished');
      }
      await Promise.all([...this.#running.values()].map((job) => job.done));
    }
    this.#stopTimers();
    await this.#renewing;
    await this.#beating;
    if (this.#epoch !== undefined) {
      await store
        .setNodeState(this.#node.nodeId, this.#epoch, 'dead', new Date(clock.now()).toISOString())
        .catch(() => false);
    }
    this.#epoch = undefined;
    return { finished: jobs.length - cancelled, cancelled, leftQueued };
  }

  // -------------------------------------------------------------------------------------------------------------
  // The node: registration, heartbeat, sweep, claims.

  async #register(): Promise<void> {
    const { store, clock, identity, runtime } = this.#deps;
    const asked = clock.now();
    const node = await store.registerNode({
      id: this.#node.nodeId,
      kind: 'server',
      labels: this.#node.labels,
      runtimes: this.#options.runtimes ?? [runtime.name],
      capacity: this.#options.maxConcurrent,
      host: identity.current().host,
      version: this.#deps.version ?? 'unknown',
      at: new Date(clock.now()).toISOString(),
      leaseMs: this.#leaseMs,
    });
    this.#epoch = node.epoch;
    this.#leaseValidUntil = asked + this.#leaseMs;
    const everyMs = this.#options.heartbeatMs ?? Math.max(1, Math.floor(this.#leaseMs / 3));
    // Two timers, two in-flight guards: the renewal must not wait behind a sweep (listing nodes, taking over and
    // settling orphans, settling a dead node's sandboxes) that may take longer than the lease on a loaded store.
    this.#renewTimer ??= clock.setInterval(() => this.renewLease(), everyMs, { background: true });
    this.#heartbeatTimer ??= clock.setInterval(() => this.#housekeep(), everyMs, { background: true });
    this.#unsubscribe ??= store.onSignal((topic, id) => {
      if (topic === 'queue') {
        this.#pollMs = 250;
        this.#pump();
      } else if (topic === 'cancel') {
        this.#running.get(id)?.controller.abort(REMOTE_CANCEL);
      } else if (topic === 'status' || topic === 'logs') {
        this.#deps.events.emit(id, topic);
      }
    });
    this.#schedulePoll();
  }

  #stopTimers(): void {
    this.#heartbeatTimer?.cancel();
    this.#heartbeatTimer = undefined;
    this.#renewTimer?.cancel();
    this.#renewTimer = undefined;
    this.#pollTimer?.cancel();
    this.#pollTimer = undefined;
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
  }

  /** Polling, the fallback of signals: quick while there is work, backing off to `maxPollMs` while idle. */
  #schedulePoll(): void {
    this.#pollTimer?.cancel();
    if (this.#epoch === undefined) return;
    this.#pollTimer = this.#deps.clock.setTimeout(
      () => {
        this.#pollTimer = undefined;
        this.#pump();
        this.#schedulePoll();
      },
      this.#pollMs,
      { background: true },
    );
  }

  /**
   * One heartbeat: renew the lease, then sweep and claim. The timers run the two apart (`renewLease` and the
   * housekeeping); tests call this to do both at once.
   */
  async heartbeat(): Promise<void> {
    await this.renewLease();
    await this.#housekeep();
  }

  /**
   * Renews this node's lease (fenced out: stop everything and register again) and aborts the executions someone
   * asked (through another node) to cancel. At most one renewal in flight; it never waits for a sweep.
   */
  renewLease(): Promise<void> {
    this.#renewing ??= this.#renew()
      .catch((error) => {
        this.#deps.log?.({ level: 'warn', msg: 'cluster lease renewal failed', error: String(error) });
      })
      .finally(() => {
        this.#renewing = undefined;
      });
    return this.#renewing;
  }

  /** Sweep (declare dead nodes dead, take over their executions), count the queue, claim. At most one in flight. */
  #housekeep(): Promise<void> {
    this.#beating ??= this.#sweepAndClaim()
      .catch((error) => {
        this.#deps.log?.({ level: 'warn', msg: 'cluster heartbeat failed', error: String(error) });
      })
      .finally(() => {
        this.#beating = undefined;
      });
    return this.#beating;
  }

  async #renew(): Promise<void> {
    const { store, clock } = this.#deps;
    const epoch = this.#epoch;
    if (epoch === undefined) return;
    const asked = clock.now();
    const beat = await store.heartbeatNode({
      nodeId: this.#node.nodeId,
      epoch,
      at: new Date(clock.now()).toISOString(),
      leaseMs: this.#leaseMs,
    });
    if (beat === undefined) {
      await this.#fencedOut(epoch);
      return;
    }
    if (this.#epoch === epoch) this.#leaseValidUntil = Math.max(this.#leaseValidUntil, asked + this.#leaseMs);
    for (const id of beat.cancelRequested) this.#running.get(id)?.controller.abort(REMOTE_CANCEL);
  }

  async #sweepAndClaim(): Promise<void> {
    if (this.#epoch === undefined) return;
    await this.#sweep();
    this.#queued = await this.#deps.store.countQueued();
    this.#pump();
  }

  /** Declared dead while we were away (paused, partitioned): stop what we ran, reap, register again. */
  async #fencedOut(epoch: number): Promise<void> {
    this.#epoch = undefined;
    this.#rejoining = true;
    this.#deps.log?.({
      level: 'error',
      msg: 'this node was declared dead by the cluster (lease expired); aborting its executions and registering again',
      node: this.#node.nodeId,
      epoch,
      running: [...this.#running.keys()],
    });
    for (const job of this.#running.values()) job.controller.abort(FENCED_OUT);
    await Promise.all([...this.#running.values()].map((job) => job.done));
    try {
      await this.#deps.onFencedOut?.();
      if (this.#accepting) await this.#register();
    } finally {
      this.#rejoining = false;
    }
    this.#pump();
  }

  /**
   * Declares dead every node whose lease expired (one sweeper wins each), then takes over and settles the
   * executions dead nodes (or this node's previous life) held.
   */
  async #sweep(
    coverage?: ReadonlyMap<string, LifecycleCoverage>,
    recorded?: Set<string>,
  ): Promise<{ requeued: string[]; failed: string[] }> {
    const { store, clock, identity } = this.#deps;
    const requeued: string[] = [];
    const failed: string[] = [];
    const epoch = this.#epoch;
    if (epoch === undefined) return { requeued, failed };
    const at = new Date(clock.now()).toISOString();
    const nodes = await store.listNodes();
    // What each holder's registry entry says (its state after this sweep's declarations): names why it was lost.
    const registry = new Map(nodes.map((node) => [node.id, { state: node.state, epoch: node.epoch }]));
    for (const node of nodes) {
      if (node.state === 'dead' || node.id === this.#node.nodeId || !leaseExpired(node.leaseExpiresAt, at)) {
        continue;
      }
      registry.set(node.id, { state: 'dead', epoch: node.epoch + 1 });
      if (await store.declareNodeDead(node.id, node.epoch, at)) {
        this.#deps.log?.({ level: 'warn', msg: 'declared a node dead (lease expired)', node: node.id });
        await this.#deps.onNodeDead?.(node.id).catch((error: unknown) => {
          this.#deps.log?.({
            level: 'warn',
            msg: 'settling a dead node failed',
            node: node.id,
            error: String(error),
          });
        });
      }
    }
    for (const orphan of await store.listOrphanedExecutions()) {
      const taken = await store.takeOverExecution(
        orphan.record.id,
        orphan.fence,
        { nodeId: this.#node.nodeId, epoch, owner: identity.current() },
        at,
        this.#leaseMs,
      );
      if (taken === undefined) continue;
      const cause = nodeLossCause(registry.get(orphan.fence.nodeId), orphan.fence.epoch);
      const outcome = await this.#settleOrphan(taken, orphan.fence.nodeId, cause, coverage);
      recorded?.add(taken.record.id);
      (outcome === 'queued' ? requeued : failed).push(taken.record.id);
    }
    return { requeued, failed };
  }

  async #settleOrphan(
    taken: ClaimedExecution<ExecutionRecord>,
    lostNode: string,
    cause: NodeLossCause,
    coverage?: ReadonlyMap<string, LifecycleCoverage>,
  ): Promise<'queued' | 'failed'> {
    const { store, audit, clock, events } = this.#deps;
    const { record, fence } = taken;
    // Its holder's node is gone: the swarm locks it held end now, not when their ttl passes.
    await this.#deps.swarm?.locks.executionEnded(record.id).catch(() => {});
    if (record.status === 'queued') {
      // Claimed, never started: nothing ran, nothing to record.
      await store.updateExecution(record.id, { status: 'queued', unclaim: true }, fence);
      store.signal('queue', record.id).catch(() => {});
      return 'queued';
    }
    const retry = await this.#retryOnNodeLoss(record);
    const ours = lostNode === this.#node.nodeId;
    const reason = ours
      ? retry
        ? `${RESTARTED}; queued again (spec.scaling.retryOnNodeLoss)`
        : RESTARTED
      : nodeLostReason(lostNode, retry, cause);
    audit.append(AUDIT_KINDS.executionRecovered, record.id, {
      status: retry ? 'queued' : 'failed',
      reason,
      missing:
        coverage === undefined ? [] : missingEntries(retry ? 'queued' : 'failed', coverage.get(record.id)),
    });
    await audit.flush();
    if (retry) {
      await store.updateExecution(
        record.id,
        { status: 'queued', startedAt: null, reason, unclaim: true },
        fence,
      );
      store.signal('queue', record.id).catch(() => {});
      return 'queued';
    }
    await store.updateExecution(
      record.id,
      { status: 'failed', reason, finishedAt: new Date(clock.now()).toISOString() },
      fence,
    );
    this.#deps.metrics.executionFinished('failed');
    events.emit(record.id, 'status');
    store.signal('status', record.id).catch(() => {});
    // Its node is gone, and with it the cascade its run would have done: no descendant outlives it.
    await this.#cascade(record).catch(() => {});
    return 'failed';
  }

  async #retryOnNodeLoss(record: ExecutionRecord): Promise<boolean> {
    try {
      const revision = (await this.#deps.store.listRevisions(record.agent.name)).find(
        (candidate) => candidate.revision === record.agent.revision,
      );
      return revision !== undefined && (await this.#compiledFor(revision)).scaling.retryOnNodeLoss === true;
    } catch {
      return false;
    }
  }

  /** The compiled manifest of a revision (cached by bundle digest), e.g. for its spec.input. */
  compiledAgent(revision: AgentRevision): Promise<CompiledAgent> {
    return this.#compiledFor(revision);
  }

  async #compiledFor(revision: AgentRevision): Promise<CompiledAgent> {
    // Revisions are immutable: remember the one just resolved so running it needs no second lookup.
    if (this.#revisions.size >= 1024) this.#revisions.clear();
    this.#revisions.set(`${revision.agent}@${revision.revision}`, revision);
    let agent = this.#compiled.get(revision.digest);
    if (agent === undefined) {
      agent = await loadRevision(this.#deps, revision);
      if (this.#compiled.size >= 256) this.#compiled.clear();
      this.#compiled.set(revision.digest, agent);
    }
    this.#agentLimits.set(agent.name, agent.scaling.maxConcurrent);
    return agent;
  }

  /** Agents this node runs as many executions of as their `spec.scaling.maxConcurrent` allows. */
  #fullAgents(): string[] {
    const full: string[] = [];
    for (const [name, limit] of this.#agentLimits) {
      if (limit !== null && this.#runningOf(name) >= limit) full.push(name);
    }
    return full;
  }

  #runningOf(agent: string, except?: string): number {
    let running = 0;
    for (const job of this.#running.values()) {
      if (job.record.agent.name === agent && job.record.id !== except) running++;
    }
    return running;
  }

  /** Claims queued executions from the shared queue for this node's free slots and runs them. */
  #pump(): void {
    if (!this.#accepting) return;
    if (this.#claiming) {
      this.#claimAgain = true;
      return;
    }
    const free = this.#options.maxConcurrent + this.#lent - (this.#running.size - this.#delegated);
    const delegates = this.#deps.delegates?.() ?? [];
    if (free <= 0 && delegates.length === 0) return;
    this.#claiming = true;
    this.#claim(Math.max(0, free), delegates)
      .catch((error) => {
        this.#deps.log?.({ level: 'warn', msg: 'claiming executions failed', error: String(error) });
      })
      .finally(() => {
        this.#claiming = false;
        if (this.#claimAgain) {
          this.#claimAgain = false;
          this.#pump();
        }
      });
  }

  async #claim(limit: number, delegates: readonly DelegateClaim[] = []): Promise<void> {
    if (this.#epoch === undefined && !this.#rejoining) await this.#register();
    const epoch = this.#epoch;
    if (epoch === undefined) return;
    const { store, clock, identity, runtime } = this.#deps;
    // On behalf of connected edges: the claim is this node's (its id, epoch, fence); the edge runs it.
    let delegatedClaims = 0;
    for (const delegate of delegates) {
      if (delegate.limit <= 0) continue;
      const forEdge = await store.claimExecutions({
        nodeId: this.#node.nodeId,
        epoch,
        labels: delegate.labels,
        runtimes: delegate.runtimes,
        limit: delegate.limit,
        excludeAgents: this.#fullAgents(),
        owner: identity.current(),
        at: new Date(clock.now()).toISOString(),
        leaseMs: this.#leaseMs,
      });
      delegatedClaims += forEdge.length;
      for (const one of forEdge) this.#start(one, true);
    }
    if (limit <= 0) {
      this.#pollMs = delegatedClaims > 0 ? 250 : Math.min(this.#pollMs * 2, this.#options.maxPollMs ?? 2000);
      return;
    }
    const claimed = await store.claimExecutions({
      nodeId: this.#node.nodeId,
      epoch,
      labels: this.#node.labels,
      runtimes: this.#options.runtimes ?? [runtime.name],
      limit,
      excludeAgents: this.#fullAgents(),
      owner: identity.current(),
      at: new Date(clock.now()).toISOString(),
      leaseMs: this.#leaseMs,
    });
    this.#pollMs = claimed.length > 0 ? 250 : Math.min(this.#pollMs * 2, this.#options.maxPollMs ?? 2000);
    for (const one of claimed) this.#start(one);
    // A full batch: there may be more.
    if (claimed.length === limit) this.#claimAgain = true;
  }

  #start(claimed: ClaimedExecution<ExecutionRecord>, delegated = false): void {
    const { record, fence } = claimed;
    const controller = new AbortController();
    const job: Job = {
      record,
      fence,
      controller,
      done: Promise.resolve(),
      ...(delegated ? { delegated } : {}),
    };
    this.#running.set(record.id, job);
    if (delegated) this.#delegated++;
    this.#queued = Math.max(0, this.#queued - 1);
    (job as { done: Promise<void> }).done = this.#run(job).finally(() => {
      this.#running.delete(record.id);
      if (delegated) this.#delegated--;
      this.#requestedBy.delete(record.id);
      this.#judges.delete(record.id);
      this.#deps.events.emit(record.id, 'status');
      this.#deps.store.signal('status', record.id).catch(() => {});
      this.#pump();
    });
  }

  /**
   * The `judge` validators of execution `judgedId`: each runs the deployed judge agent as an execution of its own,
   * through this queue (its limits, ledger and the agent's maxConcurrent), requested by the same key, and waits for
   * it; aborting (the judged execution cancelled or timed out) cancels it. Judges nest MAX_JUDGE_DEPTH deep.
   */
  #judgeFor(judgedId: string, requestedBy: string | undefined): LoopJudge {
    return {
      run: async (agent, input, signal) => {
        const depth = (this.#judges.get(judgedId)?.depth ?? 0) + 1;
        if (depth > MAX_JUDGE_DEPTH) {
          const of = this.#judges.get(judgedId)?.of;
          throw new AegisError(
            'CONFLICT',
            `judge ${agent} not run: execution ${judgedId} is itself a judge (of ${of}); judges nest at most ${MAX_JUDGE_DEPTH} deep`,
            { hint: 'remove the judge validator from the judge agent, or judge with a code agent' },
          );
        }
        const principal: Principal = {
          id: requestedBy ?? 'local',
          name: `judge of ${judgedId}`,
          scopes: ['execute', 'read'],
          rateLimit: null,
        };
        const record = await this.#submit(principal, { agent, input }, { of: judgedId, depth });
        const cancel = () => {
          this.cancel(principal, record.id).catch(() => {});
        };
        signal?.addEventListener('abort', cancel, { once: true });
        this.#lent++;
        this.#pump();
        try {
          for (;;) {
            signal?.throwIfAborted();
            const final = await this.wait(principal, record.id, 60_000, signal);
            if (isTerminal(final.status)) return { status: final.status, output: final.output };
          }
        } finally {
          this.#lent--;
          signal?.removeEventListener('abort', cancel);
        }
      },
    };
  }

  /** What a running parent's `/v1/swarm/*` routes call. */
  #swarmHost(requestedBy: string | undefined): SwarmHost {
    const principal: Principal = {
      id: requestedBy ?? 'local',
      name: 'swarm parent',
      scopes: ['execute', 'read'],
      rateLimit: null,
    };
    return {
      spawnChild: (parent, request, onRefused) => this.#spawnChild(principal, parent, request, onRefused),
      waitFor: (id, timeoutMs, signal) => this.wait(principal, id, timeoutMs, signal),
      getExecution: (id) => this.#deps.store.getExecution(id),
    };
  }

  async #spawnChild(
    principal: Principal,
    parent: SwarmParent,
    request: SpawnChildRequest,
    onRefused: (violation: Violation) => void,
  ): Promise<ExecutionRecord> {
    const { audit } = this.#deps;
    const spec = parent.agent.swarm;
    const ceiling = parent.record.authority?.swarm;
    const refuse = (rule: string, message: string, hint: string): never => {
      audit.append(AUDIT_KINDS.swarmRefused, parent.record.id, {
        agent: request.agent.slice(0, 100),
        rule,
        message,
      });
      onRefused({ kind: 'swarm', rule, message });
      throw new AegisError('PERMISSION_DENIED', `spawn ${request.agent.slice(0, 100)} refused: ${message}`, {
        hint,
        details: { rule },
      });
    };
    if (spec === undefined)
      return refuse(
        'spec.swarm',
        'this agent may not spawn children (no spec.swarm)',
        'add spec.swarm.canSpawn',
      );
    if (!mayStart(request.agent, spec.canSpawn))
      return refuse(
        'spec.swarm.canSpawn',
        `${request.agent.slice(0, 100)} is not in canSpawn [${spec.canSpawn.join(', ')}]`,
        `spawn one of: ${spec.canSpawn.join(', ') || '(none)'}`,
      );
    const depthLeft = Math.min(spec.maxDepth, ceiling?.depthLeft ?? spec.maxDepth);
    if (depthLeft < 1)
      return refuse(
        'spec.swarm.maxDepth',
        'the swarm is already as deep as allowed',
        'do the work in this execution',
      );
    const executions = least(spec.budget.executions, ceiling?.executions ?? null);
    const rootId = parent.record.rootId ?? parent.record.id;
    const spent = parent.spent?.();
    const llmLeft =
      spent === undefined || parent.agent.llm === null
        ? undefined
        : llmLeftOf(parent.agent.llm.budget, spent);
    const child = await this.#submit(principal, request, undefined, {
      parentId: parent.record.id,
      rootId,
      authority: {
        ...ceilingOf(parent.agent, llmLeft),
        swarm: { depthLeft: depthLeft - 1, executions },
      },
      limits: { maxChildren: spec.maxChildren, maxDescendants: executions },
      onLimit: (limit, count) =>
        refuse(
          limit === 'maxChildren' ? 'spec.swarm.maxChildren' : 'spec.swarm.budget.executions',
          limit === 'maxChildren'
            ? `this execution already spawned ${count} children (maxChildren ${spec.maxChildren})`
            : `the swarm already holds ${count} executions (budget.executions ${executions})`,
          'wait for the children you have, or do the rest in this execution',
        ),
    });
    // The parent may have ended while the child was on its way to the store: its end cancels the descendants it
    // sees (#cascade), and this one came too late to be seen. Its status is terminal before that look, so a child
    // inserted after it finds it here; cancelled, it never runs as an orphan nobody collects or bounds.
    const now = await this.#deps.store.getExecution(parent.record.id);
    if (now === undefined || isTerminal(now.status)) {
      await this.cancel(principal, child.id).catch(() => {});
      return refuse(
        'parent ended',
        `this execution ended (${now?.status ?? 'gone'}) before the child was started`,
        'spawn before the end of the run, and wait for the children you need',
      );
    }
    audit.append(AUDIT_KINDS.swarmSpawn, parent.record.id, {
      parent: parent.record.id,
      child: child.id,
      agent: child.agent.name,
      root: rootId,
      depth: (ceiling === undefined ? 0 : spec.maxDepth - depthLeft) + 1,
    });
    return child;
  }

  /** Cancels every unfinished descendant of `record` (on whichever node holds it). */
  async #cascade(record: ExecutionRecord): Promise<void> {
    const tree = await this.#deps.store.listSwarm(record.rootId ?? record.id);
    if (tree.length === 0) return;
    const below = new Set([record.id]);
    for (const r of tree) if (r.parentId !== undefined && below.has(r.parentId)) below.add(r.id);
    const principal: Principal = {
      id: 'swarm',
      name: `parent ${record.id} ended`,
      scopes: ['execute', 'read'],
      rateLimit: null,
    };
    await Promise.all(
      tree
        .filter((r) => r.id !== record.id && below.has(r.id) && !isTerminal(r.status))
        .map((r) => this.cancel(principal, r.id).catch(() => {})),
    );
  }

  /** `GET /v1/swarms/{rootId}`: the root and its descendants. */
  async swarm(principal: Principal, rootId: string): Promise<SwarmTree> {
    const root = await this.get(principal, rootId);
    if (root.rootId !== undefined) {
      throw new AegisError(
        'NOT_FOUND',
        `execution ${rootId} is not the root of a swarm (its root is ${root.rootId})`,
        {
          hint: `aegis swarm show ${root.rootId}`,
        },
      );
    }
    const swarm = this.#deps.swarm;
    const [descendants, messages, locks] = await Promise.all([
      this.#deps.store.listSwarm(rootId),
      swarm?.bus.recent(rootId) ?? [],
      swarm?.locks.ofSwarm(rootId) ?? [],
    ]);
    return swarmTree(root, descendants, { messages, locks });
  }

  async #requestedByFromLedger(id: string): Promise<string | undefined> {
    const created = (await this.#deps.audit.list(id)).find(
      (entry) => entry.kind === AUDIT_KINDS.executionCreated,
    );
    const by = (created?.data as { requestedBy?: unknown } | undefined)?.requestedBy;
    return typeof by === 'string' ? by : undefined;
  }

  async #run(job: Job): Promise<void> {
    const { clock, metrics, events, audit } = this.#deps;
    // Every write of this execution carries its fence: once another node took it over, they are refused (FENCED).
    const store = fencedStore(this.#deps.store, job.record.id, job.fence);
    const record = job.record;
    const dequeuedAt = clock.now();
    metrics.dequeued(dequeuedAt - Date.parse(record.createdAt));
    let status: ExecutionStatus = 'failed';
    try {
      const revision =
        this.#revisions.get(`${record.agent.name}@${record.agent.revision}`) ??
        (await this.#deps.store.listRevisions(record.agent.name)).find(
          (candidate) => candidate.revision === record.agent.revision,
        );
      if (revision === undefined) {
        throw new AegisError('NOT_FOUND', `${record.agent.name}@${record.agent.revision} no longer exists`);
      }
      const compiled = await this.#compiledFor(revision);
      // A swarm child runs with no more than its parent held (ADR 0140).
      const agent = record.authority ? narrowAgent(compiled, record.authority) : compiled;
      const dropped = agent === compiled ? undefined : narrowedAway(compiled, agent);
      if (dropped !== undefined) {
        audit.append(AUDIT_KINDS.swarmNarrowed, record.id, { parent: record.parentId ?? null, ...dropped });
      }
      const limit = agent.scaling.maxConcurrent;
      if (limit !== null && this.#runningOf(agent.name, record.id) >= limit) {
        // Claimed before this node knew the agent's limit: give it back to the queue, untouched.
        await store.updateExecution(record.id, { status: 'queued', unclaim: true });
        this.#deps.store.signal('queue', record.id).catch(() => {});
        return;
      }
      if (clock.now() >= this.#leaseValidUntil) {
        // Our lease may have expired since the claim (a stall: event loop, database): another node may have declared
        // us dead and given the execution to someone else, who may be starting it now. Starting it too would be a
        // second start (and, on one host, our teardown on FENCED would remove the new holder's cgroup). A fenced
        // read throws FENCED when the claim is no longer ours (handled below: nothing spawned, nothing recorded).
        await store.updateExecution(record.id, {});
      }
      const pools = this.#deps.pools;
      await pools?.makeRoom();
      const requestedBy =
        this.#requestedBy.get(record.id) ??
        (agent.llm === null ? undefined : await this.#requestedByFromLedger(record.id));
      const loop = this.#deps.loop;
      const base =
        loop === undefined || (agent.task === undefined && !agent.validation?.length)
          ? this.#deps
          : { ...this.#deps, loop: { ...loop, judge: this.#judgeFor(record.id, requestedBy) } };
      // The swarm API of this execution spawns through this class (the host), on behalf of its requester.
      const { swarm, ...rest } = base;
      const deps =
        swarm === undefined ? rest : { ...rest, swarm: { ...swarm, host: this.#swarmHost(requestedBy) } };
      const final = await runAgent(
        { ...deps, store },
        {
          agent,
          queued: record,
          fence: job.fence.fence,
          ...(requestedBy === undefined ? {} : { requestedBy }),
          signal: job.controller.signal,
          ...(pools
            ? {
                // A pooled sandbox was prepared with the agent's own manifest (network, mounts, limits): a child
                // narrowed to its parent's authority (ADR 0140) must start cold, in a sandbox made for it.
                ...(agent === compiled
                  ? { warm: (binding) => pools.take(agent, revision.revision, binding, { refill: 'later' }) }
                  : {}),
                // The pool refills once the agent runs, not between its warm instance and the release.
                onExecuting: () => pools.ensure(compiled, revision.revision),
              }
            : {}),
          onStarted: (_id, start) => {
            metrics.sandboxStarted(clock.now() - dequeuedAt, start.warm ? 'warm' : 'cold');
            events.emit(record.id, 'status');
          },
          onLogsStored: () => {
            // Followers on other nodes wake on the signal (one per stored batch) instead of their poll.
            events.emit(record.id, 'logs');
            this.#deps.store.signal('logs', record.id).catch(() => {});
          },
        },
      );
      status = final.status;
      // No descendant outlives its parent (cancelled, timed out, failed or done).
      await this.#cascade(record);
    } catch (error) {
      if (isAegisError(error) && error.code === 'FENCED') {
        // Another node holds it now and settles it; nothing more of ours may be written.
        this.#deps.log?.({ level: 'warn', msg: 'execution fenced out', id: record.id, error: error.message });
        return;
      }
      // runAgent settles its own failures; this covers what happens before it (revision or bundle gone).
      const current = await store.getExecution(record.id).catch(() => undefined);
      if (current && !isTerminal(current.status)) {
        const reason = `not started: ${error instanceof Error ? error.message : String(error)}`;
        try {
          audit.append(AUDIT_KINDS.executionFinished, record.id, {
            status: 'failed',
            exitCode: null,
            reason,
            durationMs: null,
          });
        } catch {
          // The store still records the outcome.
        }
        await store
          .updateExecution(record.id, {
            status: 'failed',
            reason,
            finishedAt: new Date(clock.now()).toISOString(),
          })
          .catch(() => {});
      } else if (current) {
        status = current.status;
      }
      // A run that threw (the ledger or the store failed under it) may have spawned children too.
      await this.#cascade(record).catch(() => {});
    }
    metrics.executionFinished(isTerminal(status) ? status : 'failed');
  }
}

/** Every execution in the store, newest first, a page at a time. */
export async function* allExecutions(store: ExecutionStore): AsyncIterable<ExecutionRecord> {
  let after: { createdAt: string; id: string } | undefined;
  for (;;) {
    const page = await store.listExecutions({ limit: 1000, ...(after ? { after } : {}) });
    yield* page;
    if (page.length < 1000) return;
    const last = page[page.length - 1]!;
    after = { createdAt: last.createdAt, id: last.id };
  }
}

/** `store` with every write of execution `id` fenced (ADR 0101); everything else passes through. */
function fencedStore(store: ExecutionStore, id: string, fence: ExecutionFence): ExecutionStore {
  return {
    createExecution: (record) => store.createExecution(record),
    updateExecution: (target, patch) =>
      store.updateExecution(target, patch, target === id ? fence : undefined),
    getExecution: (target) => store.getExecution(target),
    listExecutions: (query) => store.listExecutions(query),
    listUnfinished: () => store.listUnfinished(),
    createChildExecution: (record, limits) => store.createChildExecution(record, limits),
    listSwarm: (rootId) => store.listSwarm(rootId),
    appendLogs: (target, lines) => store.appendLogs(target, lines),
    readLogs: (target, options) => store.readLogs(target, options),
    close: () => store.close(),
  };
}

function isSameProcess(
  a: ExecutionRecord['owner'],
  b: { readonly host: string; readonly pid: number; readonly startTicks: number },
): boolean {
  return a !== null && a.host === b.host && a.pid === b.pid && a.startTicks === b.startTicks;
}
