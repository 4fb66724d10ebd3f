/**
 * Live sandboxes: a long-lived instance of a deployed agent revision (its manifest is the policy), driven from
 * outside — commands (streamed, resumable, background, killable) and files — under the ledger. Runs on any
 * `LiveRuntime`; PTY, port forwarding and the E2B layer are meant to sit on the same `LiveSession`.
 *
 * Access: creating, exec and files need `execute`, reading needs `read`; a key sees only the sandboxes it created
 * (others answer NOT_FOUND) unless it is admin.
 */
import { AUDIT_KINDS } from '../domain/audit/entry.ts';
import { hasScope, type Principal, requireScope } from '../domain/auth/api-key.ts';
import { leaseExpired, type NodeStatus } from '../domain/cluster/node.ts';
import { AegisError } from '../domain/errors.ts';
import {
  SANDBOX_RESTART_REASON,
  type SandboxRecord,
  type SandboxStatus,
  type SandboxView,
  sandboxNodeLostReason,
  sandboxPath,
  sandboxPathRoots,
} from '../domain/live-sandbox.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import { placeholderMap } from '../domain/secrets/placeholder.ts';
import { createStreamRedactor, Redactor, type StreamRedactor } from '../domain/secrets/redactor.ts';
import type { ToolDescription } from '../domain/tools.ts';
import { resolveSecrets } from './agent-secrets.ts';
import { loadRevision, notFoundAgent } from './agents.ts';
import type { LlmCallRecord } from './llm-gateway.ts';
import { IN_SANDBOX_API_URL, type LlmWiring, llmEnv } from './llm-wiring.ts';
import { networkConnectData, secretUseData } from './policy-audit.ts';
import type {
  AgentBundles,
  AuditLog,
  Clock,
  Ids,
  InSandboxApi,
  InSandboxHandler,
  InstanceSecrets,
  LiveFileEntry,
  LivePortSocket,
  LiveProcess,
  LivePty,
  LivePtyEvents,
  LiveRuntime,
  LiveSession,
  NetworkDecisionEvent,
  ProcessIdentity,
  SecretRandom,
  SecretStore,
  SecretUseEvent,
  Store,
  Timer,
} from './ports.ts';
import type { ToolCallResult, ToolGateway, ToolTarget } from './tools.ts';

export interface LiveSandboxesDeps {
  readonly runtime: LiveRuntime;
  /** Shown and audited as each sandbox's runtime, unless `runtime.nameFor` names the one an agent goes to. */
  readonly runtimeName: string;
  readonly store: Store;
  readonly bundles: AgentBundles;
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly ids: Pick<Ids, 'executionId'>;
  /** This orchestrator process: recorded as each sandbox's holder, so a restart knows which ones it lost. */
  readonly identity: ProcessIdentity;
  /**
   * This cluster node (ADR 0100) and its current epoch: each sandbox's holder is the node id + epoch, so a restart
   * under any hostname, and the node that declares this one dead, know which sandboxes it held. Absent: host + pid.
   */
  readonly node?: { readonly nodeId: string; epoch(): number | undefined };
  /** Where `agent.secrets` values come from; required only by agents that declare secrets. */
  readonly secrets?: SecretStore;
  /** Placeholder randomness; required only by agents that declare secrets. */
  readonly random?: SecretRandom;
  /** The LLM gateway; required only by agents with `spec.llm` (their sandboxes get the in-sandbox API). */
  readonly llm?: LlmWiring;
  /** The tool gateway; required only by agents with `spec.tools` (their sandboxes get /v1/tools in the in-sandbox API). */
  readonly tools?: ToolsWiring;
}

/** The tool gateway and its in-sandbox face (adapters/tools/http-handler.ts), built by the composition root. */
export interface ToolsWiring {
  readonly gateway: ToolGateway;
  /** The handler one sandbox is served: `/v1/tools…` for `token`, everything else to `next` (the LLM routes). */
  readonly handlerFor: (
    token: string,
    tools: InSandboxTools,
    next: InSandboxHandler | undefined,
  ) => InSandboxHandler;
  /** A fresh unguessable token, for sandboxes that have no LLM token to share. */
  readonly newToken: () => string;
}

/** What the in-sandbox `/v1/tools` routes call: the gateway, bound to one sandbox. */
export interface InSandboxTools {
  list(): Promise<ToolDescription[]>;
  call(name: string, args: unknown): Promise<ToolCallResult>;
}

export interface LiveSandboxesOptions {
  /** Live sandboxes on this node at once. */
  readonly maxSandboxes: number;
  /** Largest file uploaded or downloaded. @default 1 GiB */
  readonly maxFileBytes?: number;
  /** Output kept per command for replay (Last-Event-ID); older events are dropped. @default 8 MiB */
  readonly replayBytes?: number;
  /** Output kept for replay across all of one sandbox's commands. @default 32 MiB */
  readonly sandboxReplayBytes?: number;
  /** Commands running at once in one sandbox. @default 32 */
  readonly maxRunningCommands?: number;
  /**
   * Warm sandboxes kept ready per agent revision once one of its sandboxes was created (`--warm-sandboxes`):
   * spawned with the exec agent already answering, so `create` only records it. Agents with secrets or spec.llm
   * are never pooled (their placeholders and tokens are per sandbox). @default 0
   */
  readonly warmPerAgent?: number;
  /** A revision's warm sandboxes are dropped after this long without a create. @default 10 min */
  readonly warmIdleMs?: number;
}

/** A live instance with its exec agent answering, not yet handed to anyone. */
interface Prepared {
  readonly id: string;
  readonly instance: string;
  readonly session: LiveSession;
  readonly wiring: PolicyWiring;
}

/** What a sandbox's instance is spawned with beside its command (`#policyWiring`). */
interface PolicyWiring {
  readonly redactor: Redactor;
  readonly onNetworkDecision: (event: NetworkDecisionEvent) => void;
  readonly secrets: InstanceSecrets | undefined;
  readonly inSandboxApi: InSandboxApi | undefined;
  /** Ends the LLM token and reports (idempotent). */
  release(): void;
  /** Policy events from now on may end `sandbox` (fail closed). */
  bind(sandbox: Sandbox): void;
}

interface WarmPool {
  readonly agent: CompiledAgent;
  readonly ready: Prepared[];
  filling: number;
  lastUsedMs: number;
  idle: Timer | undefined;
}

export interface CreateSandboxRequest {
  /** `name` or `name@revision`. */
  readonly agent: string;
  /** Lifetime; @default the manifest's limits.timeout. */
  readonly timeoutMs?: number;
  /** Ended after this long with no API call and no running command; null: never. */
  readonly idleTimeoutMs?: number | null;
  readonly metadata?: Readonly<Record<string, string>>;
  readonly env?: Readonly<Record<string, string>>;
}

export type { SandboxStatus, SandboxView } from '../domain/live-sandbox.ts';

export interface ExecRequest {
  /** argv, or a string run by `/bin/sh -c`. */
  readonly cmd: readonly string[] | string;
  readonly cwd?: string;
  readonly env?: Readonly<Record<string, string>>;
  /** Written to stdin, then end-of-file (unless `keepStdin`). */
  readonly stdin?: string;
  /** Leave stdin open for `writeStdin`. */
  readonly keepStdin?: boolean;
  readonly timeoutMs?: number;
}

export interface PtyRequest {
  /** argv, or a string run by `/bin/sh -c`; @default an interactive shell (bash, else sh). */
  readonly cmd?: readonly string[] | string;
  readonly cwd?: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly cols: number;
  readonly rows: number;
}

/** What a proxied connection to a sandbox port was (for its `sandbox.port` ledger entry). */
export interface PortRequest {
  readonly method: string;
  /** Path below /ports/{port} (the query string is not recorded). */
  readonly path: string;
  readonly websocket: boolean;
}

export interface PortOutcome {
  /** The upstream's HTTP status (101 for an upgraded WebSocket), null when none came. */
  readonly status: number | null;
  readonly error?: string;
}

export type CommandEvent =
  | { readonly seq: number; readonly type: 'stdout' | 'stderr'; readonly data: string }
  /**
   * Not stored: told to a reader whose position is older than the replay buffer — events up to and including
   * `seq` were dropped (per-command or per-sandbox replay cap). Reading continues with the next kept event.
   */
  | { readonly seq: number; readonly type: 'truncated'; readonly message: string }
  | {
      readonly seq: number;
      readonly type: 'exit';
      readonly exitCode: number | null;
      readonly signal: string | null;
      readonly timedOut: boolean;
    };

