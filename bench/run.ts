/**
 * `npm run bench [-- options] [scenario …]`: runs benchmark scenarios, prints their tables, writes raw results to
 * bench/results/<YYYY-MM-DD>-<hostname>.json and refreshes the generated sections of docs/PERFORMANCE.md.
 *
 * Benchmarks are not tests: nothing here asserts a timing. A scenario fails only when what it runs fails.
 * Add a scenario: write bench/scenarios/<name>.ts exporting a `Scenario`, and list it in SCENARIOS below.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { machineInfo, machineTable } from './lib/machine.ts';
import { replaceSection, writeFileAtomic, writeResults } from './lib/publish.ts';
import type { BenchOptions, Scenario, ScenarioReport } from './lib/scenario.ts';
import { renderMarkdown, renderText } from './lib/table.ts';
import { startLatencyChart, targetsOf, targetsTable } from './lib/targets.ts';
import { api } from './scenarios/api.ts';
import { cluster } from './scenarios/cluster.ts';
import { cortex } from './scenarios/cortex.ts';
import { density } from './scenarios/density.ts';
import { egress } from './scenarios/egress.ts';
import { ledger } from './scenarios/ledger.ts';
import { llmGateway } from './scenarios/llm-gateway.ts';
import { peers } from './scenarios/peers.ts';
import { sandboxes } from './scenarios/sandboxes.ts';
import { startLatency } from './scenarios/start-latency.ts';
import { swarm } from './scenarios/swarm.ts';
import { swarmBus } from './scenarios/swarm-bus.ts';
import { tools } from './scenarios/tools.ts';

// bench/scenarios/gvisor.ts is not listed: `peers` measures the gvisor (and docker) runtime through AEGIS beside
// runsc do in the same rounds; that file stays a standalone, runtime-only probe (`node bench/scenarios/gvisor.ts`).
const SCENARIOS: readonly Scenario[] = [
  startLatency,
  density,
  ledger,
  egress,
  api,
  peers,
  sandboxes,
  llmGateway,
  tools,
  cluster,
  cortex,
  swarm,
  swarmBus,
];

const ROOT = resolve(import.meta.dirname, '..');
const DOC = join(ROOT, 'docs/PERFORMANCE.md');
const CHART = join(ROOT, 'docs/perf/start-latency.svg');
const RESULTS = join(ROOT, 'bench/results');

const USAGE = `usage: npm run bench -- [options] [scenario …]

scenarios (default: all):
${SCENARIOS.map((s) => `  ${s.name.padEnd(16)} ${s.description}`).join('\n')}

options:
  --quick          20 runs, 3 warm-up, 5 CLI runs: a smoke check (< 2 min); writes
                   bench/results/<date>-<host>-quick.json and leaves docs/PERFORMANCE.md alone
  --runs N         measured runs per variant (default 100; quick 20)
  --warmup N       warm-up runs per variant (default 5; quick 3)
  --cli-runs N     measured CLI process starts (default 20; quick 5)
  --breakdown      also time every step of the aegis path (extra instrumented runs) and of the CLI start
  --no-write       print only: no results file, no doc update
  -h, --help       this text`;

function positiveInt(name: string, value: string | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`--${name} must be an integer ≥ ${min}, got ${JSON.stringify(value)}\n\n${USAGE}\n`);
    process.exit(2);
  }
  return n;
}

const ARG_SPEC = {
  quick: { type: 'boolean', default: false },
  runs: { type: 'string' },
  warmup: { type: 'string' },
  'cli-runs': { type: 'string' },
  breakdown: { type: 'boolean', default: false },
  'no-write': { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

function parseOptions(argv: string[]): { options: BenchOptions; scenarios: Scenario[]; write: boolean } {
  let parsed: ReturnType<
    typeof parseArgs<{ args: string[]; allowPositionals: true; options: typeof ARG_SPEC }>
  >;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: ARG_SPEC });
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n\n${USAGE}\n`);
    process.exit(2);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const scenarios = positionals.length === 0 ? [...SCENARIOS] : [];
  for (const name of positionals) {
    const scenario = SCENARIOS.find((s) => s.name === name);
    if (!scenario) {
      process.stderr.write(`unknown scenario ${JSON.stringify(name)}\n\n${USAGE}\n`);
      process.exit(2);
    }
    scenarios.push(scenario);
  }
  const quick = values.quick;
  return {
    scenarios,
    write: !values['no-write'],
    options: {
      quick,
      runs: positiveInt('runs', values.runs, quick ? 20 : 100),
      warmup: positiveInt('warmup', values.warmup, quick ? 3 : 5, 0),
      cliRuns: positiveInt('cli-runs', values['cli-runs'], quick ? 5 : 20),
      breakdown: values.breakdown,
      log: (line) => process.stderr.write(`${line}\n`),
    },
  };
}

/** bench/results is under `biome check`: write the file the way the repo's formatter wants it. */
function formatWithBiome(file: string): void {
  try {
    execFileSync(join(ROOT, 'node_modules/.bin/biome'), ['format', '--write', file], { stdio: 'ignore' });
  } catch {
    process.stderr.write(`could not run biome on ${file}; \`npm run format\` will tidy it\n`);
  }
}

