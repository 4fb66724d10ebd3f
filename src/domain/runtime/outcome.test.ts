import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classifyOutcome, type RunFacts } from './outcome.ts';

const NONE = { oomKills: 0, pidsLimitHits: 0, cpuThrottledPeriods: 0 };
const LIMITS = { memoryBytes: 256 * 1024 * 1024, pids: 64, timeoutMs: 5000 };
const facts = (over: Partial<RunFacts>): RunFacts => ({
  exitCode: 0,
  signal: null,
  counters: NONE,
  killedBy: undefined,
  limits: LIMITS,
  ...over,
});

describe('classifyOutcome', () => {
  it('exit 0 with no counters is succeeded, nothing hit', () => {
    assert.deepEqual(classifyOutcome(facts({})), {
      status: 'succeeded',
      exitCode: 0,
      reason: null,
      limitsHit: [],
      violations: [],
    });
  });

  it('a non-zero exit is failed with the exit code as reason', () => {
    const out = classifyOutcome(facts({ exitCode: 3 }));
    assert.equal(out.status, 'failed');
    assert.equal(out.reason, 'exit code 3');
  });

  it('an exit code of 128+signal names the signal', () => {
    assert.equal(
      classifyOutcome(facts({ exitCode: 137 })).reason,
      'exit code 137 (the agent was killed by SIGKILL)',
    );
    assert.equal(classifyOutcome(facts({ exitCode: 200 })).reason, 'exit code 200');
  });

  it('a signal ending the top process is named', () => {
    const out = classifyOutcome(facts({ exitCode: null, signal: 'SIGSEGV' }));
    assert.equal(out.status, 'failed');
    assert.equal(out.reason, 'sandbox terminated by SIGSEGV');
  });

  it('the OOM killer with a failing exit is oom, with a memory violation naming the limit', () => {
    const out = classifyOutcome(facts({ exitCode: 137, counters: { ...NONE, oomKills: 2 } }));
    assert.equal(out.status, 'oom');
    assert.equal(out.reason, 'out of memory (limit 256 MiB)');
    assert.deepEqual(out.limitsHit, ['memory']);
    assert.equal(out.violations[0]?.rule, 'memory');
    assert.equal(out.violations[0]?.count, 2);
    assert.match(out.violations[0]?.message ?? '', /spec\.security\.resources\.memory/);
  });

  it('an OOM kill of a child the agent survived still succeeds, but reports the memory limit hit', () => {
    const out = classifyOutcome(facts({ exitCode: 0, counters: { ...NONE, oomKills: 1 } }));
    assert.equal(out.status, 'succeeded');
    assert.deepEqual(out.limitsHit, ['memory']);
  });

  it('pids refusals are a violation; cpu throttling is a limit hit without violation', () => {
    const out = classifyOutcome(
      facts({ exitCode: 1, counters: { oomKills: 0, pidsLimitHits: 5, cpuThrottledPeriods: 9 } }),
    );
    assert.equal(out.status, 'failed');
    assert.deepEqual(out.limitsHit, ['pids', 'cpu']);
    assert.deepEqual(
      out.violations.map((v) => v.rule),
      ['pids'],
    );
    assert.match(out.violations[0]?.message ?? '', /limit of 64/);
  });

  it('a timeout wins over everything else, with a timeout violation', () => {
    const out = classifyOutcome(
      facts({ exitCode: null, signal: 'SIGKILL', killedBy: 'timeout', counters: { ...NONE, oomKills: 1 } }),
    );
    assert.equal(out.status, 'timeout');
    assert.equal(out.reason, 'wall-clock limit of 5000 ms reached');
    assert.deepEqual(out.limitsHit, ['memory', 'timeout']);
    assert.ok(out.violations.some((v) => v.rule === 'timeout'));
  });

  it('abort and terminate are killed/cancelled, whatever the exit', () => {
    for (const killedBy of ['abort', 'terminate'] as const) {
      const out = classifyOutcome(facts({ exitCode: null, signal: 'SIGKILL', killedBy }));
      assert.equal(out.status, 'killed');
      assert.equal(out.reason, 'cancelled');
    }
  });

  it('a mount race reported by the runtime explains exit code 1 only', () => {
    const race = 'bwrap: Race condition binding dirfd';
    assert.match(
      classifyOutcome(facts({ exitCode: 1, mountRace: race })).reason ?? '',
      /^not started: a mount source was moved/,
    );
    assert.equal(classifyOutcome(facts({ exitCode: 2, mountRace: race })).reason, 'exit code 2');
  });
});