export interface CommandView {
  readonly id: string;
  readonly pid: number;
  readonly argv: readonly string[];
  readonly status: 'running' | 'exited';
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  readonly startedAt: string;
  readonly durationMs: number | null;
}

interface Command {
  readonly id: string;
  readonly argv: readonly string[];
  readonly process: LiveProcess;
  readonly startedAtMs: number;
  readonly events: OutputEvent[];
  replayBytes: number;
  /** Highest seq dropped from `events` (0: none). */
  droppedThrough: number;
  nextSeq: number;
  exit: { exitCode: number | null; signal: string | null; durationMs: number } | undefined;
  timedOut: boolean;
  timer: Timer | undefined;
  readonly listeners: Set<() => void>;
  /** Per stream: bytes → text across chunk boundaries (a UTF-8 sequence split by a read is not mangled). */
  readonly decoders: { readonly stdout: Utf8Decoder; readonly stderr: Utf8Decoder };
  /** Per stream, when the agent has secrets: values (or their encodings) split across chunks are still caught. */
  readonly redactors: { readonly stdout: StreamRedactor; readonly stderr: StreamRedactor } | undefined;
  /** Runs on a pseudo-terminal: its output goes to its one client, never into `events`. */
  readonly pty?: boolean;
}

interface Sandbox {
  readonly id: string;
  readonly instance: string;
  /** The runtime it runs on (sandbox, docker, gvisor). */
  readonly runtime: string;
  readonly agent: CompiledAgent;
  readonly revision: number;
  readonly owner: string;
  readonly createdAtMs: number;
  /** Moves forward by the time spent paused (paused time never counts toward the timeout). */
  expiresAtMs: number;
  readonly idleTimeoutMs: number | null;
  readonly metadata: Readonly<Record<string, string>>;
  readonly session: LiveSession;
  readonly commands: Map<string, Command>;
  status: SandboxStatus;
  reason: string | null;
  lastActivityMs: number;
  /** When the current pause began (clock ms), else null. */
  pausedAtMs: number | null;
  lifetime: Timer | undefined;
  idle: Timer | undefined;
  lastUsage: SandboxView['usage'];
  nextCommand: number;
  /** Sum of its commands' `replayBytes`. */
  replayBytes: number;
  /** exec calls past the running-commands check and not yet in `commands`. */
  startingCommands: number;
  /** Secret values (and encodings) of this sandbox; empty without secrets. */
  readonly redactor: Redactor;
  /** Stops the LLM gateway's reports for this sandbox and revokes its token. */
  readonly releaseLlm: () => void;
  /** Proxied port connections open now (they keep the sandbox from idling out). */
  openConnections: number;
  /** `env` of the create request for a sandbox taken warm (its processes started before the request): added to
   * every command's environment. Empty for a cold sandbox, whose environment already holds it. */
  readonly baseEnv: Readonly<Record<string, string>>;
}

/** A streaming UTF-8 decoder (TextDecoder). */
type Utf8Decoder = InstanceType<typeof TextDecoder>;

type OutputEvent = Exclude<CommandEvent, { type: 'truncated' }>;

const MAX_METADATA_KEYS = 64;
/** Ended sandboxes stay readable this long. */
const KEEP_ENDED = 64;
/** The longest timer a runtime can arm (2^31−1 ms, ~24.8 days); longer would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Replay cost of one event beyond its text: a flood of tiny (or empty) chunks is not free. */
const EVENT_OVERHEAD_BYTES = 64;
/** Events kept per command whatever their size. */
const MAX_EVENTS_PER_COMMAND = 65_536;
/** Commands remembered per sandbox (running ones always are); older exited ones are forgotten. */
const MAX_KEPT_COMMANDS = 1024;

function assertTimer(name: string, ms: number | null | undefined): void {
  if (ms === null || ms === undefined) return;
  if (!Number.isFinite(ms) || ms <= 0 || ms > MAX_TIMER_MS) {
    throw new AegisError(
      'USAGE',
      `${name} must be between 1 ms and ${MAX_TIMER_MS} ms (~24.8 days), got ${ms}`,
      {
        problems: [{ path: `body.${name}`, message: 'out of range' }],
        hint: 'ask for a shorter timeout; keep a sandbox alive longer by refreshing its timeout',
      },
    );
  }
}

export class LiveSandboxes {
  readonly #deps: LiveSandboxesDeps;
  readonly #maxSandboxes: number;
  readonly #maxFileBytes: number;
  readonly #replayBytes: number;
  readonly #sandboxReplayBytes: number;
  readonly #maxRunningCommands: number;
  readonly #sandboxes = new Map<string, Sandbox>();
  #starting = 0;
  readonly #warmPerAgent: number;
  readonly #warmIdleMs: number;
  /** Warm sandboxes by `agent@revision`. */
  readonly #pools = new Map<string, WarmPool>();
  #closing = false;

  constructor(deps: LiveSandboxesDeps, options: LiveSandboxesOptions) {
    this.#deps = deps;
    this.#maxSandboxes = options.maxSandboxes;
    this.#maxFileBytes = options.maxFileBytes ?? 1024 ** 3;
    this.#replayBytes = options.replayBytes ?? 8 * 1024 ** 2;
    this.#sandboxReplayBytes = options.sandboxReplayBytes ?? 32 * 1024 ** 2;
    this.#maxRunningCommands = options.maxRunningCommands ?? 32;
    this.#warmPerAgent = options.warmPerAgent ?? 0;
    this.#warmIdleMs = options.warmIdleMs ?? 10 * 60_000;
  }

