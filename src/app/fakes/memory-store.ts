/**
 * In-memory Store for use-case tests. Behaves like the real stores as far as the shared contract
 * (test/contracts/store.contract.ts) can tell: values go in and come out as JSON would (so `undefined`
 * input/output reads back as null), and every record or bundle handed in or out is a copy.
 */

import type { ApiKeyRecord } from '../../domain/auth/api-key.ts';
import type { AgentRevision, AgentSummary } from '../../domain/deployment.ts';
import type { EdgeNodeRecord, EdgeTokenRecord } from '../../domain/edge/records.ts';
import { AegisError } from '../../domain/errors.ts';
import {
  type ExecutionRecord,
  isTerminal,
  type LogLine,
  MAX_EXECUTIONS_LIST,
} from '../../domain/execution.ts';
import type { SandboxRecord } from '../../domain/live-sandbox.ts';
import type {
  DeployOutcome,
  ExecutionPatch,
  ListExecutionsQuery,
  LlmSpend,
  NewAgentRevision,
  NewLogLine,
  Store,
} from '../ports.ts';

const DEFAULT_LIST_LIMIT = 50;
/** Every ExecutionPatch field; the type check fails here when the port gains one. */
const PATCHABLE = Object.keys({
  status: true,
  exitCode: true,
  reason: true,
  output: true,
  violations: true,
  startedAt: true,
  finishedAt: true,
  durationMs: true,
  owner: true,
  usage: true,
} satisfies Record<keyof ExecutionPatch, true>) as (keyof ExecutionPatch)[];

interface StoredAgent {
  activeRevision: number;
  readonly createdAt: string;
  updatedAt: string;
  /** Oldest first. */
  readonly revisions: AgentRevision[];
}

export class MemoryStore implements Store {
  readonly #executions = new Map<string, ExecutionRecord>();
  readonly #logs = new Map<string, LogLine[]>();
  readonly #agents = new Map<string, StoredAgent>();
  readonly #bundles = new Map<string, Uint8Array>();
  readonly #sandboxes = new Map<string, SandboxRecord>();
  /** By id, in insertion order. */
  readonly #keys = new Map<string, ApiKeyRecord>();

  async createExecution(record: ExecutionRecord): Promise<void> {
    if (this.#executions.has(record.id)) {
      throw new AegisError('INTERNAL', `execution ${record.id} already exists`);
    }
    this.#executions.set(record.id, stored(record));
  }

  async updateExecution(id: string, patch: ExecutionPatch): Promise<ExecutionRecord> {
    const current = this.#executions.get(id);
    if (current === undefined)
      throw new AegisError('NOT_FOUND', `no execution with id ${id}`, { details: { id } });
    // Only the patchable fields, and a field whose value is undefined is "not given" — as in the SQL stores.
    const given: Record<string, unknown> = {};
    for (const key of PATCHABLE) if (patch[key] !== undefined) given[key] = patch[key];
    const next = stored({ ...current, ...given });
    this.#executions.set(id, next);
    return structuredClone(next);
  }

  async getExecution(id: string): Promise<ExecutionRecord | undefined> {
    const record = this.#executions.get(id);
    return record === undefined ? undefined : structuredClone(record);
  }

  async listExecutions(query: ListExecutionsQuery = {}): Promise<readonly ExecutionRecord[]> {
    const { after } = query;
    const matching = [...this.#executions.values()].filter(
      (r) =>
        (query.agent === undefined || r.agent.name === query.agent) &&
        (query.status === undefined || r.status === query.status) &&
        // Strictly after the cursor in list order (created_at desc, id desc).
        (after === undefined ||
          compare(r.createdAt, after.createdAt) < 0 ||
          (r.createdAt === after.createdAt && compare(r.id, after.id) < 0)),
    );
    return matching
      .sort((a, b) => compare(b.createdAt, a.createdAt) || compare(b.id, a.id))
      .slice(0, listLimit(query.limit))
      .map((r) => structuredClone(r));
  }

