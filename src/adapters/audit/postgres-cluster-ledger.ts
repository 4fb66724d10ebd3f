/**
 * The cluster ledger in PostgreSQL (docs/adr/0116-cluster-ledger.md): the tables every node ships its own chain
 * into (`ledger_nodes`, `ledger_entries`, `ledger_heads`, `ledger_incidents`; migration 8 of the store), and what
 * reads them — cluster reads of one execution, the cluster archive, and `verify --cluster`.
 *
 * Nothing here is trusted for being in PostgreSQL: whoever can write the database can write any row. A node's rows
 * count only as far as its chain verifies link by link and its heads verify with the key the node published first;
 * a later, different key for the same node id is refused (and recorded as an incident).
 */
import pg from 'pg';
import { isNodeId, LifecycleCrossCheck } from '../../domain/audit/cluster.ts';
import type { ClusterVerification, NodeVerification } from '../../domain/audit/cluster-archive.ts';
import {
  AUDIT_KINDS,
  type AuditEntry,
  type ChainLink,
  type ChainTip,
  EMPTY_TIP,
  fromLink,
  type SignedHead,
} from '../../domain/audit/entry.ts';
import { AUDIT_EXPORT_FORMAT, type AuditExportRecord } from '../../domain/audit/export-format.ts';
import { addCoverage, LIFECYCLE_KINDS, type LifecycleCoverage } from '../../domain/audit/store-check.ts';
import { type AuditVerification, type ChainCrypto, ChainVerifier } from '../../domain/audit/verify.ts';
import { AegisError } from '../../domain/errors.ts';
import { isSchemaName, LOCK_KEY_SQL, migrate } from '../store/postgres/migrations.ts';
import { nodeHasher, parseEd25519PublicKey, publicKeyId, verifyEd25519 } from './node-key.ts';

export interface PostgresClusterLedgerOptions {
  /** Schema of the store's tables. @default 'public' */
  readonly schema?: string;
  /** @default 4 */
  readonly poolSize?: number;
}

/** A node's published keys: the current one (`keyId`, `publicKey`) and every one it had, oldest first. */
export interface PublishedNode {
  readonly node: string;
  readonly keyId: string;
  readonly publicKey: string;
  /** When its first key was published. */
  readonly publishedAt: string;
  /** The first key (`rotatedAtSeq` null), then each key its chain rotated to, at the seq of `audit.key-rotated`. */
  readonly keys: readonly {
    readonly keyId: string;
    readonly publicKey: string;
    readonly rotatedAtSeq: number | null;
  }[];
}

export interface LedgerIncident {
  readonly node: string;
  readonly at: string;
  readonly problem: string;
  readonly message: string;
}

/** An entry read from the cluster: whose chain it is in. */
export type NodeAuditEntry = AuditEntry & { readonly node: string };

/** What `verify --cluster` knows beyond the database, about the node it runs on. */
export interface LocalReplicationEvidence {
  readonly node: string;
  /** Heads this node's witness recorded (outside the database) that it has shipped: all must be in PostgreSQL. */
  readonly witnessed: readonly SignedHead[];
  /** The newest entry this node shipped (its replication state file): PostgreSQL must still hold it. */
  readonly shipped: ChainTip | undefined;
}

const ENTRY_COLUMNS = 'seq, ts, execution, kind, data, prev_hash, hash';
const PAGE = 5000;

interface EntryRow {
  readonly node_id?: string;
  readonly seq: string;
  readonly ts: string;
  readonly execution: string | null;
  readonly kind: string;
  readonly data: string;
  readonly prev_hash: string;
  readonly hash: string;
}

interface HeadRow {
  readonly seq: string;
  readonly hash: string;
  readonly ts: string;
  readonly key_id: string;
  readonly signature: string;
}

export class PostgresClusterLedger {
  readonly #pool: pg.Pool;

