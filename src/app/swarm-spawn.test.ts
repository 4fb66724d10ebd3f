/**
 * Swarm spawns as an attacker times them (issue 16, ADR 0140), over fakes: a parent fires a spawn and ends while the
 * spawn is still on its way to the store. Its end cancels every descendant it can see — a child inserted after that
 * look must not run on as an orphan (no parent to collect it, cancel it or bound its time).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Principal } from '../domain/auth/api-key.ts';
import { isTerminal } from '../domain/execution.ts';
import { compileManifest } from '../domain/manifest/compiled.ts';
import { AgentManifest } from '../domain/manifest/schema.ts';
import { deployAgent } from './agents.ts';
import { ExecutionEvents } from './execution-events.ts';
import { Executions } from './executions.ts';
import { FakeBundles } from './fakes/fake-bundles.ts';
import { FakeRuntime } from './fakes/fake-runtime.ts';
import { ManualClock } from './fakes/manual-clock.ts';
import { MemoryAuditLog } from './fakes/memory-audit-log.ts';
import { MemoryStore } from './fakes/memory-store.ts';
import { MemorySwarmStore } from './fakes/memory-swarm-store.ts';
import type { InSandboxHandler } from './ports.ts';
import type { InSandboxSwarm } from './swarm.ts';
import { SwarmBus } from './swarm-bus.ts';
import { SwarmLocks } from './swarm-locks.ts';

const deployer: Principal = { id: 'key_deploy', name: 'ci', scopes: ['deploy'], rateLimit: null };
const runner: Principal = { id: 'key_exec', name: 'app', scopes: ['execute', 'read'], rateLimit: null };

function manifest(name: string, extra: Record<string, unknown> = {}) {
  return compileManifest(
    AgentManifest.parse({
      apiVersion: 'aegis.dev/v1',
      kind: 'Agent',
      metadata: { name, version: '1.0.0' },
      spec: { runtime: { language: 'python', entrypoint: 'main.py' }, ...extra },
    }),
    `/bundles/${name}`,
  );
}

async function until(check: () => boolean | Promise<boolean>, what: string) {
  const deadline = Date.now() + 5000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function setup() {
  const clock = new ManualClock();
  const runtime = new FakeRuntime(clock);
  const store = new MemoryStore();
  const audit = new MemoryAuditLog({ clock });
  const bundles = new FakeBundles();
  const finished: string[] = [];
  const swarmStore = new MemorySwarmStore();
  /** The `/v1/swarm/*` API each sandbox got, by token order (what the agent inside would call). */
  const apis: InSandboxSwarm[] = [];
  let n = 0;
  let t = 0;
  const deps = {
    runtime,
    store,
    bundles,
    audit,
    clock,
    ids: { executionId: () => `ex_${String(++n).padStart(4, '0')}` },
    identity: { current: () => ({ host: 'test', pid: 1, startTicks: 1 }), isAlive: () => true },
    events: new ExecutionEvents(clock),
    metrics: {
      executionFinished: (status: string) => finished.push(status),
      sandboxStarted: () => {},
      dequeued: () => {},
    },
    swarm: {
      handlerFor: (_token: string, swarm: InSandboxSwarm) => {
        apis.push(swarm);
        return (() => {}) as unknown as InSandboxHandler;
      },
      newToken: () => `tok_${++t}`,
      bus: new SwarmBus({ store: swarmStore, audit, clock, sha256Hex: (text) => `sha:${text.length}` }),
      locks: new SwarmLocks({ store: swarmStore, audit, clock }),
      swarmOf: async (id: string) => (await store.getExecution(id))?.rootId ?? id,
      nodeId: null,
    },
  };
  const executions = new Executions(deps, { maxConcurrent: 4, maxQueued: 10 });
  return { runtime, store, audit, bundles, clock, executions, finished, apis };
}