async function main(): Promise<void> {
  const { options, scenarios, write } = parseOptions(process.argv.slice(2));
  const reports = new Map<string, ScenarioReport>();
  const runStarted = performance.now();
  for (const scenario of scenarios) {
    options.log(`== ${scenario.name}: ${scenario.description}`);
    const started = performance.now();
    const report = await scenario.run(options);
    options.log(`== ${scenario.name} done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    process.stdout.write(`\n${report.text}\n`);
    reports.set(scenario.name, report);
  }
  const targets = targetsOf(reports.values());
  if (targets.length > 0) {
    process.stdout.write(`\ntargets — this run\n\n${renderText(targetsTable(targets, false))}\n`);
  }
  options.log(`== all done in ${((performance.now() - runStarted) / 1000).toFixed(1)} s`);
  if (!write) return;

  const day = new Date().toISOString().slice(0, 10);
  const file = join(RESULTS, `${day}-${hostname()}${options.quick ? '-quick' : ''}.json`);
  writeResults(
    file,
    { schema: 1, host: hostname(), date: day, quick: options.quick },
    Object.fromEntries([...reports].map(([name, report]) => [name, report.raw])),
  );
  formatWithBiome(file);
  process.stdout.write(`\nraw results: ${file}\n`);

  if (options.quick) {
    process.stdout.write(
      'docs/PERFORMANCE.md not updated (--quick numbers are a smoke check, not for publishing)\n',
    );
    return;
  }
  if (!existsSync(DOC)) {
    process.stderr.write(`${DOC} is missing; not updated\n`);
    return;
  }
  let document = readFileSync(DOC, 'utf8');
  const machine = machineInfo();
  const sections = [
    {
      marker: 'machine',
      markdown: renderMarkdown({ ...machineTable(machine), align: ['left', 'left'] }),
    },
    ...[...reports.values()].flatMap((report) => report.docs),
  ];
  // The targets table and the chart compare scenarios with each other: written only by a run of all of them.
  if (reports.size === SCENARIOS.length) {
    sections.push({
      marker: 'targets',
      markdown: [
        `_Measured by one \`npm run bench\` on ${day}, host ${machine.hostname} (see [Machine](#machine)); every row links to its numbers._`,
        '',
        renderMarkdown(targetsTable(targets, true)),
      ].join('\n'),
    });
    const chart = startLatencyChart(reports.values(), machine, day);
    if (chart !== undefined) {
      writeFileAtomic(CHART, chart);
      process.stdout.write(`chart: ${CHART}\n`);
    }
  } else {
    process.stdout.write('targets table and chart not written: they need a run of every scenario\n');
  }
  for (const section of sections) {
    const next = replaceSection(document, section.marker, section.markdown);
    if (next === undefined) {
      process.stderr.write(
        `docs/PERFORMANCE.md has no bench:${section.marker} markers; section not written\n`,
      );
    } else {
      document = next;
    }
  }
  writeFileAtomic(DOC, document);
  process.stdout.write(`updated: ${DOC}\n`);
}

await main();
