/**
 * Edge nodes in the cluster registry (ADR 0134): an edge connected to a server is a row of `nodes` (kind `edge`,
 * its labels, runtimes and declared capacity), registered and heartbeated by the server holding its connection —
 * the edge itself never reaches the store. When it disconnects, that server stops renewing its lease; after the
 * edge grace any node's sweep declares it dead. A revoked edge is marked dead at once. `aegis nodes ls` shows them.
 */
import type { EdgeNodeRecord } from '../domain/edge/records.ts';
import type { Clock, ClusterStore } from './ports.ts';

export interface EdgeRegistryDeps {
  readonly store: Pick<ClusterStore, 'registerNode' | 'heartbeatNode' | 'setNodeState'>;
  readonly clock: Pick<Clock, 'now'>;
  /** The server node holding the connections: shown as each edge's host (`via <id>`). */
  readonly serverNodeId: string;
  readonly version: string;
  /** An edge's lease: how long after its last heartbeat (its server's) it is declared dead — the edge grace. */
  readonly leaseMs: number;
  readonly log?: (entry: Record<string, unknown>) => void;
}

export interface ConnectedEdgeInfo {
  readonly record: EdgeNodeRecord;
  readonly capacity: number;
}

export class EdgeRegistry {
  readonly #deps: EdgeRegistryDeps;
  /** Edges this server registered, with the epoch it registered them under. */
  readonly #epochs = new Map<string, number>();

  constructor(deps: EdgeRegistryDeps) {
    this.#deps = deps;
  }

  /** An edge connected here: registered `live` (a fresh epoch). */
  async connected(edge: ConnectedEdgeInfo): Promise<void> {
    const { store, clock } = this.#deps;
    const node = await store.registerNode({
      id: edge.record.id,
      kind: 'edge',
      labels: edge.record.labels,
      runtimes: edge.record.runtimes,
      capacity: edge.capacity,
      host: `via ${this.#deps.serverNodeId}`,
      version: this.#deps.version,
      at: new Date(clock.now()).toISOString(),
      leaseMs: this.#deps.leaseMs,
    });
    this.#epochs.set(edge.record.id, node.epoch);
  }

  /**
   * One heartbeat for the edges connected here now: each lease renewed (re-registered when it was declared dead
   * meanwhile, e.g. this server was paused); edges no longer connected are let go — their lease runs out.
   */
  async beat(connected: readonly ConnectedEdgeInfo[]): Promise<void> {
    const { store, clock } = this.#deps;
    const here = new Set(connected.map((edge) => edge.record.id));
    for (const id of [...this.#epochs.keys()]) if (!here.has(id)) this.#epochs.delete(id);
    for (const edge of connected) {
      const epoch = this.#epochs.get(edge.record.id);
      const beat =
        epoch === undefined
          ? undefined
          : await store.heartbeatNode({
              nodeId: edge.record.id,
              epoch,
              at: new Date(clock.now()).toISOString(),
              leaseMs: this.#deps.leaseMs,
            });
      if (beat === undefined) await this.connected(edge);
    }
  }

  /** A revoked edge: `dead` in the registry now, not after its lease. */
  async revoked(nodeId: string): Promise<void> {
    const epoch = this.#epochs.get(nodeId);
    this.#epochs.delete(nodeId);
    if (epoch === undefined) return;
    await this.#deps.store.setNodeState(
      nodeId,
      epoch,
      'dead',
      new Date(this.#deps.clock.now()).toISOString(),
    );
  }
}
