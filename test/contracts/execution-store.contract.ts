/**
 * What every ExecutionStore must do. Each store's test file calls `executionStoreContract` (or `storeContract` in
 * store.contract.ts, which runs this suite too) with a factory that opens a fresh, empty store; every case gets its
 * own store and cleans it up afterwards.
 *
 * A durable store also returns `reopen`, which closes the current store and opens a new one over the same data;
 * the durability cases run only then (the in-memory fake has nothing to reopen).
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { ExecutionStore, NewLogLine } from '../../src/app/ports.ts';
import { isAegisError } from '../../src/domain/errors.ts';
import type { ExecutionRecord, ExecutionStatus, LogStream } from '../../src/domain/execution.ts';

export interface StoreUnderTest<S extends ExecutionStore = ExecutionStore> {
  readonly store: S;
  /** Closes whatever store is open and removes its data. */
  readonly cleanup: () => Promise<void>;
  /** Durable stores: closes `store` (or the last reopened one) and returns a new store over the same data. */
  readonly reopen?: () => Promise<S>;
}

export function executionStoreContract<S extends ExecutionStore>(
  name: string,
  open: () => Promise<StoreUnderTest<S>>,
): void {
  describe(`ExecutionStore contract: ${name}`, () => {
    let subject: StoreUnderTest<S>;
    let store: ExecutionStore;

    beforeEach(async () => {
      subject = await open();
      store = subject.store;
    });
    afterEach(async () => {
      await subject.cleanup();
    });

    describe('createExecution / getExecution', () => {
      it('round-trips every field', async () => {
        const full = record({
          id: 'exec-full',
          agent: { name: 'summarise', version: '2.3.1-beta.1' },
          runtime: 'gvisor',
          status: 'oom',
          exitCode: 137,
          reason: 'signal SIGKILL',
          input: { url: 'https://example.com', depth: 2, tags: ['a', 'b'], opts: { dry: false, note: null } },
          output: { summary: 'short', tokens: 1234, ratio: 0.25 },
          violations: [
            { kind: 'limit', rule: 'memory', message: 'memory limit of 64 MiB reached' },
            { kind: 'network', rule: 'egress', message: 'blocked connect to 10.0.0.1:443', count: 3 },
            { kind: 'filesystem', rule: 'write', message: 'write to /etc denied', count: 1 },
          ],
          createdAt: '2025-03-01T10:00:00.000Z',
          startedAt: '2025-03-01T10:00:00.120Z',
          finishedAt: '2025-03-01T10:00:05.400Z',
          durationMs: 5280.5,
          owner: { host: 'node-a', pid: 4242, startTicks: 987654321 },
          usage: { llm: { calls: 3, inputTokens: 1200, outputTokens: 345, usd: 0.004_275 } },
        });
        await store.createExecution(full);
        assert.deepEqual(await store.getExecution('exec-full'), full);
      });

      it('round-trips input and output of every JSON type', async () => {
        const values: unknown[] = [
          null,
          0,
          -1.5,
          1e21,
          true,
          false,
          '',
          'text with "quotes", \\ and \n newlines',
          [],
          [1, 'a', null, [2, [3]], { k: 'v' }],
          {},
          { nested: { deep: [{ x: 1, y: [true, null] }] }, 'key with spaces': 'ü' },
        ];
        for (const [i, value] of values.entries()) {
          await store.createExecution(record({ id: `exec-${i}`, input: value, output: value }));
        }
        for (const [i, value] of values.entries()) {
          const got = await store.getExecution(`exec-${i}`);
          assert.deepEqual(got?.input, value, `input #${i}`);
          assert.deepEqual(got?.output, value, `output #${i}`);
        }
      });

      it('round-trips NUL and lone surrogates inside JSON strings, and key order aside, objects exactly', async () => {
        const tricky = { 'nul\u0000key': 'a\u0000b', lone: '\ud800x', keys: { z: 1, a: 2, m: [3] } };
        const violations = [{ kind: 'network' as const, rule: 'egress', message: 'denied "x\u0000y:1"' }];
        await store.createExecution(record({ id: 'exec-nul', input: tricky, output: tricky, violations }));
        const got = await store.getExecution('exec-nul');
        assert.deepEqual(got?.input, tricky);
        assert.deepEqual(got?.output, tricky);
        assert.deepEqual(got?.violations, violations);
        const updated = await store.updateExecution('exec-nul', { output: ['\u0000'], violations: [] });
        assert.deepEqual(updated.output, ['\u0000']);
      });

      it('round-trips the deployed revision of the agent, and leaves it out when there is none', async () => {
        const deployed = record({ id: 'exec-rev', agent: { name: 'mailer', version: '1.2.0', revision: 7 } });
        await store.createExecution(deployed);
        assert.deepEqual(await store.getExecution('exec-rev'), deployed);
        assert.deepEqual((await store.listExecutions())[0], deployed);
        const queued = await store.updateExecution('exec-rev', { status: 'queued' });
        assert.deepEqual(queued.agent, { name: 'mailer', version: '1.2.0', revision: 7 });

        await store.createExecution(record({ id: 'exec-local' }));
        const got = await store.getExecution('exec-local');
        assert.ok(got);
        assert.equal('revision' in got.agent, false, 'no revision key on a local run');
      });

      it('stores undefined input and output as null', async () => {
        await store.createExecution(record({ id: 'exec-undef', input: undefined, output: undefined }));
        const got = await store.getExecution('exec-undef');
        assert.equal(got?.input, null);
        assert.equal(got?.output, null);
      });

      it('returns undefined for an unknown id', async () => {
        assert.equal(await store.getExecution('nope'), undefined);
      });

      it('keeps its own copy: mutating what went in or came out changes nothing stored', async () => {
        const input = { list: [1, 2] };
        const violations = [{ kind: 'limit' as const, rule: 'pids', message: 'too many processes' }];
        await store.createExecution(record({ id: 'exec-copy', input, violations }));
        input.list.push(3);
        violations.push({ kind: 'limit', rule: 'cpu', message: 'x' });
        const got = (await store.getExecution('exec-copy')) as unknown as {
          input: { list: number[] };
          agent: { name: string };
        };
        got.input.list.push(4);
        got.agent.name = 'mutated';
        const again = await store.getExecution('exec-copy');
        assert.deepEqual(again?.input, { list: [1, 2] });
        assert.equal(again?.violations.length, 1);
        assert.equal(again?.agent.name, 'hello');
      });

      it('rejects a second record with the same id and keeps the first', async () => {
        await store.createExecution(record({ id: 'exec-dup', runtime: 'sandbox' }));
        await assert.rejects(
          store.createExecution(record({ id: 'exec-dup', runtime: 'docker' })),
          (error) => {
            assert.ok(isAegisError(error), `expected an AegisError, got ${String(error)}`);
            assert.equal(error.code, 'INTERNAL');
            return true;
          },
        );
        assert.equal((await store.getExecution('exec-dup'))?.runtime, 'sandbox');
      });
    });

    describe('updateExecution', () => {
      it('changes only the given fields and returns the updated record', async () => {
        const created = record({ id: 'exec-u', input: { q: 1 }, reason: 'queued' });
        await store.createExecution(created);

        const running = await store.updateExecution('exec-u', {
          status: 'running',
          startedAt: '2025-01-01T00:00:01.000Z',
        });
        const expectedRunning = {
          ...created,
          status: 'running' as const,
          startedAt: '2025-01-01T00:00:01.000Z',
        };
        assert.deepEqual(running, expectedRunning);
        assert.deepEqual(await store.getExecution('exec-u'), expectedRunning);

        const patch = {
          status: 'failed' as const,
          exitCode: 3,
          reason: null,
          output: { error: { message: 'boom', lines: ['a', 'b'] } },
          violations: [
            { kind: 'network' as const, rule: 'egress', message: 'denied evil.example', count: 2 },
          ],
          finishedAt: '2025-01-01T00:00:02.500Z',
          durationMs: 1500,
        };
        const finished = await store.updateExecution('exec-u', patch);
        const expectedFinished = { ...expectedRunning, ...patch };
        assert.deepEqual(finished, expectedFinished);
        assert.deepEqual(await store.getExecution('exec-u'), expectedFinished);
      });

      it('treats a field set to undefined as not given, and null as a value', async () => {
        await store.createExecution(record({ id: 'exec-n', exitCode: 1, reason: 'r', output: { a: 1 } }));
        const same = await store.updateExecution('exec-n', {
          exitCode: undefined,
          reason: undefined,
          output: undefined,
        });
        assert.equal(same.exitCode, 1);
        assert.equal(same.reason, 'r');
        assert.deepEqual(same.output, { a: 1 });
        const cleared = await store.updateExecution('exec-n', { exitCode: null, reason: null, output: null });
        assert.equal(cleared.exitCode, null);
        assert.equal(cleared.reason, null);
        assert.equal(cleared.output, null);
      });

      it('sets and clears the owner (a process taking over a queued execution)', async () => {
        await store.createExecution(record({ id: 'exec-o', status: 'queued' }));
        const owner = { host: 'node-b', pid: 77, startTicks: 123456 };
        const taken = await store.updateExecution('exec-o', { status: 'running', owner });
        assert.deepEqual(taken.owner, owner);
        assert.deepEqual((await store.getExecution('exec-o'))?.owner, owner);
        assert.deepEqual((await store.updateExecution('exec-o', { owner: undefined })).owner, owner);
        assert.equal((await store.updateExecution('exec-o', { owner: null })).owner, null);
        assert.equal((await store.getExecution('exec-o'))?.owner, null);
      });

      it('records usage when the run ends; a record without usage has no usage key', async () => {
        await store.createExecution(record({ id: 'exec-u', status: 'running' }));
        assert.equal('usage' in ((await store.getExecution('exec-u')) ?? {}), false);
        const usage = { llm: { calls: 2, inputTokens: 17, outputTokens: 5, usd: 0.000_123_4 } };
        const ended = await store.updateExecution('exec-u', { status: 'succeeded', usage });
        assert.deepEqual(ended.usage, usage);
        assert.deepEqual((await store.getExecution('exec-u'))?.usage, usage);
        assert.deepEqual((await store.updateExecution('exec-u', { reason: 'x' })).usage, usage);
        const [listed] = await store.listExecutions({ agent: ended.agent.name });
        assert.deepEqual(listed?.usage, usage);
        if (subject.reopen !== undefined) {
          store = await subject.reopen();
          assert.deepEqual((await store.getExecution('exec-u'))?.usage, usage);
        }
      });

      it('returns the record unchanged for an empty patch', async () => {
        const created = record({ id: 'exec-e' });
        await store.createExecution(created);
        assert.deepEqual(await store.updateExecution('exec-e', {}), created);
      });

      it('rejects an unknown id with NOT_FOUND', async () => {
        await assert.rejects(store.updateExecution('missing', { status: 'running' }), (error) => {
          assert.ok(isAegisError(error), `expected an AegisError, got ${String(error)}`);
          assert.equal(error.code, 'NOT_FOUND');
          return true;
        });
        assert.equal(await store.getExecution('missing'), undefined);
      });
    });

    describe('listExecutions', () => {
      it('lists newest first, ties broken by id descending', async () => {
        await store.createExecution(record({ id: 'b', createdAt: '2025-01-01T00:00:02.000Z' }));
        await store.createExecution(record({ id: 'a', createdAt: '2025-01-01T00:00:03.000Z' }));
        await store.createExecution(record({ id: 'c', createdAt: '2025-01-01T00:00:01.000Z' }));
        await store.createExecution(record({ id: 'd', createdAt: '2025-01-01T00:00:02.000Z' }));
        assert.deepEqual(ids(await store.listExecutions()), ['a', 'd', 'b', 'c']);
      });

      it('filters by agent, by status, and by both', async () => {
        const rows: [string, string, ExecutionStatus][] = [
          ['1', 'alpha', 'succeeded'],
          ['2', 'beta', 'succeeded'],
          ['3', 'alpha', 'failed'],
          ['4', 'alpha', 'succeeded'],
          ['5', 'beta', 'running'],
        ];
        for (const [i, agent, status] of rows) {
          await store.createExecution(
            record({ id: `e${i}`, agent: { name: agent, version: '1' }, status, createdAt: at(Number(i)) }),
          );
        }
        assert.deepEqual(ids(await store.listExecutions({ agent: 'alpha' })), ['e4', 'e3', 'e1']);
        assert.deepEqual(ids(await store.listExecutions({ status: 'succeeded' })), ['e4', 'e2', 'e1']);
        assert.deepEqual(ids(await store.listExecutions({ agent: 'alpha', status: 'succeeded' })), [
          'e4',
          'e1',
        ]);
        assert.deepEqual(ids(await store.listExecutions({ agent: 'gamma' })), []);
        assert.deepEqual(ids(await store.listExecutions({ status: 'oom' })), []);
      });

      it('honours limit, defaults to 50 and caps at 1001 (a full page of 1000 plus the look-ahead)', async () => {
        for (let i = 0; i < 1002; i++) await store.createExecution(record({ id: `e${i}`, createdAt: at(i) }));
        assert.deepEqual(ids(await store.listExecutions({ limit: 3 })), ['e1001', 'e1000', 'e999']);
        assert.equal((await store.listExecutions()).length, 50);
        assert.equal((await store.listExecutions({ limit: 1001 })).length, 1001);
        assert.equal((await store.listExecutions({ limit: 5000 })).length, 1001);
        assert.equal((await store.listExecutions({ limit: 0 })).length, 0);
      });

      it('pages with a cursor: strictly after (createdAt, id) in list order', async () => {
        // p2, p3 and p4 share a createdAt; their order is id descending.
        const rows: [string, number][] = [
          ['p1', 1],
          ['p3', 2],
          ['p5', 3],
          ['p2', 2],
          ['p4', 2],
        ];
        for (const [id, s] of rows) await store.createExecution(record({ id, createdAt: at(s) }));
        const all = ids(await store.listExecutions());
        assert.deepEqual(all, ['p5', 'p4', 'p3', 'p2', 'p1']);

        const pages: string[][] = [];
        let after: { createdAt: string; id: string } | undefined;
        for (;;) {
          const page = await store.listExecutions({ limit: 2, ...(after === undefined ? {} : { after }) });
          if (page.length === 0) break;
          pages.push(ids(page));
          const last = page[page.length - 1];
          assert.ok(last);
          after = { createdAt: last.createdAt, id: last.id };
          assert.ok(pages.length <= 5, 'pagination does not end');
        }
        assert.deepEqual(pages, [['p5', 'p4'], ['p3', 'p2'], ['p1']]);

        // The cursor need not name a stored record: it is a position.
        assert.deepEqual(ids(await store.listExecutions({ after: { createdAt: at(2), id: 'p35' } })), [
          'p3',
          'p2',
          'p1',
        ]);
        assert.deepEqual(ids(await store.listExecutions({ after: { createdAt: at(2), id: 'p' } })), ['p1']);
        assert.deepEqual(ids(await store.listExecutions({ after: { createdAt: at(9), id: '' } })), all);
        assert.deepEqual(ids(await store.listExecutions({ after: { createdAt: at(0), id: 'zzz' } })), []);
      });

      it('combines the cursor with the agent and status filters', async () => {
        const rows: [string, string, ExecutionStatus, number][] = [
          ['c1', 'alpha', 'succeeded', 1],
          ['c2', 'alpha', 'failed', 2],
          ['c3', 'beta', 'succeeded', 2],
          ['c4', 'alpha', 'succeeded', 2],
          ['c5', 'alpha', 'succeeded', 3],
          ['c6', 'beta', 'succeeded', 4],
          ['c7', 'alpha', 'queued', 4],
        ];
        for (const [id, agent, status, s] of rows) {
          await store.createExecution(
            record({ id, agent: { name: agent, version: '1' }, status, createdAt: at(s) }),
          );
        }
        const after = (id: string, s: number) => ({ createdAt: at(s), id });
        assert.deepEqual(ids(await store.listExecutions({ agent: 'alpha', after: after('c5', 3) })), [
          'c4',
          'c2',
          'c1',
        ]);
        assert.deepEqual(ids(await store.listExecutions({ status: 'succeeded', after: after('c4', 2) })), [
          'c3',
          'c1',
        ]);
        assert.deepEqual(
          ids(
            await store.listExecutions({
              agent: 'alpha',
              status: 'succeeded',
              after: after('c5', 3),
              limit: 1,
            }),
          ),
          ['c4'],
        );
        assert.deepEqual(
          ids(await store.listExecutions({ agent: 'alpha', status: 'succeeded', after: after('c4', 2) })),
          ['c1'],
        );
        assert.deepEqual(ids(await store.listExecutions({ status: 'queued', after: after('c7', 4) })), []);
        assert.deepEqual(ids(await store.listExecutions({ status: 'queued' })), ['c7']);
      });

      it('returns full records', async () => {
        const full = record({
          id: 'x',
          output: [1, { two: 2 }],
          owner: { host: 'h', pid: 1, startTicks: 2 },
        });
        await store.createExecution(full);
        assert.deepEqual(await store.listExecutions(), [full]);
      });
    });

    describe('listUnfinished', () => {
      it('returns the created, queued and running executions only', async () => {
        const statuses: ExecutionStatus[] = [
          'created',
          'queued',
          'running',
          'succeeded',
          'failed',
          'timeout',
          'oom',
          'killed',
        ];
        for (const [i, status] of statuses.entries()) {
          await store.createExecution(record({ id: `e-${status}`, status, createdAt: at(i) }));
        }
        assert.deepEqual(ids(await store.listUnfinished()), ['e-created', 'e-queued', 'e-running']);
        await store.updateExecution('e-running', { status: 'killed' });
        await store.updateExecution('e-queued', { status: 'running' });
        assert.deepEqual(ids(await store.listUnfinished()), ['e-created', 'e-queued']);
      });

      it('lists oldest first (created_at, then id), whatever the insertion order', async () => {
        const rows: [string, ExecutionStatus, number][] = [
          ['u-b', 'queued', 5],
          ['u-z', 'running', 1],
          ['u-a', 'queued', 5],
          ['u-done', 'succeeded', 0],
          ['u-m', 'created', 3],
          ['u-q', 'queued', 2],
        ];
        for (const [id, status, s] of rows)
          await store.createExecution(record({ id, status, createdAt: at(s) }));
        assert.deepEqual(ids(await store.listUnfinished()), ['u-z', 'u-q', 'u-m', 'u-a', 'u-b']);
      });
    });

    describe('createChildExecution / listSwarm (swarm, ADR 0140)', () => {
      const ceiling = {
        network: { allow: ['api.example.com'], deny: [] },
        mounts: [],
        tools: [{ name: 'http.get', allow: [], timeoutMs: 1000 }],
        llm: null,
        secrets: ['token'],
        timeoutMs: 60_000,
      };
      const child = (id: string, parentId: string, s: number) =>
        record({ id, parentId, rootId: 'root', status: 'queued', createdAt: at(s), authority: ceiling });

      it('round-trips parent, root and authority; a root has none; listSwarm lists the tree oldest first', async () => {
        await store.createExecution(record({ id: 'root', status: 'running' }));
        const limits = { maxChildren: 5, maxDescendants: null };
        assert.deepEqual(await store.createChildExecution(child('c2', 'root', 2), limits), { ok: true });
        assert.deepEqual(await store.createChildExecution(child('c1', 'root', 1), limits), { ok: true });
        assert.deepEqual(await store.createChildExecution(child('g1', 'c1', 3), limits), { ok: true });
        assert.deepEqual(await store.getExecution('c2'), child('c2', 'root', 2));
        const root = await store.getExecution('root');
        assert.equal(root?.parentId, undefined);
        assert.equal(root?.rootId, undefined);
        assert.deepEqual(ids(await store.listSwarm('root')), ['c1', 'c2', 'g1']);
        assert.deepEqual(await store.listSwarm('nothing'), []);
      });

      it('refuses past maxChildren (per parent) and maxDescendants (the whole tree), even when spawned at once', async () => {
        await store.createExecution(record({ id: 'root', status: 'running' }));
        const results = await Promise.all(
          Array.from({ length: 6 }, (_, i) =>
            store.createChildExecution(child(`c${i}`, 'root', i), { maxChildren: 3, maxDescendants: null }),
          ),
        );
        assert.equal(results.filter((r) => r.ok).length, 3);
        assert.deepEqual(
          results.find((r) => !r.ok),
          { ok: false, limit: 'maxChildren', count: 3 },
        );
        const tree = await store.createChildExecution(child('g0', 'c0', 10), {
          maxChildren: 3,
          maxDescendants: 3,
        });
        assert.deepEqual(tree, { ok: false, limit: 'budget.executions', count: 3 });
        assert.equal((await store.listSwarm('root')).length, 3);
      });
    });

    describe('appendLogs / readLogs', () => {
      it('numbers lines from 1 and continues across calls', async () => {
        await store.appendLogs('exec-l', [line('one'), line('two', 'stderr')]);
        await store.appendLogs('exec-l', []);
        await store.appendLogs('exec-l', [line('three'), line('four', 'system'), line('five')]);
        const logs = await store.readLogs('exec-l');
        assert.deepEqual(
          logs.map((l) => [l.seq, l.stream, l.text]),
          [
            [1, 'stdout', 'one'],
            [2, 'stderr', 'two'],
            [3, 'stdout', 'three'],
            [4, 'system', 'four'],
            [5, 'stdout', 'five'],
          ],
        );
        assert.deepEqual(
          logs.map((l) => l.ts),
          ['one', 'two', 'three', 'four', 'five'].map((t) => `ts-${t}`),
        );
      });

      it('reads after a sequence number, up to a limit', async () => {
        await store.appendLogs(
          'exec-r',
          Array.from({ length: 10 }, (_, i) => line(`line ${i + 1}`)),
        );
        const seqs = async (options?: { afterSeq?: number; limit?: number }) =>
          (await store.readLogs('exec-r', options)).map((l) => l.seq);
        assert.deepEqual(await seqs(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert.deepEqual(await seqs({ afterSeq: 0 }), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert.deepEqual(await seqs({ afterSeq: 3 }), [4, 5, 6, 7, 8, 9, 10]);
        assert.deepEqual(await seqs({ limit: 2 }), [1, 2]);
        assert.deepEqual(await seqs({ afterSeq: 3, limit: 2 }), [4, 5]);
        assert.deepEqual(await seqs({ afterSeq: 9, limit: 5 }), [10]);
        assert.deepEqual(await seqs({ afterSeq: 10 }), []);
        assert.deepEqual(await seqs({ limit: 0 }), []);
        assert.equal((await store.readLogs('exec-r', { afterSeq: 4, limit: 1 }))[0]?.text, 'line 5');
        assert.deepEqual(await store.readLogs('unknown-execution'), []);
      });

      it('keeps each execution’s lines and numbering separate', async () => {
        await store.appendLogs('exec-a', [line('a1')]);
        await store.appendLogs('exec-b', [line('b1'), line('b2')]);
        await store.appendLogs('exec-a', [line('a2')]);
        await store.appendLogs('exec-b', [line('b3')]);
        assert.deepEqual(
          (await store.readLogs('exec-a')).map((l) => [l.seq, l.text]),
          [
            [1, 'a1'],
            [2, 'a2'],
          ],
        );
        assert.deepEqual(
          (await store.readLogs('exec-b')).map((l) => [l.seq, l.text]),
          [
            [1, 'b1'],
            [2, 'b2'],
            [3, 'b3'],
          ],
        );
      });

      it('preserves unicode, newlines, tabs, NUL and empty text exactly', async () => {
        const texts = [
          'héllo wörld — “quotes” ’',
          '日本語のテキスト',
          'emoji 🚀🔥👩‍💻 and flags 🇩🇪',
          'multi\nline\r\nwith CRLF\rand CR',
          '\ttabs\tand trailing spaces   ',
          'nul\u0000inside',
          '',
          'right-to-left: שלום',
          '\u001b[31mANSI red\u001b[0m',
        ];
        await store.appendLogs(
          'exec-u',
          texts.map((text) => line(text)),
        );
        assert.deepEqual(
          (await store.readLogs('exec-u')).map((l) => l.text),
          texts,
        );
      });

      it('hands out copies of log lines', async () => {
        await store.appendLogs('exec-c', [line('original')]);
        const [first] = (await store.readLogs('exec-c')) as unknown as { text: string }[];
        assert.ok(first);
        first.text = 'mutated';
        assert.equal((await store.readLogs('exec-c'))[0]?.text, 'original');
      });
    });

    describe('durability (stores that can reopen)', () => {
      it('keeps records and logs, and continues log numbering, across reopen', async (t) => {
        if (subject.reopen === undefined) {
          t.skip(`${name} keeps nothing across reopen (no reopen in its factory)`);
          return;
        }
        const full = record({ id: 'exec-d', status: 'running', input: { keep: ['me'] } });
        await store.createExecution(full);
        await store.appendLogs('exec-d', [line('before 1'), line('before 2')]);

        store = await subject.reopen();
        assert.deepEqual(await store.getExecution('exec-d'), full);
        assert.deepEqual(ids(await store.listUnfinished()), ['exec-d']);
        await store.appendLogs('exec-d', [line('after 1')]);
        await store.appendLogs('exec-d', [line('after 2')]);
        assert.deepEqual(
          (await store.readLogs('exec-d')).map((l) => [l.seq, l.text]),
          [
            [1, 'before 1'],
            [2, 'before 2'],
            [3, 'after 1'],
            [4, 'after 2'],
          ],
        );
      });
    });
  });
}

/** A valid record in state `created`, with the given fields replaced. */
export function record(overrides: Partial<ExecutionRecord> = {}): ExecutionRecord {
  return {
    id: 'exec-1',
    agent: { name: 'hello', version: '1.0.0' },
    runtime: 'sandbox',
    status: 'created',
    exitCode: null,
    reason: null,
    input: { name: 'world' },
    output: null,
    violations: [],
    createdAt: '2025-01-01T00:00:00.000Z',
    startedAt: null,
    finishedAt: null,
    durationMs: null,
    owner: null,
    ...overrides,
  };
}

/**
 * A log line whose `ts` is derived from its text, so tests can check ts survives. `ts` is a timestamp in real use:
 * only `text` has to carry any string (NUL included), so control characters are left out of `ts`.
 */
export function line(text: string, stream: LogStream = 'stdout'): NewLogLine {
  return { stream, text, ts: `ts-${text.replace(/[\u0000-\u001f]/g, '')}` };
}

/** An ISO timestamp `seconds` after a fixed epoch; increasing with `seconds`. */
function at(seconds: number): string {
  return new Date(Date.UTC(2025, 0, 1) + seconds * 1000).toISOString();
}

function ids(records: readonly ExecutionRecord[]): string[] {
  return records.map((r) => r.id);
}
