/**
 * Audit ledger throughput: appends per second through the real SQLite ledger (group commit, SHA-256 chain, a
 * signed Ed25519 head every 1000 entries) until everything is durable, then a full `verify` of the chain.
 * Full run: 1M entries; quick: 100k (the 1M verify time is then extrapolated linearly, and says so).
 *
 * Standalone: `node bench/scenarios/ledger.ts [--quick]`.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ed25519NodeKey, nodeHasher } from '../../src/adapters/audit/node-key.ts';
import { SqliteAuditLedger } from '../../src/adapters/audit/sqlite-ledger.ts';

import type { BenchOptions, Scenario, ScenarioReport } from '../lib/scenario.ts';

export interface LedgerBenchResult {
  /** Entries appended. */
  readonly entries: number;
  /** Appends per second until all of them were committed (group commit included). */
  readonly appendsPerSec: number;
  /** Appends per second as the caller sees them (chain + hash + buffer; commits of full batches included). */
  readonly appendCallsPerSec: number;
  /** Wall time of the appends and the final commit, ms. */
  readonly appendMs: number;
  /** Wall time of one full `verify()` over `entries`, ms. */
  readonly verifyMs: number;
  /** verify time for 1M entries (measured when entries = 1M, else scaled linearly from verifyMs). */
  readonly verifyMsFor1M: number;
  readonly verifyExtrapolated: boolean;
  /** Signed heads written (one every 1000 entries, plus the close). */
  readonly heads: number;
  /** Size of audit.db (+ WAL) after the run. */
  readonly databaseBytes: number;
  readonly bytesPerEntry: number;
}

const HEAD_EVERY = 1000;

export async function runLedgerBench(opts: { quick: boolean }): Promise<LedgerBenchResult> {
  const entries = opts.quick ? 100_000 : 1_000_000;
  const dir = mkdtempSync(join(tmpdir(), 'aegis-bench-ledger-'));
  const file = join(dir, 'audit.db');
  const signer = new Ed25519NodeKey(join(dir, 'keys', 'node-ed25519.pem'));
  const clock = { now: () => Date.now() };
  const open = () =>
    SqliteAuditLedger.open({ file, signer, hasher: nodeHasher, clock, headEvery: HEAD_EVERY });
  try {
    signer.keyId(); // create the key outside the measurement
    const ledger = open();
    const started = performance.now();
    for (let i = 0; i < entries; i++) {
      // A realistic mix: small structured entries of the kinds runAgent writes, ~25 per execution.
      const execution = `ex_01jbench${String(Math.floor(i / 25)).padStart(16, '0')}`;
      switch (i % 25) {
        case 0:
          ledger.append('execution.created', execution, {
            agent: 'email-summarizer',
            version: '1.0.0',
            runtime: 'sandbox',
            isolation: 'sandbox',
            limits: {
              cpuMillis: 500,
              memoryBytes: 268435456,
              pids: 64,
              diskBytes: 67108864,
              timeoutMs: 30000,
            },
          });
          break;
        case 1:
          ledger.append('policy.mount', execution, {
            source: '/srv/mailbox',
            target: '/data/mailbox',
            mode: 'ro',
          });
          break;
        case 2:
          ledger.append('execution.started', execution, { instance: `sbx_${execution}` });
          break;
        case 24:
          ledger.append('execution.finished', execution, {
            status: 'succeeded',
            exitCode: 0,
            reason: null,
            durationMs: 1234,
          });
          break;
        default:
          ledger.append('network.connect', execution, {
            host: 'api.example.com',
            port: 443,
            decision: 'allow',
            rule: '*.example.com',
          });
      }
    }
    const appended = performance.now();
    await ledger.close();
    const durable = performance.now();

    const reader = open();
    const verifyStarted = performance.now();
    const result = await reader.verify();
    const verifyMs = performance.now() - verifyStarted;
    await reader.close();
    if (!result.ok) throw new Error(`the benchmark ledger failed verification: ${result.message}`);
    if (result.entries !== entries)
      throw new Error(`verified ${result.entries} entries, expected ${entries}`);

    const size = (path: string) => {
      try {
        return statSync(path).size;
      } catch {
        return 0;
      }
    };
    const databaseBytes = size(file) + size(`${file}-wal`);
    const appendMs = durable - started;
    return {
      entries,
      appendsPerSec: Math.round(entries / (appendMs / 1000)),
      appendCallsPerSec: Math.round(entries / ((appended - started) / 1000)),
      appendMs: Math.round(appendMs),
      verifyMs: Math.round(verifyMs),
      verifyMsFor1M: Math.round(verifyMs * (1_000_000 / entries)),
      verifyExtrapolated: entries !== 1_000_000,
      heads: result.heads,
      databaseBytes,
      bytesPerEntry: Math.round(databaseBytes / entries),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function ledgerText(r: LedgerBenchResult): string {
  return (
    `audit ledger, ${r.entries.toLocaleString('en')} entries:\n` +
    `  append (durable, group commit)  ${r.appendsPerSec.toLocaleString('en')} /s   (target ≥ 50,000 /s)\n` +
    `  append calls                    ${r.appendCallsPerSec.toLocaleString('en')} /s\n` +
    `  verify                          ${r.verifyMs.toLocaleString('en')} ms; 1M entries: ` +
    `${r.verifyMsFor1M.toLocaleString('en')} ms${r.verifyExtrapolated ? ' (extrapolated)' : ''}   (target < 10,000 ms)\n` +
    `  signed heads ${r.heads}, database ${(r.databaseBytes / 1024 ** 2).toFixed(1)} MiB (${r.bytesPerEntry} B/entry)\n`
  );
}

/** `npm run bench -- ledger`: 1M entries (100k with --quick). */
export const ledger: Scenario = {
  name: 'ledger',
  description: 'audit ledger append rate (group commit, signed heads) and full verify time',
  async run(options: BenchOptions): Promise<ScenarioReport> {
    const r = await runLedgerBench({ quick: options.quick });
    const markdown = [
      '| Measure | Result | Target |',
      '|:---|---:|---:|',
      `| Durable appends (group commit, head signed every 1000), ${r.entries.toLocaleString('en')} entries | ${r.appendsPerSec.toLocaleString('en')} /s | ≥ 50,000 /s |`,
      `| \`verify()\` of the whole chain, 1M entries${r.verifyExtrapolated ? ' (extrapolated)' : ''} | ${(r.verifyMsFor1M / 1000).toFixed(1)} s | < 10 s |`,
      `| Storage | ${r.bytesPerEntry} B/entry | |`,
    ].join('\n');
    return { text: ledgerText(r), docs: [{ marker: 'ledger', markdown }], raw: r };
  },
};

if (import.meta.main) {
  const quick = process.argv.includes('--quick');
  const r = await runLedgerBench({ quick });
  process.stdout.write(ledgerText(r));
}
