/**
 * `npm run docs`: regenerates the tables the code also holds, so the docs cannot drift from it.
 *
 * - README.md, between `<!-- BEGIN GENERATED: error-codes -->` and its END marker: the error-code table, from
 *   `ERROR_CODES` (src/domain/errors.ts).
 * - docs/RUNTIMES.md, region `runtime-parity`: the parity table, from `RUNTIME_CAPABILITIES`
 *   (src/domain/runtime/capabilities.ts).
 * - docs/CLI.md (whole file): the CLI reference, from the commander tree `buildProgram()` builds (src/cli/).
 * - README.md, region `config-memory`: the `memory.*` keys of config.yaml, from `MemoryConfig`
 *   (src/domain/memory/config.ts), their `.meta` descriptions and `@default`s.
 * - docs/METRICS.md, region `metrics`: every metric the server's registry holds (src/adapters/metrics/prometheus.ts,
 *   with every gauge bound), its type, labels and help.
 *
 * `npm run docs -- --check` writes nothing and exits 1 naming each stale file; `test/docs.test.ts` fails the same
 * way, so after changing a command, an option or an error code, run `npm run docs` and commit the result.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command, Help } from 'commander';
import { z } from 'zod';
import { PrometheusMetrics } from '../src/adapters/metrics/prometheus.ts';
import { buildProgram } from '../src/cli/main.ts';
import { ERROR_CODES, type ErrorCode, GRPC } from '../src/domain/errors.ts';
import { MemoryConfig } from '../src/domain/memory/config.ts';
import {
  RULE_MANIFEST_PATH,
  RULES,
  RUNTIME_CAPABILITIES,
  RUNTIMES_BY_STRENGTH,
} from '../src/domain/runtime/capabilities.ts';

export const ROOT = resolve(import.meta.dirname, '..');

const GRPC_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(GRPC).map(([name, value]) => [value, name.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()]),
);

/** Markdown table cell: pipes escaped, one line. */
function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ');
}

export function errorCodeTable(): string {
  const rows = (Object.entries(ERROR_CODES) as [ErrorCode, (typeof ERROR_CODES)[ErrorCode]][]).map(
    ([code, info]) =>
      `| \`${code}\` | ${info.httpStatus} | ${GRPC_NAMES[info.grpcCode] ?? info.grpcCode} | ${info.exitCode} | ${info.retryable ? 'yes' : 'no'} | ${cell(info.summary)} |`,
  );
  return ['| code | HTTP | gRPC | exit | retry | when |', '|---|---|---|---|---|---|', ...rows].join('\n');
}

function commandPath(command: Command): string {
  const names: string[] = [];
  for (let at: Command | null = command; at; at = at.parent) names.unshift(at.name());
  return names.join(' ');
}

function visibleCommands(help: Help, command: Command): Command[] {
  return help.visibleCommands(command).filter((sub) => sub.name() !== 'help');
}

/** Every command of the tree, depth first, in the order commander lists them. */
export function allCommands(program: Command): Command[] {
  const help = program.createHelp();
  const out: Command[] = [];
  const walk = (command: Command) => {
    for (const sub of visibleCommands(help, command)) {
      out.push(sub);
      walk(sub);
    }
  };
  walk(program);
  return out;
}

function commandSection(command: Command): string {
  const help = command.createHelp();
  const lines = [`### \`${commandPath(command)}\``, ''];
  const description = help.commandDescription(command);
  if (description) lines.push(cell(description), '');
  lines.push('```', help.commandUsage(command), '```', '');
  const args = help.visibleArguments(command);
  const options = help.visibleOptions(command).filter((option) => option.long !== '--help');
  const subs = visibleCommands(help, command);
  if (args.length + options.length > 0) {
    lines.push('| argument / option | |', '|---|---|');
    for (const arg of args) {
      lines.push(`| \`${help.argumentTerm(arg)}\` | ${cell(help.argumentDescription(arg))} |`);
    }
    for (const option of options) {
      lines.push(`| \`${help.optionTerm(option)}\` | ${cell(help.optionDescription(option))} |`);
    }
    lines.push('');
  }
  if (subs.length > 0) {
    lines.push(
      `Subcommands: ${subs.map((sub) => `[\`${sub.name()}\`](#${anchor(commandPath(sub))})`).join(', ')}.`,
      '',
    );
  }
  return lines.join('\n');
}

/** GitHub's heading anchor for `### \`aegis keys create\``. */
function anchor(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^a-z0-9 -]/g, '')
    .replace(/ /g, '-');
}

export function cliReference(): string {
  const program = buildProgram(() => {});
  const help = program.createHelp();
  const globals = help.visibleOptions(program).filter((option) => option.long !== '--help');
  const commands = allCommands(program);
  const index = visibleCommands(help, program).map(
    (command) =>
      `| [\`${commandPath(command)}\`](#${anchor(commandPath(command))}) | ${cell(help.commandDescription(command))} |`,
  );
  return [
    '# CLI reference',
    '',
    '<!-- Generated by `npm run docs` (scripts/gen-docs.ts) from the commander definitions in src/cli/. Do not edit:',
    '     test/docs.test.ts fails when this file is stale. -->',
    '',
    `\`${program.name()}\`: ${cell(help.commandDescription(program))} Every command takes \`--help\`.`,
    '',
    ...(globals.length > 0
      ? [
          '| global option | |',
          '|---|---|',
          ...globals.map((o) => `| \`${help.optionTerm(o)}\` | ${cell(help.optionDescription(o))} |`),
          '',
        ]
      : []),
    'Exit codes and error codes: [README](../README.md#exit-codes).',
    '',
    '| command | |',
    '|---|---|',
    ...index,
    '',
    '## Commands',
    '',
    ...commands.map(commandSection),
  ]
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trimEnd()
    .concat('\n');
}

