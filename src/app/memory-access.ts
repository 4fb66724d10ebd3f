/**
 * Who may touch which memories (issue 17, docs/adr/0125-cortex-integration.md): the policy between an execution (or
 * an operator) and Cortex (app/cortex.ts), which itself searches exactly the scopes it is given.
 *
 *  - An agent's own scope is `(metadata.name, spec.memory.namespace)`, fixed by its manifest: it stores into and
 *    forgets from that scope only. A request that names a scope (`agent`, `namespace`, …) is refused and audited.
 *  - It searches its own scope plus the scopes of agents whose `spec.memory.share` lists it (`MemoryGrants`).
 *    A swarm's shared scope would be one more entry of `readableScopes` (the swarm does not exist yet).
 *  - An agent without `spec.memory` (or with `enabled: false`) gets 403 from the in-sandbox memory API, audited.
 *  - Every store/search/forget is an audit entry written by Cortex (ids, sizes, digests — never the text).
 *  - Texts and meta stored from inside a sandbox pass through the execution's redaction first.
 */
import { type Principal, requireScope } from '../domain/auth/api-key.ts';
import type { MemoryFilter, MemoryMeta, MemoryRecord, MemoryScope } from '../domain/cortex/memory.ts';
import { AegisError } from '../domain/errors.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import { memorySafeText, type PromptMemory } from '../domain/memory/execution-memory.ts';
import {
  cleanMeta,
  parseForgetRequest,
  parseSearchRequest,
  parseStoreRequest,
  ScopeOverride,
  type SearchRequest,
} from '../domain/memory/requests.ts';
import type { Cortex, RecalledMemory } from './cortex.ts';
import type { InSandboxHandler } from './ports.ts';

/** Port: the scopes other agents share with `agent` (their `spec.memory.share` lists it). */
export interface MemoryGrants {
  sharedWith(agent: string): Promise<readonly MemoryScope[]>;
}

/** Cortex as executions and the server reach it, built by the composition root. */
export interface MemoryWiring {
  readonly cortex: Cortex;
  /** Who shares with whom; absent (`aegis run`): an agent reads its own scope only. */
  readonly grants?: MemoryGrants;
  /** The in-sandbox `/v1/memory/*` routes for `token`; everything else goes to `next`. */
  readonly handlerFor: (
    token: string,
    memory: InSandboxMemory,
    next: InSandboxHandler | undefined,
  ) => InSandboxHandler;
  /** A fresh unguessable token, for sandboxes that have no other in-sandbox API token to share. */
  readonly newToken: () => string;
}

/** What the in-sandbox routes call, bound to one execution. Bodies are checked here. */
export interface InSandboxMemory {
  store(body: unknown): Promise<unknown>;
  search(body: unknown): Promise<unknown>;
  forget(body: unknown): Promise<unknown>;
}

/** The agent's own scope, or undefined when its manifest grants no memory. */
export function ownScope(agent: CompiledAgent): MemoryScope | undefined {
  const memory = agent.memory;
  if (memory === undefined || !memory.enabled) return undefined;
  return { agent: agent.name, namespace: memory.namespace };
}

/** Every scope `agent` may search: its own, then those shared with it. (A swarm's scope would be added here.) */
export async function readableScopes(
  agent: CompiledAgent,
  grants: MemoryGrants | undefined,
): Promise<MemoryScope[]> {
  const own = ownScope(agent);
  if (own === undefined) return [];
  const shared = grants === undefined ? [] : await grants.sharedWith(agent.name);
  return [own, ...shared.filter((scope) => scope.agent !== agent.name)];
}

/** A recalled memory as an API answers it. */
export function recalledJson(memory: RecalledMemory): Record<string, unknown> {
  return {
    ...recordJson(memory.record),
    score: memory.score,
    similarity: memory.similarity,
    recency: memory.recency,
    outcomeWeight: memory.outcomeWeight,
  };
}

export function recordJson(record: MemoryRecord): Record<string, unknown> {
  return {
    id: record.id,
    agent: record.scope.agent,
    namespace: record.scope.namespace,
    text: record.text,
    meta: record.meta,
    createdAt: record.createdAt,
    expiresAt: record.expiresAt,
    executionId: record.executionId,
    outcome: record.outcome,
    source: record.source,
    embedder: record.embedderId,
  };
}

