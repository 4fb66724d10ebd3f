/**
 * Scenario `cluster`: executions/s of a cluster of 1, 2 and 3 `aegis server` nodes on one PostgreSQL, and the claim
 * latency — the record's `createdAt` (the accepting node persisted it `queued`) → `claimedAt` when the store
 * records one, else `startedAt` (a node claimed it and its sandbox started): idle (one execution at a time, the
 * claim path itself: wake-up, the claiming query, the start) and under the burst (mostly time queued).
 *
 * The cluster is test/cluster/harness.ts's (one fresh database on the checkout's test PostgreSQL, each node its own
 * home, scratch and ledger); nodes are pinned round-robin to the host's CPUs with `taskset` (node i on CPU i mod n),
 * each `--max-concurrent 2`. The agent is the cluster tests' trivial bash echo. Per cluster size: a warm-up, then
 * `executions` submitted round-robin over the nodes, 16 requests in flight, timed from the first POST to the last
 * execution ended (polled). Also read: the CPU time of the PostgreSQL backends serving this database
 * (pg_stat_activity pids, /proc) and of the node processes, per execution — where a bigger cluster's time would go.
 *
 * On a checkout without the cluster (no `--node-id`), every node runs only what it accepted: the numbers are then
 * those of N independent servers sharing a database, and the report says so.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Cluster, clusterMissing, type ExecutionView, TERMINAL } from '../../test/cluster/harness.ts';
import { cpuSnapshot, otherWork, processCpuMs } from '../lib/host-load.ts';
import { describeMachine, machineInfo } from '../lib/machine.ts';
import { cpuTicksOf } from '../lib/procs.ts';
import type { BenchOptions, Scenario, ScenarioReport } from '../lib/scenario.ts';
import { formatMs, roundSummary, type Summary, summarize } from '../lib/stats.ts';
import { renderMarkdown, renderText, type Table } from '../lib/table.ts';

const SIZES = [1, 2, 3] as const;
const IN_FLIGHT = 16;
const MAX_CONCURRENT = 2;

interface SizeResult {
  readonly nodes: number;
  readonly executions: number;
  readonly wallMs: number;
  readonly perSec: number;
  /** One execution at a time on an idle cluster: createdAt → claimedAt/startedAt (the claim path itself). */
  readonly claim: Summary;
  /** Under the burst: the same span, mostly time spent queued behind the others. */
  readonly queuedClaim: Summary;
  readonly endToEnd: Summary;
  /** CPU ms per execution: the PostgreSQL backends serving the database, and all node processes. */
  readonly cpuMsPerExecution: { readonly postgres: number; readonly nodes: number };
  readonly failed: number;
  /** The record field the claim ends at: `claimedAt` when the store records it, else `startedAt`. */
  readonly claimedBy: 'claimedAt' | 'startedAt';
}

function agentYaml(dir: string): string {
  writeFileSync(
    join(dir, 'agent.yaml'),
    'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: echo }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n',
  );
  writeFileSync(join(dir, 'main.sh'), 'read -r input\necho "$input"\n');
  return join(dir, 'agent.yaml');
}

/** CPU clock ticks → ms. */
const TICK_MS = 10;

async function backendPids(databaseUrl: string): Promise<number[]> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const name = new URL(databaseUrl).pathname.slice(1);
    const rows = await client.query<{ pid: number }>(
      'SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
      [name],
    );
    return rows.rows.map((row) => row.pid);
  } finally {
    await client.end();
  }
}

function ticksOf(pids: readonly number[]): Map<number, number> {
  return new Map(pids.map((pid) => [pid, cpuTicksOf(pid)]));
}

async function submitAndWait(
  cluster: Cluster,
  count: number,
  offset: number,
): Promise<{ ids: string[]; wallMs: number; records: ExecutionView[] }> {
  const ids: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const n = offset + next++;
      const node = cluster.nodes[n % cluster.nodes.length]!;
      const created = await cluster.api(node, 'POST', '/v1/executions', { agent: 'echo', input: { n } });
      if (created.status !== 202 && created.status !== 200) {
        throw new Error(`POST /v1/executions on ${node.name}: ${created.status} ${created.text}`);
      }
      ids.push(created.json['id'] as string);
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  const wanted = new Set(ids);
  let records: ExecutionView[] = [];
  for (;;) {
    const all = await cluster.listExecutions(cluster.nodes[0]!);
    records = all.filter((r) => wanted.has(r.id));
    if (records.length === wanted.size && records.every((r) => TERMINAL.has(r.status))) break;
    await new Promise((done) => setTimeout(done, 100));
  }
  // Wall time to the last finish the records say (not to our poll noticing it).
  const lastFinish = Math.max(...records.map((r) => Date.parse(r.finishedAt!)));
  const firstCreate = Math.min(...records.map((r) => Date.parse(r.createdAt)));
  return { ids, wallMs: lastFinish - firstCreate, records };
}

