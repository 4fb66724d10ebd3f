/**
 * `aegis memory ls | search | rm | reembed` against a real `aegis server` (issue 17), on memories written into its
 * $AEGIS_HOME/cortex.db beforehand by the Cortex core (no sandbox needed): the text tables, `-o json` = the REST
 * shapes, errors as every server command prints them, scopes per key. Also what the server does at start: it
 * deletes memories past their ttl (one `memory.forget {expired}` ledger entry), and a scope stored by another
 * embedder is refused with CONFLICT naming `aegis memory reembed` until it is re-embedded. On SQLite
 * ($AEGIS_HOME/cortex.db) and, with AEGIS_TEST_DATABASE_URL, on PostgreSQL (the server's AEGIS_DATABASE_URL).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HashEmbedder } from '../../src/adapters/cortex/hash-embedder.ts';
import { PostgresVectorStore } from '../../src/adapters/cortex/postgres-vector-store.ts';
import { SqliteVectorStore } from '../../src/adapters/cortex/sqlite-vector-store.ts';
import { Cortex } from '../../src/app/cortex.ts';
import { ManualClock } from '../../src/app/fakes/manual-clock.ts';
import { MemoryAuditLog, toyHasher } from '../../src/app/fakes/memory-audit-log.ts';
import type { Embedder, VectorStore } from '../../src/app/ports.ts';
import {
  type Backend,
  cli,
  freshDatabase,
  killServers,
  postgresMissing,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

interface MemoryJson {
  id: string;
  agent: string;
  namespace: string;
  text: string;
  embedder: string;
  expiresAt: string | null;
}

/** Vectors of another embedder (as if the server had been configured with a different model before). */
const legacyEmbedder = (): Embedder => {
  const inner = new HashEmbedder({ dimension: 64 });
  return { id: 'legacy-v0/64', dimension: 64, embed: (texts) => inner.embed(texts) };
};

/** Writes memories into the server's vector store (as a previous server process would have). */
async function seed(store: VectorStore): Promise<{ billing: string; expired: string }> {
  const clock = new ManualClock(Date.now() - 2 * 3600_000);
  let n = 0;
  const parts = { store, audit: new MemoryAuditLog(), clock, hasher: toyHasher };
  const ids = { memoryId: () => `mem_seed${String(++n).padStart(4, '0')}` };
  const cortex = new Cortex({ ...parts, embedder: new HashEmbedder(), ids });
  const ops = { agent: 'ops', namespace: 'default' };
  const expired = await cortex.store(ops, 'a note that lived one hour', {}, { ttlMs: 3600_000 });
  await clock.advance(60_000);
  const billing = await cortex.store(
    ops,
    'Rotate the billing database password with `vault rotate billing-db`.',
  );
  await clock.advance(60_000);
  await cortex.store(ops, 'The deploy pipeline only runs on weekdays.', { team: 'platform' });
  await clock.advance(60_000);
  await cortex.store({ agent: 'ops', namespace: 'drafts' }, 'a draft about the billing database');
  const legacy = new Cortex({ ...parts, embedder: legacyEmbedder(), ids });
  await legacy.store({ agent: 'legacy', namespace: 'default' }, 'how to restart the legacy billing daemon');
  await store.close();
  return { billing: billing.id, expired: expired.id };
}

