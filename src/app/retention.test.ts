import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { line, record } from '../../test/contracts/execution-store.contract.ts';
import { KEEP_FOREVER, retentionPolicy } from '../domain/retention.ts';
import { ManualClock } from './fakes/manual-clock.ts';
import { MemoryAuditLog } from './fakes/memory-audit-log.ts';
import { MemoryStore } from './fakes/memory-store.ts';
import { prune } from './retention.ts';

const DAY = 86_400_000;
const NOW = Date.UTC(2025, 5, 1);
const ago = (days: number) => new Date(NOW - days * DAY).toISOString();

async function world() {
  const store = new MemoryStore();
  const audit = new MemoryAuditLog();
  const clock = new ManualClock(NOW);
  const finished = (id: string, agent: string, days: number) =>
    record({
      id,
      agent: { name: agent, version: '1' },
      status: 'succeeded',
      createdAt: ago(days + 1),
      finishedAt: ago(days),
    });
  await store.createExecution(finished('old', 'mailer', 40));
  await store.createExecution(finished('mid', 'mailer', 10));
  await store.createExecution(finished('old-keeper', 'keeper', 40));
  await store.createExecution(record({ id: 'running', status: 'running', createdAt: ago(400) }));
  await store.appendLogs('old', [line('a'), line('bb')]);
  await store.appendLogs('mid', [line('ccc')]);
  return { store, audit, clock };
}

describe('prune (retention use-case)', () => {
  it('removes finished executions past the window, never a running one, and records retention.pruned', async () => {
    const { store, audit, clock } = await world();
    const report = await prune(
      { store, audit, clock },
      { policy: retentionPolicy({ executionsMs: 30 * DAY }), dryRun: false, by: 'local' },
    );
    assert.equal(report.removed.executions, 2);
    assert.equal(report.removed.logLines, 2);
    assert.equal(report.removed.logBytes, 3);
    assert.ok(await store.getExecution('running'), 'a running execution is never pruned');
    assert.ok(await store.getExecution('mid'));
    assert.ok(report.kept.some((k) => /not finished/.test(k.reason)));
    const entry = audit.links.find((l) => l.kind === 'retention.pruned');
    assert.ok(entry, 'retention.pruned recorded');
    assert.match(entry.dataJson, /"executions":2/);
  });

  it('honours a per-agent override and a shorter logs window; a dry run removes nothing', async () => {
    const { store, audit, clock } = await world();
    const deps = {
      store,
      audit,
      clock,
      agentRetention: async () => new Map([['keeper', { executionsMs: 90 * DAY }]]),
    };
    const policy = retentionPolicy({ executionsMs: 30 * DAY, logsMs: 7 * DAY });
    const dry = await prune(deps, { policy, dryRun: true, by: 'local' });
    assert.equal(dry.removed.executions, 1);
    assert.equal(dry.removed.logsOfExecutions, 1, 'mid only: old goes whole and is not counted twice');
    assert.equal(dry.removed.logLines, 3);
    assert.ok(await store.getExecution('old'));
    assert.equal(audit.links.length, 0);
    const real = await prune(deps, { policy, dryRun: false, by: 'local' });
    assert.equal(real.removed.executions, 1);
    assert.ok(await store.getExecution('old-keeper'), 'keeper keeps 90 days');
    assert.ok(await store.getExecution('mid'));
    assert.deepEqual(await store.readLogs('mid'), [], 'logs past 7 days go, the record stays');
    assert.ok(real.kept.some((k) => /keeper keeps its executions 90d/.test(k.reason)));
  });

  it('keeps everything by default', async () => {
    const { store, audit, clock } = await world();
    const report = await prune({ store, audit, clock }, { policy: KEEP_FOREVER, dryRun: false, by: 'local' });
    assert.equal(report.removed.executions + report.removed.logLines + report.removed.sandboxes, 0);
    assert.ok(await store.getExecution('old'));
  });
});
