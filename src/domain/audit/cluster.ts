/**
 * The ledger in a cluster (docs/adr/0116-cluster-ledger.md): every node keeps its own hash chain, signed with its
 * own key, and ships it to PostgreSQL. This module is the pure part: the cross-check of the nodes' chains against
 * each other, and the shape of the cluster archive (`aegis audit export --cluster`).
 *
 * Each chain on its own is checked by ChainVerifier (verify.ts) with its node's published key. What no single chain
 * can show is a contradiction *between* nodes; `LifecycleCrossCheck` reads the lifecycle entries of every chain and
 * reports, for each execution:
 *
 * - `duplicate-created`: more than one `execution.created` across all nodes (two nodes accepted the same id);
 * - `conflicting-finish`: more than one settlement — an `execution.finished`, or an `execution.recovered` that
 *   stands in for a lost finish (`missing` names `finished`) — across all nodes (two nodes both ended it);
 * - `finish-by-non-holder`: an `execution.finished` written by a node that never started the execution while
 *   another node did (or, when the entries carry fencing tokens, by a node whose fence is not the newest start's);
 * - `missing-created`: an execution started or finished somewhere but created nowhere (and no recovery explains it).
 *
 * An `execution.abandoned` (a node fenced out of its claim stopped the run another node settles) is not a
 * settlement and contradicts nothing: it is how a node that lost its lease records its side without a second finish.
 *
 * Each contradiction names every entry involved: node, seq, kind and time.
 */
import { NODE_ID } from '../cluster/node.ts';
import { AUDIT_KINDS, type ChainLink } from './entry.ts';

/** A node id as the cluster names nodes (domain/cluster/node.ts). */
export function isNodeId(value: unknown): value is string {
  return typeof value === 'string' && NODE_ID.test(value);
}

/** An entry of some node's chain: what cluster reads return (`node` tells whose chain it is in). */
export interface NodeEntryRef {
  readonly node: string;
  readonly seq: number;
  readonly kind: string;
  readonly ts: string;
}

export type ClusterProblem =
  | 'duplicate-created'
  | 'conflicting-finish'
  | 'finish-by-non-holder'
  | 'missing-created';

export interface ClusterContradiction {
  readonly problem: ClusterProblem;
  readonly execution: string;
  /** One sentence naming the execution, the nodes and the seqs. */
  readonly message: string;
  /** Every entry involved, in (node, seq) order. */
  readonly entries: readonly NodeEntryRef[];
}

/** The entry kinds the cross-check reads (everything else is left to each chain's own verification). */
export const CROSS_CHECK_KINDS: ReadonlySet<string> = new Set([
  AUDIT_KINDS.executionCreated,
  AUDIT_KINDS.executionStarted,
  AUDIT_KINDS.executionFinished,
  AUDIT_KINDS.executionRecovered,
]);

interface Sighting extends NodeEntryRef {
  /** The fencing token in the entry's data, when the writer recorded one. */
  readonly fence: number | undefined;
  /** `execution.recovered` standing in for a lost `execution.finished`. */
  readonly settles: boolean;
}

/** Folds lifecycle entries of every node's chain, in any order, and names the contradictions between them. */
export class LifecycleCrossCheck {
  readonly #byExecution = new Map<string, Sighting[]>();

  /** Feeds one stored entry of `node`'s chain (entries of other kinds, or about no execution, are ignored). */
  addLink(node: string, link: Pick<ChainLink, 'seq' | 'ts' | 'execution' | 'kind' | 'dataJson'>): void {
    if (link.execution === null || !CROSS_CHECK_KINDS.has(link.kind)) return;
    this.add(node, link, parseObject(link.dataJson));
  }

