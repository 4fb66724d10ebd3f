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
const ALLOWED_PACKAGES = new Set(['zod']);

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

describe('architecture: dependency rule', () => {
  it('domain/ imports nothing but domain/ and pure libraries', () => {
    assert.deepEqual(violations('domain'), []);
  });

  it('app/ imports nothing but domain/, app/ and pure libraries', () => {
    assert.deepEqual(violations('app'), []);
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
