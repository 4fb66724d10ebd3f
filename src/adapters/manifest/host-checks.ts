/**
 * The checks `aegis run` makes before anything is recorded, shared with `aegis validate` so that a manifest
 * validate accepts is one run accepts: the entrypoint exists (and its extension fits the language), the isolation
 * is one this host can run (`aegis doctor`), granted host paths exist and are not protected, declared secrets are
 * set. They read the raw manifest value where they can, so they report alongside schema problems in one pass.
 */
import { realpathSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import type { ErrorCode, Problem } from '../../domain/errors.ts';
import { checkMountSource } from '../../domain/filesystem-policy.ts';
import type { CompiledAgent } from '../../domain/manifest/compiled.ts';

/** A problem found on this host, with the error code it would have on its own. */
export interface HostProblem extends Problem {
  readonly code: ErrorCode;
}

export interface HostFacts {
  /** Host paths that may never be granted beyond the built-in list (the data directory, scratch). */
  readonly protectedPaths: readonly string[];
  /** Whether this host can run an isolation (`aegis doctor`'s runtimes). */
  readonly isolationAvailable: (isolation: string) => boolean;
  /** Names of the secrets that are set; undefined skips the check (e.g. a server checks at execution time). */
  readonly secretNames?: ReadonlySet<string>;
}

export type ManifestCheck = (value: unknown, agent: CompiledAgent | undefined) => HostProblem[];

const LANGUAGE_OF_EXTENSION: Readonly<Record<string, string>> = {
  '.py': 'python',
  '.js': 'node',
  '.mjs': 'node',
  '.cjs': 'node',
  '.ts': 'node',
  '.mts': 'node',
  '.sh': 'bash',
  '.bash': 'bash',
};

function field(value: unknown, ...keys: string[]): unknown {
  let current = value;
  for (const key of keys) {
    if (current === null || typeof current !== 'object' || Array.isArray(current)) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

/** The checks for a manifest in `manifestDir` on a host described by `facts`. */
export function hostChecks(manifestDir: string, facts: HostFacts): ManifestCheck {
  return (value, agent) => {
    const problems: HostProblem[] = [];
    const language = field(value, 'spec', 'runtime', 'language');
    const entrypoint = field(value, 'spec', 'runtime', 'entrypoint');
    if (typeof entrypoint === 'string' && entrypoint !== '') {
      const file = join(manifestDir, entrypoint);
      let isFile = false;
      try {
        isFile = statSync(file).isFile();
      } catch {
        // reported below
      }
      if (!isFile) {
        problems.push({
          code: 'MANIFEST_INVALID',
          path: 'spec.runtime.entrypoint',
          message: `entrypoint ${entrypoint} does not exist: no file ${file}`,
          hint: 'the entrypoint is relative to the directory holding agent.yaml',
        });
      }
      const expected = LANGUAGE_OF_EXTENSION[extname(entrypoint).toLowerCase()];
      if (typeof language === 'string' && expected !== undefined && expected !== language) {
        problems.push({
          code: 'MANIFEST_INVALID',
          path: 'spec.runtime.language',
          message: `language is ${language}, but the entrypoint ${entrypoint} is a ${expected} file — did you mean "${expected}"?`,
          hint: `set language: ${expected}, or point entrypoint at the ${language} file`,
        });
      }
    }
    const isolation = field(value, 'spec', 'isolation') ?? 'sandbox';
    if (typeof isolation === 'string' && !facts.isolationAvailable(isolation)) {
      problems.push({
        code: 'RUNTIME_UNAVAILABLE',
        path: 'spec.isolation',
        message: `isolation "${isolation}" is not available on this host`,
        hint: '`aegis doctor` shows which isolation this host can run and what is missing',
      });
    }
    if (agent === undefined) return problems;
    // An agent's own directory is never a protected path to itself (a clone under /root works) — as in the runtime.
    const ownDir = realpathSync(agent.agentDir);
    for (const mount of agent.mounts) {
      let real: string;
      try {
        real = realpathSync(mount.source);
      } catch {
        problems.push({
          code: 'MANIFEST_INVALID',
          path: mount.manifestPath,
          message: `host path ${mount.source} does not exist`,
          hint: 'create it first, or remove the entry',
        });
        continue;
      }
      const verdict = checkMountSource(real, facts.protectedPaths, ownDir);
      if (verdict.forbidden) {
        const via = real === mount.source ? '' : ` (resolves to ${real})`;
        problems.push({
          code: 'POLICY_DENIED',
          path: mount.manifestPath,
          message: `${mount.source}${via} may never be mounted into a sandbox — it is or contains the protected path ${verdict.protectedPath}`,
          hint: 'grant a dedicated directory that holds only what the agent needs',
        });
      }
    }
    if (facts.secretNames !== undefined) {
      agent.secrets.forEach((binding, index) => {
        if (facts.secretNames?.has(binding.name)) return;
        problems.push({
          code: 'NOT_FOUND',
          path: `spec.secrets[${index}].name`,
          message: `secret ${binding.name} is not set`,
          hint: `aegis secret set ${binding.name} < file-holding-the-value`,
        });
      });
    }
    return problems;
  };
}
