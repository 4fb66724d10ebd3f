import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatBytes, parseCpu, parseDuration, parseSize } from './units.ts';

describe('units', () => {
  it('parses sizes in binary and decimal units', () => {
    assert.deepEqual(parseSize('256Mi'), { ok: true, value: 256 * 1024 ** 2 });
    assert.deepEqual(parseSize('1.5Gi'), { ok: true, value: 1.5 * 1024 ** 3 });
    assert.deepEqual(parseSize('512M'), { ok: true, value: 512_000_000 });
    assert.deepEqual(parseSize(4096), { ok: true, value: 4096 });
  });

  it('follows Kubernetes quantities exactly: M is 10^6, Mi is 2^20, k is lower case, exponents work', () => {
    assert.deepEqual(parseSize('1M'), { ok: true, value: 1_000_000 });
    assert.deepEqual(parseSize('1Mi'), { ok: true, value: 1024 ** 2 });
    assert.deepEqual(parseSize('2k'), { ok: true, value: 2000 });
    assert.deepEqual(parseSize('1e6'), { ok: true, value: 1_000_000 });
    assert.deepEqual(parseSize('1.5k'), { ok: true, value: 1500 });
  });

  it('refuses MB, GB, KiB, K and B with what to write instead', () => {
    for (const [input, suggestion] of [
      ['512MB', /did you mean "M" \(10\^6\) or "Mi" \(2\^20\)/],
      ['1GB', /did you mean "G" \(10\^9\) or "Gi" \(2\^30\)/],
      ['64MiB', /did you mean "Mi"/],
      ['4K', /did you mean "k" \(1000\) or "Ki" \(1024\)/],
      ['100B', /a bare number of bytes/],
    ] as const) {
      const result = parseSize(input);
      assert.equal(result.ok, false, input);
      assert.match((result as { error: string }).error, suggestion);
    }
  });

  it('rejects unknown size units with the accepted ones named', () => {
    const result = parseSize('12Zi');
    assert.equal(result.ok, false);
    assert.match((result as { error: string }).error, /unknown size unit "Zi".*Mi/);
    assert.equal(parseSize('lots').ok, false);
    assert.equal(parseSize(-1).ok, false);
  });

  it('parses durations; a bare number means seconds', () => {
    assert.deepEqual(parseDuration('500ms'), { ok: true, value: 500 });
    assert.deepEqual(parseDuration('30s'), { ok: true, value: 30_000 });
    assert.deepEqual(parseDuration('5m'), { ok: true, value: 300_000 });
    assert.deepEqual(parseDuration(2), { ok: true, value: 2000 });
    assert.equal(parseDuration('0s').ok, false);
    assert.match(
      (parseDuration('3 weeks') as { error: string }).error,
      /unknown duration unit|not a duration/,
    );
  });

  it('parses CPU as millicores', () => {
    assert.deepEqual(parseCpu('500m'), { ok: true, value: 500 });
    assert.deepEqual(parseCpu('2'), { ok: true, value: 2000 });
    assert.deepEqual(parseCpu(0.25), { ok: true, value: 250 });
    assert.equal(parseCpu('1m').ok, false);
    assert.equal(parseCpu('fast').ok, false);
  });

  it('formats bytes for humans', () => {
    assert.equal(formatBytes(256 * 1024 ** 2), '256 MiB');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(12), '12 bytes');
  });
});
