/**
 * Use-case: run one execution of an agent to completion. Records the execution before anything starts,
 * persists log lines as they stream, and always ends with a terminal status — even when the runtime refuses.
 *
 * Audit trail of one execution: `execution.created` → (`policy.mount` per granted host path, `execution.started`
 * — written before the agent's first instruction; if the ledger can't be written the agent does not run) →
 * `limit.hit` per limit violation → `execution.finished`. Every path, refusals included, ends with
 * `execution.finished`. With egress granted, `policy.network` (the rules) is written before the agent runs, and
 * every connection attempt through the egress proxy becomes a `network.connect` entry as it is decided; denied ones
 * also become `network` violations on the record, one per (destination, rule) with a count.
 *
 * With `spec.llm` the execution gets a gateway token (issued before spawn, revoked when the run ends) and the
 * in-sandbox API; every model call becomes an `llm.call` entry. A call refused because a `spec.llm.budget` limit is
 * used up ends the execution (status `killed`, reason `budget: …`, a `budget` violation). Agents with `spec.llm`
 * are never taken from a warm pool: the token is per execution.
 */

import { canonicalJson, type JsonValue } from '../domain/audit/canonical-json.ts';
import { AUDIT_KINDS, type Sha256Hex } from '../domain/audit/entry.ts';
import { AegisError, isAegisError } from '../domain/errors.ts';
import {
  type ExecutionRecord,
  isTerminal,
  type LogStream,
  swarmIdOf,
  type TerminalStatus,
  type Violation,
} from '../domain/execution.ts';
import { checkInputDepth } from '../domain/input-bounds.ts';
import { sandboxPathRoots } from '../domain/live-sandbox.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import { inputValidator } from '../domain/manifest/input-schema.ts';
import { LogSummary, valueText } from '../domain/memory/execution-memory.ts';
import type { NetworkPolicy } from '../domain/policy/network-rules.ts';
import { HOST_INTERPRETERS } from '../domain/runtime/inside-paths.ts';
import { classifyOutcome } from '../domain/runtime/outcome.ts';
import { placeholderMap } from '../domain/secrets/placeholder.ts';
import { Redactor } from '../domain/secrets/redactor.ts';
import { isBuiltin } from '../domain/tools.ts';
import {
  gatewayModel,
  gatewayTools,
  type JsonSchemaCheck,
  type LoopJudge,
  type LoopStep,
  runAgentLoop,
  type Verdict,
  validateCodeOutput,
} from './agent-loop.ts';
import { resolveSecrets } from './agent-secrets.ts';
import type { ToolsWiring } from './live-sandboxes.ts';
import type { LlmBudgetName, LlmCallRecord, LlmUsageTotals } from './llm-gateway.ts';
import { IN_SANDBOX_API_URL, type LlmWiring, llmEnv } from './llm-wiring.ts';
import { executionMemory, type MemoryWiring, ownScope, recallForPrompt } from './memory-access.ts';
import { indexExecution } from './memory-indexer.ts';
import { networkConnectData, secretUseData } from './policy-audit.ts';
import type {
  AuditLog,
  Clock,
  ExecutionSpan,
  ExecutionStore,
  Ids,
  InSandboxApi,
  InstanceBinding,
  InstanceId,
  InstanceSecrets,
  LiveRuntime,
  LiveSession,
  NetworkDecisionEvent,
  NewLogLine,
  ProcessIdentity,
  Runtime,
  SecretRandom,
  SecretStore,
  SecretUseEvent,
  TaskInput,
  TaskOutput,
  Tracer,
} from './ports.ts';
import { executionSpawn, type SwarmWiring } from './swarm.ts';
import { executionBus } from './swarm-bus-access.ts';
import type { ToolGateway } from './tools.ts';

export interface RunAgentDeps {
  readonly runtime: Runtime;
  readonly store: ExecutionStore;
  readonly clock: Clock;
  readonly ids: Pick<Ids, 'executionId'>;
  readonly identity: ProcessIdentity;
  readonly audit: AuditLog;
  /** Where `agent.secrets` values come from; required only by agents that declare secrets. */
  readonly secrets?: SecretStore;
  /** Placeholder randomness; required only by agents that declare secrets. */
  readonly random?: SecretRandom;
  /** The LLM gateway and its in-sandbox handler; required only by agents with `spec.llm`. */
  readonly llm?: LlmWiring;
  /**
   * The tool gateway; agents with `spec.tools` get `/v1/tools` in the in-sandbox API. A code agent granted a
   * built-in (fs.*, cmd.run, http.fetch) runs on a live instance (`loop.live`, see runLiveCode) so its built-ins
   * have a session; without `loop` its built-ins are refused with RUNTIME_UNAVAILABLE (ToolGateway).
   */
  readonly tools?: ToolsWiring;
  /** Told each execution's model usage when it ends (metrics; the record and ledger hold it too). */
  readonly onLlmUsage?: (usage: LlmUsageTotals) => void;
  /** Traces (OpenTelemetry when configured): a span per execution, a child span per model call. */
  readonly tracer?: Tracer;
  /** What declarative agents (spec.task) run on; required only by them (docs/adr/0088-declarative-agent-loop.md). */
  readonly loop?: DeclarativeWiring;
  /** Cortex (agents with spec.memory): `/v1/memory/*` in the in-sandbox API, indexing at the end, recall. */
  readonly memory?: MemoryWiring;
  /**
   * Swarm (on a server): `/v1/swarm/*` in the in-sandbox API — spawn (app/swarm.ts), bus and locks
   * (app/swarm-bus-access.ts); the execution's leases end with it.
   */
  readonly swarm?: SwarmWiring;
}

/** The loop's needs beyond runAgent's own: a runtime with live instances, the tool gateway, validators' helpers. */
export interface DeclarativeWiring {
  /** The same runtime as `runtime`, seen as one that holds live instances (the loop's tools run inside). */
  readonly live: LiveRuntime;
  readonly tools: ToolGateway;
  readonly jsonSchema: JsonSchemaCheck;
  readonly sha256Hex: Sha256Hex;
  /** Runs a deployed agent (judge validators); without it a judge validator fails the execution. */
  readonly judge?: LoopJudge;
  /** Largest file fs.read / fs.write may move. @default 16 MiB */
  readonly maxFileBytes?: number;
}

