/**
 * PostgresVectorStore against the test server (`bash scripts/test-postgres.sh start`; npm test exports
 * AEGIS_TEST_DATABASE_URL). Every case gets a fresh schema, dropped afterwards.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { vectorStoreContract } from '../../../test/contracts/vector-store.contract.ts';
import type { VectorStore } from '../../app/ports.ts';
import { PostgresVectorStore } from './postgres-vector-store.ts';

const URL_VARIABLE = 'AEGIS_TEST_DATABASE_URL';
const databaseUrl = process.env[URL_VARIABLE];
const HOW = `run \`bash scripts/test-postgres.sh start\` and export ${URL_VARIABLE}="$(bash scripts/test-postgres.sh url)" (npm test does both)`;

if (databaseUrl === undefined || databaseUrl === '') {
  describe('PostgresVectorStore', () => {
    if (process.env['AEGIS_SKIP_POSTGRES'] === '1') {
      it('needs a PostgreSQL server', {
        skip: `AEGIS_SKIP_POSTGRES=1 and no ${URL_VARIABLE}: untested; ${HOW}`,
      });
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
  after(async () => {
    await admin.end();
  });

  vectorStoreContract('PostgresVectorStore', async () => {
    const schema = `aegis_test_${process.pid}_${randomBytes(6).toString('hex')}`;
    let current: VectorStore = await PostgresVectorStore.open(url, { schema });
    return {
      store: current,
      reopen: async () => {
        await current.close();
        current = await PostgresVectorStore.open(url, { schema });
        return current;
      },
      cleanup: async () => {
        await current.close();
        await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      },
    };
  });
}
