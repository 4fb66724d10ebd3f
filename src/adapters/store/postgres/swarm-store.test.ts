/** The swarm store contract on PostgreSQL (a fresh schema per test), plus two pools racing for one lock. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { swarmStoreContract } from '../../../../test/contracts/swarm-store.contract.ts';
import { PostgresStore } from './store.ts';

const URL_VARIABLE = 'AEGIS_TEST_DATABASE_URL';
const databaseUrl = process.env[URL_VARIABLE];
const HOW =
  'run `bash scripts/test-postgres.sh start` and export ' +
  `${URL_VARIABLE}="$(bash scripts/test-postgres.sh url)" (npm test does both)`;

if (databaseUrl === undefined || databaseUrl === '') {
  describe('PostgresSwarmStore', () => {
    if (process.env['AEGIS_SKIP_POSTGRES'] === '1') {
      it('needs a PostgreSQL server', { skip: `AEGIS_SKIP_POSTGRES=1 and no ${URL_VARIABLE}: ${HOW}` });
    } else {
      it('needs a PostgreSQL server', () => {
        assert.fail(`${URL_VARIABLE} is not set: ${HOW}, or set AEGIS_SKIP_POSTGRES=1 to skip these tests`);
      });
    }
  });
} else {
  const url = databaseUrl;
  const admin = new pg.Pool({ connectionString: url, max: 2 });
  admin.on('error', () => {});
  const schemas = new Set<string>();
  after(async () => {
    for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  });
  const fresh = () => {
    const schema = `aegis_swarm_${process.pid}_${randomBytes(6).toString('hex')}`;
    schemas.add(schema);
    return schema;
  };

  swarmStoreContract('postgres', async () => {
    const store = await PostgresStore.open(url, { schema: fresh() });
    return { store: store.swarmStore(), executions: store, close: () => store.close() };
  });

  describe('PostgresSwarmStore across two stores (two nodes)', () => {
    it('never grants one lock to both, however the acquires interleave', async () => {
      const schema = fresh();
      const one = await PostgresStore.open(url, { schema });
      const two = await PostgresStore.open(url, { schema });
      try {
        const at = '2025-06-01T00:00:00.000Z';
        const stores = [one.swarmStore(), two.swarmStore()];
        const outcomes = await Promise.all(
          Array.from({ length: 16 }, (_, n) =>
            (stores[n % 2] as ReturnType<PostgresStore['swarmStore']>).acquireLock({
              scope: 'global',
              name: 'counter',
              holder: `ex_${n}`,
              node: `node-${(n % 2) + 1}`,
              waiter: `w${n}`,
              at,
              ttlMs: 10_000,
              waiterUntil: '2025-06-01T00:00:03.000Z',
            }),
          ),
        );
        assert.equal(outcomes.filter((o) => o.acquired).length, 1);
      } finally {
        await one.close();
        await two.close();
      }
    });
  });
}
