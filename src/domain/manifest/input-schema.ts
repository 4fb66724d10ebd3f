/**
 * `spec.input`: the JSON Schema (draft 2020-12) an agent's input must satisfy. Checked once when the manifest loads
 * (shape, size, meta-schema, every `$ref` local), then compiled with Ajv (docs/adr/0080-input-schema-ajv.md) and
 * applied to each execution's input before anything is stored: a bad input is a USAGE error naming its JSON path.
 * MCP serves the same schema as the agent's tool `inputSchema`, so it must describe an object.
 */
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import { AegisError } from '../errors.ts';
import { boundText } from '../input-bounds.ts';
import { formatPath, type PathSegment } from '../json-path.ts';

/** Largest `spec.input` accepted, as compact JSON. */
export const MAX_INPUT_SCHEMA_BYTES = 64 * 1024;
/** Deepest nesting of objects/arrays in `spec.input`. */
export const MAX_INPUT_SCHEMA_DEPTH = 32;

export type JsonSchemaObject = Readonly<Record<string, unknown>>;

export interface InputSchemaProblem {
  /** Path below `spec.input`. */
  readonly segments: readonly PathSegment[];
  readonly message: string;
  readonly hint?: string;
}

function newAjv(): Ajv2020 {
  // strict: unknown keywords (a typo such as "properites") are errors, not silently ignored constraints.
  // No loadSchema: a `$ref` to anything outside the schema fails to compile instead of being fetched.
  return new Ajv2020({ strict: true, strictRequired: false, allErrors: false, logger: false });
}

function depthOf(value: unknown): number {
  let max = 0;
  const stack: { value: unknown; depth: number }[] = [{ value, depth: 0 }];
  while (stack.length > 0) {
    const { value: current, depth } = stack.pop()!;
    if (current === null || typeof current !== 'object') continue;
    if (depth > max) max = depth;
    if (max > MAX_INPUT_SCHEMA_DEPTH) return max;
    for (const child of Object.values(current)) stack.push({ value: child, depth: depth + 1 });
  }
  return max;
}

function pointerToSegments(pointer: string): PathSegment[] {
  if (pointer === '') return [];
  return pointer
    .split('/')
    .slice(1)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((part) => (/^(0|[1-9]\d*)$/.test(part) ? Number(part) : part));
}

/** Problems with `spec.input` as written; empty when it is a usable input schema. */
export function checkInputSchema(value: unknown): InputSchemaProblem[] {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return [
      {
        segments: [],
        message: 'spec.input is a JSON Schema, i.e. a mapping',
        hint: 'e.g. {type: object, properties: {text: {type: string}}, required: [text]}',
      },
    ];
  }
  const schema = value as Record<string, unknown>;
  const bytes = new TextEncoder().encode(JSON.stringify(schema)).length;
  if (bytes > MAX_INPUT_SCHEMA_BYTES) {
    return [
      {
        segments: [],
        message: `spec.input is ${bytes} bytes as JSON; at most ${MAX_INPUT_SCHEMA_BYTES} are accepted`,
        hint: 'describe the input more briefly; validate details inside the agent',
      },
    ];
  }
  if (depthOf(schema) > MAX_INPUT_SCHEMA_DEPTH) {
    return [{ segments: [], message: `spec.input nests more than ${MAX_INPUT_SCHEMA_DEPTH} levels deep` }];
  }
  if (schema['type'] !== 'object') {
    return [
      {
        segments: schema['type'] === undefined ? [] : ['type'],
        message:
          schema['type'] === undefined
            ? 'spec.input needs `type: object` (an agent input is a JSON object; MCP tools need one)'
            : `spec.input.type must be "object", got ${JSON.stringify(schema['type'])}`,
        hint: 'put the fields under properties: {type: object, properties: {…}, required: […]}',
      },
    ];
  }
  const ajv = newAjv();
  if (!ajv.validateSchema(schema)) {
    // Ajv lists the most specific failure first; the rest are the alternatives that failed around it.
    return (ajv.errors ?? []).slice(0, 1).map((error) => metaProblem(error));
  }
  try {
    ajv.compile(schema);
  } catch (error) {
    const unknown = /unknown keyword: "([^"]+)"/.exec((error as Error).message)?.[1];
    return [
      {
        segments: (unknown === undefined ? undefined : pathOfKey(schema, unknown)) ?? [],
        message: `spec.input does not compile: ${(error as Error).message}`,
        hint: 'use only standard JSON Schema 2020-12 keywords; `$ref` may only point inside spec.input (#/$defs/…)',
      },
    ];
  }
  return [];
}

/** Where `key` first appears as an object key in `value` (breadth-first), for locating an unknown keyword. */
function pathOfKey(value: unknown, key: string): PathSegment[] | undefined {
  const queue: { value: unknown; path: PathSegment[] }[] = [{ value, path: [] }];
  while (queue.length > 0) {
    const { value: current, path } = queue.shift()!;
    if (current === null || typeof current !== 'object') continue;
    if (!Array.isArray(current) && Object.hasOwn(current, key)) return [...path, key];
    for (const [name, child] of Object.entries(current))
      queue.push({ value: child, path: [...path, Array.isArray(current) ? Number(name) : name] });
  }
  return undefined;
}

function metaProblem(error: ErrorObject): InputSchemaProblem {
  const segments = pointerToSegments(error.instancePath);
  const params = error.params as Record<string, unknown>;
  let message = `${error.message ?? 'invalid'}`;
  if (error.keyword === 'enum' && Array.isArray(params['allowedValues'])) {
    message = `must be one of ${(params['allowedValues'] as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
  }
  return {
    segments,
    message: `not a valid JSON Schema here: ${message}`,
    hint: 'spec.input follows JSON Schema draft 2020-12 (https://json-schema.org/draft/2020-12)',
  };
}

/** A compiled `spec.input`; `check` throws USAGE naming the first offending JSON path of the input. */
export interface InputValidator {
  check(input: unknown, where?: string): void;
}

const validators = new WeakMap<object, ValidateFunction>();

/** Compiles (once per schema object) and returns the validator; the schema was checked by `checkInputSchema`. */
export function inputValidator(schema: JsonSchemaObject, agent: string): InputValidator {
  let validate = validators.get(schema);
  if (validate === undefined) {
    validate = newAjv().compile(schema);
    validators.set(schema, validate);
  }
  const compiled = validate;
  return {
    check(input: unknown, where = 'input'): void {
      if (compiled(input ?? null)) return;
      const error = compiled.errors?.[0];
      const segments = error ? pointerToSegments(error.instancePath) : [];
      const params = (error?.params ?? {}) as Record<string, unknown>;
      if (error?.keyword === 'required') segments.push(String(params['missingProperty']));
      if (error?.keyword === 'additionalProperties') segments.push(String(params['additionalProperty']));
      const path = boundText(formatPath([where, ...segments]), 200);
      const message =
        error?.keyword === 'required'
          ? 'is required'
          : error?.keyword === 'additionalProperties'
            ? 'is not a field this agent takes'
            : error?.keyword === 'enum' && Array.isArray(params['allowedValues'])
              ? `must be one of ${(params['allowedValues'] as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`
              : (error?.message ?? 'does not match');
      throw new AegisError('USAGE', `${path} ${message} (agent ${agent}'s spec.input)`, {
        problems: [{ path, message }],
        hint: `the input must match the JSON Schema in agent ${agent}'s spec.input (\`aegis agents show ${agent}\` or the MCP tool's inputSchema)`,
      });
    },
  };
}
