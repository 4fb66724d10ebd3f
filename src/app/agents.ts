/**
 * Use-cases for deployed agents: deploy a bundle as a new revision, list and inspect, roll back, delete. Every change
 * is written to the audit ledger with who made it.
 *
 * Deploy policy for remote callers: a bundle is untrusted input from whoever holds a `deploy` key. Two manifest
 * features reach beyond the bundle and are reserved to `admin` keys: host paths outside the bundle
 * (`security.filesystem` / mounts) and server secrets (`spec.secrets`) — otherwise a deploy key could read the
 * server's files or send its secrets to a host of the deployer's choosing. And a non-admin deploy stays under the
 * server's ceilings (domain/policy/deploy-ceilings.ts): limits, and no network rules reaching the node's own or
 * private addresses.
 */
import { AUDIT_KINDS } from '../domain/audit/entry.ts';
import { hasScope, type Principal, requireScope } from '../domain/auth/api-key.ts';
import {
  type AgentRevision,
  type AgentSelector,
  type AgentSummary,
  formatAgentSelector,
  previousRevision,
  resolveRevision,
} from '../domain/deployment.ts';
import { AegisError } from '../domain/errors.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import { isWithin } from '../domain/paths.ts';
import { checkDeployCeilings, type DeployCeilings } from '../domain/policy/deploy-ceilings.ts';
import type { AgentBundles, AuditLog, Clock, Store } from './ports.ts';

export interface AgentDeps {
  readonly store: Store;
  readonly bundles: AgentBundles;
  readonly audit: AuditLog;
  readonly clock: Pick<Clock, 'now'>;
  /**
   * What a non-admin deploy may ask for (limits, and no network rules reaching loopback/private/link-local/metadata
   * addresses). Undefined: no ceilings (local use; the server always sets them).
   */
  readonly ceilings?: DeployCeilings;
  /** Told after an agent's active revision changed (deploy, rollback) or it was deleted — warm pools follow. */
  readonly onAgentChanged?: (name: string, change: 'activated' | 'deleted') => void;
}

export interface DeployResult {
  readonly agent: AgentSummary;
  readonly revision: AgentRevision;
  /** False: the active revision already held this exact bundle; nothing changed. */
  readonly created: boolean;
}

const iso = (clock: Pick<Clock, 'now'>) => new Date(clock.now()).toISOString();

export function notFoundAgent(name: string): AegisError {
  return new AegisError('NOT_FOUND', `no agent named ${name}`, {
    hint: 'deploy it first (`aegis deploy path/to/agent.yaml`) or list agents with `aegis agents ls`',
  });
}

/** Refuses manifest features reserved to admins (see the file header). */
function checkDeployPolicy(
  principal: Principal,
  agent: CompiledAgent,
  ceilings: DeployCeilings | undefined,
): void {
  const inside = (path: string) => isWithin(path, agent.agentDir);
  // A relative source that climbs out of the bundle (`../data`) lands among other bundles: never what was meant.
  const bundlesRoot = agent.agentDir.slice(0, agent.agentDir.lastIndexOf('/')) || '/';
  for (const mount of agent.mounts) {
    if (!inside(mount.source) && isWithin(mount.source, bundlesRoot)) {
      throw new AegisError(
        'MANIFEST_INVALID',
        `${mount.manifestPath}: the relative source leaves the agent directory; a deployed bundle holds only that directory`,
        { hint: 'move the files into the agent directory (next to agent.yaml) and name them relative to it' },
      );
    }
  }
  if (hasScope(principal.scopes, 'admin')) return;
  for (const mount of agent.mounts) {
    if (inside(mount.source)) continue;
    throw new AegisError(
      'POLICY_DENIED',
      `${mount.manifestPath}: grants the host path ${mount.source}, outside the bundle; only an admin key may deploy host-path grants`,
      { hint: 'ship the files inside the agent directory instead, or ask an admin to deploy this agent' },
    );
  }
  if (agent.secrets.length > 0) {
    throw new AegisError(
      'POLICY_DENIED',
      `spec.secrets: uses server secrets (${[...new Set(agent.secrets.map((s) => s.name))].join(', ')}); only an admin key may deploy agents that use secrets`,
      { hint: 'ask an admin to deploy this agent' },
    );
  }
  if (ceilings !== undefined) checkDeployCeilings(agent, ceilings);
}

export async function deployAgent(
  deps: AgentDeps,
  principal: Principal,
  bundle: Uint8Array,
): Promise<DeployResult> {
  requireScope(principal, 'deploy', 'deploying an agent');
  const { store, bundles, audit, clock } = deps;
  if (bundle.byteLength > bundles.limits.maxBundleBytes) {
    throw new AegisError(
      'PAYLOAD_TOO_LARGE',
      `the bundle is ${bundle.byteLength} bytes; the cap is ${bundles.limits.maxBundleBytes}`,
      { hint: 'leave build outputs and data out with .aegisignore' },
    );
  }
  const digest = bundles.digest(bundle);
  const agent = await bundles.open(digest, bundle);
  try {
    checkDeployPolicy(principal, agent, deps.ceilings);
  } catch (error) {
    // Nothing references a refused bundle: don't keep its unpacked copy.
    if ((await store.readBundle(digest)) === undefined) await bundles.forget(digest);
    throw error;
  }
  const outcome = await store.deployRevision(
    {
      agent: agent.name,
      version: agent.version,
      digest,
      sizeBytes: bundle.byteLength,
      description: agent.description ?? null,
      createdAt: iso(clock),
      deployedBy: principal.id,
    },
    bundle,
  );
  if (outcome.created) {
    audit.append(AUDIT_KINDS.agentDeployed, null, {
      agent: agent.name,
      revision: outcome.revision.revision,
      version: agent.version,
      digest,
      sizeBytes: bundle.byteLength,
      by: principal.id,
    });
    await audit.flush();
    deps.onAgentChanged?.(agent.name, 'activated');
  }
  const summary = await store.getAgent(agent.name);
  if (summary === undefined)
    throw new AegisError('INTERNAL', `agent ${agent.name} vanished right after deploy`);
  return { agent: summary, revision: outcome.revision, created: outcome.created };
}

