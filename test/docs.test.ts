/**
 * Docs that cannot drift: the generated tables are current (`npm run docs` regenerates them), and every `aegis …`
 * command line in the docs' shell blocks names a command and options the CLI really has.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { Command } from 'commander';
import { generatedFiles, ROOT, replaceRegion } from '../scripts/gen-docs.ts';
import { buildProgram } from '../src/cli/main.ts';

/** Docs a user follows command by command. */
const DOCS = ['README.md', 'CONTRIBUTING.md', 'docs/HOST-SETUP.md', 'docs/ARCHITECTURE.md'];

/** `aegis …` invocations in ```sh blocks: [file:line, words after `aegis` up to a shell operator or comment]. */
export function aegisCommandLines(markdown: string, file: string): { at: string; words: string[] }[] {
  const out: { at: string; words: string[] }[] = [];
  let inShell = false;
  markdown.split('\n').forEach((line, index) => {
    if (/^\s*```/.test(line)) {
      inShell = !inShell && /^\s*```(sh|bash|shell|console)?\s*$/.test(line) && !/^\s*```\s*$/.test(line);
      return;
    }
    if (!inShell) return;
    const code = line.replace(/\s#.*$/, '');
    for (const match of code.matchAll(/(?:^|[\s(`])(?:npx\s+)?aegis\s+([^|;&<>)`]*)/g)) {
      const words = match[1]!.trim().split(/\s+/).filter(Boolean);
      if (words.length > 0) out.push({ at: `${file}:${index + 1}`, words });
    }
  });
  return out;
}

function resolveCommand(program: Command, words: readonly string[]): { command: Command; rest: string[] } {
  let command = program;
  let i = 0;
  for (; i < words.length; i++) {
    const sub = command.commands.find((c) => c.name() === words[i] || c.aliases().includes(words[i]!));
    if (!sub) break;
    command = sub;
  }
  return { command, rest: words.slice(i) };
}

function knownFlags(command: Command): Set<string> {
  const flags = new Set(['--help', '-h']);
  for (let at: Command | null = command; at; at = at.parent) {
    for (const option of at.options) {
      if (option.long) flags.add(option.long);
      if (option.short) flags.add(option.short);
      if (option.long?.startsWith('--no-')) flags.add(`--${option.long.slice(5)}`);
    }
  }
  return flags;
}

describe('docs that cannot drift', () => {
  it('the generated tables (README error codes, docs/CLI.md, docs/RUNTIMES.md, docs/METRICS.md) are current — else run `npm run docs`', () => {
    for (const file of generatedFiles()) {
      const onDisk = existsSync(file.path) ? readFileSync(file.path, 'utf8') : '';
      assert.ok(
        onDisk === file.content,
        `${file.path.slice(ROOT.length + 1)} is stale: run \`npm run docs\` and commit the result`,
      );
    }
  });

  it('schema/agent.schema.json is what `aegis schema` prints — else run `npm run schema`', () => {
    const printed = execFileSync(process.execPath, [join(ROOT, 'src/cli/bin.ts'), 'schema'], {
      encoding: 'utf8',
    });
    assert.ok(
      readFileSync(join(ROOT, 'schema/agent.schema.json'), 'utf8') === printed,
      'schema/agent.schema.json is stale: run `npm run schema` and commit the result',
    );
  });

  it('a region without its markers is an error that names the file and the markers', () => {
    assert.throws(
      () => replaceRegion('no markers here', 'error-codes', 'x', 'README.md'),
      /README\.md: markers/,
    );
  });

  it('every `aegis …` line in the docs names a real command, and only options it has', () => {
    const program = buildProgram(() => {});
    const problems: string[] = [];
    let checked = 0;
    for (const file of DOCS) {
      const path = join(ROOT, file);
      if (!existsSync(path)) continue;
      for (const { at, words } of aegisCommandLines(readFileSync(path, 'utf8'), file)) {
        const { command, rest } = resolveCommand(program, words);
        if (command === program && !words[0]!.startsWith('-')) {
          problems.push(`${at}: \`aegis ${words.join(' ')}\` — no command "${words[0]}"`);
          continue;
        }
        if (command !== program && command.commands.length > 0 && rest[0] && !rest[0].startsWith('-')) {
          problems.push(
            `${at}: \`aegis ${words.join(' ')}\` — "${command.name()}" has no subcommand "${rest[0]}"`,
          );
          continue;
        }
        const flags = knownFlags(command);
        for (const word of rest) {
          const flag = word.split('=')[0]!;
          if (/^--?[a-zA-Z]/.test(flag) && !flags.has(flag)) {
            problems.push(`${at}: \`aegis ${words.join(' ')}\` — ${command.name()} has no option ${flag}`);
          }
        }
        checked++;
      }
    }
    assert.deepEqual(problems, []);
    assert.ok(checked > 20, `only ${checked} command lines found: the scanner is not reading the docs`);
  });

  it('the scanner reads shell blocks only, and stops at pipes, comments and substitutions', () => {
    const sample = [
      'aegis nope  # prose outside a block is ignored',
      '```sh',
      'npx aegis run a.yaml --input \'{"x": 1}\' --output json   # comment --bogus',
      'export K=$(aegis keys create --name ci) && aegis ps | head',
      '```',
      '```yaml',
      'aegis: notacommand',
      '```',
    ].join('\n');
    assert.deepEqual(
      aegisCommandLines(sample, 'x.md').map((line) => line.words.join(' ')),
      ['run a.yaml --input \'{"x": 1}\' --output json', 'keys create --name ci', 'ps'],
    );
  });
});
