/**
 * The cluster archive (`aegis audit export --cluster`): every node's chain, signed heads and public key in one JSON
 * Lines file, verifiable offline.
 *
 *   line 1   {"type":"cluster","format":"aegis.audit.cluster-export/v1","exportedAt":…,"nodes":[{"node":…,"keyId":…}]}
 *   then, for each node in that list, in that order, one single-node export (export-format.ts) whose header also
 *   names the node:
 *            {"type":"header","format":"aegis.audit.export/v1","node":"n1","publicKey":…,"keyId":…,…}
 *            {"type":"head",…}…   {"type":"entry",…}…
 *
 * Each section is checked by ExportVerifier (its chain link by link, its heads with that node's key); the lifecycle
 * entries of all sections go through LifecycleCrossCheck (cluster.ts). A node listed but absent, present but not
 * listed, or present twice makes the archive `malformed`.
 */
import { type ClusterContradiction, CROSS_CHECK_KINDS, isNodeId, LifecycleCrossCheck } from './cluster.ts';
import { GENESIS_HASH } from './entry.ts';
import { type AuditExportHeader, type ExportVerification, ExportVerifier } from './export-format.ts';
import type { AuditVerification, ChainCrypto } from './verify.ts';

export const CLUSTER_EXPORT_FORMAT = 'aegis.audit.cluster-export/v1';

export interface ClusterArchiveHeader {
  readonly type: 'cluster';
  readonly format: typeof CLUSTER_EXPORT_FORMAT;
  readonly exportedAt: string;
  /** Every node whose chain follows, in order, with the key id it published. */
  readonly nodes: readonly { readonly node: string; readonly keyId: string }[];
}

/** A single-node export header inside a cluster archive. */
export type NodeExportHeader = AuditExportHeader & {
  readonly node: string;
  /** Every key the node published, oldest first (rotations); the current one is `publicKey`. */
  readonly clusterKeys?: readonly { readonly keyId: string; readonly publicKey: string }[];
};

/** The verdict on one node's chain. */
export interface NodeVerification {
  readonly node: string;
  readonly keyId: string | undefined;
  readonly result: AuditVerification;
}

export interface ClusterVerification {
  /** Every chain intact and no contradiction between them. */
  readonly ok: boolean;
  readonly nodes: readonly NodeVerification[];
  readonly contradictions: readonly ClusterContradiction[];
  /** Problems with the archive itself (not a chain): missing or extra node sections, a bad first line. */
  readonly archiveProblems: readonly string[];
  /** Executions the cross-check saw. */
  readonly executions: number;
}

/** True when the first line of a file is a cluster archive header (so `aegis audit verify <file>` can tell). */
export function isClusterArchiveLine(text: string): boolean {
  try {
    const value = JSON.parse(text) as { type?: unknown; format?: unknown };
    return value?.type === 'cluster' && value.format === CLUSTER_EXPORT_FORMAT;
  } catch {
    return false;
  }
}

/** Verifies a cluster archive fed line by line. `cryptoFor` is as for ExportVerifier (per node section). */
export class ClusterArchiveVerifier {
  readonly #cryptoFor: (header: NodeExportHeader) => ChainCrypto;
  readonly #crossCheck = new LifecycleCrossCheck();
  readonly #results: NodeVerification[] = [];
  readonly #problems: string[] = [];
  #header: ClusterArchiveHeader | undefined;
  #line = 0;
  #section: { node: string; verifier: ExportVerifier; header: NodeExportHeader; records: number } | undefined;
  #stopped = false;

  constructor(cryptoFor: (header: NodeExportHeader) => ChainCrypto) {
    this.#cryptoFor = cryptoFor;
  }

  pushLine(text: string): boolean {
    if (this.#stopped) return false;
    this.#line += 1;
    if (text.trim() === '') return true;
    let value: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
        throw new Error('not an object');
      value = parsed as Record<string, unknown>;
    } catch {
      return this.#stop(`line ${this.#line} is not a JSON object`);
    }
    if (this.#header === undefined) {
      const nodes = value['nodes'];
      if (
        value['type'] !== 'cluster' ||
        value['format'] !== CLUSTER_EXPORT_FORMAT ||
        !Array.isArray(nodes) ||
        !nodes.every((n) => isNodeId((n as { node?: unknown })?.node))
      ) {
        return this.#stop(`line 1 is not an ${CLUSTER_EXPORT_FORMAT} header`);
      }
      this.#header = value as unknown as ClusterArchiveHeader;
      return true;
    }
    if (value['type'] === 'header') {
      this.#closeSection();
      const node = value['node'];
      if (!isNodeId(node))
        return this.#stop(`line ${this.#line}: a node section whose header names no valid node`);
      if (this.#results.some((r) => r.node === node)) {
        return this.#stop(`line ${this.#line}: a second section for node ${node}`);
      }
      const verifier = new ExportVerifier((header) => this.#cryptoFor(header as NodeExportHeader));
      this.#section = { node, verifier, header: value as unknown as NodeExportHeader, records: 0 };
      verifier.pushLine(text);
      return true;
    }
    const section = this.#section;
    if (section === undefined) return this.#stop(`line ${this.#line}: a record before any node section`);
    section.records += 1;
    section.verifier.pushLine(text);
    if (
      value['type'] === 'entry' &&
      typeof value['kind'] === 'string' &&
      CROSS_CHECK_KINDS.has(value['kind'])
    ) {
      const data = value['data'];
      this.#crossCheck.add(
        section.node,
        value as unknown as { seq: number; ts: string; execution: string | null; kind: string },
        typeof data === 'object' && data !== null ? (data as Record<string, unknown>) : {},
      );
    }
    return true;
  }

  finish(): ClusterVerification {
    this.#closeSection();
    if (this.#header === undefined && this.#problems.length === 0)
      this.#problems.push('the archive is empty');
    const listed = this.#header?.nodes ?? [];
    for (const { node } of listed) {
      if (!this.#results.some((r) => r.node === node)) {
        this.#problems.push(`node ${node} is listed in the archive header but its chain is missing`);
      }
    }
    for (const r of this.#results) {
      if (!listed.some((l) => l.node === r.node)) {
        this.#problems.push(`node ${r.node}'s chain is in the archive but not listed in its header`);
      }
    }
    const contradictions = this.#crossCheck.finish();
    return {
      ok:
        this.#problems.length === 0 && contradictions.length === 0 && this.#results.every((r) => r.result.ok),
      nodes: this.#results,
      contradictions,
      archiveProblems: this.#problems,
      executions: this.#crossCheck.executions,
    };
  }

  #closeSection(): void {
    const section = this.#section;
    if (section === undefined) return;
    this.#section = undefined;
    const { header: _h, ...verdict }: ExportVerification = section.verifier.finish();
    // A node that published its key but has written nothing yet has an empty chain, which is not a forgery
    // (a single-node export with no signed head is refused: there, emptiness is what an attacker would produce).
    const result: AuditVerification =
      section.records === 0 && !verdict.ok && verdict.problem === 'emptied'
        ? {
            ok: true,
            entries: 0,
            heads: 0,
            lastSeq: 0,
            lastHash: GENESIS_HASH,
            signedThroughSeq: 0,
            unsignedTail: 0,
          }
        : verdict;
    this.#results.push({ node: section.node, keyId: section.header.keyId, result });
  }

  #stop(problem: string): false {
    this.#problems.push(problem);
    this.#stopped = true;
    return false;
  }
}