export interface RunAgentRequest {
  readonly agent: CompiledAgent;
  readonly input?: unknown;
  /** Live view of log lines (the CLI prints them); persisted regardless. */
  readonly onLog?: (stream: LogStream, text: string) => void;
  /** Called once the execution is recorded, with its id (before the sandbox starts). */
  readonly onCreated?: (id: string) => void;
  /** Called when the sandbox is ready and about to run the agent; `warm` when it came from a warm pool. */
  readonly onStarted?: (id: string, start: { readonly warm: boolean }) => void;
  /**
   * Called right after the agent was released (its first instruction may run). Background work that competes for
   * the event loop — a warm pool's refill spawns synchronously for milliseconds — starts here, after the agent.
   */
  readonly onExecuting?: () => void;
  /**
   * A Warm instance for this execution, if a pool has one (bound to it by the pool); otherwise undefined and the
   * runtime spawns one. Never asked for agents with secrets (their placeholders are per execution).
   */
  readonly warm?: (binding: InstanceBinding) => InstanceId | undefined;
  /** Aborting kills the agent (status `killed`); a string `signal.reason` becomes the record's reason. */
  readonly signal?: AbortSignal;
  /** Called after each batch of log lines is stored (followers re-read the store then). */
  readonly onLogsStored?: () => void;
  /**
   * Run this already-recorded execution (the server's queue) instead of creating one: its record is `queued` and
   * its `execution.created` entry is in the ledger. `input` is taken from the record.
   */
  readonly queued?: ExecutionRecord;
  /** The API key id that asked for this execution (server budgets per key, `llm.budgets.keys`). */
  readonly requestedBy?: string;
  /**
   * The fencing token of this node's claim on the execution (cluster): recorded in `execution.started` and
   * `execution.finished`, so `aegis audit verify --cluster` can tell a finish by a node that lost its claim.
   */
  readonly fence?: number;
}

/** The `execution.created` ledger data for an agent about to run on `runtime`. */
export function createdAuditData(
  agent: CompiledAgent,
  runtime: string,
  extra: { revision?: number; requestedBy?: string; judgeOf?: string } = {},
) {
  return {
    agent: agent.name,
    version: agent.version,
    runtime,
    isolation: agent.isolation,
    limits: { ...agent.limits },
    ...extra,
  };
}

/** Refused in-sandbox API requests audited one entry each per execution; the rest are counted in one entry. */
export const API_DENIED_AUDITED = 16;

/** How many log lines are written per store transaction while an agent streams. */
const LOG_BATCH = 64;

/** Every string (keys included) of a JSON value with secret values redacted. */
function redactJson(value: unknown, redactor: Redactor): unknown {
  if (typeof value === 'string') return redactor.redact(value);
  if (Array.isArray(value)) return value.map((item) => redactJson(item, redactor));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [redactor.redact(key), redactJson(item, redactor)]),
    );
  }
  return value;
}

