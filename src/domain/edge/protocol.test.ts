import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EdgeFrame, Outbox } from './protocol.ts';
import { edgeRefusals, matchesPlacement } from './records.ts';

describe('edge protocol', () => {
  it('keeps reports until acked and replays the rest in order', () => {
    const box = new Outbox();
    for (let i = 1; i <= 5; i++) box.push({ t: 'log', id: 'ex', stream: 'stdout', text: `line ${i}` });
    box.ack(2);
    assert.deepEqual(
      box.replay().map((e) => e.seq),
      [3, 4, 5],
    );
    box.push({ t: 'finished', id: 'ex', result: result() });
    box.ack(6);
    assert.equal(box.size, 0);
  });

  it('drops the oldest log lines past its cap, never a result', () => {
    const box = new Outbox(3);
    box.push({ t: 'finished', id: 'a', result: result() });
    for (let i = 0; i < 5; i++) box.push({ t: 'log', id: 'b', stream: 'stdout', text: String(i) });
    assert.equal(box.size, 3);
    assert.equal(box.replay()[0]?.body.t, 'finished');
    assert.equal(box.droppedLogs, 3);
  });

  it('parses frames strictly', () => {
    assert.equal(
      EdgeFrame.safeParse({ t: 'msg', seq: 0, boot: 'b', body: { t: 'accepted', id: 'x' } }).success,
      false,
    );
    assert.equal(
      EdgeFrame.safeParse({ t: 'msg', seq: 1, boot: 'b', body: { t: 'nope', id: 'x' } }).success,
      false,
    );
    assert.equal(
      EdgeFrame.safeParse({ t: 'msg', seq: 1, boot: 'b', body: { t: 'accepted', id: 'x' } }).success,
      true,
    );
  });

  it('places by every label, and names what an edge cannot run', () => {
    const agent = { placement: { labels: { site: 'lab', zone: 'a' } } } as never;
    assert.equal(matchesPlacement(agent, { site: 'lab', zone: 'a', extra: '1' }), true);
    assert.equal(matchesPlacement(agent, { site: 'lab' }), false);
    assert.equal(matchesPlacement({} as never, { site: 'lab' }), false, 'no placement: not an edge agent');
    const reasons = edgeRefusals({
      llm: { models: [] },
      tools: [{ name: 'shell' }],
      secrets: [{ name: 'K' }],
      mounts: [],
    } as never);
    assert.equal(reasons.length, 3);
  });
});

function result() {
  return {
    status: 'succeeded' as const,
    exitCode: 0,
    reason: null,
    output: null,
    limitsHit: [],
    violations: [],
    releasedAtMs: 0,
    finishedAtMs: 1,
  };
}
