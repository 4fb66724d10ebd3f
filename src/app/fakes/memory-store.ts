/**
 * In-memory Store for use-case tests. Behaves like the real stores as far as the shared contract
 * (test/contracts/store.contract.ts) can tell: values go in and come out as JSON would (so `undefined`
 * input/output reads back as null), and every record or bundle handed in or out is a copy.
 */

import type { ApiKeyRecord } from '../../domain/auth/api-key.ts';
import {
  type ClaimedExecution,
  type ExecutionFence,
  fencedOut,
  isoPlus,
  leaseExpired,
  matchesPlacement,
  type NodeRecord,
  type NodeRegistration,
  type NodeState,
  type NodeStatus,
} from '../../domain/cluster/node.ts';
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
  ChildInsert,
  ChildLimits,
  ClaimRequest,
  ClusterTopic,
  DeployOutcome,
  ExecutionPatch,
  Heartbeat,
  ListExecutionsQuery,
  LlmSpend,
  NewAgentRevision,
  NewLogLine,
  PruneBatch,
  PrunedRows,
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
  unclaim: true,
} satisfies Record<keyof ExecutionPatch, true>) as (keyof ExecutionPatch)[];

/** Who holds a claimed execution, and under which fence. */
interface Claim {
  node: string | null;
  epoch: number;
  fence: number;
  leaseExpiresAt: string | null;
  cancelRequested: boolean;
}

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
  readonly #claims = new Map<string, Claim>();
  readonly #nodes = new Map<string, NodeRecord>();
  readonly #listeners = new Set<(topic: ClusterTopic, id: string) => void>();

  async createExecution(record: ExecutionRecord): Promise<void> {
    if (this.#executions.has(record.id)) {
      throw new AegisError('INTERNAL', `execution ${record.id} already exists`);
    }
    const { node: _node, ...rest } = record;
    this.#executions.set(record.id, stored(rest));
  }

  async updateExecution(id: string, patch: ExecutionPatch, fence?: ExecutionFence): Promise<ExecutionRecord> {
    const current = this.#executions.get(id);
    if (current === undefined)
      throw new AegisError('NOT_FOUND', `no execution with id ${id}`, { details: { id } });
    const claim = this.#claims.get(id);
    if (fence !== undefined && !this.#holds(claim, fence)) {
      throw fencedOut(id, fence, claim && { node: claim.node, fence: claim.fence });
    }
    // Only the patchable fields, and a field whose value is undefined is "not given" — as in the SQL stores.
    const given: Record<string, unknown> = {};
    for (const key of PATCHABLE) if (patch[key] !== undefined && key !== 'unclaim') given[key] = patch[key];
    const next = stored({ ...current, ...given });
    this.#executions.set(id, next);
    if (patch.unclaim && claim !== undefined) {
      claim.node = null;
      claim.leaseExpiresAt = null;
      claim.cancelRequested = false;
    }
    return this.#view(next);
  }

  async getExecution(id: string): Promise<ExecutionRecord | undefined> {
    const record = this.#executions.get(id);
    return record === undefined ? undefined : this.#view(record);
  }

  #view(record: ExecutionRecord): ExecutionRecord {
    const node = this.#claims.get(record.id)?.node;
    const copy = structuredClone(record);
    return node === null || node === undefined ? copy : { ...copy, node };
  }

  #holds(claim: Claim | undefined, fence: ExecutionFence): boolean {
    if (claim === undefined || claim.node !== fence.nodeId || claim.fence !== fence.fence) return false;
    const node = this.#nodes.get(fence.nodeId);
    return node !== undefined && node.epoch === fence.epoch && node.state !== 'dead';
  }

  // -------------------------------------------------------------------------------------------------------------
  // Cluster.

  async registerNode(registration: NodeRegistration): Promise<NodeRecord> {
    const was = this.#nodes.get(registration.id);
    const record: NodeRecord = {
      id: registration.id,
      kind: registration.kind,
      state: 'live',
      labels: { ...registration.labels },
      runtimes: [...registration.runtimes],
      capacity: registration.capacity,
      host: registration.host,
      version: registration.version,
      startedAt: registration.at,
      heartbeatAt: registration.at,
      leaseExpiresAt: isoPlus(registration.at, registration.leaseMs),
      epoch: (was?.epoch ?? 0) + 1,
    };
    this.#nodes.set(record.id, record);
    return structuredClone(record);
  }

  async heartbeatNode(
    heartbeat: Heartbeat,
  ): Promise<{ readonly cancelRequested: readonly string[] } | undefined> {
    const node = this.#nodes.get(heartbeat.nodeId);
    if (node === undefined || node.epoch !== heartbeat.epoch || node.state === 'dead') return undefined;
    const leaseExpiresAt = isoPlus(heartbeat.at, heartbeat.leaseMs);
    this.#nodes.set(node.id, { ...node, heartbeatAt: heartbeat.at, leaseExpiresAt });
    const cancelRequested: string[] = [];
    for (const [id, claim] of this.#claims) {
      if (claim.node !== node.id || claim.epoch !== node.epoch) continue;
      const status = this.#executions.get(id)?.status;
      if (status === undefined || isTerminal(status)) continue;
      claim.leaseExpiresAt = leaseExpiresAt;
      if (claim.cancelRequested) cancelRequested.push(id);
    }
    return { cancelRequested };
  }

  async listNodes(): Promise<readonly NodeStatus[]> {
    const running = (nodeId: string) =>
      [...this.#claims].filter(
        ([id, claim]) =>
          claim.node === nodeId &&
          ['queued', 'created', 'running'].includes(this.#executions.get(id)?.status ?? ''),
      ).length;
    return [...this.#nodes.values()]
      .sort((a, b) => compare(a.id, b.id))
      .map((n) => ({ ...structuredClone(n), running: running(n.id) }));
  }

  async setNodeState(nodeId: string, epoch: number, state: NodeState, at: string): Promise<boolean> {
    const node = this.#nodes.get(nodeId);
    if (node === undefined || node.epoch !== epoch || node.state === 'dead') return false;
    this.#nodes.set(nodeId, { ...node, state, heartbeatAt: at });
    return true;
  }

  async declareNodeDead(nodeId: string, epoch: number, at: string): Promise<boolean> {
    const node = this.#nodes.get(nodeId);
    if (node === undefined || node.epoch !== epoch || node.state === 'dead') return false;
    if (!leaseExpired(node.leaseExpiresAt, at)) return false;
    this.#nodes.set(nodeId, { ...node, state: 'dead', epoch: node.epoch + 1 });
    return true;
  }

  async claimExecutions(request: ClaimRequest): Promise<readonly ClaimedExecution<ExecutionRecord>[]> {
    const node = this.#nodes.get(request.nodeId);
    if (node === undefined || node.epoch !== request.epoch || node.state !== 'live') return [];
    const excluded = new Set(request.excludeAgents ?? []);
    const candidates = [...this.#executions.values()]
      .filter(
        (r) =>
          r.status === 'queued' &&
          (this.#claims.get(r.id)?.node ?? null) === null &&
          request.runtimes.includes(r.runtime) &&
          !excluded.has(r.agent.name) &&
          matchesPlacement(r.placement, request.labels),
      )
      .sort(
        (a, b) =>
          (b.priority ?? 0) - (a.priority ?? 0) || compare(a.createdAt, b.createdAt) || compare(a.id, b.id),
      )
      .slice(0, Math.max(0, request.limit));
    return candidates.map((record) => this.#take(record, request, request.at, request.leaseMs));
  }

  #take(
    record: ExecutionRecord,
    claimant: { readonly nodeId: string; readonly epoch: number; readonly owner: ExecutionRecord['owner'] },
    at: string,
    leaseMs: number,
  ): ClaimedExecution<ExecutionRecord> {
    const fence = (this.#claims.get(record.id)?.fence ?? 0) + 1;
    this.#claims.set(record.id, {
      node: claimant.nodeId,
      epoch: claimant.epoch,
      fence,
      leaseExpiresAt: isoPlus(at, leaseMs),
      cancelRequested: this.#claims.get(record.id)?.cancelRequested ?? false,
    });
    const next = stored({ ...record, owner: claimant.owner });
    this.#executions.set(record.id, next);
    return { record: this.#view(next), fence: { nodeId: claimant.nodeId, epoch: claimant.epoch, fence } };
  }

  async listOrphanedExecutions(): Promise<readonly ClaimedExecution<ExecutionRecord>[]> {
    const orphans: ClaimedExecution<ExecutionRecord>[] = [];
    for (const record of [...this.#executions.values()].sort(
      (a, b) => compare(a.createdAt, b.createdAt) || compare(a.id, b.id),
    )) {
      const claim = this.#claims.get(record.id);
      if (claim === undefined || claim.node === null) continue;
      if (isTerminal(record.status)) continue;
      const node = this.#nodes.get(claim.node);
      if (node !== undefined && node.state !== 'dead' && node.epoch === claim.epoch) continue;
      orphans.push({
        record: this.#view(record),
        fence: { nodeId: claim.node, epoch: claim.epoch, fence: claim.fence },
      });
    }
    return orphans;
  }

  async takeOverExecution(
    id: string,
    expected: ExecutionFence,
    claimant: { readonly nodeId: string; readonly epoch: number; readonly owner: ExecutionRecord['owner'] },
    at: string,
    leaseMs: number,
  ): Promise<ClaimedExecution<ExecutionRecord> | undefined> {
    const record = this.#executions.get(id);
    const claim = this.#claims.get(id);
    if (record === undefined || claim === undefined || isTerminal(record.status)) return undefined;
    if (claim.node !== expected.nodeId || claim.epoch !== expected.epoch || claim.fence !== expected.fence)
      return undefined;
    return this.#take(record, claimant, at, leaseMs);
  }

  async updateQueuedExecution(id: string, patch: ExecutionPatch): Promise<ExecutionRecord | undefined> {
    const record = this.#executions.get(id);
    if (record === undefined || record.status !== 'queued') return undefined;
    if ((this.#claims.get(id)?.node ?? null) !== null) return undefined;
    const claim = this.#claims.get(id);
    this.#claims.set(id, {
      node: null,
      epoch: 0,
      fence: (claim?.fence ?? 0) + 1,
      leaseExpiresAt: null,
      cancelRequested: false,
    });
    return this.updateExecution(id, patch);
  }

  async requestCancel(id: string): Promise<boolean> {
    const record = this.#executions.get(id);
    if (record === undefined || isTerminal(record.status)) return false;
    const claim = this.#claims.get(id);
    if (claim === undefined) {
      this.#claims.set(id, { node: null, epoch: 0, fence: 0, leaseExpiresAt: null, cancelRequested: true });
    } else {
      claim.cancelRequested = true;
    }
    return true;
  }

  async countQueued(): Promise<number> {
    let queued = 0;
    for (const record of this.#executions.values()) if (record.status === 'queued') queued++;
    return queued;
  }

  async signal(topic: ClusterTopic, id: string): Promise<void> {
    for (const listener of [...this.#listeners]) {
      try {
        listener(topic, id);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  onSignal(listener: (topic: ClusterTopic, id: string) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
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
      .map((r) => this.#view(r));
  }

  /** Oldest first. */
  async createChildExecution(record: ExecutionRecord, limits: ChildLimits): Promise<ChildInsert> {
    const rootId = record.rootId ?? record.id;
    const tree = [...this.#executions.values()].filter((r) => r.rootId === rootId);
    const children = tree.filter((r) => r.parentId === record.parentId).length;
    if (children >= limits.maxChildren) return { ok: false, limit: 'maxChildren', count: children };
    if (limits.maxDescendants !== null && tree.length >= limits.maxDescendants)
      return { ok: false, limit: 'budget.executions', count: tree.length };
    await this.createExecution(record);
    return { ok: true };
  }

  async listSwarm(rootId: string): Promise<readonly ExecutionRecord[]> {
    return [...this.#executions.values()]
      .filter((r) => r.rootId === rootId)
      .sort((a, b) => compare(a.createdAt, b.createdAt) || compare(a.id, b.id))
      .map((r) => this.#view(r));
  }

  async listUnfinished(): Promise<readonly ExecutionRecord[]> {
    return [...this.#executions.values()]
      .filter((r) => !isTerminal(r.status))
      .sort((a, b) => compare(a.createdAt, b.createdAt) || compare(a.id, b.id))
      .map((r) => this.#view(r));
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

  async pruneExecutions(batch: PruneBatch): Promise<PrunedRows> {
    return this.#prune(batch, false);
  }

  async pruneLogs(batch: PruneBatch): Promise<PrunedRows> {
    return this.#prune(batch, true);
  }

  async pruneSandboxes(batch: Omit<PruneBatch, 'agents' | 'exceptAgents'>): Promise<number> {
    const ended = [...this.#sandboxes.values()]
      .filter((r) => r.status === 'terminated' && r.expiresAt < batch.before)
      .sort((a, b) => (a.expiresAt < b.expiresAt ? -1 : 1))
      .slice(0, batch.dryRun ? undefined : batch.limit);
    if (!batch.dryRun) for (const r of ended) this.#sandboxes.delete(r.id);
    return ended.length;
  }

  #prune(batch: PruneBatch, logsOnly: boolean): PrunedRows {
    const picked = [...this.#executions.values()]
      .filter(
        (r) =>
          isTerminal(r.status) &&
          (r.finishedAt ?? r.createdAt) < batch.before &&
          (batch.notBefore === undefined || (r.finishedAt ?? r.createdAt) >= batch.notBefore) &&
          (batch.agents === undefined || batch.agents.includes(r.agent.name)) &&
          !(batch.exceptAgents ?? []).includes(r.agent.name) &&
          (!logsOnly || (this.#logs.get(r.id)?.length ?? 0) > 0),
      )
      .sort((a, b) => ((a.finishedAt ?? a.createdAt) < (b.finishedAt ?? b.createdAt) ? -1 : 1))
      .slice(0, batch.dryRun ? undefined : batch.limit);
    let logLines = 0;
    let logBytes = 0;
    for (const r of picked) {
      for (const line of this.#logs.get(r.id) ?? []) {
        logLines += 1;
        logBytes += new TextEncoder().encode(line.text).length;
      }
      if (batch.dryRun) continue;
      this.#logs.delete(r.id);
      if (!logsOnly) this.#executions.delete(r.id);
    }
    return { executions: picked.length, logLines, logBytes };
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
