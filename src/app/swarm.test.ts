/**
 * The swarm bus and locks as an attacker meets them (issue 16): another swarm's topics and locks are unreachable,
 * oversize and too-fast publishes are refused and audited, a stale fencing token is rejected, no spec.swarm → 403.
 * And the bus survives a subscriber restart: resume after the last id, no loss, duplicates dropped by id.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SwarmSpec } from '../domain/manifest/compiled.ts';
import { ManualClock } from './fakes/manual-clock.ts';
import { MemoryAuditLog } from './fakes/memory-audit-log.ts';
import { MemorySwarmStore } from './fakes/memory-swarm-store.ts';
import { SwarmBus, type SwarmCaller } from './swarm-bus.ts';
import { SwarmLocks } from './swarm-locks.ts';

const SPEC: SwarmSpec = {
  canSpawn: [],
  maxChildren: 8,
  maxDepth: 2,
  budget: { executions: null, tokens: null, usd: null },
  bus: { maxMessageBytes: 64, ratePerSecond: 5 },
  locks: { global: false },
};

function caller(executionId: string, swarmId: string, spec: SwarmSpec | null = SPEC): SwarmCaller {
  return { executionId, agent: 'worker', swarmId, swarm: spec ?? undefined, nodeId: 'node-1' };
}

function setup() {
  const clock = new ManualClock();
  const audit = new MemoryAuditLog();
  const store = new MemorySwarmStore();
  const sha256Hex = (text: string) => `sha:${text.length}`;
  const bus = new SwarmBus({ store, audit, clock, sha256Hex });
  const locks = new SwarmLocks({ store, audit, clock });
  return { clock, audit, store, bus, locks };
}

/** Moves the clock 100 ms at a time until `promise` settles (each wait re-arms its timer after a store round trip). */
async function advanceUntil<T>(clock: ManualClock, promise: Promise<T>): Promise<T> {
  let outcome: { ok: true; value: T } | { ok: false; error: unknown } | undefined;
  promise.then(
    (value) => {
      outcome = { ok: true, value };
    },
    (error: unknown) => {
      outcome = { ok: false, error };
    },
  );
  for (let n = 0; n < 1000 && outcome === undefined; n++) await clock.advance(100);
  if (outcome === undefined) throw new Error('did not settle within 100 s of clock time');
  if (!outcome.ok) throw outcome.error;
  return outcome.value;
}

const kinds = (audit: MemoryAuditLog, kind: string) => audit.entries.filter((e) => e.kind === kind);

