/**
 * The audit ledger's entries: what is recorded, how entries chain, and what a signed head covers.
 *
 * Every entry carries the hash of the one before it, and its own hash covers that link:
 * `hash = SHA-256(prevHash ‖ canonical-JSON(entry without hash))` in lowercase hex, seq from 1, the first entry's
 * prevHash 64 zeros. Changing, removing, adding or moving any entry therefore changes every later hash; a signed
 * head (seq, hash, ts) pins the whole chain up to its seq.
 *
 * Data must never hold secret values: keep it small and structured (names, paths, counts), never payloads.
 */
import { canonicalJson, type JsonObject } from './canonical-json.ts';

/** Kinds of entry. Readers must accept kinds they don't know (newer writers add kinds). */
export const AUDIT_KINDS = {
  executionCreated: 'execution.created',
  executionStarted: 'execution.started',
  executionFinished: 'execution.finished',
  limitHit: 'limit.hit',
  policyMount: 'policy.mount',
  policyNetwork: 'policy.network',
  networkConnect: 'network.connect',
  secretUse: 'secret.use',
  toolCall: 'tool.call',
  /** A human decision on an approval-required tool call: `{approval, tool, argsDigest, state, by, decidedBy}`. */
  toolApproval: 'tool.approval',
  /** One model call through the LLM gateway (`LlmCallRecord`: alias, tokens, latency, status, budget left). */
  llmCall: 'llm.call',
  /**
   * A request to the in-sandbox API for a path or method the manifest does not grant (answered 403). The first 16
   * of an execution get one entry each; the rest are counted in one closing entry (a flood can't grow the ledger).
   */
  apiDenied: 'api.denied',
  agentDeployed: 'agent.deployed',
  agentActivated: 'agent.activated',
  agentDeleted: 'agent.deleted',
  executionCancelled: 'execution.cancelled',
  /** A swarm child started (`{parent, child, agent, depth, root}`) or a spawn refused (`{parent, agent, rule, message}`). */
  swarmSpawn: 'swarm.spawn',
  swarmRefused: 'swarm.refused',
  /** What a swarm child asked for and did not get from its parent (`{parent, network, mounts, tools, models, secrets}`). */
  swarmNarrowed: 'swarm.narrowed',
  apiKeyCreated: 'apikey.created',
  apiKeyRevoked: 'apikey.revoked',
  instanceWarm: 'instance.warm',
  instanceRetired: 'instance.retired',
  /** After a crash: what recovery found for an execution the store knows (its final status). */
  executionRecovered: 'execution.recovered',
  /**
   * A node that lost its claim (fenced out: declared dead while paused or partitioned) stopped an execution another
   * node settles: not terminal — the holder's entry is the one finish (ADR 0101).
   */
  executionAbandoned: 'execution.abandoned',
  /** Entries found after the newest signed head when a writer opened the ledger (a crash before signing). */
  auditTailAdopted: 'audit.tail-adopted',
  /** The node key was rotated; the head covering this entry is the last one the old key signs. */
  auditKeyRotated: 'audit.key-rotated',
  /** Entries through `seq` were archived and dropped under a signed checkpoint (domain/audit/checkpoint.ts). */
  ledgerCheckpoint: 'ledger.checkpoint',
  /** A prune (retention policy or `aegis prune`) removed these counts from the store and the ledger. */
  retentionPruned: 'retention.pruned',
  /** Live sandboxes (app/live-sandboxes.ts); the entry's execution is the sandbox id. */
  sandboxCreated: 'sandbox.created',
  sandboxTerminated: 'sandbox.terminated',
  sandboxPaused: 'sandbox.paused',
  sandboxResumed: 'sandbox.resumed',
  /** One command in a live sandbox: argv, exit code, duration — never stdin or output. */
  sandboxExec: 'sandbox.exec',
  /** One file operation in a live sandbox: op, path, bytes — never contents. */
  sandboxFile: 'sandbox.file',
  /** One proxied connection to an exposed port of a live sandbox (or its refusal): never the bytes. */
  sandboxPort: 'sandbox.port',
  /** Edge nodes (ADR 0108): an enrolment token made (never its text), an edge enrolled, revoked, or refused. */
  edgeTokenCreated: 'edge.token-created',
  edgeEnrolled: 'edge.enrolled',
  edgeRevoked: 'edge.revoked',
  /** A connection or report of an edge refused: bad/used token, bad signature, revoked, or a forged report. */
  edgeRefused: 'edge.refused',
  /** One iteration of a declarative agent's loop (app/agent-loop.ts): counts, digests and verdicts — never contents. */
  agentIteration: 'agent.iteration',
  /** Cortex (app/cortex.ts): one memory stored — ids, scope, sizes and a digest, never the text. */
  memoryStore: 'memory.store',
  /** One recall: scopes, k, the query's size and digest, the ids returned — never the query. */
  memorySearch: 'memory.search',
  /** Memories deleted: one id, or a count (expiry, re-embedding). */
  memoryForget: 'memory.forget',
  /** The swarm bus (app/swarm-bus.ts): one message published — topic, sender, size, digest, never the content. */
  swarmMessage: 'swarm.message',
  /** Swarm locks (app/swarm-locks.ts): acquired / released / expired / refused, with the fencing token. */
  swarmLock: 'swarm.lock',
} as const;

