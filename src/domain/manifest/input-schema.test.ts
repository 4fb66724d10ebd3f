import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AegisError } from '../errors.ts';
import { compileManifest } from './compiled.ts';
import { checkInputSchema, inputValidator, MAX_INPUT_SCHEMA_BYTES } from './input-schema.ts';
import { validateManifestValue } from './validate.ts';

const SCHEMA = {
  type: 'object',
  properties: {
    text: { type: 'string', minLength: 1 },
    mode: { enum: ['short', 'long'] },
    items: { type: 'array', items: { $ref: '#/$defs/item' } },
  },
  required: ['text'],
  additionalProperties: false,
  $defs: { item: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] } },
};

function manifestWith(input: unknown) {
  return {
    apiVersion: 'aegis.dev/v1',
    kind: 'Agent',
    metadata: { name: 'demo' },
    spec: { runtime: { language: 'python', entrypoint: 'main.py' }, input },
  };
}

function problems(input: unknown): string[] {
  const result = validateManifestValue(manifestWith(input));
  return result.ok ? [] : result.problems.map((p) => `${p.path}: ${p.message}`);
}

describe('spec.input', () => {
  it('accepts a JSON Schema object and compiles it into the agent', () => {
    const result = validateManifestValue(manifestWith(SCHEMA));
    assert.ok(result.ok);
    assert.deepEqual(compileManifest(result.manifest, '/srv/demo').input, SCHEMA);
    const absent = validateManifestValue({ ...manifestWith(undefined), spec: manifestWith(1).spec });
    assert.equal(absent.ok, false, 'a number is not a schema');
  });

  it('locates what is wrong in the schema by JSON path', () => {
    assert.deepEqual(problems({ type: 'object', properties: { a: { type: 'strng' } } }), [
      'spec.input.properties.a.type: not a valid JSON Schema here: must be one of "array", "boolean", "integer", "null", "number", "object", "string"',
    ]);
    assert.match(
      problems({ type: 'object', properites: {} })[0]!,
      /^spec\.input\.properites: .*unknown keyword/,
    );
    assert.match(problems({ type: 'array' })[0]!, /^spec\.input\.type: .*must be "object"/);
    assert.match(problems({ properties: {} })[0]!, /^spec\.input: .*needs `type: object`/);
    assert.match(problems([])[0]!, /^spec\.input: /);
  });

  it('refuses $refs that leave the schema (nothing is fetched) and oversized or too deep schemas', () => {
    assert.match(
      problems({ type: 'object', properties: { a: { $ref: 'http://127.0.0.1:1/evil.json' } } })[0]!,
      /does not compile: can't resolve reference/,
    );
    const big = { type: 'object', description: 'x'.repeat(MAX_INPUT_SCHEMA_BYTES) };
    assert.match(checkInputSchema(big)[0]!.message, /bytes as JSON; at most/);
    let deep: Record<string, unknown> = { type: 'object' };
    for (let i = 0; i < 40; i++) deep = { type: 'object', properties: { a: deep } };
    assert.match(checkInputSchema(deep)[0]!.message, /nests more than/);
  });

  it('refuses a bad execution input with USAGE naming its JSON path', () => {
    const validator = inputValidator(SCHEMA, 'demo');
    validator.check({ text: 'ok', mode: 'short', items: [{ n: 1 }] });
    const cases: [unknown, RegExp][] = [
      [{}, /^input\.text is required/],
      [{ text: '' }, /^input\.text must NOT have fewer than 1 characters/],
      [{ text: 'x', mode: 'medium' }, /^input\.mode must be one of "short", "long"/],
      [{ text: 'x', items: [{ n: 1 }, { n: 'two' }] }, /^input\.items\[1\]\.n must be integer/],
      [{ text: 'x', other: 1 }, /^input\.other is not a field this agent takes/],
      [null, /^input must be object/],
    ];
    for (const [input, message] of cases) {
      assert.throws(
        () => validator.check(input),
        (error: unknown) =>
          error instanceof AegisError &&
          error.code === 'USAGE' &&
          message.test(error.message) &&
          error.problems[0]!.path.startsWith('input'),
      );
    }
  });
});
