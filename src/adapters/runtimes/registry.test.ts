import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FakeRuntime } from '../../app/fakes/fake-runtime.ts';
import { isAegisError } from '../../domain/errors.ts';
import { compileManifest } from '../../domain/manifest/compiled.ts';
import { AgentManifest } from '../../domain/manifest/schema.ts';
import { RuntimeRegistry } from './registry.ts';

const agentOn = (isolation: string) =>
  compileManifest(
    AgentManifest.parse({
      apiVersion: 'aegis.dev/v1',
      kind: 'Agent',
      metadata: { name: 'demo', version: '1.0.0' },
      spec: { runtime: { language: 'python', entrypoint: 'main.py' }, isolation },
    }),
    '/srv/agents/demo',
  );

describe('RuntimeRegistry', () => {
  it('spawns on the runtime of agent.isolation; every later call goes to the owner', async () => {
    const sandbox = new FakeRuntime();
    const gvisor = new FakeRuntime();
    const registry = new RuntimeRegistry({ sandbox, gvisor });
    const id = await registry.spawn({ executionId: 'ex_1', agent: agentOn('gvisor') });
    assert.equal(gvisor.spawned.length, 1);
    assert.equal(sandbox.spawned.length, 0);
    assert.equal(registry.status(id), 'warm');
    registry.bind(id, { executionId: 'ex_2' });
    assert.ok(gvisor.bindings.has(id));
    const out = await registry.execute(id, { input: null, onLog: () => {} });
    assert.equal(out.status, 'succeeded');
    assert.deepEqual(gvisor.executed, [id]);
    assert.equal(registry.status(id), undefined, 'forgotten once executed');
  });

  it('an isolation this node does not offer is RUNTIME_UNAVAILABLE naming those it does', async () => {
    const registry = new RuntimeRegistry({ sandbox: new FakeRuntime(), gvisor: new FakeRuntime() });
    await assert.rejects(
      registry.spawn({ executionId: 'ex_3', agent: agentOn('docker') }),
      (error) =>
        isAegisError(error) &&
        error.code === 'RUNTIME_UNAVAILABLE' &&
        /"docker"/.test(error.message) &&
        /sandbox, gvisor/.test(error.hint ?? ''),
    );
  });

  it('reapOrphans asks every runtime', async () => {
    const a = new FakeRuntime();
    const b = new FakeRuntime();
    a.reapOrphans = async () => ['ex_a'];
    b.reapOrphans = async () => ['ex_b'];
    assert.deepEqual(await new RuntimeRegistry({ sandbox: a, gvisor: b }).reapOrphans(), ['ex_a', 'ex_b']);
  });
});
