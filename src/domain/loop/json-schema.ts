/**
 * JSON Schema (2020-12) checks for `spec.execution.validation[].json_schema`, with Ajv (the library ADR 0080 chose
 * for `spec.input`). Pure: no I/O; a `$ref` to anything outside the schema fails to compile instead of being fetched.
 */
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';

function newAjv(): Ajv2020 {
  // strict: an unknown keyword (a typo such as "properites") is an error, not a silently ignored constraint.
  return new Ajv2020({ strict: true, strictRequired: false, allErrors: false, logger: false });
}

/** Why `schema` is not a usable JSON Schema, or undefined when it compiles. */
export function jsonSchemaProblem(schema: Readonly<Record<string, unknown>>): string | undefined {
  const ajv = newAjv();
  if (!ajv.validateSchema(schema)) {
    const error = ajv.errors?.[0];
    return `not a valid JSON Schema: ${error?.instancePath || '/'} ${error?.message ?? 'invalid'}`;
  }
  try {
    ajv.compile(schema);
    return undefined;
  } catch (error) {
    return `JSON Schema does not compile: ${(error as Error).message}`;
  }
}

const compiled = new WeakMap<object, ValidateFunction>();

/** Checks `value` against `schema` (compiled once per schema object): undefined when it passes, else why not. */
export function jsonSchemaViolation(
  schema: Readonly<Record<string, unknown>>,
  value: unknown,
): string | undefined {
  let validate = compiled.get(schema);
  if (validate === undefined) {
    validate = newAjv().compile(schema);
    compiled.set(schema, validate);
  }
  if (validate(value)) return undefined;
  const error = validate.errors?.[0];
  const params = (error?.params ?? {}) as Record<string, unknown>;
  const where = error?.instancePath || '(the answer)';
  if (error?.keyword === 'required')
    return `${where}: property "${String(params['missingProperty'])}" is required`;
  if (error?.keyword === 'additionalProperties')
    return `${where}: property "${String(params['additionalProperty'])}" is not allowed`;
  return `${where} ${error?.message ?? 'does not match'}`;
}