export interface ExecutionMemoryContext {
  readonly agent: CompiledAgent;
  readonly executionId: string;
  /** The execution's redaction (its secret values). */
  readonly clean: (text: string) => string;
  /** A refused request (`op`: store, search, forget): the caller audits it (`api.denied`). */
  readonly onDenied: (op: string, reason: string) => void;
}

/** The in-sandbox memory API of one execution. */
export function executionMemory(wiring: MemoryWiring, context: ExecutionMemoryContext): InSandboxMemory {
  const { agent, executionId, clean } = context;
  const deny = (op: string, reason: string, hint: string): never => {
    context.onDenied(op, reason);
    throw new AegisError('PERMISSION_DENIED', reason, { hint, details: { rule: 'spec.memory' } });
  };
  const scopeOf = (op: string): MemoryScope => {
    const own = ownScope(agent);
    if (own !== undefined) return own;
    return deny(
      op,
      agent.memory === undefined
        ? `agent ${agent.name} has no memory: aegis.memory.${op} needs spec.memory in its manifest`
        : `agent ${agent.name} has spec.memory.enabled: false`,
      'add `memory: {}` under spec in agent.yaml (docs: spec.memory) and deploy again',
    );
  };
  const parse = <T>(op: string, body: unknown, parser: (body: unknown) => T): T => {
    try {
      return parser(body);
    } catch (error) {
      if (!(error instanceof ScopeOverride)) throw error;
      const own = ownScope(agent);
      return deny(
        op,
        `${error.message}: an agent's memory scope is fixed by its manifest (agent ${agent.name}, namespace ${own?.namespace ?? 'none'})`,
        `remove "${error.field.split('.').pop()}"; other agents' memories are readable only when they list ${agent.name} in their spec.memory.share`,
      );
    }
  };
  const ttlMs = agent.memory?.ttlMs ?? null;
  return {
    async store(body) {
      const scope = scopeOf('store');
      const request = parse('store', body, parseStoreRequest);
      const record = await wiring.cortex.store(
        scope,
        memorySafeText(request.text, clean),
        cleanMeta(request.meta, (text) => memorySafeText(text, clean)) as MemoryMeta,
        { executionId, source: 'sdk', ...(ttlMs === null ? {} : { ttlMs }) },
      );
      return recordJson(record);
    },
    async search(body) {
      scopeOf('search');
      const request = parse('search', body, (value) => parseSearchRequest(value));
      const scopes = await readableScopes(agent, wiring.grants);
      const found = await search(wiring.cortex, scopes, request, executionId);
      return { memories: found.map(recalledJson) };
    },
    async forget(body) {
      const scope = scopeOf('forget');
      const { id } = parse('forget', body, parseForgetRequest);
      const found = await wiring.cortex.forget(scope, id, executionId);
      if (!found)
        throw new AegisError('NOT_FOUND', `no memory ${id} in the memory of agent ${agent.name}`, {
          hint: 'ids come from aegis.memory.store or search; an agent forgets only its own memories',
        });
      return { id, forgotten: true };
    },
  };
}

function search(
  cortex: Cortex,
  scopes: readonly MemoryScope[],
  request: SearchRequest,
  executionId: string | null,
): Promise<RecalledMemory[]> {
  return cortex.search(scopes, request.query, {
    k: request.k,
    ...(request.filter === undefined ? {} : { filter: request.filter as MemoryFilter }),
    ...(request.threshold === undefined ? {} : { threshold: request.threshold }),
    executionId,
  });
}

/**
 * A declarative agent's recall: the top `spec.memory.recall.k` memories of its readable scopes for the input, above
 * its threshold. Empty when it has no memory or k is 0. Audited by Cortex (`memory.search` with the ids).
 */
export async function recallForPrompt(
  wiring: MemoryWiring,
  agent: CompiledAgent,
  executionId: string,
  query: string,
): Promise<{ prompt: PromptMemory[]; scores: { id: string; score: number }[] }> {
  const memory = agent.memory;
  if (memory === undefined || !memory.enabled || memory.recall.k === 0 || query.trim() === '')
    return { prompt: [], scores: [] };
  const scopes = await readableScopes(agent, wiring.grants);
  const found = await wiring.cortex.search(scopes, query.slice(0, 8000), {
    k: memory.recall.k,
    threshold: memory.recall.threshold,
    executionId,
  });
  return {
    prompt: found.map((m) => ({
      id: m.record.id,
      text: m.record.text,
      score: m.score,
      outcome: m.record.outcome,
      createdAt: m.record.createdAt,
    })),
    scores: found.map((m) => ({ id: m.record.id, score: Math.round(m.score * 1000) / 1000 })),
  };
}

