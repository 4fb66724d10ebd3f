/**
 * AegisClient: the REST API of an AEGIS server as typed methods. One request path (transport.ts) serves TCP URLs
 * and the unix socket; errors are AegisApiError; calls that can safely be repeated are retried, honouring
 * Retry-After; `followLogs` streams Server-Sent Events and resumes with Last-Event-ID after a dropped connection.
 */

import type { IncomingMessage } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { AegisApiError, codeForStatus } from './errors.ts';
import { type PackAgentOptions, packAgent } from './pack.ts';
import type {
  CommandResult,
  CreateSandboxOptions,
  RunCommandOptions,
  Sandbox,
  SandboxCommand,
  SandboxCommandEvent,
  SandboxFileEntry,
} from './sandbox-wire.ts';
import { SseParser } from './sse.ts';
import {
  type Endpoint,
  errnoOf,
  neverSent,
  parseServer,
  type RawRequest,
  readBody,
  send,
} from './transport.ts';
import type {
  AgentDetail,
  AgentList,
  AgentRevision,
  AgentSummary,
  ApiKey,
  Approval,
  ApprovalDecided,
  ApprovalList,
  AuditEntry,
  AuditList,
  CreatedEdgeToken,
  CreatedKey,
  CreateEdgeTokenBody,
  CreateKeyBody,
  DeployResult,
  EdgeNode,
  EdgeNodeList,
  ErrorBody,
  Execution,
  ExecutionList,
  ExecutionStatus,
  HealthStatus,
  KeyList,
  LogLine,
  LogPage,
  MemoryForgotten,
  MemoryList,
  MemoryReembedded,
  MemorySearchBody,
  MemorySearchResult,
  Node,
  NodeList,
  PruneBody,
  PruneReport,
  RecalledMemory,
  RevisionList,
  RollbackResult,
  Scope,
  SwarmTree,
} from './wire.ts';

export type {
  AgentDetail,
  AgentRevision,
  AgentSummary,
  ApiKey,
  AuditEntry,
  CreatedKey,
  DeployResult,
  Execution,
  ExecutionList,
  ExecutionStatus,
  HealthStatus,
  LogLine,
  LogPage,
  PruneBody,
  PruneReport,
  RollbackResult,
  Scope,
};

/** One item of `followLogs`: a log line, then — last — the finished execution. */
export type LogStreamItem =
  | { readonly type: 'line'; readonly line: LogLine }
  | { readonly type: 'end'; readonly execution: Execution };

/** What `deployAgent` answers: the server's DeployResult and what was uploaded. */
export interface DeployAgentResult extends DeployResult {
  readonly bundle: {
    /** Regular files in the bundle. */
    readonly files: number;
    /** Lowercase hex SHA-256 of the `.tar.gz`. */
    readonly digest: string;
    readonly sizeBytes: number;
  };
}

export interface RetryOptions {
  /** Tries per call, the first included; 1 turns retries off. @default 3 */
  readonly attempts: number;
  /** A Retry-After longer than this is not waited for: the error is thrown instead. @default 30_000 */
  readonly maxDelayMs?: number;
}

export interface AegisClientOptions {
  /** `http(s)://host:port` (a path prefix is kept) or `unix:/path/to/aegis.sock`. */
  readonly server: string;
  /** `aegis_…`; sent as `Authorization: Bearer` over TCP, never over the unix socket (trusted as the local user). */
  readonly apiKey?: string;
  /** @default `aegis-sdk/0.1.0 node/<version>` */
  readonly userAgent?: string;
  /** @default { attempts: 3, maxDelayMs: 30_000 } */
  readonly retry?: RetryOptions;
  /**
   * `followLogs` reconnects when no byte (not even a `: ping` heartbeat) arrived for this long.
   * @default 60_000
   */
  readonly streamIdleTimeoutMs?: number;
  /** `followLogs` gives up after this many dropped connections in a row without a new event. @default 10 */
  readonly streamReconnects?: number;
}

export interface WaitOptions {
  /** Hold the answer until the execution ends or this long passes: `30s`, `1500ms`, `2m` (server cap 5m). */
  readonly wait?: string;
  readonly signal?: AbortSignal;
}

export interface ListExecutionsOptions {
  /** Agent name. */
  readonly agent?: string;
  readonly status?: ExecutionStatus;
  /** 1–1000; the server's default is 50. */
  readonly limit?: number;
  /** `nextCursor` of the previous page. */
  readonly cursor?: string;
}

