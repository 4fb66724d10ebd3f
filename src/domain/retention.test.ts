import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cutoff, formatRetention, keepsEverything, parseRetention, retentionPolicy } from './retention.ts';

describe('retention windows', () => {
  it('parses days and weeks besides the usual durations, and refuses nonsense with what to write', () => {
    assert.deepEqual(parseRetention('30d'), { ok: true, value: 30 * 86_400_000 });
    assert.deepEqual(parseRetention('2w'), { ok: true, value: 14 * 86_400_000 });
    assert.deepEqual(parseRetention('12h'), { ok: true, value: 12 * 3_600_000 });
    const bad = parseRetention('30 days');
    assert.equal(bad.ok, false);
    assert.match((bad as { error: string }).error, /s, m, h, d or w/);
    assert.equal(parseRetention('0d').ok, false);
  });

  it('fills logs, sandboxes and the ledger from the executions window; the default keeps everything', () => {
    const policy = retentionPolicy({ executionsMs: 1000, logsMs: 10 });
    assert.deepEqual(policy, { executionsMs: 1000, logsMs: 10, sandboxesMs: 1000, auditMs: 1000 });
    assert.equal(keepsEverything(retentionPolicy({})), true);
    assert.equal(cutoff(5000, 1000), new Date(4000).toISOString());
    assert.equal(cutoff(5000, null), null);
    assert.equal(formatRetention(7 * 86_400_000), '7d');
  });
});