  /** Connects and brings the schema up to date (the same migrations as the store; idempotent). */
  static async open(url: string, options: PostgresClusterLedgerOptions = {}): Promise<PostgresClusterLedger> {
    const schema = options.schema ?? 'public';
    if (!isSchemaName(schema)) {
      throw new AegisError('USAGE', `"${schema}" is not a schema name the cluster ledger accepts`);
    }
    const pool = new pg.Pool({
      connectionString: url,
      max: options.poolSize ?? 4,
      connectionTimeoutMillis: 10_000,
      application_name: 'aegis-ledger',
      options: `-c search_path=${schema}`,
    });
    pool.on('error', () => {});
    try {
      const client = await pool.connect();
      try {
        await migrate(client, schema);
      } finally {
        client.release();
      }
    } catch (error) {
      await pool.end().catch(() => {});
      throw new AegisError(
        'UNAVAILABLE',
        `cannot open the cluster ledger in PostgreSQL: ${(error as Error).message}`,
        {
          cause: error,
          hint: 'check AEGIS_DATABASE_URL and that the server is up',
        },
      );
    }
    return new PostgresClusterLedger(pool);
  }

  private constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  /**
   * Publishes `node`'s public key. The first publication wins: the same key again is fine. A different key is
   * accepted only as a rotation the node's own chain vouches for: an `audit.key-rotated` entry naming exactly this
   * key, in the replicated chain, verified link by link up to a head signed by a key already published (what
   * `aegis audit rotate-key` writes). Anything else is refused, recorded in `ledger_incidents` (unless `quiet`:
   * the replicator asks once before shipping the rotation), and answered with the keys that stand.
   */
  async publishKey(
    node: string,
    key: { readonly keyId: string; readonly publicKey: string },
    at: string,
    options: { readonly quiet?: boolean } = {},
  ): Promise<{ readonly ok: true } | { readonly ok: false; readonly published: PublishedNode }> {
    assertNodeId(node);
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(`SELECT pg_advisory_xact_lock(${LOCK_KEY_SQL})`, [`aegis.ledger-keys:${node}`]);
      await client.query(
        `INSERT INTO ledger_nodes (node_id, key_id, public_key, published_at, rotated_at_seq)
           SELECT $1, $2, $3, $4, NULL WHERE NOT EXISTS (SELECT 1 FROM ledger_nodes WHERE node_id = $1)`,
        [node, key.keyId, key.publicKey, at],
      );
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      client.release();
    }
    let published = (await this.nodes()).find((n) => n.node === node)!;
    if (published.keys.some((k) => k.keyId === key.keyId)) return { ok: true };
    const rotatedAt = await this.#rotationTo(published, key);
    if (rotatedAt !== undefined) {
      await this.#pool.query(
        `INSERT INTO ledger_nodes (node_id, key_id, public_key, published_at, rotated_at_seq)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (node_id, key_id) DO NOTHING`,
        [node, key.keyId, key.publicKey, at, rotatedAt],
      );
      return { ok: true };
    }
    published = (await this.nodes()).find((n) => n.node === node)!;
    if (options.quiet !== true) {
      await this.recordIncident(
        node,
        'key-refused',
        `a node presented key ${key.keyId} for node id ${node}, which published key ${published.keyId} ` +
          `(first on ${published.publishedAt}) and whose chain hands over to no such key: refused (a second node ` +
          "with the same id, or a node forging another's entries)",
        at,
      );
    }
    return { ok: false, published };
  }

  /**
   * The seq of the `audit.key-rotated` entry in `node`'s replicated chain that names `key`, when the chain verifies
   * with the node's published keys up to a head at or after it; undefined otherwise.
   */
  async #rotationTo(
    node: PublishedNode,
    key: { readonly keyId: string; readonly publicKey: string },
  ): Promise<number | undefined> {
    const { rows } = await this.#pool.query<{ seq: string; data: string }>(
      `SELECT seq, data FROM ledger_entries WHERE node_id = $1 AND kind = $2 ORDER BY seq`,
      [node.node, AUDIT_KINDS.auditKeyRotated],
    );
    const named = rows.find((row) => {
      try {
        const data = JSON.parse(row.data) as { to?: unknown; publicKey?: unknown };
        return data.to === key.keyId && data.publicKey === key.publicKey;
      } catch {
        return false;
      }
    });
    if (named === undefined) return undefined;
    const seq = Number(named.seq);
    const heads = (await this.heads(node.node)).filter((h) => node.keys.some((k) => k.keyId === h.keyId));
    const cover = heads.find((h) => h.seq >= seq);
    if (cover === undefined) return undefined;
    const verifier = new ChainVerifier(
      cryptoForKeys(node.keys),
      heads.filter((h) => h.seq <= cover.seq),
    );
    for await (const link of this.links(node.node, cover.seq)) if (!verifier.push(link)) break;
    const result = verifier.finish();
    return result.ok && result.signedThroughSeq >= seq ? seq : undefined;
  }

  async nodes(): Promise<PublishedNode[]> {
    const { rows } = await this.#pool.query<{
      node_id: string;
      key_id: string;
      public_key: string;
      published_at: string;
      rotated_at_seq: string | null;
    }>(
      `SELECT node_id, key_id, public_key, published_at, rotated_at_seq FROM ledger_nodes
         ORDER BY node_id, rotated_at_seq NULLS FIRST`,
    );
    const nodes: PublishedNode[] = [];
    for (const r of rows) {
      const key = {
        keyId: r.key_id,
        publicKey: r.public_key,
        rotatedAtSeq: r.rotated_at_seq === null ? null : Number(r.rotated_at_seq),
      };
      const last = nodes.at(-1);
      if (last?.node === r.node_id) {
        nodes[nodes.length - 1] = {
          ...last,
          keyId: key.keyId,
          publicKey: key.publicKey,
          keys: [...last.keys, key],
        };
      } else {
        nodes.push({
          node: r.node_id,
          keyId: key.keyId,
          publicKey: key.publicKey,
          publishedAt: r.published_at,
          keys: [key],
        });
      }
    }
    return nodes;
  }

  async recordIncident(node: string, problem: string, message: string, at: string): Promise<void> {
    await this.#pool.query(
      'INSERT INTO ledger_incidents (node_id, at, problem, message) VALUES ($1, $2, $3, $4)',
      [node, at, problem, message],
    );
  }

  async incidents(): Promise<LedgerIncident[]> {
    const { rows } = await this.#pool.query<{
      node_id: string;
      at: string;
      problem: string;
      message: string;
    }>('SELECT node_id, at, problem, message FROM ledger_incidents ORDER BY id');
    return rows.map((r) => ({ node: r.node_id, at: r.at, problem: r.problem, message: r.message }));
  }

  /** The newest entry PostgreSQL holds of `node`'s chain. */
  async tip(node: string): Promise<ChainTip> {
    const { rows } = await this.#pool.query<{ seq: string; hash: string }>(
      'SELECT seq, hash FROM ledger_entries WHERE node_id = $1 ORDER BY seq DESC LIMIT 1',
      [node],
    );
    return rows[0] === undefined ? EMPTY_TIP : { seq: Number(rows[0].seq), hash: rows[0].hash };
  }

  /** The newest head PostgreSQL holds of `node`'s chain (0 when none). */
  async headSeq(node: string): Promise<number> {
    const { rows } = await this.#pool.query<{ seq: string | null }>(
      'SELECT MAX(seq) AS seq FROM ledger_heads WHERE node_id = $1',
      [node],
    );
    return Number(rows[0]?.seq ?? 0);
  }

  /**
   * Ships a run of `node`'s entries (in seq order, continuing its replicated chain) and heads, in one transaction
   * (an advisory lock per node serialises two shippers of one node). Rows already there are left as they are
   * (idempotent by (node, seq)). Refuses a run that does not continue the chain PostgreSQL holds — the rows there
   * were changed, or the local ledger was: returns the tip found instead.
   */
  async ship(
    node: string,
    links: readonly ChainLink[],
    heads: readonly SignedHead[],
  ): Promise<
    { readonly ok: true; readonly tip: ChainTip } | { readonly ok: false; readonly found: ChainTip }
  > {
    assertNodeId(node);
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(`SELECT pg_advisory_xact_lock(${LOCK_KEY_SQL})`, [`aegis.ledger:${node}`]);
      const { rows } = await client.query<{ seq: string; hash: string }>(
        'SELECT seq, hash FROM ledger_entries WHERE node_id = $1 ORDER BY seq DESC LIMIT 1',
        [node],
      );
      const found: ChainTip =
        rows[0] === undefined ? EMPTY_TIP : { seq: Number(rows[0].seq), hash: rows[0].hash };
      const fresh = links.filter((l) => l.seq > found.seq);
      const first = fresh[0];
      if (first !== undefined && (first.seq !== found.seq + 1 || first.prevHash !== found.hash)) {
        await client.query('ROLLBACK');
        return { ok: false, found };
      }
      if (fresh.length > 0) {
        const cols = 8;
        const values = fresh.map(
          (_, i) => `(${Array.from({ length: cols }, (_, j) => `$${i * cols + j + 1}`).join(', ')})`,
        );
        await client.query(
          `INSERT INTO ledger_entries (node_id, ${ENTRY_COLUMNS}) VALUES ${values.join(', ')}
             ON CONFLICT (node_id, seq) DO NOTHING`,
          fresh.flatMap((l) => [node, l.seq, l.ts, l.execution, l.kind, l.dataJson, l.prevHash, l.hash]),
        );
      }
      for (const h of heads) {
        await client.query(
          `INSERT INTO ledger_heads (node_id, seq, hash, ts, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (node_id, seq) DO NOTHING`,
          [node, h.seq, h.hash, h.ts, h.keyId, h.signature],
        );
      }
      await client.query('COMMIT');
      return { ok: true, tip: fresh.at(-1) ?? found };
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  }

  /** Every node's entries about one execution, by node then seq. */
  async entriesOf(execution: string): Promise<NodeAuditEntry[]> {
    const { rows } = await this.#pool.query<EntryRow & { node_id: string }>(
      `SELECT node_id, ${ENTRY_COLUMNS} FROM ledger_entries WHERE execution = $1 ORDER BY node_id, seq`,
      [execution],
    );
    return rows.map((r) => ({ node: r.node_id, ...fromLink(toLink(r)) }));
  }

  /**
   * Which lifecycle entries the cluster holds per execution, from every node's replicated chain (what recovery on
   * one node must consult, or it would settle again what another node already finished).
   */
  async lifecycleCoverage(
    into: Map<string, LifecycleCoverage> = new Map(),
  ): Promise<Map<string, LifecycleCoverage>> {
    const { rows } = await this.#pool.query<{ execution: string; kind: string; status: unknown }>(
      `SELECT execution, kind, CASE WHEN kind = $1 THEN data::json ->> 'status' END AS status
         FROM ledger_entries WHERE execution IS NOT NULL AND kind = ANY($2)`,
      [AUDIT_KINDS.executionRecovered, [...LIFECYCLE_KINDS]],
    );
    for (const row of rows) addCoverage(into, row.execution, row.kind, row.status);
    return into;
  }

  /** `node`'s chain in seq order, a page at a time. */
  async *links(node: string, throughSeq = Number.MAX_SAFE_INTEGER): AsyncIterable<ChainLink> {
    let after = 0;
    for (;;) {
      const { rows } = await this.#pool.query<EntryRow>(
        `SELECT ${ENTRY_COLUMNS} FROM ledger_entries WHERE node_id = $1 AND seq > $2 AND seq <= $3
           ORDER BY seq LIMIT ${PAGE}`,
        [node, after, throughSeq],
      );
      for (const row of rows) yield toLink(row);
      if (rows.length < PAGE) return;
      after = Number(rows.at(-1)!.seq);
    }
  }

  async heads(node: string): Promise<SignedHead[]> {
    const { rows } = await this.#pool.query<HeadRow>(
      'SELECT seq, hash, ts, key_id, signature FROM ledger_heads WHERE node_id = $1 ORDER BY seq',
      [node],
    );
    return rows.map((r) => ({
      seq: Number(r.seq),
      hash: r.hash,
      ts: r.ts,
      keyId: r.key_id,
      signature: r.signature,
    }));
  }

  /** Node ids that have entries or heads, published or not. */
  async shippingNodes(): Promise<string[]> {
    const { rows } = await this.#pool.query<{ node_id: string }>(
      `SELECT node_id FROM ledger_entries GROUP BY node_id
       UNION SELECT node_id FROM ledger_heads GROUP BY node_id ORDER BY node_id`,
    );
    return rows.map((r) => r.node_id);
  }

  /**
   * One node's section of the cluster archive: a single-node export (export-format.ts) whose header names the node
   * and carries its published key; the entries a head covers (an unsigned tail stays out, as in a local export).
   */
  async *exportNode(node: PublishedNode, exportedAt: string): AsyncIterable<AuditExportRecord & object> {
    const heads = await this.heads(node.node);
    yield {
      type: 'header',
      format: AUDIT_EXPORT_FORMAT,
      node: node.node,
      publicKey: node.publicKey,
      keyId: node.keyId,
      // Every key the node published (rotations its chain vouched for), so heads signed before a rotation verify.
      clusterKeys: node.keys.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey })),
      hash: 'sha256',
      canonicalization: 'rfc8785',
      exportedAt,
    } as AuditExportRecord;
    for (const head of heads) yield { type: 'head', ...head };
    const through = heads.at(-1)?.seq ?? 0;
    if (through === 0) return;
    for await (const link of this.links(node.node, through)) yield { type: 'entry', ...fromLink(link) };
  }

  /**
   * Verifies every node's replicated chain with its published key, cross-checks the chains (cluster.ts), and
   * reports incidents. `local`: what the node running this knows outside the database (its witness, what it
   * shipped) — the only thing that catches a tail deleted from PostgreSQL together with the heads that covered it.
   */
  async verify(options: {
    readonly nowMs: number;
    readonly tailGraceMs?: number;
    readonly local?: LocalReplicationEvidence;
  }): Promise<ClusterVerification> {
    const published = await this.nodes();
    const shipping = await this.shippingNodes();
    const crossCheck = new LifecycleCrossCheck();
    const results: NodeVerification[] = [];
    const problems: string[] = [];
    for (const incident of await this.incidents()) {
      problems.push(
        `incident at node ${incident.node} (${incident.at}, ${incident.problem}): ${incident.message}`,
      );
    }
    for (const node of shipping) {
      if (!published.some((p) => p.node === node)) {
        problems.push(`node ${node} has replicated rows but never published a key: nothing vouches for them`);
      }
    }
    for (const node of published) {
      const local = options.local?.node === node.node ? options.local : undefined;
      const verifier = new ChainVerifier(cryptoForKeys(node.keys), await this.heads(node.node), {
        nowMs: options.nowMs,
        tailGraceMs: options.tailGraceMs ?? 60_000,
        ...(local === undefined ? {} : { witnessed: local.witnessed }),
      });
      for await (const link of this.links(node.node)) {
        crossCheck.addLink(node.node, link);
        if (!verifier.push(link)) break;
      }
      let result: AuditVerification = verifier.finish();
      if (result.ok && local?.shipped !== undefined && result.lastSeq < local.shipped.seq) {
        result = {
          ok: false,
          problem: 'truncated',
          firstBadSeq: result.lastSeq + 1,
          message:
            `node ${node.node} shipped its chain through seq ${local.shipped.seq} but PostgreSQL holds it only ` +
            `through seq ${result.lastSeq}: replicated entries ${result.lastSeq + 1}–${local.shipped.seq} were deleted`,
          entries: result.entries,
        };
      }
      results.push({ node: node.node, keyId: node.keyId, result });
    }
    const contradictions = crossCheck.finish();
    return {
      ok: problems.length === 0 && contradictions.length === 0 && results.every((r) => r.result.ok),
      nodes: results,
      contradictions,
      archiveProblems: problems,
      executions: crossCheck.executions,
    };
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }
}

/** Checks for a chain whose heads must be signed by one of these (published) public keys. */
export function cryptoForKeys(keys: readonly { readonly publicKey: string }[]): ChainCrypto {
  const trusted = new Map<string, ReturnType<typeof parseEd25519PublicKey>>();
  for (const { publicKey } of keys) {
    try {
      const key = parseEd25519PublicKey(publicKey);
      trusted.set(publicKeyId(key), key);
    } catch {
      // an unparseable published key vouches for nothing
    }
  }
  return {
    sha256Hex: nodeHasher.sha256Hex,
    verifySignature: (message, signature, headKeyId) => {
      const key = trusted.get(headKeyId);
      return key !== undefined && verifyEd25519(key, message, signature);
    },
  };
}

function assertNodeId(node: string): void {
  if (!isNodeId(node)) {
    throw new AegisError('USAGE', `"${node}" is not a node id`, {
      hint: 'a node id is 1–63 lowercase letters, digits, ".", "_" or "-", starting with a letter or digit',
    });
  }
}

function toLink(row: EntryRow): ChainLink {
  return {
    seq: Number(row.seq),
    ts: row.ts,
    execution: row.execution,
    kind: row.kind,
    dataJson: row.data,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}