export interface LogsOptions {
  /** Only lines with seq > after. @default 0 */
  readonly after?: number;
  /** 1–10000. */
  readonly limit?: number;
  readonly signal?: AbortSignal;
}

export interface FollowLogsOptions {
  /** Only lines with seq > after. @default 0 */
  readonly after?: number;
  /** Stops the stream: the iteration then throws the signal's reason (an AbortError). */
  readonly signal?: AbortSignal;
}

export interface CreateKeyOptions {
  readonly name: string;
  readonly scopes: readonly Scope[];
  /** `20/s`, `600/m`, `20/s,burst=40`; default: the server's per-key rate. */
  readonly rate?: string;
}

export interface MemoryScopeOptions {
  /** The memory namespace. @default the deployed agent's spec.memory.namespace (else `default`) */
  readonly namespace?: string;
}

export interface ListMemoriesOptions extends MemoryScopeOptions {
  /** 1–1000. @default 50 */
  readonly limit?: number;
  /** The `next` of the previous page. */
  readonly after?: string;
}

/**
 * How a call may be retried:
 * - `read` (GET): RATE_LIMITED, QUEUE_FULL, UNAVAILABLE (429/502/503/504) and any connection error.
 * - `create` (createExecution): 429 RATE_LIMITED or QUEUE_FULL — nothing was created — and connection errors raised
 *   before the request left (refused, no such socket, DNS).
 * - `write` (everything else): 429 RATE_LIMITED (the server's key gate refuses before any work) and connection
 *   errors raised before the request left.
 */
type RetryMode = 'read' | 'create' | 'write';

interface CallRequest {
  readonly method: RawRequest['method'];
  readonly path: string;
  readonly query?: RawRequest['query'];
  readonly headers?: Readonly<Record<string, string>>;
  readonly json?: unknown;
  readonly body?: Uint8Array;
  readonly contentType?: string;
  readonly signal?: AbortSignal | undefined;
}

const VERSION = '0.1.0';
const enc = encodeURIComponent;

export class AegisClient {
  readonly #endpoint: Endpoint;
  readonly #apiKey: string | undefined;
  readonly #userAgent: string;
  readonly #attempts: number;
  readonly #maxDelayMs: number;
  readonly #idleMs: number;
  readonly #reconnects: number;

  constructor(options: AegisClientOptions) {
    this.#endpoint = parseServer(options.server);
    this.#apiKey = options.apiKey === undefined || options.apiKey === '' ? undefined : options.apiKey;
    this.#userAgent = options.userAgent ?? `aegis-sdk/${VERSION} node/${process.versions.node}`;
    this.#attempts = Math.max(1, Math.floor(options.retry?.attempts ?? 3));
    this.#maxDelayMs = options.retry?.maxDelayMs ?? 30_000;
    this.#idleMs = options.streamIdleTimeoutMs ?? 60_000;
    this.#reconnects = options.streamReconnects ?? 10;
  }

  /** The server as given, normalised (`http://host:port`, `unix:/path`) — for messages. */
  get server(): string {
    return this.#endpoint.display;
  }

  /** True when this client talks over a unix socket (no key needed). */
  get isUnixSocket(): boolean {
    return this.#endpoint.kind === 'unix';
  }

  // ── agents ──────────────────────────────────────────────────────────────────────────────────────────────────