for (const backend of ['sqlite', 'postgres'] as Backend[]) {
  describe(`aegis memory against a real server (${backend})`, {
    skip: backend === 'postgres' && postgresMissing(),
  }, () => {
    let dirs: ServerDirs;
    let database: Awaited<ReturnType<typeof freshDatabase>>;
    let server: ServerProcess;
    let seeded: { billing: string; expired: string };
    const env = (key?: string) => ({
      ...server.env,
      AEGIS_SERVER: server.url,
      AEGIS_API_KEY: key ?? server.adminKey,
    });
    const json = async (args: string[], key?: string) => {
      const ran = await cli([...args, '-o', 'json'], env(key));
      assert.equal(ran.code, 0, ran.stderr);
      return JSON.parse(ran.stdout) as Record<string, unknown>;
    };
    const keyWith = async (scope: string) =>
      (await json(['keys', 'create', '--name', `k-${scope}`, '--scope', scope])).key as string;

    before(async () => {
      dirs = serverDirs();
      database = backend === 'postgres' ? await freshDatabase() : undefined;
      seeded = await seed(
        database
          ? await PostgresVectorStore.open(database.url)
          : SqliteVectorStore.open(join(dirs.home, 'cortex.db')),
      );
      server = await startServerProcess({ dirs, ...(database ? { databaseUrl: database.url } : {}) });
    });
    after(async () => {
      if (server) await server.stop();
      await killServers();
      await database?.drop();
      dirs?.cleanup();
    });

    it('ls: newest first, the expired memory already deleted at start; -o json is the REST MemoryList', async () => {
      const text = await cli(['memory', 'ls', 'ops'], env());
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /^ID\s+CREATED\s+SOURCE\s+OUTCOME\s+EXPIRES\s+TEXT/);
      assert.match(text.stdout, /weekdays[\s\S]*vault rotate billing-db/, 'newest first');
      const page = (await json(['memory', 'ls', 'ops'])) as { memories: MemoryJson[]; next: string | null };
      assert.deepEqual(Object.keys(page).sort(), ['memories', 'next']);
      assert.equal(page.memories.length, 2);
      assert.ok(!page.memories.some((m) => m.id === seeded.expired));
      assert.equal(page.memories[0]?.embedder, 'hash-v1/512');
      assert.equal(
        existsSync(join(dirs.home, 'cortex.db')),
        backend === 'sqlite',
        'vectors beside the server store',
      );
      const first = (await json(['memory', 'ls', 'ops', '--limit', '1'])) as { next: string | null };
      assert.ok(first.next);
      const second = (await json(['memory', 'ls', 'ops', '--limit', '1', '--after', first.next])) as {
        memories: MemoryJson[];
      };
      assert.equal(second.memories[0]?.id, seeded.billing);
      const drafts = (await json(['memory', 'ls', 'ops', '--namespace', 'drafts'])) as {
        memories: MemoryJson[];
      };
      assert.deepEqual(
        drafts.memories.map((m) => m.namespace),
        ['drafts'],
      );
    });

    it('search: a paraphrase finds the memory, scored; -o json is the REST MemorySearchResult', async () => {
      const query = 'how do I change the password of the billing DB';
      const text = await cli(['memory', 'search', 'ops', query, '-k', '1'], env());
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /^SCORE\s+ID/);
      assert.ok(text.stdout.includes(seeded.billing));
      const found = (await json(['memory', 'search', 'ops', query, '-k', '3', '--threshold', '0.05'])) as {
        memories: (MemoryJson & { score: number; similarity: number })[];
      };
      assert.equal(found.memories[0]?.id, seeded.billing);
      assert.ok((found.memories[0]?.score ?? 0) > 0);
      const bad = await cli(['memory', 'search', 'ops', query, '-k', 'many'], env());
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /error\[USAGE\]: -k must be a whole number from 1 to 100, got "many"/);
    });

    it('rm: forgets one memory (deploy); an unknown id or a read key is refused like every server error', async () => {
      const reader = await keyWith('read');
      const denied = await cli(['memory', 'rm', 'ops', seeded.billing], env(reader));
      assert.notEqual(denied.code, 0);
      assert.match(denied.stderr, /error\[PERMISSION_DENIED\]/);
      const gone = await json(['memory', 'rm', 'ops', seeded.billing]);
      assert.deepEqual(gone, { id: seeded.billing, forgotten: true });
      const again = await cli(['memory', 'rm', 'ops', seeded.billing], env());
      assert.notEqual(again.code, 0);
      assert.match(again.stderr, /error\[NOT_FOUND\]: no memory .* in ops\/default/);
      assert.match(again.stderr, /hint: list them with `aegis memory ls ops`/);
      const listed = (await json(['memory', 'ls', 'ops'], reader)) as { memories: MemoryJson[] };
      assert.ok(!listed.memories.some((m) => m.id === seeded.billing));
    });

    it("another embedder's scope: CONFLICT naming `aegis memory reembed`; reembed moves it over", async () => {
      const refused = await cli(['memory', 'search', 'legacy', 'restart the billing daemon'], env());
      assert.notEqual(refused.code, 0);
      assert.match(
        refused.stderr,
        /error\[CONFLICT\]: memory scope legacy\/default holds 1 vector\(s\) of embedder legacy-v0\/64/,
      );
      assert.match(refused.stderr, /hint: run `aegis memory reembed legacy`/);
      const deployer = await keyWith('deploy');
      const all = await cli(['memory', 'reembed', '--all'], env(deployer));
      assert.match(all.stderr, /error\[PERMISSION_DENIED\]/, 'every agent at once needs admin');
      const usage = await cli(['memory', 'reembed'], env());
      assert.equal(usage.code, 2);
      assert.match(usage.stderr, /name one agent, or pass --all/);
      assert.deepEqual(await json(['memory', 'reembed', 'legacy'], deployer), {
        count: 1,
        embedder: 'hash-v1/512',
      });
      const found = (await json(['memory', 'search', 'legacy', 'restart the billing daemon'])) as {
        memories: MemoryJson[];
      };
      assert.equal(found.memories[0]?.embedder, 'hash-v1/512');
      const text = await cli(['memory', 'reembed', '--all'], env());
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /re-embedded 0 memories of every agent with hash-v1\/512/);
    });

    it('the ledger holds the start sweep as a count, and the forget and reembed — never memory text', async () => {
      await server.stop();
      const out = join(dirs.home, '..', 'ledger.jsonl');
      const exported = await cli(['audit', 'export', '--out', out], server.env);
      assert.equal(exported.code, 0, exported.stderr);
      const lines = readFileSync(out, 'utf8');
      rmSync(out);
      const entries = lines
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { kind?: string; data?: Record<string, unknown> })
        .filter((e) => e.kind?.startsWith('memory.'));
      assert.ok(entries.some((e) => e.kind === 'memory.forget' && e.data?.['expired'] === 1));
      assert.ok(entries.some((e) => e.kind === 'memory.forget' && e.data?.['id'] === seeded.billing));
      assert.ok(entries.some((e) => e.kind === 'memory.store' && e.data?.['reembedded'] === 1));
      assert.ok(!lines.includes('vault rotate'), 'memory text in the ledger');
    });
  });
}
