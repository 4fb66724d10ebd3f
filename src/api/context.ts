/**
 * What the API layers (REST, gRPC) need: the use-cases' dependencies, and one gate that turns a request's
 * credentials into a Principal — authentication and the per-key rate limit in one place, so REST and gRPC can't
 * drift apart.
 */

import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AgentDeps } from '../app/agents.ts';
import { type ApiKeyDeps, authenticate } from '../app/api-keys.ts';
import type { Approvals } from '../app/approvals.ts';
import type { EdgeNodes } from '../app/edge-nodes.ts';
import type { ExecutionEvents } from '../app/execution-events.ts';
import type { Executions } from '../app/executions.ts';
import type { LiveSandboxes } from '../app/live-sandboxes.ts';
import type { OperatorMemoryDeps } from '../app/memory-access.ts';
import type { AuditLog, Clock, Store } from '../app/ports.ts';
import type { PruneReport } from '../app/retention.ts';
import type { WarmPools } from '../app/warm-pools.ts';
import type { AuditEntry } from '../domain/audit/entry.ts';
import { LOCAL_PRINCIPAL, type Principal, type RateLimit } from '../domain/auth/api-key.ts';
import { TokenBuckets } from '../domain/auth/token-bucket.ts';
import { AegisError } from '../domain/errors.ts';
import type { RetentionPolicy } from '../domain/retention.ts';
import type { ServerPath } from './errors.ts';

export interface EdgeEndpoint {
  readonly nodes: EdgeNodes;
  /** Takes `GET /v1/edge/connect` upgrades (the edge authenticates inside the protocol, not with an API key). */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Connection state per enrolled edge. */
  view(): ReadonlyMap<string, { connected: boolean; running: number }>;
}

export interface ApiContext {
  readonly store: Store;
  readonly audit: AuditLog;
  /**
   * With a shared PostgreSQL store: an execution's entries from every node's chain, each naming its node (the
   * cluster ledger, ADR 0116); without it, `audit` (this node's ledger) answers.
   */
  readonly clusterAudit?: {
    list(execution: string): Promise<readonly (AuditEntry & { readonly node: string })[]>;
  };
  readonly clock: Clock;
  /**
   * POST /v1/admin/prune: runs app/retention.ts with `policy`, or the server's `--retain` policy when undefined.
   * Absent: this server cannot prune.
   */
  readonly prune?: (request: {
    readonly policy: RetentionPolicy | undefined;
    readonly dryRun: boolean;
    readonly by: string;
  }) => Promise<PruneReport>;
  readonly events: ExecutionEvents;
  readonly executions: Executions;
  readonly agentDeps: AgentDeps;
  readonly keyDeps: ApiKeyDeps;
  readonly gate: AuthGate;
  /** Warm pools, when the server keeps any (their state is shown with each agent). */
  readonly pools?: WarmPools;
  /** Live sandboxes (POST /v1/sandboxes), when the server runs them. */
  readonly sandboxes?: LiveSandboxes;
  /** Tool calls waiting for a human (`approval: required` grants), when the server has a tool gateway. */
  readonly approvals?: Approvals;
  /** Agent memory (Cortex): `/v1/agents/{name}/memories…`, when the server has it. */
  readonly memory?: OperatorMemoryDeps;
  /** Edge nodes (docs/adr/0108): enrolment and the hub their WebSockets reach, when the server takes edges. */
  readonly edge?: EdgeEndpoint;
  /** Server directories (AEGIS_HOME, bundles, scratch) that error answers name instead of showing. */
  readonly serverPaths?: readonly ServerPath[];
  /** True once startup recovery finished and until shutdown begins (readiness). */
  ready(): boolean;
}

/** How a request arrived: TCP carries a key; the unix socket (mode 0600, the server user's) is trusted. */
export interface Credentials {
  readonly transport: 'tcp' | 'unix';
  /** The `Authorization` header as sent. */
  readonly authorization: string | undefined;
}

export class AuthGate {
  readonly #deps: Pick<ApiKeyDeps, 'store' | 'hasher' | 'clock'>;
  readonly #defaultRate: RateLimit;
  readonly #buckets = new TokenBuckets();
  #sweptAt = 0;

  constructor(deps: Pick<ApiKeyDeps, 'store' | 'hasher' | 'clock'>, defaultRate: RateLimit) {
    this.#deps = deps;
    this.#defaultRate = defaultRate;
  }

  /** Authenticates and charges one request to the key's rate; RATE_LIMITED carries `retryAfterMs` in details. */
  async admit(credentials: Credentials): Promise<Principal> {
    if (credentials.transport === 'unix') return LOCAL_PRINCIPAL;
    const principal = await authenticate(this.#deps, bearerToken(credentials.authorization));
    const now = this.#deps.clock.now();
    const decision = this.#buckets.take(principal.id, principal.rateLimit ?? this.#defaultRate, now);
    if (now - this.#sweptAt > 60_000) {
      this.#sweptAt = now;
      this.#buckets.sweep(now);
    }
    if (!decision.allowed) {
      const limit = principal.rateLimit ?? this.#defaultRate;
      throw new AegisError(
        'RATE_LIMITED',
        `key ${principal.id} is over its rate of ${formatRate(limit)}; retry in ${Math.ceil(decision.retryAfterMs / 1000)} s`,
        {
          details: { retryAfterMs: decision.retryAfterMs },
          hint: 'slow down, or ask an admin for a higher --rate',
        },
      );
    }
    return principal;
  }
}

function formatRate(limit: RateLimit): string {
  return `${Number(limit.perSecond.toFixed(3))}/s (burst ${limit.burst})`;
}

function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!match) {
    throw new AegisError('UNAUTHENTICATED', 'the Authorization header must be "Bearer <key>"', {
      hint: 'send "Authorization: Bearer aegis_…"',
    });
  }
  return match[1];
}
