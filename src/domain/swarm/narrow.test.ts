import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type CompiledAgent, compileManifest } from '../manifest/compiled.ts';
import { validateManifestValue } from '../manifest/validate.ts';
import { evaluate } from '../policy/network-rules.ts';
import { ceilingOf, llmLeftOf, mayStart, narrowAgent, narrowedAway } from './narrow.ts';

function agent(name: string, spec: Record<string, unknown>): CompiledAgent {
  const parsed = validateManifestValue({
    apiVersion: 'aegis.dev/v1',
    kind: 'Agent',
    metadata: { name },
    spec: { runtime: { language: 'python', entrypoint: 'main.py' }, ...spec },
  });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  return compileManifest(parsed.manifest, '/agents/x');
}

const parent = agent('coordinator', {
  security: {
    network: { allow: ['api.example.com:443', '*.docs.example.org', '10.1.0.0/16:8000-8100'] },
    filesystem: { read: ['/data/shared'], write: ['/data/out'] },
    resources: { timeout: '1m' },
  },
  secrets: [{ name: 'SEARCH_KEY', env: 'SEARCH_KEY', hosts: ['api.example.com'] }],
  llm: { models: ['default'], budget: { tokens: 1000, usd: 1 } },
  tools: [
    { name: 'http.fetch', timeout: '10s' },
    { name: 'cmd.run', allow: ['ls'] },
  ],
  swarm: { canSpawn: ['research-*'], budget: { tokens: 400 } },
});

/** A child asking for more than the parent holds in every dimension. */
const greedy = agent('research-a', {
  security: {
    network: {
      allow: ['api.example.com', 'evil.example.net', '*.example.org', '10.1.2.0/24', '10.9.0.0/16'],
    },
    filesystem: { read: ['/data/shared/sub', '/srv/secret'], write: ['/data/shared/sub2', '/data/out/x'] },
    resources: { timeout: '1h' },
  },
  secrets: [
    { name: 'SEARCH_KEY', env: 'SEARCH_KEY', hosts: ['api.example.com'] },
    { name: 'ADMIN_TOKEN', env: 'ADMIN', hosts: ['api.example.com'] },
  ],
  llm: { models: ['default', 'smart'], budget: { tokens: 100000, usd: 50 } },
  tools: [
    { name: 'http.fetch', timeout: '60s' },
    { name: 'cmd.run', allow: ['ls', 'rm *'] },
    { name: 'fs.write' },
  ],
});

describe('narrowAgent (ADR 0140): a child never holds more than its parent', () => {
  const child = narrowAgent(greedy, ceilingOf(parent));
  const verdict = (host: string, address: string, port: number) =>
    evaluate(child.network.policy, { host, address, port }).verdict;

  it('network: only hosts the parent may reach too, on the ports both allow', () => {
    assert.equal(verdict('api.example.com', '93.184.216.34', 443), 'allow');
    assert.equal(verdict('api.example.com', '93.184.216.34', 80), 'deny');
    assert.equal(verdict('evil.example.net', '93.184.216.35', 443), 'deny');
    assert.equal(verdict('www.docs.example.org', '93.184.216.36', 443), 'allow');
    assert.equal(verdict('www.example.org', '93.184.216.36', 443), 'deny');
    assert.deepEqual(child.network.allow, [
      'api.example.com:443',
      '*.docs.example.org',
      '10.1.2.0/24:8000-8100',
    ]);
  });

  it('filesystem: mounts outside the parent are dropped; write only under a parent write mount', () => {
    const mounts = child.mounts.map((m) => [m.source, m.writable]);
    assert.deepEqual(mounts.sort(), [
      ['/data/out/x', true],
      ['/data/shared/sub', false],
      ['/data/shared/sub2', false],
    ]);
  });

  it('tools: grants the parent lacks are dropped; cmd.run patterns and timeouts are cut', () => {
    assert.deepEqual(
      child.tools?.map((t) => [t.name, t.allow]),
      [
        ['http.fetch', []],
        ['cmd.run', ['ls']],
      ],
    );
    assert.equal(child.tools?.find((t) => t.name === 'http.fetch')?.timeoutMs, 10_000);
    assert.equal(
      child.tools?.some((t) => t.name === 'fs.write'),
      false,
    );
  });

  it('LLM: models ∩, budget ≤ the swarm budget and the parent budget', () => {
    assert.deepEqual(child.llm?.models, ['default']);
    assert.equal(child.llm?.budget.tokens, 400);
    assert.equal(child.llm?.budget.usd, 1);
  });

  it('secrets: only the ones the parent holds; the timeout is the parent’s at most', () => {
    assert.deepEqual(
      child.secrets.map((s) => s.name),
      ['SEARCH_KEY'],
    );
    assert.equal(child.limits.timeoutMs, 60_000);
  });

  it('a parent without models gives a child none; a grandchild is cut by the narrowed child', () => {
    const noLlm = agent('plain', {});
    assert.equal(narrowAgent(greedy, ceilingOf(noLlm)).llm, null);
    assert.deepEqual(narrowAgent(greedy, ceilingOf(noLlm)).network.allow, []);
    const grandchild = narrowAgent(greedy, ceilingOf(child, { tokens: 50, usd: null }));
    assert.equal(grandchild.llm?.budget.tokens, 50);
    assert.deepEqual(grandchild.network.allow, child.network.allow);
  });
});