export async function listAgents(deps: Pick<AgentDeps, 'store'>, principal: Principal) {
  requireScope(principal, 'read', 'listing agents');
  return deps.store.listAgents();
}

export async function getAgent(
  deps: Pick<AgentDeps, 'store'>,
  principal: Principal,
  name: string,
): Promise<{ agent: AgentSummary; revisions: readonly AgentRevision[] }> {
  requireScope(principal, 'read', 'reading an agent');
  const agent = await deps.store.getAgent(name);
  if (agent === undefined) throw notFoundAgent(name);
  return { agent, revisions: await deps.store.listRevisions(name) };
}

/** The revision a selector names, with its compiled manifest (unpacking the bundle if this node hasn't yet). */
export async function resolveAgent(
  deps: Pick<AgentDeps, 'store' | 'bundles'>,
  selector: AgentSelector,
): Promise<{ revision: AgentRevision; agent: CompiledAgent }> {
  const summary = await deps.store.getAgent(selector.name);
  if (summary === undefined) throw notFoundAgent(selector.name);
  const revisions = await deps.store.listRevisions(selector.name);
  const revision = resolveRevision(summary, revisions, selector);
  if (revision === undefined) {
    const known = revisions
      .slice(0, 10)
      .map((r) => `${r.revision} (${r.version})`)
      .join(', ');
    throw new AegisError(
      'NOT_FOUND',
      `agent ${selector.name} has no revision ${formatAgentSelector(selector)}`,
      {
        hint: `revisions: ${known}${revisions.length > 10 ? ', …' : ''}`,
      },
    );
  }
  return { revision, agent: await loadRevision(deps, revision) };
}

export async function loadRevision(
  deps: Pick<AgentDeps, 'store' | 'bundles'>,
  revision: AgentRevision,
): Promise<CompiledAgent> {
  const bytes = await deps.store.readBundle(revision.digest);
  if (bytes === undefined) {
    throw new AegisError(
      'NOT_FOUND',
      `the bundle of ${revision.agent}@${revision.revision} (${revision.digest.slice(0, 12)}) is gone`,
      { hint: 'the agent was deleted; deploy it again' },
    );
  }
  return deps.bundles.open(revision.digest, bytes);
}

/** Makes `target` (default: the revision before the active one) active. */
export async function rollbackAgent(
  deps: AgentDeps,
  principal: Principal,
  name: string,
  target?: number,
): Promise<{ agent: AgentSummary; from: number }> {
  requireScope(principal, 'deploy', 'rolling back an agent');
  const { store, audit, clock } = deps;
  const summary = await store.getAgent(name);
  if (summary === undefined) throw notFoundAgent(name);
  const revisions = await store.listRevisions(name);
  const to =
    target === undefined
      ? previousRevision(summary, revisions)
      : revisions.find((revision) => revision.revision === target);
  if (to === undefined) {
    throw target === undefined
      ? new AegisError(
          'CONFLICT',
          `${name} has no revision older than the active one (${summary.activeRevision}) to roll back to`,
          { hint: `name a revision: aegis agents rollback ${name} --to N` },
        )
      : new AegisError('NOT_FOUND', `${name} has no revision ${target}`, {
          hint: `revisions: ${revisions.map((r) => r.revision).join(', ')}`,
        });
  }
  const from = summary.activeRevision;
  const agent = await store.setActiveRevision(name, to.revision, iso(clock));
  audit.append(AUDIT_KINDS.agentActivated, null, {
    agent: name,
    revision: to.revision,
    from,
    by: principal.id,
  });
  await audit.flush();
  return { agent, from };
}

/**
 * Deletes an agent and its revisions. Refused while any of its executions is queued or running here or elsewhere
 * (they would lose their code); past executions and their logs stay.
 */
export async function deleteAgent(deps: AgentDeps, principal: Principal, name: string): Promise<void> {
  requireScope(principal, 'deploy', 'deleting an agent');
  const { store, bundles, audit } = deps;
  const revisions = await store.listRevisions(name);
  if (revisions.length === 0) throw notFoundAgent(name);
  for (const status of ['queued', 'running', 'created'] as const) {
    const busy = await store.listExecutions({ agent: name, status, limit: 1 });
    if (busy.length > 0) {
      throw new AegisError('CONFLICT', `${name} has ${status} executions (e.g. ${busy[0]!.id})`, {
        hint: 'cancel them (aegis cancel ID) or wait for them to finish, then delete',
      });
    }
  }
  await store.deleteAgent(name);
  audit.append(AUDIT_KINDS.agentDeleted, null, {
    agent: name,
    revisions: revisions.length,
    by: principal.id,
  });
  await audit.flush();
  for (const digest of new Set(revisions.map((r) => r.digest))) {
    if ((await store.readBundle(digest)) === undefined) await bundles.forget(digest);
  }
}