  /** Uploads a bundle (the `.tar.gz` of an agent directory; see packAgent). `created` false: nothing changed. */
  deploy(bundle: Uint8Array): Promise<DeployResult> {
    return this.#json('write', {
      method: 'POST',
      path: '/v1/agents',
      body: bundle,
      contentType: 'application/gzip',
    });
  }

  /**
   * Packs the agent directory `dir` (the one holding agent.yaml, honouring its `.aegisignore`; see packAgent) and
   * deploys it. The answer also tells what was uploaded.
   */
  async deployAgent(dir: string, options: PackAgentOptions = {}): Promise<DeployAgentResult> {
    const bundle = await packAgent(dir, options);
    const result = await this.deploy(bundle.bytes);
    return {
      ...result,
      bundle: { files: bundle.files, digest: bundle.digest, sizeBytes: bundle.bytes.byteLength },
    };
  }

  async listAgents(): Promise<AgentSummary[]> {
    const body = await this.#json<AgentList>('read', { method: 'GET', path: '/v1/agents' });
    return body.agents;
  }

  /** The agent and its revisions, newest first. */
  getAgent(name: string): Promise<AgentDetail> {
    return this.#json('read', { method: 'GET', path: `/v1/agents/${enc(name)}` });
  }

  async listRevisions(name: string): Promise<AgentRevision[]> {
    const body = await this.#json<RevisionList>('read', {
      method: 'GET',
      path: `/v1/agents/${enc(name)}/revisions`,
    });
    return body.revisions;
  }

  /** Makes `revision` (default: the one before the active revision) active. */
  rollback(name: string, revision?: number): Promise<RollbackResult> {
    return this.#json('write', {
      method: 'POST',
      path: `/v1/agents/${enc(name)}/rollback`,
      json: revision === undefined ? {} : { revision },
    });
  }

  /** Deletes the agent and its revisions; past executions stay. */
  async deleteAgent(name: string): Promise<void> {
    await this.#json('write', { method: 'DELETE', path: `/v1/agents/${enc(name)}` });
  }

  // ── executions ──────────────────────────────────────────────────────────────────────────────────────────────

  /**
   * Starts an execution of `agent` (`name`, `name@3` for revision 3, `name@1.2.0` for a version). Without `wait`
   * the answer comes at once (status `queued` or `running`); with it, when the execution ends or `wait` passes.
   */
  createExecution(body: { agent: string; input?: unknown }, options: WaitOptions = {}): Promise<Execution> {
    return this.#json('create', {
      method: 'POST',
      path: '/v1/executions',
      query: { wait: options.wait },
      json: body.input === undefined ? { agent: body.agent } : { agent: body.agent, input: body.input },
      signal: options.signal,
    });
  }

  getExecution(id: string, options: WaitOptions = {}): Promise<Execution> {
    return this.#json('read', {
      method: 'GET',
      path: `/v1/executions/${enc(id)}`,
      query: { wait: options.wait },
      signal: options.signal,
    });
  }

  /** A page of executions, newest first; pass `nextCursor` back as `cursor` for the next one. */
  listExecutions(options: ListExecutionsOptions = {}): Promise<ExecutionList> {
    return this.#json('read', {
      method: 'GET',
      path: '/v1/executions',
      query: { agent: options.agent, status: options.status, limit: options.limit, cursor: options.cursor },
    });
  }

  cancelExecution(id: string): Promise<Execution> {
    return this.#json('write', { method: 'POST', path: `/v1/executions/${enc(id)}/cancel` });
  }

  /** A swarm: its root execution and every descendant (`aegis.swarm.spawn`), with statuses and parents. */
  swarm(rootId: string): Promise<SwarmTree> {
    return this.#json('read', { method: 'GET', path: `/v1/swarms/${enc(rootId)}` });
  }

  /** A page of log lines; continue with `after: page.nextAfter`. */
  logs(id: string, options: LogsOptions = {}): Promise<LogPage> {
    return this.#json('read', {
      method: 'GET',
      path: `/v1/executions/${enc(id)}/logs`,
      query: { after: options.after, limit: options.limit },
      signal: options.signal,
    });
  }

  /**
   * Every log line after `after` as it is written, then the finished execution — over Server-Sent Events. A dropped
   * connection (or one silent for `streamIdleTimeoutMs`) is reopened with `Last-Event-ID`, so no line is lost or
   * repeated. Stop early with `break` or the signal.
   */
  async *followLogs(
    id: string,
    options: FollowLogsOptions = {},
  ): AsyncGenerator<LogStreamItem, void, undefined> {
    const { signal } = options;
    let lastSeq = options.after ?? 0;
    let drops = 0;
    let connected = false;
    let retryMs: number | undefined;
    for (;;) {
      signal?.throwIfAborted();
      let response: IncomingMessage | undefined;
      try {
        response = await this.#send('read', {
          method: 'GET',
          path: `/v1/executions/${enc(id)}/logs`,
          query: { follow: 'true', after: lastSeq > 0 ? lastSeq : undefined },
          headers: {
            accept: 'text/event-stream',
            ...(lastSeq > 0 ? { 'last-event-id': String(lastSeq) } : {}),
          },
          signal,
        });
      } catch (error) {
        // Once streaming, an unreachable or restarting server is one more drop to wait out (e.g. a server restart);
        // before the first connection it is the caller's error to see at once.
        if (!connected || !(error instanceof AegisApiError) || !error.retryable) throw error;
      }
      if (response === undefined) {
        drops = await this.#afterDrop(id, drops + 1, retryMs, signal);
        continue;
      }
      connected = true;
      const type = String(response.headers['content-type'] ?? '');
      if (!type.startsWith('text/event-stream')) {
        response.destroy();
        throw new AegisApiError({
          code: 'INTERNAL',
          status: response.statusCode ?? 0,
          message: `expected an event stream from ${this.server}, got "${type || 'no content type'}"`,
        });
      }
      response.setTimeout(this.#idleMs, () => {
        response.destroy(new Error(`the log stream was silent for ${this.#idleMs} ms`));
      });
      const parser = new SseParser();
      const decoder = new TextDecoder();
      let progressed = false;
      try {
        for await (const chunk of response) {
          for (const event of parser.push(decoder.decode(chunk as Buffer, { stream: true }))) {
            if (event.type === 'log') {
              const line = parseJson<LogLine>(event.data, 'a log event');
              if (line.seq <= lastSeq) continue;
              lastSeq = line.seq;
              progressed = true;
              yield { type: 'line', line };
            } else if (event.type === 'end') {
              yield { type: 'end', execution: parseJson<Execution>(event.data, 'the end event') };
              return;
            } else if (event.type === 'error') {
              const body = parseJson<unknown>(event.data, 'an error event');
              throw (
                errorFromBody(body, 200, undefined) ??
                new AegisApiError({
                  code: 'INTERNAL',
                  status: 200,
                  message: `the log stream failed: ${event.data}`,
                })
              );
            }
          }
          if (parser.retryMs !== undefined) retryMs = parser.retryMs;
        }
      } catch (error) {
        // The consumer's abort and errors the server sent end the stream; a dropped connection is resumed.
        signal?.throwIfAborted();
        if (error instanceof AegisApiError) throw error;
      } finally {
        response.destroy();
      }
      drops = await this.#afterDrop(id, progressed ? 1 : drops + 1, retryMs, signal);
    }
  }

  /**
   * Waits before reconnecting a log stream — the server's `retry:` time, growing while drops repeat without a new
   * line (250 ms · 2ⁿ, at most 10 s) — or throws once `streamReconnects` drops in a row brought nothing.
   */
  async #afterDrop(
    id: string,
    drops: number,
    retryMs: number | undefined,
    signal?: AbortSignal,
  ): Promise<number> {
    if (drops > this.#reconnects) {
      throw new AegisApiError({
        code: 'UNAVAILABLE',
        status: 0,
        message: `the log stream of ${id} from ${this.server} dropped ${drops} times in a row without a new line`,
      });
    }
    const delay = Math.max(retryMs ?? 0, Math.min(10_000, 250 * 2 ** (drops - 1)));
    await sleep(delay, undefined, { signal });
    return drops;
  }

  /** The execution's audit ledger entries, by seq. */
  async audit(id: string): Promise<AuditEntry[]> {
    const body = await this.#json<AuditList>('read', {
      method: 'GET',
      path: `/v1/executions/${enc(id)}/audit`,
    });
    return body.entries;
  }

  // ── live sandboxes ──────────────────────────────────────────────────────────────────────────────────────────

  /** Creates a live sandbox from a deployed agent revision (needs `execute`). */
  createSandbox(options: CreateSandboxOptions): Promise<Sandbox> {
    return this.#json('write', { method: 'POST', path: '/v1/sandboxes', json: options });
  }

  /** Your sandboxes (all of them with an admin key). */
  async listSandboxes(): Promise<Sandbox[]> {
    const body = await this.#json<{ sandboxes: Sandbox[] }>('read', { method: 'GET', path: '/v1/sandboxes' });
    return body.sandboxes;
  }

  getSandbox(id: string): Promise<Sandbox> {
    return this.#json('read', { method: 'GET', path: `/v1/sandboxes/${enc(id)}` });
  }

  /** Kills every process of the sandbox; its record stays readable for a while. */
  deleteSandbox(id: string): Promise<Sandbox> {
    return this.#json('write', { method: 'DELETE', path: `/v1/sandboxes/${enc(id)}` });
  }

  /** Freezes every process of the sandbox; no CPU, and its timeouts stop, until `resumeSandbox`. */
  pauseSandbox(id: string): Promise<Sandbox> {
    return this.#json('write', { method: 'POST', path: `/v1/sandboxes/${enc(id)}/pause` });
  }

  /** Lets a paused sandbox run again (its `expiresAt` moves forward by the time it was paused). */
  resumeSandbox(id: string): Promise<Sandbox> {
    return this.#json('write', { method: 'POST', path: `/v1/sandboxes/${enc(id)}/resume` });
  }

  /** Runs a command to its end; output is collected (at most 4 MiB per stream). */
  runCommand(id: string, options: RunCommandOptions): Promise<CommandResult> {
    return this.#json('write', { method: 'POST', path: `/v1/sandboxes/${enc(id)}/commands`, json: options });
  }

  /** Starts a background command; follow it with `commandEvents`, end it with `killCommand`. */
  startCommand(id: string, options: RunCommandOptions): Promise<SandboxCommand> {
    return this.#json('write', {
      method: 'POST',
      path: `/v1/sandboxes/${enc(id)}/commands`,
      json: { ...options, background: true },
    });
  }

  async listCommands(id: string): Promise<SandboxCommand[]> {
    const body = await this.#json<{ commands: SandboxCommand[] }>('read', {
      method: 'GET',
      path: `/v1/sandboxes/${enc(id)}/commands`,
    });
    return body.commands;
  }

  killCommand(id: string, command: string, signal = 'SIGKILL'): Promise<SandboxCommand> {
    return this.#json('write', {
      method: 'POST',
      path: `/v1/sandboxes/${enc(id)}/commands/${enc(command)}/kill`,
      json: { signal },
    });
  }

  /**
   * A command's output and exit as they happen, over Server-Sent Events; after the `exit` event the stream ends. A
   * dropped connection is reopened with `Last-Event-ID`, so no event is lost or repeated. Stop early with `break`
   * or the signal.
   */
  async *commandEvents(
    id: string,
    command: string,
    options: { after?: number; signal?: AbortSignal } = {},
  ): AsyncGenerator<SandboxCommandEvent, void, undefined> {
    const { signal } = options;
    let lastSeq = options.after ?? 0;
    let drops = 0;
    let retryMs: number | undefined;
    for (;;) {
      signal?.throwIfAborted();
      const response = await this.#send('read', {
        method: 'GET',
        path: `/v1/sandboxes/${enc(id)}/commands/${enc(command)}/events`,
        query: { after: lastSeq > 0 ? lastSeq : undefined },
        headers: {
          accept: 'text/event-stream',
          ...(lastSeq > 0 ? { 'last-event-id': String(lastSeq) } : {}),
        },
        signal,
      });
      const parser = new SseParser();
      const decoder = new TextDecoder();
      let progressed = false;
      try {
        for await (const chunk of response) {
          for (const event of parser.push(decoder.decode(chunk as Buffer, { stream: true }))) {
            if (event.type === 'stdout' || event.type === 'stderr' || event.type === 'exit') {
              const item = parseJson<SandboxCommandEvent>(event.data, 'a command event');
              if (item.seq <= lastSeq) continue;
              lastSeq = item.seq;
              progressed = true;
              yield item;
              if (item.type === 'exit') return;
            } else if (event.type === 'error') {
              const body = parseJson<unknown>(event.data, 'an error event');
              throw (
                errorFromBody(body, 200, undefined) ??
                new AegisApiError({
                  code: 'INTERNAL',
                  status: 200,
                  message: `the command stream failed: ${event.data}`,
                })
              );
            }
          }
          if (parser.retryMs !== undefined) retryMs = parser.retryMs;
        }
      } catch (error) {
        signal?.throwIfAborted();
        if (error instanceof AegisApiError) throw error;
      } finally {
        response.destroy();
      }
      drops = await this.#afterDrop(`${id}/${command}`, progressed ? 1 : drops + 1, retryMs, signal);
    }
  }

  /** Uploads `bytes` to `path` inside the sandbox (raw body). */
  writeFile(id: string, path: string, bytes: Uint8Array): Promise<{ path: string; bytes: number }> {
    return this.#json('write', {
      method: 'PUT',
      path: `/v1/sandboxes/${enc(id)}/files`,
      query: { path },
      body: bytes,
      contentType: 'application/octet-stream',
    });
  }

  readFile(id: string, path: string): Promise<Buffer> {
    return this.#read('read', { method: 'GET', path: `/v1/sandboxes/${enc(id)}/files`, query: { path } });
  }

  async listFiles(id: string, path: string): Promise<SandboxFileEntry[]> {
    const body = await this.#json<{ entries: SandboxFileEntry[] }>('read', {
      method: 'GET',
      path: `/v1/sandboxes/${enc(id)}/files/list`,
      query: { path },
    });
    return body.entries;
  }

  statFile(id: string, path: string): Promise<SandboxFileEntry> {
    return this.#json('read', {
      method: 'GET',
      path: `/v1/sandboxes/${enc(id)}/files/stat`,
      query: { path },
    });
  }

  async removeFile(id: string, path: string): Promise<void> {
    await this.#json('write', { method: 'DELETE', path: `/v1/sandboxes/${enc(id)}/files`, query: { path } });
  }

  // ── keys ────────────────────────────────────────────────────────────────────────────────────────────────────

  /** Creates an API key; `key` is in this answer only. Needs the admin scope (or the unix socket). */
  createKey(options: CreateKeyOptions): Promise<CreatedKey> {
    const body: CreateKeyBody = {
      name: options.name,
      scopes: [...options.scopes],
      ...(options.rate === undefined ? {} : { rate: options.rate }),
    };
    return this.#json('write', { method: 'POST', path: '/v1/keys', json: body });
  }

  async listKeys(): Promise<ApiKey[]> {
    const body = await this.#json<KeyList>('read', { method: 'GET', path: '/v1/keys' });
    return body.keys;
  }

  /** Admin: prunes by the server's retention policy, or by `olderThan`; `dryRun` only counts. */
  prune(body: PruneBody = {}): Promise<PruneReport> {
    return this.#json('write', { method: 'POST', path: '/v1/admin/prune', json: body });
  }

  /** Revokes a key; answers with its record (revokedAt set). */
  revokeKey(id: string): Promise<ApiKey> {
    return this.#json('write', { method: 'DELETE', path: `/v1/keys/${enc(id)}` });
  }

  // ── edge nodes ──────────────────────────────────────────────────────────────────────────────────────────────

  /** A single-use enrolment token for `aegis edge join` (admin); `token` is in this answer only. */
  createEdgeToken(
    options: { labels?: Record<string, string>; ttl?: string } = {},
  ): Promise<CreatedEdgeToken> {
    const body: CreateEdgeTokenBody = {
      ...(options.labels === undefined ? {} : { labels: options.labels }),
      ...(options.ttl === undefined ? {} : { ttl: options.ttl }),
    };
    return this.#json('write', { method: 'POST', path: '/v1/edge/tokens', json: body });
  }

  async listEdgeNodes(): Promise<EdgeNode[]> {
    return (await this.#json<EdgeNodeList>('read', { method: 'GET', path: '/v1/edge/nodes' })).nodes;
  }

  /** Revokes an edge: its connection is cut at once and it can never reconnect. */
  revokeEdgeNode(id: string): Promise<EdgeNode> {
    return this.#json('write', { method: 'DELETE', path: `/v1/edge/nodes/${enc(id)}` });
  }

  // ── cluster ───────────────────────────────────────────────────────────────────────────────────────────────────

  /** The cluster's nodes (servers and edges), by id: state, capacity, executions held, heartbeat age, epoch. */
  async listNodes(): Promise<Node[]> {
    return (await this.#json<NodeList>('read', { method: 'GET', path: '/v1/nodes' })).nodes;
  }

  // ── approvals ───────────────────────────────────────────────────────────────────────────────────────────────

  /** Tool calls waiting for a human (of sandboxes and executions this key owns; all for an admin key). */
  async listApprovals(): Promise<Approval[]> {
    return (await this.#json<ApprovalList>('read', { method: 'GET', path: '/v1/approvals' })).approvals;
  }

  /** Approves (the waiting call runs) or denies (it is refused, naming this key) a pending tool call. */
  decideApproval(id: string, decision: 'approve' | 'deny'): Promise<ApprovalDecided> {
    return this.#json('write', { method: 'POST', path: `/v1/approvals/${enc(id)}/${decision}` });
  }

  // ── agent memory (Cortex) ─────────────────────────────────────────────────────────────────────────────────

  /** A page of an agent's memories, newest first; pass `next` back as `after` for the next one. Needs `read`. */
  listMemories(agent: string, options: ListMemoriesOptions = {}): Promise<MemoryList> {
    return this.#json('read', {
      method: 'GET',
      path: `/v1/agents/${enc(agent)}/memories`,
      query: { namespace: options.namespace, limit: options.limit, after: options.after },
    });
  }

  /** What the agent would recall for `search.query` in its own scope, best first. Needs `read`. */
  async searchMemories(
    agent: string,
    search: MemorySearchBody | string,
    options: MemoryScopeOptions = {},
  ): Promise<RecalledMemory[]> {
    const body: MemorySearchBody = typeof search === 'string' ? { query: search } : search;
    const found = await this.#json<MemorySearchResult>('read', {
      method: 'POST',
      path: `/v1/agents/${enc(agent)}/memories/search`,
      query: { namespace: options.namespace },
      json: body,
    });
    return found.memories;
  }

  /** Forgets one memory of the agent (NOT_FOUND when its scope holds no such id). Needs `deploy`. */
  forgetMemory(agent: string, id: string, options: MemoryScopeOptions = {}): Promise<MemoryForgotten> {
    return this.#json('write', {
      method: 'DELETE',
      path: `/v1/agents/${enc(agent)}/memories/${enc(id)}`,
      query: { namespace: options.namespace },
    });
  }

  /**
   * Re-embeds memories with the server's embedder (after `memory.embedder` changed): one agent's scope (`deploy`),
   * or with `agent` null every agent's (`admin`).
   */
  reembedMemories(agent: string | null, options: MemoryScopeOptions = {}): Promise<MemoryReembedded> {
    if (agent === null) return this.#json('write', { method: 'POST', path: '/v1/memories/reembed' });
    return this.#json('write', {
      method: 'POST',
      path: `/v1/agents/${enc(agent)}/memories/reembed`,
      query: { namespace: options.namespace },
    });
  }

  // ── operations ──────────────────────────────────────────────────────────────────────────────────────────────

  /** Liveness (`GET /healthz`). */
  health(): Promise<HealthStatus> {
    return this.#json('read', { method: 'GET', path: '/healthz' });
  }

  /** Readiness (`GET /readyz`): true when the server takes work, false while starting or draining. Not retried. */
  async ready(): Promise<boolean> {
    const response = await send(this.#endpoint, {
      method: 'GET',
      path: '/readyz',
      headers: this.#headers({}, undefined),
    }).catch((error: unknown) => {
      throw this.#unreachable(error);
    });
    response.resume();
    return response.statusCode !== undefined && response.statusCode >= 200 && response.statusCode < 300;
  }

  /** Prometheus text exposition (`GET /metrics`). */
  async metrics(): Promise<string> {
    const body = await this.#read('read', {
      method: 'GET',
      path: '/metrics',
      headers: { accept: 'text/plain' },
    });
    return body.toString('utf8');
  }

  /** The OpenAPI 3.1 document the server serves at `/openapi.json`. */
  openapi(): Promise<Record<string, unknown>> {
    return this.#json('read', { method: 'GET', path: '/openapi.json' });
  }

  // ── plumbing ────────────────────────────────────────────────────────────────────────────────────────────────

  async #json<T>(mode: RetryMode, req: CallRequest): Promise<T> {
    const body = await this.#read(mode, req);
    if (body.byteLength === 0) return undefined as T;
    return parseJson<T>(body.toString('utf8'), `the answer to ${req.method} ${req.path}`);
  }

  /** Sends with retries and reads the whole 2xx body (a body cut short on a GET is retried too). */
  async #read(mode: RetryMode, req: CallRequest): Promise<Buffer> {
    const tries = { count: 0 };
    for (;;) {
      const response = await this.#send(mode, req, tries);
      try {
        return await readBody(response);
      } catch (error) {
        req.signal?.throwIfAborted();
        if (mode !== 'read' || tries.count >= this.#attempts) throw this.#unreachable(error);
        await sleep(this.#backoff(tries.count), undefined, { signal: req.signal });
      }
    }
  }

  /** Sends, retrying per `mode`, and resolves with a 2xx answer whose body is still to be read. */
  async #send(mode: RetryMode, req: CallRequest, tries = { count: 0 }): Promise<IncomingMessage> {
    let body = req.body;
    let contentType = req.contentType;
    if (req.json !== undefined) {
      body = Buffer.from(JSON.stringify(req.json));
      contentType = 'application/json';
    }
    const raw: RawRequest = {
      method: req.method,
      path: req.path,
      headers: this.#headers(req.headers ?? {}, contentType),
      ...(req.query === undefined ? {} : { query: req.query }),
      ...(body === undefined ? {} : { body }),
      ...(req.signal === undefined ? {} : { signal: req.signal }),
    };
    for (;;) {
      tries.count += 1;
      const attempt = tries.count;
      let response: IncomingMessage;
      try {
        response = await send(this.#endpoint, raw);
      } catch (error) {
        req.signal?.throwIfAborted();
        if ((mode === 'read' || neverSent(error)) && attempt < this.#attempts) {
          await sleep(this.#backoff(attempt), undefined, { signal: req.signal });
          continue;
        }
        throw this.#unreachable(error);
      }
      const status = response.statusCode ?? 0;
      if (status >= 200 && status < 300) return response;
      const error = await this.#errorOf(response);
      const delay = this.#retryDelay(mode, error, attempt);
      if (delay === undefined) throw error;
      await sleep(delay, undefined, { signal: req.signal });
    }
  }

  #headers(extra: Readonly<Record<string, string>>, contentType: string | undefined): Record<string, string> {
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': this.#userAgent };
    if (this.#apiKey !== undefined && this.#endpoint.kind === 'tcp') {
      headers['authorization'] = `Bearer ${this.#apiKey}`;
    }
    if (contentType !== undefined) headers['content-type'] = contentType;
    return { ...headers, ...extra };
  }

  /** Milliseconds to wait before trying again, or undefined when this error must be thrown. */
  #retryDelay(mode: RetryMode, error: AegisApiError, attempt: number): number | undefined {
    if (attempt >= this.#attempts) return undefined;
    const retry =
      mode === 'read'
        ? error.retryable
        : error.status === 429 &&
          (error.code === 'RATE_LIMITED' || (mode === 'create' && error.code === 'QUEUE_FULL'));
    if (!retry) return undefined;
    const delay = error.retryAfterMs ?? this.#backoff(attempt);
    return delay > this.#maxDelayMs ? undefined : delay;
  }

  /** 250 ms, 500 ms, 1 s, … with ±20% jitter, capped at maxDelayMs. */
  #backoff(attempt: number): number {
    const base = Math.min(this.#maxDelayMs, 250 * 2 ** (attempt - 1));
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  async #errorOf(response: IncomingMessage): Promise<AegisApiError> {
    const status = response.statusCode ?? 0;
    const retryAfterMs = parseRetryAfter(response.headers['retry-after']);
    let text = '';
    try {
      text = (await readBody(response)).toString('utf8');
    } catch {
      // The status alone still says what happened.
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const error = errorFromBody(parsed, status, retryAfterMs);
    if (error) return error;
    const snippet = text.trim().replace(/\s+/g, ' ').slice(0, 200);
    return new AegisApiError({
      code: codeForStatus(status),
      status,
      message: `HTTP ${status} ${response.statusMessage ?? ''}`.trim() + (snippet ? `: ${snippet}` : ''),
      details: { hint: `the answer is not an AEGIS error; is ${this.server} an AEGIS server?` },
      ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
    });
  }

  #unreachable(error: unknown): AegisApiError {
    if (error instanceof AegisApiError) return error;
    const why = errnoOf(error) ?? (error instanceof Error ? error.message : String(error));
    return new AegisApiError({
      code: 'UNAVAILABLE',
      status: 0,
      message: `cannot reach the AEGIS server at ${this.server} (${why})`,
      cause: error,
    });
  }
}

function parseJson<T>(text: string, what: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw new AegisApiError({
      code: 'INTERNAL',
      status: 0,
      message: `${what} is not valid JSON: ${(error as Error).message}`,
      cause: error,
    });
  }
}

/** An AegisApiError from an `{error: {code, message, details}}` body, or undefined when it is not one. */
function errorFromBody(
  body: unknown,
  status: number,
  retryAfterMs: number | undefined,
): AegisApiError | undefined {
  const error = (body as Partial<ErrorBody> | undefined)?.error;
  if (typeof error !== 'object' || error === null) return undefined;
  if (typeof error.code !== 'string' || typeof error.message !== 'string') return undefined;
  const details = typeof error.details === 'object' && error.details !== null ? error.details : {};
  return new AegisApiError({
    code: error.code,
    status,
    message: error.message,
    details,
    ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
  });
}

/** `Retry-After: 3` (seconds) or an HTTP date → milliseconds. */
export function parseRetryAfter(value: string | string[] | undefined): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined || text.trim() === '') return undefined;
  if (/^\s*\d+\s*$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}
