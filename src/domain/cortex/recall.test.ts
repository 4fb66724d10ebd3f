import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isAegisError } from '../errors.ts';
import type { MemoryRecord } from './memory.ts';
import { rankRecall, recallPolicy, recencyWeight, scoreMemory } from './recall.ts';

const DAY = 24 * 3600 * 1000;
const NOW = Date.parse('2025-06-01T00:00:00.000Z');

function rec(id: string, ageDays: number, outcome: MemoryRecord['outcome'] = null): MemoryRecord {
  return {
    id,
    scope: { agent: 'a', namespace: 'default' },
    text: id,
    meta: {},
    embedderId: 'e',
    dimension: 2,
    createdAt: new Date(NOW - ageDays * DAY).toISOString(),
    expiresAt: null,
    executionId: null,
    outcome,
    source: 'execution',
  };
}

describe('recall scoring', () => {
  const policy = recallPolicy({ halfLifeMs: 10 * DAY, threshold: 0 });

  it('halves recency every half-life, down to the floor', () => {
    assert.equal(recencyWeight(0, policy), 1);
    assert.ok(Math.abs(recencyWeight(10 * DAY, policy) - 0.5) < 1e-12);
    assert.ok(Math.abs(recencyWeight(20 * DAY, policy) - 0.25) < 1e-12);
    assert.equal(recencyWeight(1000 * DAY, policy), 0.1);
    assert.equal(recencyWeight(-5 * DAY, policy), 1, 'a clock skewed into the future counts as new');
  });

  it('recency changes the order: a slightly closer old memory loses to a fresh one', () => {
    const old = { record: rec('old', 30), similarity: 0.9 };
    const fresh = { record: rec('fresh', 1), similarity: 0.8 };
    const bySimilarity = [old, fresh].sort((a, b) => b.similarity - a.similarity).map((c) => c.record.id);
    assert.deepEqual(bySimilarity, ['old', 'fresh']);
    const ranked = rankRecall([old, fresh], { k: 2, threshold: 0, nowMs: NOW, policy });
    assert.deepEqual(
      ranked.map((r) => r.record.id),
      ['fresh', 'old'],
    );
  });

  it('outcome changes the order: succeeded > unknown > failed at equal similarity and age', () => {
    const ranked = rankRecall(
      [
        { record: rec('failed', 2, 'failed'), similarity: 0.8 },
        { record: rec('unknown', 2, null), similarity: 0.8 },
        { record: rec('succeeded', 2, 'succeeded'), similarity: 0.8 },
      ],
      { k: 3, threshold: 0, nowMs: NOW, policy },
    );
    assert.deepEqual(
      ranked.map((r) => r.record.id),
      ['succeeded', 'unknown', 'failed'],
    );
    assert.deepEqual(
      ranked.map((r) => r.outcomeWeight),
      [1, 0.85, 0.6],
    );
  });

  it('a much better match still beats a successful one', () => {
    const ranked = rankRecall(
      [
        { record: rec('weak-success', 0, 'succeeded'), similarity: 0.4 },
        { record: rec('strong-failure', 0, 'failed'), similarity: 0.95 },
      ],
      { k: 2, threshold: 0, nowMs: NOW, policy },
    );
    assert.equal(ranked[0]?.record.id, 'strong-failure');
  });

  it('drops scores under the threshold and keeps k', () => {
    const candidates = [0.9, 0.5, 0.3, 0.1].map((s, i) => ({
      record: rec(`m${i}`, 0, 'succeeded'),
      similarity: s,
    }));
    assert.deepEqual(
      rankRecall(candidates, { k: 10, threshold: 0.35, nowMs: NOW, policy }).map((r) => r.record.id),
      ['m0', 'm1'],
    );
    assert.equal(rankRecall(candidates, { k: 1, threshold: 0, nowMs: NOW, policy }).length, 1);
  });

  it('score is the product and negative similarity counts as zero', () => {
    const s = scoreMemory(rec('x', 10, 'failed'), 0.8, NOW, policy);
    assert.ok(Math.abs(s.score - 0.8 * 0.5 * 0.6) < 1e-12);
    assert.equal(scoreMemory(rec('y', 0), -0.4, NOW, policy).score, 0);
  });

  it('refuses options out of range with a USAGE error naming the field', () => {
    for (const bad of [
      { halfLifeMs: 0 },
      { threshold: 1.5 },
      { outcomeWeights: { failed: 2 } },
      { outcomeWeights: { succeeded: 0.1 } },
    ]) {
      assert.throws(
        () => recallPolicy(bad),
        (e) => isAegisError(e) && e.code === 'USAGE' && /recall option/.test(e.message),
      );
    }
  });
});
