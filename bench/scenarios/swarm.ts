/**
 * Scenario `swarm`: spawn latency of a swarm child (issue 16, ADR 0140) on a real `aegis server` child process.
 * One parent execution (a Python code agent) calls `aegis.swarm.spawn(child, wait=True)` N times in a row; each
 * child prints one line at once and exits. Measured per spawn, on the one host clock:
 *
 * - spawn → child first line: from just before the SDK call in the parent to the timestamp the server gave the
 *   child's first log line (GET /v1/executions/{child}/logs) — policy checks, the ceiling, the queue, a claim, a
 *   sandbox start and the first write;
 * - spawn → child ended (wait): the SDK call's whole round trip, until the server saw the child end.
 *
 * The first `warmup` spawns are not counted. Nothing is asserted: a run fails only when a spawn fails.
 * Standalone: `npm run bench -- swarm` (`--quick` for a smoke check).
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AegisClient, isTerminalStatus } from '../../sdk/index.ts';
import type { BenchOptions, Scenario, ScenarioReport } from '../lib/scenario.ts';
import { formatMs, summarize } from '../lib/stats.ts';
import { renderMarkdown, renderText, type Table } from '../lib/table.ts';
import { type Server, startServer } from './sandboxes.ts';

const agentYaml = (name: string, extra: string) => `apiVersion: aegis.dev/v1
kind: Agent
metadata: { name: ${name} }
spec:
  runtime: { language: python, entrypoint: main.py }
  security:
    network: { allow: [] }
    resources: { timeout: 1h }
${extra}`;

const PARENT_PY = `import time, aegis
n = aegis.input()["n"]
out = []
for _ in range(n):
    t0 = time.time()
    child = aegis.swarm.spawn("bench-swarm-child", None, wait=True, timeout=300)
    out.append({"id": child["id"], "t0": t0 * 1000, "t1": time.time() * 1000, "status": child["status"]})
aegis.output(out)
`;

export const swarm: Scenario = {
  name: 'swarm',
  description: 'swarm: aegis.swarm.spawn → child first line, and spawn → child ended, p50/p99',
  async run(options: BenchOptions): Promise<ScenarioReport> {
    const { log } = options;
    const runs = options.quick ? Math.min(options.runs, 10) : Math.min(options.runs, 200);
    const warmup = options.quick ? Math.min(options.warmup, 2) : options.warmup;
    const workDir = mkdtempSync(join(tmpdir(), 'aegis-bench-swarm-'));
    chmodSync(workDir, 0o755);
    mkdirSync(join(workDir, 'home'), { mode: 0o700 });
    const total = runs + warmup;
    const agents = {
      parent: [
        agentYaml(
          'bench-swarm-parent',
          `  swarm: { canSpawn: [bench-swarm-child], maxChildren: ${total}, maxDepth: 1 }\n`,
        ),
        PARENT_PY,
      ],
      child: [agentYaml('bench-swarm-child', ''), 'print("up", flush=True)\n'],
    } as const;
    let server: Server | undefined;
    try {
      server = await startServer(join(workDir, 'home'), join(workDir, 'bundles'));
      const client = new AegisClient({ server: server.url, apiKey: server.adminKey, retry: { attempts: 1 } });
      for (const [name, [yaml, main]] of Object.entries(agents)) {
        const dir = join(workDir, name);
        mkdirSync(dir);
        writeFileSync(join(dir, 'agent.yaml'), yaml);
        writeFileSync(join(dir, 'main.py'), main);
        await client.deployAgent(dir);
      }
      log(`  ${total} spawns in one parent…`);
      let parent = await client.createExecution({ agent: 'bench-swarm-parent', input: { n: total } });
      while (!isTerminalStatus(parent.status)) parent = await client.getExecution(parent.id, { wait: '5m' });
      if (parent.status !== 'succeeded') throw new Error(`parent: ${JSON.stringify(parent)}`);
      const spawns = (parent.output as { id: string; t0: number; t1: number; status: string }[]).slice(
        warmup,
      );
      const firstLine: number[] = [];
      const ended: number[] = [];
      for (const s of spawns) {
        if (s.status !== 'succeeded') throw new Error(`child ${s.id}: ${s.status}`);
        const line = (await client.logs(s.id)).lines.find((l) => l.stream === 'stdout');
        if (line === undefined) throw new Error(`child ${s.id}: no output line`);
        firstLine.push(Date.parse(line.ts) - s.t0);
        ended.push(s.t1 - s.t0);
      }
      const rows = [
        ['spawn → child first line', summarize(firstLine)],
        ['spawn → child ended (wait)', summarize(ended)],
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
        'One parent execution spawns its children one after another (`aegis.swarm.spawn(..., wait=True)` through ' +
        'the in-sandbox API), bubblewrap runtime, SQLite store; the child prints one line. Command: ' +
        '`npm run bench -- swarm`.';
      return {
        text: `${renderText(table)}\n`,
        docs: [{ marker: 'swarm', markdown: `${renderMarkdown(table)}\n\n${note}\n` }],
        raw: { runs, warmup, firstLine, ended },
      };
    } finally {
      await server?.stop();
      rmSync(workDir, { recursive: true, force: true });
    }
  },
};
