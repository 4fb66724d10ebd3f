/**
 * Use-cases of edge nodes (docs/adr/0108-edge-node-protocol.md): single-use enrolment tokens (admin), the list of
 * edges, revocation, and the two ways an edge proves who it is when it connects — a fresh token plus its new public
 * key (enrolment), or a signature of the server's nonce with the key it enrolled with. An edge's labels are exactly
 * its token's (an admin grants them; placement trusts them). Every refusal is audited.
 */
import { AUDIT_KINDS } from '../domain/audit/entry.ts';
import { type Principal, requireScope } from '../domain/auth/api-key.ts';
import { challengeText } from '../domain/edge/protocol.ts';
import {
  checkLabels,
  DEFAULT_EDGE_TOKEN_TTL_MS,
  EDGE_TOKEN_PREFIX,
  type EdgeNodeRecord,
  type EdgeTokenRecord,
  MAX_EDGE_TOKEN_TTL_MS,
} from '../domain/edge/records.ts';
import { AegisError } from '../domain/errors.ts';
import type { AuditLog, Clock, ClusterStore, EdgeStore, Hasher, SecretRandom } from './ports.ts';

export interface EdgeNodesDeps {
  readonly store: EdgeStore;
  readonly hasher: Hasher;
  readonly clock: Pick<Clock, 'now'>;
  readonly random: SecretRandom;
  readonly audit: AuditLog;
  /** True when `signature` (base64) is the Ed25519 signature of `message` by the SPKI PEM `publicKeyPem`. */
  readonly verify: (publicKeyPem: string, message: string, signature: string) => boolean;
  /**
   * Tells every server sharing the store that an edge was enrolled or revoked (topic `edge`, its id): each reloads
   * it — placement knows it at once, and the server holding a revoked edge's connection cuts it at once instead of
   * on its next periodic refresh. Absent: this process only.
   */
  readonly signals?: Pick<ClusterStore, 'signal'>;
}

export type EdgeTokenView = Omit<EdgeTokenRecord, 'hash'>;

export interface EnrolRequest {
  readonly token: string;
  readonly publicKeyPem: string;
  readonly signature: string;
  /** Labels the edge expects (`aegis edge join --label`): each must be carried by the token, else refused. */
  readonly labels: Readonly<Record<string, string>>;
  readonly runtimes: readonly string[];
  readonly capacity: number;
}

/** Refused handshakes without an identity that get a ledger entry per minute. */
const ANONYMOUS_REFUSALS_PER_MINUTE = 60;

export class EdgeNodes {
  readonly #deps: EdgeNodesDeps;
  /** Told when an edge is revoked, so its open connection is cut at once (the hub). */
  onRevoked: (nodeId: string) => boolean = () => false;

  constructor(deps: EdgeNodesDeps) {
    this.#deps = deps;
  }

