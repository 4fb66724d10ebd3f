import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FakeRuntime } from '../../app/fakes/fake-runtime.ts';
import type { ProcessIdentity } from '../../app/ports.ts';
import type { CompiledAgent } from '../../domain/manifest/compiled.ts';
import type { RuntimeName } from '../../domain/runtime/capabilities.ts';
import { type RuntimeEntry, RuntimeRouter, runtimeEntries } from './registry.ts';

const identity = {} as ProcessIdentity;
const agentWith = (isolation: CompiledAgent['isolation']) =>
  ({
    name: 'a',
    version: '1',
    isolation,
    network: { allow: [], deny: [], policy: {} },
    mounts: [],
    secrets: [],
    scaling: { warm: 0 },
  }) as unknown as CompiledAgent;

function fakeEntries(available: readonly RuntimeName[]) {
  const made = new Map<RuntimeName, FakeRuntime>();
  const entries: RuntimeEntry[] = (['sandbox', 'gvisor', 'docker', 'firecracker'] as const).map((name) => ({
    name,
    probe: () => ({
      name,
      available: available.includes(name),
      reason: available.includes(name) ? 'ok' : 'absent',
    }),
    create: () => {
      const runtime = new FakeRuntime();
      made.set(name, runtime);
      return runtime;
    },
  }));
  return { entries, made };
}

describe('RuntimeRouter', () => {
  it('auto goes to the strongest available runtime, and later calls follow the instance', async () => {
    const { entries, made } = fakeEntries(['sandbox', 'gvisor']);
    const router = new RuntimeRouter({ identity }, entries);
    const agent = agentWith('auto');
    assert.equal(router.nameFor(agent), 'gvisor');
    const id = await router.spawn({ executionId: 'ex_1', agent });
    assert.equal(made.get('gvisor')?.spawned.length, 1);
    assert.equal(made.has('sandbox'), false, 'a runtime is created on first use only');
    assert.equal(router.status(id), 'warm');
    const out = await router.execute(id, { input: null, onLog: () => {} });
    assert.equal(out.status, 'succeeded');
    assert.equal(router.status(id), undefined);
  });

  it('an explicit runtime this host lacks is refused at spawn with RUNTIME_UNAVAILABLE, nothing spawned', async () => {
    const { entries, made } = fakeEntries(['sandbox']);
    const router = new RuntimeRouter({ identity }, entries);
    await assert.rejects(
      router.spawn({ executionId: 'ex_2', agent: agentWith('docker') }),
      (error: Error & { code?: string }) => {
        assert.equal(error.code, 'RUNTIME_UNAVAILABLE');
        assert.match(error.message, /docker is not available on this host: absent \(available: sandbox\)/);
        return true;
      },
    );
    assert.equal(made.size, 0);
  });

  it('reaps for every available runtime', async () => {
    const { entries, made } = fakeEntries(['sandbox', 'docker']);
    const router = new RuntimeRouter({ identity }, entries);
    router.runtime('sandbox');
    router.runtime('docker');
    made.get('sandbox')!.orphans = ['ex_a'];
    made.get('docker')!.orphans = ['ex_b'];
    assert.deepEqual([...(await router.reapOrphans())].sort(), ['ex_a', 'ex_b']);
  });

  it('the built-in registry names every runtime; the ones not built here say so', () => {
    const entries = runtimeEntries();
    assert.deepEqual(entries.map((e) => e.name).sort(), ['docker', 'firecracker', 'gvisor', 'sandbox']);
    const firecracker = entries.find((e) => e.name === 'firecracker')!.probe();
    assert.equal(firecracker.available, false);
    assert.match(firecracker.reason, /adr\/0031/);
  });
});
