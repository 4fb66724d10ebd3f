/**
 * What every `Store` (executions + deployed agents + API keys) must do: the ExecutionStore contract
 * (execution-store.contract.ts) plus the AgentStore and ApiKeyStore cases below. Each store's test file calls
 * `storeContract` with a factory that opens a fresh, empty store; every case gets its own store.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { NewAgentRevision, Store } from '../../src/app/ports.ts';
import type { ApiKeyRecord } from '../../src/domain/auth/api-key.ts';
import type { AgentRevision } from '../../src/domain/deployment.ts';
import type { EdgeNodeRecord, EdgeTokenRecord } from '../../src/domain/edge/records.ts';
import { isAegisError } from '../../src/domain/errors.ts';
import type { ExecutionRecord } from '../../src/domain/execution.ts';
import type { SandboxRecord } from '../../src/domain/live-sandbox.ts';
import { clusterStoreContract } from './cluster-store.contract.ts';
import { executionStoreContract, line, record, type StoreUnderTest } from './execution-store.contract.ts';

export function storeContract(name: string, open: () => Promise<StoreUnderTest<Store>>): void {
  executionStoreContract(name, open);
  clusterStoreContract(name, open);

  describe(`Store contract: ${name}`, () => {
    let subject: StoreUnderTest<Store>;
    let store: Store;

    beforeEach(async () => {
      subject = await open();
      store = subject.store;
    });
    afterEach(async () => {
      await subject.cleanup();
    });

    describe('deployRevision / getAgent / listRevisions', () => {
      it('makes the first deploy revision 1, active, and stores its bundle', async () => {
        const input = revision('mailer', 1, { description: 'sends mail', version: '1.0.0' });
        const outcome = await store.deployRevision(input, bundle(1));
        const expected: AgentRevision = { ...input, revision: 1 };
        assert.deepEqual(outcome, { revision: expected, created: true });
        assert.deepEqual(await store.getAgent('mailer'), {
          name: 'mailer',
          activeRevision: 1,
          active: expected,
          revisions: 1,
          createdAt: input.createdAt,
          updatedAt: input.createdAt,
        });
        assert.deepEqual(await store.listRevisions('mailer'), [expected]);
        assertBytes(await store.readBundle(input.digest), bundle(1));
      });

      it('changes nothing when the active revision already holds the digest', async () => {
        const first = await store.deployRevision(revision('mailer', 1), bundle(1));
        const again = await store.deployRevision(
          revision('mailer', 1, { version: '9.9.9', createdAt: at(50), deployedBy: 'key_other' }),
          bundle(1),
        );
        assert.deepEqual(again, { revision: first.revision, created: false });
        const agent = await store.getAgent('mailer');
        assert.equal(agent?.revisions, 1);
        assert.equal(agent?.updatedAt, first.revision.createdAt);
      });

      it('makes a new digest the next revision and active; lists revisions newest first', async () => {
        const one = await store.deployRevision(revision('mailer', 1, { createdAt: at(1) }), bundle(1));
        const two = await store.deployRevision(
          revision('mailer', 2, { createdAt: at(2), description: null, version: '1.1.0' }),
          bundle(2),
        );
        assert.equal(two.created, true);
        assert.equal(two.revision.revision, 2);
        const agent = await store.getAgent('mailer');
        assert.equal(agent?.activeRevision, 2);
        assert.deepEqual(agent?.active, two.revision);
        assert.equal(agent?.revisions, 2);
        assert.equal(agent?.createdAt, at(1));
        assert.equal(agent?.updatedAt, at(2));
        assert.deepEqual(await store.listRevisions('mailer'), [two.revision, one.revision]);

        // A digest an older (not active) revision holds is a new revision; its bytes are stored once.
        const three = await store.deployRevision(revision('mailer', 1, { createdAt: at(3) }), bundle(1));
        assert.equal(three.created, true);
        assert.equal(three.revision.revision, 3);
        assertBytes(await store.readBundle(digest(1)), bundle(1));
      });

      it('numbers each agent from 1', async () => {
        await store.deployRevision(revision('alpha', 1), bundle(1));
        await store.deployRevision(revision('alpha', 2), bundle(2));
        const beta = await store.deployRevision(revision('beta', 2), bundle(2));
        assert.equal(beta.revision.revision, 1);
        assert.equal((await store.getAgent('alpha'))?.activeRevision, 2);
      });

      it('gives concurrent deploys of one agent distinct revisions 1..5', async () => {
        const outcomes = await Promise.all(
          [1, 2, 3, 4, 5].map((n) => store.deployRevision(revision('busy', n), bundle(n))),
        );
        assert.deepEqual(
          outcomes.map((o) => o.revision.revision).sort((a, b) => a - b),
          [1, 2, 3, 4, 5],
        );
        assert.ok(outcomes.every((o) => o.created));
        const agent = await store.getAgent('busy');
        assert.equal(agent?.revisions, 5);
        assert.equal(agent?.activeRevision, 5);
        assert.deepEqual(
          (await store.listRevisions('busy')).map((r) => r.revision),
          [5, 4, 3, 2, 1],
        );
        // Each revision holds the digest its deploy brought.
        for (const outcome of outcomes) {
          const stored = (await store.listRevisions('busy')).find(
            (r) => r.revision === outcome.revision.revision,
          );
          assert.equal(stored?.digest, outcome.revision.digest);
        }
      });

      it('lists agents by name with their active revision', async () => {
        for (const [i, agentName] of ['zeta', 'alpha', 'mid'].entries()) {
          await store.deployRevision(revision(agentName, i + 1), bundle(i + 1));
        }
        await store.deployRevision(revision('mid', 9), bundle(9));
        const agents = await store.listAgents();
        assert.deepEqual(
          agents.map((a) => [a.name, a.activeRevision, a.revisions, a.active.digest]),
          [
            ['alpha', 1, 1, digest(2)],
            ['mid', 2, 2, digest(9)],
            ['zeta', 1, 1, digest(1)],
          ],
        );
      });

      it('knows nothing of agents never deployed', async () => {
        assert.equal(await store.getAgent('ghost'), undefined);
        assert.deepEqual(await store.listRevisions('ghost'), []);
        assert.deepEqual(await store.listAgents(), []);
        assert.equal(await store.readBundle(digest(1)), undefined);
      });
    });

    describe('setActiveRevision', () => {
      it('points the agent at one of its revisions', async () => {
        const one = await store.deployRevision(revision('mailer', 1, { createdAt: at(1) }), bundle(1));
        await store.deployRevision(revision('mailer', 2, { createdAt: at(2) }), bundle(2));
        const summary = await store.setActiveRevision('mailer', 1, at(10));
        assert.deepEqual(summary, {
          name: 'mailer',
          activeRevision: 1,
          active: one.revision,
          revisions: 2,
          createdAt: at(1),
          updatedAt: at(10),
        });
        assert.deepEqual(await store.getAgent('mailer'), summary);
        // Deploying the digest of the (now active) revision 1 changes nothing.
        const again = await store.deployRevision(revision('mailer', 1, { createdAt: at(11) }), bundle(1));
        assert.deepEqual(again, { revision: one.revision, created: false });
        // A new digest still gets the number after the highest, not after the active one.
        const three = await store.deployRevision(revision('mailer', 3, { createdAt: at(12) }), bundle(3));
        assert.equal(three.revision.revision, 3);
      });

      it('rejects an unknown agent or revision with NOT_FOUND and changes nothing', async () => {
        await store.deployRevision(revision('mailer', 1), bundle(1));
        await assertNotFound(store.setActiveRevision('mailer', 2, at(5)));
        await assertNotFound(store.setActiveRevision('mailer', 0, at(5)));
        await assertNotFound(store.setActiveRevision('ghost', 1, at(5)));
        const agent = await store.getAgent('mailer');
        assert.equal(agent?.activeRevision, 1);
        assert.equal(agent?.updatedAt, at(0));
        assert.equal(await store.getAgent('ghost'), undefined);
      });
    });

    describe('deleteAgent / readBundle', () => {
      it('removes the agent, its revisions and the bundles no other agent uses', async () => {
        await store.deployRevision(revision('shared', 1), bundle(1));
        await store.deployRevision(revision('doomed', 1), bundle(1));
        await store.deployRevision(revision('doomed', 2), bundle(2));
        await store.deployRevision(revision('doomed', 3), bundle(3));

        assert.equal(await store.deleteAgent('doomed'), true);
        assert.equal(await store.getAgent('doomed'), undefined);
        assert.deepEqual(await store.listRevisions('doomed'), []);
        assert.equal(await store.readBundle(digest(2)), undefined);
        assert.equal(await store.readBundle(digest(3)), undefined);
        assertBytes(await store.readBundle(digest(1)), bundle(1));
        assert.deepEqual(
          (await store.listAgents()).map((a) => a.name),
          ['shared'],
        );
        assert.equal(await store.deleteAgent('doomed'), false);
        assert.equal(await store.deleteAgent('never'), false);

        // Deploying under the old name starts again at revision 1.
        const reborn = await store.deployRevision(revision('doomed', 2), bundle(2));
        assert.deepEqual([reborn.revision.revision, reborn.created], [1, true]);
        assertBytes(await store.readBundle(digest(2)), bundle(2));

        assert.equal(await store.deleteAgent('shared'), true);
        assert.equal(await store.readBundle(digest(1)), undefined);
      });

      it('round-trips bundle bytes exactly: every byte value, and 3 MiB', async () => {
        const everyByte = Uint8Array.from({ length: 512 }, (_, i) => (i * 7) % 256);
        everyByte[0] = 0;
        everyByte[511] = 0;
        await store.deployRevision(revision('bytes', 1, { sizeBytes: everyByte.length }), everyByte);
        assertBytes(await store.readBundle(digest(1)), everyByte);

        const large = new Uint8Array(3 * 1024 * 1024);
        let x = 2463534242;
        for (let i = 0; i < large.length; i++) {
          // xorshift32: incompressible, deterministic.
          x ^= x << 13;
          x ^= x >>> 17;
          x ^= x << 5;
          large[i] = x & 0xff;
        }
        large.fill(0, 1000, 2000);
        await store.deployRevision(revision('large', 2, { sizeBytes: large.length }), large);
        assertBytes(await store.readBundle(digest(2)), large);
        assert.equal((await store.getAgent('large'))?.active.sizeBytes, large.length);
      });

      it('keeps its own copy of the bundle', async () => {
        const bytes = bundle(1);
        await store.deployRevision(revision('copy', 1), bytes);
        bytes[0] = 0xff;
        const got = await store.readBundle(digest(1));
        assert.ok(got);
        assertBytes(got, bundle(1));
        got[1] = 0xff;
        assertBytes(await store.readBundle(digest(1)), bundle(1));
      });
    });

    describe('LLM spend (llm.budgets)', () => {
      it('starts at zero, adds per scope and window, and loses no concurrent increment', async () => {
        assert.deepEqual(await store.getLlmSpend('key:key_01', 0), { calls: 0, tokens: 0, usd: 0 });
        await Promise.all(
          Array.from({ length: 20 }, () =>
            store.addLlmSpend('key:key_01', 0, { calls: 1, tokens: 15, usd: 0.25 }),
          ),
        );
        await store.addLlmSpend('key:key_01', 86_400_000, { calls: 1, tokens: 1, usd: 0 });
        await store.addLlmSpend('agent:key_01', 0, { calls: 2, tokens: 2, usd: 0 });
        assert.deepEqual(await store.getLlmSpend('key:key_01', 0), { calls: 20, tokens: 300, usd: 5 });
        assert.deepEqual(await store.getLlmSpend('key:key_01', 86_400_000), { calls: 1, tokens: 1, usd: 0 });
        assert.deepEqual(await store.getLlmSpend('agent:key_01', 0), { calls: 2, tokens: 2, usd: 0 });
      });
    });

    describe('API keys', () => {
      it('creates a key and finds it by hash, every field intact', async () => {
        const k = key('key_01', { rateLimit: { perSecond: 0.5, burst: 3 }, scopes: ['deploy', 'read'] });
        await store.createKey(k);
        assert.deepEqual(await store.findKeyByHash(k.hash), k);
        const plain = key('key_02', { rateLimit: null, scopes: ['admin'] });
        await store.createKey(plain);
        assert.deepEqual(await store.findKeyByHash(plain.hash), plain);
        assert.equal(await store.findKeyByHash(hash('unknown')), undefined);
      });

      it('rejects a duplicate hash or id with CONFLICT and keeps the first', async () => {
        const first = key('key_01');
        await store.createKey(first);
        await assertCode(store.createKey(key('key_02', { hash: first.hash })), 'CONFLICT');
        await assertCode(store.createKey(key('key_01', { name: 'other' })), 'CONFLICT');
        assert.deepEqual(await store.listKeys(), [first]);
      });

      it('lists keys oldest first, revoked ones included', async () => {
        await store.createKey(key('key_c', { createdAt: at(3) }));
        await store.createKey(key('key_a', { createdAt: at(1) }));
        await store.createKey(key('key_b2', { createdAt: at(2) }));
        await store.createKey(key('key_b1', { createdAt: at(2) }));
        await store.revokeKey('key_a', at(9));
        assert.deepEqual(
          (await store.listKeys()).map((k) => [k.id, k.revokedAt]),
          [
            ['key_a', at(9)],
            ['key_b1', null],
            ['key_b2', null],
            ['key_c', null],
          ],
        );
      });

      it('revokes idempotently, keeping the first revokedAt; NOT_FOUND for an unknown key', async () => {
        const k = key('key_01');
        await store.createKey(k);
        const revoked = await store.revokeKey('key_01', at(5));
        assert.deepEqual(revoked, { ...k, revokedAt: at(5) });
        assert.deepEqual(await store.revokeKey('key_01', at(6)), revoked);
        assert.deepEqual(await store.findKeyByHash(k.hash), revoked);
        await assertNotFound(store.revokeKey('key_nope', at(5)));
      });

      it('records when a key was last used', async () => {
        const k = key('key_01');
        await store.createKey(k);
        await store.touchKey('key_01', at(7));
        assert.equal((await store.findKeyByHash(k.hash))?.lastUsedAt, at(7));
        await store.touchKey('key_01', at(8));
        assert.deepEqual(await store.listKeys(), [{ ...k, lastUsedAt: at(8) }]);
        await store.touchKey('key_nope', at(8)); // best effort: no error
      });

      it('hands out copies', async () => {
        const scopes: ApiKeyRecord['scopes'][number][] = ['read'];
        await store.createKey(key('key_01', { scopes }));
        scopes.push('admin');
        const [got] = (await store.listKeys()) as unknown as { scopes: string[] }[];
        assert.ok(got);
        got.scopes.push('admin');
        assert.deepEqual((await store.findKeyByHash(hash('key_01')))?.scopes, ['read']);
      });
    });

    describe('edge nodes', () => {
      const token = (id: string, over: Partial<EdgeTokenRecord> = {}): EdgeTokenRecord => ({
        id,
        hash: hash(id),
        labels: { site: 'lab', 'zone/a': 'x' },
        createdAt: at(1),
        expiresAt: at(9),
        createdBy: 'key_01',
        usedAt: null,
        usedBy: null,
        ...over,
      });
      const node = (id: string, enrolledAt: string): EdgeNodeRecord => ({
        id,
        publicKeyPem: '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n',
        labels: { site: 'lab' },
        runtimes: ['sandbox'],
        capacity: 2,
        enrolledAt,
        tokenId: 'et_1',
        revokedAt: null,
      });

      it('stores a token hashed and consumes it exactly once, even under a race', async () => {
        await store.createEdgeToken(token('et_1'));
        await assert.rejects(store.createEdgeToken(token('et_1')), { code: 'CONFLICT' });
        await assert.rejects(store.createEdgeToken(token('et_2', { hash: hash('et_1') })), {
          code: 'CONFLICT',
        });
        const racers = await Promise.all(
          Array.from({ length: 5 }, (_, i) => store.consumeEdgeToken(hash('et_1'), at(2), `edge_${i}`)),
        );
        const winners = racers.filter((r) => r !== undefined);
        assert.equal(winners.length, 1);
        assert.deepEqual(winners[0], token('et_1'));
        assert.equal(await store.consumeEdgeToken(hash('et_1'), at(3), 'edge_late'), undefined);
        assert.equal(await store.consumeEdgeToken(hash('unknown'), at(3), 'edge_x'), undefined);
      });

      it('puts, replaces, gets and lists edges oldest first', async () => {
        await store.putEdgeNode(node('edge_b', at(2)));
        await store.putEdgeNode(node('edge_a', at(3)));
        await store.putEdgeNode({ ...node('edge_b', at(2)), revokedAt: at(4) });
        assert.equal((await store.getEdgeNode('edge_b'))?.revokedAt, at(4));
        assert.equal(await store.getEdgeNode('edge_none'), undefined);
        assert.deepEqual(
          (await store.listEdgeNodes()).map((n) => n.id),
          ['edge_b', 'edge_a'],
        );
        assert.deepEqual(await store.getEdgeNode('edge_a'), node('edge_a', at(3)));
      });
    });

    describe('live sandboxes', () => {
      const sandbox = (id: string, createdAt: string, over: Partial<SandboxRecord> = {}): SandboxRecord => ({
        id,
        agent: { name: 'live', revision: 2, version: '1.0.0' },
        runtime: 'sandbox',
        status: 'running',
        reason: null,
        createdAt,
        expiresAt: at(9),
        idleTimeoutMs: null,
        metadata: { purpose: 'test', ünï: 'çødé' },
        owner: 'key_01',
        usage: null,
        holder: { host: 'node-a', pid: 42, startTicks: 7 },
        ...over,
      });

      it('puts, gets and replaces a record by id', async () => {
        const one = sandbox('sb_1', at(1));
        await store.putSandbox(one);
        assert.deepEqual(await store.getSandbox('sb_1'), one);
        assert.equal(await store.getSandbox('sb_nope'), undefined);
        const ended = sandbox('sb_1', at(1), {
          status: 'terminated',
          reason: 'deleted',
          holder: null,
          usage: { cpuUsageNs: 1234, memoryPeakBytes: null, oomKills: 0, memoryBytes: null, pids: null },
        });
        await store.putSandbox(ended);
        assert.deepEqual(await store.getSandbox('sb_1'), ended);
      });

      it('keeps the holding node id and epoch with the record (ownership by node, not host + pid)', async () => {
        const one = sandbox('sb_1', at(1), {
          holder: { host: 'pod-7f9c', pid: 42, startTicks: 7, node: 'node-a', epoch: 3 },
        });
        await store.putSandbox(one);
        assert.deepEqual(await store.getSandbox('sb_1'), one);
        assert.deepEqual((await store.listSandboxes({ unfinished: true }))[0]?.holder, one.holder);
      });

      it('lists newest first; unfinished leaves out terminated ones; limit caps', async () => {
        await store.putSandbox(sandbox('sb_1', at(1)));
        await store.putSandbox(sandbox('sb_2', at(2), { status: 'paused' }));
        await store.putSandbox(
          sandbox('sb_3', at(3), { status: 'terminated', reason: 'timeout', holder: null }),
        );
        assert.deepEqual(
          (await store.listSandboxes()).map((r) => r.id),
          ['sb_3', 'sb_2', 'sb_1'],
        );
        assert.deepEqual(
          (await store.listSandboxes({ unfinished: true })).map((r) => r.id),
          ['sb_2', 'sb_1'],
        );
        assert.deepEqual(
          (await store.listSandboxes({ limit: 1 })).map((r) => r.id),
          ['sb_3'],
        );
      });

      it('keeps them across reopen', async (t) => {
        if (subject.reopen === undefined) {
          t.skip(`${name} keeps nothing across reopen (no reopen in its factory)`);
          return;
        }
        const one = sandbox('sb_1', at(1));
        await store.putSandbox(one);
        store = await subject.reopen();
        assert.deepEqual(await store.getSandbox('sb_1'), one);
      });
    });

    describe('retention (pruneExecutions / pruneLogs / pruneSandboxes)', () => {
      const finished = (
        id: string,
        agent: string,
        finishedAt: string,
        status: ExecutionRecord['status'] = 'succeeded',
      ) => record({ id, agent: { name: agent, version: '1.0.0' }, status, createdAt: at(0), finishedAt });
      async function seed(): Promise<void> {
        await store.createExecution(finished('old-a', 'a', at(10)));
        await store.createExecution(finished('old-b', 'b', at(11), 'failed'));
        await store.createExecution(finished('new-a', 'a', at(100)));
        // Old but not terminal: never pruned, however old.
        await store.createExecution(
          record({
            id: 'run-a',
            agent: { name: 'a', version: '1.0.0' },
            status: 'running',
            createdAt: at(1),
          }),
        );
        await store.createExecution(
          record({ id: 'q-a', agent: { name: 'a', version: '1.0.0' }, status: 'queued', createdAt: at(1) }),
        );
        await store.appendLogs('old-a', [line('héllo'), line('world')]);
        await store.appendLogs('old-b', [line('x')]);
        await store.appendLogs('run-a', [line('still going')]);
      }
      const before = at(50);

      it('counts on a dry run and removes nothing', async () => {
        await seed();
        const counted = await store.pruneExecutions({ before, limit: 1, dryRun: true });
        assert.deepEqual(counted, { executions: 2, logLines: 3, logBytes: 6 + 5 + 1 });
        assert.ok(await store.getExecution('old-a'));
      });

      it('removes finished executions and their logs in batches, never a running or queued one', async () => {
        await seed();
        const first = await store.pruneExecutions({ before, limit: 1, dryRun: false });
        const second = await store.pruneExecutions({ before, limit: 1, dryRun: false });
        const third = await store.pruneExecutions({ before, limit: 1, dryRun: false });
        assert.equal(first.executions + second.executions + third.executions, 2);
        assert.equal(first.logLines + second.logLines, 3);
        assert.equal(third.executions, 0);
        assert.equal(await store.getExecution('old-a'), undefined);
        assert.deepEqual(await store.readLogs('old-a'), []);
        assert.ok(await store.getExecution('new-a'));
        assert.ok(await store.getExecution('run-a'));
        assert.ok(await store.getExecution('q-a'));
        assert.equal((await store.readLogs('run-a')).length, 1);
      });

      it('filters by agent, and keeps records when only logs are pruned', async () => {
        await seed();
        assert.equal(
          (await store.pruneExecutions({ before, exceptAgents: ['a'], limit: 10, dryRun: false })).executions,
          1,
        );
        assert.ok(await store.getExecution('old-a'));
        const logs = await store.pruneLogs({ before, agents: ['a'], limit: 10, dryRun: false });
        assert.deepEqual(logs, { executions: 1, logLines: 2, logBytes: 6 + 5 });
        assert.ok(await store.getExecution('old-a'));
        assert.deepEqual(await store.readLogs('old-a'), []);
        assert.equal((await store.pruneLogs({ before, limit: 10, dryRun: false })).executions, 0);
        // notBefore: only executions that finished at or after it (the logs pass leaves older ones to pruneExecutions).
        await store.appendLogs('new-a', [line('n')]);
        const bounded = await store.pruneLogs({
          before: at(200),
          notBefore: at(50),
          limit: 10,
          dryRun: true,
        });
        assert.deepEqual(bounded, { executions: 1, logLines: 1, logBytes: 1 });
      });

      it('removes terminated sandbox records whose lifetime ended before the cutoff, never running ones', async () => {
        const sb = (id: string, status: SandboxRecord['status'], expiresAt: string): SandboxRecord => ({
          id,
          agent: { name: 'live', revision: 1, version: '1.0.0' },
          runtime: 'sandbox',
          status,
          reason: null,
          createdAt: at(0),
          expiresAt,
          idleTimeoutMs: null,
          metadata: {},
          owner: 'key_01',
          usage: null,
          holder: null,
        });
        await store.putSandbox(sb('sb_old', 'terminated', at(10)));
        await store.putSandbox(sb('sb_new', 'terminated', at(100)));
        await store.putSandbox(sb('sb_run', 'running', at(10)));
        assert.equal(await store.pruneSandboxes({ before: at(50), limit: 10, dryRun: true }), 1);
        assert.equal(await store.pruneSandboxes({ before: at(50), limit: 10, dryRun: false }), 1);
        assert.equal(await store.getSandbox('sb_old'), undefined);
        assert.ok(await store.getSandbox('sb_new'));
        assert.ok(await store.getSandbox('sb_run'));
      });
    });

    describe('durability (stores that can reopen)', () => {
      it('keeps agents, bundles and keys across reopen, and continues revision numbers', async (t) => {
        if (subject.reopen === undefined) {
          t.skip(`${name} keeps nothing across reopen (no reopen in its factory)`);
          return;
        }
        const one = await store.deployRevision(revision('mailer', 1, { createdAt: at(1) }), bundle(1));
        const k = key('key_01');
        await store.createKey(k);
        await store.revokeKey('key_01', at(4));

        store = await subject.reopen();
        assert.deepEqual(await store.listRevisions('mailer'), [one.revision]);
        assertBytes(await store.readBundle(digest(1)), bundle(1));
        assert.deepEqual(await store.findKeyByHash(k.hash), { ...k, revokedAt: at(4) });
        const two = await store.deployRevision(revision('mailer', 2, { createdAt: at(2) }), bundle(2));
        assert.equal(two.revision.revision, 2);
        assert.equal((await store.getAgent('mailer'))?.activeRevision, 2);
      });
    });
  });
}

/** A fake but well-formed digest: bundle `n` has digest `n` (64 hex digits). */
export function digest(n: number): string {
  return n.toString(16).padStart(64, '0');
}