async function measureSize(nodes: number, options: BenchOptions): Promise<SizeResult> {
  const cores = availableParallelism();
  const agentDir = mkdtempSync(join(tmpdir(), 'aegis-bench-cluster-'));
  const cluster = await Cluster.start({
    servers: nodes,
    maxConcurrent: MAX_CONCURRENT,
    cpus: Array.from({ length: cores }, (_, i) => String(i)),
  });
  try {
    await cluster.deploy(agentYaml(agentDir));
    const executions = options.quick ? 60 : 300;
    options.log(`  ${nodes} node(s): warm-up ${Math.max(6, nodes * 4)} executions`);
    await submitAndWait(cluster, Math.max(6, nodes * 4), 0);
    const backends = await backendPids(cluster.databaseUrl);
    const pgBefore = ticksOf(backends);
    const nodeCpu = () =>
      cluster.nodes.reduce((sum, node) => {
        const cpu = processCpuMs(node.pid!);
        return sum + cpu.own;
      }, 0);
    const nodesBefore = nodeCpu();
    options.log(`  ${nodes} node(s): ${executions} executions`);
    const run = await submitAndWait(cluster, executions, 1000);
    const nodesMs = nodeCpu() - nodesBefore;
    const backendsAfter = await backendPids(cluster.databaseUrl);
    let pgTicks = 0;
    for (const pid of backendsAfter) pgTicks += cpuTicksOf(pid) - (pgBefore.get(pid) ?? 0);
    const claimMs = (r: ExecutionView) =>
      Date.parse(String(r['claimedAt'] ?? r.startedAt)) - Date.parse(r.createdAt);
    const queuedClaim = run.records.filter((r) => r.startedAt !== null).map(claimMs);
    // The claim path alone: one execution at a time, each on the next node, answered when it ends.
    const idle = options.quick ? 12 : 60;
    options.log(`  ${nodes} node(s): ${idle} executions one at a time`);
    const claim: number[] = [];
    for (let i = 0; i < idle; i++) {
      const node = cluster.nodes[i % cluster.nodes.length]!;
      const done = await cluster.api(node, 'POST', '/v1/executions?wait=30s', {
        agent: 'echo',
        input: { i },
      });
      const record = done.json as unknown as ExecutionView;
      if (record.startedAt) claim.push(claimMs(record));
    }
    const endToEnd = run.records.map((r) => Date.parse(r.finishedAt!) - Date.parse(r.createdAt));
    return {
      nodes,
      executions,
      wallMs: run.wallMs,
      perSec: executions / (run.wallMs / 1000),
      claim: summarize(claim),
      queuedClaim: summarize(queuedClaim),
      endToEnd: summarize(endToEnd),
      cpuMsPerExecution: { postgres: (pgTicks * TICK_MS) / executions, nodes: nodesMs / executions },
      failed: run.records.filter((r) => r.status !== 'succeeded').length,
      claimedBy: run.records.some((r) => typeof r['claimedAt'] === 'string') ? 'claimedAt' : 'startedAt',
    };
  } finally {
    await cluster.close();
    rmSync(agentDir, { recursive: true, force: true });
  }
}

function resultTable(results: readonly SizeResult[]): Table {
  return {
    headers: [
      'nodes',
      'executions',
      'executions/s',
      'claim p50 / p99 ms, idle',
      'claim p50 / p99 ms, under the burst',
      'created → finished p50 / p99 ms, burst',
      'PostgreSQL CPU ms / execution',
      'node CPU ms / execution',
      'not succeeded',
    ],
    rows: results.map((r) => [
      String(r.nodes),
      String(r.executions),
      r.perSec.toFixed(1),
      `${formatMs(r.claim.p50)} / ${formatMs(r.claim.p99)}`,
      `${formatMs(r.queuedClaim.p50)} / ${formatMs(r.queuedClaim.p99)}`,
      `${formatMs(r.endToEnd.p50)} / ${formatMs(r.endToEnd.p99)}`,
      formatMs(r.cpuMsPerExecution.postgres),
      formatMs(r.cpuMsPerExecution.nodes),
      String(r.failed),
    ]),
  };
}

async function run(options: BenchOptions): Promise<ScenarioReport> {
  const machine = machineInfo();
  const missing = clusterMissing();
  if (missing) options.log(`  ${missing}: N independent servers on one database, not a cluster`);
  const hostStart = cpuSnapshot();
  const results: SizeResult[] = [];
  for (const nodes of SIZES) results.push(await measureSize(nodes, options));
  const busy = otherWork(hostStart, cpuSnapshot());
  const date = new Date().toISOString();
  const heading =
    `${results[0]!.executions} executions per cluster size after a warm-up, submitted round-robin with ${IN_FLIGHT} ` +
    `requests in flight; nodes --max-concurrent ${MAX_CONCURRENT}, pinned with taskset to CPU i mod ` +
    `${availableParallelism()}; trivial bash agent (bubblewrap); claim = createdAt → ` +
    `${results[0]!.claimedBy}, idle: ${results[0]!.claim.n} executions one at a time (?wait) round-robin. ` +
    `${date.slice(0, 10)}, ${machine.hostname}: ${describeMachine(machine)}. Other work on the host: ` +
    `${busy.cpus.toFixed(2)} CPUs on average.${missing ? ` NOT A CLUSTER: ${missing}.` : ''}`;
  const table = resultTable(results);
  const text = [`cluster — ${heading}`, '', renderText(table)].join('\n');
  const markdown = [
    `_${heading}_`,
    '',
    renderMarkdown(table),
    '',
    'Command: `npm run bench -- cluster`.',
  ].join('\n');
  return {
    text,
    docs: [{ marker: 'cluster', markdown }],
    raw: {
      date,
      machine,
      cluster: missing ? { absent: missing } : { present: true },
      results: results.map((r) => ({
        ...r,
        claim: roundSummary(r.claim),
        endToEnd: roundSummary(r.endToEnd),
      })),
      otherWork: busy,
    },
  };
}

export const cluster: Scenario = {
  name: 'cluster',
  description:
    'executions/s of 1, 2 and 3 server nodes on one PostgreSQL (taskset-pinned), claim latency p50/p99, PostgreSQL and node CPU per execution',
  run,
};
