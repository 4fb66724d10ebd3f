/**
 * Validation of an already-parsed manifest value into located problems. Positions (line:col) are added by the
 * loader, which knows the YAML source; this module only knows JSON paths.
 */
import type { z } from 'zod';
import { didYouMean } from '../did-you-mean.ts';
import { AegisError, type Problem } from '../errors.ts';
import { formatPath, type PathSegment } from '../json-path.ts';
import { AgentManifest } from './schema.ts';

export interface PathProblem extends Problem {
  /** Structured path for position lookup. */
  readonly segments: readonly PathSegment[];
  /** For unknown fields: the offending key itself (the loader points at the key, not the value). */
  readonly unknownKey?: string;
}

type AnySchema = z.core.$ZodType;

/** Walks wrappers (optional/default/pipe…) down to the schema that describes a value. */
function unwrapSchema(schema: AnySchema): AnySchema {
  let current = schema;
  for (let i = 0; i < 20; i++) {
    const def = current._zod.def as unknown as Record<string, unknown>;
    if (def['innerType']) current = def['innerType'] as AnySchema;
    else if (def['type'] === 'pipe' && def['in']) current = def['in'] as AnySchema;
    else break;
  }
  return current;
}

/** The field names an object at `segments` accepts, for did-you-mean. */
export function knownKeysAt(segments: readonly PathSegment[], root: AnySchema = AgentManifest): string[] {
  let candidates: AnySchema[] = [root];
  for (const segment of segments) {
    const next: AnySchema[] = [];
    for (const candidate of candidates) {
      const schema = unwrapSchema(candidate);
      const def = schema._zod.def as unknown as Record<string, unknown>;
      if (def['type'] === 'union') {
        for (const option of def['options'] as AnySchema[]) candidates.push(option);
        continue;
      }
      if (def['type'] === 'object' && typeof segment === 'string') {
        const shape = def['shape'] as Record<string, AnySchema>;
        if (shape[segment]) next.push(shape[segment]);
      } else if (def['type'] === 'array' && typeof segment === 'number')
        next.push(def['element'] as AnySchema);
      else if (def['type'] === 'record') next.push(def['valueType'] as AnySchema);
    }
    candidates = next;
  }
  const keys = new Set<string>();
  const expand = (schema: AnySchema) => {
    const inner = unwrapSchema(schema);
    const def = inner._zod.def as unknown as Record<string, unknown>;
    if (def['type'] === 'object') for (const key of Object.keys(def['shape'] as object)) keys.add(key);
    if (def['type'] === 'union') for (const option of def['options'] as AnySchema[]) expand(option);
  };
  for (const candidate of candidates) expand(candidate);
  return [...keys];
}

function describeReceived(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string')
    return `the string "${value.length > 40 ? `${value.slice(0, 40)}…` : value}"`;
  return `${typeof value} ${String(value)}`;
}

function valueAt(root: unknown, segments: readonly PathSegment[]): unknown {
  let current: unknown = root;
  for (const segment of segments) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<PropertyKey, unknown>)[segment];
  }
  return current;
}

export function issuesToProblems(
  issues: readonly z.core.$ZodIssue[],
  input: unknown,
  root: AnySchema = AgentManifest,
): PathProblem[] {
  const problems: PathProblem[] = [];
  for (const issue of issues) {
    const segments = issue.path.filter((s): s is PathSegment => typeof s !== 'symbol');
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeysAt(segments, root);
      for (const key of issue.keys) {
        const suggestion = didYouMean(key, known);
        problems.push({
          segments: [...segments, key],
          unknownKey: key,
          path: formatPath([...segments, key]),
          message: `unknown field "${key}"${suggestion ? ` — did you mean "${suggestion}"?` : ''}`,
          hint:
            known.length > 0
              ? `fields allowed here: ${known.join(', ')}`
              : 'remove it; see `aegis schema` for the format',
        });
      }
      continue;
    }
    const value = valueAt(input, segments);
    let message = issue.message;
    let hint: string | undefined;
    if (issue.code === 'invalid_type') {
      if (value === undefined) {
        const field = segments[segments.length - 1];
        message = `missing required field "${String(field)}"`;
        hint = `add ${String(field)} (expected ${issue.expected})`;
      } else {
        message = `expected ${issue.expected}, got ${describeReceived(value)}`;
      }
    } else if (issue.code === 'invalid_value' && value === undefined) {
      const field = segments[segments.length - 1];
      const options = issue.values.map((v) => JSON.stringify(v));
      message = `missing required field "${String(field)}"`;
      hint = `add ${String(field)}: ${options.length === 1 ? options[0] : `one of ${options.join(', ')}`}`;
    } else if (issue.code === 'invalid_value') {
      const options = issue.values.map((v) => JSON.stringify(v));
      const suggestion =
        typeof value === 'string'
          ? didYouMean(
              value,
              issue.values.map((v) => String(v)),
            )
          : undefined;
      message = `${describeReceived(value)} is not allowed; expected ${options.length === 1 ? options[0] : `one of ${options.join(', ')}`}`;
      if (suggestion) message += ` — did you mean "${suggestion}"?`;
    } else if (issue.code === 'invalid_union') {
      message = `${describeReceived(value)} does not match any accepted form`;
      hint = 'see `aegis schema` for the accepted forms';
    }
    problems.push({ segments, path: formatPath(segments), message, ...(hint ? { hint } : {}) });
  }
  return problems;
}

export type ValidationResult =
  | { readonly ok: true; readonly manifest: AgentManifest }
  | { readonly ok: false; readonly problems: PathProblem[] };

export function validateManifestValue(value: unknown): ValidationResult {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return {
      ok: false,
      problems: [
        {
          segments: [],
          path: '',
          message: `an agent manifest is a mapping (apiVersion, kind, metadata, spec), got ${describeReceived(value)}`,
        },
      ],
    };
  }
  const result = AgentManifest.safeParse(value);
  if (result.success) return { ok: true, manifest: result.data };
  return { ok: false, problems: issuesToProblems(result.error.issues, value) };
}

/** At most this many problems are listed (in position order); the message still counts them all. */
export const MAX_LISTED_PROBLEMS = 20;

export function manifestError(problems: readonly Problem[], file?: string): AegisError {
  const where = file ? ` in ${file}` : '';
  const listed = problems.slice(0, MAX_LISTED_PROBLEMS);
  const more = problems.length - listed.length;
  return new AegisError('MANIFEST_INVALID', `invalid agent manifest${where}: ${problems.length} problem(s)`, {
    problems: listed,
    hint:
      (more > 0 ? `${more} more problem(s) not listed; fix these first. ` : '') +
      'fix the fields above; `aegis schema` prints the full format',
  });
}
