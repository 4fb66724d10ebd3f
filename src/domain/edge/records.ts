/**
 * Edge nodes (issue 15 item 5, docs/adr/0108-edge-node-protocol.md): enrolment tokens and enrolled edges as the
 * store keeps them, the label match that places an agent on an edge, and what an edge cannot run yet.
 */
import { AegisError } from '../errors.ts';
import type { CompiledAgent } from '../manifest/compiled.ts';

/** A single-use enrolment token. Only its SHA-256 is stored; the text exists once, in the creation answer. */
export interface EdgeTokenRecord {
  readonly id: string;
  readonly hash: string;
  /** The labels of the edge that uses it — exactly these: an enrolment declaring any other is refused (ADR 0108). */
  readonly labels: Readonly<Record<string, string>>;
  readonly createdAt: string;
  readonly expiresAt: string;
  /** API key id that created it. */
  readonly createdBy: string;
  /** Set once, atomically, by the enrolment that consumed it. */
  readonly usedAt: string | null;
  readonly usedBy: string | null;
}

export interface EdgeNodeRecord {
  /** `edge_…`: the node id, chosen by the server at enrolment. */
  readonly id: string;
  /** The edge's Ed25519 public key (SPKI PEM): later connections sign the server's nonce with it. */
  readonly publicKeyPem: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Runtimes the edge offers (`sandbox`). */
  readonly runtimes: readonly string[];
  /** Executions it runs at once. */
  readonly capacity: number;
  readonly enrolledAt: string;
  readonly tokenId: string;
  readonly revokedAt: string | null;
}

export const EDGE_TOKEN_PREFIX = 'aegis_edge_';
/** Enrolment tokens live at most this long. */
export const MAX_EDGE_TOKEN_TTL_MS = 30 * 24 * 3600_000;
export const DEFAULT_EDGE_TOKEN_TTL_MS = 3600_000;

const LABEL_KEY = /^[a-z0-9]([a-z0-9._/-]{0,62}[a-z0-9])?$/i;
const LABEL_VALUE = /^[a-z0-9._-]{0,63}$/i;

/** Checks labels (`k=v`, Kubernetes-like characters); USAGE naming `where` otherwise. */
export function checkLabels(labels: Readonly<Record<string, string>>, where: string): void {
  const entries = Object.entries(labels);
  if (entries.length > 32) throw new AegisError('USAGE', `${where}: at most 32 labels`);
  for (const [key, value] of entries) {
    if (!LABEL_KEY.test(key) || !LABEL_VALUE.test(value)) {
      throw new AegisError('USAGE', `${where}: label ${JSON.stringify(`${key}=${value}`)} is not valid`, {
        hint: 'keys: letters, digits, . _ / - (1–64, starting and ending alphanumeric); values: letters, digits, . _ - (≤ 63)',
      });
    }
  }
}

/** Parses `k=v` flags into labels. */
export function parseLabelFlags(flags: readonly string[], where: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const flag of flags) {
    const at = flag.indexOf('=');
    if (at <= 0) throw new AegisError('USAGE', `${where}: ${JSON.stringify(flag)} is not key=value`);
    labels[flag.slice(0, at)] = flag.slice(at + 1);
  }
  checkLabels(labels, where);
  return labels;
}

/** The agent's placement labels (empty: no placement). */
export function placementOf(agent: CompiledAgent): Readonly<Record<string, string>> {
  return agent.placement?.labels ?? {};
}

/** True when a node carrying `labels` satisfies every placement label of the agent (and it has some). */
export function matchesPlacement(agent: CompiledAgent, labels: Readonly<Record<string, string>>): boolean {
  const wanted = Object.entries(placementOf(agent));
  return wanted.length > 0 && wanted.every(([key, value]) => labels[key] === value);
}

/**
 * What an edge cannot run yet, as the reasons why (empty: it can). The edge runs one-shot code agents in its local
 * sandbox; everything that needs the server *inside* the run — the LLM gateway (`spec.llm`), the tool gateway
 * (`spec.tools`), declarative agents (`spec.task`), validators (judges are executions on the server), secrets
 * (values would leave the server for a node it does not control) and host mounts (paths of the server's host) — is
 * refused at placement, before anything is stored.
 */
export function edgeRefusals(agent: CompiledAgent): string[] {
  const reasons: string[] = [];
  if (agent.llm !== null) reasons.push('spec.llm (the LLM gateway runs on the server)');
  if (agent.tools !== undefined && agent.tools.length > 0)
    reasons.push('spec.tools (the tool gateway runs on the server)');
  if (agent.task !== undefined) reasons.push('spec.task (declarative agents run their loop on the server)');
  if (agent.validation !== undefined && agent.validation.length > 0)
    reasons.push('spec.execution.validation');
  if (agent.secrets.length > 0) reasons.push('spec.secrets (secret values never leave the server)');
  if (agent.mounts.length > 0) reasons.push('spec.security.filesystem (host paths of the server)');
  return reasons;
}

export function assertEdgeCanRun(agent: CompiledAgent): void {
  const reasons = edgeRefusals(agent);
  if (reasons.length > 0) {
    throw new AegisError(
      'RUNTIME_UNAVAILABLE',
      `agent ${agent.name} is placed on an edge node (labels ${JSON.stringify(placementOf(agent))}), but edges cannot run ${reasons.join(', ')} yet`,
      { hint: 'remove those fields, or change spec.placement.labels so the agent runs on a server node' },
    );
  }
}
