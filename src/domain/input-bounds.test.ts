import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isAegisError } from './errors.ts';
import { boundText, checkInputDepth, MAX_INPUT_DEPTH, tooDeepAt } from './input-bounds.ts';

const nested = (depth: number): unknown => {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = i % 2 ? [value] : { k: value };
  return value;
};

describe('input bounds', () => {
  it('finds the first container nested too deep, without recursion', () => {
    assert.equal(tooDeepAt(nested(MAX_INPUT_DEPTH), MAX_INPUT_DEPTH), undefined);
    assert.equal(tooDeepAt({ a: [1, 'x', null, { b: true }] }, 3), undefined);
    assert.deepEqual(tooDeepAt({ a: [1, { b: [] }] }, 2), ['a', 1]);
    // 100,000 deep: a recursive walk would overflow the stack here.
    assert.equal(tooDeepAt(nested(100_000), MAX_INPUT_DEPTH)?.length, MAX_INPUT_DEPTH);
  });

  it('refuses deep input with a located USAGE error, and accepts the rest', () => {
    assert.doesNotThrow(() => checkInputDepth(nested(MAX_INPUT_DEPTH)));
    assert.doesNotThrow(() => checkInputDepth(undefined));
    assert.throws(
      () => checkInputDepth(JSON.parse(`${'['.repeat(10_000)}1${']'.repeat(10_000)}`)),
      (error) =>
        isAegisError(error) &&
        error.code === 'USAGE' &&
        /nested more than 100 levels/.test(error.message) &&
        error.problems[0]!.path.startsWith('input[0][0]') &&
        error.message.length < 400,
    );
  });

  it('bounds text to a prefix that says how much was left out', () => {
    assert.equal(boundText('short', 10), 'short');
    assert.equal(boundText('x'.repeat(25), 10), `${'x'.repeat(10)}… (15 more characters)`);
  });
});
