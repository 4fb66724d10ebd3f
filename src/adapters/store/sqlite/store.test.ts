import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { line, record } from '../../../../test/contracts/execution-store.contract.ts';
import { storeContract } from '../../../../test/contracts/store.contract.ts';
import type { Store } from '../../../app/ports.ts';
import { MIGRATIONS, migrate } from './migrations.ts';
import { SqliteStore } from './store.ts';

/** A fresh temp dir per test; the database sits in a subdirectory the store has to create. */
function tempDatabase(): { dir: string; file: string } {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-sqlite-store-'));
  return { dir, file: join(dir, 'state', 'aegis.db') };
}

storeContract('SqliteStore', async () => {
  const { dir, file } = tempDatabase();
  let current: Store = SqliteStore.open(file);
  return {
    store: current,
    reopen: async () => {
      await current.close();
      current = SqliteStore.open(file);
      return current;
    },
    cleanup: async () => {
      await current.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

describe('SqliteStore (SQLite specifics)', () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    ({ dir, file } = tempDatabase());
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function inspect<T>(query: (db: DatabaseSync) => T): T {
    const db = new DatabaseSync(file, { readOnly: true });
    try {
      return query(db);
    } finally {
      db.close();
    }
  }

  it('creates the parent directory 0700 and the database file 0600', async () => {
    const store = SqliteStore.open(file);
    try {
      await store.createExecution(record({ id: 'perm' }));
      await store.appendLogs('perm', [line('x')]);
      assert.equal(statSync(join(dir, 'state')).mode & 0o777, 0o700);
      assert.equal(statSync(file).mode & 0o777, 0o600);
      // SQLite gives the -wal/-shm files the mode of the database file.
      for (const suffix of ['-wal', '-shm']) {
        if (existsSync(file + suffix)) assert.equal(statSync(file + suffix).mode & 0o777, 0o600, suffix);
      }
    } finally {
      await store.close();
    }
  });

  it('runs in WAL mode', async () => {
    const store = SqliteStore.open(file);
    await store.close();
    assert.equal(
      inspect((db) => db.prepare('PRAGMA journal_mode').get()?.['journal_mode']),
      'wal',
    );
  });

  it('applies migrations once; reopening applies none and keeps the data', async () => {
    const first = SqliteStore.open(file);
    await first.createExecution(record({ id: 'kept' }));
    await first.close();
    const second = SqliteStore.open(file);
    try {
      assert.equal((await second.getExecution('kept'))?.id, 'kept');
    } finally {
      await second.close();
    }
    const applied = inspect((db) => db.prepare('SELECT id FROM schema_migrations ORDER BY id').all());
    assert.deepEqual(
      applied.map((row) => row['id']),
      MIGRATIONS.map((m) => m.id),
    );

    const db = new DatabaseSync(':memory:');
    try {
      assert.deepEqual(
        migrate(db),
        MIGRATIONS.map((m) => m.id),
      );
      assert.deepEqual(migrate(db), []);
    } finally {
      db.close();
    }
  });

  it('migrates a database of schema 1 in place: its executions read back without a revision', async () => {
    mkdirSync(dirname(file), { recursive: true });
    const old = new DatabaseSync(file);
    try {
      migrate(old, MIGRATIONS.slice(0, 1));
      old
        .prepare(
          'INSERT INTO executions (id, agent_name, agent_version, runtime, status, input_json, created_at) ' +
            "VALUES ('v1', 'hello', '1.0.0', 'sandbox', 'running', '{\"name\":\"world\"}', '2025-01-01T00:00:00.000Z')",
        )
        .run();
    } finally {
      old.close();
    }
    const store = SqliteStore.open(file);
    try {
      assert.deepEqual(await store.getExecution('v1'), record({ id: 'v1', status: 'running' }));
      assert.deepEqual(
        (await store.listUnfinished()).map((r) => r.id),
        ['v1'],
      );
      await store.createExecution(
        record({ id: 'v2', agent: { name: 'hello', version: '1.0.0', revision: 2 } }),
      );
      assert.equal((await store.getExecution('v2'))?.agent.revision, 2);
    } finally {
      await store.close();
    }
  });

  it('declares migrations with strictly increasing ids from 1', () => {
    assert.deepEqual(
      MIGRATIONS.map((m) => m.id),
      MIGRATIONS.map((_, i) => i + 1),
    );
  });

  it('rolls a failing migration back completely', () => {
    const db = new DatabaseSync(':memory:');
    try {
      const broken = [
        ...MIGRATIONS,
        { id: MIGRATIONS.length + 1, name: 'broken', sql: 'CREATE TABLE x (a); NOPE;' },
      ];
      assert.throws(() => migrate(db, broken));
      assert.equal(db.isTransaction, false);
      const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all();
      assert.deepEqual(tables, []);
    } finally {
      db.close();
    }
  });

  it('continues log numbering after reopen, also for an execution whose counter was dropped', async () => {
    const first = SqliteStore.open(file);
    await first.createExecution(record({ id: 'seq', status: 'running' }));
    await first.appendLogs('seq', [line('1'), line('2'), line('3')]);
    await first.close();

    const second = SqliteStore.open(file);
    try {
      await second.appendLogs('seq', [line('4')]);
      await second.updateExecution('seq', { status: 'succeeded' }); // drops the in-memory counter
      await second.appendLogs('seq', [line('5'), line('6')]);
      assert.deepEqual(
        (await second.readLogs('seq')).map((l) => [l.seq, l.text]),
        ['1', '2', '3', '4', '5', '6'].map((t, i) => [i + 1, t]),
      );
    } finally {
      await second.close();
    }
  });

  it('appends 10k log lines, in one call and in many', async (t) => {
    const store = SqliteStore.open(file);
    try {
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
      assert.deepEqual(
        (await store.readLogs('bulk-many', { afterSeq: 9_998 })).map((l) => l.seq),
        [9_999, 10_000],
      );
    } finally {
      await store.close();
    }
  });

  it('leaves no partial batch behind when an append fails', async () => {
    const store = SqliteStore.open(file);
    try {
      await store.appendLogs('atomic', [line('kept')]);
      const bad = [line('dropped'), { stream: 'stdout' as const, ts: 'ts', text: null as unknown as string }];
      await assert.rejects(store.appendLogs('atomic', bad));
      await store.appendLogs('atomic', [line('next')]);
      assert.deepEqual(
        (await store.readLogs('atomic')).map((l) => [l.seq, l.text]),
        [
          [1, 'kept'],
          [2, 'next'],
        ],
      );
    } finally {
      await store.close();
    }
  });

  it('close is idempotent', async () => {
    const store = SqliteStore.open(file);
    await store.close();
    await store.close();
  });
});
