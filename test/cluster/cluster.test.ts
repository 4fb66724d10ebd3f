/**
 * Issue 15, "Done when": a cluster of `aegis server` processes on one real PostgreSQL, real bubblewrap sandboxes, a
 * trivial bash agent (test/cluster/harness.ts starts and ends everything by pid).
 *
 * - executions submitted round-robin across 3 nodes complete exactly once: one `execution.started` and one
 *   `execution.finished` per execution over all the nodes' ledgers, none lost;
 * - kill -9 of a random node, twice, at random moments: nothing lost (every execution ends; the ones running on the
 *   killed node end `failed` with reason node-lost), nothing run twice (no execution has two starts or two finishes);
 * - a node restarted under a new hostname with the same $AEGIS_HOME recovers its work;
 * - a node paused (SIGSTOP) past its lease cannot overwrite the result of the node that took over.
 *
 * Count: 600 executions by default (a CI-sized run: 2 cores, the whole suite ≤ ~25 min); AEGIS_CLUSTER_FULL=1 runs
 * the issue's 5,000 (measured here: see docs/SCALING.md). AEGIS_CLUSTER_COUNT=N picks any other count.
 * AEGIS_CLUSTER_SEED=N replays the random kill moments and victims of a failed run (the seed is printed).
 *
 * The failover tests need the cluster options (`--node-id`, `--lease`, `--label`: branch `cluster`); on a checkout
 * without them they are skipped with that message. The round-robin test runs on any checkout.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { pollUntil } from '../support/poll.ts';
import { Cluster, clusterMissing, type ExecutionView, type LedgerEntry, TERMINAL } from './harness.ts';

const FULL = process.env['AEGIS_CLUSTER_FULL'] === '1';
const COUNT = Number(process.env['AEGIS_CLUSTER_COUNT'] ?? (FULL ? 5000 : 600));
/** Requests in flight at once while submitting. */
const SUBMIT_CONCURRENCY = 16;
/**
 * The nodes' --lease. 2 s was tried first: on this 2-core machine under the other engineers' load a live node's
 * heartbeats were measured up to 3.5 s apart, so live nodes were declared dead (correctly, for that lease) and their
 * work failed node-lost. The server's default (10 s) is what a deployment runs; failover waits for it.
 */
const LEASE = '10s';

