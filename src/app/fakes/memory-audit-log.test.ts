import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryAuditLog } from './memory-audit-log.ts';

describe('MemoryAuditLog', () => {
  it('chains, signs a head every N entries and at close, and verifies', async () => {
    const audit = new MemoryAuditLog({ headEvery: 2 });
    for (let i = 0; i < 5; i++) audit.append('execution.started', `ex_${i % 2}`, { instance: `i${i}` });
    assert.deepEqual(
      audit.heads.map((h) => h.seq),
      [2, 4],
    );
    await audit.close();
    assert.deepEqual(
      audit.heads.map((h) => h.seq),
      [2, 4, 5],
    );
    assert.deepEqual(
      (await audit.list('ex_1')).map((e) => e.seq),
      [2, 4],
    );
    const result = await audit.verify();
    assert.equal(result.ok, true);
    assert.throws(() => audit.append('execution.started', 'ex', { instance: 'late' }), /closed/);
  });

  it('exports header, heads, then entries; and tampering with its links is detected', async () => {
    const audit = new MemoryAuditLog({ headEvery: 2 });
    for (let i = 0; i < 4; i++) audit.append('limit.hit', 'ex', { rule: 'pids', count: i });
    const types: string[] = [];
    for await (const record of audit.export()) types.push(record.type);
    assert.deepEqual(types, ['header', 'head', 'head', 'entry', 'entry', 'entry', 'entry']);
    audit.links[1] = { ...audit.links[1]!, dataJson: '{"count":9,"rule":"pids"}' };
    const result = await audit.verify();
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.problem, 'edited');
    assert.equal(!result.ok && result.firstBadSeq, 2);
  });
});