export async function runAgent(deps: RunAgentDeps, request: RunAgentRequest): Promise<ExecutionRecord> {
  const { runtime, store, clock, ids, identity, audit } = deps;
  const { agent } = request;
  const iso = (ms: number) => new Date(ms).toISOString();
  const id = request.queued?.id ?? ids.executionId();
  // What the record names as the runtime (a router resolves `isolation: auto` here, refusing before anything is
  // stored when no runtime can run the agent).
  const runtimeName =
    request.queued === undefined ? (runtime.nameFor?.(agent) ?? runtime.name) : runtime.name;
  if (request.queued === undefined) {
    checkInputDepth(request.input);
    if (agent.input) inputValidator(agent.input, agent.name).check(request.input ?? null);
    await store.createExecution({
      id,
      agent: { name: agent.name, version: agent.version },
      runtime: runtimeName,
      status: 'created',
      exitCode: null,
      reason: null,
      input: request.input ?? null,
      output: null,
      violations: [],
      createdAt: iso(clock.now()),
      startedAt: null,
      finishedAt: null,
      durationMs: null,
      owner: identity.current(),
    });
  }
  // In-sandbox API requests for what the manifest does not grant: the first few audited one by one, then counted.
  const apiDenied = { total: 0 };
  // Spawns refused (spec.swarm limits), one violation per rule with a count.
  const swarmRefusals = new Map<string, Violation>();
  let finishedAudited = false;
  let outcome: { status: TerminalStatus; reason: string | null } = {
    status: 'failed',
    reason: 'internal error',
  };
  const auditFinished = (
    status: TerminalStatus,
    exitCode: number | null,
    reason: string | null,
    durationMs: number | null,
    llm?: LlmUsageTotals,
  ) => {
    if (finishedAudited) return;
    finishedAudited = true;
    outcome = { status, reason };
    if (apiDenied.total > API_DENIED_AUDITED) {
      audit.append(AUDIT_KINDS.apiDenied, id, {
        suppressed: apiDenied.total - API_DENIED_AUDITED,
        total: apiDenied.total,
      });
    }
    audit.append(AUDIT_KINDS.executionFinished, id, {
      status,
      exitCode,
      reason,
      durationMs,
      ...(llm ? { llm: { ...llm } } : {}),
      ...(request.fence === undefined ? {} : { fence: request.fence }),
    });
  };
  /**
   * Cluster: the FENCED error when this node no longer holds its claim (an empty write under the fence probes it).
   * A fenced-out node must not write a terminal entry for an execution another node settles.
   */
  const lostClaim = async (): Promise<AegisError | undefined> => {
    if (request.fence === undefined) return undefined;
    try {
      await store.updateExecution(id, {});
      return undefined;
    } catch (error) {
      if (isAegisError(error) && error.code === 'FENCED') return error;
      throw error;
    }
  };
  /** Instead of execution.finished once the claim is lost: a non-terminal entry naming the fence this node held. */
  const auditAbandoned = (status: TerminalStatus, detail: string | null) => {
    if (finishedAudited || request.fence === undefined) return;
    finishedAudited = true;
    outcome = { status, reason: detail };
    audit.append(AUDIT_KINDS.executionAbandoned, id, {
      reason: 'fenced',
      fence: request.fence,
      status,
      detail,
    });
  };
  if (request.queued === undefined) {
    // The id is not handed out before its `execution.created` entry is durable.
    try {
      audit.append(AUDIT_KINDS.executionCreated, id, createdAuditData(agent, runtimeName));
      await audit.durable();
    } catch (error) {
      // Fail closed: nothing runs unrecorded.
      const reason = `not started: the audit ledger cannot be written (${error instanceof Error ? error.message : String(error)})`;
      await store.updateExecution(id, { status: 'failed', reason, finishedAt: iso(clock.now()) });
      throw error;
    }
  }
  request.onCreated?.(id);
  // Tracing never fails an execution: a tracer that throws is ignored.
  let span: ExecutionSpan | undefined;
  try {
    span = deps.tracer?.startExecution({
      executionId: id,
      agent: agent.name,
      revision: request.queued?.agent.revision ?? null,
      runtime: request.queued?.runtime ?? runtimeName,
      startedAtMs: clock.now(),
    });
  } catch {
    span = undefined;
  }

  // Values of this execution's secrets never reach the store, the ledger or errors: everything that could have seen
  // one (lines, output, reasons, violations) passes through the redactor. Filled in once the values are fetched.
  let redactor = new Redactor([]);
  const clean = (text: string) => redactor.redact(text);

  let pending: NewLogLine[] = [];
  let flushing: Promise<void> = Promise.resolve();
  const flush = () => {
    if (pending.length === 0) return flushing;
    const batch = pending;
    pending = [];
    flushing = flushing.then(() => store.appendLogs(id, batch)).then(() => request.onLogsStored?.());
    return flushing;
  };
  const memoryLogs = agent.memory?.index.includes('logs') ? new LogSummary() : undefined;
  const onLog = (stream: LogStream, text: string) => {
    const safe = clean(text);
    memoryLogs?.add(stream, safe);
    pending.push({ stream, text: safe, ts: iso(clock.now()) });
    request.onLog?.(stream, safe);
    if (pending.length >= LOG_BATCH) void flush();
  };
  // Lines are flushed at least every 100 ms so `aegis logs` of a running execution is current.
  const ticker = clock.setInterval(() => void flush(), 100);

  // Egress decisions: each one into the ledger; denied ones aggregated per (destination, rule) so an agent that
  // retries in a loop yields one violation with a count, not thousands.
  const networkDenials = new Map<string, { rule: string; message: string; count: number }>();
  let instanceForAudit: string | undefined;
  let networkAuditError: unknown;
  const onNetworkDecision = (event: NetworkDecisionEvent) => {
    if (event.verdict === 'deny') {
      const key = `${event.requested}\0${event.rule}`;
      const seen = networkDenials.get(key);
      if (seen) seen.count++;
      else networkDenials.set(key, { rule: event.rule, message: clean(event.message), count: 1 });
    }
    try {
      audit.append(AUDIT_KINDS.networkConnect, id, networkConnectData(event, clean));
    } catch (error) {
      // Fail closed: network use that can't be recorded stops the agent.
      networkAuditError ??= error;
      if (instanceForAudit !== undefined) void runtime.terminate(instanceForAudit).catch(() => {});
    }
  };

  const onSecretUse = (use: SecretUseEvent) => {
    try {
      audit.append(AUDIT_KINDS.secretUse, id, secretUseData(use, clean));
    } catch (error) {
      networkAuditError ??= error;
      if (instanceForAudit !== undefined) void runtime.terminate(instanceForAudit).catch(() => {});
      throw error; // refuses the request
    }
  };

  // Model calls: each one into the ledger; a call refused for a spent budget ends the execution.
  let llmToken: string | undefined;
  let unsubscribeLlm: (() => void) | undefined;
  // `rule`: a server budget (llm.budgets.…) shared across executions; absent: this execution's spec.llm.budget.
  let budgetSpent: { budget: LlmBudgetName; refused: number; rule?: string } | undefined;
  let budgetKilled = false;
  const onLlmCall = (record: LlmCallRecord) => {
    try {
      span?.llmCall(record, clock.now());
    } catch {
      // tracing is best effort
    }
    try {
      const { executionId: _, ...data } = record;
      audit.append(AUDIT_KINDS.llmCall, id, JSON.parse(JSON.stringify(data)));
    } catch (error) {
      networkAuditError ??= error;
      if (instanceForAudit !== undefined) void runtime.terminate(instanceForAudit).catch(() => {});
      return;
    }
    if (record.status === 'budget') {
      budgetSpent ??= { budget: 'calls', refused: 0 };
      budgetSpent.refused++;
      budgetKilled = true;
      if (instanceForAudit !== undefined) void runtime.terminate(instanceForAudit).catch(() => {});
    }
  };
  const auditApiDenied = (method: string, path: string, extra: Record<string, string> = {}) => {
    apiDenied.total++;
    if (apiDenied.total > API_DENIED_AUDITED) return;
    try {
      audit.append(AUDIT_KINDS.apiDenied, id, {
        method: clean(method),
        path: clean(path),
        nth: apiDenied.total,
        ...extra,
      });
    } catch (error) {
      networkAuditError ??= error;
      if (instanceForAudit !== undefined) void runtime.terminate(instanceForAudit).catch(() => {});
    }
  };
  const llmUsage = (): LlmUsageTotals | undefined =>
    llmToken === undefined ? undefined : deps.llm?.gateway.usage(id);

  try {
    // `execution.created` is written above (or, for a queued execution, when it was accepted, with who asked).
    let instanceId: string;
    let warm = false;
    let secretsEnv: Readonly<Record<string, string>> = {};
    // A code agent granted built-ins runs as the first command of a live instance: the gateway's session.
    const liveCode =
      agent.task === undefined &&
      deps.loop !== undefined &&
      deps.tools !== undefined &&
      (agent.tools ?? []).some((grant) => isBuiltin(grant.name));
    const liveSession: { current?: LiveSession } = {};
    try {
      const resolved = await resolveSecrets(deps, agent);
      let secrets: InstanceSecrets | undefined;
      if (resolved !== undefined) {
        secretsEnv = resolved.plan.env;
        redactor = new Redactor([...resolved.values].map(([name, value]) => ({ name, value })));
        secrets = {
          env: resolved.plan.env,
          placeholders: placeholderMap(resolved.plan, resolved.values),
          onSecretUse,
        };
      }
      let inSandboxApi: InSandboxApi | undefined;
      if (agent.llm !== null) {
        if (deps.llm === undefined) {
          throw new AegisError('RUNTIME_UNAVAILABLE', 'this AEGIS build has no LLM gateway configured', {
            hint: 'remove spec.llm, or run the agent through `aegis run` / `aegis server` (they build the gateway)',
          });
        }
        const { gateway, handler, handlerFor, events } = deps.llm;
        unsubscribeLlm = events.subscribe(id, {
          onCall: onLlmCall,
          onBudgetExhausted: (budget, rule) => {
            budgetSpent = { budget, refused: budgetSpent?.refused ?? 0, ...(rule ? { rule } : {}) };
          },
          onPathDenied: (method, path) => auditApiDenied(method, path),
        });
        llmToken = gateway.issue({
          executionId: id,
          agent: agent.name,
          models: agent.llm.models,
          budget: agent.llm.budget,
          requestedBy: request.requestedBy ?? null,
        });
        // The sandbox's endpoint takes only this execution's token (a leaked token of another is refused there).
        inSandboxApi = { handler: handlerFor ? handlerFor(llmToken) : handler, env: llmEnv(llmToken) };
      }
      if (agent.task === undefined && agent.validation?.length && deps.loop === undefined) {
        throw new AegisError(
          'RUNTIME_UNAVAILABLE',
          'this AEGIS build cannot validate code agents (spec.execution.validation)',
          { hint: 'run it through `aegis run` or `aegis server`' },
        );
      }
      if (agent.task !== undefined && deps.loop === undefined) {
        throw new AegisError(
          'RUNTIME_UNAVAILABLE',
          'this AEGIS build cannot run declarative agents (spec.task)',
          {
            hint: 'run it through `aegis run` or `aegis server`',
          },
        );
      }
      if (agent.tools?.length && deps.tools !== undefined) {
        // Same token as the LLM routes when there are any; tool calls are `tool.call` entries of this execution.
        const tools = deps.tools;
        const token = inSandboxApi?.env['AEGIS_TOKEN'] ?? tools.newToken();
        const target = {
          id,
          agent,
          get session() {
            return liveSession.current;
          },
          env: { ...agent.env, ...secretsEnv },
          by: 'agent',
          owner: request.requestedBy,
        };
        inSandboxApi = {
          handler: tools.handlerFor(
            token,
            {
              list: () => tools.gateway.list(target),
              call: (name, args) => tools.gateway.call(target, name, args),
            },
            inSandboxApi?.handler,
          ),
          env: { AEGIS_API_URL: IN_SANDBOX_API_URL, AEGIS_TOKEN: token, ...(inSandboxApi?.env ?? {}) },
        };
      }
      if (ownScope(agent) !== undefined && deps.memory === undefined) {
        throw new AegisError('RUNTIME_UNAVAILABLE', 'this AEGIS build has no agent memory (Cortex)', {
          hint: 'remove spec.memory, or run the agent through `aegis run` / `aegis server`',
        });
      }
      if (deps.memory !== undefined && (inSandboxApi !== undefined || ownScope(agent) !== undefined)) {
        // Every in-sandbox API answers /v1/memory/*: with the agent's memory, or a 403 that is audited.
        const token = inSandboxApi?.env['AEGIS_TOKEN'] ?? deps.memory.newToken();
        const memory = executionMemory(deps.memory, {
          agent,
          executionId: id,
          clean,
          onDenied: (op, reason) =>
            auditApiDenied('POST', `/v1/memory/${op}`, { rule: 'spec.memory', reason: reason.slice(0, 300) }),
        });
        inSandboxApi = {
          handler: deps.memory.handlerFor(token, memory, inSandboxApi?.handler),
          env: { AEGIS_API_URL: IN_SANDBOX_API_URL, AEGIS_TOKEN: token, ...(inSandboxApi?.env ?? {}) },
        };
      }
      if (deps.swarm !== undefined && (inSandboxApi !== undefined || agent.swarm !== undefined)) {
        // Every in-sandbox API answers /v1/swarm/*: spawn children with no more than this execution holds
        // (ADR 0140); the bus and locks of its swarm — its root's, shared with parent and children (ADR 0144);
        // without spec.swarm, a 403 that is audited.
        const swarm = deps.swarm;
        const token = inSandboxApi?.env['AEGIS_TOKEN'] ?? swarm.newToken();
        const record = request.queued ?? (await store.getExecution(id));
        const spawn =
          record === undefined
            ? undefined
            : executionSpawn(
                swarm.host,
                {
                  record,
                  agent,
                  spent: llmUsage,
                  ...(request.requestedBy ? { requestedBy: request.requestedBy } : {}),
                },
                {
                  onRefused: (v) => {
                    const seen = swarmRefusals.get(v.rule);
                    swarmRefusals.set(v.rule, { ...v, count: (seen?.count ?? 0) + 1 });
                  },
                  ...(request.signal ? { signal: request.signal } : {}),
                },
              );
        const bus = executionBus(swarm, {
          agent,
          executionId: id,
          swarmId: record === undefined ? await swarm.swarmOf(id) : swarmIdOf(record),
          onDenied: (op, reason) =>
            auditApiDenied('POST', `/v1/swarm/${op}`, { rule: 'spec.swarm', reason: reason.slice(0, 300) }),
        });
        const noSpawn = async (): Promise<never> => {
          throw new AegisError('PERMISSION_DENIED', 'this execution has no record to spawn from', {
            hint: 'spawn from an execution the server runs (aegis run / aegis server)',
          });
        };
        inSandboxApi = {
          handler: swarm.handlerFor(
            token,
            { ...bus, spawn: spawn?.spawn ?? noSpawn, child: spawn?.child ?? noSpawn },
            inSandboxApi?.handler,
          ),
          env: { AEGIS_API_URL: IN_SANDBOX_API_URL, AEGIS_TOKEN: token, ...(inSandboxApi?.env ?? {}) },
        };
      }
      const pooled =
        secrets === undefined && inSandboxApi === undefined && agent.task === undefined
          ? request.warm?.({ executionId: id, onNetworkDecision })
          : undefined;
      if (pooled !== undefined) {
        instanceId = pooled;
        warm = true;
      } else {
        // A declarative agent's instance is live: the loop runs its tools inside it, the model runs outside.
        const live = agent.task !== undefined || liveCode;
        instanceId = await (live ? (deps.loop as DeclarativeWiring).live : runtime).spawn({
          ...(live ? { live: true } : {}),
          executionId: id,
          agent,
          onNetworkDecision,
          ...(secrets ? { secrets } : {}),
          ...(inSandboxApi ? { inSandboxApi } : {}),
        });
      }
      instanceForAudit = instanceId;
    } catch (error) {
      // Refused before the agent ran: nothing executed, the record says why.
      const message = clean(isAegisError(error) ? error.message : String(error));
      const reason = `not started: ${message}`;
      auditFinished('failed', null, reason, null);
      await store.updateExecution(id, { status: 'failed', reason, finishedAt: iso(clock.now()) });
      throw error;
    }
    try {
      for (const mount of agent.mounts) {
        audit.append(AUDIT_KINDS.policyMount, id, {
          source: mount.source,
          target: mount.target,
          mode: mount.writable ? 'rw' : 'ro',
        });
      }
      if (agent.network.allow.length > 0) {
        audit.append(AUDIT_KINDS.policyNetwork, id, {
          allow: [...agent.network.allow],
          deny: [...agent.network.deny],
        });
      }
      audit.append(AUDIT_KINDS.executionStarted, id, {
        instance: instanceId,
        ...(warm ? { warm } : {}),
        ...(request.fence === undefined ? {} : { fence: request.fence }),
      });
      // Fail closed: the agent runs only once the ledger holds what it was granted.
      await audit.flush();
      await store.updateExecution(id, { status: 'running', startedAt: iso(clock.now()) });
    } catch (error) {
      await runtime.terminate(instanceId).catch(() => {});
      throw error;
    }
    request.onStarted?.(id, { warm });
    const taskInput: TaskInput = {
      input: (request.queued ? request.queued.input : request.input) ?? null,
      onLog,
      ...(request.signal ? { signal: request.signal } : {}),
    };
    // Each runner releases the agent before its first await: onExecuting then runs after the release.
    const running =
      agent.task === undefined
        ? liveCode
          ? runLiveCode(deps, agent, instanceId, taskInput, liveSession)
          : runtime.execute(instanceId, taskInput)
        : runDeclarative(deps, agent, id, instanceId, taskInput, secretsEnv, llmToken, request.requestedBy);
    try {
      request.onExecuting?.();
    } catch {
      // Background work never fails the execution.
    }
    const ran = await running;
    const result =
      agent.task === undefined && agent.validation?.length && ran.status === 'succeeded'
        ? await validateCode(deps, agent, id, ran, taskInput)
        : ran;
    ticker.cancel();
    await flush();
    if (networkAuditError !== undefined) throw networkAuditError;
    const violations: Violation[] = [
      ...result.violations.map((violation) => ({ ...violation, message: clean(violation.message) })),
      ...[...networkDenials.values()].map(
        ({ rule, message, count }): Violation => ({ kind: 'network', rule, message, count }),
      ),
      ...(budgetSpent === undefined
        ? []
        : [
            {
              kind: 'budget',
              rule: `${budgetSpent.rule ?? 'spec.llm.budget'}.${budgetSpent.budget}`,
              message:
                budgetSpent.rule === undefined
                  ? `the LLM ${budgetSpent.budget} budget of this execution is used up${budgetSpent.refused > 0 ? `; ${budgetSpent.refused} call(s) refused and the execution ended` : ''} (raise spec.llm.budget.${budgetSpent.budget}, or make fewer/smaller calls)`
                  : `the server's LLM ${budgetSpent.budget} budget ${budgetSpent.rule} (shared across executions) is used up; ${budgetSpent.refused} call(s) refused and the execution ended (the operator sets it in the server config)`,
              count: Math.max(1, budgetSpent.refused),
            } satisfies Violation,
          ]),
      ...[...swarmRefusals.values()].map((v) => ({ ...v, message: clean(v.message) })),
    ];
    for (const violation of result.violations) {
      if (violation.kind !== 'limit') continue;
      audit.append(AUDIT_KINDS.limitHit, id, { rule: violation.rule, count: violation.count ?? null });
    }
    const durationMs = Math.round(result.finishedAtMs - result.releasedAtMs);
    // A cancellation says who cancelled (the abort reason) rather than the runtime's generic "cancelled".
    const abortReason = request.signal?.aborted ? request.signal.reason : undefined;
    const rawReason = budgetKilled
      ? `budget: the LLM ${budgetSpent?.budget ?? 'calls'} budget (${budgetSpent?.rule ?? 'spec.llm.budget'}) is used up`
      : result.status === 'killed' && typeof abortReason === 'string'
        ? abortReason
        : result.reason;
    const status: TerminalStatus = budgetKilled ? 'killed' : result.status;
    const reason = rawReason === null ? null : clean(rawReason);
    const usage = llmUsage();
    if (usage !== undefined) deps.onLlmUsage?.(usage);
    const output = redactJson(result.output, redactor);
    if (deps.memory !== undefined && ownScope(agent) !== undefined) {
      // Indexed before the execution is reported ended, so the next execution can recall it. Never fails it.
      const input = redactJson((request.queued ? request.queued.input : request.input) ?? null, redactor);
      const memoryLine = await indexExecution(
        deps.memory,
        agent,
        id,
        { input, output, status, reason },
        memoryLogs ?? new LogSummary(),
        clean,
      ).then(
        (indexed) => (indexed.id === null ? null : { indexed: indexed.id }),
        (error: unknown) => ({
          indexed: null,
          error: clean(isAegisError(error) ? error.message : String(error)).slice(0, 500),
        }),
      );
      if (memoryLine !== null) {
        pending.push({
          stream: 'system',
          text: JSON.stringify({ memory: memoryLine }),
          ts: iso(clock.now()),
        });
        await flush();
      }
    }
    const fenced = await lostClaim();
    if (fenced !== undefined) {
      auditAbandoned(status, reason);
      throw fenced;
    }
    auditFinished(status, result.exitCode, reason, durationMs, usage);
    // The store says "ended" only once the ledger does (a crash in between is settled by recovery).
    await audit.durable();
    return await store.updateExecution(id, {
      status,
      exitCode: result.exitCode,
      reason,
      output,
      violations,
      finishedAt: iso(result.finishedAtMs),
      durationMs,
      ...(usage === undefined ? {} : { usage: { llm: usage } }),
    });
  } catch (error) {
    ticker.cancel();
    await flush().catch(() => {});
    if (isAegisError(error) && error.code === 'FENCED') {
      // Another node holds or settled it: nothing terminal of ours goes into the ledger or the store.
      try {
        auditAbandoned('failed', clean(error.message));
      } catch {
        // the ledger itself failed; the holder's entries are the record
      }
      throw error;
    }
    const current = await store.getExecution(id);
    if (current && !isTerminal(current.status)) {
      const reason = clean(`internal error: ${error instanceof Error ? error.message : String(error)}`);
      try {
        auditFinished('failed', null, reason, null);
      } catch {
        // The ledger itself may be what failed; the store still records the outcome.
      }
      await store.updateExecution(id, { status: 'failed', reason, finishedAt: iso(clock.now()) });
    }
    if (isAegisError(error)) throw error;
    // The cause, redacted, is in the message (a local `aegis run` shows it; the API answers INTERNAL generically).
    throw new AegisError(
      'INTERNAL',
      `execution ${id} failed inside AEGIS: ${clean(error instanceof Error ? error.message : String(error)).slice(0, 500)}`,
      { cause: error, hint: `its record and ledger say the same: aegis audit show ${id}` },
    );
  } finally {
    ticker.cancel();
    try {
      span?.end(outcome, clock.now());
    } catch {
      // tracing is best effort
    }
    unsubscribeLlm?.();
    if (llmToken !== undefined) deps.llm?.gateway.revoke(llmToken);
    // Its swarm locks end with it (audited `released`, reason holder ended); waiters are woken.
    if (agent.swarm !== undefined) await deps.swarm?.locks.executionEnded(id).catch(() => {});
  }
}

