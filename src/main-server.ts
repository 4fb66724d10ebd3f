/**
 * Composition root of the server (`aegis server`): picks the store (SQLite, or PostgreSQL when AEGIS_DATABASE_URL
 * is set), the runtime, bundles, metrics, and wires the use-cases behind the HTTP/gRPC API. Kept apart from main.ts
 * so CLI commands that don't serve never load Fastify, Connect or pg (CLI start time).
 */
import { createHash, createPublicKey, randomBytes, verify } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, homedir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { ClusterCoverageAuditLog } from './adapters/audit/cluster-coverage-audit-log.ts';
import { nodeHasher } from './adapters/audit/node-key.ts';
import { DirAgentBundles } from './adapters/bundle/agent-bundles.ts';
import { loadConfig as loadConfigFile } from './adapters/config/config-file.ts';
import { loadNodeId } from './adapters/host/node-id.ts';
import { ProcIdentity } from './adapters/host/process-identity.ts';
import { SortableIds } from './adapters/ids/ids.ts';
import { SdkMcpServers } from './adapters/mcp/client.ts';
import { memoryWiring, openCortex, openEmbedder, openVectorStore } from './adapters/memory/wiring.ts';
import { PrometheusMetrics } from './adapters/metrics/prometheus.ts';
import { EdgeHub } from './adapters/runtimes/edge/hub.ts';
import { EdgeRuntime } from './adapters/runtimes/edge/runtime.ts';
import { RuntimeRouter } from './adapters/runtimes/registry.ts';
import { SandboxRuntime } from './adapters/runtimes/sandbox/runtime.ts';
import { cryptoSecretRandom } from './adapters/secrets/random.ts';
import type { PostgresStore as PostgresStoreType } from './adapters/store/postgres/store.ts';
import { SqliteStore } from './adapters/store/sqlite/store.ts';
import { swarmWiring } from './adapters/swarm/wiring.ts';
import { OtelTracer, otlpTracesUrl } from './adapters/telemetry/otel-tracer.ts';
import { createToolsHandler } from './adapters/tools/http-handler.ts';
import { type ApiContext, AuthGate } from './api/context.ts';
import { listenHttpApi, type RunningApi } from './api/http/server.ts';
import { loadRevision } from './app/agents.ts';
import { ensureFirstAdminKey } from './app/api-keys.ts';
import { Approvals } from './app/approvals.ts';
import { EdgeNodes } from './app/edge-nodes.ts';
import { EdgeRegistry } from './app/edge-registry.ts';
import { ExecutionEvents } from './app/execution-events.ts';
import { Executions } from './app/executions.ts';
import { LiveSandboxes, type ToolsWiring } from './app/live-sandboxes.ts';
import { deployedMemoryGrants } from './app/memory-access.ts';
import { startMemoryExpiry } from './app/memory-expiry.ts';
import type { AuditLog, Store, VectorStore } from './app/ports.ts';
import { prune } from './app/retention.ts';
import { ToolGateway } from './app/tools.ts';
import { WarmPools } from './app/warm-pools.ts';
import type { RateLimit } from './domain/auth/api-key.ts';
import { type NodeIdentity, type NodeLabels, parseNodeLabels } from './domain/cluster/node.ts';
import type { EdgeNodeRecord } from './domain/edge/records.ts';
import { AegisError } from './domain/errors.ts';
import { swarmIdOf } from './domain/execution.ts';
import { sandboxNodeLostReason } from './domain/live-sandbox.ts';
import { jsonSchemaViolation } from './domain/loop/json-schema.ts';
import { type DeployCeilings, defaultDeployCeilings } from './domain/policy/deploy-ceilings.ts';
import {
  type AgentRetention,
  KEEP_FOREVER,
  keepsEverything,
  type RetentionPolicy,
} from './domain/retention.ts';
import {
  AEGIS_VERSION,
  type AegisConfig,
  loadConfig,
  openAuditContext,
  openLedgerReplication,
  openLlmWiring,
  openSecretStore,
  systemClock,
} from './main.ts';

