import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CanonicalJsonError, canonicalJson } from './canonical-json.ts';
import { entryPreimage } from './entry.ts';

describe('canonicalJson (RFC 8785 style)', () => {
  it('sorts keys at every depth and writes no whitespace', () => {
    assert.equal(
      canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: null } }),
      '{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}',
    );
  });

  it('matches the RFC 8785 sample (numbers, string escapes, literals)', () => {
    const input = JSON.parse(
      '{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],' +
        '"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/","literals":[null,true,false]}',
    );
    assert.equal(
      canonicalJson(input),
      '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],' +
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    );
  });

  it('orders keys by UTF-16 code units (the RFC 8785 sorting sample)', () => {
    const input = {
      '\u20ac': 'Euro',
      '\r': 'CR',
      '\ufb33': 'Hebrew',
      '1': 'One',
      '\ud83d\ude00': 'Smiley',
      '\u0080': 'Ctl',
      '\u00f6': 'o',
    };
    const order = ['\r', '1', '\u0080', '\u00f6', '\u20ac', '\ud83d\ude00', '\ufb33'];
    const expected = `{${order.map((k) => `${JSON.stringify(k)}:${JSON.stringify(input[k as keyof typeof input])}`).join(',')}}`;
    assert.equal(canonicalJson(input), expected);
  });

  it('writes -0 as 0 and equal values identically whatever their key order', () => {
    assert.equal(canonicalJson(-0), '0');
    assert.equal(canonicalJson({ x: 1, y: [1, 2] }), canonicalJson({ y: [1, 2], x: 1 }));
  });

  it('rejects what JSON cannot represent, naming the path', () => {
    const cases: [unknown, RegExp][] = [
      [{ a: undefined }, /\$\.a is undefined/],
      [{ a: [1, Number.NaN] }, /\$\.a\[1\] is NaN/],
      [{ n: Number.POSITIVE_INFINITY }, /\$\.n is Infinity/],
      [{ d: new Date(0) }, /\$\.d is a Date object/],
      [{ m: new Map() }, /\$\.m is a Map object/],
      [{ b: 1n }, /\$\.b is a bigint/],
      [{ f: () => 1 }, /\$\.f is a function/],
      [{ s: Symbol('x') }, /\$\.s is a symbol/],
      // biome-ignore lint/suspicious/noSparseArray: the sparse slot is the point
      [{ sparse: [1, , 3] }, /\$\.sparse\[1\] is an empty array slot/],
    ];
    for (const [value, message] of cases) {
      assert.throws(
        () => canonicalJson(value),
        (error: unknown) => {
          assert.ok(error instanceof CanonicalJsonError);
          assert.match(error.message, message);
          return true;
        },
      );
    }
  });

  it('accepts objects without a prototype', () => {
    const bare = Object.create(null) as Record<string, unknown>;
    bare['k'] = 'v';
    assert.equal(canonicalJson(bare), '{"k":"v"}');
  });

  it('entryPreimage is exactly the canonical JSON of the entry without its hash', () => {
    const entry = {
      seq: 42,
      ts: '2025-01-01T00:00:00.000Z',
      execution: 'ex_01"quoted"',
      kind: 'policy.mount',
      data: { target: '/mnt/x', source: '/srv/é', mode: 'ro' },
      prevHash: 'ab'.repeat(32),
    };
    const { data, ...rest } = entry;
    assert.equal(entryPreimage({ ...rest, dataJson: canonicalJson(data) }), canonicalJson(entry));
    assert.equal(
      entryPreimage({ ...rest, execution: null, dataJson: '{}' }),
      canonicalJson({ ...entry, execution: null, data: {} }),
    );
  });
});