  /** A single-use enrolment token; its text is in this answer only. */
  async createToken(
    principal: Principal,
    request: { labels?: Readonly<Record<string, string>>; ttlMs?: number },
  ): Promise<{ token: string; record: EdgeTokenView }> {
    requireScope(principal, 'admin', 'creating edge enrolment tokens');
    const labels = { ...(request.labels ?? {}) };
    checkLabels(labels, 'labels');
    const ttlMs = request.ttlMs ?? DEFAULT_EDGE_TOKEN_TTL_MS;
    if (!(ttlMs > 0 && ttlMs <= MAX_EDGE_TOKEN_TTL_MS)) {
      throw new AegisError('USAGE', 'ttl: an enrolment token lives between 1s and 30d', {
        hint: 'e.g. --ttl 15m',
      });
    }
    const { random, hasher, clock, audit, store } = this.#deps;
    const token = `${EDGE_TOKEN_PREFIX}${random.hex128()}${random.hex128()}`;
    const now = clock.now();
    const record: EdgeTokenRecord = {
      id: `et_${random.hex128().slice(0, 20)}`,
      hash: hasher.sha256Hex(token),
      labels,
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + ttlMs).toISOString(),
      createdBy: principal.id,
      usedAt: null,
      usedBy: null,
    };
    await store.createEdgeToken(record);
    audit.append(AUDIT_KINDS.edgeTokenCreated, null, {
      id: record.id,
      labels,
      expiresAt: record.expiresAt,
      by: principal.id,
    });
    await audit.flush();
    const { hash: _hash, ...view } = record;
    return { token, record: view };
  }

  async list(principal: Principal): Promise<readonly EdgeNodeRecord[]> {
    requireScope(principal, 'admin', 'listing edge nodes');
    return this.#deps.store.listEdgeNodes();
  }

  /** Revokes the edge: recorded, audited, and its connection (if any) cut before this returns. Idempotent. */
  async revoke(principal: Principal, nodeId: string): Promise<EdgeNodeRecord> {
    requireScope(principal, 'admin', 'revoking edge nodes');
    const { store, audit, clock } = this.#deps;
    const current = await store.getEdgeNode(nodeId);
    if (current === undefined) {
      throw new AegisError('NOT_FOUND', `no edge node ${nodeId}`, { hint: 'list them with `aegis edge ls`' });
    }
    const next =
      current.revokedAt === null ? { ...current, revokedAt: new Date(clock.now()).toISOString() } : current;
    await store.putEdgeNode(next);
    const connected = this.onRevoked(nodeId);
    await this.#signal(nodeId);
    audit.append(AUDIT_KINDS.edgeRevoked, null, { node: nodeId, by: principal.id, connected });
    await audit.flush();
    return next;
  }

  /** First connection: consumes the token (single use), registers the edge under a fresh id, audited. */
  async enrol(request: EnrolRequest, nonce: string, from: string, newId: string): Promise<EdgeNodeRecord> {
    const { store, hasher, clock, audit, verify } = this.#deps;
    if (!request.token.startsWith(EDGE_TOKEN_PREFIX)) {
      return this.#refuse(null, 'malformed enrolment token', from);
    }
    // The edge holds the private half of the key it registers (else anyone could register someone else's key).
    if (!safeVerify(verify, request.publicKeyPem, challengeText(nonce, null), request.signature)) {
      return this.#refuse(null, 'enrolment signature does not match the public key', from);
    }
    checkLabels(request.labels, 'labels');
    const now = new Date(clock.now()).toISOString();
    const token = await store.consumeEdgeToken(hasher.sha256Hex(request.token), now, newId);
    if (token === undefined) return this.#refuse(null, 'unknown or already used enrolment token', from);
    if (token.expiresAt < now) return this.#refuse(null, `enrolment token ${token.id} expired`, from);
    // An edge's labels are exactly its token's: placement trusts them (an agent placed on `zone=secure` sends its
    // bundle and input there), so only an admin grants them. A label the token lacks is refused, not dropped —
    // the operator learns at once instead of wondering why nothing is placed on the edge. The token is spent.
    const ungranted = ungrantedLabels(request.labels, token.labels);
    if (ungranted.length > 0) {
      const reason =
        `labels ${ungranted.join(', ')} declared by the edge are not granted by enrolment token ${token.id} ` +
        `(it carries ${formatLabels(token.labels)}); an edge's labels are exactly its token's — ask an admin ` +
        `for a token that carries them: \`aegis edge token create ${tokenFlags({ ...token.labels, ...request.labels })}\``;
      // Not rate-limited like other anonymous refusals: it spent a genuine, unexpired token (there are few).
      this.#deps.audit.append(AUDIT_KINDS.edgeRefused, null, {
        node: null,
        reason: reason.slice(0, 500),
        from,
      });
      await this.#deps.audit.flush();
      throw new AegisError('PERMISSION_DENIED', `edge refused: ${reason}`, {
        hint: 'labels come from the enrolment token only; `aegis edge join --label` just checks them',
      });
    }
    const record: EdgeNodeRecord = {
      id: newId,
      publicKeyPem: request.publicKeyPem,
      labels: { ...token.labels },
      runtimes: [...request.runtimes],
      capacity: request.capacity,
      enrolledAt: now,
      tokenId: token.id,
      revokedAt: null,
    };
    await store.putEdgeNode(record);
    await this.#signal(record.id);
    audit.append(AUDIT_KINDS.edgeEnrolled, null, {
      node: record.id,
      token: token.id,
      labels: record.labels,
      runtimes: record.runtimes,
      capacity: record.capacity,
    });
    await audit.flush();
    return record;
  }

  /** Later connections: the enrolled key signs the nonce; refused (audited) when unknown, revoked or wrong. */
  async authenticate(
    nodeId: string,
    signature: string,
    nonce: string,
    from: string,
  ): Promise<EdgeNodeRecord> {
    const record = await this.#deps.store.getEdgeNode(nodeId);
    if (record === undefined) return this.#refuse(nodeId, 'unknown edge node', from);
    if (record.revokedAt !== null) {
      return this.#refuse(nodeId, `edge node was revoked at ${record.revokedAt}`, from);
    }
    if (!safeVerify(this.#deps.verify, record.publicKeyPem, challengeText(nonce, nodeId), signature)) {
      return this.#refuse(nodeId, 'signature does not match the enrolled key', from);
    }
    return record;
  }

  /** Best effort: the stored record is the truth, and every server also reloads the edges periodically. */
  async #signal(nodeId: string): Promise<void> {
    try {
      await this.#deps.signals?.signal('edge', nodeId);
    } catch {
      // the periodic refresh (main-server.ts) still brings it
    }
  }

  /** Audits a refused connection or report and throws UNAUTHENTICATED saying why. */
  async #refuse(node: string | null, reason: string, from: string): Promise<never> {
    this.refused(node, reason, from);
    await this.#deps.audit.flush();
    throw new AegisError('UNAUTHENTICATED', `edge refused: ${reason}`, {
      hint:
        node === null
          ? 'ask an admin for a fresh token: `aegis edge token create`'
          : 'ask an admin to enrol this edge again (`aegis edge token create`, then `aegis edge join` with an empty data dir)',
    });
  }

  /**
   * Audits something an edge tried and was refused (a forged report, a reconnect of a revoked edge, …). Refusals
   * before any identity (anyone can open the WebSocket) are audited at most ANONYMOUS_REFUSALS_PER_MINUTE times a
   * minute, so a flood of garbage handshakes cannot grow the ledger; each is still refused.
   */
  refused(node: string | null, reason: string, from: string): void {
    if (node === null) {
      const minute = Math.floor(this.#deps.clock.now() / 60_000);
      if (this.#anonymous.minute !== minute) this.#anonymous = { minute, count: 0 };
      if (this.#anonymous.count++ >= ANONYMOUS_REFUSALS_PER_MINUTE) return;
    }
    this.#deps.audit.append(AUDIT_KINDS.edgeRefused, null, { node, reason: reason.slice(0, 500), from });
  }

  #anonymous = { minute: 0, count: 0 };
}

/** The declared labels (`k=v`) the token does not carry with the same value, sorted. */
export function ungrantedLabels(
  declared: Readonly<Record<string, string>>,
  granted: Readonly<Record<string, string>>,
): string[] {
  return Object.entries(declared)
    .filter(([key, value]) => !Object.hasOwn(granted, key) || granted[key] !== value)
    .map(([key, value]) => `${key}=${value}`)
    .sort();
}

function formatLabels(labels: Readonly<Record<string, string>>): string {
  const pairs = Object.entries(labels).map(([key, value]) => `${key}=${value}`);
  return pairs.length === 0 ? 'no labels' : pairs.sort().join(', ');
}

function tokenFlags(labels: Readonly<Record<string, string>>): string {
  return Object.entries(labels)
    .map(([key, value]) => `--label ${key}=${value}`)
    .sort()
    .join(' ');
}

function safeVerify(
  verify: EdgeNodesDeps['verify'],
  pem: string,
  message: string,
  signature: string,
): boolean {
  try {
    return verify(pem, message, signature);
  } catch {
    return false;
  }
}
