/**
 * Cluster nodes, the pure part: what a node is (id, labels, kind, state, lease, epoch), how its id and labels are
 * parsed where an operator types them (`aegis server --node-id/--label`, AEGIS_NODE_ID, AEGIS_NODE_LABELS), and how
 * an execution's placement matches a node. docs/adr/0100-node-identity.md, 0101-cluster-claims-and-fencing.md.
 */
import { AegisError } from '../errors.ts';
import { NODE_LABEL_KEY, NODE_LABEL_VALUE } from '../manifest/schema.ts';

/** A node id: lowercase letters, digits, `.`, `_`, `-`; 1–63 characters, starting with a letter or digit. */
export const NODE_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export type NodeLabels = Readonly<Record<string, string>>;
/** `live`: heartbeating; `draining`: finishing its work, claims nothing new; `dead`: its lease expired (or it left). */
export type NodeState = 'live' | 'draining' | 'dead';
/** `server`: `aegis server` on the shared store; `edge`: an outbound-only edge node (registered by the server it joins). */
export type NodeKind = 'server' | 'edge';

/** Who this process is in the cluster: what the composition root hands to the use-cases. */
export interface NodeIdentity {
  readonly nodeId: string;
  readonly labels: NodeLabels;
}

/** One row of the node registry (`nodes` table; `aegis nodes ls`, GET /v1/nodes). */
export interface NodeRecord {
  readonly id: string;
  readonly kind: NodeKind;
  readonly state: NodeState;
  readonly labels: NodeLabels;
  /** Runtimes this node can run (`sandbox`, `gvisor`, `docker`, …). */
  readonly runtimes: readonly string[];
  /** Executions it runs at once. */
  readonly capacity: number;
  /** Diagnostics only: ownership is the id and epoch, never the host name. */
  readonly host: string;
  readonly version: string;
  readonly startedAt: string;
  readonly heartbeatAt: string;
  readonly leaseExpiresAt: string;
  /**
   * Bumped on every (re-)registration and when the node is declared dead: writes a node makes under an older
   * epoch are refused (fenced).
   */
  readonly epoch: number;
}

/** A registry row with how many executions the node holds now (claimed, not finished): `aegis nodes ls`. */
export interface NodeStatus extends NodeRecord {
  /** Executions it holds (claimed: queued on it, created or running). */
  readonly running: number;
}

/** What a node tells the registry when it (re-)registers. */
export interface NodeRegistration {
  readonly id: string;
  readonly kind: NodeKind;
  readonly labels: NodeLabels;
  readonly runtimes: readonly string[];
  readonly capacity: number;
  readonly host: string;
  readonly version: string;
  /** ISO time of now (the registering node's clock). */
  readonly at: string;
  readonly leaseMs: number;
}

/** The right to write an execution's state: held by the node that claimed it, until another node takes it over. */
export interface ExecutionFence {
  readonly nodeId: string;
  /** The node's epoch when it claimed. */
  readonly epoch: number;
  /** The execution's fencing token: incremented on every claim and takeover. */
  readonly fence: number;
}

/** A claimed (or taken-over) execution and the fence its later writes must carry. */
export interface ClaimedExecution<R> {
  readonly record: R;
  readonly fence: ExecutionFence;
}

/** Checks an operator-given node id; USAGE naming `where` otherwise. */
export function parseNodeId(text: string, where: string): string {
  if (!NODE_ID.test(text)) {
    throw new AegisError('USAGE', `${where}: "${text.slice(0, 80)}" is not a node id`, {
      hint: 'use 1–63 lowercase letters, digits, ".", "_" or "-", starting with a letter or digit, e.g. node-a or eu-west-1.host3',
    });
  }
  return text;
}