// A tiny seeded PRNG (mulberry32): the kill moments and victims of a run can be replayed.
const SEED = Number(process.env['AEGIS_CLUSTER_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
let rngState = SEED;
function random(): number {
  rngState = (rngState + 0x6d2b79f5) | 0;
  let t = rngState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;

const temps: string[] = [];

/** Writes an agent directory; returns its agent.yaml. */
function agentDir(name: string, script: string, extraSpec = ''): string {
  const dir = mkdtempSync(join(tmpdir(), `aegis-cluster-agent-${name}-`));
  temps.push(dir);
  writeFileSync(
    join(dir, 'agent.yaml'),
    `apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: ${name} }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n${extraSpec}`,
  );
  writeFileSync(join(dir, 'main.sh'), script);
  return join(dir, 'agent.yaml');
}

/** Echoes its input: `{"n": 7}` → output `{"n": 7}`. */
const ECHO = 'read -r input\necho "$input"\n';
/** Sleeps as many seconds as its input says, then says so. */
const SLEEPER =
  'read -r input\nseconds=$(echo "$input" | tr -dc 0-9)\nsleep "$seconds"\necho "{\\"slept\\": $seconds}"\n';

interface Submitted {
  /** Execution ids by submission number n (more than one only for an ambiguous submission, retried). */
  readonly ids: Map<number, string[]>;
  /** Submissions whose answer was lost (the node died mid-request): retried, so they may exist twice. */
  readonly ambiguous: Set<number>;
}

/**
 * Submits `count` executions of `agent` round-robin over the nodes running at the time, `SUBMIT_CONCURRENCY` at
 * once; input `{"n": i}`. A request whose node died under it is retried on the next node (and marked ambiguous).
 */
async function submitRoundRobin(
  cluster: Cluster,
  agent: string,
  count: number,
  into: Submitted = { ids: new Map(), ambiguous: new Set() },
): Promise<Submitted> {
  const { ids, ambiguous } = into;
  let next = 0;
  let turn = 0;
  const worker = async () => {
    while (next < count) {
      const n = next++;
      for (let attempt = 0; ; attempt++) {
        const nodes = cluster.running();
        const node = nodes[turn++ % nodes.length]!;
        try {
          const created = await cluster.api(node, 'POST', '/v1/executions', { agent, input: { n } });
          if (created.status === 202 || created.status === 200) {
            const list = ids.get(n) ?? [];
            list.push(created.json['id'] as string);
            ids.set(n, list);
            break;
          }
          // 503 from a node that is stopping: try the next one (nothing was created).
          if (created.status !== 503 || attempt > 20) {
            throw new Error(`POST /v1/executions on ${node.name}: ${created.status} ${created.text}`);
          }
        } catch (error) {
          if (error instanceof Error && error.message.startsWith('POST')) throw error;
          if (attempt > 20) throw error;
          ambiguous.add(n);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: SUBMIT_CONCURRENCY }, worker));
  return into;
}

/** Polls through the running nodes until every id is terminal; returns the final records by id. */
async function allTerminal(
  cluster: Cluster,
  ids: ReadonlySet<string>,
  deadlineMs: number,
  agent: string,
): Promise<Map<string, ExecutionView>> {
  let records = new Map<string, ExecutionView>();
  await pollUntil(
    `all ${ids.size} executions of ${agent} to end`,
    async () => {
      const node = cluster.running()[0]!;
      const all = await cluster.listExecutions(node);
      records = new Map(all.filter((r) => ids.has(r.id)).map((r) => [r.id, r]));
      return [...ids].every((id) => TERMINAL.has(records.get(id)?.status ?? '')) ? true : undefined;
    },
    deadlineMs,
    500,
  );
  return records;
}

interface LedgerCounts {
  started: number;
  finished: number;
  recovered: number;
  finishedStatuses: string[];
}

function countLedger(entries: readonly LedgerEntry[], ids: ReadonlySet<string>): Map<string, LedgerCounts> {
  const counts = new Map<string, LedgerCounts>();
  for (const id of ids) counts.set(id, { started: 0, finished: 0, recovered: 0, finishedStatuses: [] });
  for (const entry of entries) {
    const c = entry.execution === null ? undefined : counts.get(entry.execution);
    if (!c) continue;
    if (entry.kind === 'execution.started') c.started += 1;
    if (entry.kind === 'execution.finished') {
      c.finished += 1;
      c.finishedStatuses.push(String(entry.data['status']));
    }
    if (entry.kind === 'execution.recovered') c.recovered += 1;
  }
  return counts;
}

/** On a failure: what each node logged and each ledger holds about these executions (to stderr). */
async function explain(cluster: Cluster, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  const wanted = ids.slice(0, 5);
  const entries = await cluster.ledgerEntries().catch(() => []);
  for (const id of wanted) {
    process.stderr.write(`# cluster: --- ${id}\n`);
    for (const node of cluster.nodes) {
      for (const line of node.log().split('\n')) {
        if (line.includes(id)) process.stderr.write(`#   ${node.name} log: ${line.slice(0, 600)}\n`);
      }
    }
    for (const entry of entries) {
      if (entry.execution === id) {
        process.stderr.write(
          `#   ${entry.node} ledger: ${entry.ts} ${entry.kind} ${JSON.stringify(entry.data)}\n`,
        );
      }
    }
  }
}

function note(t: TestContext, text: string): void {
  t.diagnostic(text);
  process.stderr.write(`# cluster: ${text}\n`);
}

/** Per test and hook too: `npm test` passes --test-timeout=120000, which a test without its own timeout gets. */
const TIMEOUT_MS = FULL ? 3_600_000 : 600_000;

describe('a 3-node cluster on one PostgreSQL', { timeout: FULL ? 3_600_000 : 900_000 }, () => {
  let cluster: Cluster;
  const missing = clusterMissing();

  before(
    async () => {
      process.stderr.write(
        `# cluster: seed ${SEED} (AEGIS_CLUSTER_SEED=${SEED} replays it), ${COUNT} executions\n`,
      );
      cluster = await Cluster.start({ servers: 3, lease: LEASE, maxConcurrent: 2 });
      await cluster.deploy(agentDir('echo', ECHO));
      await cluster.deploy(agentDir('sleeper', SLEEPER));
    },
    { timeout: TIMEOUT_MS },
  );

  after(
    async () => {
      await cluster?.close();
      for (const dir of temps) rmSync(dir, { recursive: true, force: true });
    },
    { timeout: TIMEOUT_MS },
  );

  it(`${COUNT} executions submitted round-robin across 3 nodes complete exactly once`, {
    timeout: TIMEOUT_MS,
  }, async (t) => {
    const started = performance.now();
    const submitted = await submitRoundRobin(cluster, 'echo', COUNT);
    const submitMs = performance.now() - started;
    assert.equal(submitted.ambiguous.size, 0, 'no node died: every submission has one answer');
    const ids = new Set([...submitted.ids.values()].flat());
    assert.equal(ids.size, COUNT, 'one execution per submission');
    const records = await allTerminal(cluster, ids, Math.max(120_000, COUNT * 400), 'echo');
    const wallMs = performance.now() - started;
    note(
      t,
      `${COUNT} executions: submitted in ${(submitMs / 1000).toFixed(1)} s, all ended after ${(wallMs / 1000).toFixed(1)} s (${(COUNT / (wallMs / 1000)).toFixed(1)} executions/s over 3 nodes)`,
    );
    const notOk = [...records.values()].filter((r) => r.status !== 'succeeded');
    await explain(
      cluster,
      notOk.map((r) => r.id),
    );
    assert.deepEqual(
      notOk.map((r) => `${r.id} ${r.status} ${r.reason}`),
      [],
      'every execution succeeded',
    );
    for (const [n, [id]] of submitted.ids) {
      assert.deepEqual(records.get(id!)!.output, { n }, `execution ${id} echoed its own input`);
    }
    // Exactly-once state transitions, as the ledgers of all the nodes tell them.
    const counts = countLedger(await cluster.ledgerEntries(), ids);
    const wrong = [...counts].filter(([, c]) => c.started !== 1 || c.finished !== 1);
    assert.deepEqual(
      wrong.slice(0, 10).map(([id, c]) => `${id}: ${JSON.stringify(c)}`),
      [],
      `${wrong.length} executions without exactly one execution.started and one execution.finished`,
    );
    // Round-robin submission spread the work: with shared claiming any node may run any of it, so only say who did.
    const byNode = new Map<string, number>();
    for (const node of (await cluster.holders(ids)).values()) {
      byNode.set(node ?? '(none)', (byNode.get(node ?? '(none)') ?? 0) + 1);
    }
    note(t, `ran on: ${[...byNode].map(([node, n]) => `${node} ${n}`).join(', ')}`);
  });

  it('kill -9 of a random node, twice, at random moments: nothing lost, nothing run twice', {
    skip: missing,
    timeout: TIMEOUT_MS,
  }, async (t) => {
    const count = Math.max(60, Math.floor(COUNT / 2));
    const killAt = [0.1 + random() * 0.3, 0.5 + random() * 0.3].map((f) => Math.floor(f * count));
    note(t, `kill -9 after ${killAt.join(' and ')} of ${count} executions ended (seed ${SEED})`);
    const live: Submitted = { ids: new Map(), ambiguous: new Set() };
    const submitting = submitRoundRobin(cluster, 'echo', count, live);
    const killed: { node: string; nodeId: string | undefined; running: string[] }[] = [];
    const victim = async (threshold: number) => {
      await pollUntil(
        `${threshold} executions to end`,
        async () => {
          const mine = new Set([...live.ids.values()].flat());
          const all = await cluster.listExecutions(cluster.running()[0]!);
          const ended = all.filter((r) => mine.has(r.id) && TERMINAL.has(r.status));
          return ended.length >= threshold ? true : undefined;
        },
        600_000,
        250,
      );
      const node = pick(cluster.running());
      await node.kill9();
      // What the store says ran on it at that moment (asked at once: the others declare it dead only after its
      // lease expires). Its sandboxes died with it: each of these must end failed node-lost.
      const running = (
        await cluster.sql<{ id: string }>(
          "SELECT id FROM executions WHERE node_id = $1 AND status = 'running'",
          [node.nodeId],
        )
      ).map((row) => row.id);
      killed.push({ node: node.name, nodeId: node.nodeId, running });
      note(t, `killed ${node.name} (${running.length} executions running on it)`);
      // Failover, not restart recovery: the others settle everything it held (running: failed; claimed but not
      // started: back to the queue) while it is down.
      await pollUntil(
        `the executions held by killed ${node.name} to be taken over by the other nodes`,
        async () => {
          const held = await cluster.sql(
            "SELECT id FROM executions WHERE node_id = $1 AND status IN ('queued', 'running')",
            [node.nodeId],
          );
          return held.length === 0 ? true : undefined;
        },
        60_000,
        200,
      );
      await node.start();
    };
    await victim(killAt[0]!);
    await victim(killAt[1]!);
    const submitted = await submitting;
    const ids = new Set([...submitted.ids.values()].flat());
    const records = await allTerminal(cluster, ids, Math.max(180_000, count * 500), 'echo');

    // Nothing lost: every submission has an execution, every execution ended.
    for (const [n, list] of submitted.ids) {
      assert.ok(list.length >= 1, `submission ${n} has an execution`);
      if (list.length > 1) assert.ok(submitted.ambiguous.has(n), `submission ${n} created twice, unasked`);
    }
    // The ones that did not succeed ran on a killed node and were ended by another one: failed, node-lost, naming
    // the killed node; and everything running on a killed node when it died ended that way.
    const killedIds = killed.map((k) => k.nodeId);
    for (const record of records.values()) {
      if (record.status === 'succeeded') continue;
      assert.equal(record.status, 'failed', `${record.id}: ${record.status} ${record.reason}`);
      assert.match(String(record.reason), /^node-lost: node /, `${record.id} failed for another reason`);
      assert.ok(
        killedIds.some((id) => String(record.reason).startsWith(`node-lost: node ${id} `)),
        `${record.id} failed node-lost but names no killed node: ${record.reason}`,
      );
    }
    const killedRunning = new Set(killed.flatMap((k) => k.running));
    for (const id of killedRunning) {
      const record = records.get(id);
      assert.equal(record?.status, 'failed', `${id} ran on a killed node, ended ${record?.status}`);
    }
    // Nothing run twice: no execution has two starts or two finishes over all the ledgers. An export holds signed
    // entries only: a node restarted at once after its kill -9 signs its previous life's last entries once the
    // ledger's tail grace (10 s) has passed, so the ledgers are read until they hold every succeeded execution.
    const unrecordedIn = (counts: ReturnType<typeof countLedger>) =>
      [...records.values()].filter((r) => {
        const c = counts.get(r.id)!;
        return r.status === 'succeeded' && (c.started !== 1 || c.finished + c.recovered < 1);
      });
    let counts = countLedger(await cluster.ledgerEntries(), ids);
    await pollUntil(
      'the ledgers to hold every succeeded execution',
      async () => {
        counts = countLedger(await cluster.ledgerEntries(), ids);
        return unrecordedIn(counts).length === 0 ? true : undefined;
      },
      60_000,
      1000,
    ).catch(() => {});
    const twice = [...counts].filter(([, c]) => c.started > 1 || c.finished > 1);
    assert.deepEqual(
      twice.map(([id, c]) => `${id}: ${JSON.stringify(c)}`),
      [],
      'executions started or finished twice',
    );
    // Every succeeded execution has its start and its finish recorded (a killed node's unflushed tail is
    // reconciled as execution.recovered when it comes back).
    const unrecorded = unrecordedIn(counts);
    assert.deepEqual(
      unrecorded.map((r) => `${r.id}: ${JSON.stringify(counts.get(r.id))}`),
      [],
      'succeeded executions missing from the ledgers',
    );
    note(
      t,
      `${records.size} executions: ${[...records.values()].filter((r) => r.status === 'succeeded').length} succeeded, ${killedRunning.size} were running on killed nodes`,
    );
  });

  it('a node restarted under a new hostname with the same $AEGIS_HOME recovers its work', {
    skip: missing,
    timeout: TIMEOUT_MS,
  }, async (t) => {
    // A node of its own with a long lease: what ends its work below is its restart, not the others' failover.
    // No --node-id: the node keeps the id it made itself in its $AEGIS_HOME — that is what survives the restart.
    const node = await cluster.addNode({ name: 'n4', nodeId: undefined, lease: '60s', labels: ['name=n4'] });
    const firstId = node.nodeId;
    assert.ok(firstId, `n4 names its node id when ready:\n${node.log()}`);
    await cluster.deploy(agentDir('pinned', SLEEPER, '  placement:\n    labels: { name: n4 }\n'));
    const long: string[] = [];
    for (let i = 0; i < 2; i++) {
      long.push(
        (await cluster.api(node, 'POST', '/v1/executions', { agent: 'pinned', input: 300 })).json[
          'id'
        ] as string,
      );
    }
    await pollUntil('both long executions to run on n4', async () => {
      for (const id of long) {
        const record = (await cluster.api(node, 'GET', `/v1/executions/${id}`)).json as ExecutionView;
        if (record.status !== 'running') return undefined;
        assert.equal(await cluster.holder(id), node.nodeId, 'placement put it on n4');
      }
      return true;
    });
    const queued = (await cluster.api(node, 'POST', '/v1/executions', { agent: 'pinned', input: 0 })).json[
      'id'
    ] as string;
    assert.equal(
      (await cluster.api(node, 'GET', `/v1/executions/${queued}`)).json['status'],
      'queued',
      'n4 is full (--max-concurrent 2): the third waits',
    );

    await node.kill9();
    const oldHostname = node.hostname;
    await node.start({ hostname: 'aegis-n4-rescheduled' });
    note(t, `n4 restarted as ${node.hostname} (was ${oldHostname}), same home ${node.home}`);
    assert.equal(node.nodeId, firstId, 'the same node id after the restart (kept in its home)');

    // Its running work ended by its own restart (well within the 60 s lease), its queued work run by it.
    const deadlineMs = 30_000;
    for (const id of long) {
      const record = await pollUntil(
        `${id} to end after n4's restart`,
        async () => {
          const r = (await cluster.api(node, 'GET', `/v1/executions/${id}`)).json as ExecutionView;
          return TERMINAL.has(r.status) ? r : undefined;
        },
        deadlineMs,
      );
      assert.equal(record.status, 'failed');
      // Its restart's new epoch made them orphans (not lease expiry: 60 s): settled by n4 itself as its previous
      // life's work, or — whoever sweeps first — by another node, naming n4.
      assert.match(
        String(record.reason),
        new RegExp(`^(orchestrator-restarted|node-lost: node ${firstId} )`),
      );
    }
    const ran = (await cluster.api(node, 'GET', `/v1/executions/${queued}?wait=30s`)).json as ExecutionView;
    assert.equal(ran.status, 'succeeded', JSON.stringify(ran));
    assert.equal(await cluster.holder(queued), node.nodeId, 'the queued execution ran on n4 (placement)');

    // One node n4 in the registry, now under its new hostname, at a newer epoch.
    const registry = await cluster.sql<{ id: string; host: string; state: string; epoch: string }>(
      'SELECT id, host, state, epoch FROM nodes WHERE id = $1',
      [node.nodeId],
    );
    assert.equal(registry.length, 1, `one registry row for n4: ${JSON.stringify(registry)}`);
    assert.equal(registry[0]!.host, 'aegis-n4-rescheduled');
    assert.equal(registry[0]!.state, 'live');
    assert.equal(Number(registry[0]!.epoch), 2, 'its second life: epoch 2');
    // The same through the API, once this checkout has GET /v1/nodes (branch `cluster2`).
    const nodes = await cluster.api(node, 'GET', '/v1/nodes');
    if (nodes.status === 404 && /no route GET \/v1\/nodes/.test(nodes.text)) {
      note(t, 'GET /v1/nodes is not on this checkout: registry checked in the store only');
    } else {
      assert.equal(nodes.status, 200, nodes.text);
      const entries = (nodes.json['nodes'] as Record<string, unknown>[]).filter(
        (n) => n['id'] === node.nodeId,
      );
      assert.equal(entries.length, 1, `one registry entry for n4: ${nodes.text}`);
      assert.equal(entries[0]!['hostname'] ?? entries[0]!['host'], 'aegis-n4-rescheduled');
    }
    await node.stop();
  });

  it('a node paused (SIGSTOP) past its lease cannot overwrite the result of the node that took over', {
    skip: missing,
    timeout: TIMEOUT_MS,
  }, async (t) => {
    const first = cluster.running()[0]!;
    // Long enough to still run when the lease expires, short enough to end while the node is paused.
    const id = (await cluster.api(first, 'POST', '/v1/executions', { agent: 'sleeper', input: 5 })).json[
      'id'
    ] as string;
    const running = await pollUntil('the sleeper to run', async () => {
      const r = (await cluster.api(first, 'GET', `/v1/executions/${id}`)).json as ExecutionView;
      return r.status === 'running' ? r : undefined;
    });
    const holderId = await cluster.holder(running.id);
    const holder = cluster.nodes.find((n) => n.nodeId === holderId);
    assert.ok(holder, `the store names a node of this cluster as its holder: ${holderId}`);
    holder.pause();
    note(t, `paused ${holder.name} (pid ${holder.pid}) running ${id}`);
    const other = cluster.running()[0]!;
    const taken = await pollUntil(
      `another node to take ${id} over from paused ${holder.name}`,
      async () => {
        const r = (await cluster.api(other, 'GET', `/v1/executions/${id}`)).json as ExecutionView;
        return TERMINAL.has(r.status) ? r : undefined;
      },
      60_000,
      100,
    );
    assert.equal(taken.status, 'failed');
    assert.match(String(taken.reason), /node-lost/);

    holder.resume();
    // Its sandbox went on while it was stopped and has ended: its late write must be refused, and say so.
    const fenced = /fenc|lease (was )?lost|lost (its|the) lease|stale (epoch|lease)/i;
    await pollUntil(
      `resumed ${holder.name} to report its late write of ${id} refused`,
      () =>
        holder
          .log()
          .split('\n')
          .some((line) => line.includes(id) && fenced.test(line)),
      60_000,
      100,
    );
    for (const node of cluster.running()) {
      const final = (await cluster.api(node, 'GET', `/v1/executions/${id}`)).json as ExecutionView;
      assert.equal(final.status, taken.status, `${node.name} shows the taker's status`);
      assert.equal(final.reason, taken.reason, `${node.name} shows the taker's reason`);
      assert.equal(final.finishedAt, taken.finishedAt, `${node.name} shows the taker's finish`);
    }
    const entries = (await cluster.ledgerEntries()).filter((e) => e.execution === id);
    const claims = entries.filter((e) => e.kind === 'execution.finished' && e.data['status'] === 'succeeded');
    assert.deepEqual(
      claims.map((e) => `${e.node}: ${JSON.stringify(e.data)}`),
      [],
      'no ledger says the fenced run succeeded',
    );
  });
});