  /** Oldest first. */
  async listUnfinished(): Promise<readonly ExecutionRecord[]> {
    return [...this.#executions.values()]
      .filter((r) => !isTerminal(r.status))
      .sort((a, b) => compare(a.createdAt, b.createdAt) || compare(a.id, b.id))
      .map((r) => structuredClone(r));
  }

  async appendLogs(executionId: string, lines: readonly NewLogLine[]): Promise<void> {
    if (lines.length === 0) return;
    let log = this.#logs.get(executionId);
    if (log === undefined) {
      log = [];
      this.#logs.set(executionId, log);
    }
    for (const line of lines)
      log.push({ seq: log.length + 1, ts: line.ts, stream: line.stream, text: line.text });
  }

  /** Without `limit`, every line after `afterSeq` (default 0: all of them). */
  async readLogs(
    executionId: string,
    options: { afterSeq?: number; limit?: number } = {},
  ): Promise<readonly LogLine[]> {
    const afterSeq = options.afterSeq ?? 0;
    const after = (this.#logs.get(executionId) ?? []).filter((line) => line.seq > afterSeq);
    const limited =
      options.limit === undefined ? after : after.slice(0, Math.max(0, Math.trunc(options.limit)));
    return limited.map((line) => ({ ...line }));
  }

  async deployRevision(input: NewAgentRevision, bundle: Uint8Array): Promise<DeployOutcome> {
    const agent = this.#agents.get(input.agent);
    const active = agent?.revisions.find((r) => r.revision === agent.activeRevision);
    if (active !== undefined && active.digest === input.digest)
      return { revision: { ...active }, created: false };
    const number = agent === undefined ? 1 : Math.max(0, ...agent.revisions.map((r) => r.revision)) + 1;
    const revision: AgentRevision = {
      agent: input.agent,
      revision: number,
      version: input.version,
      digest: input.digest,
      sizeBytes: input.sizeBytes,
      description: input.description,
      createdAt: input.createdAt,
      deployedBy: input.deployedBy,
    };
    if (!this.#bundles.has(input.digest)) this.#bundles.set(input.digest, bundle.slice());
    if (agent === undefined) {
      this.#agents.set(input.agent, {
        activeRevision: number,
        createdAt: input.createdAt,
        updatedAt: input.createdAt,
        revisions: [revision],
      });
    } else {
      agent.revisions.push(revision);
      agent.activeRevision = number;
      agent.updatedAt = input.createdAt;
    }
    return { revision: { ...revision }, created: true };
  }

  async getAgent(name: string): Promise<AgentSummary | undefined> {
    const agent = this.#agents.get(name);
    return agent === undefined ? undefined : summary(name, agent);
  }

  async listAgents(): Promise<readonly AgentSummary[]> {
    return [...this.#agents.entries()]
      .sort(([a], [b]) => compare(a, b))
      .map(([name, agent]) => summary(name, agent));
  }

  async listRevisions(name: string): Promise<readonly AgentRevision[]> {
    const revisions = this.#agents.get(name)?.revisions ?? [];
    return revisions.map((r) => ({ ...r })).sort((a, b) => b.revision - a.revision);
  }

  async setActiveRevision(name: string, revision: number, at: string): Promise<AgentSummary> {
    const agent = this.#agents.get(name);
    if (agent === undefined)
      throw new AegisError('NOT_FOUND', `no agent named ${name}`, { details: { name } });
    if (!agent.revisions.some((r) => r.revision === revision)) {
      throw new AegisError('NOT_FOUND', `agent ${name} has no revision ${revision}`, {
        details: { name, revision },
      });
    }
    agent.activeRevision = revision;
    agent.updatedAt = at;
    return summary(name, agent);
  }

  async deleteAgent(name: string): Promise<boolean> {
    const agent = this.#agents.get(name);
    if (agent === undefined) return false;
    this.#agents.delete(name);
    const used = new Set([...this.#agents.values()].flatMap((a) => a.revisions.map((r) => r.digest)));
    for (const r of agent.revisions) if (!used.has(r.digest)) this.#bundles.delete(r.digest);
    return true;
  }

  async readBundle(digest: string): Promise<Uint8Array | undefined> {
    const bytes = this.#bundles.get(digest);
    return bytes === undefined ? undefined : bytes.slice();
  }

  async createKey(record: ApiKeyRecord): Promise<void> {
    if (this.#keys.has(record.id)) throw new AegisError('CONFLICT', `an API key with id ${record.id} exists`);
    if ([...this.#keys.values()].some((k) => k.hash === record.hash)) {
      throw new AegisError('CONFLICT', `an API key with that hash exists (id ${record.id})`);
    }
    this.#keys.set(record.id, structuredClone(record));
  }

  async findKeyByHash(hash: string): Promise<ApiKeyRecord | undefined> {
    const found = [...this.#keys.values()].find((k) => k.hash === hash);
    return found === undefined ? undefined : structuredClone(found);
  }

  async listKeys(): Promise<readonly ApiKeyRecord[]> {
    return [...this.#keys.values()]
      .sort((a, b) => compare(a.createdAt, b.createdAt) || compare(a.id, b.id))
      .map((k) => structuredClone(k));
  }

  async revokeKey(id: string, at: string): Promise<ApiKeyRecord> {
    const current = this.#keys.get(id);
    if (current === undefined)
      throw new AegisError('NOT_FOUND', `no API key with id ${id}`, { details: { id } });
    const next = current.revokedAt === null ? { ...current, revokedAt: at } : current;
    this.#keys.set(id, next);
    return structuredClone(next);
  }

  async touchKey(id: string, at: string): Promise<void> {
    const current = this.#keys.get(id);
    if (current !== undefined) this.#keys.set(id, { ...current, lastUsedAt: at });
  }

  readonly #edgeTokens = new Map<string, EdgeTokenRecord>();
  readonly #edgeNodes = new Map<string, EdgeNodeRecord>();

  async createEdgeToken(record: EdgeTokenRecord): Promise<void> {
    if (
      this.#edgeTokens.has(record.id) ||
      [...this.#edgeTokens.values()].some((t) => t.hash === record.hash)
    ) {
      throw new AegisError('CONFLICT', `an edge token with id ${record.id} or the same hash exists`);
    }
    this.#edgeTokens.set(record.id, structuredClone(record));
  }

  async consumeEdgeToken(hash: string, at: string, nodeId: string): Promise<EdgeTokenRecord | undefined> {
    const found = [...this.#edgeTokens.values()].find((t) => t.hash === hash);
    if (found === undefined || found.usedAt !== null) return undefined;
    this.#edgeTokens.set(found.id, { ...found, usedAt: at, usedBy: nodeId });
    return structuredClone(found);
  }

  async putEdgeNode(record: EdgeNodeRecord): Promise<void> {
    this.#edgeNodes.set(record.id, structuredClone(record));
  }

  async getEdgeNode(id: string): Promise<EdgeNodeRecord | undefined> {
    const found = this.#edgeNodes.get(id);
    return found === undefined ? undefined : structuredClone(found);
  }

  async listEdgeNodes(): Promise<readonly EdgeNodeRecord[]> {
    return [...this.#edgeNodes.values()]
      .sort((a, b) => compare(a.enrolledAt, b.enrolledAt) || compare(a.id, b.id))
      .map((n) => structuredClone(n));
  }

  async putSandbox(record: SandboxRecord): Promise<void> {
    this.#sandboxes.set(record.id, structuredClone(record));
  }

  readonly #spend = new Map<string, LlmSpend>();

  async getLlmSpend(scope: string, windowStartMs: number): Promise<LlmSpend> {
    return { ...(this.#spend.get(`${scope}\0${windowStartMs}`) ?? { calls: 0, tokens: 0, usd: 0 }) };
  }

  async addLlmSpend(scope: string, windowStartMs: number, delta: LlmSpend): Promise<void> {
    const key = `${scope}\0${windowStartMs}`;
    const was = this.#spend.get(key) ?? { calls: 0, tokens: 0, usd: 0 };
    this.#spend.set(key, {
      calls: was.calls + delta.calls,
      tokens: was.tokens + delta.tokens,
      usd: was.usd + delta.usd,
    });
  }

  async getSandbox(id: string): Promise<SandboxRecord | undefined> {
    const record = this.#sandboxes.get(id);
    return record === undefined ? undefined : structuredClone(record);
  }

  async listSandboxes(
    filter: { unfinished?: boolean; limit?: number } = {},
  ): Promise<readonly SandboxRecord[]> {
    return [...this.#sandboxes.values()]
      .filter((r) => !filter.unfinished || r.status !== 'terminated')
      .sort((a, b) =>
        a.createdAt === b.createdAt ? (a.id < b.id ? 1 : -1) : a.createdAt < b.createdAt ? 1 : -1,
      )
      .slice(0, filter.limit ?? Number.POSITIVE_INFINITY)
      .map((r) => structuredClone(r));
  }

  async close(): Promise<void> {}
}

/** The name use-case tests know it by. */
export { MemoryStore as MemoryExecutionStore };

function summary(name: string, agent: StoredAgent): AgentSummary {
  const active = agent.revisions.find((r) => r.revision === agent.activeRevision);
  if (active === undefined) throw new Error(`memory store: agent ${name} lost its active revision`);
  return {
    name,
    activeRevision: agent.activeRevision,
    active: { ...active },
    revisions: agent.revisions.length,
    createdAt: agent.createdAt,
    updatedAt: agent.updatedAt,
  };
}

/** A private copy that holds exactly what a JSON column would: `undefined` input/output become null. */
function stored(record: ExecutionRecord): ExecutionRecord {
  const copy = JSON.parse(JSON.stringify(record)) as ExecutionRecord;
  return { ...copy, input: copy.input ?? null, output: copy.output ?? null };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function listLimit(limit: number | undefined): number {
  if (limit === undefined || Number.isNaN(limit)) return DEFAULT_LIST_LIMIT;
  return Math.min(MAX_EXECUTIONS_LIST, Math.max(0, Math.trunc(limit)));
}
