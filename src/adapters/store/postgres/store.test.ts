/**
 * PostgresStore against a real server: the one `bash scripts/test-postgres.sh start` runs (`npm test` starts it
 * and exports AEGIS_TEST_DATABASE_URL). Every test gets a fresh schema, dropped afterwards.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, describe, it } from 'node:test';
import pg from 'pg';
import { line, record } from '../../../../test/contracts/execution-store.contract.ts';
import { bundle, revision, storeContract } from '../../../../test/contracts/store.contract.ts';
import type { Store } from '../../../app/ports.ts';
import { isAegisError } from '../../../domain/errors.ts';
import { MIGRATIONS, migrate } from './migrations.ts';
import { PostgresStore } from './store.ts';

const URL_VARIABLE = 'AEGIS_TEST_DATABASE_URL';
const databaseUrl = process.env[URL_VARIABLE];
const HOW =
  'run `bash scripts/test-postgres.sh start` and export ' +
  `${URL_VARIABLE}="$(bash scripts/test-postgres.sh url)" (npm test does both)`;

if (databaseUrl === undefined || databaseUrl === '') {
  describe('PostgresStore', () => {
    if (process.env['AEGIS_SKIP_POSTGRES'] === '1') {
      it('needs a PostgreSQL server', {
        skip: `AEGIS_SKIP_POSTGRES=1 and no ${URL_VARIABLE}: PostgresStore untested; to test it, ${HOW}`,
      });
    } else {
      it('needs a PostgreSQL server', () => {
        assert.fail(
          `${URL_VARIABLE} is not set, so there is no PostgreSQL to test against: ${HOW}, ` +
            'or set AEGIS_SKIP_POSTGRES=1 to skip these tests',
        );
      });
    }
  });
} else {
  postgresTests(databaseUrl);
}

function postgresTests(url: string): void {
  /** One connection pool for creating and dropping the per-test schemas. */
  const admin = new pg.Pool({ connectionString: url, max: 2 });
  admin.on('error', () => {});
  const schemas = new Set<string>();
  after(async () => {
    for (const schema of schemas) await dropSchema(schema);
    await admin.end();
  });

  function freshSchema(): string {
    const schema = `aegis_test_${process.pid}_${randomBytes(6).toString('hex')}`;
    schemas.add(schema);
    return schema;
  }

  async function dropSchema(schema: string): Promise<void> {
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    schemas.delete(schema);
  }

  storeContract('PostgresStore', async () => {
    const schema = freshSchema();
    let current: Store = await PostgresStore.open(url, { schema });
    return {
      store: current,
      reopen: async () => {
        await current.close();
        current = await PostgresStore.open(url, { schema });
        return current;
      },
      cleanup: async () => {
        await current.close();
        await dropSchema(schema);
      },
    };
  });

  describe('PostgresStore (PostgreSQL specifics)', () => {
    const open: PostgresStore[] = [];
    let schema = '';
    afterEach(async () => {
      for (const store of open.splice(0)) await store.close();
      if (schema !== '') await dropSchema(schema);
      schema = '';
    });

    async function openStore(options: { poolSize?: number } = {}): Promise<PostgresStore> {
      if (schema === '') schema = freshSchema();
      const store = await PostgresStore.open(url, { schema, ...options });
      open.push(store);
      return store;
    }

    it('two nodes on two connection pools claim disjoint executions (FOR UPDATE SKIP LOCKED) and all of them', async () => {
      const a = await openStore({ poolSize: 4 });
      const b = await openStore({ poolSize: 4 });
      const t0 = '2025-06-01T00:00:00.000Z';
      for (const id of ['na', 'nb']) {
        await a.registerNode({
          id,
          kind: 'server',
          labels: {},
          runtimes: ['sandbox'],
          capacity: 4,
          host: id,
          version: '0',
          at: t0,
          leaseMs: 60_000,
        });
      }
      const total = 60;
      for (let i = 0; i < total; i++) {
        await a.createExecution(
          record({ id: `e${String(i).padStart(3, '0')}`, status: 'queued', createdAt: t0 }),
        );
      }
      const drain = async (store: PostgresStore, nodeId: string): Promise<string[]> => {
        const got: string[] = [];
        for (;;) {
          // Several claims in flight per node, as concurrent pumps would issue them.
          const batches = await Promise.all(
            [0, 1, 2].map(() =>
              store.claimExecutions({
                nodeId,
                epoch: 1,
                labels: {},
                runtimes: ['sandbox'],
                limit: 3,
                owner: { host: nodeId, pid: 1, startTicks: 1 },
                at: t0,
                leaseMs: 60_000,
              }),
            ),
          );
          const ids = batches.flat().map((c) => c.record.id);
          if (ids.length === 0) return got;
          got.push(...ids);
        }
      };
      const [fromA, fromB] = await Promise.all([drain(a, 'na'), drain(b, 'nb')]);
      const all = [...fromA, ...fromB];
      assert.equal(new Set(all).size, all.length, 'no execution claimed twice');
      assert.equal(all.length, total);
      assert.ok(fromA.length > 0 && fromB.length > 0, `both nodes claimed (${fromA.length}/${fromB.length})`);
    });

    async function appliedMigrations(): Promise<number[]> {
      const { rows } = await admin.query<{ id: number }>(
        `SELECT id FROM ${schema}.schema_migrations ORDER BY id`,
      );
      return rows.map((row) => row.id);
    }

    it('creates its schema, applies migrations once, and reopening keeps the data', async () => {
      const first = await openStore();
      await first.createExecution(record({ id: 'kept' }));
      await first.close();
      const second = await openStore();
      assert.equal((await second.getExecution('kept'))?.id, 'kept');
      assert.deepEqual(
        await appliedMigrations(),
        MIGRATIONS.map((m) => m.id),
      );
    });

    it('declares migrations with strictly increasing ids from 1', () => {
      assert.deepEqual(
        MIGRATIONS.map((m) => m.id),
        MIGRATIONS.map((_, i) => i + 1),
      );
    });

    it('lets several processes open a new schema at once: one migrates, the others wait', async () => {
      schema = freshSchema();
      const stores = await Promise.all(
        Array.from({ length: 4 }, () => PostgresStore.open(url, { schema, poolSize: 2 })),
      );
      open.push(...stores);
      assert.deepEqual(
        await appliedMigrations(),
        MIGRATIONS.map((m) => m.id),
      );
      await stores[0]?.createExecution(record({ id: 'shared' }));
      assert.equal((await stores[3]?.getExecution('shared'))?.id, 'shared');
    });

    it('rolls a failing migration back completely, the schema included', async () => {
      schema = freshSchema();
      const client = await admin.connect();
      try {
        const broken = [
          ...MIGRATIONS,
          { id: MIGRATIONS.length + 1, name: 'broken', sql: 'CREATE TABLE x (a int); NOPE;' },
        ];
        await assert.rejects(migrate(client, schema, broken), /syntax error/);
      } finally {
        client.release();
      }
      const { rowCount } = await admin.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
      assert.equal(rowCount, 0);
    });

    it('numbers log lines correctly with several writers on one execution', async () => {
      const a = await openStore({ poolSize: 4 });
      const b = await openStore({ poolSize: 4 });
      const batches = Array.from({ length: 40 }, (_, i) =>
        Array.from({ length: 5 }, (_, j) => line(`batch ${i} line ${j}`)),
      );
      await Promise.all(batches.map((batch, i) => (i % 2 === 0 ? a : b).appendLogs('multi', batch)));
      const read = await a.readLogs('multi');
      assert.equal(read.length, 200);
      assert.deepEqual(
        read.map((l) => l.seq),
        Array.from({ length: 200 }, (_, i) => i + 1),
      );
      // Each batch is stored contiguously and in order.
      for (let start = 0; start < 200; start += 5) {
        const texts = read.slice(start, start + 5).map((l) => l.text);
        const batch = /^batch (\d+) line 0$/.exec(texts[0] ?? '')?.[1];
        assert.ok(batch !== undefined, `line ${start + 1} starts a batch: ${texts[0]}`);
        assert.deepEqual(
          texts,
          [0, 1, 2, 3, 4].map((j) => `batch ${batch} line ${j}`),
        );
      }
    });

    it('gives deploys from several processes distinct revision numbers', async () => {
      const a = await openStore({ poolSize: 5 });
      const b = await openStore({ poolSize: 5 });
      const outcomes = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          (i % 2 === 0 ? a : b).deployRevision(revision('busy', i + 1), bundle(i + 1)),
        ),
      );
      assert.deepEqual(
        outcomes.map((o) => o.revision.revision).sort((x, y) => x - y),
        Array.from({ length: 10 }, (_, i) => i + 1),
      );
      assert.equal((await b.getAgent('busy'))?.activeRevision, 10);
    });

    it('appends 10k log lines, in one call and in many', async (t) => {
      const store = await openStore();
      const lines = Array.from({ length: 10_000 }, (_, i) => line(`bulk line ${i + 1}`));
      let started = performance.now();
      await store.appendLogs('bulk-one', lines);
      t.diagnostic(`one call: ${(performance.now() - started).toFixed(1)} ms`);
      started = performance.now();
      for (let i = 0; i < lines.length; i += 100)
        await store.appendLogs('bulk-many', lines.slice(i, i + 100));
      t.diagnostic(`100 calls of 100: ${(performance.now() - started).toFixed(1)} ms`);
      for (const id of ['bulk-one', 'bulk-many']) {
        const read = await store.readLogs(id);
        assert.equal(read.length, 10_000);
        assert.ok(read.every((l, i) => l.seq === i + 1 && l.text === `bulk line ${i + 1}`));
      }
    });

    it('returns timestamps exactly as given, whatever their precision or offset', async () => {
      const store = await openStore();
      const odd = record({
        id: 'ts',
        createdAt: '2025-01-01T00:00:00.123456789Z',
        startedAt: '2025-01-01T02:00:00+02:00',
        finishedAt: '2025-01-01T00:00:01Z',
      });
      await store.createExecution(odd);
      assert.deepEqual(await store.getExecution('ts'), odd);
    });

    it('stores the bytes of log text that PostgreSQL text cannot hold', async () => {
      const store = await openStore();
      await store.appendLogs('nul', [line('a\u0000b'), line('\u0000'), line('ü\u0000€')]);
      assert.deepEqual(
        (await store.readLogs('nul')).map((l) => l.text),
        ['a\u0000b', '\u0000', 'ü\u0000€'],
      );
    });

    it('reports an unreachable server as UNAVAILABLE without showing the password', async () => {
      const target = new URL(url);
      target.username = 'someone';
      target.password = 'sup3r-s3cret';
      target.hostname = '127.0.0.1';
      target.port = '1';
      await assert.rejects(PostgresStore.open(target.toString(), { schema: 'public' }), (error) => {
        assert.ok(isAegisError(error), `expected an AegisError, got ${String(error)}`);
        assert.equal(error.code, 'UNAVAILABLE');
        assert.match(
          error.message,
          /^cannot reach PostgreSQL at postgres:\/\/someone@127\.0\.0\.1:1\/\S+: \S/,
        );
        const shown = `${error.message} ${error.hint} ${JSON.stringify(error.details)}`;
        assert.doesNotMatch(shown, /sup3r-s3cret/);
        assert.ok(error.hint);
        return true;
      });
    });

    it('reports a missing database as UNAVAILABLE, naming it', async () => {
      const target = new URL(url);
      target.pathname = '/aegis_no_such_database';
      await assert.rejects(PostgresStore.open(target.toString()), (error) => {
        assert.ok(isAegisError(error), `expected an AegisError, got ${String(error)}`);
        assert.equal(error.code, 'UNAVAILABLE');
        assert.match(error.message, /aegis_no_such_database/);
        assert.match(error.hint ?? '', /createdb/);
        return true;
      });
    });

    it('refuses a malformed URL or schema name with USAGE, echoing no URL text', async () => {
      await assert.rejects(PostgresStore.open('not a url with pass=hunter2'), (error) => {
        assert.ok(isAegisError(error));
        assert.equal(error.code, 'USAGE');
        assert.doesNotMatch(error.message, /hunter2/);
        return true;
      });
      await assert.rejects(PostgresStore.open('mysql://u:p@h/db'), { code: 'USAGE' });
      for (const bad of ['Public', 'a;drop', '1abc', 'a b', '']) {
        await assert.rejects(PostgresStore.open(url, { schema: bad }), { code: 'USAGE' }, bad);
      }
      await assert.rejects(PostgresStore.open(url, { poolSize: 0 }), { code: 'USAGE' });
    });

    it('close is idempotent', async () => {
      const store = await openStore();
      await store.close();
      await store.close();
    });
  });
}