export type AuditKind = (typeof AUDIT_KINDS)[keyof typeof AUDIT_KINDS];

/** What each kind records. (Type aliases, not interfaces, so they stay assignable to JsonObject.) */
export type AuditDataByKind = {
  'execution.created': {
    readonly agent: string;
    readonly version: string;
    readonly runtime: string;
    readonly isolation: string;
    readonly limits: {
      readonly cpuMillis: number;
      readonly memoryBytes: number;
      readonly pids: number;
      readonly diskBytes: number;
      readonly timeoutMs: number;
    };
    /** Server executions: the deployed revision and who asked (API key id or `local`). */
    readonly revision?: number;
    readonly requestedBy?: string;
  };
  /** `warm`: the instance came from a warm pool (spawned before the execution existed). */
  /** `fence`: the node's claim token in a cluster (the cross-check in cluster.ts compares it with the finish's). */
  'execution.started': { readonly instance: string; readonly warm?: boolean; readonly fence?: number };
  'execution.finished': {
    readonly status: string;
    readonly exitCode: number | null;
    readonly reason: string | null;
    readonly durationMs: number | null;
    /** Model usage of an execution with `spec.llm` (calls, input/output tokens, USD). */
    readonly llm?: { calls: number; inputTokens: number; outputTokens: number; usd: number };
    /** The fencing token of the claim the finishing node held (cluster). */
    readonly fence?: number;
  };
  'limit.hit': { readonly rule: string; readonly count: number | null };
  /** One entry per host path granted to the sandbox. */
  'policy.mount': { readonly source: string; readonly target: string; readonly mode: 'ro' | 'rw' };
  /** The egress rules in force from now on (at start when any are granted; again on every live change). */
  'policy.network': { readonly allow: readonly string[]; readonly deny: readonly string[] };
  /**
   * One connection attempt through the egress proxy (`NetworkConnectData`). Kept as JsonObject in this map so older
   * writers (the ledger benchmark) still compile; runAgent writes exactly NetworkConnectData.
   */
  'network.connect': JsonObject;
  'secret.use': JsonObject;
  'tool.call': JsonObject;
  'tool.approval': JsonObject;
  'llm.call': JsonObject;
  /** `{method, path, nth}` per audited denial; `{suppressed, total}` once at the end when some were not. */
  'api.denied': JsonObject;
  /** A deploy that created a revision (re-deploying the active bundle records nothing). */
  'agent.deployed': {
    readonly agent: string;
    readonly revision: number;
    readonly version: string;
    readonly digest: string;
    readonly sizeBytes: number;
    readonly by: string;
  };
  /** The active revision changed by a rollback (deploys activate implicitly). */
  'agent.activated': {
    readonly agent: string;
    readonly revision: number;
    readonly from: number;
    readonly by: string;
  };
  'agent.deleted': { readonly agent: string; readonly revisions: number; readonly by: string };
  'execution.cancelled': { readonly by: string; readonly status: string };
  'swarm.spawn': {
    readonly parent: string;
    readonly child: string;
    readonly agent: string;
    readonly root: string;
    readonly depth: number;
  };
  'swarm.refused': { readonly agent: string; readonly rule: string; readonly message: string };
  'swarm.narrowed': {
    readonly parent: string | null;
    readonly network: readonly string[];
    readonly mounts: readonly string[];
    readonly readOnly: readonly string[];
    readonly tools: readonly string[];
    readonly models: readonly string[];
    readonly secrets: readonly string[];
    /** Swarm grants dropped (`locks.global`); absent in entries written before it existed. */
    readonly swarm?: readonly string[];
  };
  'apikey.created': {
    readonly id: string;
    readonly name: string;
    readonly scopes: readonly string[];
    readonly by: string;
  };
  'apikey.revoked': { readonly id: string; readonly by: string };
  'edge.token-created': {
    readonly id: string;
    readonly labels: Readonly<Record<string, string>>;
    readonly expiresAt: string;
    readonly by: string;
  };
  'edge.enrolled': {
    readonly node: string;
    readonly token: string;
    readonly labels: Readonly<Record<string, string>>;
    readonly runtimes: readonly string[];
    readonly capacity: number;
  };
  'edge.revoked': { readonly node: string; readonly by: string; readonly connected: boolean };
  /** `node`: the id it claimed (null: an enrolment); `from`: the peer address. */
  'edge.refused': { readonly node: string | null; readonly reason: string; readonly from: string };
  /**
   * `missing`: which entries the ledger lacked for it (`created`, `finished`) — lost in a crash before they were
   * durable; `status`: the final status recovery settled (or found) in the store.
   */
  'execution.recovered': {
    readonly status: string;
    readonly reason: string | null;
    readonly missing: readonly string[];
  };
  /**
   * `reason: 'fenced'`; `fence`: the claim this node held; `status`/`detail`: what its run ended with, which the
   * store refused (another node holds or settled the execution).
   */
  'execution.abandoned': {
    readonly reason: 'fenced';
    readonly fence: number;
    readonly status: string;
    readonly detail: string | null;
  };
  'audit.tail-adopted': {
    readonly fromSeq: number;
    readonly toSeq: number;
    readonly newestTs: string;
    readonly reason: string;
  };
  'audit.key-rotated': { readonly from: string; readonly to: string; readonly publicKey: string };
  'ledger.checkpoint': {
    readonly seq: number;
    readonly hash: string;
    readonly fromSeq: number;
    readonly count: number;
    readonly archive: string;
    readonly archiveSha256: string;
  };
  'retention.pruned': {
    readonly executions: number;
    readonly logLines: number;
    readonly logBytes: number;
    readonly sandboxes: number;
    readonly ledgerEntries: number;
    /** The cutoffs applied (ISO), null where the policy keeps forever. */
    readonly before: {
      readonly executions: string | null;
      readonly logs: string | null;
      readonly sandboxes: string | null;
      readonly audit: string | null;
    };
    readonly by: string;
  };
  'sandbox.created': {
    readonly agent: string;
    readonly revision: number;
    readonly runtime: string;
    readonly by: string;
    readonly timeoutMs: number;
    readonly idleTimeoutMs: number | null;
  };
  'sandbox.terminated': { readonly reason: string; readonly by: string | null };
  'sandbox.paused': { readonly by: string };
  /** `pausedMs`: how long it was frozen; the lifetime deadline moved by that much (`expiresAt`). */
  'sandbox.resumed': { readonly by: string; readonly pausedMs: number; readonly expiresAt: string };
  'sandbox.exec': {
    readonly command: string;
    readonly argv: readonly string[];
    readonly exitCode: number | null;
    readonly signal: string | null;
    readonly durationMs: number;
    readonly by: string;
    /** Set when the command was refused before it started (e.g. 'too-many-commands'). */
    readonly refused?: string;
    /** Ran on a pseudo-terminal (GET /v1/sandboxes/{id}/pty). */
    readonly pty?: boolean;
  };
  'sandbox.port': {
    readonly port: number;
    readonly method: string;
    /** Below /ports/{port}, without the query string. */
    readonly path: string;
    readonly websocket: boolean;
    /** The sandbox server's HTTP status (101: upgraded); null when none came. */
    readonly status: number | null;
    /** Bytes sent to the sandbox's server / received from it. */
    readonly bytesIn: number;
    readonly bytesOut: number;
    readonly durationMs: number;
    readonly by: string;
    /** Set when refused before connecting ('not-exposed'). */
    readonly refused?: string;
    readonly error?: string;
  };
  'sandbox.file': {
    readonly op: string;
    readonly path: string;
    readonly to: string | null;
    readonly bytes: number | null;
    readonly ok: boolean;
    readonly by: string;
  };
  /** A pool instance became Warm (spawned ahead of any execution). */
  'instance.warm': { readonly instance: string; readonly agent: string; readonly revision: number };
  /** A pool instance ended without serving an execution (idle, drained, died, …). */
  'instance.retired': {
    readonly instance: string;
    readonly agent: string;
    readonly revision: number;
    readonly reason: string;
  };
  /** One iteration of a declarative agent's loop: digests of the answer and transcript, never their text. */
  'agent.iteration': {
    readonly iteration: number;
    readonly modelCalls: number;
    readonly toolCalls: number;
    readonly passed: boolean;
    readonly verdicts: readonly { readonly validator: string; readonly passed: boolean }[];
    readonly answerDigest: string | null;
    readonly transcriptDigest: string;
  };
  /** `{scope, id, bytes, textDigest, embedder, dimension, source, expiresAt}` (app/cortex.ts). */
  'memory.store': JsonObject;
  /** `{scopes, k, queryBytes, queryDigest, candidates, returned, ids}`. */
  'memory.search': JsonObject;
  /** `{scope, id}` or `{scope, expired}` / `{count, reason}`. */
  'memory.forget': JsonObject;
  /** `{swarm, topic, id, sizeBytes, digest}` or a refusal `{swarm, topic, refused, sizeBytes}`. */
  'swarm.message': JsonObject;
  /** `{swarm, name, event: acquired|released|expired|refused, token?, reason?}`. */
  'swarm.lock': JsonObject;
};