// ---------------------------------------------------------------------------------------------------------------
// The server (`aegis server`).

export interface ServerOptions {
  /** @default 127.0.0.1 */
  readonly host?: string;
  /** @default 8088; 0 picks a free port */
  readonly port?: number;
  /** Unix socket for the local user. @default $AEGIS_HOME/run/aegis.sock; null: none */
  readonly socketPath?: string | null;
  /** Executions running at once. @default the number of CPUs */
  readonly maxConcurrent?: number;
  /** Executions waiting for a slot before QUEUE_FULL. @default 256 */
  readonly maxQueued?: number;
  /** Sandboxes on this node, warm pools included. @default maxConcurrent + 16 */
  readonly maxSandboxes?: number;
  /** Overrides every agent's `spec.scaling.warm`. */
  readonly warm?: number;
  /** Host-header routing of sandbox ports: `<port>-<sandbox id>.<sandboxDomain>` (api/http/sandbox-ports.ts). */
  readonly sandboxDomain?: string;
  /** Live sandboxes kept ready per agent revision (app/live-sandboxes.ts `warmPerAgent`). @default 0 */
  readonly warmSandboxes?: number;
  /** Overrides every agent's `spec.scaling.idleTimeout`, in ms. */
  readonly poolIdleTimeoutMs?: number;
  /** Default per-key request rate. @default 50/s, burst 100 */
  readonly rate?: RateLimit;
  /**
   * Ceilings on what a non-admin (`deploy`) key may deploy; each field unset takes its default from the host's
   * capacity (`defaultDeployCeilings`: memory ≤ half the RAM, cpu ≤ cores, 4096 pids, disk ≤ 4 GiB, timeout ≤ 1h).
   */
  readonly deployCeilings?: Partial<DeployCeilings>;
  /** Where the first admin key is written (0600). @default $AEGIS_HOME/admin.key */
  readonly adminKeyFile?: string;
  /**
   * Retention (`--retain`, `--retain-logs`, `--retain-audit`; domain/retention.ts), applied at start and every
   * `retentionIntervalMs`. @default keep everything forever
   */
  readonly retention?: RetentionPolicy;
  /** @default 1 hour */
  readonly retentionIntervalMs?: number;
  /**
   * How long executions on a disconnected edge node wait for it before they fail `node-lost` (ADR 0108).
   * @default 30 000
   */
  readonly edgeGraceMs?: number;
  /** One JSON object per log event. @default JSON lines on stderr */
  readonly log?: (entry: Record<string, unknown>) => void;
  /**
   * This node's id in the cluster (ADR 0100). @default $AEGIS_NODE_ID, else the id kept in $AEGIS_HOME/node-id
   * (created on first start)
   */
  readonly nodeId?: string;
  /** A node silent this long is declared dead by the others (heartbeat every third of it). @default 10 s */
  readonly leaseMs?: number;
  /** Labels executions' `spec.placement.labels` are matched against. @default $AEGIS_NODE_LABELS (`k=v,k=v`), else none */
  readonly labels?: NodeLabels;
}

export interface RunningServer {
  /** This node's id and labels (ADR 0100). */
  readonly node: NodeIdentity;
  readonly url: string;
  readonly port: number;
  readonly socketPath: string | undefined;
  /** Text of the admin key when this start created it (first start), else undefined. */
  readonly createdAdminKey: string | undefined;
  readonly adminKeyFile: string;
  readonly recovered: {
    readonly requeued: readonly string[];
    readonly failed: readonly string[];
    readonly reconciled?: readonly string[];
  };
  /**
   * Graceful stop: stop intake, let running executions finish until `deadlineMs` (then cancel them), keep queued
   * ones queued for the next start, close the listeners and stores.
   */
  stop(deadlineMs?: number): Promise<{ finished: number; cancelled: number; leftQueued: number }>;
}