/**
 * A code agent's `spec.execution.validation`, once its run succeeded: the loop's validators (validateCodeOutput)
 * against its output and exit code. One `agent.iteration` entry (iteration 1, no model or tool calls of the loop,
 * verdicts, the output's digest) and one `system` log line `{"validation": …}` with the verdicts; a failed verdict
 * ends the execution `failed`, reason `validation: <validator>: <detail>` (a judge's reason included). A validator
 * that cannot run (no judge here, the judge chain too deep) fails it the same way.
 */
async function validateCode<T extends TaskOutput>(
  deps: RunAgentDeps,
  agent: CompiledAgent,
  id: string,
  ran: T,
  task: TaskInput,
): Promise<T> {
  const loop = deps.loop as DeclarativeWiring;
  let verdicts: readonly Verdict[];
  try {
    verdicts = await validateCodeOutput(
      { jsonSchema: loop.jsonSchema, ...(loop.judge ? { judge: loop.judge } : {}) },
      agent.validation ?? [],
      {
        output: ran.output,
        exitCode: ran.exitCode,
        task: agent.description ?? `the agent ${agent.name}`,
        input: task.input,
        ...(task.signal ? { signal: task.signal } : {}),
      },
    );
  } catch (error) {
    if (task.signal?.aborted) throw error;
    const message = error instanceof AegisError ? error.message : String(error);
    verdicts = [{ validator: 'judge', passed: false, detail: `could not run: ${message}` }];
  }
  const passed = verdicts.every((verdict) => verdict.passed);
  task.onLog('system', JSON.stringify({ validation: { passed, verdicts } }));
  deps.audit.append(AUDIT_KINDS.agentIteration, id, {
    iteration: 1,
    modelCalls: 0,
    toolCalls: 0,
    passed,
    verdicts: verdicts.map((verdict) => ({ validator: verdict.validator, passed: verdict.passed })),
    answerDigest: loop.sha256Hex(canonicalJson((ran.output ?? null) as JsonValue)),
    // A code agent has no loop transcript: the digest of an empty one.
    transcriptDigest: loop.sha256Hex('[]'),
  });
  if (passed) return ran;
  const failures = verdicts
    .filter((verdict) => !verdict.passed)
    .map((verdict) => `${verdict.validator}: ${verdict.detail}`)
    .join('; ');
  return { ...ran, status: 'failed', reason: `validation: ${failures}`.slice(0, 1000) };
}

