import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LifecycleCrossCheck } from './cluster.ts';

let seq = 0;
function feed(
  check: LifecycleCrossCheck,
  node: string,
  kind: string,
  execution: string,
  data: object = {},
): void {
  seq += 1;
  check.add(
    node,
    { seq, ts: `2026-01-01T00:00:${String(seq % 60).padStart(2, '0')}Z`, execution, kind },
    data as Record<string, unknown>,
  );
}

const problems = (check: LifecycleCrossCheck) => check.finish().map((c) => `${c.problem}:${c.execution}`);

describe('LifecycleCrossCheck', () => {
  it('accepts an execution created on one node and run and finished on another', () => {
    const check = new LifecycleCrossCheck();
    feed(check, 'a', 'execution.created', 'ex_1');
    feed(check, 'b', 'execution.started', 'ex_1', { instance: 'i', fence: 1 });
    feed(check, 'b', 'execution.finished', 'ex_1', { status: 'succeeded', fence: 1 });
    // Cancelled while queued: finished by whichever node took the cancel, no start anywhere.
    feed(check, 'a', 'execution.created', 'ex_2');
    feed(check, 'c', 'execution.finished', 'ex_2', { status: 'killed' });
    // Node-lost: started on a, settled by b's recovery (it stands in for the finish a never wrote).
    feed(check, 'a', 'execution.created', 'ex_3');
    feed(check, 'a', 'execution.started', 'ex_3', { fence: 1 });
    feed(check, 'b', 'execution.recovered', 'ex_3', {
      status: 'failed',
      reason: 'node-lost',
      missing: ['finished'],
    });
    // Unrelated kinds and node-level entries are ignored.
    feed(check, 'a', 'network.connect', 'ex_1', {});
    assert.deepEqual(problems(check), []);
    assert.equal(check.executions, 3);
  });

  it('reports two created entries, two settlements, a finish by a node that never held it, a missing created', () => {
    const check = new LifecycleCrossCheck();
    feed(check, 'a', 'execution.created', 'ex_dup');
    feed(check, 'b', 'execution.created', 'ex_dup');
    feed(check, 'a', 'execution.created', 'ex_two');
    feed(check, 'a', 'execution.started', 'ex_two');
    feed(check, 'a', 'execution.finished', 'ex_two', { status: 'succeeded' });
    feed(check, 'b', 'execution.recovered', 'ex_two', { status: 'failed', missing: ['finished'] });
    feed(check, 'a', 'execution.created', 'ex_foreign');
    feed(check, 'a', 'execution.started', 'ex_foreign');
    feed(check, 'c', 'execution.finished', 'ex_foreign', { status: 'failed' });
    feed(check, 'b', 'execution.started', 'ex_nowhere');
    assert.deepEqual(problems(check), [
      'duplicate-created:ex_dup',
      'finish-by-non-holder:ex_foreign',
      'missing-created:ex_nowhere',
      'conflicting-finish:ex_two',
    ]);
    const two = check.finish().find((c) => c.execution === 'ex_two')!;
    assert.deepEqual(
      two.entries.map((e) => [e.node, e.kind]),
      [
        ['a', 'execution.finished'],
        ['b', 'execution.recovered'],
      ],
    );
    assert.match(
      two.message,
      /execution\.finished at node a seq \d+.*execution\.recovered at node b seq \d+/,
    );
  });

  it('with fencing tokens: a finish under a stale fence is reported even by a node that once held it', () => {
    const check = new LifecycleCrossCheck();
    feed(check, 'a', 'execution.created', 'ex_f');
    feed(check, 'a', 'execution.started', 'ex_f', { fence: 1 });
    feed(check, 'b', 'execution.started', 'ex_f', { fence: 2 }); // a paused past its lease; b took over
    feed(check, 'a', 'execution.finished', 'ex_f', { status: 'succeeded', fence: 1 }); // a wakes up and writes
    const found = check.finish();
    assert.deepEqual(
      found.map((c) => c.problem),
      ['finish-by-non-holder'],
    );
    assert.match(found[0]!.message, /node a finished it under fence 1, but node b held fence 2/);
  });

  it('a recovered entry that only records a lost created is not a settlement', () => {
    const check = new LifecycleCrossCheck();
    feed(check, 'a', 'execution.recovered', 'ex_r', { status: 'succeeded', missing: ['created'] });
    feed(check, 'a', 'execution.started', 'ex_r');
    feed(check, 'a', 'execution.finished', 'ex_r', { status: 'succeeded' });
    assert.deepEqual(problems(check), []);
  });
});
