/**
 * Use-cases for executions on a server: accept (durably, as `queued`, before answering), run with a concurrency
 * limit, cancel, wait, list — and recover after a crash.
 *
 * Backpressure, never drops: the queue is bounded; a request over the bound is refused with QUEUE_FULL before
 * anything is stored. Everything accepted is in the store, so a restarted server finds it: queued executions run,
 * the ones that were running are settled as `failed` (`orchestrator-restarted`) after their sandboxes are reaped.
 */

import { AUDIT_KINDS } from '../domain/audit/entry.ts';
import { missingEntries } from '../domain/audit/store-check.ts';
import { type Principal, requireScope } from '../domain/auth/api-key.ts';
import {
  type AgentRevision,
  formatAgentSelector,
  parseAgentSelector,
  resolveRevision,
} from '../domain/deployment.ts';
import { AegisError } from '../domain/errors.ts';
import { type ExecutionRecord, type ExecutionStatus, isTerminal } from '../domain/execution.ts';
import { checkInputDepth } from '../domain/input-bounds.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import { inputValidator } from '../domain/manifest/input-schema.ts';
import type { LoopJudge } from './agent-loop.ts';
import { loadRevision, notFoundAgent } from './agents.ts';
import type { ExecutionEvents } from './execution-events.ts';
import type { ToolsWiring } from './live-sandboxes.ts';
import type { LlmWiring } from './llm-wiring.ts';
import type { MemoryWiring } from './memory-access.ts';
import type {
  AgentBundles,
  AuditLog,
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
}

export interface ExecutionsOptions {
  /** Executions running at once on this node. */
  readonly maxConcurrent: number;
  /** Executions waiting for a slot; beyond it, QUEUE_FULL. */
  readonly maxQueued: number;
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
  readonly controller: AbortController;
  readonly done: Promise<void>;
}

/**
 * How deep `judge` validators nest: a judged execution's judge runs (depth 1), but a judge's own judge validator is
 * refused (CONFLICT) — a judge chain would spend one more slot, sandbox and budget per level.
 */
export const MAX_JUDGE_DEPTH = 1;

const RESTARTED =
  'orchestrator-restarted: the server stopped while this execution ran; its sandbox was reaped on restart';