/**
 * A declarative agent's run (spec.task): open the live instance, run the loop (model through the gateway under the
 * execution's token; tools inside the instance), each trajectory step one `system` log line, then end the instance.
 * The limits apply as to code: the loop stops at spec.security.resources.timeout (status `timeout`).
 */
async function runDeclarative(
  deps: RunAgentDeps,
  agent: CompiledAgent,
  executionId: string,
  instanceId: string,
  task: TaskInput,
  secretsEnv: Readonly<Record<string, string>>,
  llmToken: string | undefined,
  /** The key that started the execution: it (and admins) may approve the loop's `approval: required` calls. */
  owner?: string,
): Promise<TaskOutput> {
  const loop = deps.loop as DeclarativeWiring;
  const { clock } = deps;
  const releasedAtMs = clock.now();
  const stop = new AbortController();
  let timedOut = false;
  const timer = clock.setTimeout(
    () => {
      timedOut = true;
      stop.abort();
    },
    agent.limits.timeoutMs,
    { background: true },
  );
  const onAbort = () => stop.abort();
  task.signal?.addEventListener('abort', onAbort, { once: true });
  const denied = new Map<string, { message: string; count: number }>();
  const onStep = (step: LoopStep) => {
    if (step.step === 'tool' && step.outcome === 'denied') {
      const seen = denied.get(step.tool);
      if (seen) seen.count++;
      else denied.set(step.tool, { message: step.result.slice(0, 500), count: 1 });
    }
    task.onLog('system', JSON.stringify({ loop: step }));
  };
  const end = (status: TaskOutput['status'], reason: string | null, output: unknown): TaskOutput => ({
    status,
    exitCode: null,
    reason,
    output,
    limitsHit: timedOut ? ['timeout'] : [],
    violations: [...denied].map(([tool, { message, count }]) => ({
      kind: 'tool',
      rule: `spec.tools.${tool}`,
      message,
      count,
    })),
    releasedAtMs,
    finishedAtMs: clock.now(),
  });
  try {
    if (llmToken === undefined || deps.llm === undefined) {
      throw new AegisError('RUNTIME_UNAVAILABLE', 'a declarative agent needs the LLM gateway (spec.llm)');
    }
    // Recall never fails the execution: a store or embedder problem is a trajectory line, the loop runs without.
    const recalled =
      deps.memory === undefined
        ? undefined
        : await recallForPrompt(deps.memory, agent, executionId, valueText(task.input)).catch(
            (error: unknown) => {
              const message = isAegisError(error) ? error.message : String(error);
              task.onLog(
                'system',
                JSON.stringify({ loop: { step: 'recall', error: message.slice(0, 500) } }),
              );
              return undefined;
            },
          );
    if (recalled !== undefined && recalled.scores.length > 0)
      task.onLog('system', JSON.stringify({ loop: { step: 'recall', memories: recalled.scores } }));
    const session = await loop.live.openLive(instanceId, {
      ...sandboxPathRoots(agent),
      maxFileBytes: loop.maxFileBytes ?? 16 * 1024 ** 2,
    });
    const outcome = await runAgentLoop(
      {
        model: gatewayModel(deps.llm.gateway, llmToken),
        tools: gatewayTools(loop.tools, {
          id: executionId,
          agent,
          session,
          env: { ...agent.env, ...secretsEnv },
          by: 'loop',
          owner,
        }),
        jsonSchema: loop.jsonSchema,
        ...(loop.judge ? { judge: loop.judge } : {}),
        audit: deps.audit,
        sha256Hex: loop.sha256Hex,
        onStep,
      },
      {
        executionId,
        task: agent.task as NonNullable<CompiledAgent['task']>,
        input: task.input,
        ...(recalled === undefined ? {} : { memories: recalled.prompt }),
        signal: stop.signal,
      },
    );
    return end(outcome.status, outcome.reason, outcome.output);
  } catch (error) {
    if (timedOut) return end('timeout', `timeout: the loop ran past ${agent.limits.timeoutMs} ms`, null);
    if (stop.signal.aborted) return end('killed', 'cancelled', null);
    if (isAegisError(error) && error.code !== 'INTERNAL') return end('failed', error.message, null);
    throw error;
  } finally {
    timer.cancel();
    task.signal?.removeEventListener('abort', onAbort);
    await loop.live.terminate(instanceId).catch(() => {});
  }
}

