import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { swarmStoreContract } from '../../../../test/contracts/swarm-store.contract.ts';
import { SqliteStore } from './store.ts';

swarmStoreContract('sqlite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-swarm-sqlite-'));
  const store = SqliteStore.open(join(dir, 'aegis.db'));
  return {
    store: store.swarmStore(),
    executions: store,
    close: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});
