/**
 * Scenario `swarm-bus`: the swarm bus and locks (issue 16, ADR 0144) through the in-sandbox API of a real
 * `aegis server` child process (bubblewrap runtime, SQLite store). Measured on the one host clock:
 *
 * - publish → deliver: one Python agent; a thread long-polls `aegis.swarm.subscribe` while the main thread
 *   publishes N messages one after another (20 ms apart, under the default 50/s rate); per message, from just
 *   before the publish call to the moment the subscriber's long-poll returned it.
 * - lock handoff: two agents contend for one global lock N times each (hold 5 ms, release, ask again — FIFO
 *   alternates them); per handoff, from just before the holder's release call to the moment the waiting agent's
 *   lock call returned with the lease. Only acquisitions asked for before that release count (a real wait).
 *
 * Nothing is asserted: a run fails only when a call fails. `npm run bench -- swarm-bus` (`--quick` for a smoke check).
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AegisClient, isTerminalStatus } from '../../sdk/index.ts';
import type { BenchOptions, Scenario, ScenarioReport } from '../lib/scenario.ts';
import { formatMs, summarize } from '../lib/stats.ts';
import { renderMarkdown, renderText, type Table } from '../lib/table.ts';
import { type Server, startServer } from './sandboxes.ts';

const agentYaml = (name: string) => `apiVersion: aegis.dev/v1
kind: Agent
metadata: { name: ${name} }
spec:
  runtime: { language: python, entrypoint: main.py }
  security:
    network: { allow: [] }
    resources: { timeout: 1h }
  swarm: { locks: { global: true } }
`;

const BUS_PY = `import threading, time, aegis
n = aegis.input()["n"]
got = {}
def subscriber():
    cursor = 0
    while len(got) < n:
        r = aegis.swarm.subscribe("bench", after=cursor, timeout=30)
        now = time.time() * 1000
        for m in r["messages"]:
            cursor = max(cursor, m["id"])
            got.setdefault(m["message"]["i"], now - m["message"]["t0"])
sub = threading.Thread(target=subscriber)
sub.start()
time.sleep(0.3)  # the subscriber is long-polling
for i in range(n):
    aegis.swarm.publish("bench", {"i": i, "t0": time.time() * 1000})
    time.sleep(0.02)
sub.join(120)
aegis.output([got[i] for i in range(n) if i in got])
`;

const LOCKER_PY = `import time, aegis
n = aegis.input()["n"]
out = []
for _ in range(n):
    asked = time.time() * 1000
    lease = aegis.swarm.lock("bench-handoff", ttl=30, wait=60, is_global=True)
    got = time.time() * 1000
    time.sleep(0.005)
    released = time.time() * 1000
    lease.release()
    out.append({"asked": asked, "got": got, "released": released})
aegis.output(out)
`;

interface Turn {
  asked: number;
  got: number;
  released: number;
}

/** Release → next acquisition by the other agent, counted only when that agent was already waiting. */
export function handoffs(a: readonly Turn[], b: readonly Turn[]): number[] {
  const all = [...a.map((t) => ({ ...t, who: 'a' })), ...b.map((t) => ({ ...t, who: 'b' }))].sort(
    (x, y) => x.got - y.got,
  );
  const out: number[] = [];
  for (let i = 1; i < all.length; i++) {
    const [prev, next] = [all[i - 1]!, all[i]!];
    if (prev.who !== next.who && next.asked < prev.released) out.push(next.got - prev.released);
  }
  return out;
}

export const swarmBus: Scenario = {
  name: 'swarm-bus',
  description: 'swarm bus publish → deliver (long-poll) and lock handoff (release → waiter holds), p50/p99',
  async run(options: BenchOptions): Promise<ScenarioReport> {
    const { log } = options;
    const n = options.quick ? Math.min(options.runs, 20) : Math.min(options.runs, 200);
    const workDir = mkdtempSync(join(tmpdir(), 'aegis-bench-swarm-bus-'));
    chmodSync(workDir, 0o755);
    mkdirSync(join(workDir, 'home'), { mode: 0o700 });
    let server: Server | undefined;
    try {
      server = await startServer(join(workDir, 'home'), join(workDir, 'bundles'));
      const client = new AegisClient({ server: server.url, apiKey: server.adminKey, retry: { attempts: 1 } });
      for (const [name, main] of [
        ['bench-bus', BUS_PY],
        ['bench-locker', LOCKER_PY],
      ] as const) {
        const dir = join(workDir, name);
        mkdirSync(dir);
        writeFileSync(join(dir, 'agent.yaml'), agentYaml(name));
        writeFileSync(join(dir, 'main.py'), main);
        await client.deployAgent(dir);
      }
      const finish = async (id: string) => {
        let e = await client.getExecution(id, { wait: '5m' });
        while (!isTerminalStatus(e.status)) e = await client.getExecution(id, { wait: '5m' });
        if (e.status !== 'succeeded') throw new Error(`${id}: ${JSON.stringify(e)}`);
        return e.output;
      };
      log(`  ${n} messages, publish → deliver…`);
      const bus = await client.createExecution({ agent: 'bench-bus', input: { n } });
      const delivered = (await finish(bus.id)) as number[];
      if (delivered.length !== n) throw new Error(`delivered ${delivered.length} of ${n} messages`);
      log(`  2 × ${n} lock turns…`);
      const lockers = await Promise.all(
        [0, 1].map(() => client.createExecution({ agent: 'bench-locker', input: { n } })),
      );
      const [a, b] = (await Promise.all(lockers.map((e) => finish(e.id)))) as [Turn[], Turn[]];
      const handoff = handoffs(a, b);
      const rows = [
        ['bus publish → deliver (long-poll)', summarize(delivered)],
        ['lock handoff (release → waiter holds)', summarize(handoff)],
      ] as const;
      const table: Table = {
        headers: ['span', 'n', 'p50 ms', 'p99 ms', 'mean ms'],
        rows: rows.map(([span, s]) => [
          span,
          String(s.n),
          formatMs(s.p50),
          formatMs(s.p99),
          formatMs(s.mean),
        ]),
      };
      const note =
        'Through the in-sandbox API (Python SDK, bubblewrap runtime, SQLite store, one server): a subscriber ' +
        'thread long-polls while the same agent publishes; two agents alternate on one global lock. Command: ' +
        '`npm run bench -- swarm-bus`.';
      return {
        text: `${renderText(table)}\n`,
        docs: [{ marker: 'swarm-bus', markdown: `${renderMarkdown(table)}\n\n${note}\n` }],
        raw: { n, delivered, handoff },
      };
    } finally {
      await server?.stop();
      rmSync(workDir, { recursive: true, force: true });
    }
  },
};