/** `$AEGIS_BUNDLE_DIR`, else /var/lib/aegis/bundles (root) or ~/.cache/aegis/bundles — outside $AEGIS_HOME (ADR 0010). */
export function bundleDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env['AEGIS_BUNDLE_DIR']) return resolve(env['AEGIS_BUNDLE_DIR']);
  if (process.getuid?.() === 0) return '/var/lib/aegis/bundles';
  return join(env['XDG_CACHE_HOME'] || join(homedir(), '.cache'), 'aegis', 'bundles');
}

/** The deployed bundle of an execution's revision: what an edge node receives to run it. */
async function deployedBundleOf(
  store: Store,
  executionId: string,
): Promise<{ digest: string; bytes: Uint8Array }> {
  const record = await store.getExecution(executionId);
  const revision =
    record?.agent.revision === undefined
      ? undefined
      : (await store.listRevisions(record.agent.name)).find((r) => r.revision === record.agent.revision);
  const bytes = revision === undefined ? undefined : await store.readBundle(revision.digest);
  if (revision === undefined || bytes === undefined) {
    throw new AegisError('NOT_FOUND', `execution ${executionId}: its agent revision's bundle is gone`);
  }
  return { digest: revision.digest, bytes };
}

/** Ed25519 signature check for edge nodes (SPKI PEM key, base64 signature). */
function verifyEd25519(publicKeyPem: string, message: string, signature: string): boolean {
  const key = createPublicKey(publicKeyPem);
  if (key.asymmetricKeyType !== 'ed25519') return false;
  return verify(null, Buffer.from(message), key, Buffer.from(signature, 'base64'));
}

/** The node id (flag, env, else $AEGIS_HOME/node-id) and labels (flag, else AEGIS_NODE_LABELS). */
export function nodeIdentity(
  options: Pick<ServerOptions, 'nodeId' | 'labels'>,
  config: AegisConfig,
  env: NodeJS.ProcessEnv,
): NodeIdentity {
  const nodeId = loadNodeId(config.home, options.nodeId ?? env['AEGIS_NODE_ID']);
  const fromEnv = env['AEGIS_NODE_LABELS'];
  const labels =
    options.labels ??
    (fromEnv ? parseNodeLabels(fromEnv.split(',').filter(Boolean), 'AEGIS_NODE_LABELS') : {});
  return { nodeId, labels };
}

async function openServerStore(config: AegisConfig, env: NodeJS.ProcessEnv): Promise<Store> {
  const url = env['AEGIS_DATABASE_URL'];
  if (url) {
    const { PostgresStore } = await import('./adapters/store/postgres/store.ts');
    return PostgresStore.open(url);
  }
  return SqliteStore.open(join(config.home, 'aegis.db'));
}

