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
import { AegisError } from '../domain/errors.ts';
import {
  SANDBOX_RESTART_REASON,
  type SandboxRecord,
  type SandboxStatus,
  type SandboxView,
  sandboxPath,
  sandboxPathRoots,
} from '../domain/live-sandbox.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import { loadRevision, notFoundAgent } from './agents.ts';
import type {
  AgentBundles,
  AuditLog,
  Clock,
  Ids,
  LiveFileEntry,
  LiveProcess,
  LiveRuntime,
  LiveSession,
  ProcessIdentity,
  Store,
  Timer,
} from './ports.ts';

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
}

type OutputEvent = Exclude<CommandEvent, { type: 'truncated' }>;

const MAX_METADATA_KEYS = 64;
const TEXT = new TextDecoder();
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

  constructor(deps: LiveSandboxesDeps, options: LiveSandboxesOptions) {
    this.#deps = deps;
    this.#maxSandboxes = options.maxSandboxes;
    this.#maxFileBytes = options.maxFileBytes ?? 1024 ** 3;
    this.#replayBytes = options.replayBytes ?? 8 * 1024 ** 2;
    this.#sandboxReplayBytes = options.sandboxReplayBytes ?? 32 * 1024 ** 2;
    this.#maxRunningCommands = options.maxRunningCommands ?? 32;
  }

  /** Live sandboxes now (what `--max-sandboxes` counts). */
  running(): number {
    let n = this.#starting;
    for (const sandbox of this.#sandboxes.values()) if (sandbox.status !== 'terminated') n++;
    return n;
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
      if (agent.secrets.length > 0) {
        throw new AegisError(
          'USAGE',
          `agent ${agent.name} declares secrets; live sandboxes do not carry secrets yet`,
          {
            hint: 'run it as an execution (POST /v1/executions), or deploy a revision without spec.secrets',
          },
        );
      }
      const { clock, audit, runtime } = this.#deps;
      const id = `sb_${this.#deps.ids.executionId().replace(/^ex_/, '')}`;
      const timeoutMs = request.timeoutMs ?? agent.limits.timeoutMs;
      assertTimer('timeout', timeoutMs);
      assertTimer('idleTimeout', request.idleTimeoutMs);
      const withEnv: CompiledAgent = { ...agent, env: { ...agent.env, ...(request.env ?? {}) } };
      const runtimeName = runtime.nameFor?.(withEnv) ?? this.#deps.runtimeName;
      const instance = await runtime.spawn({ executionId: id, agent: withEnv, live: true });
      let session: LiveSession;
      try {
        const roots = sandboxPathRoots(agent);
        session = await runtime.openLive(instance, { ...roots, maxFileBytes: this.#maxFileBytes });
      } catch (error) {
        await runtime.terminate(instance).catch(() => {});
        throw error;
      }
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
      };
      this.#sandboxes.set(id, sandbox);
      this.#forgetOld();
      audit.append(AUDIT_KINDS.sandboxCreated, id, {
        agent: agent.name,
        revision: revision.revision,
        runtime: runtimeName,
        by: principal.id,
        timeoutMs,
        idleTimeoutMs: sandbox.idleTimeoutMs,
      });
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
   * After a restart: every sandbox the store says is running or paused whose holder is no longer alive (this
   * host's previous process, killed) is recorded `terminated` with reason `orchestrator-restarted`. Its processes
   * and cgroups are the runtime's to reap (`reapOrphans`, run by Executions.recover before this).
   */
  async recover(): Promise<string[]> {
    const { store, identity, audit, clock } = this.#deps;
    const me = identity.current();
    const reaped: string[] = [];
    for (const record of await store.listSandboxes({ unfinished: true })) {
      if (this.#sandboxes.has(record.id)) continue;
      const holder = record.holder;
      const mine =
        holder !== null &&
        holder.host === me.host &&
        holder.pid === me.pid &&
        holder.startTicks === me.startTicks;
      if (mine || (holder !== null && identity.isAlive(holder))) continue;
      audit.append(AUDIT_KINDS.sandboxTerminated, record.id, { reason: SANDBOX_RESTART_REASON, by: null });
      await store.putSandbox({
        ...record,
        status: 'terminated',
        reason: SANDBOX_RESTART_REASON,
        holder: null,
        expiresAt: record.status === 'running' ? record.expiresAt : new Date(clock.now()).toISOString(),
      });
      reaped.push(record.id);
    }
    if (reaped.length > 0) await audit.flush();
    return reaped;
  }

  async kill(principal: Principal, id: string): Promise<SandboxView> {
    requireScope(principal, 'execute', 'deleting a sandbox');
    const sandbox = this.#find(principal, id);
    await this.#end(sandbox, 'deleted', principal.id);
    return this.#view(sandbox);
  }

  /**
   * Freezes every process of the sandbox (cgroup freezer): it uses no CPU, commands and file operations are refused
   * until `resume`, and neither its timeout nor its idle timeout runs meanwhile.
   */
  async pause(principal: Principal, id: string): Promise<SandboxView> {
    requireScope(principal, 'execute', 'pausing a sandbox');
    const sandbox = this.#running(principal, id);
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
    const sandbox = this.#find(principal, id);
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
    const sandbox = this.#running(principal, id);
    const argv = typeof request.cmd === 'string' ? ['/bin/sh', '-c', request.cmd] : [...request.cmd];
    if (argv.length === 0 || argv[0] === '') {
      throw new AegisError('USAGE', 'body.cmd: an empty command', { hint: 'e.g. {"cmd": ["ls", "-la"]}' });
    }
    const cwd = sandboxPath(request.cwd ?? '/workspace', 'body.cwd');
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
          env: request.env ?? {},
          stdin: request.stdin !== undefined || request.keepStdin === true,
        },
        {
          onOutput: (stream, chunk) => {
            if (command) this.#push(sandbox, command, { type: stream, data: TEXT.decode(chunk) });
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
    };
    sandbox.commands.set(commandId, command);
    this.#forgetOldCommands(sandbox);
    for (const [stream, chunk] of early)
      this.#push(sandbox, command, { type: stream, data: TEXT.decode(chunk) });
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
    const sandbox = this.#running(principal, id);
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
    const sandbox = this.#running(principal, id);
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
    const sandbox = this.#find(principal, id);
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
      if (command.exit && command.events.at(-1)?.seq === after) return;
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
    await Promise.all(
      [...this.#sandboxes.values()].map((sandbox) => this.#end(sandbox, 'server-shutdown', null)),
    );
  }

  // Internals ---------------------------------------------------------------------------------------------------

  async #fileOp<T>(
    principal: Principal,
    id: string,
    op: string,
    path: string,
    to: string | null,
    run: (session: LiveSession) => Promise<T>,
    _writes: boolean,
  ): Promise<T> {
    const sandbox = this.#running(principal, id);
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
    const holder = sandbox.status === 'terminated' ? null : this.#deps.identity.current();
    await this.#deps.store.putSandbox({ ...this.#view(sandbox), holder });
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
    });
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
        const busy = [...sandbox.commands.values()].some((command) => !command.exit);
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
      sandbox.lastUsage = sandbox.session.usage();
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
  return view;
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