/** Bytes of bundle `n` (small, distinct per n, starting with a gzip magic and holding a NUL). */
export function bundle(n: number): Uint8Array {
  return Uint8Array.from([0x1f, 0x8b, 0x08, 0x00, n & 0xff, (n >> 8) & 0xff, 0x00, 0xff, 0x7f, 0x80]);
}

/** The deploy of bundle `n` to `agent`, with the given fields replaced. */
export function revision(
  agent: string,
  n: number,
  overrides: Partial<Omit<NewAgentRevision, 'agent' | 'digest'>> = {},
): NewAgentRevision {
  return {
    agent,
    version: '1.0.0',
    digest: digest(n),
    sizeBytes: bundle(n).length,
    description: `bundle ${n}`,
    createdAt: at(0),
    deployedBy: 'key_deployer',
    ...overrides,
  };
}

/** A fake SHA-256 hex of `text` (only distinctness matters here). */
function hash(text: string): string {
  return Buffer.from(text).toString('hex').padEnd(64, '0');
}

function key(id: string, overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return {
    id,
    name: `key ${id}`,
    hash: hash(id),
    prefix: 'aegis_AbCd',
    scopes: ['execute'],
    rateLimit: null,
    createdAt: at(0),
    revokedAt: null,
    lastUsedAt: null,
    ...overrides,
  };
}

function at(seconds: number): string {
  return new Date(Date.UTC(2025, 5, 1) + seconds * 1000).toISOString();
}

function assertBytes(got: Uint8Array | undefined, expected: Uint8Array): void {
  assert.ok(got instanceof Uint8Array, `expected bytes, got ${typeof got}`);
  assert.equal(got.length, expected.length, 'length');
  // Compare as plain Uint8Arrays: a store may hand out a Buffer (a Uint8Array subclass).
  assert.ok(Buffer.from(got.buffer, got.byteOffset, got.length).equals(expected), 'bytes differ');
}

async function assertCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error) => {
    assert.ok(isAegisError(error), `expected an AegisError, got ${String(error)}`);
    assert.equal(error.code, code);
    return true;
  });
}

function assertNotFound(promise: Promise<unknown>): Promise<void> {
  return assertCode(promise, 'NOT_FOUND');
}