/** Where runLiveCode puts the input (the instance's /run/aegis/input.json is read-only and empty when live). */
const LIVE_INPUT = '/tmp/.aegis-input.json';
const LIVE_OUTPUT = '/run/aegis/output.json';
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

/**
 * A code agent granted built-in tools (issue 14): its instance is live, so the gateway runs fs.*, cmd.run and
 * http.fetch inside the same sandbox. The agent's own command is the first command run through the session (a
 * child of the exec agent: same namespaces, seccomp, cgroup, uid, limits), cwd /agent, the sandbox's environment
 * (AEGIS_TOKEN…) with AEGIS_INPUT pointing at a copy of the input (also on stdin). Its exit maps to the status as
 * execute() does (classifyOutcome); the output is /run/aegis/output.json, else the last stdout line.
 */
async function runLiveCode(
  deps: RunAgentDeps,
  agent: CompiledAgent,
  instanceId: string,
  task: TaskInput,
  holder: { current?: LiveSession },
): Promise<TaskOutput> {
  const loop = deps.loop as DeclarativeWiring;
  const { clock } = deps;
  let killedBy: 'timeout' | 'abort' | undefined;
  let session: LiveSession | undefined;
  const kill = (why: 'timeout' | 'abort') => {
    killedBy ??= why;
    session?.kill();
  };
  const timer = clock.setTimeout(() => kill('timeout'), agent.limits.timeoutMs, { background: true });
  const onAbort = () => kill('abort');
  task.signal?.addEventListener('abort', onAbort, { once: true });
  const releasedAtMs = clock.now();
  try {
    const roots = sandboxPathRoots(agent);
    session = await loop.live.openLive(instanceId, {
      readable: [...roots.readable, LIVE_OUTPUT],
      writable: roots.writable,
      maxFileBytes: loop.maxFileBytes ?? 16 * 1024 ** 2,
    });
    holder.current = session;
    if (task.signal?.aborted) kill('abort');
    const inputJson = JSON.stringify(task.input ?? null);
    await session.writeFile(LIVE_INPUT, once(new TextEncoder().encode(inputJson)));
    const { language, entrypoint, command } = agent.runtime;
    const argv = command ?? [HOST_INTERPRETERS[language ?? 'bash'], entrypoint ?? ''];
    const lines = { stdout: new LineSplitter(), stderr: new LineSplitter() };
    let lastStdout: string | undefined;
    const log = (stream: 'stdout' | 'stderr', text: string) => {
      if (stream === 'stdout') lastStdout = text;
      task.onLog(stream, text);
    };
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve, reject) => {
      (session as LiveSession)
        .exec(
          {
            argv,
            cwd: '/agent',
            env: { AEGIS_INPUT: LIVE_INPUT, AEGIS_INPUT_FILE: LIVE_INPUT },
            stdin: true,
          },
          {
            onOutput: (stream, chunk) => {
              for (const text of lines[stream].push(chunk)) log(stream, text);
            },
            onExit: (code, signal) => resolve({ code, signal }),
          },
        )
        .then((proc) => proc.writeStdin(new TextEncoder().encode(`${inputJson}\n`), true))
        .catch(reject);
    });
    const { code, signal } = await exited;
    for (const stream of ['stdout', 'stderr'] as const) {
      const rest = lines[stream].end();
      if (rest !== undefined) log(stream, rest);
    }
    const finishedAtMs = clock.now();
    const usage = session.usage();
    const outcome = classifyOutcome({
      exitCode: code,
      signal: signal === 'ESHUTDOWN' && killedBy !== undefined ? null : signal,
      counters: { oomKills: usage.oomKills, pidsLimitHits: 0, cpuThrottledPeriods: 0 },
      killedBy,
      limits: agent.limits,
    });
    const output = await readOutput(session, lastStdout, task);
    return { ...outcome, output, releasedAtMs, finishedAtMs };
  } catch (error) {
    if (killedBy === undefined) throw error;
    const outcome = classifyOutcome({
      exitCode: null,
      signal: null,
      counters: { oomKills: 0, pidsLimitHits: 0, cpuThrottledPeriods: 0 },
      killedBy,
      limits: agent.limits,
    });
    return { ...outcome, output: null, releasedAtMs, finishedAtMs: clock.now() };
  } finally {
    timer.cancel();
    task.signal?.removeEventListener('abort', onAbort);
    holder.current = undefined;
    await loop.live.terminate(instanceId).catch(() => {});
  }
}

