/**
 * Prometheus metrics (prom-client) for the server: executions by terminal status, sandbox start and queue-wait
 * histograms, running sandboxes and queue depth (read from the scheduler at scrape time), and HTTP requests.
 * Each server gets its own registry, so tests can run several servers in one process.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { ExecutionMetrics } from '../../app/ports.ts';
import type { TerminalStatus } from '../../domain/execution.ts';

export interface QueueGauges {
  running(): number;
  /** The shared queue's depth, read at scrape time (the store's count: every node's submissions). */
  queued(): number | Promise<number>;
  /** Warm pool instances ready on this node. */
  warm(): number;
}

/** One live sandbox as /metrics shows it (read from app/live-sandboxes.ts at scrape time). */
export interface LiveSandboxSample {
  readonly id: string;
  readonly agent: string;
  readonly status: 'running' | 'paused' | 'terminated';
  readonly usage: {
    readonly cpuUsageNs: number | null;
    readonly memoryBytes: number | null;
    readonly pids: number | null;
  } | null;
}

const LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class PrometheusMetrics implements ExecutionMetrics {
  readonly registry = new Registry();
  readonly #finished: Counter<'status'>;
  readonly #start: Histogram<'start'>;
  readonly #pool: Counter<'to' | 'reason'>;
  readonly #queueWait: Histogram;
  readonly #http: Counter<'method' | 'route' | 'status'>;
  readonly #llmCalls: Counter<'alias' | 'status'>;
  readonly #llmTokens: Counter<'alias' | 'direction'>;
  readonly #prunedRows: Counter<'what'>;
  readonly #prunedBytes: Counter<'what'>;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry, prefix: 'aegis_process_' });
      // prom-client names three gauges `…_total`, which `promtool check metrics` rejects (only counters end in
      // _total). They are the sums of the per-type gauges kept beside them: sum(aegis_process_nodejs_active_handles).
      for (const name of ['active_handles', 'active_requests', 'active_resources']) {
        this.registry.removeSingleMetric(`aegis_process_nodejs_${name}_total`);
      }
    }
    this.#finished = new Counter({
      name: 'aegis_executions_total',
      help: 'Executions that reached a terminal status, by status',
      labelNames: ['status'],
      registers: [this.registry],
    });
    this.#start = new Histogram({
      name: 'aegis_execution_start_seconds',
      help: 'Time from leaving the queue to the agent running (sandbox start), by warm (pool) or cold start',
      labelNames: ['start'],
      buckets: LATENCY_BUCKETS_S,
      registers: [this.registry],
    });
    this.#queueWait = new Histogram({
      name: 'aegis_execution_queue_wait_seconds',
      help: 'Time an execution waited in the queue before its sandbox started',
      buckets: LATENCY_BUCKETS_S,
      registers: [this.registry],
    });
    this.#pool = new Counter({
      name: 'aegis_pool_instance_transitions_total',
      help: 'Warm-pool instances entering Warm, or retired unused (by reason: idle, drained, redeployed, died, …)',
      labelNames: ['to', 'reason'],
      registers: [this.registry],
    });
    this.#http = new Counter({
      name: 'aegis_http_requests_total',
      help: 'HTTP requests by method, route pattern and status code',
      labelNames: ['method', 'route', 'status'],
      registers: [this.registry],
    });
    this.#llmCalls = new Counter({
      name: 'aegis_llm_calls_total',
      help: 'Model calls through the LLM gateway, by alias and status (ok, denied, budget, error)',
      labelNames: ['alias', 'status'],
      registers: [this.registry],
    });
    this.#prunedRows = new Counter({
      name: 'aegis_retention_pruned_rows_total',
      help: 'Rows removed by retention (--retain, aegis prune), by what: executions, log_lines, sandboxes, ledger_entries',
      labelNames: ['what'],
      registers: [this.registry],
    });
    this.#prunedBytes = new Counter({
      name: 'aegis_retention_pruned_bytes_total',
      help: 'Bytes removed by retention: logs (log text), reclaimed (SQLite files shrunk by)',
      labelNames: ['what'],
      registers: [this.registry],
    });
    this.#llmTokens = new Counter({
      name: 'aegis_llm_tokens_total',
      help: 'Tokens through the LLM gateway, by alias and direction (input, output)',
      labelNames: ['alias', 'direction'],
      registers: [this.registry],
    });
  }

  /** One prune (app/retention.ts) that removed something. */
  retentionPruned(report: {
    readonly removed: {
      readonly executions: number;
      readonly logLines: number;
      readonly logBytes: number;
      readonly sandboxes: number;
      readonly ledgerEntries: number;
    };
    readonly reclaimedBytes: number | null;
  }): void {
    const r = report.removed;
    this.#prunedRows.inc({ what: 'executions' }, r.executions);
    this.#prunedRows.inc({ what: 'log_lines' }, r.logLines);
    this.#prunedRows.inc({ what: 'sandboxes' }, r.sandboxes);
    this.#prunedRows.inc({ what: 'ledger_entries' }, r.ledgerEntries);
    this.#prunedBytes.inc({ what: 'logs' }, r.logBytes);
    if (report.reclaimedBytes !== null && report.reclaimedBytes > 0) {
      this.#prunedBytes.inc({ what: 'reclaimed' }, report.reclaimedBytes);
    }
  }

  /** One model call (the gateway's `llm.call` record). */
  llmCall(record: {
    readonly alias: string;
    readonly status: string;
    readonly inputTokens: number;
    readonly outputTokens: number;
  }): void {
    // The alias is agent-chosen text: only configured-looking names become label values.
    const alias = /^[a-z][a-z0-9-]{0,31}$/.test(record.alias) ? record.alias : 'other';
    this.#llmCalls.inc({ alias, status: record.status });
    if (record.inputTokens > 0) this.#llmTokens.inc({ alias, direction: 'input' }, record.inputTokens);
    if (record.outputTokens > 0) this.#llmTokens.inc({ alias, direction: 'output' }, record.outputTokens);
  }

  /** Gauges that read the scheduler when scraped. */
  bindQueue(queue: QueueGauges): void {
    new Gauge({
      name: 'aegis_sandboxes_running',
      help: 'Sandboxes running an execution on this node',
      registers: [this.registry],
      collect() {
        this.set(queue.running());
      },
    });
    new Gauge({
      name: 'aegis_instances',
      help: 'Sandbox instances on this node by lifecycle state (warm: pooled and ready; hot: executing)',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        this.set({ state: 'warm' }, queue.warm());
        this.set({ state: 'hot' }, queue.running());
      },
    });
    new Gauge({
      name: 'aegis_queue_depth',
      help: 'Executions waiting in the queue (in a cluster: the shared queue every node claims from)',
      registers: [this.registry],
      async collect() {
        this.set(await queue.queued());
      },
    });
  }

  /** Replication of this node's ledger to the cluster ledger in PostgreSQL (adapters/audit/ledger-replicator.ts). */
  bindLedgerReplication(
    status: () => { readonly lagEntries: number; readonly lagMs: number; readonly state: string },
  ): void {
    new Gauge({
      name: 'aegis_ledger_replication_lag_entries',
      help: "Entries of this node's ledger stored locally but not yet in the cluster ledger (PostgreSQL)",
      registers: [this.registry],
      collect() {
        this.set(status().lagEntries);
      },
    });
    new Gauge({
      name: 'aegis_ledger_replication_lag_seconds',
      help: 'Age of the oldest entry of this node not yet in the cluster ledger (0 when caught up)',
      registers: [this.registry],
      collect() {
        this.set(status().lagMs / 1000);
      },
    });
    new Gauge({
      name: 'aegis_ledger_replication_up',
      help: 'Whether this node ships its ledger (0: refused — its node id has another key — or diverged; see logs)',
      registers: [this.registry],
      collect() {
        const state = status().state;
        this.set(state === 'refused' || state === 'diverged' ? 0 : 1);
      },
    });
  }

  /**
   * Live sandboxes (issue 12): how many by status, and per sandbox that has not ended its CPU time, memory and
   * processes — labelled by sandbox id and agent (bounded by --max-sandboxes; ended ones drop out).
   */
  bindLiveSandboxes(list: () => readonly LiveSandboxSample[], warm: () => number = () => 0): void {
    const live = () => list().filter((sandbox) => sandbox.status !== 'terminated');
    new Gauge({
      name: 'aegis_live_sandboxes',
      help: 'Live sandboxes on this node by status (warm: kept ready by --warm-sandboxes, not yet created)',
      labelNames: ['status'],
      registers: [this.registry],
      collect() {
        const all = live();
        for (const status of ['running', 'paused'] as const) {
          this.set({ status }, all.filter((sandbox) => sandbox.status === status).length);
        }
        this.set({ status: 'warm' }, warm());
      },
    });
    const perSandbox = (
      name: string,
      help: string,
      read: (usage: NonNullable<LiveSandboxSample['usage']>) => number | null,
      kind: 'counter' | 'gauge',
    ) => {
      const collect = function (this: Gauge<'sandbox' | 'agent'> | Counter<'sandbox' | 'agent'>) {
        this.reset();
        for (const sandbox of live()) {
          const value = sandbox.usage === null ? null : read(sandbox.usage);
          if (value === null) continue;
          const labels = { sandbox: sandbox.id, agent: sandbox.agent };
          if (this instanceof Counter) this.inc(labels, value);
          else this.set(labels, value);
        }
      };
      const config = {
        name,
        help,
        labelNames: ['sandbox', 'agent'] as const,
        registers: [this.registry],
        collect,
      };
      if (kind === 'counter') new Counter(config);
      else new Gauge(config);
    };
    perSandbox(
      'aegis_live_sandbox_cpu_seconds_total',
      'CPU time a live sandbox has used (its cgroup), by sandbox',
      (usage) => (usage.cpuUsageNs === null ? null : usage.cpuUsageNs / 1e9),
      'counter',
    );
    perSandbox(
      'aegis_live_sandbox_memory_bytes',
      'Memory charged to a live sandbox now (its cgroup), by sandbox',
      (usage) => usage.memoryBytes,
      'gauge',
    );
    perSandbox(
      'aegis_live_sandbox_pids',
      'Processes in a live sandbox now (its cgroup), by sandbox',
      (usage) => usage.pids,
      'gauge',
    );
  }

  executionFinished(status: TerminalStatus): void {
    this.#finished.inc({ status });
  }

  sandboxStarted(startMs: number, start: 'warm' | 'cold'): void {
    this.#start.observe({ start }, startMs / 1000);
  }

  poolTransition(to: 'warm' | 'retired', reason?: string): void {
    this.#pool.inc({ to, reason: reason ?? '' });
  }

  dequeued(waitMs: number): void {
    this.#queueWait.observe(Math.max(0, waitMs) / 1000);
  }

  httpRequest(method: string, route: string, status: number): void {
    this.#http.inc({ method, route, status: String(status) });
  }

  contentType(): string {
    return this.registry.contentType;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