/** What runAgent records per secret seen by the egress proxy (`secret.use`) — never the value. */
export type SecretUseData = {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  /** True: the value replaced the placeholder; false: the placeholder went out unchanged or the request was refused. */
  readonly injected: boolean;
  /** `header`, `path`, `body`, or `response` (a value reflected by upstream, scrubbed before the sandbox). */
  readonly where: string;
  /** Why not injected: `unbound-host`, `cleartext`, `unsafe-header-value`, `body-not-rewritable`, `reflected`. */
  readonly reason: string | null;
};

/** What runAgent records per egress decision (`network.connect`). */
export type NetworkConnectData = {
  readonly requested: string;
  readonly host: string | null;
  readonly resolved: readonly string[];
  readonly address: string | null;
  readonly port: number;
  readonly protocol: string;
  readonly rule: string;
  readonly verdict: 'allow' | 'deny';
  readonly reason: string;
  /** Allowed, but the upstream connection failed or was cut (`ECONNREFUSED`, `proxy-closed`, …). */
  readonly error: string | null;
  readonly bytesUp: number;
  readonly bytesDown: number;
};

export interface AuditEntry {
  /** Position in the ledger, from 1, without gaps. */
  readonly seq: number;
  /** ISO 8601 time of the append. */
  readonly ts: string;
  /** Execution id the entry is about; null for node-level events. */
  readonly execution: string | null;
  /** One of AUDIT_KINDS (any string when read back: a newer writer may know more kinds). */
  readonly kind: string;
  readonly data: JsonObject;
  /** `hash` of the entry at seq - 1; GENESIS_HASH for seq 1. */
  readonly prevHash: string;
  /** Lowercase hex SHA-256 of prevHash ‖ canonical JSON of the other six fields. */
  readonly hash: string;
}

