/**
 * The in-sandbox memory API as agents reach it (POST /v1/memory/* on loopback, per-execution token) over the real
 * Cortex use-case: scopes hold against an agent playing the attacker, refusals are audited, secrets never enter
 * memory, and the ledger holds ids and sizes — never the text.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Cortex } from '../../app/cortex.ts';
import { ManualClock } from '../../app/fakes/manual-clock.ts';
import { MemoryAuditLog } from '../../app/fakes/memory-audit-log.ts';
import { MemoryVectorStore } from '../../app/fakes/memory-vector-store.ts';
import { deployedMemoryGrants, executionMemory, type MemoryWiring } from '../../app/memory-access.ts';
import type { CompiledAgent } from '../../domain/manifest/compiled.ts';
import { Redactor } from '../../domain/secrets/redactor.ts';
import { nodeHasher } from '../audit/node-key.ts';
import { HashEmbedder } from '../cortex/hash-embedder.ts';
import { SortableIds } from '../ids/ids.ts';
import { parseManifestText } from '../manifest/yaml-loader.ts';
import { createMemoryHandler } from './http-handler.ts';

function agent(name: string, memory: string | null): CompiledAgent {
  const text = `apiVersion: aegis.dev/v1\nkind: Agent\nmetadata:\n  name: ${name}\nspec:\n  runtime:\n    language: python\n    entrypoint: main.py\n${memory === null ? '' : `  memory: ${memory}\n`}`;
  return parseManifestText(text, 'agent.yaml', `/srv/${name}`).agent;
}

const SECRET = 'sk-live-7f3a9c1e5b2d4f60';
const PLACEHOLDER = `aegis-secret:API_KEY:${'ab'.repeat(16)}`;

interface Sandbox {
  readonly url: string;
  readonly token: string;
  readonly denied: { op: string; reason: string }[];
  // biome-ignore lint/suspicious/noExplicitAny: answers are JSON the assertions walk
  call(op: string, body: unknown, token?: string): Promise<{ status: number; body: any }>;
}

describe('in-sandbox memory API: scopes, refusals, redaction, ledger', () => {
  const audit = new MemoryAuditLog();
  const clock = new ManualClock(Date.parse('2026-01-01T00:00:00Z'));
  const cortex = new Cortex({
    embedder: new HashEmbedder(),
    store: new MemoryVectorStore(),
    audit,
    clock,
    ids: new SortableIds(),
    hasher: nodeHasher,
  });
  const agents = [
    agent('alpha', '{}'),
    agent('bravo', '{}'),
    agent('nomem', null),
    agent('owner', '{share: [bravo]}'),
  ];
  const wiring: MemoryWiring = {
    cortex,
    grants: deployedMemoryGrants(async () => agents),
    handlerFor: createMemoryHandler,
    newToken: () => 'unused',
  };
  const servers: Server[] = [];
  const sandboxes = new Map<string, Sandbox>();

  before(async () => {
    for (const compiled of agents) {
      const token = `tok-${compiled.name}-${'x'.repeat(20)}`;
      const denied: { op: string; reason: string }[] = [];
      const redactor = new Redactor([{ name: 'API_KEY', value: SECRET }]);
      const memory = executionMemory(wiring, {
        agent: compiled,
        executionId: `ex_${compiled.name}`,
        clean: (text) => redactor.redact(text),
        onDenied: (op, reason) => denied.push({ op, reason }),
      });
      const server = createServer(createMemoryHandler(token, memory, undefined) as never);
      servers.push(server);
      await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      sandboxes.set(compiled.name, {
        url,
        token,
        denied,
        async call(op, body, asToken = token) {
          const res = await fetch(`${url}/v1/memory/${op}`, {
            method: 'POST',
            headers: { authorization: `Bearer ${asToken}`, 'content-type': 'application/json' },
            body: JSON.stringify(body),
          });
          return { status: res.status, body: await res.json() };
        },
      });
    }
  });
  after(async () => {
    for (const server of servers) await new Promise((done) => server.close(done));
  });
  const box = (name: string) => sandboxes.get(name) as Sandbox;

  it('an agent stores and recalls its own memories', async () => {
    const stored = await box('alpha').call('store', {
      text: 'The billing export for ACME runs every Monday at 06:00 UTC',
      meta: { topic: 'billing' },
    });
    assert.equal(stored.status, 200, JSON.stringify(stored.body));
    assert.match(stored.body.id, /^mem_/);
    assert.equal(stored.body.agent, 'alpha');
    const found = await box('alpha').call('search', { query: 'when does the ACME billing export run', k: 3 });
    assert.equal(found.status, 200);
    assert.equal(found.body.memories[0].id, stored.body.id);
    assert.ok(found.body.memories[0].score > 0);
  });

  it("attacker B cannot read, filter into, override the scope of, or forget A's memories — refused or empty, audited", async () => {
    const secret = await box('alpha').call('store', {
      text: 'alpha private: the vault path is kv/alpha/prod',
    });
    const id = secret.body.id as string;
    const b = box('bravo');
    // Plain search with A's words: B's scope has nothing of A.
    const plain = await b.call('search', {
      query: 'alpha private vault path kv/alpha/prod',
      k: 50,
      threshold: 0,
    });
    assert.equal(plain.status, 200);
    assert.deepEqual(
      plain.body.memories.filter((m: { agent: string }) => m.agent === 'alpha'),
      [],
    );
    // Filters cannot widen the scope: A's execution id, A's memory's meta.
    for (const filter of [{ executionId: 'ex_alpha' }, { meta: { topic: 'billing' } }, { source: 'sdk' }]) {
      const filtered = await b.call('search', { query: 'vault path', k: 50, threshold: 0, filter });
      assert.equal(filtered.status, 200);
      assert.deepEqual(filtered.body.memories, [], JSON.stringify(filter));
    }
    // Scope override in the body or the filter: refused (403 memory_denied) and reported for the ledger.
    const before = b.denied.length;
    for (const body of [
      { query: 'vault', agent: 'alpha' },
      { query: 'vault', namespace: 'default', scope: { agent: 'alpha' } },
      { query: 'vault', filter: { agent: 'alpha' } },
    ]) {
      const refused = await b.call('search', body);
      assert.equal(refused.status, 403, JSON.stringify(body));
      assert.equal(refused.body.error.code, 'memory_denied');
      assert.match(refused.body.error.message, /fixed by its manifest/);
    }
    const storeInto = await b.call('store', { text: 'planted', namespace: 'default', agent: 'alpha' });
    assert.equal(storeInto.status, 403);
    assert.equal(b.denied.length, before + 4);
    // Forget with A's real id (guessed or leaked): not found, and A's memory is still there.
    const forgot = await b.call('forget', { id });
    assert.equal(forgot.status, 404);
    const still = await box('alpha').call('search', { query: 'alpha private vault path', k: 5 });
    assert.ok(still.body.memories.some((m: { id: string }) => m.id === id));
    // A's token is worthless at B's endpoint.
    const stolen = await b.call('search', { query: 'vault' }, box('alpha').token);
    assert.equal(stolen.status, 401);
    // The refused forget is in the ledger too (found: false), under B's execution.
    const forgetEntry = audit.entries.find(
      (e) => e.kind === 'memory.forget' && (e.data as { id?: string }).id === id,
    );
    assert.equal(forgetEntry?.execution, 'ex_bravo');
    assert.equal((forgetEntry?.data as { found?: boolean } | undefined)?.found, false);
  });

  it('an agent without spec.memory gets 403 memory_denied for every operation, each reported for the ledger', async () => {
    const c = box('nomem');
    for (const [op, body] of [
      ['store', { text: 'x' }],
      ['search', { query: 'x' }],
      ['forget', { id: 'mem_x' }],
    ] as const) {
      const refused = await c.call(op, body);
      assert.equal(refused.status, 403);
      assert.equal(refused.body.error.code, 'memory_denied');
      assert.match(refused.body.error.message, /spec\.memory/);
    }
    assert.deepEqual(
      c.denied.map((d) => d.op),
      ['store', 'search', 'forget'],
    );
  });

  it('sharing is granted by the owner (spec.memory.share): B reads the owner’s memories, never forgets them', async () => {
    const shared = await box('owner').call('store', {
      text: 'runbook: restart the queue worker with systemctl',
    });
    const found = await box('bravo').call('search', { query: 'how to restart the queue worker', k: 5 });
    assert.ok(found.body.memories.some((m: { id: string }) => m.id === shared.body.id));
    // Alpha is not in the share list.
    const notShared = await box('alpha').call('search', {
      query: 'restart the queue worker',
      k: 50,
      threshold: 0,
    });
    assert.ok(!notShared.body.memories.some((m: { agent: string }) => m.agent === 'owner'));
    assert.equal((await box('bravo').call('forget', { id: shared.body.id })).status, 404);
  });

  it('secret values and placeholders never enter memory (text or meta); the ledger holds no text', async () => {
    const text = `deploying with key ${SECRET} (env ${PLACEHOLDER}), base64 ${Buffer.from(SECRET).toString('base64')}`;
    const stored = await box('alpha').call('store', { text, meta: { key: SECRET, note: PLACEHOLDER } });
    assert.equal(stored.status, 200);
    const everything = JSON.stringify(stored.body);
    assert.ok(!everything.includes(SECRET) && !everything.includes(PLACEHOLDER), everything);
    assert.match(stored.body.text, /\[REDACTED:API_KEY\]/);
    for (const query of [SECRET, PLACEHOLDER, 'deploying with key']) {
      const found = await box('alpha').call('search', { query, k: 50, threshold: 0 });
      const json = JSON.stringify(found.body);
      assert.ok(!json.includes(SECRET) && !json.includes(PLACEHOLDER), json);
    }
    const ledger = JSON.stringify(audit.entries);
    assert.ok(!ledger.includes('deploying with key'), 'memory text in the ledger');
    assert.ok(!ledger.includes('vault path'), 'memory text in the ledger');
    assert.ok(!ledger.includes(SECRET));
    const kinds = new Set(audit.entries.map((e) => e.kind));
    for (const kind of ['memory.store', 'memory.search', 'memory.forget']) assert.ok(kinds.has(kind), kind);
  });

  it('bad bodies are clear 4xx errors, never a 500', async () => {
    const a = box('alpha');
    for (const [op, body, status] of [
      ['store', { text: '' }, 400],
      ['store', { text: 'x', colour: 'red' }, 400],
      ['search', { query: 'x', k: 0 }, 400],
      ['search', { query: 'x', filter: { meta: { a: { nested: 1 } } } }, 400],
      ['forget', {}, 400],
    ] as const) {
      const answer = await a.call(op, body);
      assert.equal(answer.status, status, `${op} ${JSON.stringify(body)}: ${JSON.stringify(answer.body)}`);
      assert.ok(typeof answer.body.error.message === 'string');
    }
    const res = await fetch(`${a.url}/v1/memory/list`, {
      method: 'POST',
      headers: { authorization: `Bearer ${a.token}` },
    });
    assert.equal(res.status, 400);
  });
});