  /** Warm sandboxes ready to be taken on this node. */
  warm(): number {
    let n = 0;
    for (const pool of this.#pools.values()) n += pool.ready.length;
    return n;
  }

  /** Warm sandboxes ready or being made: what they hold of `--max-sandboxes`. */
  #warmHeld(): number {
    let n = 0;
    for (const pool of this.#pools.values()) n += pool.ready.length + pool.filling;
    return n;
  }

  /** Live sandboxes now (what `--max-sandboxes` counts). */
  running(): number {
    let n = this.#starting;
    for (const sandbox of this.#sandboxes.values()) if (sandbox.status !== 'terminated') n++;
    return n;
  }

  /** Every sandbox this process holds that has not ended, as the API shows it (metrics read it at scrape time). */
  held(): SandboxView[] {
    return [...this.#sandboxes.values()]
      .filter((sandbox) => sandbox.status !== 'terminated')
      .map((sandbox) => this.#view(sandbox));
  }

  async create(principal: Principal, request: CreateSandboxRequest): Promise<SandboxView> {
    requireScope(principal, 'execute', 'creating a sandbox');
    if (this.running() >= this.#maxSandboxes) {
      throw new AegisError(
        'QUEUE_FULL',
        `this node holds its maximum of ${this.#maxSandboxes} live sandboxes`,
        {
          hint: 'delete a sandbox you no longer need (aegis sandbox rm ID), or retry later',
          details: { retryAfterMs: 5000 },
        },
      );
    }
    checkMetadata(request.metadata);
    this.#starting++;
    try {
      const { agent, revision } = await this.#resolve(request.agent);
      const { clock, audit } = this.#deps;
      const timeoutMs = request.timeoutMs ?? agent.limits.timeoutMs;
      assertTimer('timeout', timeoutMs);
      assertTimer('idleTimeout', request.idleTimeoutMs);
      const key = `${agent.name}@${revision.revision}`;
      const warm = this.#poolable(agent) ? this.#takeWarm(key) : undefined;
      const prepared =
        warm ??
        (await this.#prepare(
          agent,
          { ...agent, env: { ...agent.env, ...(request.env ?? {}) } },
          principal.id,
        ));
      const { id, instance, session, wiring } = prepared;
      const runtimeName = this.#deps.runtime.nameFor?.(agent) ?? this.#deps.runtimeName;
      const now = clock.now();
      const sandbox: Sandbox = {
        id,
        instance,
        runtime: runtimeName,
        agent,
        revision: revision.revision,
        owner: principal.id,
        createdAtMs: now,
        expiresAtMs: now + timeoutMs,
        idleTimeoutMs: request.idleTimeoutMs ?? null,
        metadata: { ...(request.metadata ?? {}) },
        session,
        commands: new Map(),
        status: 'running',
        reason: null,
        lastActivityMs: now,
        pausedAtMs: null,
        lifetime: undefined,
        idle: undefined,
        lastUsage: null,
        nextCommand: 1,
        replayBytes: 0,
        startingCommands: 0,
        redactor: wiring.redactor,
        releaseLlm: wiring.release,
        openConnections: 0,
        baseEnv: warm ? { ...(request.env ?? {}) } : {},
      };
      wiring.bind(sandbox);
      this.#sandboxes.set(id, sandbox);
      this.#forgetOld();
      audit.append(AUDIT_KINDS.sandboxCreated, id, {
        agent: agent.name,
        revision: revision.revision,
        runtime: runtimeName,
        by: principal.id,
        timeoutMs,
        idleTimeoutMs: sandbox.idleTimeoutMs,
        ...(warm ? { warm: true } : {}),
      });
      if (this.#poolable(agent)) this.#refill(key, agent);
      try {
        await this.#persist(sandbox);
      } catch (error) {
        await this.#end(sandbox, 'store-failed', null);
        throw error;
      }
      this.#armLifetime(sandbox);
      this.#armIdle(sandbox);
      void session.closed.then(() => this.#end(sandbox, 'exited', null));
      await audit.durable();
      return this.#view(sandbox);
    } finally {
      this.#starting--;
    }
  }

  /** Yours (all with admin): those this process holds, then the stored ones (ended, or held by another node). */
  async listSandboxes(principal: Principal): Promise<SandboxView[]> {
    requireScope(principal, 'read', 'listing sandboxes');
    const here = [...this.#sandboxes.values()]
      .filter((sandbox) => this.#mayTouch(principal, sandbox))
      .map((sandbox) => this.#view(sandbox));
    const stored = (await this.#deps.store.listSandboxes({ limit: LIST_STORED }))
      .filter((record) => !this.#sandboxes.has(record.id) && this.#mayTouch(principal, record))
      .map(viewOf);
    return [...here, ...stored];
  }

  async get(principal: Principal, id: string): Promise<SandboxView> {
    requireScope(principal, 'read', 'reading a sandbox');
    if (this.#sandboxes.has(id)) return this.#view(this.#find(principal, id));
    const record = await this.#deps.store.getSandbox(id);
    if (record === undefined || !this.#mayTouch(principal, record)) throw notFoundSandbox(id);
    return viewOf(record);
  }

  /**
   * After a restart: every sandbox the store says is running or paused whose holder is gone is recorded
   * `terminated` — `orchestrator-restarted` for this node's previous life (same node id, an older epoch, any
   * hostname), `node-lost` for a node the registry has as dead or no longer has (the sweeper that declared it dead
   * died before marking them). A sandbox of another live node is its own, even at an older epoch: that node's
   * restart reaps it. Records from before the cluster (no node in the holder) go by host + pid. Processes and
   * cgroups are the runtime's to reap (`reapOrphans`, run by Executions.recover before this).
   */
  async recover(): Promise<string[]> {
    const { store, identity, clock, node } = this.#deps;
    const me = identity.current();
    const epoch = node?.epoch();
    const at = new Date(clock.now()).toISOString();
    let registry: Map<string, NodeStatus> | undefined;
    const reaped: string[] = [];
    for (const record of await store.listSandboxes({ unfinished: true })) {
      if (this.#sandboxes.has(record.id)) continue;
      const holder = record.holder;
      let reason = SANDBOX_RESTART_REASON;
      if (holder?.node !== undefined && node !== undefined) {
        if (holder.node === node.nodeId) {
          if (holder.epoch === epoch) continue;
        } else {
          registry ??= new Map((await store.listNodes()).map((n) => [n.id, n]));
          const holding = registry.get(holder.node);
          if (
            holding !== undefined &&
            holding.state !== 'dead' &&
            !leaseExpired(holding.leaseExpiresAt, at)
          ) {
            continue;
          }
          reason = sandboxNodeLostReason(holder.node);
        }
      } else {
        const mine =
          holder !== null &&
          holder.host === me.host &&
          holder.pid === me.pid &&
          holder.startTicks === me.startTicks;
        if (mine || (holder !== null && identity.isAlive(holder))) continue;
      }
      await this.#markEnded(record, reason, at);
      reaped.push(record.id);
    }
    if (reaped.length > 0) await this.#deps.audit.flush();
    return reaped;
  }

  /**
   * The cluster declared node `nodeId` dead (this node's sweep won `declareNodeDead`): the sandboxes it held are
   * recorded `terminated`, reason `node-lost`. Their processes die with that node or are reaped when it returns
   * (fenced out: `reapAll`; restarted: `recover` and the runtime's `reapOrphans`).
   */
  async nodeLost(nodeId: string): Promise<string[]> {
    if (nodeId === this.#deps.node?.nodeId) return [];
    const at = new Date(this.#deps.clock.now()).toISOString();
    const ended: string[] = [];
    for (const record of await this.#deps.store.listSandboxes({ unfinished: true })) {
      if (record.holder?.node !== nodeId || this.#sandboxes.has(record.id)) continue;
      await this.#markEnded(record, sandboxNodeLostReason(nodeId), at);
      ended.push(record.id);
    }
    if (ended.length > 0) await this.#deps.audit.flush();
    return ended;
  }

  /** Records a sandbox no process of this node runs as terminated (audited). */
  async #markEnded(record: SandboxRecord, reason: string, at: string): Promise<void> {
    this.#deps.audit.append(AUDIT_KINDS.sandboxTerminated, record.id, { reason, by: null });
    await this.#deps.store.putSandbox({
      ...record,
      status: 'terminated',
      reason,
      holder: null,
      expiresAt: record.status === 'running' && record.expiresAt < at ? record.expiresAt : at,
    });
  }

  async kill(principal: Principal, id: string): Promise<SandboxView> {
    requireScope(principal, 'execute', 'deleting a sandbox');
    const sandbox = await this.#local(principal, id);
    await this.#end(sandbox, 'deleted', principal.id);
    return this.#view(sandbox);
  }

  /**
   * Freezes every process of the sandbox (cgroup freezer): it uses no CPU, commands and file operations are refused
   * until `resume`, and neither its timeout nor its idle timeout runs meanwhile.
   */
  async pause(principal: Principal, id: string): Promise<SandboxView> {
    requireScope(principal, 'execute', 'pausing a sandbox');
    const sandbox = await this.#localRunning(principal, id);
    sandbox.lifetime?.cancel();
    sandbox.idle?.cancel();
    sandbox.pausedAtMs = this.#deps.clock.now();
    sandbox.status = 'paused';
    try {
      await sandbox.session.pause();
    } catch (error) {
      await sandbox.session.resume().catch(() => {});
      this.#unpause(sandbox);
      throw error;
    }
    this.#deps.audit.append(AUDIT_KINDS.sandboxPaused, sandbox.id, { by: principal.id });
    await this.#persist(sandbox);
    return this.#view(sandbox);
  }

  /** Lets a paused sandbox run again; its deadline moves forward by the time it spent paused. */
  async resume(principal: Principal, id: string): Promise<SandboxView> {
    requireScope(principal, 'execute', 'resuming a sandbox');
    const sandbox = await this.#local(principal, id);
    if (sandbox.status !== 'paused') {
      throw new AegisError('CONFLICT', `sandbox ${id} is ${sandbox.status}, not paused`, {
        hint: sandbox.status === 'running' ? 'nothing to do' : 'create a new one: POST /v1/sandboxes',
      });
    }
    await sandbox.session.resume();
    const pausedMs = this.#unpause(sandbox);
    this.#deps.audit.append(AUDIT_KINDS.sandboxResumed, sandbox.id, {
      by: principal.id,
      pausedMs,
      expiresAt: new Date(sandbox.expiresAtMs).toISOString(),
    });
    await this.#persist(sandbox);
    return this.#view(sandbox);
  }

  /**
   * A new lifetime counted from now (E2B's `setTimeout`; keep-alive): the sandbox now ends `timeoutMs` from now,
   * sooner or later than before. A paused sandbox's deadline moves on resume as usual.
   */
  async setLifetime(principal: Principal, id: string, timeoutMs: number): Promise<SandboxView> {
    requireScope(principal, 'execute', 'changing a sandbox timeout');
    assertTimer('timeout', timeoutMs);
    const sandbox = await this.#local(principal, id);
    if (sandbox.status === 'terminated') throw notFoundSandbox(id);
    const now = this.#deps.clock.now();
    // While paused, the deadline is shifted by the pause length on resume: count from the pause's start.
    sandbox.expiresAtMs = (sandbox.pausedAtMs ?? now) + timeoutMs;
    if (sandbox.status === 'running') this.#armLifetime(sandbox);
    this.#touch(sandbox);
    await this.#persist(sandbox);
    return this.#view(sandbox);
  }

  /** Back to running: the paused time is added to the deadline, the timers re-armed. */
  #unpause(sandbox: Sandbox): number {
    const now = this.#deps.clock.now();
    const pausedMs = Math.max(0, now - (sandbox.pausedAtMs ?? now));
    sandbox.expiresAtMs += pausedMs;
    sandbox.lastActivityMs = now;
    sandbox.pausedAtMs = null;
    sandbox.status = 'running';
    this.#armLifetime(sandbox);
    this.#armIdle(sandbox);
    return pausedMs;
  }

  #armLifetime(sandbox: Sandbox): void {
    sandbox.lifetime?.cancel();
    const dueIn = Math.max(0, sandbox.expiresAtMs - this.#deps.clock.now());
    sandbox.lifetime = this.#deps.clock.setTimeout(() => void this.#end(sandbox, 'timeout', null), dueIn, {
      background: true,
    });
  }

  async exec(principal: Principal, id: string, request: ExecRequest): Promise<CommandView> {
    requireScope(principal, 'execute', 'running a command in a sandbox');
    assertTimer('timeout', request.timeoutMs);
    const sandbox = await this.#localRunning(principal, id);
    const argv = typeof request.cmd === 'string' ? ['/bin/sh', '-c', request.cmd] : [...request.cmd];
    if (argv.length === 0 || argv[0] === '') {
      throw new AegisError('USAGE', 'body.cmd: an empty command', { hint: 'e.g. {"cmd": ["ls", "-la"]}' });
    }
    const cwd = sandboxPath(request.cwd ?? '/workspace', 'body.cwd');
    this.#assertRoom(sandbox, argv, principal);
    const commandId = `c${sandbox.nextCommand++}`;
    const { clock } = this.#deps;
    const startedAtMs = clock.now();
    let command: Command | undefined;
    const early: Parameters<Parameters<LiveSession['exec']>[1]['onOutput']>[] = [];
    let earlyExit: [number | null, string | null] | undefined;
    sandbox.startingCommands++;
    let process: LiveProcess;
    try {
      process = await sandbox.session.exec(
        {
          argv,
          cwd,
          env: { ...sandbox.baseEnv, ...(request.env ?? {}) },
          stdin: request.stdin !== undefined || request.keepStdin === true,
        },
        {
          onOutput: (stream, chunk) => {
            if (command) this.#output(sandbox, command, stream, chunk);
            else if (early.length < MAX_EVENTS_PER_COMMAND) early.push([stream, chunk]);
          },
          onExit: (code, signal) => {
            if (command) this.#exited(sandbox, command, code, signal, principal.id);
            else earlyExit = [code, signal];
          },
        },
      );
    } finally {
      sandbox.startingCommands--;
    }
    command = {
      id: commandId,
      argv,
      process,
      startedAtMs,
      events: [],
      replayBytes: 0,
      droppedThrough: 0,
      nextSeq: 1,
      exit: undefined,
      timedOut: false,
      timer: undefined,
      listeners: new Set(),
      decoders: { stdout: new TextDecoder(), stderr: new TextDecoder() },
      redactors:
        sandbox.redactor.maxLength === 0
          ? undefined
          : {
              stdout: createStreamRedactor(sandbox.redactor),
              stderr: createStreamRedactor(sandbox.redactor),
            },
    };
    sandbox.commands.set(commandId, command);
    this.#forgetOldCommands(sandbox);
    for (const [stream, chunk] of early) this.#output(sandbox, command, stream, chunk);
    if (earlyExit) this.#exited(sandbox, command, earlyExit[0], earlyExit[1], principal.id);
    const running = command;
    if (request.timeoutMs !== undefined && !running.exit) {
      running.timer = clock.setTimeout(
        () => {
          running.timedOut = true;
          void running.process.kill('SIGKILL').catch(() => {});
        },
        request.timeoutMs,
        { background: true },
      );
    }
    if (request.stdin !== undefined) {
      await process.writeStdin(new TextEncoder().encode(request.stdin), request.keepStdin !== true);
    }
    this.#touch(sandbox);
    return commandView(running);
  }

  /**
   * Runs a command on a pseudo-terminal (docs/adr/0068-live-sandbox-pty.md). Its bytes go to `events` only —
   * never replayed, never audited; it is a command like the others otherwise (counted, listed, killable, and
   * its `sandbox.exec` entry says `pty: true`).
   */
  async openPty(
    principal: Principal,
    id: string,
    request: PtyRequest,
    events: LivePtyEvents,
  ): Promise<{ command: CommandView; pty: LivePty }> {
    requireScope(principal, 'execute', 'opening a terminal in a sandbox');
    const sandbox = await this.#localRunning(principal, id);
    const open = sandbox.session.openPty?.bind(sandbox.session);
    if (!open) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `the ${this.#deps.runtimeName} runtime offers no terminal in live sandboxes`,
        { hint: 'run commands without a terminal: POST /v1/sandboxes/{id}/commands' },
      );
    }
    for (const [name, value] of [
      ['cols', request.cols],
      ['rows', request.rows],
    ] as const) {
      if (!Number.isInteger(value) || value < 1 || value > 1000) {
        throw new AegisError('USAGE', `query.${name} must be an integer from 1 to 1000, got ${value}`, {
          problems: [{ path: `query.${name}`, message: 'out of range' }],
        });
      }
    }
    const argv =
      request.cmd === undefined
        ? ['/bin/sh', '-c', 'command -v bash >/dev/null && exec bash -i || exec sh -i']
        : typeof request.cmd === 'string'
          ? ['/bin/sh', '-c', request.cmd]
          : [...request.cmd];
    if (argv.length === 0 || argv[0] === '') {
      throw new AegisError('USAGE', 'query.cmd: an empty command', { hint: 'e.g. ?cmd=bash' });
    }
    const cwd = sandboxPath(request.cwd ?? '/workspace', 'query.cwd');
    this.#assertRoom(sandbox, argv, principal);
    const startedAtMs = this.#deps.clock.now();
    let command: Command | undefined;
    let earlyExit: [number | null, string | null] | undefined;
    sandbox.startingCommands++;
    let pty: LivePty;
    try {
      pty = await open(
        {
          argv,
          cwd,
          env: { ...sandbox.baseEnv, ...(request.env ?? {}) },
          cols: request.cols,
          rows: request.rows,
        },
        {
          onOutput: (chunk) => {
            this.#touch(sandbox);
            events.onOutput(chunk);
          },
          onExit: (code, signal) => {
            if (command) this.#exited(sandbox, command, code, signal, principal.id);
            else earlyExit = [code, signal];
            events.onExit(code, signal);
          },
        },
      );
    } finally {
      sandbox.startingCommands--;
    }
    command = {
      id: `c${sandbox.nextCommand++}`,
      argv,
      process: { pid: pty.pid, writeStdin: (chunk) => pty.write(chunk), kill: (signal) => pty.kill(signal) },
      startedAtMs,
      events: [],
      replayBytes: 0,
      droppedThrough: 0,
      nextSeq: 1,
      exit: undefined,
      timedOut: false,
      timer: undefined,
      listeners: new Set(),
      // A terminal's bytes go to its one client, not through these.
      decoders: { stdout: new TextDecoder(), stderr: new TextDecoder() },
      redactors: undefined,
      pty: true,
    };
    sandbox.commands.set(command.id, command);
    this.#forgetOldCommands(sandbox);
    if (earlyExit) this.#exited(sandbox, command, earlyExit[0], earlyExit[1], principal.id);
    this.#touch(sandbox);
    return { command: commandView(command), pty };
  }

  /**
   * Opens a connection to 127.0.0.1:`port` inside the sandbox for the API's port proxy
   * (docs/adr/0069-live-sandbox-ports.md): only ports the manifest exposes (spec.security.network.expose); a
   * refusal is audited. Call `finish` when the connection ends: it writes the `sandbox.port` ledger entry.
   */
  async connectPort(
    principal: Principal,
    id: string,
    port: number,
    request: PortRequest,
  ): Promise<{ socket: LivePortSocket; finish(outcome: PortOutcome): void }> {
    requireScope(principal, 'execute', 'reaching a port of a sandbox');
    const sandbox = await this.#local(principal, id);
    if (sandbox.status === 'terminated') {
      throw new AegisError('NOT_FOUND', `sandbox ${id} has ended (${sandbox.reason}); its ports are gone`, {
        hint: 'create a new one: POST /v1/sandboxes',
      });
    }
    const startedAtMs = this.#deps.clock.now();
    const entry = (fields: {
      status: number | null;
      bytesIn: number;
      bytesOut: number;
      refused?: string;
      error?: string;
    }) =>
      this.#deps.audit.append(AUDIT_KINDS.sandboxPort, sandbox.id, {
        port,
        method: request.method.slice(0, 32),
        path: (request.path.split('?')[0] ?? '').slice(0, 1024),
        websocket: request.websocket,
        status: fields.status,
        bytesIn: fields.bytesIn,
        bytesOut: fields.bytesOut,
        durationMs: Math.max(0, this.#deps.clock.now() - startedAtMs),
        by: principal.id,
        ...(fields.refused === undefined ? {} : { refused: fields.refused }),
        ...(fields.error === undefined ? {} : { error: fields.error.slice(0, 500) }),
      });
    const exposed = sandbox.agent.network.expose ?? [];
    if (!Number.isInteger(port) || !exposed.includes(port)) {
      entry({ status: null, bytesIn: 0, bytesOut: 0, refused: 'not-exposed' });
      throw new AegisError('POLICY_DENIED', `port ${port} of sandbox ${id} is not exposed`, {
        hint:
          exposed.length === 0
            ? 'list it in the manifest: spec.security.network.expose: [PORT], then deploy and create a new sandbox'
            : `exposed ports: ${exposed.join(', ')} (spec.security.network.expose)`,
      });
    }
    const running = this.#running(principal, id);
    const connect = running.session.connectPort?.bind(running.session);
    if (!connect) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `the ${this.#deps.runtimeName} runtime cannot reach ports in live sandboxes`,
      );
    }
    let socket: LivePortSocket;
    try {
      socket = await connect(port);
    } catch (error) {
      entry({ status: null, bytesIn: 0, bytesOut: 0, error: String((error as Error).message ?? error) });
      throw error;
    }
    running.openConnections++;
    this.#touch(running);
    let finished = false;
    return {
      socket,
      finish: (outcome) => {
        if (finished) return;
        finished = true;
        running.openConnections--;
        this.#touch(running);
        entry({
          status: outcome.status,
          bytesIn: socket.bytesWritten,
          bytesOut: socket.bytesRead,
          ...(outcome.error === undefined ? {} : { error: outcome.error }),
        });
      },
    };
  }

  listCommands(principal: Principal, id: string): CommandView[] {
    requireScope(principal, 'read', 'listing commands');
    return [...this.#find(principal, id).commands.values()].map(commandView);
  }

  getCommand(principal: Principal, id: string, commandId: string): CommandView {
    requireScope(principal, 'read', 'reading a command');
    return commandView(this.#command(this.#find(principal, id), commandId));
  }

  async writeStdin(principal: Principal, id: string, commandId: string, data: Uint8Array, eof: boolean) {
    requireScope(principal, 'execute', 'writing to a command');
    const sandbox = await this.#localRunning(principal, id);
    const command = this.#command(sandbox, commandId);
    if (command.exit) throw new AegisError('CONFLICT', `command ${commandId} has exited`);
    await command.process.writeStdin(data, eof);
    this.#touch(sandbox);
  }

  async killCommand(
    principal: Principal,
    id: string,
    commandId: string,
    signal = 'SIGKILL',
  ): Promise<CommandView> {
    requireScope(principal, 'execute', 'killing a command');
    const sandbox = await this.#localRunning(principal, id);
    const command = this.#command(sandbox, commandId);
    if (!/^SIG[A-Z0-9]+$/.test(signal))
      throw new AegisError('USAGE', `body.signal: ${signal} is not a signal name`);
    if (!command.exit) await command.process.kill(signal).catch(() => {});
    this.#touch(sandbox);
    return commandView(command);
  }

  /**
   * A command's events after `afterSeq`, then (with `follow`) the new ones until it exits. Events older than the
   * replay buffer are gone; the first event's seq says where the stream starts.
   */
  async *commandEvents(
    principal: Principal,
    id: string,
    commandId: string,
    options: { afterSeq: number; follow: boolean; signal: AbortSignal },
  ): AsyncIterable<CommandEvent> {
    requireScope(principal, 'read', 'reading a command');
    const sandbox = await this.#local(principal, id);
    const command = this.#command(sandbox, commandId);
    let after = options.afterSeq;
    for (;;) {
      if (after < command.droppedThrough) {
        const seq = command.droppedThrough;
        yield {
          seq,
          type: 'truncated',
          message: `output up to event ${seq} was dropped (replay buffer full); the stream goes on after it`,
        };
        after = seq;
      }
      for (const event of command.events) {
        if (event.seq <= after) continue;
        after = event.seq;
        yield event;
        if (event.type === 'exit') return;
      }
      if (!options.follow || options.signal.aborted) return;
      // Exited and nothing after `after` (also when a client resumes from a position past the end): done.
      if (command.exit && after >= (command.events.at(-1)?.seq ?? 0)) return;
      await new Promise<void>((resolve) => {
        const wake = () => {
          command.listeners.delete(wake);
          options.signal.removeEventListener('abort', wake);
          resolve();
        };
        command.listeners.add(wake);
        options.signal.addEventListener('abort', wake, { once: true });
      });
    }
  }

  // Files -------------------------------------------------------------------------------------------------------

  async stat(principal: Principal, id: string, rawPath: unknown): Promise<LiveFileEntry> {
    requireScope(principal, 'read', 'reading sandbox files');
    const path = sandboxPath(rawPath, 'query.path');
    return this.#fileOp(principal, id, 'stat', path, null, (s) => s.stat(path), false);
  }

  async list(principal: Principal, id: string, rawPath: unknown): Promise<readonly LiveFileEntry[]> {
    requireScope(principal, 'read', 'reading sandbox files');
    const path = sandboxPath(rawPath, 'query.path');
    return this.#fileOp(principal, id, 'list', path, null, (s) => s.list(path), false);
  }

  async mkdir(principal: Principal, id: string, rawPath: unknown): Promise<void> {
    requireScope(principal, 'execute', 'writing sandbox files');
    const path = sandboxPath(rawPath, 'body.path');
    await this.#fileOp(principal, id, 'mkdir', path, null, (s) => s.mkdir(path), true);
  }

  async move(principal: Principal, id: string, rawFrom: unknown, rawTo: unknown): Promise<void> {
    requireScope(principal, 'execute', 'writing sandbox files');
    const from = sandboxPath(rawFrom, 'body.from');
    const to = sandboxPath(rawTo, 'body.to');
    await this.#fileOp(principal, id, 'move', from, to, (s) => s.move(from, to), true);
  }

  async remove(principal: Principal, id: string, rawPath: unknown): Promise<void> {
    requireScope(principal, 'execute', 'writing sandbox files');
    const path = sandboxPath(rawPath, 'query.path');
    await this.#fileOp(principal, id, 'remove', path, null, (s) => s.remove(path), true);
  }

  async upload(
    principal: Principal,
    id: string,
    rawPath: unknown,
    body: AsyncIterable<Uint8Array>,
  ): Promise<{ path: string; bytes: number }> {
    requireScope(principal, 'execute', 'writing sandbox files');
    const path = sandboxPath(rawPath, 'query.path');
    const max = this.#maxFileBytes;
    async function* capped(): AsyncIterable<Uint8Array> {
      let seen = 0;
      for await (const chunk of body) {
        seen += chunk.length;
        if (seen > max) {
          throw new AegisError('PAYLOAD_TOO_LARGE', `upload over the ${max}-byte file cap`, {
            hint: 'split the file, or ask the operator to raise the cap',
          });
        }
        yield chunk;
      }
    }
    const result = await this.#fileOp(
      principal,
      id,
      'write',
      path,
      null,
      (s) => s.writeFile(path, capped()),
      true,
    );
    return { path, bytes: result.bytes };
  }

  async download(
    principal: Principal,
    id: string,
    rawPath: unknown,
  ): Promise<{
    path: string;
    size: number;
    chunks: AsyncIterable<Uint8Array>;
    /** Settles if the runtime abandons the download (the reader fell too far behind); `chunks` then throw. */
    abandoned: Promise<void>;
  }> {
    requireScope(principal, 'read', 'reading sandbox files');
    const path = sandboxPath(rawPath, 'query.path');
    const file = await this.#fileOp(principal, id, 'read', path, null, (s) => s.readFile(path), false);
    const audit = this.#deps.audit;
    // A download that fails midway (the sandbox ended, or the client fell too far behind and the runtime abandoned
    // it) is recorded too: the entry above only said it started.
    async function* audited(): AsyncIterable<Uint8Array> {
      let sent = 0;
      try {
        for await (const chunk of file.chunks) {
          sent += chunk.length;
          yield chunk;
        }
      } catch (error) {
        audit.append(AUDIT_KINDS.sandboxFile, id, {
          op: 'read-failed',
          path,
          to: null,
          bytes: sent,
          ok: false,
          by: principal.id,
        });
        throw error;
      }
    }
    return { path, size: file.size, chunks: audited(), abandoned: file.abandoned ?? new Promise(() => {}) };
  }

  /** Ends every sandbox (server shutdown). */
  async closeAll(): Promise<void> {
    this.#closing = true;
    await this.reapAll('server-shutdown');
  }

  /**
   * Ends every sandbox and warm instance this node holds, with `reason`, and keeps serving: what a node fenced out
   * of the cluster (declared dead while paused or partitioned) does before it registers again.
   */
  async reapAll(reason: string): Promise<void> {
    const warm = [...this.#pools.values()].flatMap((pool) => {
      pool.idle?.cancel();
      return pool.ready.splice(0);
    });
    this.#pools.clear();
    await Promise.all(warm.map((prepared) => this.#discard(prepared)));
    await Promise.all([...this.#sandboxes.values()].map((sandbox) => this.#end(sandbox, reason, null)));
  }

  // Internals ---------------------------------------------------------------------------------------------------

  /** Spawns a live instance of `agent` (with `spawnAgent`'s environment) and opens its channel. */
  async #prepare(
    agent: CompiledAgent,
    spawnAgent: CompiledAgent,
    requestedBy: string | null,
  ): Promise<Prepared> {
    const { runtime } = this.#deps;
    const id = `sb_${this.#deps.ids.executionId().replace(/^ex_/, '')}`;
    // The manifest's whole policy, as for an execution: connections and secret uses into the ledger, placeholders
    // for secrets, the in-sandbox API for spec.llm. A policy event that cannot be recorded ends the sandbox.
    const wiring = await this.#policyWiring(id, agent, requestedBy);
    let instance: string;
    try {
      instance = await runtime.spawn({
        executionId: id,
        agent: spawnAgent,
        live: true,
        onNetworkDecision: wiring.onNetworkDecision,
        ...(wiring.secrets ? { secrets: wiring.secrets } : {}),
        ...(wiring.inSandboxApi ? { inSandboxApi: wiring.inSandboxApi } : {}),
      });
    } catch (error) {
      wiring.release();
      throw error;
    }
    try {
      const roots = sandboxPathRoots(agent);
      const session = await runtime.openLive(instance, { ...roots, maxFileBytes: this.#maxFileBytes });
      return { id, instance, session, wiring };
    } catch (error) {
      await runtime.terminate(instance).catch(() => {});
      wiring.release();
      throw error;
    }
  }

  /** Pooled: nothing in the instance is per sandbox (no placeholders, no model token). */
  #poolable(agent: CompiledAgent): boolean {
    return (
      this.#warmPerAgent > 0 &&
      agent.secrets.length === 0 &&
      agent.llm === null &&
      !(agent.tools?.length ?? 0)
    );
  }

  #takeWarm(key: string): Prepared | undefined {
    const pool = this.#pools.get(key);
    if (!pool) return undefined;
    pool.lastUsedMs = this.#deps.clock.now();
    return pool.ready.shift();
  }

  /** Tops `key`'s pool up to `warmPerAgent` in the background, within `--max-sandboxes` (warm ones count). */
  #refill(key: string, agent: CompiledAgent): void {
    let pool = this.#pools.get(key);
    if (!pool) {
      pool = { agent, ready: [], filling: 0, lastUsedMs: this.#deps.clock.now(), idle: undefined };
      this.#pools.set(key, pool);
    }
    this.#armPoolIdle(key, pool);
    while (
      !this.#closing &&
      pool.ready.length + pool.filling < this.#warmPerAgent &&
      this.running() + this.#warmHeld() < this.#maxSandboxes
    ) {
      pool.filling++;
      const target = pool;
      // Pooled agents have no spec.llm, so no key's budget is involved.
      void this.#prepare(agent, agent, null).then(
        (prepared) => {
          target.filling--;
          if (this.#closing || this.#pools.get(key) !== target) return void this.#discard(prepared);
          target.ready.push(prepared);
          // A warm instance that dies while waiting leaves the pool.
          void prepared.session.closed.then(() => {
            const at = target.ready.indexOf(prepared);
            if (at !== -1) {
              target.ready.splice(at, 1);
              void this.#discard(prepared);
            }
          });
        },
        () => {
          // The next create runs cold and retries the refill.
          target.filling--;
        },
      );
    }
  }

  #armPoolIdle(key: string, pool: WarmPool): void {
    pool.idle?.cancel();
    const dueIn = pool.lastUsedMs + this.#warmIdleMs - this.#deps.clock.now();
    pool.idle = this.#deps.clock.setTimeout(
      () => {
        if (this.#deps.clock.now() - pool.lastUsedMs < this.#warmIdleMs) return this.#armPoolIdle(key, pool);
        if (this.#pools.get(key) === pool) this.#pools.delete(key);
        for (const prepared of pool.ready.splice(0)) void this.#discard(prepared);
      },
      Math.max(dueIn, 10),
      { background: true },
    );
  }

  async #discard(prepared: Prepared): Promise<void> {
    prepared.session.kill();
    await this.#deps.runtime.terminate(prepared.instance).catch(() => {});
    prepared.wiring.release();
  }

  /**
   * What a live sandbox of `agent` gets beside its command, exactly as an execution does (run-agent.ts): every
   * egress decision and secret use becomes a ledger entry under the sandbox's id, secrets are placeholders (their
   * values are redacted from command output), `spec.llm` gets the in-sandbox API with a token of this sandbox's
   * own; a spent budget ends the sandbox with reason `budget`. Events before `bind` (none are expected: the
   * instance does not run before `openLive`) are recorded all the same.
   */
  async #policyWiring(id: string, agent: CompiledAgent, requestedBy: string | null): Promise<PolicyWiring> {
    const { audit, runtime } = this.#deps;
    let sandbox: Sandbox | undefined;
    let instance: string | undefined;
    const failClosed = (reason: string) => {
      if (sandbox) void this.#end(sandbox, reason, null);
      else if (instance !== undefined) void runtime.terminate(instance).catch(() => {});
    };
    const resolved = await resolveSecrets(this.#deps, agent);
    const redactor = new Redactor(
      resolved ? [...resolved.values].map(([name, value]) => ({ name, value })) : [],
    );
    const clean = (text: string) => redactor.redact(text);
    const onNetworkDecision = (event: NetworkDecisionEvent) => {
      try {
        audit.append(AUDIT_KINDS.networkConnect, id, networkConnectData(event, clean));
      } catch {
        failClosed('audit-failed');
      }
    };
    let secrets: InstanceSecrets | undefined;
    if (resolved) {
      const onSecretUse = (use: SecretUseEvent) => {
        try {
          audit.append(AUDIT_KINDS.secretUse, id, secretUseData(use, clean));
        } catch (error) {
          failClosed('audit-failed');
          throw error; // refuses the request
        }
      };
      secrets = {
        env: resolved.plan.env,
        placeholders: placeholderMap(resolved.plan, resolved.values),
        onSecretUse,
      };
    }
    let inSandboxApi: InSandboxApi | undefined;
    let release = () => {};
    if (agent.llm !== null) {
      const llm = this.#deps.llm;
      if (llm === undefined) {
        throw new AegisError('RUNTIME_UNAVAILABLE', 'this AEGIS server has no LLM gateway configured', {
          hint: 'configure providers in $AEGIS_HOME/config.yaml (docs/WRITING-AGENTS.md), or deploy without spec.llm',
        });
      }
      const unsubscribe = llm.events.subscribe(id, {
        onCall: (record: LlmCallRecord) => {
          try {
            const { executionId: _, ...data } = record;
            audit.append(AUDIT_KINDS.llmCall, id, JSON.parse(JSON.stringify(data)));
          } catch {
            failClosed('audit-failed');
            return;
          }
          if (record.status === 'budget') failClosed('budget');
        },
        onBudgetExhausted: () => {},
      });
      const token = llm.gateway.issue({
        executionId: id,
        agent: agent.name,
        models: agent.llm.models,
        budget: agent.llm.budget,
        // Server budgets per key (llm.budgets.keys) count the sandbox's creator.
        requestedBy,
      });
      inSandboxApi = { handler: llm.handlerFor ? llm.handlerFor(token) : llm.handler, env: llmEnv(token) };
      release = () => {
        unsubscribe();
        llm.gateway.revoke(token);
      };
    }
    if (agent.tools?.length) {
      const tools = this.#deps.tools;
      if (tools === undefined) {
        throw new AegisError('RUNTIME_UNAVAILABLE', 'this AEGIS server has no tool gateway', {
          hint: 'deploy without spec.tools, or run a server built with the tool gateway',
        });
      }
      const token = inSandboxApi?.env['AEGIS_TOKEN'] ?? tools.newToken();
      const bound: InSandboxTools = {
        list: () => tools.gateway.list(this.#toolTarget(sandbox, agent, id, 'agent')),
        call: (name, args) => tools.gateway.call(this.#toolTarget(sandbox, agent, id, 'agent'), name, args),
      };
      inSandboxApi = {
        handler: tools.handlerFor(token, bound, inSandboxApi?.handler),
        env: { AEGIS_API_URL: IN_SANDBOX_API_URL, AEGIS_TOKEN: token, ...(inSandboxApi?.env ?? {}) },
      };
    }
    let released = false;
    return {
      redactor,
      onNetworkDecision,
      secrets,
      inSandboxApi,
      release: () => {
        if (released) return;
        released = true;
        release();
      },
      bind: (created: Sandbox) => {
        sandbox = created;
        instance = created.instance;
      },
    };
  }

  /**
   * Calls a granted tool in a running sandbox (`POST /v1/sandboxes/{id}/tools/{name}`); the same gateway, policy
   * and `tool.call` entry as a call from the agent's own code.
   */
  async callTool(principal: Principal, id: string, name: string, args: unknown): Promise<ToolCallResult> {
    requireScope(principal, 'execute', 'calling a tool in a sandbox');
    const sandbox = await this.#localRunning(principal, id);
    const tools = this.#deps.tools;
    if (tools === undefined)
      throw new AegisError('RUNTIME_UNAVAILABLE', 'this AEGIS server has no tool gateway');
    this.#touch(sandbox);
    return tools.gateway.call(this.#toolTarget(sandbox, sandbox.agent, sandbox.id, principal.id), name, args);
  }

  #toolTarget(sandbox: Sandbox | undefined, agent: CompiledAgent, id: string, by: string): ToolTarget {
    const live = sandbox !== undefined && sandbox.status === 'running';
    return {
      id,
      agent,
      session: live ? sandbox.session : undefined,
      env: sandbox?.baseEnv ?? {},
      by,
      owner: sandbox?.owner,
    };
  }

  async #fileOp<T>(
    principal: Principal,
    id: string,
    op: string,
    path: string,
    to: string | null,
    run: (session: LiveSession) => Promise<T>,
    _writes: boolean,
  ): Promise<T> {
    const sandbox = await this.#localRunning(principal, id);
    this.#touch(sandbox);
    let ok = false;
    let bytes: number | null = null;
    try {
      const result = await run(sandbox.session);
      ok = true;
      if (typeof result === 'object' && result !== null) {
        const r = result as { bytes?: unknown; size?: unknown };
        bytes = typeof r.bytes === 'number' ? r.bytes : typeof r.size === 'number' ? r.size : null;
      }
      return result;
    } finally {
      this.#deps.audit.append(AUDIT_KINDS.sandboxFile, sandbox.id, {
        op,
        path,
        to,
        bytes,
        ok,
        by: principal.id,
      });
    }
  }

  async #resolve(selector: string) {
    const [name, rev] = selector.split('@') as [string, string | undefined];
    const summary = await this.#deps.store.getAgent(name);
    if (summary === undefined) throw notFoundAgent(name);
    let revision = summary.active;
    if (rev !== undefined) {
      const revisions = await this.#deps.store.listRevisions(name);
      const found = revisions.find((r) => String(r.revision) === rev || r.version === rev);
      if (!found) throw new AegisError('NOT_FOUND', `agent ${name} has no revision ${rev}`);
      revision = found;
    }
    const agent = await loadRevision(this.#deps, revision);
    return { agent, revision };
  }

  async #persist(sandbox: Sandbox): Promise<void> {
    const node = this.#deps.node;
    const epoch = node?.epoch();
    const holder =
      sandbox.status === 'terminated'
        ? null
        : {
            ...this.#deps.identity.current(),
            ...(node !== undefined && epoch !== undefined ? { node: node.nodeId, epoch } : {}),
          };
    await this.#deps.store.putSandbox({ ...this.#view(sandbox), holder });
  }

  /** The sandbox this node holds; CONFLICT naming the node when another node holds it (not a 404). */
  async #local(principal: Principal, id: string): Promise<Sandbox> {
    if (!this.#sandboxes.has(id)) await this.#heldElsewhere(principal, id);
    return this.#find(principal, id);
  }

  async #localRunning(principal: Principal, id: string): Promise<Sandbox> {
    if (!this.#sandboxes.has(id)) await this.#heldElsewhere(principal, id);
    return this.#running(principal, id);
  }

  /**
   * A sandbox not held here that the store says another node holds (running or paused): its processes are on that
   * node, so this one cannot act on it. Says which node (and host) instead of answering "no sandbox".
   */
  async #heldElsewhere(principal: Principal, id: string): Promise<void> {
    const record = await this.#deps.store.getSandbox(id);
    if (record === undefined || record.status === 'terminated' || !this.#mayTouch(principal, record)) return;
    const node = record.holder?.node;
    if (node === undefined || node === this.#deps.node?.nodeId) return;
    throw new AegisError(
      'CONFLICT',
      `sandbox ${id} is held by node ${node} (host ${record.holder?.host ?? '?'}); this node cannot reach its processes`,
      {
        hint: `send this request to node ${node} (\`aegis nodes ls\` lists the nodes); if that node is gone, the cluster records the sandbox terminated (node-lost) once its lease expires`,
        details: { id, node },
      },
    );
  }

  #mayTouch(principal: Principal, sandbox: { readonly owner: string }): boolean {
    return sandbox.owner === principal.id || hasScope(principal.scopes, 'admin');
  }

  #find(principal: Principal, id: string): Sandbox {
    const sandbox = this.#sandboxes.get(id);
    // Another key's sandbox answers like a missing one: its existence is not disclosed.
    if (!sandbox || !this.#mayTouch(principal, sandbox)) throw notFoundSandbox(id);
    return sandbox;
  }

  #running(principal: Principal, id: string): Sandbox {
    const sandbox = this.#find(principal, id);
    if (sandbox.status === 'paused') {
      throw new AegisError('CONFLICT', `sandbox ${id} is paused`, {
        hint: `resume it first: POST /v1/sandboxes/${id}/resume`,
      });
    }
    if (sandbox.status !== 'running') {
      throw new AegisError('CONFLICT', `sandbox ${id} has ended (${sandbox.reason})`, {
        hint: 'create a new one: POST /v1/sandboxes',
      });
    }
    return sandbox;
  }

  #command(sandbox: Sandbox, commandId: string): Command {
    const command = sandbox.commands.get(commandId);
    if (!command) throw new AegisError('NOT_FOUND', `no command ${commandId} in sandbox ${sandbox.id}`);
    return command;
  }

  /** A chunk of a command's output (null: the stream ended): decoded, redacted, then kept for readers. */
  #output(sandbox: Sandbox, command: Command, stream: 'stdout' | 'stderr', chunk: Uint8Array | null): void {
    const decoder = command.decoders[stream];
    let text = chunk === null ? decoder.decode() : decoder.decode(chunk, { stream: true });
    const redactor = command.redactors?.[stream];
    if (redactor) text = chunk === null ? redactor.push(text) + redactor.end() : redactor.push(text);
    this.#push(sandbox, command, { type: stream, data: text });
  }