/** An entry as stored: `data` as its canonical JSON text. What the verifier walks (no re-serialisation needed). */
export interface ChainLink {
  readonly seq: number;
  readonly ts: string;
  readonly execution: string | null;
  readonly kind: string;
  readonly dataJson: string;
  readonly prevHash: string;
  readonly hash: string;
}

/** prevHash of the first entry. */
export const GENESIS_HASH = '0'.repeat(64);

/** Lowercase hex SHA-256 of the UTF-8 bytes of `text`; injected (the domain does no crypto itself). */
export type Sha256Hex = (text: string) => string;

/**
 * Canonical JSON of an entry without its hash, built from its parts. Keys in canonical (sorted) order:
 * data, execution, kind, prevHash, seq, ts — identical to `canonicalJson({seq, ts, execution, kind, data, prevHash})`.
 */
export function entryPreimage(link: Omit<ChainLink, 'hash'>): string {
  return (
    `{"data":${link.dataJson},"execution":${link.execution === null ? 'null' : JSON.stringify(link.execution)},` +
    `"kind":${JSON.stringify(link.kind)},"prevHash":${JSON.stringify(link.prevHash)},"seq":${link.seq},` +
    `"ts":${JSON.stringify(link.ts)}}`
  );
}

/** The hash an entry must carry, given its other fields. */
export function linkHash(link: Omit<ChainLink, 'hash'>, sha256Hex: Sha256Hex): string {
  return sha256Hex(link.prevHash + entryPreimage(link));
}

