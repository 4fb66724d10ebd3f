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

export async function loadManifestFile(path: string): Promise<LoadedManifest> {
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
  return parseManifestText(text, shown, manifestDir, file);
}

/** Parses and validates manifest text; `shown` is the file name used in messages. */
export function parseManifestText(
  text: string,
  shown: string,
  manifestDir: string,
  file = shown,
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
  const result = validateManifestValue(value);
  if (!result.ok) {
    const problems = result.problems.map((problem) => {
      const node = nodeAt(doc.contents as Node | null, problem.segments, problem.unknownKey !== undefined);
      const { segments: _segments, unknownKey: _unknownKey, ...rest } = problem;
      return { ...rest, file: shown, ...locate(node?.range?.[0]) };
    });
    problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
    throw manifestError(problems, shown);
  }

  try {
    return { file, manifest: result.manifest, agent: compileManifest(result.manifest, manifestDir) };
  } catch (error) {
    if (error instanceof AegisError && error.code === 'MANIFEST_INVALID') {
      const problems = error.problems.map((problem) => {
        const node = nodeAt(doc.contents as Node | null, parsePath(problem.path), false);
        return { ...problem, file: shown, ...locate(node?.range?.[0]) };
      });
      throw manifestError(problems, shown);
    }
    throw error;
  }
}
