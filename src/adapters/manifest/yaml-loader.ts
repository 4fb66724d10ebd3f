/**
 * Reads agent.yaml from disk and turns every problem — YAML syntax, schema, compile rules — into a located error
 * (`file:line:col` + JSON path). Nothing downstream ever sees an unvalidated manifest.
 */
import { readFile, realpath } from 'node:fs/promises';
import { dirname, relative, resolve } from 'node:path';
import { isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument, visit } from 'yaml';
import { AegisError, type Problem } from '../../domain/errors.ts';
import { type PathSegment, parsePath } from '../../domain/json-path.ts';
import { type CompiledAgent, compileManifest } from '../../domain/manifest/compiled.ts';
import type { AgentManifest } from '../../domain/manifest/schema.ts';
import { manifestError, validateManifestValue } from '../../domain/manifest/validate.ts';
import type { ManifestCheck } from './host-checks.ts';

export interface LoadedManifest {
  /** Absolute path of agent.yaml. */
  readonly file: string;
  readonly manifest: AgentManifest;
  readonly agent: CompiledAgent;
}

const MAX_MANIFEST_BYTES = 1024 * 1024;
/** The yaml package's guard against alias bombs: the most alias expansions one manifest may need. */
const MAX_ALIAS_COUNT = 100;

/** The first alias (`*name`) in document order, to point at when expansion is refused. */
function firstAlias(root: Node | null): Node | undefined {
  let found: Node | undefined;
  visit(root as Node, {
    Alias(_key, node) {
      found = node;
      return visit.BREAK;
    },
  });
  return found;
}

function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith('..') ? rel : file;
}

/** Finds the YAML node at a JSON path; for unknown keys returns the key node itself. */
export function nodeAt(
  root: Node | null,
  segments: readonly PathSegment[],
  pointAtKey: boolean,
): Node | null {
  let current: Node | null = root;
  let lastFound: Node | null = root;
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i]!;
    const isLast = i === segments.length - 1;
    if (isMap(current)) {
      const pair = current.items.find(
        (item) => isPair(item) && isScalar(item.key) && item.key.value === segment,
      );
      if (!pair) return lastFound;
      if (isLast && pointAtKey) return pair.key as Node;
      current = (pair.value as Node | null) ?? (pair.key as Node);
    } else if (isSeq(current) && typeof segment === 'number') {
      const item = current.items[segment] as Node | undefined;
      if (!item) return lastFound;
      current = item;
    } else {
      return lastFound;
    }
    lastFound = current;
  }
  return current;
}

export interface LoadOptions {
  /** Checks beyond the manifest itself (host-checks.ts: what `aegis run` would refuse on this host). */
  readonly check?: (manifestDir: string) => ManifestCheck;
}

export async function loadManifestFile(path: string, options: LoadOptions = {}): Promise<LoadedManifest> {
  const file = resolve(path);
  const shown = displayPath(file);
  let text: string;
  try {
    const buffer = await readFile(file);
    if (buffer.byteLength > MAX_MANIFEST_BYTES) {
      throw new AegisError(
        'MANIFEST_INVALID',
        `${shown} is ${buffer.byteLength} bytes; manifests are capped at 1 MiB`,
      );
    }
    text = buffer.toString('utf8');
  } catch (error) {
    if (error instanceof AegisError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new AegisError('NOT_FOUND', `no manifest at ${shown}`, {
        cause: error,
        hint: 'pass the path of an agent.yaml, e.g. `aegis run examples/hello-python/agent.yaml`',
      });
    }
    if (code === 'EISDIR') {
      throw new AegisError('USAGE', `${shown} is a directory`, { hint: `did you mean ${shown}/agent.yaml?` });
    }
    throw new AegisError('USAGE', `cannot read ${shown}: ${(error as Error).message}`, { cause: error });
  }
  // Resolve symlinks so the agent directory is where the file really lives.
  const manifestDir = dirname(await realpath(file));
  return parseManifestText(text, shown, manifestDir, file, options);
}

/** Parses and validates manifest text; `shown` is the file name used in messages. */
export function parseManifestText(
  text: string,
  shown: string,
  manifestDir: string,
  file = shown,
  options: LoadOptions = {},
): LoadedManifest {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, strict: true });
  const locate = (offset: number | undefined): { line?: number; column?: number } => {
    if (offset === undefined) return {};
    const pos = lineCounter.linePos(offset);
    return { line: pos.line, column: pos.col };
  };

  if (doc.errors.length > 0) {
    const problems: Problem[] = doc.errors.map((error) => ({
      file: shown,
      ...(error.linePos?.[0]
        ? { line: error.linePos[0].line, column: error.linePos[0].col }
        : locate(error.pos[0])),
      path: '',
      message: `YAML syntax error: ${error.message.split('\n')[0]}`,
      hint: 'check indentation (spaces only) and that every "key: value" has a space after the colon',
    }));
    throw manifestError(problems, shown);
  }

  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (error) {
    // The yaml package refuses alias expansion past maxAliasCount ("billion laughs"): a user error, not a bug.
    const alias = firstAlias(doc.contents as Node | null);
    throw manifestError(
      [
        {
          file: shown,
          ...locate(alias?.range?.[0]),
          path: '',
          message: `YAML aliases expand too much (${(error as Error).message}); at most ${MAX_ALIAS_COUNT} alias expansions are allowed`,
          hint: 'write the values out instead of nesting anchors and aliases (*name) inside each other',
        },
      ],
      shown,
    );
  }
  const at = (path: string, pointAtKey = false) =>
    locate(nodeAt(doc.contents as Node | null, parsePath(path), pointAtKey)?.range?.[0]);
  // Every problem in one pass: schema, then (when the schema holds) compile rules, then the host's checks.
  const problems: Problem[] = [];
  let agent: CompiledAgent | undefined;
  let manifest: AgentManifest | undefined;
  const result = validateManifestValue(value);
  if (!result.ok) {
    for (const problem of result.problems) {
      const node = nodeAt(doc.contents as Node | null, problem.segments, problem.unknownKey !== undefined);
      const { segments: _segments, unknownKey: _unknownKey, ...rest } = problem;
      problems.push({ ...rest, file: shown, ...locate(node?.range?.[0]) });
    }
  } else {
    manifest = result.manifest;
    try {
      agent = compileManifest(result.manifest, manifestDir);
    } catch (error) {
      if (!(error instanceof AegisError && error.code === 'MANIFEST_INVALID')) throw error;
      for (const problem of error.problems) problems.push({ ...problem, file: shown, ...at(problem.path) });
    }
  }
  const hostProblems = (options.check?.(manifestDir)(value, agent) ?? []).map(({ code, ...problem }) => ({
    code,
    problem: { ...problem, file: shown, ...at(problem.path) },
  }));
  problems.push(...hostProblems.map((p) => p.problem));
  if (problems.length > 0) {
    problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
    // Problems that are all of one kind other than an invalid manifest keep their code (and exit code): a policy
    // refusal, an isolation this host lacks (exit 3), a secret that is not set.
    const codes = new Set(hostProblems.map((p) => p.code));
    const only = codes.size === 1 && hostProblems.length === problems.length ? [...codes][0] : undefined;
    if (only !== undefined && only !== 'MANIFEST_INVALID') {
      const first = problems[0]!;
      throw new AegisError(only, `${shown}: ${first.message}`, {
        problems,
        ...(first.hint ? { hint: first.hint } : {}),
      });
    }
    throw manifestError(problems, shown);
  }
  return { file, manifest: manifest!, agent: agent! };
}