/** `k=v` labels (repeatable flags, or one comma-separated env value), checked like spec.placement.labels. */
export function parseNodeLabels(items: readonly string[], where: string): NodeLabels {
  const labels: Record<string, string> = {};
  for (const item of items) {
    const at = item.indexOf('=');
    const key = at === -1 ? item : item.slice(0, at);
    const value = at === -1 ? undefined : item.slice(at + 1);
    if (value === undefined || !NODE_LABEL_KEY.test(key) || !NODE_LABEL_VALUE.test(value)) {
      throw new AegisError('USAGE', `${where}: "${item.slice(0, 80)}" is not a label key=value`, {
        hint: 'keys are lowercase letters, digits and . _ / - (e.g. region); values up to 63 letters, digits and . _ - — e.g. --label region=eu-west',
      });
    }
    if (key in labels && labels[key] !== value) {
      throw new AegisError('USAGE', `${where}: label ${key} is given twice (${labels[key]}, ${value})`);
    }
    labels[key] = value;
  }
  return labels;
}

/** Does a node carrying `labels` satisfy an execution placed with `required` (every required label, same value)? */
export function matchesPlacement(required: NodeLabels | undefined, labels: NodeLabels): boolean {
  if (required === undefined) return true;
  return Object.entries(required).every(([key, value]) => labels[key] === value);
}

/**
 * Why the node that held an execution lost it, as its sweeper saw the registry: it stopped heartbeating (declared
 * dead), it restarted (registered again under a newer epoch: whatever it ran under the old one is gone), or it is no
 * longer registered at all.
 */
export type NodeLossCause =
  | { readonly kind: 'stopped-heartbeating' }
  | { readonly kind: 'restarted'; readonly heldEpoch: number; readonly epoch: number }
  | { readonly kind: 'unregistered' };

/** The cause of a loss from the holder's registry entry (undefined: not registered) and the epoch it held under. */
export function nodeLossCause(
  holder: { readonly state: NodeState; readonly epoch: number } | undefined,
  heldEpoch: number,
): NodeLossCause {
  if (holder === undefined) return { kind: 'unregistered' };
  if (holder.state !== 'dead' && holder.epoch > heldEpoch)
    return { kind: 'restarted', heldEpoch, epoch: holder.epoch };
  return { kind: 'stopped-heartbeating' };
}

/** Why a node-lost execution ended (or was queued again): the record's reason. */
export function nodeLostReason(
  node: string,
  requeued: boolean,
  cause: NodeLossCause = { kind: 'stopped-heartbeating' },
): string {
  const why =
    cause.kind === 'restarted'
      ? `restarted (new epoch ${cause.epoch}; it held this execution under epoch ${cause.heldEpoch})`
      : cause.kind === 'unregistered'
        ? 'is no longer registered'
        : 'stopped heartbeating (its lease expired)';
  return requeued
    ? `node-lost: node ${node} ${why} while this execution ran; queued again (spec.scaling.retryOnNodeLoss)`
    : `node-lost: node ${node} ${why} while this execution ran; it may have run partly (at-least-once start)`;
}

/** The error a write under a lost claim gets (every store says the same). */
export function fencedOut(
  executionId: string,
  fence: ExecutionFence,
  holder: { readonly node: string | null; readonly fence: number } | undefined,
): AegisError {
  const now =
    holder === undefined
      ? 'it is no longer held by any node'
      : holder.node === null
        ? `it is back in the queue (fence ${holder.fence})`
        : `node ${holder.node} holds it now (fence ${holder.fence})`;
  return new AegisError(
    'FENCED',
    `execution ${executionId}: the write of node ${fence.nodeId} (epoch ${fence.epoch}, fence ${fence.fence}) was refused: ${now}`,
    {
      hint: 'this node lost its lease (paused, partitioned or declared dead); it stops the execution and re-registers',
      details: { id: executionId, nodeId: fence.nodeId, epoch: fence.epoch, fence: fence.fence },
    },
  );
}

/** Is a node's lease (ISO time) over at `at`? */
export function leaseExpired(leaseExpiresAt: string, at: string): boolean {
  return leaseExpiresAt < at;
}

/** ISO time `ms` after the ISO time `at`. */
export function isoPlus(at: string, ms: number): string {
  return new Date(Date.parse(at) + ms).toISOString();
}