/** The last entry of a chain: what the next entry links to. */
export interface ChainTip {
  readonly seq: number;
  readonly hash: string;
}

export const EMPTY_TIP: ChainTip = { seq: 0, hash: GENESIS_HASH };

/**
 * Builds the entry that follows `tip`. Throws CanonicalJsonError when `data` holds something JSON can't
 * represent (undefined, NaN, a Date…). Returns the entry and its stored form.
 */
export function chainNext(
  tip: ChainTip,
  fields: {
    readonly ts: string;
    readonly execution: string | null;
    readonly kind: string;
    readonly data: JsonObject;
  },
  sha256Hex: Sha256Hex,
): { entry: AuditEntry; link: ChainLink } {
  const unhashed = {
    seq: tip.seq + 1,
    ts: fields.ts,
    execution: fields.execution,
    kind: fields.kind,
    dataJson: canonicalJson(fields.data),
    prevHash: tip.hash,
  };
  const link: ChainLink = { ...unhashed, hash: linkHash(unhashed, sha256Hex) };
  const entry: AuditEntry = {
    seq: link.seq,
    ts: link.ts,
    execution: link.execution,
    kind: link.kind,
    data: fields.data,
    prevHash: link.prevHash,
    hash: link.hash,
  };
  return { entry, link };
}

/** Stored form of an entry. */
export function toLink(entry: AuditEntry): ChainLink {
  return {
    seq: entry.seq,
    ts: entry.ts,
    execution: entry.execution,
    kind: entry.kind,
    dataJson: canonicalJson(entry.data),
    prevHash: entry.prevHash,
    hash: entry.hash,
  };
}

/**
 * Entry of a stored link. Stored data that is not a JSON object (a tampered row) is kept as
 * `{"$unparseable": text}` so it can still be shown and exported — and fails verification.
 */
export function fromLink(link: ChainLink): AuditEntry {
  return {
    seq: link.seq,
    ts: link.ts,
    execution: link.execution,
    kind: link.kind,
    data: parseData(link.dataJson),
    prevHash: link.prevHash,
    hash: link.hash,
  };
}

function parseData(text: string): JsonObject {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as JsonObject;
  } catch {
    // fall through
  }
  return { $unparseable: String(text) };
}

// ---------------------------------------------------------------------------------------------------------------
// Signed heads.

/** The head of the chain at some seq, signed with the node's Ed25519 key. */
export interface SignedHead {
  readonly seq: number;
  readonly hash: string;
  readonly ts: string;
  /** Which key signed it: the first 16 hex digits of SHA-256 over the public key (SPKI DER). */
  readonly keyId: string;
  /** Base64 Ed25519 signature over `headMessage(head)`. */
  readonly signature: string;
}

/** Prefix that keeps a head signature from being valid for anything else the node key may sign. */
export const HEAD_SIGNATURE_CONTEXT = 'aegis.audit.head/v1\n';

/** The exact bytes (as UTF-8 text) a head signature covers. */
export function headMessage(head: {
  readonly seq: number;
  readonly hash: string;
  readonly ts: string;
}): string {
  return HEAD_SIGNATURE_CONTEXT + canonicalJson({ seq: head.seq, hash: head.hash, ts: head.ts });
}
