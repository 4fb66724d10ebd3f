import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { memory, vec, vectorStoreContract } from '../../../test/contracts/vector-store.contract.ts';
import { SqliteVectorStore } from './sqlite-vector-store.ts';

vectorStoreContract('SqliteVectorStore', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-cortex-'));
  const path = join(dir, 'cortex.db');
  let store = SqliteVectorStore.open(path);
  return {
    store,
    cleanup: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
    reopen: async () => {
      await store.close();
      store = SqliteVectorStore.open(path);
      return store;
    },
  };
});

describe('SqliteVectorStore with two connections (server and CLI)', () => {
  it("sees the other connection's writes and forgets at once (data_version)", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-cortex-'));
    const path = join(dir, 'cortex.db');
    const server = SqliteVectorStore.open(path);
    const cli = SqliteVectorStore.open(path);
    try {
      const scope = { agent: 'alpha', namespace: 'default' };
      const query = {
        scopes: [scope],
        vector: vec(1, 0, 0, 0),
        embedderId: 'test-emb/4',
        k: 5,
        now: '2025-06-01T00:00:00.000Z',
      };
      const first = memory();
      await server.put(first, vec(1, 0, 0, 0));
      assert.equal((await server.search(query)).length, 1, 'loads the scope into memory');
      const second = memory();
      await cli.put(second, vec(1, 0.1, 0, 0));
      assert.equal((await server.search(query)).length, 2);
      assert.equal(await cli.forget(scope, first.id), true);
      assert.deepEqual(
        (await server.search(query)).map((h) => h.record.id),
        [second.id],
      );
    } finally {
      await server.close();
      await cli.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says which file it cannot open', () => {
    assert.throws(
      () => SqliteVectorStore.open('/nonexistent-dir/x/cortex.db'),
      /cannot open the memory database \/nonexistent-dir/,
    );
  });
});