// --- Operators (REST /v1/agents/{name}/memories, `aegis memory`) ----------------------------------------------

export interface OperatorMemoryDeps {
  readonly memory: MemoryWiring;
  /** The agent's deployed manifest, for its namespace; undefined when it is not deployed (memories may outlive it). */
  readonly agentOf: (name: string) => Promise<CompiledAgent | undefined>;
}

async function operatorScope(
  deps: OperatorMemoryDeps,
  name: string,
  namespace: string | undefined,
): Promise<MemoryScope> {
  if (namespace !== undefined) return { agent: name, namespace };
  const agent = await deps.agentOf(name);
  return { agent: name, namespace: agent?.memory?.namespace ?? 'default' };
}

/** Memories of one agent, newest first (`read` scope: they hold what the agent's executions held). */
export async function listMemories(
  deps: OperatorMemoryDeps,
  principal: Principal,
  name: string,
  query: { namespace?: string; limit?: number; after?: string | null },
): Promise<{ memories: Record<string, unknown>[]; next: string | null }> {
  requireScope(principal, 'read', 'listing memories');
  const scope = await operatorScope(deps, name, query.namespace);
  const page = await deps.memory.cortex.list(scope, {
    ...(query.limit === undefined ? {} : { limit: query.limit }),
    after: query.after ?? null,
  });
  return { memories: page.items.map(recordJson), next: page.next };
}

/** A search in one agent's own scope (`read`): what the agent itself would recall there. */
export async function searchMemories(
  deps: OperatorMemoryDeps,
  principal: Principal,
  name: string,
  body: unknown,
  namespace?: string,
): Promise<{ memories: Record<string, unknown>[] }> {
  requireScope(principal, 'read', 'searching memories');
  const scope = await operatorScope(deps, name, namespace);
  let request: SearchRequest;
  try {
    request = parseSearchRequest(body, 100);
  } catch (error) {
    if (error instanceof ScopeOverride)
      throw new AegisError(
        'USAGE',
        `${error.message}: the agent is in the path, the namespace in ?namespace=`,
      );
    throw error;
  }
  const found = await search(deps.memory.cortex, [scope], request, null);
  return { memories: found.map(recalledJson) };
}

/** Deletes one memory (`deploy`: the same keys that shape what the agent is and knows). */
export async function forgetMemory(
  deps: OperatorMemoryDeps,
  principal: Principal,
  name: string,
  id: string,
  namespace?: string,
): Promise<{ id: string; forgotten: true }> {
  requireScope(principal, 'deploy', 'forgetting a memory');
  const scope = await operatorScope(deps, name, namespace);
  if (!(await deps.memory.cortex.forget(scope, id)))
    throw new AegisError('NOT_FOUND', `no memory ${id} in ${scope.agent}/${scope.namespace}`, {
      hint: `list them with \`aegis memory ls ${name}\``,
    });
  return { id, forgotten: true };
}

/** Re-embeds one agent's scope with the server's embedder (`deploy`; every scope: `admin`). */
export async function reembedMemories(
  deps: OperatorMemoryDeps,
  principal: Principal,
  /** null: every scope. */
  name: string | null,
  namespace?: string,
): Promise<{ count: number; embedder: string }> {
  if (name === null) requireScope(principal, 'admin', "re-embedding every agent's memories");
  else requireScope(principal, 'deploy', 're-embedding memories');
  const target = name === null ? 'all' : await operatorScope(deps, name, namespace);
  const { count } = await deps.memory.cortex.reembed(target);
  return { count, embedder: deps.memory.cortex.embedder.id };
}

/**
 * MemoryGrants from the deployed agents: every active revision whose spec.memory.share names the asking agent.
 * `agents` lists the active compiled manifests (the server caches them by bundle digest).
 */
export function deployedMemoryGrants(agents: () => Promise<readonly CompiledAgent[]>): MemoryGrants {
  return {
    async sharedWith(name) {
      const scopes: MemoryScope[] = [];
      for (const agent of await agents()) {
        const memory = agent.memory;
        if (agent.name === name || memory === undefined || !memory.enabled) continue;
        if (memory.share.includes(name)) scopes.push({ agent: agent.name, namespace: memory.namespace });
      }
      return scopes;
    },
  };
}