  #push(sandbox: Sandbox, command: Command, event: { type: 'stdout' | 'stderr'; data: string }): void {
    if (event.data.length === 0) return;
    command.events.push({ seq: command.nextSeq++, ...event });
    const cost = costOf(event.data);
    command.replayBytes += cost;
    sandbox.replayBytes += cost;
    while (
      (command.replayBytes > this.#replayBytes || command.events.length > MAX_EVENTS_PER_COMMAND) &&
      command.events.length > 1
    ) {
      this.#dropOldest(sandbox, command);
    }
    if (sandbox.replayBytes > this.#sandboxReplayBytes) this.#trimSandbox(sandbox, command);
    for (const wake of [...command.listeners]) wake();
  }

  #dropOldest(sandbox: Sandbox, command: Command): void {
    const dropped = command.events.shift()!;
    command.droppedThrough = dropped.seq;
    if (dropped.type === 'exit') return;
    const cost = costOf(dropped.data);
    command.replayBytes -= cost;
    sandbox.replayBytes -= cost;
  }

  /**
   * Over the sandbox's replay budget: first the oldest exited commands lose their output (their exit event stays),
   * then the running commands their oldest events, oldest command first — `current`'s newest event always stays.
   */
  #trimSandbox(sandbox: Sandbox, current: Command): void {
    const over = () => sandbox.replayBytes > this.#sandboxReplayBytes;
    for (const command of sandbox.commands.values()) {
      if (!over()) return;
      if (!command.exit) continue;
      while (command.events.length > 0 && command.events[0]!.type !== 'exit')
        this.#dropOldest(sandbox, command);
    }
    for (const command of sandbox.commands.values()) {
      if (!over()) return;
      const keep = command === current ? 1 : 0;
      while (over() && command.events.length > keep && command.events[0]!.type !== 'exit')
        this.#dropOldest(sandbox, command);
    }
  }

  /** At most MAX_KEPT_COMMANDS remembered: the oldest exited ones go (with their output). */
  #forgetOldCommands(sandbox: Sandbox): void {
    if (sandbox.commands.size <= MAX_KEPT_COMMANDS) return;
    for (const command of sandbox.commands.values()) {
      if (sandbox.commands.size <= MAX_KEPT_COMMANDS) return;
      if (!command.exit) continue;
      sandbox.replayBytes -= command.replayBytes;
      sandbox.commands.delete(command.id);
    }
  }

  #exited(sandbox: Sandbox, command: Command, code: number | null, signal: string | null, by: string): void {
    if (command.exit) return;
    command.timer?.cancel();
    for (const stream of ['stdout', 'stderr'] as const) this.#output(sandbox, command, stream, null);
    const durationMs = Math.max(0, this.#deps.clock.now() - command.startedAtMs);
    command.exit = { exitCode: code, signal, durationMs };
    command.events.push({
      seq: command.nextSeq++,
      type: 'exit',
      exitCode: code,
      signal,
      timedOut: command.timedOut,
    });
    for (const wake of [...command.listeners]) wake();
    this.#touch(sandbox);
    this.#deps.audit.append(AUDIT_KINDS.sandboxExec, sandbox.id, {
      command: command.id,
      argv: command.argv.slice(0, 64).map((arg) => arg.slice(0, 1024)),
      exitCode: code,
      signal,
      durationMs,
      by,
      ...(command.pty ? { pty: true } : {}),
    });
  }

  /** At most maxRunningCommands at once per sandbox (PTYs count); a refusal is audited. */
  #assertRoom(sandbox: Sandbox, argv: readonly string[], principal: Principal): void {
    const id = sandbox.id;
    let runningCommands = sandbox.startingCommands;
    for (const c of sandbox.commands.values()) if (!c.exit) runningCommands++;
    if (runningCommands >= this.#maxRunningCommands) {
      this.#deps.audit.append(AUDIT_KINDS.sandboxExec, sandbox.id, {
        command: '',
        argv: argv.slice(0, 64).map((arg) => arg.slice(0, 1024)),
        exitCode: null,
        signal: null,
        durationMs: 0,
        by: principal.id,
        refused: 'too-many-commands',
      });
      throw new AegisError(
        'QUEUE_FULL',
        `sandbox ${id} already runs its maximum of ${this.#maxRunningCommands} commands`,
        {
          hint: `wait for one to exit, or kill one: POST /v1/sandboxes/${id}/commands/ID/kill`,
          details: { retryAfterMs: 1000, running: runningCommands },
        },
      );
    }
  }

  #touch(sandbox: Sandbox): void {
    sandbox.lastActivityMs = this.#deps.clock.now();
  }

  #armIdle(sandbox: Sandbox): void {
    const idleMs = sandbox.idleTimeoutMs;
    if (idleMs === null || sandbox.status !== 'running') return;
    const dueIn = sandbox.lastActivityMs + idleMs - this.#deps.clock.now();
    sandbox.idle = this.#deps.clock.setTimeout(
      () => {
        const busy =
          sandbox.openConnections > 0 || [...sandbox.commands.values()].some((command) => !command.exit);
        if (busy) this.#touch(sandbox);
        if (!busy && this.#deps.clock.now() - sandbox.lastActivityMs >= idleMs) {
          void this.#end(sandbox, 'idle-timeout', null);
        } else this.#armIdle(sandbox);
      },
      Math.max(dueIn, 10),
      { background: true },
    );
  }

  async #end(sandbox: Sandbox, reason: string, by: string | null): Promise<void> {
    if (sandbox.status === 'terminated') return;
    try {
      // What it used; nothing is charged to an ended sandbox any more.
      sandbox.lastUsage = { ...sandbox.session.usage(), memoryBytes: null, pids: null };
    } catch {
      sandbox.lastUsage = null;
    }
    sandbox.status = 'terminated';
    sandbox.reason = reason;
    sandbox.lifetime?.cancel();
    sandbox.idle?.cancel();
    for (const command of sandbox.commands.values()) command.timer?.cancel();
    this.#deps.audit.append(AUDIT_KINDS.sandboxTerminated, sandbox.id, { reason, by });
    sandbox.session.kill();
    await this.#deps.runtime.terminate(sandbox.instance).catch(() => {});
    sandbox.releaseLlm();
    // If this write fails the stored record still says running: the next restart records it terminated
    // (orchestrator-restarted) — late, but never lost. The ledger entry above is the authoritative one.
    await this.#persist(sandbox).catch(() => {});
  }

  #forgetOld(): void {
    const ended = [...this.#sandboxes.values()].filter((sandbox) => sandbox.status === 'terminated');
    for (const sandbox of ended.slice(0, Math.max(0, ended.length - KEEP_ENDED)))
      this.#sandboxes.delete(sandbox.id);
  }

  #view(sandbox: Sandbox): SandboxView {
    let usage = sandbox.lastUsage;
    if (sandbox.status !== 'terminated') {
      try {
        usage = sandbox.session.usage();
      } catch {
        usage = null;
      }
    }
    return {
      id: sandbox.id,
      agent: { name: sandbox.agent.name, revision: sandbox.revision, version: sandbox.agent.version },
      runtime: sandbox.runtime,
      status: sandbox.status,
      reason: sandbox.reason,
      createdAt: new Date(sandbox.createdAtMs).toISOString(),
      expiresAt: new Date(sandbox.expiresAtMs).toISOString(),
      idleTimeoutMs: sandbox.idleTimeoutMs,
      metadata: sandbox.metadata,
      owner: sandbox.owner,
      usage,
    };
  }
}

