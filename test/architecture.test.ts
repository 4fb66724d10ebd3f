/**
 * The dependency rule, enforced: domain ← app ← adapters/cli ← main. `domain/` and `app/` may not import
 * adapters, the CLI, the composition root, drivers, or Node I/O modules.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';

const ROOT = resolve(import.meta.dirname, '..');
const SRC = join(ROOT, 'src');

/** Node built-ins without I/O that pure code may use. */
const ALLOWED_NODE = new Set(['node:path', 'node:path/posix', 'node:util', 'node:events', 'node:buffer']);
/** npm packages the domain may use (pure libraries). */
const ALLOWED_PACKAGES = new Set(['zod', 'ajv']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts') ? [path] : [];
  });
}

export function importsOf(source: string): string[] {
  const specifiers: string[] = [];
  const patterns = [
    /\bimport\s+(?:type\s+)?[^'"]*?from\s+['"]([^'"]+)['"]/g,
    /\bexport\s+(?:type\s+)?[^'"]*?from\s+['"]([^'"]+)['"]/g,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
    /\bimport\s+['"]([^'"]+)['"]/g,
    /\brequire\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  for (const pattern of patterns) for (const match of source.matchAll(pattern)) specifiers.push(match[1]!);
  return specifiers;
}

function violations(layer: 'domain' | 'app'): string[] {
  const found: string[] = [];
  const layerDir = join(SRC, layer);
  for (const file of sourceFiles(layerDir)) {
    // Fakes are test doubles for use-case tests; they live in app/ but may not import adapters either.
    for (const specifier of importsOf(readFileSync(file, 'utf8'))) {
      const where = relative(ROOT, file);
      if (specifier.startsWith('.')) {
        const target = relative(SRC, resolve(dirname(file), specifier));
        const allowedPrefixes = layer === 'domain' ? ['domain/'] : ['domain/', 'app/'];
        if (!allowedPrefixes.some((prefix) => target.startsWith(prefix))) {
          found.push(
            `${where} imports ${specifier} (${target}) — ${layer}/ may only import ${allowedPrefixes.join(', ')}`,
          );
        }
      } else if (
        specifier.startsWith('node:') ||
        /^(fs|child_process|net|http|https|os|dgram|dns|tls|worker_threads|cluster|sqlite)(\/|$)/.test(
          specifier,
        )
      ) {
        if (!ALLOWED_NODE.has(specifier))
          found.push(`${where} imports ${specifier} — Node I/O is not allowed in ${layer}/`);
      } else {
        const pkg = specifier.startsWith('@')
          ? specifier.split('/').slice(0, 2).join('/')
          : specifier.split('/')[0]!;
        if (!ALLOWED_PACKAGES.has(pkg))
          found.push(
            `${where} imports package ${pkg} — only ${[...ALLOWED_PACKAGES].join(', ')} allowed in ${layer}/`,
          );
      }
    }
  }
  return found;
}

/** Ambient time: reading the wall clock or starting a timer without the `Clock` port (src/app/ports.ts). */
const AMBIENT_TIME: readonly { readonly pattern: RegExp; readonly what: string }[] = [
  { pattern: /\bDate\.now\s*\(/, what: 'Date.now()' },
  { pattern: /\bnew\s+Date\s*\(\s*\)/, what: 'new Date()' },
  { pattern: /\bperformance\.now\s*\(/, what: 'performance.now()' },
  {
    pattern: /(?<![.\w#])(?:globalThis\.)?(setTimeout|setInterval|clearTimeout|clearInterval)\s*\(/,
    what: 'a global timer',
  },
];

/** Source without comments and string/template contents, so a mention in a doc comment is not a use. */
export function codeOnly(source: string): string {
  return source
    .replace(/\/\*[\s\S]*?\*\//g, (comment) => comment.replace(/[^\n]/g, ' '))
    .replace(/(^|[^:])\/\/.*$/gm, '$1')
    .replace(/'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"|`(?:\\.|[^`\\])*`/g, "''");
}

export function ambientTimeUses(source: string): string[] {
  const found: string[] = [];
  codeOnly(source)
    .split('\n')
    .forEach((line, index) => {
      // A method named like a timer (the Clock port and its implementations) is a declaration, not a use.
      if (/^\s*(setTimeout|setInterval)\s*\(.*\)\s*:\s*[\w<>|, ]+\s*[;{]\s*$/.test(line)) return;
      for (const { pattern, what } of AMBIENT_TIME) {
        if (pattern.test(line)) found.push(`line ${index + 1}: ${what}`);
      }
    });
  return found;
}

describe('architecture: dependency rule', () => {
  it('domain/ imports nothing but domain/ and pure libraries', () => {
    assert.deepEqual(violations('domain'), []);
  });

  it('app/ imports nothing but domain/, app/ and pure libraries', () => {
    assert.deepEqual(violations('app'), []);
  });

  it('domain/ and app/ read time and start timers only through the Clock port', () => {
    const found: string[] = [];
    for (const layer of ['domain', 'app']) {
      for (const file of sourceFiles(join(SRC, layer))) {
        for (const use of ambientTimeUses(readFileSync(file, 'utf8'))) {
          found.push(
            `${relative(ROOT, file)} ${use} — use the Clock port (deps.clock), or ManualClock in tests`,
          );
        }
      }
    }
    assert.deepEqual(found, []);
  });

  it('the ambient-time scanner catches the forms it must catch, and not mentions or the port', () => {
    const caught = [
      'const t = Date.now();',
      'const d = new Date();',
      'setTimeout(done, 5);',
      'const i = setInterval(() => tick(), 100);',
      'clearTimeout(timer);',
      'globalThis.setTimeout(f, 1);',
      'const p = performance.now();',
    ];
    for (const line of caught) assert.equal(ambientTimeUses(line).length, 1, line);
    const allowed = [
      'const t = clock.now();',
      'const timer = deps.clock.setTimeout(done, 5);',
      'this.#clock.setInterval(tick, 10);',
      'const iso = new Date(clock.now()).toISOString();',
      '// Date.now() is not used here',
      "const hint = 'avoid setTimeout(…) in app/';",
      '/** @default Date.now */',
      '  setTimeout(fn: () => void, ms: number, options?: TimerOptions): Timer;',
      '  setInterval(fn: () => void, ms: number): Timer {',
    ];
    for (const line of allowed) assert.deepEqual(ambientTimeUses(line), [], line);
  });

  it('the import scanner catches the forms it must catch (so the rule cannot pass vacuously)', () => {
    const sample = [
      "import { readFile } from 'node:fs/promises';",
      "import type { X } from '../adapters/x.ts';",
      "export { y } from '../cli/main.ts';",
      "const m = await import('node:child_process');",
      "import 'pg';",
    ].join('\n');
    assert.deepEqual(importsOf(sample).sort(), [
      '../adapters/x.ts',
      '../cli/main.ts',
      'node:child_process',
      'node:fs/promises',
      'pg',
    ]);
  });

  it('only main.ts / main-server.ts construct adapters (never the CLI or the API layer)', () => {
    // The CLI may import adapter *functions* for host inspection (doctor, manifest loading, bundling) but never builds
    // the runtime, a store or the server's adapters itself: it gets them from the composition roots.
    for (const layer of ['cli', 'api']) {
      const code = sourceFiles(join(SRC, layer))
        .filter((file) => !file.endsWith('.test.ts'))
        .map((file) => readFileSync(file, 'utf8'))
        .join('\n');
      assert.doesNotMatch(
        code,
        /new\s+(SandboxRuntime|SqliteStore|PostgresStore|DirAgentBundles|PrometheusMetrics|SqliteAuditLedger)\b/,
        layer,
      );
    }
  });
});