/** Replaces the text between `<!-- BEGIN GENERATED: name -->` and `<!-- END GENERATED: name -->`. */
export function replaceRegion(text: string, name: string, body: string, file: string): string {
  const begin = `<!-- BEGIN GENERATED: ${name} (npm run docs) -->`;
  const end = `<!-- END GENERATED: ${name} -->`;
  const from = text.indexOf(begin);
  const to = text.indexOf(end);
  if (from === -1 || to === -1 || to < from) {
    throw new Error(`${file}: markers for the generated region "${name}" are missing (${begin} … ${end})`);
  }
  return `${text.slice(0, from + begin.length)}\n${body}\n${text.slice(to)}`;
}

/** Every generated file: its path and the content it should have now. */
/** docs/RUNTIMES.md's parity table: RUNTIME_CAPABILITIES, one row per rule, one column per runtime. */
export function runtimeParityTable(): string {
  const header = `| rule | manifest | ${RUNTIMES_BY_STRENGTH.join(' | ')} |`;
  const rows = RULES.map(
    (rule) =>
      `| \`${rule}\` | \`${RULE_MANIFEST_PATH[rule]}\` | ${RUNTIMES_BY_STRENGTH.map((name) => cell(RUNTIME_CAPABILITIES[name][rule] ?? '✗ refused (LIMIT_UNENFORCEABLE)')).join(' | ')} |`,
  );
  return [header, `|---|---|${RUNTIMES_BY_STRENGTH.map(() => '---').join('|')}|`, ...rows].join('\n');
}

/** docs/METRICS.md's table: the server's own metrics (not the `aegis_process_*` defaults of prom-client). */
export function metricsTable(): string {
  const metrics = new PrometheusMetrics({ defaultMetrics: false });
  metrics.bindQueue({ running: () => 0, queued: () => 0, warm: () => 0 });
  metrics.bindLiveSandboxes(() => []);
  metrics.bindLedgerReplication(() => ({ lagEntries: 0, lagMs: 0, state: 'replicating' }));
  const rows = metrics.registry
    .getMetricsAsArray()
    .map((metric) => metric as unknown as { name: string; type: string; help: string; labelNames: string[] })
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((metric) => {
      const labels = metric.labelNames.map((label) => `\`${label}\``);
      return `| \`${metric.name}\` | ${metric.type} | ${labels.join(', ') || '—'} | ${cell(metric.help)} |`;
    });
  return ['| metric | type | labels | what |', '|---|---|---|---|', ...rows].join('\n');
}

/** README's `memory:` config keys: MemoryConfig's fields, their descriptions and `@default`s. */
export function memoryConfigTable(): string {
  const schema = z.toJSONSchema(MemoryConfig, { io: 'input', unrepresentable: 'any' }) as {
    properties: Record<string, { description?: string }>;
  };
  const rows = Object.entries(schema.properties).map(([key, property]) => {
    const [what = '', fallback] = (property.description ?? '').split(/\s*@default\s+/);
    return `| \`memory.${key}\` | ${cell(fallback ?? '—')} | ${cell(what)} |`;
  });
  return ['| key | default | what |', '|---|---|---|', ...rows].join('\n');
}

export function generatedFiles(): { path: string; content: string }[] {
  const readme = join(ROOT, 'README.md');
  const metricsDoc = join(ROOT, 'docs/METRICS.md');
  const runtimesDoc = join(ROOT, 'docs/RUNTIMES.md');
  return [
    {
      path: runtimesDoc,
      content: replaceRegion(
        readFileSync(runtimesDoc, 'utf8'),
        'runtime-parity',
        runtimeParityTable(),
        'docs/RUNTIMES.md',
      ),
    },
    {
      path: readme,
      content: replaceRegion(
        replaceRegion(readFileSync(readme, 'utf8'), 'error-codes', errorCodeTable(), 'README.md'),
        'config-memory',
        memoryConfigTable(),
        'README.md',
      ),
    },
    { path: join(ROOT, 'docs/CLI.md'), content: cliReference() },
    {
      path: metricsDoc,
      content: replaceRegion(readFileSync(metricsDoc, 'utf8'), 'metrics', metricsTable(), 'docs/METRICS.md'),
    },
  ];
}

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

if (import.meta.main) {
  const check = process.argv.includes('--check');
  const stale: string[] = [];
  for (const file of generatedFiles()) {
    if (read(file.path) === file.content) continue;
    stale.push(file.path.slice(ROOT.length + 1));
    if (!check) writeFileSync(file.path, file.content);
  }
  if (check && stale.length > 0) {
    process.stderr.write(`stale: ${stale.join(', ')} — run \`npm run docs\` and commit the result\n`);
    process.exit(1);
  }
  process.stdout.write(stale.length === 0 ? 'docs are current\n' : `updated ${stale.join(', ')}\n`);
}