describe('swarm spawn racing the end of its parent', () => {
  it('attack: a spawn still in flight when the parent ends does not leave a live orphan', async () => {
    const s = setup();
    const deps = { store: s.store, bundles: s.bundles, audit: s.audit, clock: s.clock };
    await deployAgent(deps, deployer, FakeBundles.encode(manifest('boss', { swarm: { canSpawn: ['kid'] } })));
    await deployAgent(deps, deployer, FakeBundles.encode(manifest('kid')));
    // Every "agent" runs until cancelled: a child that escapes the cascade would run on.
    s.runtime.script = { hang: true };
    const boss = await s.executions.submit(runner, { agent: 'boss' });
    await until(() => s.apis.length === 1, 'the parent sandbox started with its swarm API');
    await until(
      async () => (await s.store.getExecution(boss.id))?.status === 'running',
      'the parent running',
    );

    // The child's insert is held at the store until the parent has ended and cascaded.
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const insert = s.store.createChildExecution.bind(s.store);
    s.store.createChildExecution = async (record, limits) => {
      await gate;
      return insert(record, limits);
    };
    const spawn = (s.apis[0] as InSandboxSwarm).spawn({ agent: 'kid', input: null });
    spawn.catch(() => {});
    await s.executions.cancel(runner, boss.id);
    await until(() => s.finished.length === 1, 'the parent ended (its cascade ran)');
    open();

    await assert.rejects(spawn, (error: { code?: string; message?: string }) => {
      assert.equal(error.code, 'PERMISSION_DENIED');
      assert.match(error.message ?? '', /ended/);
      return true;
    });
    await until(
      async () => (await s.store.listSwarm(boss.id)).every((child) => isTerminal(child.status)),
      'no live descendant',
    );
    const refused = s.audit.entries.filter((e) => e.kind === 'swarm.refused' && e.execution === boss.id);
    assert.deepEqual(
      refused.map((e) => e.data['rule']),
      ['parent ended'],
    );
  });
});

describe('swarm children of a parent whose node died', () => {
  it('attack: a child does not outlive a parent that another node settled as node-lost', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore();
    const bundles = new FakeBundles();
    const apis: InSandboxSwarm[] = [];
    let n = 0;
    const node = (nodeId: string) => {
      const runtime = new FakeRuntime(clock);
      const audit = new MemoryAuditLog({ clock });
      const swarmStore = new MemorySwarmStore();
      const executions = new Executions(
        {
          runtime,
          store,
          bundles,
          audit,
          clock,
          ids: { executionId: () => `ex_${nodeId}_${++n}` },
          identity: {
            current: () => ({ host: `${nodeId}.host`, pid: 1, startTicks: 1 }),
            isAlive: () => true,
          },
          events: new ExecutionEvents(clock),
          metrics: { executionFinished: () => {}, sandboxStarted: () => {}, dequeued: () => {} },
          node: { nodeId, labels: {} },
          swarm: {
            handlerFor: (_token: string, swarm: InSandboxSwarm) => {
              apis.push(swarm);
              return (() => {}) as unknown as InSandboxHandler;
            },
            newToken: () => `tok_${nodeId}_${++n}`,
            bus: new SwarmBus({ store: swarmStore, audit, clock, sha256Hex: (text) => `sha:${text.length}` }),
            locks: new SwarmLocks({ store: swarmStore, audit, clock }),
            swarmOf: async (id: string) => (await store.getExecution(id))?.rootId ?? id,
            nodeId,
          },
        },
        { maxConcurrent: 1, maxQueued: 10, leaseMs: 1000, heartbeatMs: 1e9 },
      );
      runtime.script = { hang: true };
      return { runtime, audit, executions };
    };
    const deps = { store, bundles, audit: new MemoryAuditLog({ clock }), clock };
    await deployAgent(deps, deployer, FakeBundles.encode(manifest('boss', { swarm: { canSpawn: ['kid'] } })));
    await deployAgent(deps, deployer, FakeBundles.encode(manifest('kid')));
    const a = node('a');
    await a.executions.recover();
    const boss = await a.executions.submit(runner, { agent: 'boss' });
    await until(async () => (await store.getExecution(boss.id))?.status === 'running', 'a runs the parent');
    const kid = await (apis[0] as InSandboxSwarm).spawn({ agent: 'kid', input: null });
    // a is full (one slot): b takes the child and runs it.
    const b = node('b');
    await b.executions.recover();
    await until(async () => (await store.getExecution(kid.id))?.status === 'running', 'b runs the child');

    await clock.advance(1500); // a is paused: no heartbeat, its lease expires
    await b.executions.heartbeat();
    assert.equal((await store.getExecution(boss.id))?.status, 'failed');
    await until(
      async () => isTerminal((await store.getExecution(kid.id))?.status ?? 'running'),
      'the child ended',
    );
    assert.equal((await store.getExecution(kid.id))?.status, 'killed');
    await b.executions.drain(0);
  });
});
