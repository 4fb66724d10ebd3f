import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HashEmbedder } from '../adapters/cortex/hash-embedder.ts';
import { Cortex } from './cortex.ts';
import { ManualClock } from './fakes/manual-clock.ts';
import { MemoryAuditLog, toyHasher } from './fakes/memory-audit-log.ts';
import { MemoryVectorStore } from './fakes/memory-vector-store.ts';
import { startMemoryExpiry } from './memory-expiry.ts';

function setup() {
  const clock = new ManualClock();
  const audit = new MemoryAuditLog({ clock });
  const store = new MemoryVectorStore();
  let n = 0;
  const cortex = new Cortex({
    embedder: new HashEmbedder({ dimension: 64 }),
    store,
    audit,
    clock,
    ids: { memoryId: () => `mem_${++n}` },
    hasher: toyHasher,
  });
  return { clock, audit, store, cortex };
}

const scope = { agent: 'alice', namespace: 'default' };

describe('memory expiry sweep', () => {
  it('deletes memories past their ttl at start and on each interval; each sweep is one audit entry with the count', async () => {
    const { clock, audit, store, cortex } = setup();
    await cortex.store(scope, 'old and short-lived', {}, { ttlMs: 1_000 });
    await clock.advance(2_000);
    await cortex.store(scope, 'short-lived too', {}, { ttlMs: 30_000 });
    await cortex.store(scope, 'kept forever');
    const errors: unknown[] = [];
    const expiry = startMemoryExpiry(cortex, clock, { intervalMs: 60_000, onError: (e) => errors.push(e) });
    assert.equal(await expiry.sweep(), 1, 'joins the sweep started at start, which took the expired one');
    const forgets = () =>
      audit.entries.filter((e) => e.kind === 'memory.forget').map((e) => e.data as Record<string, unknown>);
    assert.deepEqual(forgets(), [{ expired: 1 }]);
    assert.equal(
      (await store.list(scope, { limit: 10, after: null, now: '1970-01-01T00:00:00Z' })).items.length,
      2,
    );

    await clock.advance(59_000);
    assert.deepEqual(forgets(), [{ expired: 1 }], 'not yet: the interval has not passed');
    await clock.advance(1_000);
    assert.deepEqual(forgets(), [{ expired: 1 }, { expired: 1 }]);
    const left = await store.list(scope, { limit: 10, after: null, now: '1970-01-01T00:00:00Z' });
    assert.deepEqual(
      left.items.map((r) => r.text),
      ['kept forever'],
    );
    await clock.advance(120_000);
    assert.equal(forgets().length, 2, 'a sweep that deletes nothing writes nothing');
    await expiry.stop();
    assert.equal(clock.pendingTimers, 0);
    assert.deepEqual(errors, []);
  });

  it('a failing sweep is reported and the next one still runs', async () => {
    const clock = new ManualClock();
    let calls = 0;
    const errors: unknown[] = [];
    const expiry = startMemoryExpiry(
      {
        forgetExpired: async () => {
          calls++;
          if (calls === 1) throw new Error('database is locked');
          return 0;
        },
      },
      clock,
      { intervalMs: 1_000, onError: (e) => errors.push(e) },
    );
    await expiry.sweep().catch(() => {});
    assert.equal(calls, 1);
    await clock.advance(1_000);
    assert.equal(calls, 2);
    assert.match(String(errors[0]), /database is locked/);
    await expiry.stop();
  });
});
