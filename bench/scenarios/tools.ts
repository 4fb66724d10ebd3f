/**
 * Scenario `tools`: tool-call overhead of the tool gateway (issue 14, app/tools.ts) through a real `aegis server`
 * child process into one live sandbox, over REST with one keep-alive client:
 *
 * - `cmd.run` of `true`: POST /v1/sandboxes/{id}/tools/cmd.run — grant, argument schema, allow-list, exec in the
 *   sandbox, `tool.call` ledger entry, result;
 * - `fs.read` of a 64-byte file: POST /v1/sandboxes/{id}/tools/fs.read — path roots, file read over the live session;
 * - beside them, the plain exec round trip of `true` in the same sandbox (POST /v1/sandboxes/{id}/commands, waited
 *   to its exit): what `cmd.run` costs on top of an exec is the gateway (policy + ledger entry).
 *
 * Variants interleave call by call, so all see the same machine. Nothing is asserted: a run fails only when a call
 * fails. The in-sandbox path (aegis.tools.call → 127.0.0.1:3129 → gateway) adds the in-sandbox API hop and is not in
 * these numbers. Standalone: `npm run bench -- tools` (`--quick` for a smoke check).
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AegisClient } from '../../sdk/index.ts';
import type { BenchOptions, Scenario, ScenarioReport } from '../lib/scenario.ts';
import { formatMs, type Summary, summarize } from '../lib/stats.ts';
import { renderMarkdown, renderText, type Table } from '../lib/table.ts';
import { type Server, startServer } from './sandboxes.ts';

const AGENT_YAML = `apiVersion: aegis.dev/v1
kind: Agent
metadata: { name: bench-tools }
spec:
  runtime: { language: bash, entrypoint: main.sh }
  security:
    network: { allow: [] }
    resources: { timeout: 1h }
  tools:
    - fs.read
    - { name: cmd.run, allow: ["true"] }
`;

const VARIANTS = {
  exec: 'exec round trip (`true`)',
  cmd: 'tool cmd.run (`true`)',
  read: 'tool fs.read (64 B file)',
} as const;

export const tools: Scenario = {
  name: 'tools',
  description: 'tool gateway: cmd.run and fs.read over REST into a live sandbox, beside a plain exec',
  async run(options: BenchOptions): Promise<ScenarioReport> {
    const { log } = options;
    const runs = options.quick ? Math.min(options.runs, 20) : options.runs;
    const workDir = mkdtempSync(join(tmpdir(), 'aegis-bench-tools-'));
    chmodSync(workDir, 0o755);
    mkdirSync(join(workDir, 'home'), { mode: 0o700 });
    const agentDir = join(workDir, 'agent');
    mkdirSync(agentDir);
    writeFileSync(join(agentDir, 'agent.yaml'), AGENT_YAML);
    writeFileSync(join(agentDir, 'main.sh'), 'echo unused\n');
    let server: Server | undefined;
    try {
      server = await startServer(join(workDir, 'home'), join(workDir, 'bundles'));
      const { url, adminKey } = server;
      const call = async (method: string, path: string, body?: unknown) => {
        const response = await fetch(`${url}${path}`, {
          method,
          headers: {
            authorization: `Bearer ${adminKey}`,
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
        const text = await response.text();
        if (!response.ok) throw new Error(`${method} ${path}: HTTP ${response.status} ${text}`);
        return JSON.parse(text) as Record<string, unknown>;
      };
      await new AegisClient({ server: url, apiKey: adminKey, retry: { attempts: 1 } }).deployAgent(agentDir);
      const sandbox = (await call('POST', '/v1/sandboxes', { agent: 'bench-tools', timeout: '1h' }))[
        'id'
      ] as string;
      await call('POST', `/v1/sandboxes/${sandbox}/commands`, {
        cmd: ['sh', '-c', 'head -c 64 /dev/zero | tr "\\0" x > /workspace/small.txt'],
      });

      const exitOf = (reply: Record<string, unknown>) =>
        ((reply['result'] ?? reply['command']) as { exitCode: number | null }).exitCode;
      const steps: Record<keyof typeof VARIANTS, () => Promise<void>> = {
        exec: async () => {
          const reply = await call('POST', `/v1/sandboxes/${sandbox}/commands`, { cmd: ['true'] });
          if (exitOf(reply) !== 0) throw new Error(`exec true: ${JSON.stringify(reply)}`);
        },
        cmd: async () => {
          const reply = await call('POST', `/v1/sandboxes/${sandbox}/tools/cmd.run`, {
            arguments: { argv: ['true'] },
          });
          if (exitOf(reply) !== 0) throw new Error(`cmd.run true: ${JSON.stringify(reply)}`);
        },
        read: async () => {
          const reply = await call('POST', `/v1/sandboxes/${sandbox}/tools/fs.read`, {
            arguments: { path: 'small.txt' },
          });
          const content = (reply['result'] as { content: string }).content;
          if (content.length !== 64) throw new Error(`fs.read: ${JSON.stringify(reply)}`);
        },
      };
      const samples: Record<keyof typeof VARIANTS, number[]> = { exec: [], cmd: [], read: [] };
      const order = Object.keys(VARIANTS) as (keyof typeof VARIANTS)[];
      for (let i = 0; i < options.warmup + runs; i++) {
        // Rotate which variant goes first so none always follows the same one.
        for (let k = 0; k < order.length; k++) {
          const variant = order[(i + k) % order.length] as keyof typeof VARIANTS;
          const t0 = performance.now();
          await steps[variant]();
          if (i >= options.warmup) samples[variant].push(performance.now() - t0);
        }
        if (i >= options.warmup && (i - options.warmup) % 25 === 24)
          log(`  ${i - options.warmup + 1}/${runs}`);
      }
      await call('DELETE', `/v1/sandboxes/${sandbox}`);

      const summaries = Object.fromEntries(order.map((v) => [v, summarize(samples[v])])) as Record<
        keyof typeof VARIANTS,
        Summary
      >;
      const table: Table = {
        headers: ['variant', 'n', 'p50 ms', 'p99 ms', 'mean ms', 'p50 − exec'],
        rows: order.map((v) => [
          VARIANTS[v],
          String(summaries[v].n),
          formatMs(summaries[v].p50),
          formatMs(summaries[v].p99),
          formatMs(summaries[v].mean),
          v === 'exec' ? '—' : formatMs(summaries[v].p50 - summaries.exec.p50),
        ]),
      };
      const note =
        'REST with one keep-alive client into one live sandbox (bubblewrap runtime); each tool call writes a ' +
        '`tool.call` ledger entry, each exec a `sandbox.exec` entry. Command: `npm run bench -- tools`.';
      return {
        text: `${renderText(table)}\n`,
        docs: [{ marker: 'tools', markdown: `${renderMarkdown(table)}\n\n${note}\n` }],
        raw: { runs, samples, summaries },
      };
    } finally {
      await server?.stop();
      rmSync(workDir, { recursive: true, force: true });
    }
  },
};