export async function startServer(
  options: ServerOptions = {},
  config: AegisConfig = loadConfig(),
  env: NodeJS.ProcessEnv = process.env,
): Promise<RunningServer> {
  const log =
    options.log ??
    ((entry) => process.stderr.write(`${JSON.stringify({ ts: new Date().toISOString(), ...entry })}\n`));
  mkdirSync(config.home, { recursive: true, mode: 0o700 });
  const node = nodeIdentity(options, config, env);
  const store = await openServerStore(config, env);
  let audit: AuditLog;
  // With a shared PostgreSQL store, this node's ledger is shipped to the cluster ledger (ADR 0116).
  let replication: Awaited<ReturnType<typeof openLedgerReplication>> | undefined;
  try {
    const auditContext = openAuditContext(config, { writer: true });
    audit = auditContext.audit;
    const databaseUrl = env['AEGIS_DATABASE_URL'];
    if (databaseUrl) {
      try {
        replication = await openLedgerReplication(auditContext, node.nodeId, databaseUrl, (message) =>
          log({ level: 'error', msg: 'ledger replication', error: message }),
        );
        // Recovery then sees what every node recorded, not only this node's ledger.
        audit = new ClusterCoverageAuditLog(audit, replication.cluster);
      } catch (error) {
        await audit.close().catch(() => {});
        throw error;
      }
    }
  } catch (error) {
    await store.close();
    throw error;
  }
  const closeReplication = async () => {
    await replication?.replicator.stop().catch(() => {});
    await replication?.cluster.close().catch(() => {});
  };
  const identity = new ProcIdentity();
  const ids = new SortableIds();
  const sandbox = new SandboxRuntime({
    identity,
    protectedPaths: [config.home],
    ...(env['AEGIS_SCRATCH_DIR'] ? { scratchRoot: env['AEGIS_SCRATCH_DIR'] } : {}),
    ...(env['AEGIS_CGROUP_PARENT'] ? { cgroupParent: env['AEGIS_CGROUP_PARENT'] } : {}),
    ...(env['AEGIS_NODE_BINARY'] ? { nodeBinary: env['AEGIS_NODE_BINARY'] } : {}),
  });
  // Agents go to the runtime their spec.isolation names (`auto`: the strongest available); registry.ts.
  const runtime = new RuntimeRouter(
    {
      identity,
      protectedPaths: [config.home],
      scratchRoot: sandbox.scratchRoot,
      imageCacheDir: join(config.home, 'images'),
      ...(env['AEGIS_NODE_BINARY'] ? { nodeBinary: env['AEGIS_NODE_BINARY'] } : {}),
    },
    undefined,
    [sandbox],
  );
  // Edge nodes (ADR 0108): agents placed by labels on an enrolled edge run there, through the same runAgent.
  const edgeNodes = new EdgeNodes({
    store,
    hasher: nodeHasher,
    clock: systemClock,
    random: cryptoSecretRandom,
    audit,
    verify: verifyEd25519,
    signals: store,
  });
  // Connected edges are rows of the cluster registry (kind edge), kept live by this server (ADR 0134).
  const edgeRegistry = new EdgeRegistry({
    store,
    clock: systemClock,
    serverNodeId: node.nodeId,
    version: AEGIS_VERSION,
    leaseMs: options.edgeGraceMs ?? 30_000,
    log,
  });
  const registryFailed = (error: unknown) =>
    log({ level: 'warn', msg: 'edge registry update failed', error: String(error) });
  const edgeHub = new EdgeHub({
    nodes: edgeNodes,
    ...(options.edgeGraceMs === undefined ? {} : { graceMs: options.edgeGraceMs }),
    log,
    onConnected: (edge) => void edgeRegistry.connected(edge).catch(registryFailed),
  });
  const cutRevokedEdge = edgeNodes.onRevoked;
  edgeNodes.onRevoked = (nodeId) => {
    void edgeRegistry.revoked(nodeId).catch(registryFailed);
    return cutRevokedEdge(nodeId);
  };
  runtime.setEdge(
    new EdgeRuntime({
      hub: edgeHub,
      bundleFor: (executionId) => deployedBundleOf(store, executionId),
      listEdges: () => store.listEdgeNodes(),
    }),
  );
  // Each server learns the edges enrolled (or revoked) through the others — their records, and a revoked one
  // connected here is cut — at once from the `edge` signal, and periodically (a missed NOTIFY) with the heartbeat.
  const reloadEdges = async (records: readonly EdgeNodeRecord[]) => {
    for (const id of edgeHub.load(records)) await edgeRegistry.revoked(id);
  };
  const stopEdgeSignals = store.onSignal((topic, id) => {
    if (topic !== 'edge') return;
    void (async () => {
      const record = await store.getEdgeNode(id);
      if (record !== undefined) await reloadEdges([record]);
    })().catch(registryFailed);
  });
  const edgeTimer = systemClock.setInterval(
    () => {
      void (async () => {
        await reloadEdges(await store.listEdgeNodes());
        await edgeRegistry.beat(edgeHub.connectedEdges());
      })().catch(registryFailed);
    },
    Math.max(250, Math.floor(Math.min(options.leaseMs ?? 10_000, options.edgeGraceMs ?? 30_000) / 3)),
    { background: true },
  );
  const bundlesDir = bundleDir(env);
  const bundles = new DirAgentBundles({ dir: bundlesDir });
  const metrics = new PrometheusMetrics();
  const secrets = openSecretStore(config);
  let llm: Awaited<ReturnType<typeof openLlmWiring>>;
  let configFile: Awaited<ReturnType<typeof loadConfigFile>>;
  let vectors: VectorStore | undefined;
  let embedder: Awaited<ReturnType<typeof openEmbedder>>;
  try {
    configFile = await loadConfigFile(env);
    // Cortex: vectors beside the server's store (PostgreSQL with AEGIS_DATABASE_URL, else $AEGIS_HOME/cortex.db);
    // the embedder of memory.embedder (probed now: a dead endpoint fails the start, not every recall; `auto`
    // picks word vectors when installed unless stored memories use hashing, and logs which).
    vectors = await openVectorStore(config.home, env['AEGIS_DATABASE_URL']);
    embedder = await openEmbedder(
      configFile.memory.embedder,
      configFile.config.llm?.providers ?? {},
      secrets,
      { env, home: config.home, store: vectors, log: (line) => log({ ...line }) },
    );
  } catch (error) {
    await vectors?.close().catch(() => {});
    await audit.close().catch(() => {});
    await store.close().catch(() => {});
    throw error;
  }
  try {
    llm = await openLlmWiring(secrets, {
      env,
      observe: (record) => metrics.llmCall(record),
      spend: store,
      onSpendError: (error) =>
        log({ level: 'error', msg: 'llm.budgets spend not persisted', error: String(error) }),
    });
  } catch (error) {
    await vectors.close().catch(() => {});
    await audit.close().catch(() => {});
    await closeReplication();
    await store.close().catch(() => {});
    throw error;
  }
  // OpenTelemetry traces when the operator names a collector (OTEL_EXPORTER_OTLP_ENDPOINT; ADR 0076).
  const tracesUrl = otlpTracesUrl(env);
  const tracer =
    tracesUrl === null
      ? undefined
      : new OtelTracer({
          url: tracesUrl,
          serviceName: env['OTEL_SERVICE_NAME'] || 'aegis',
          serviceVersion: AEGIS_VERSION,
          ...(env['OTEL_BSP_SCHEDULE_DELAY'] && /^\d+$/.test(env['OTEL_BSP_SCHEDULE_DELAY'])
            ? { scheduledDelayMs: Number(env['OTEL_BSP_SCHEDULE_DELAY']) }
            : {}),
        });
  const events = new ExecutionEvents(systemClock);
  const maxConcurrent = options.maxConcurrent ?? availableParallelism();
  let busy = () => 0;
  const pools = new WarmPools(
    {
      runtime,
      audit,
      clock: systemClock,
      newId: () => `wp_${ids.executionId().slice(3)}`,
      metrics,
      busy: () => busy(),
      log,
    },
    {
      maxSandboxes: options.maxSandboxes ?? maxConcurrent + 16,
      ...(options.warm === undefined ? {} : { warmOverride: options.warm }),
      ...(options.poolIdleTimeoutMs === undefined
        ? {}
        : { idleTimeoutMsOverride: options.poolIdleTimeoutMs }),
    },
  );
  // MCP servers of the config, connected on first use (adapters/mcp/client.ts).
  const mcpConfig = configFile.config.mcp ?? { servers: {} };
  const mcpServers = new SdkMcpServers(mcpConfig, secrets);
  // The tool gateway (app/tools.ts): live sandboxes and one-shot executions with spec.tools share it.
  // Tool calls of `approval: required` grants wait here for a human (in memory: a restart refuses them).
  const approvals = new Approvals({
    audit,
    clock: systemClock,
    newId: () => `ap_${ids.executionId().slice(3)}`,
  });
  const tools: ToolsWiring = {
    gateway: new ToolGateway({
      audit,
      clock: systemClock,
      sha256Hex: (text) => createHash('sha256').update(text).digest('hex'),
      mcp: mcpServers,
      approvals,
    }),
    handlerFor: createToolsHandler,
    newToken: () => `aegis_tk_${randomBytes(24).toString('hex')}`,
  };
  const toolGateway = tools.gateway;
  // Cortex (agent memory, app/memory-access.ts; adapters/memory/wiring.ts).
  const cortex = openCortex({
    embedder,
    store: vectors,
    audit,
    clock: systemClock,
    ids,
  });
  // Share grants follow the active revisions (spec.memory.share); compiled manifests are cached by digest.
  const activeAgents = async () =>
    Promise.all((await store.listAgents()).map((agent) => executions.compiledAgent(agent.active)));
  const memory = memoryWiring(cortex, deployedMemoryGrants(activeAgents));
  // The swarm bus and locks (app/swarm-bus.ts, swarm-locks.ts) in the server's store, woken by its signals.
  const swarm = swarmWiring({
    store: (store as SqliteStore | PostgresStoreType).swarmStore(),
    signals: store,
    audit,
    clock: systemClock,
    nodeId: node.nodeId,
    // A parent and its children share topics and locks: the swarm is the root's id.
    swarmOf: async (id) => {
      const record = await store.getExecution(id);
      return record === undefined ? id : swarmIdOf(record);
    },
  });
  const executions = new Executions(
    {
      runtime,
      store,
      bundles,
      audit,
      clock: systemClock,
      ids,
      identity,
      events,
      metrics,
      secrets,
      random: cryptoSecretRandom,
      pools,
      llm,
      tools,
      memory,
      swarm,
      ...(tracer ? { tracer } : {}),
      node,
      version: AEGIS_VERSION,
      log,
      // Fenced out (declared dead while paused or partitioned): the live sandboxes it held are reaped too.
      onFencedOut: () => sandboxes.reapAll(sandboxNodeLostReason(node.nodeId)),
      // A node this one declared dead: its live sandboxes are recorded terminated (node-lost).
      onNodeDead: (nodeId) => sandboxes.nodeLost(nodeId),
      // This node also claims for the edge nodes connected to it (their labels and capacity; ADR 0108).
      delegates: () => edgeHub.claimRequests(),
      loop: {
        live: runtime,
        tools: toolGateway,
        jsonSchema: jsonSchemaViolation,
        sha256Hex: (text) => createHash('sha256').update(text).digest('hex'),
      },
    },
    {
      maxConcurrent,
      maxQueued: options.maxQueued ?? 256,
      runtimes: runtime
        .availability()
        .filter((entry) => entry.available)
        .map((entry) => entry.name),
      ...(options.leaseMs === undefined ? {} : { leaseMs: options.leaseMs }),
    },
  );
  busy = () => executions.stats().running;
  metrics.bindQueue({
    running: () => executions.stats().running,
    // Counted at scrape time: a cached count drifts between a claim and a concurrent submit.
    queued: () => store.countQueued().catch(() => executions.stats().queued),
    warm: () => pools.warmCount(),
  });
  // Pools follow the active revision: a deploy or rollback retires the other revisions' instances.
  const syncPools = async (name: string, change: 'activated' | 'deleted') => {
    try {
      if (change === 'deleted') return await pools.drainAgent(name, 'drained');
      const summary = await store.getAgent(name);
      if (summary === undefined) return await pools.drainAgent(name, 'drained');
      await pools.drainAgent(name, 'redeployed', summary.activeRevision);
      pools.ensure(await loadRevision({ store, bundles }, summary.active), summary.activeRevision);
    } catch (error) {
      log({ level: 'warn', msg: 'warm pool update failed', agent: name, error: String(error) });
    }
  };
  const keyDeps = { store, hasher: nodeHasher, clock: systemClock, ids, random: cryptoSecretRandom, audit };
  // Live sandboxes run on the runtime their agent's isolation names, through the router (app/live-sandboxes.ts,
  // docs/adr/0051-live-sandbox-exec-agent.md, 0072 for docker and gvisor).
  const sandboxes = new LiveSandboxes(
    {
      runtime,
      runtimeName: sandbox.name,
      store,
      bundles,
      audit,
      clock: systemClock,
      ids,
      identity,
      node: { nodeId: node.nodeId, epoch: () => executions.nodeState().epoch },
      secrets,
      random: cryptoSecretRandom,
      llm,
      tools,
    },
    {
      maxSandboxes: options.maxSandboxes ?? maxConcurrent + 16,
      warmPerAgent: options.warmSandboxes ?? 0,
    },
  );
  metrics.bindLiveSandboxes(
    () =>
      sandboxes
        .held()
        .map((view) => ({ id: view.id, agent: view.agent.name, status: view.status, usage: view.usage })),
    () => sandboxes.warm(),
  );
  // Retention (app/retention.ts): each agent's spec.retention comes from its active revision (cached per revision).
  const policy = options.retention ?? KEEP_FOREVER;
  const retentionCache = new Map<string, AgentRetention | null>();
  const agentRetention = async () => {
    const map = new Map<string, AgentRetention>();
    for (const agent of await store.listAgents()) {
      const key = `${agent.name}@${agent.activeRevision}`;
      let own = retentionCache.get(key);
      if (own === undefined) {
        own =
          (await loadRevision({ store, bundles }, agent.active).catch(() => undefined))?.retention ?? null;
        retentionCache.set(key, own);
      }
      if (own !== null) map.set(agent.name, own);
    }
    return map;
  };
  let pruning: Promise<unknown> = Promise.resolve();
  const runPrune = (request: { policy: RetentionPolicy | undefined; dryRun: boolean; by: string }) => {
    // One prune at a time (the policy's and an admin's queue behind each other).
    const next = pruning.then(async () => {
      const report = await prune(
        {
          store,
          audit,
          clock: systemClock,
          agentRetention,
          yieldToIo: () => new Promise((r) => setImmediate(r)),
        },
        { policy: request.policy ?? policy, dryRun: request.dryRun, by: request.by },
      );
      if (!report.dryRun) metrics.retentionPruned(report);
      return report;
    });
    pruning = next.catch(() => {});
    return next;
  };
  let retentionTimer: NodeJS.Timeout | undefined;
  const applyPolicy = () =>
    void runPrune({ policy, dryRun: false, by: 'retention-policy' }).then(
      (report) => {
        const r = report.removed;
        if (r.executions + r.logsOfExecutions + r.sandboxes + r.ledgerEntries > 0) {
          log({ level: 'info', msg: 'retention pruned', removed: r, reclaimedBytes: report.reclaimedBytes });
        }
      },
      (error: unknown) => log({ level: 'error', msg: 'retention prune failed', error: String(error) }),
    );
  if (replication !== undefined) {
    const { replicator } = replication;
    metrics.bindLedgerReplication(() => replicator.status());
  }
  let ready = false;
  const ctx: ApiContext = {
    prune: runPrune,
    store,
    audit,
    ...(replication === undefined ? {} : { clusterAudit: replication.replicator }),
    clock: systemClock,
    events,
    executions,
    agentDeps: {
      store,
      bundles,
      audit,
      clock: systemClock,
      ceilings: {
        ...defaultDeployCeilings({ cores: availableParallelism(), memoryBytes: totalmem() }),
        ...options.deployCeilings,
      },
      onAgentChanged: (name, change) => void syncPools(name, change),
    },
    pools,
    sandboxes,
    approvals,
    memory: {
      memory,
      agentOf: async (name) => {
        const summary = await store.getAgent(name);
        return summary === undefined ? undefined : executions.compiledAgent(summary.active);
      },
    },
    keyDeps,
    gate: new AuthGate(keyDeps, options.rate ?? { perSecond: 50, burst: 100 }),
    serverPaths: [
      { path: config.home, shownAs: '$AEGIS_HOME' },
      { path: bundlesDir, shownAs: '<bundle-dir>' },
      { path: sandbox.scratchRoot, shownAs: '<scratch-dir>' },
    ],
    ready: () => ready && executions.stats().accepting,
    edge: {
      nodes: edgeNodes,
      handleUpgrade: (request, socket, head) => edgeHub.handleUpgrade(request, socket, head),
      view: () => edgeHub.view(),
    },
  };
  const adminKeyFile = options.adminKeyFile ?? join(config.home, 'admin.key');
  let api: RunningApi | undefined;
  // Expired memories (spec.memory.ttl) deleted at start and every memory.sweepInterval; audited as a count.
  const expiry = startMemoryExpiry(cortex, systemClock, {
    intervalMs: configFile.memory.sweepIntervalMs,
    onError: (error) => log({ level: 'warn', msg: 'memory expiry sweep failed', error: String(error) }),
  });
  try {
    const first = await ensureFirstAdminKey(keyDeps);
    if (first !== undefined) writeFileSync(adminKeyFile, `${first.key}\n`, { mode: 0o600, flag: 'w' });
    edgeHub.load(await store.listEdgeNodes());
    const recovered = await executions.recover();
    const sandboxesReaped = await sandboxes.recover();
    if (sandboxesReaped.length > 0) {
      log({
        level: 'warn',
        msg: 'live sandboxes of the previous process recorded terminated (orchestrator-restarted)',
        sandboxes: sandboxesReaped,
      });
    }
    for (const agent of await store.listAgents()) await syncPools(agent.name, 'activated');
    api = await listenHttpApi(
      ctx,
      {
        bundleLimitBytes: bundles.limits.maxBundleBytes,
        metrics,
        version: AEGIS_VERSION,
        log,
        ...(options.sandboxDomain ? { sandboxDomain: options.sandboxDomain } : {}),
      },
      {
        host: options.host ?? '127.0.0.1',
        port: options.port ?? 8088,
        ...(options.socketPath === null
          ? {}
          : { socketPath: options.socketPath ?? join(config.home, 'run', 'aegis.sock') }),
      },
    );
    ready = true;
    if (!keepsEverything(policy)) {
      applyPolicy();
      retentionTimer = setInterval(applyPolicy, options.retentionIntervalMs ?? 3_600_000).unref();
    }
    const running = api;
    let stopping: Promise<{ finished: number; cancelled: number; leftQueued: number }> | undefined;
    return {
      url: running.url,
      port: running.port,
      socketPath: running.socketPath,
      node,
      createdAdminKey: first?.key,
      adminKeyFile,
      recovered,
      stop(deadlineMs = 30_000) {
        stopping ??= (async () => {
          ready = false;
          if (retentionTimer !== undefined) clearInterval(retentionTimer);
          await pruning;
          const drained = await executions.drain(deadlineMs);
          await sandboxes.closeAll();
          await mcpServers.close();
          await pools.close();
          await expiry.stop();
          edgeTimer.cancel();
          stopEdgeSignals();
          edgeHub.close();
          try {
            await running.close();
          } finally {
            await vectors.close().catch(() => {});
            try {
              await audit.close();
            } finally {
              await closeReplication();
              await store.close();
              await tracer?.shutdown().catch(() => {});
            }
          }
          return drained;
        })();
        return stopping;
      },
    };
  } catch (error) {
    await api?.close().catch(() => {});
    await expiry.stop();
    await vectors.close().catch(() => {});
    await audit.close().catch(() => {});
    await closeReplication();
    await store.close().catch(() => {});
    throw error;
  }
}
