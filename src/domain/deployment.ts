/**
 * Deployed agents. Every deploy of a changed bundle creates a new immutable *revision* (1, 2, 3, …) of the agent;
 * one revision is *active* and serves executions that don't name one. Deploying the same bundle again is a no-op
 * that returns the revision already holding it (bundles are content-addressed by SHA-256). Rollback moves the
 * active pointer; it never rewrites a revision.
 */
import { AegisError } from './errors.ts';

export interface AgentRevision {
  readonly agent: string;
  /** 1, 2, 3, … per agent, in deploy order. */
  readonly revision: number;
  /** `metadata.version` of this revision's manifest (free text; several revisions may share it). */
  readonly version: string;
  /** Lowercase hex SHA-256 of the `.tar.gz` bundle as uploaded. */
  readonly digest: string;
  readonly sizeBytes: number;
  readonly description: string | null;
  readonly createdAt: string;
  /** API key id (or `local`) that deployed it. */
  readonly deployedBy: string;
}

export interface AgentSummary {
  readonly name: string;
  readonly activeRevision: number;
  /** The active revision's details. */
  readonly active: AgentRevision;
  readonly revisions: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** `name`, `name@7` (revision 7) or `name@1.2.0` (newest revision whose metadata.version is 1.2.0). */
export interface AgentSelector {
  readonly name: string;
  readonly ref:
    | { readonly kind: 'active' }
    | { readonly kind: 'revision'; readonly revision: number }
    | {
        readonly kind: 'version';
        readonly version: string;
      };
}

const NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export function isAgentName(text: string): boolean {
  return NAME.test(text);
}

/** Parses `name[@ref]`; `where` names the input for the error (a CLI argument, a JSON path). */
export function parseAgentSelector(text: string, where: string): AgentSelector {
  const at = text.indexOf('@');
  const name = at === -1 ? text : text.slice(0, at);
  const ref = at === -1 ? undefined : text.slice(at + 1);
  if (!isAgentName(name)) {
    throw new AegisError('USAGE', `${where}: "${name}" is not an agent name`, {
      hint: 'agent names are lowercase letters, digits and "-", e.g. email-summarizer or email-summarizer@3',
    });
  }
  if (ref === undefined) return { name, ref: { kind: 'active' } };
  if (ref === '') {
    throw new AegisError('USAGE', `${where}: nothing after "@"`, {
      hint: `name a revision number (${name}@3) or a metadata.version (${name}@1.2.0), or leave "@" out for the active one`,
    });
  }
  if (/^[1-9][0-9]{0,8}$/.test(ref)) return { name, ref: { kind: 'revision', revision: Number(ref) } };
  return { name, ref: { kind: 'version', version: ref } };
}

export function formatAgentSelector(selector: AgentSelector): string {
  switch (selector.ref.kind) {
    case 'active':
      return selector.name;
    case 'revision':
      return `${selector.name}@${selector.ref.revision}`;
    case 'version':
      return `${selector.name}@${selector.ref.version}`;
  }
}

/** Picks the revision a selector means from an agent's revisions (any order); undefined when none matches. */
export function resolveRevision(
  summary: AgentSummary,
  revisions: readonly AgentRevision[],
  selector: AgentSelector,
): AgentRevision | undefined {
  const { ref } = selector;
  if (ref.kind === 'active') return revisions.find((r) => r.revision === summary.activeRevision);
  if (ref.kind === 'revision') return revisions.find((r) => r.revision === ref.revision);
  return revisions.filter((r) => r.version === ref.version).sort((a, b) => b.revision - a.revision)[0];
}

/** The revision a rollback without a target goes to: the newest one older than the active one. */
export function previousRevision(
  summary: AgentSummary,
  revisions: readonly AgentRevision[],
): AgentRevision | undefined {
  return revisions
    .filter((r) => r.revision < summary.activeRevision)
    .sort((a, b) => b.revision - a.revision)[0];
}