/** Stored records listed beside the ones held here. */
const LIST_STORED = 200;

function notFoundSandbox(id: string): AegisError {
  return new AegisError('NOT_FOUND', `no sandbox ${id}`, { hint: 'list yours with GET /v1/sandboxes' });
}

function viewOf(record: SandboxRecord): SandboxView {
  const { holder: _holder, ...view } = record;
  // Records written before `memoryBytes`/`pids` existed lack them.
  const usage = view.usage === null ? null : { ...view.usage, memoryBytes: null, pids: null };
  return { ...view, usage };
}

function costOf(data: string): number {
  return data.length + EVENT_OVERHEAD_BYTES;
}

function commandView(command: Command): CommandView {
  return {
    id: command.id,
    pid: command.process.pid,
    argv: command.argv,
    status: command.exit ? 'exited' : 'running',
    exitCode: command.exit?.exitCode ?? null,
    signal: command.exit?.signal ?? null,
    timedOut: command.timedOut,
    startedAt: new Date(command.startedAtMs).toISOString(),
    durationMs: command.exit?.durationMs ?? null,
  };
}

function checkMetadata(metadata: Readonly<Record<string, string>> | undefined): void {
  if (metadata === undefined) return;
  const keys = Object.keys(metadata);
  if (keys.length > MAX_METADATA_KEYS) {
    throw new AegisError('USAGE', `body.metadata: at most ${MAX_METADATA_KEYS} keys (got ${keys.length})`);
  }
}