/** /run/aegis/output.json as JSON when the agent wrote one, else its last stdout line if that is JSON. */
async function readOutput(session: LiveSession, lastStdout: string | undefined, task: TaskInput) {
  try {
    const file = await session.readFile(LIVE_OUTPUT);
    if (file.size > MAX_OUTPUT_BYTES) {
      task.onLog(
        'system',
        `output.json is ${file.size} bytes; outputs are capped at ${MAX_OUTPUT_BYTES} — ignored`,
      );
      return null;
    }
    if (file.size > 0) {
      const parts: Uint8Array[] = [];
      for await (const chunk of file.chunks) parts.push(chunk);
      const text = decodeAll(parts);
      try {
        return JSON.parse(text) as unknown;
      } catch (error) {
        task.onLog('system', `${LIVE_OUTPUT} is not valid JSON (${(error as Error).message}); ignored`);
        return null;
      }
    }
  } catch {
    // no output file: fall back to stdout
  }
  if (lastStdout === undefined) return null;
  try {
    return JSON.parse(lastStdout) as unknown;
  } catch {
    return null;
  }
}

function decodeAll(parts: readonly Uint8Array[]): string {
  const decoder = new TextDecoder();
  return parts.map((part) => decoder.decode(part, { stream: true })).join('') + decoder.decode();
}

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