describe('swarm bus', () => {
  it("keeps a swarm's topics to itself: another swarm's subscriber sees nothing of them", async () => {
    const { bus } = setup();
    await bus.publish(caller('ex_a', 'root_a'), 'plans', { secret: 'a' });
    const mine = await bus.subscribe(caller('ex_a2', 'root_a'), 'plans');
    assert.equal(mine.messages.length, 1);
    // The attacker names the same topic; its swarm is its own root, fixed by the runtime, not by the request.
    const theirs = await bus.subscribe(caller('ex_evil', 'root_evil'), 'plans');
    assert.deepEqual(theirs.messages, []);
  });

  it('refuses and audits an oversize message and a publish over the rate', async () => {
    const { bus, audit } = setup();
    await assert.rejects(bus.publish(caller('ex_a', 'r'), 't', 'x'.repeat(100)), {
      code: 'PAYLOAD_TOO_LARGE',
    });
    for (let n = 0; n < 5; n++) await bus.publish(caller('ex_a', 'r'), 't', n);
    await assert.rejects(bus.publish(caller('ex_a', 'r'), 't', 6), { code: 'RATE_LIMITED' });
    const entries = kinds(audit, 'swarm.message');
    assert.equal(entries.filter((e) => 'refused' in e.data).length, 2);
    assert.equal(entries.filter((e) => 'digest' in e.data).length, 5);
    assert.ok(!JSON.stringify(entries).includes('xxxx'), 'the ledger holds no content');
    assert.equal(
      (await bus.subscribe(caller('ex_b', 'r'), 't')).messages.length,
      5,
      'refused ones are not stored',
    );
  });

  it('refuses an agent without spec.swarm (audited through onDenied)', async () => {
    const { bus, locks } = setup();
    const denied: string[] = [];
    const onDenied = (op: string) => denied.push(op);
    await assert.rejects(bus.publish(caller('ex_a', 'r', null), 't', 1, onDenied), {
      code: 'PERMISSION_DENIED',
    });
    await assert.rejects(bus.subscribe(caller('ex_a', 'r', null), 't', {}, onDenied), {
      code: 'PERMISSION_DENIED',
    });
    await assert.rejects(locks.lock(caller('ex_a', 'r', null), 'l', { ttlMs: 1000, waitMs: 0 }, onDenied), {
      code: 'PERMISSION_DENIED',
    });
    assert.deepEqual(denied, ['publish', 'subscribe', 'lock']);
  });

  it('delivers everything across a subscriber restart: resume after the last id, duplicates dropped by id', async () => {
    const { bus, clock } = setup();
    const publisher = caller('ex_pub', 'r');
    const seen = new Set<number>();
    const handled: number[] = [];
    let cursor = 0;
    for (let n = 1; n <= 12; n++) {
      await bus.publish(publisher, 'work', { n });
      await clock.advance(250);
      if (n === 4 || n === 9) {
        // The subscriber reads a page, handles it, crashes before saving its cursor for the last two.
        const page = await bus.subscribe(caller('ex_sub', 'r'), 'work', { after: cursor });
        for (const m of page.messages) {
          if (!seen.has(m.id)) handled.push((m.message as { n: number }).n);
          seen.add(m.id);
        }
        cursor = Math.max(0, page.cursor - 2); // the restart resumes from an older cursor: at-least-once
      }
    }
    const rest = await bus.subscribe(caller('ex_sub_restarted', 'r'), 'work', { after: cursor });
    for (const m of rest.messages) {
      if (!seen.has(m.id)) handled.push((m.message as { n: number }).n);
      seen.add(m.id);
    }
    assert.deepEqual(handled, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert.ok(rest.messages.length > 3, 'some messages came twice and were dropped by id');
  });

  it('long-polls: a waiting subscriber gets the next message when it is published', async () => {
    const { bus, clock } = setup();
    const waiting = bus.subscribe(caller('ex_sub', 'r'), 'work', { timeoutMs: 30_000 });
    await clock.advance(100);
    await bus.publish(caller('ex_pub', 'r'), 'work', 'hello');
    const got = await waiting;
    assert.deepEqual(
      got.messages.map((m) => m.message),
      ['hello'],
    );
    const empty = bus.subscribe(caller('ex_sub', 'r'), 'work', { after: got.cursor, timeoutMs: 2000 });
    await clock.advance(2500);
    assert.deepEqual((await empty).messages, []);
  });
});

describe('swarm locks', () => {
  it("cannot touch another swarm's lock, nor a global one without spec.swarm.locks.global", async () => {
    const { locks, audit } = setup();
    const mine = await locks.lock(caller('ex_a', 'root_a'), 'db', { ttlMs: 10_000, waitMs: 0 });
    // The attacker names our lock and token: its swarm is its own root, so that is another (unheld) lock.
    const evil = caller('ex_evil', 'root_evil');
    await assert.rejects(locks.release(evil, 'db', mine.token), { code: 'FENCED' });
    assert.equal((await locks.checkFence(evil, 'db', mine.token)).valid, false);
    const theirs = await locks.lock(evil, 'db', { ttlMs: 10_000, waitMs: 0 });
    assert.equal(theirs.scope, 'swarm:root_evil');
    assert.equal((await locks.checkFence(caller('ex_a2', 'root_a'), 'db', mine.token)).valid, true);
    await assert.rejects(locks.lock(evil, 'db', { ttlMs: 1000, waitMs: 0, global: true }), {
      code: 'PERMISSION_DENIED',
    });
    const refused = kinds(audit, 'swarm.lock').filter((e) => e.data['event'] === 'refused');
    assert.equal(refused.length, 2, 'the stale release and the global lock are both audited');
  });

  it('rejects a stale holder: its lease expired, a waiter took over with a larger token', async () => {
    const { locks, clock, audit } = setup();
    const a = caller('ex_a', 'r');
    const b = caller('ex_b', 'r');
    const first = await locks.lock(a, 'counter', { ttlMs: 2000, waitMs: 0 });
    const second = await advanceUntil(clock, locks.lock(b, 'counter', { ttlMs: 2000, waitMs: 10_000 }));
    assert.ok(second.token > first.token);
    assert.deepEqual(await locks.checkFence(a, 'counter', first.token), {
      valid: false,
      current: second.token,
    });
    assert.deepEqual(await locks.checkFence(b, 'counter', second.token), {
      valid: true,
      current: second.token,
    });
    await assert.rejects(locks.release(a, 'counter', first.token), { code: 'FENCED' });
    await assert.rejects(locks.renew(a, 'counter', first.token, { ttlMs: 1000 }), { code: 'FENCED' });
    const events = kinds(audit, 'swarm.lock').map((e) => e.data['event']);
    assert.deepEqual(events, ['acquired', 'expired', 'acquired', 'refused']);
  });

  it('times a wait out (CONFLICT, audited), serves waiters in order, and frees the locks of an ended holder', async () => {
    const { locks, clock, audit } = setup();
    const held = await locks.lock(caller('ex_a', 'r'), 'x', { ttlMs: 60_000, waitMs: 0 });
    const impatient = locks.lock(caller('ex_b', 'r'), 'x', { ttlMs: 1000, waitMs: 1000 });
    await assert.rejects(advanceUntil(clock, impatient), { code: 'CONFLICT' });
    const order: string[] = [];
    const c = locks.lock(caller('ex_c', 'r'), 'x', { ttlMs: 1000, waitMs: 30_000 }).then((l) => {
      order.push('c');
      return l;
    });
    await clock.advance(10);
    const d = locks.lock(caller('ex_d', 'r'), 'x', { ttlMs: 1000, waitMs: 30_000 }).then((l) => {
      order.push('d');
      return l;
    });
    await clock.advance(10);
    assert.equal(await locks.executionEnded('ex_a'), 1);
    const cl = await c;
    await locks.release(caller('ex_c', 'r'), 'x', cl.token);
    const dl = await d;
    assert.deepEqual(order, ['c', 'd']);
    assert.ok(cl.token > held.token && dl.token > cl.token);
    const ended = kinds(audit, 'swarm.lock').find((e) => e.data['reason'] === 'holder ended');
    assert.equal(ended?.data['token'], held.token);
  });
});