export class Executions {
  readonly #deps: ExecutionsDeps;
  readonly #options: ExecutionsOptions;
  readonly #pending: ExecutionRecord[] = [];
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
  }

  stats(): ExecutionStats {
    return {
      running: this.#running.size,
      queued: this.#pending.length,
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
  ): Promise<ExecutionRecord> {
    requireScope(principal, 'execute', 'starting an execution');
    checkInputDepth(request.input);
    if (!this.#accepting) {
      throw new AegisError('UNAVAILABLE', 'the server is shutting down and accepts no new executions', {
        hint: 'retry against another node or after the restart',
      });
    }
    if (this.#pending.length + this.#reserved >= this.#options.maxQueued) {
      throw new AegisError(
        'QUEUE_FULL',
        `the execution queue is full (${this.#options.maxQueued} waiting, ${this.#running.size} running); nothing was created`,
        {
          hint: 'retry later; operators can raise --max-queued or --max-concurrent',
          details: { queued: this.#pending.length, running: this.#running.size, retryAfterMs: 1000 },
        },
      );
    }
    this.#reserved++;
    try {
      const { store, clock, identity, audit, runtime } = this.#deps;
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
      };
      await store.createExecution(record);
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
      // A judge goes first: the execution it judges waits for it and lends it its slot.
      if (judge) {
        this.#judges.set(record.id, judge);
        this.#pending.unshift(record);
      } else {
        this.#pending.push(record);
      }
      this.#pump();
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
    const index = this.#pending.findIndex((queued) => queued.id === id);
    if (index !== -1) {
      this.#pending.splice(index, 1);
      this.#requestedBy.delete(id);
      audit.append(AUDIT_KINDS.executionCancelled, id, { by: principal.id, status: 'queued' });
      audit.append(AUDIT_KINDS.executionFinished, id, {
        status: 'killed',
        exitCode: null,
        reason: `${reason} before it started`,
        durationMs: null,
      });
      await audit.flush();
      const final = await store.updateExecution(id, {
        status: 'killed',
        reason: `${reason} before it started`,
        finishedAt: new Date(clock.now()).toISOString(),
      });
      this.#deps.metrics.executionFinished('killed');
      events.emit(id, 'status');
      return final;
    }
    const job = this.#running.get(id);
    if (job === undefined) {
      throw new AegisError('UNAVAILABLE', `execution ${id} (${record.status}) is run by another process`, {
        hint: 'cancel it through the server that runs it',
        details: { owner: record.owner },
      });
    }
    audit.append(AUDIT_KINDS.executionCancelled, id, { by: principal.id, status: record.status });
    job.controller.abort(reason);
    await job.done;
    return this.get(principal, id);
  }

  /**
   * On start: reap sandboxes dead processes left, settle executions that were running when their server died
   * (`failed`, `orchestrator-restarted`) and queue again the ones that were waiting. Executions owned by a live
   * process (a concurrent `aegis run`, another node) are left alone.
   *
   * Then the ledger is checked against the store: every execution the store knows whose `execution.created` or
   * (ended) `execution.finished` entry was lost — a crash before the group commit — gets an `execution.recovered`
   * entry saying what was missing and the status the store holds, so the two agree again.
   */
  async recover(): Promise<{ requeued: string[]; failed: string[]; reconciled: string[] }> {
    const { runtime, store, identity, audit, clock } = this.#deps;
    await runtime.reapOrphans();
    const me = identity.current();
    const requeued: string[] = [];
    const failed: string[] = [];
    const coverage = await audit.lifecycleCoverage();
    const recorded = new Set<string>();
    for (const record of await store.listUnfinished()) {
      const owner = record.owner;
      const mine = isSameProcess(owner, me);
      if (mine || (owner !== null && identity.isAlive(owner))) continue;
      if (record.status === 'queued') {
        const taken = await store.updateExecution(record.id, { owner: me });
        this.#pending.push(taken);
        requeued.push(record.id);
        continue;
      }
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
    const reconciled: string[] = [];
    for await (const record of allExecutions(store)) {
      if (recorded.has(record.id)) continue;
      // Someone else's live execution writes its own entries.
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
   * Graceful stop: accept nothing new, let running executions finish until `deadlineMs`, then cancel the rest
   * (`killed`, reason `orchestrator-shutdown`). Queued executions stay queued in the store for the next start.
   */
  async drain(deadlineMs: number): Promise<{ finished: number; cancelled: number; leftQueued: number }> {
    this.#accepting = false;
    const leftQueued = this.#pending.length;
    this.#pending.length = 0; // they stay `queued` in the store; the next start runs them
    const jobs = [...this.#running.values()];
    const all = Promise.all(jobs.map((job) => job.done));
    let timer: Timer | undefined;
    const timedOut = await Promise.race([
      all.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = this.#deps.clock.setTimeout(() => resolve(true), deadlineMs);
      }),
    ]);
    timer?.cancel();
    let cancelled = 0;
    if (timedOut) {
      for (const job of this.#running.values()) {
        cancelled++;
        job.controller.abort('orchestrator-shutdown: the server stopped before this execution finished');
      }
      await Promise.all([...this.#running.values()].map((job) => job.done));
    }
    return { finished: jobs.length - cancelled, cancelled, leftQueued };
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

  /** The oldest queued execution whose agent is under its own `maxConcurrent`, taken out of the queue. */
  #nextRunnable(): ExecutionRecord | undefined {
    for (let i = 0; i < this.#pending.length; i++) {
      const record = this.#pending[i]!;
      const limit = this.#agentLimits.get(record.agent.name) ?? null;
      if (limit !== null) {
        let running = 0;
        for (const job of this.#running.values()) if (job.record.agent.name === record.agent.name) running++;
        if (running >= limit) continue;
      }
      this.#pending.splice(i, 1);
      return record;
    }
    return undefined;
  }

  #pump(): void {
    while (
      this.#accepting &&
      this.#running.size < this.#options.maxConcurrent + this.#lent &&
      this.#pending.length > 0
    ) {
      const record = this.#nextRunnable();
      if (record === undefined) return;
      const controller = new AbortController();
      const job: Job = { record, controller, done: Promise.resolve() };
      this.#running.set(record.id, job);
      (job as { done: Promise<void> }).done = this.#run(job).finally(() => {
        this.#running.delete(record.id);
        this.#requestedBy.delete(record.id);
        this.#judges.delete(record.id);
        this.#deps.events.emit(record.id, 'status');
        this.#pump();
      });
    }
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

  async #requestedByFromLedger(id: string): Promise<string | undefined> {
    const created = (await this.#deps.audit.list(id)).find(
      (entry) => entry.kind === AUDIT_KINDS.executionCreated,
    );
    const by = (created?.data as { requestedBy?: unknown } | undefined)?.requestedBy;
    return typeof by === 'string' ? by : undefined;
  }

  async #run(job: Job): Promise<void> {
    const { store, clock, metrics, events, audit } = this.#deps;
    const record = job.record;
    const dequeuedAt = clock.now();
    metrics.dequeued(dequeuedAt - Date.parse(record.createdAt));
    let status: ExecutionStatus = 'failed';
    try {
      const revision =
        this.#revisions.get(`${record.agent.name}@${record.agent.revision}`) ??
        (await store.listRevisions(record.agent.name)).find(
          (candidate) => candidate.revision === record.agent.revision,
        );
      if (revision === undefined) {
        throw new AegisError('NOT_FOUND', `${record.agent.name}@${record.agent.revision} no longer exists`);
      }
      const agent = await this.#compiledFor(revision);
      const pools = this.#deps.pools;
      await pools?.makeRoom();
      const requestedBy =
        this.#requestedBy.get(record.id) ??
        (agent.llm === null ? undefined : await this.#requestedByFromLedger(record.id));
      const loop = this.#deps.loop;
      const deps =
        loop === undefined || (agent.task === undefined && !agent.validation?.length)
          ? this.#deps
          : { ...this.#deps, loop: { ...loop, judge: this.#judgeFor(record.id, requestedBy) } };
      const final = await runAgent(deps, {
        agent,
        queued: record,
        ...(requestedBy === undefined ? {} : { requestedBy }),
        signal: job.controller.signal,
        ...(pools ? { warm: (binding) => pools.take(agent, revision.revision, binding) } : {}),
        onStarted: (_id, start) => {
          metrics.sandboxStarted(clock.now() - dequeuedAt, start.warm ? 'warm' : 'cold');
          events.emit(record.id, 'status');
        },
        onLogsStored: () => events.emit(record.id, 'logs'),
      });
      status = final.status;
    } catch (error) {
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

function isSameProcess(
  a: ExecutionRecord['owner'],
  b: { readonly host: string; readonly pid: number; readonly startTicks: number },
): boolean {
  return a !== null && a.host === b.host && a.pid === b.pid && a.startTicks === b.startTicks;
}