/** Bytes → complete lines (UTF-8 across chunk boundaries); `end` gives the unterminated rest. */
class LineSplitter {
  #decoder = new TextDecoder();
  #partial = '';
  push(chunk: Uint8Array): string[] {
    const parts = (this.#partial + this.#decoder.decode(chunk, { stream: true })).split('\n');
    this.#partial = parts.pop() ?? '';
    return parts.map((line) => line.replace(/\r$/, ''));
  }
  end(): string | undefined {
    const rest = this.#partial + this.#decoder.decode();
    this.#partial = '';
    return rest === '' ? undefined : rest;
  }
}

/**
 * Use-case: change the egress rules of a running execution (connections that start from now on; open ones keep
 * their decision). The new rules are recorded in the ledger (`policy.network`).
 */
export async function updateNetworkPolicy(
  deps: Pick<RunAgentDeps, 'runtime' | 'audit'>,
  executionId: string,
  policy: NetworkPolicy,
): Promise<void> {
  const { runtime, audit } = deps;
  if (!runtime.setNetworkPolicy) {
    throw new AegisError(
      'RUNTIME_UNAVAILABLE',
      `the ${runtime.name} runtime cannot change network rules while an agent runs`,
    );
  }
  if (!(await runtime.setNetworkPolicy(executionId, policy))) {
    throw new AegisError(
      'NOT_FOUND',
      `execution ${executionId} is not running here with an egress proxy (it has ended, or started without network.allow rules)`,
      {
        hint: 'network rules can be changed only while the execution runs, and only when it started with egress granted',
      },
    );
  }
  // Recorded as soon as it applies. Should the ledger fail here, the next egress decision's append fails too, and
  // runAgent then stops the agent (fail closed).
  audit.append(AUDIT_KINDS.policyNetwork, executionId, {
    allow: policy.allow.map((rule) => rule.text),
    deny: policy.deny.map((rule) => rule.text),
  });
  await audit.flush();
}

/**
 * Use-case: on start, settle executions whose owner process died (CLI killed with -9, crash): release what
 * their sandboxes left behind and mark them `killed` with the reason.
 */
export async function reconcileOrphans(
  deps: Pick<RunAgentDeps, 'runtime' | 'store' | 'clock' | 'identity' | 'audit'>,
) {
  const reapedIds = new Set(await deps.runtime.reapOrphans());
  const settled: string[] = [];
  for (const record of await deps.store.listUnfinished()) {
    // Queued executions belong to the server's durable queue; its next start runs them.
    if (record.status === 'queued') continue;
    // A server node's claimed execution: the cluster's sweep settles it (ADR 0100), not this process.
    if (record.node !== undefined) continue;
    if (record.owner && deps.identity.isAlive(record.owner)) continue;
    const reason = 'orchestrator-exited: the process running this execution died; its sandbox was reaped';
    deps.audit.append(AUDIT_KINDS.executionFinished, record.id, {
      status: 'killed',
      exitCode: null,
      reason,
      durationMs: null,
    });
    await deps.store.updateExecution(record.id, {
      status: 'killed',
      reason,
      finishedAt: new Date(deps.clock.now()).toISOString(),
    });
    settled.push(record.id);
    reapedIds.delete(record.id);
  }
  return { settled, reapedWithoutRecord: [...reapedIds] };
}
