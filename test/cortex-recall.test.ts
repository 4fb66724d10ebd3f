/**
 * Recall quality on the labelled fixture (test/fixtures/cortex/recall.json): recall@5 — the share of paraphrased
 * queries whose expected memory is among the top 5 — for each embedder available here, printed as a diagnostic and
 * held to a floor for the default embedder.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { HashEmbedder } from '../src/adapters/cortex/hash-embedder.ts';
import { Cortex } from '../src/app/cortex.ts';
import { ManualClock } from '../src/app/fakes/manual-clock.ts';
import { MemoryAuditLog, toyHasher } from '../src/app/fakes/memory-audit-log.ts';
import { MemoryVectorStore } from '../src/app/fakes/memory-vector-store.ts';
import type { Embedder } from '../src/app/ports.ts';

interface Fixture {
  memories: { id: string; text: string }[];
  queries: { query: string; expect: string }[];
}

const fixture = JSON.parse(
  readFileSync(new URL('./fixtures/cortex/recall.json', import.meta.url), 'utf8'),
) as Fixture;

/** recall@k of `embedder` on the fixture, through the whole Cortex (store, search, scoring). */
export async function recallAt(embedder: Embedder, k: number): Promise<{ recall: number; missed: string[] }> {
  const clock = new ManualClock();
  const byText = new Map<string, string>();
  let n = 0;
  const cortex = new Cortex({
    embedder,
    store: new MemoryVectorStore(),
    audit: new MemoryAuditLog({ clock }),
    clock,
    ids: { memoryId: () => `mem_${++n}` },
    hasher: toyHasher,
    options: { threshold: 0 },
  });
  const scope = { agent: 'fixture', namespace: 'default' };
  for (const m of fixture.memories) {
    const stored = await cortex.store(scope, m.text, { fixtureId: m.id });
    byText.set(stored.id, m.id);
  }
  const missed: string[] = [];
  for (const q of fixture.queries) {
    const hits = await cortex.search([scope], q.query, { k });
    if (!hits.some((h) => byText.get(h.record.id) === q.expect)) missed.push(q.query);
  }
  return { recall: 1 - missed.length / fixture.queries.length, missed };
}

describe('Cortex recall on the labelled fixture', () => {
  it('has enough labelled data', () => {
    assert.ok(fixture.memories.length >= 40 && fixture.queries.length >= 20);
    const ids = new Set(fixture.memories.map((m) => m.id));
    for (const q of fixture.queries) assert.ok(ids.has(q.expect), `${q.expect} is not a memory`);
  });

  it('feature hashing (the default embedder): recall@5 ≥ 0.85', async (t) => {
    const { recall, missed } = await recallAt(new HashEmbedder(), 5);
    t.diagnostic(
      `hash-v1/512 recall@5 = ${recall.toFixed(3)} (${fixture.queries.length} queries); missed: ${missed.join(' | ')}`,
    );
    assert.ok(recall >= 0.85, `recall@5 ${recall} under 0.85; missed: ${missed.join(' | ')}`);
  });
});