  /** Feeds one entry of `node`'s chain with its data already parsed (an export line). */
  add(
    node: string,
    link: {
      readonly seq: number;
      readonly ts: string;
      readonly execution: string | null;
      readonly kind: string;
    },
    data: Readonly<Record<string, unknown>>,
  ): void {
    if (link.execution === null || !CROSS_CHECK_KINDS.has(link.kind)) return;
    const fence = data['fence'];
    const missing = data['missing'];
    const sighting: Sighting = {
      node,
      seq: link.seq,
      kind: link.kind,
      ts: link.ts,
      fence: Number.isSafeInteger(fence) ? (fence as number) : undefined,
      settles:
        link.kind === AUDIT_KINDS.executionRecovered &&
        Array.isArray(missing) &&
        missing.includes('finished'),
    };
    const list = this.#byExecution.get(link.execution);
    if (list === undefined) this.#byExecution.set(link.execution, [sighting]);
    else list.push(sighting);
  }

  /** Executions seen so far. */
  get executions(): number {
    return this.#byExecution.size;
  }

  /** The contradictions, by execution id. */
  finish(): ClusterContradiction[] {
    const found: ClusterContradiction[] = [];
    const ids = [...this.#byExecution.keys()].sort();
    for (const execution of ids) {
      const all = this.#byExecution.get(execution)!.sort(byNodeSeq);
      const of = (kind: string) => all.filter((s) => s.kind === kind);
      const created = of(AUDIT_KINDS.executionCreated);
      const started = of(AUDIT_KINDS.executionStarted);
      const finished = of(AUDIT_KINDS.executionFinished);
      const recovered = of(AUDIT_KINDS.executionRecovered);
      const settlements = all.filter((s) => s.kind === AUDIT_KINDS.executionFinished || s.settles);
      const report = (problem: ClusterProblem, entries: readonly Sighting[], what: string) =>
        found.push({
          problem,
          execution,
          message: `execution ${execution}: ${what} (${entries.map(describe).join('; ')})`,
          entries: entries.map(({ node, seq, kind, ts }) => ({ node, seq, kind, ts })),
        });
      if (created.length > 1) {
        report(
          'duplicate-created',
          created,
          `${created.length} execution.created entries, by ${nodesOf(created)}: it was accepted more than once`,
        );
      }
      if (settlements.length > 1) {
        report(
          'conflicting-finish',
          settlements,
          `${settlements.length} terminal entries, by ${nodesOf(settlements)}: more than one node settled it`,
        );
      }
      if (started.length > 0) {
        const fenced = started.filter((s) => s.fence !== undefined);
        const newest = fenced.reduce<Sighting | undefined>(
          (a, b) => (a === undefined || b.fence! > a.fence! ? b : a),
          undefined,
        );
        const holders = new Set(started.map((s) => s.node));
        for (const finish of finished) {
          if (!holders.has(finish.node)) {
            report(
              'finish-by-non-holder',
              [...started, finish],
              `node ${finish.node} wrote execution.finished but only ${nodesOf(started)} started it`,
            );
          } else if (
            newest !== undefined &&
            finish.fence !== undefined &&
            (finish.fence !== newest.fence || finish.node !== newest.node)
          ) {
            report(
              'finish-by-non-holder',
              [newest, finish],
              `node ${finish.node} finished it under fence ${finish.fence}, but node ${newest.node} held fence ${newest.fence}`,
            );
          }
        }
      }
      if (created.length === 0 && recovered.length === 0 && (started.length > 0 || finished.length > 0)) {
        report(
          'missing-created',
          [...started, ...finished],
          'started or finished, but no node recorded its execution.created',
        );
      }
    }
    return found;
  }
}

function describe(s: Sighting): string {
  return `${s.kind} at node ${s.node} seq ${s.seq}, ${s.ts}${s.fence === undefined ? '' : `, fence ${s.fence}`}`;
}

function nodesOf(list: readonly Sighting[]): string {
  return [...new Set(list.map((s) => s.node))].join(', ');
}

function byNodeSeq(a: Sighting, b: Sighting): number {
  return a.node < b.node ? -1 : a.node > b.node ? 1 : a.seq - b.seq;
}

function parseObject(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === 'object' && value !== null && !Array.isArray(value))
      return value as Record<string, unknown>;
  } catch {
    // a tampered row: the chain's own verification reports it
  }
  return {};
}