describe('narrowAgent: swarm grants (attack: a global lock through a child)', () => {
  // The parent may not take global locks (they reach every swarm); its child's own manifest may.
  const boss = agent('boss', { swarm: { canSpawn: ['locker'] } });
  const locker = agent('locker', { swarm: { locks: { global: true } } });

  it('a child takes global locks only when its parent may', () => {
    assert.equal(locker.swarm?.locks.global, true);
    const narrowed = narrowAgent(locker, ceilingOf(boss));
    assert.equal(narrowed.swarm?.locks.global, false);
    assert.deepEqual(narrowedAway(locker, narrowed)?.swarm, ['locks.global']);
    const granted = agent('granted', { swarm: { canSpawn: ['locker'], locks: { global: true } } });
    assert.equal(narrowAgent(locker, ceilingOf(granted)).swarm?.locks.global, true);
  });

  it('a ceiling stored before the grant was recorded counts as no global locks', () => {
    const { globalLocks: _, ...old } = ceilingOf(agent('granted', { swarm: { locks: { global: true } } }));
    assert.equal(narrowAgent(locker, old).swarm?.locks.global, false);
  });
});

describe('llmLeftOf: a child gets what its parent has not spent yet', () => {
  it('subtracts tokens, calls and USD already spent at spawn time, never below 0', () => {
    const spent = { calls: 3, inputTokens: 150, outputTokens: 50, usd: 0.25 };
    const left = llmLeftOf({ tokens: 1000, calls: 4, usd: 1 }, spent);
    assert.deepEqual(left, { tokens: 800, calls: 1, usd: 0.75 });
    const child = narrowAgent(greedy, ceilingOf(parent, left));
    // The parent's own budget (1000 tokens) is cut by spec.swarm.budget.tokens (400) anyway; spend cuts usd here.
    assert.equal(child.llm?.budget.usd, 0.75);
    assert.equal(child.llm?.budget.calls, 1);
    const spentAll = llmLeftOf({ tokens: 100, calls: null, usd: null }, spent);
    assert.deepEqual(spentAll, { tokens: 0, calls: null, usd: null });
    const broke = agent('broke', { llm: { models: ['default'], budget: { tokens: 100 } } });
    assert.equal(narrowAgent(greedy, ceilingOf(broke, spentAll)).llm?.budget.tokens, 0);
  });
});

describe('narrowedAway: what the ledger says a child did not get', () => {
  it('names the rules, mounts, tools, models and secrets narrowing dropped', () => {
    const child = narrowAgent(greedy, ceilingOf(parent));
    const dropped = narrowedAway(greedy, child);
    assert.ok(dropped?.network.includes('evil.example.net'));
    assert.ok(dropped?.mounts.includes('/srv/secret'));
    assert.deepEqual(dropped?.tools, ['fs.write']);
    assert.deepEqual(dropped?.models, ['smart']);
    assert.deepEqual(dropped?.secrets, ['ADMIN_TOKEN']);
    assert.equal(narrowedAway(parent, parent), undefined);
  });
});

describe('mayStart (spec.swarm.canSpawn)', () => {
  it('matches names and * patterns, nothing else', () => {
    assert.equal(mayStart('research-a', ['research-*']), true);
    assert.equal(mayStart('researcher', ['research-*']), false);
    assert.equal(mayStart('admin', ['research-*', 'writer']), false);
    assert.equal(mayStart('writer', ['research-*', 'writer']), true);
    assert.equal(mayStart('a.b', ['a*b']), false);
  });
});
