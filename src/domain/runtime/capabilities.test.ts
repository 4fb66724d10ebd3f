import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AegisError } from '../errors.ts';
import {
  assertEnforceable,
  RULES,
  RUNTIME_CAPABILITIES,
  RUNTIME_NAMES,
  type RuntimeAvailability,
  resolveIsolation,
  rulesRequiredBy,
} from './capabilities.ts';

const agent = (
  over: Partial<{ allow: string[]; mounts: { writable: boolean }[]; secrets: number; warm: number }> = {},
) =>
  ({
    network: { allow: over.allow ?? [], deny: [], policy: {} },
    mounts: over.mounts ?? [],
    secrets: Array.from({ length: over.secrets ?? 0 }, () => ({})),
    scaling: { warm: over.warm ?? 0 },
  }) as unknown as Parameters<typeof rulesRequiredBy>[0];

const avail = (...names: string[]): RuntimeAvailability[] =>
  RUNTIME_NAMES.map((name) => ({
    name,
    available: names.includes(name),
    reason: names.includes(name) ? 'ok' : `${name} missing`,
  }));

function aegisError(fn: () => unknown): AegisError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof AegisError);
    return error;
  }
  assert.fail('expected an AegisError');
}

describe('runtime capabilities', () => {
  it('the table has an entry for every rule of every runtime', () => {
    for (const name of RUNTIME_NAMES)
      assert.deepEqual(Object.keys(RUNTIME_CAPABILITIES[name]).sort(), [...RULES].sort());
  });

  it('every agent needs every limit and either network.none or network.allow; grants, secrets, warm only when asked', () => {
    assert.deepEqual(rulesRequiredBy(agent()), [
      'resources.memory',
      'resources.cpu',
      'resources.pids',
      'resources.disk',
      'resources.timeout',
      'network.none',
    ]);
    const all = rulesRequiredBy(
      agent({ allow: ['a.example'], mounts: [{ writable: false }, { writable: true }], secrets: 1, warm: 2 }),
    );
    assert.ok(all.includes('network.allow') && !all.includes('network.none'));
    for (const rule of [
      'filesystem.read',
      'filesystem.write',
      'secrets.placeholders',
      'scaling.warm',
    ] as const)
      assert.ok(all.includes(rule), rule);
  });

  it('sandbox enforces everything; a runtime lacking a rule refuses with LIMIT_UNENFORCEABLE naming rule and alternatives', () => {
    assertEnforceable('sandbox', agent({ allow: ['x.example'], mounts: [{ writable: true }], warm: 1 }));
    const error = aegisError(() => assertEnforceable('firecracker', agent({ mounts: [{ writable: true }] })));
    assert.equal(error.code, 'LIMIT_UNENFORCEABLE');
    assert.match(error.message, /filesystem\.write \(spec\.security\.filesystem\.write\)/);
    assert.match(error.hint ?? '', /isolation: gvisor or sandbox or docker/);
    assert.ok(error.problems.some((p) => p.path === 'spec.security.filesystem.write'));
  });

  it('an image or spec.llm is refused where it cannot be honoured, never ignored', () => {
    const withImage = { ...agent(), runtime: { image: 'busybox:aegis' } } as Parameters<
      typeof rulesRequiredBy
    >[0];
    assertEnforceable('docker', withImage);
    assertEnforceable('gvisor', withImage);
    const error = aegisError(() => assertEnforceable('sandbox', withImage));
    assert.equal(error.code, 'LIMIT_UNENFORCEABLE');
    assert.match(error.message, /runtime\.image \(spec\.runtime\.image\)/);
    assert.match(error.hint ?? '', /isolation: gvisor or docker/);
    const withLlm = { ...agent(), llm: { models: ['default'] } } as unknown as Parameters<
      typeof rulesRequiredBy
    >[0];
    // The in-sandbox API runs on every runtime that has landed (docs/adr/0072); firecracker is not built yet.
    for (const runtime of ['sandbox', 'gvisor', 'docker'] as const) assertEnforceable(runtime, withLlm);
    const llmError = aegisError(() => assertEnforceable('firecracker', withLlm));
    assert.match(llmError.message, /llm\.gateway \(spec\.llm\)/);
    assert.match(llmError.hint ?? '', /isolation: gvisor or sandbox or docker/);
  });
});

describe('resolveIsolation', () => {
  it('auto picks the strongest available runtime', () => {
    assert.equal(resolveIsolation('auto', agent(), avail('sandbox')), 'sandbox');
    assert.equal(resolveIsolation('auto', agent(), avail('sandbox', 'docker', 'gvisor')), 'gvisor');
    assert.equal(resolveIsolation('auto', agent(), avail('docker')), 'docker');
  });

  it('auto skips an available runtime that cannot enforce the agent (firecracker enforces nothing yet)', () => {
    assert.equal(resolveIsolation('auto', agent(), avail('firecracker', 'sandbox')), 'sandbox');
  });

  it('auto with nothing available is RUNTIME_UNAVAILABLE naming aegis doctor', () => {
    const error = aegisError(() => resolveIsolation('auto', agent(), avail()));
    assert.equal(error.code, 'RUNTIME_UNAVAILABLE');
    assert.match(error.message, /available: none/);
    assert.match(error.hint ?? '', /aegis doctor/);
  });

  it('an explicit runtime that is missing is RUNTIME_UNAVAILABLE with why, the available ones and aegis doctor', () => {
    const error = aegisError(() => resolveIsolation('docker', agent(), avail('sandbox')));
    assert.equal(error.code, 'RUNTIME_UNAVAILABLE');
    assert.match(
      error.message,
      /isolation: docker is not available on this host: docker missing \(available: sandbox\)/,
    );
    assert.match(error.hint ?? '', /aegis doctor.*isolation: sandbox \| auto/);
    assert.equal(resolveIsolation('sandbox', agent(), avail('sandbox')), 'sandbox');
  });
});
