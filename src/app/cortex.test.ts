import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HashEmbedder } from '../adapters/cortex/hash-embedder.ts';
import { isAegisError } from '../domain/errors.ts';
import { Cortex } from './cortex.ts';
import { ManualClock } from './fakes/manual-clock.ts';
import { MemoryAuditLog, toyHasher } from './fakes/memory-audit-log.ts';
import { MemoryVectorStore } from './fakes/memory-vector-store.ts';
import type { Embedder } from './ports.ts';

const A = { agent: 'alice', namespace: 'default' };
const B = { agent: 'bob', namespace: 'default' };
const DAY = 24 * 3600 * 1000;

function setup(embedder: Embedder = new HashEmbedder({ dimension: 256 }), store = new MemoryVectorStore()) {
  const clock = new ManualClock(Date.parse('2025-06-01T00:00:00.000Z'));
  const audit = new MemoryAuditLog({ clock });
  let n = 0;
  const ids = { memoryId: () => `mem_${String(++n).padStart(4, '0')}` };
  const cortex = new Cortex({
    embedder,
    store,
    audit,
    clock,
    ids,
    hasher: toyHasher,
    options: { threshold: 0 },
  });
  return { cortex, clock, audit, store };
}

describe('Cortex', () => {
  it("agent B never recalls agent A's memories — not by similar text, not through filters", async () => {
    const { cortex, audit } = setup();
    const secret = await cortex.store(
      A,
      'the staging database password rotation runbook for alice',
      { team: 'ops' },
      {
        executionId: 'ex_a',
        outcome: 'succeeded',
        source: 'execution',
      },
    );
    await cortex.store(B, 'bob likes gardening', { team: 'garden' });
    for (const filter of [
      undefined,
      { meta: { team: 'ops' } },
      { executionId: 'ex_a' },
      { outcome: 'succeeded' as const },
    ]) {
      const hits = await cortex.search([B], 'staging database password rotation runbook', {
        k: 10,
        ...(filter ? { filter } : {}),
      });
      assert.ok(
        hits.every((h) => h.record.scope.agent === 'bob'),
        `leaked with filter ${JSON.stringify(filter)}`,
      );
    }
    assert.equal(await cortex.get(B, secret.id), null);
    assert.equal(await cortex.forget(B, secret.id), false, "B cannot forget A's memory");
    assert.ok(await cortex.get(A, secret.id));
    const own = await cortex.search([A], 'password rotation runbook', { k: 3 });
    assert.equal(own[0]?.record.id, secret.id);
    // The attempt is on the ledger, without the text.
    const forgets = audit.entries.filter((e) => e.kind === 'memory.forget');
    assert.deepEqual(
      forgets.map((e) => e.data),
      [{ scope: 'bob/default', id: secret.id, found: false }],
    );
  });

  it('audits store, search and forget with ids, sizes and digests — never the text or query', async () => {
    const { cortex, audit } = setup();
    const text = 'deploy of payments-api failed: image pull backoff on registry.internal';
    const m = await cortex.store(
      A,
      text,
      { service: 'payments-api' },
      { executionId: 'ex_1', outcome: 'failed' },
    );
    await cortex.search([A], 'why did the payments deploy fail', { k: 5, executionId: 'ex_2' });
    await cortex.forget(A, m.id);
    const entries = audit.entries.filter((e) => e.kind.startsWith('memory.'));
    assert.deepEqual(
      entries.map((e) => [e.kind, e.execution]),
      [
        ['memory.store', 'ex_1'],
        ['memory.search', 'ex_2'],
        ['memory.forget', null],
      ],
    );
    const store = entries[0]?.data as Record<string, unknown>;
    assert.equal(store['id'], m.id);
    assert.equal(store['bytes'], text.length);
    assert.equal(store['textDigest'], toyHasher.sha256Hex(text));
    const search = entries[1]?.data as Record<string, unknown>;
    assert.deepEqual(search['ids'], [m.id]);
    assert.deepEqual(search['scopes'], ['alice/default']);
    const ledger = JSON.stringify(audit.entries);
    for (const word of ['image pull backoff', 'registry.internal', 'why did the payments', 'payments-api']) {
      assert.ok(!ledger.includes(word), `ledger holds content: ${word}`);
    }
  });

  it('recency and outcome reorder what similarity alone would return', async () => {
    const { cortex, clock } = setup();
    const old = await cortex.store(
      A,
      'rotate the TLS certificate of the ingress gateway',
      {},
      { outcome: 'succeeded' },
    );
    clock.advance(90 * DAY);
    const failed = await cortex.store(
      A,
      'rotate the TLS certificate of the ingress gateway',
      {},
      { outcome: 'failed' },
    );
    const fresh = await cortex.store(
      A,
      'rotate the TLS certificate of the ingress gateway',
      {},
      { outcome: 'succeeded' },
    );
    const hits = await cortex.search([A], 'rotate the TLS certificate of the ingress gateway', { k: 3 });
    assert.deepEqual(
      hits.map((h) => h.record.id),
      [fresh.id, failed.id, old.id],
    );
    assert.ok(
      hits.every((h) => Math.abs(h.similarity - 1) < 1e-6),
      'same text, same similarity',
    );
  });

  it('refuses to mix embedders in a scope and points at `aegis memory reembed`; reembed fixes it', async () => {
    const store = new MemoryVectorStore();
    const first = setup(new HashEmbedder({ dimension: 128 }), store);
    const m = await first.cortex.store(A, 'cache warmup took 40 seconds', {});
    const second = setup(new HashEmbedder({ dimension: 256 }), store);
    const refused = (e: unknown) =>
      isAegisError(e) &&
      e.code === 'CONFLICT' &&
      e.message.includes('hash-v1/128') &&
      (e.hint ?? '').includes('aegis memory reembed alice');
    await assert.rejects(second.cortex.store(A, 'another', {}), refused);
    await assert.rejects(second.cortex.search([A], 'cache warmup', { k: 1 }), refused);
    assert.deepEqual(await second.cortex.reembed(A), { count: 1 });
    const hits = await second.cortex.search([A], 'cache warmup', { k: 1 });
    assert.equal(hits[0]?.record.id, m.id);
    assert.equal(hits[0]?.record.embedderId, 'hash-v1/256');
    assert.deepEqual(await second.cortex.reembed('all'), { count: 0 });
  });

  it('expires memories after their ttl', async () => {
    const { cortex, clock, store } = setup();
    await cortex.store(A, 'temporary note about a flaky test', {}, { ttlMs: DAY });
    assert.equal((await cortex.search([A], 'flaky test', { k: 1 })).length, 1);
    clock.advance(DAY + 1);
    assert.equal((await cortex.search([A], 'flaky test', { k: 1 })).length, 0);
    assert.equal(await cortex.forgetExpired(), 1);
    assert.equal(await store.count(), 0);
  });

  it('rejects bad input with clear errors', async () => {
    const { cortex } = setup();
    const code = (c: string, re: RegExp) => (e: unknown) =>
      isAegisError(e) && e.code === c && re.test(e.message);
    await assert.rejects(cortex.store(A, '  ', {}), code('USAGE', /non-empty/));
    await assert.rejects(
      cortex.store({ agent: 'Bad Name', namespace: 'default' }, 'x', {}),
      code('USAGE', /agent/),
    );
    await assert.rejects(cortex.store(A, 'x'.repeat(20_000), {}), code('PAYLOAD_TOO_LARGE', /20000 bytes/));
    await assert.rejects(cortex.store(A, 'x', { d: new Date() } as never), code('USAGE', /plain JSON/));
    await assert.rejects(cortex.store(A, 'x', {}, { ttlMs: -1 }), code('USAGE', /ttlMs/));
    await assert.rejects(cortex.search([A], 'x', { k: 0 }), code('USAGE', /k is 0/));
    await assert.rejects(cortex.search([A], 'x', { k: 1, threshold: 2 }), code('USAGE', /threshold/));
    await assert.rejects(cortex.list(A, { limit: 5000 }), code('USAGE', /limit/));
  });
});
