/**
 * The ledger in a cluster, on a real PostgreSQL (`bash scripts/test-postgres.sh start`; AEGIS_TEST_DATABASE_URL):
 * nodes with their own SQLite chain and key ship to PostgreSQL; cluster reads, the archive, verify — and the
 * attacks: a node forging entries under another node's id, rows rewritten or deleted in PostgreSQL, two nodes both
 * finishing one execution.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import pg from 'pg';
import type { ClusterVerification } from '../../domain/audit/cluster-archive.ts';
import { headMessage, linkHash } from '../../domain/audit/entry.ts';
import { verifyClusterArchiveFile, writeClusterArchive } from './cluster-archive-file.ts';
import { ClusterCoverageAuditLog } from './cluster-coverage-audit-log.ts';
import { LedgerReplicator } from './ledger-replicator.ts';
import { Ed25519NodeKey, nodeHasher } from './node-key.ts';
import { PostgresClusterLedger } from './postgres-cluster-ledger.ts';
import { SqliteAuditLedger } from './sqlite-ledger.ts';
import { FileWitness } from './witness.ts';

const URL_VARIABLE = 'AEGIS_TEST_DATABASE_URL';
const databaseUrl = process.env[URL_VARIABLE];

if (databaseUrl === undefined || databaseUrl === '') {
  describe('cluster ledger', () => {
    it('needs a PostgreSQL server', {
      skip:
        `no ${URL_VARIABLE}: cluster ledger untested; run \`bash scripts/test-postgres.sh start\` and export ` +
        `${URL_VARIABLE}="$(bash scripts/test-postgres.sh url)" (npm test does both)`,
    });
  });
} else {
  clusterTests(databaseUrl);
}

const LIMITS = { cpuMillis: 1000, memoryBytes: 1, pids: 64, diskBytes: 1, timeoutMs: 1000 };
const CREATED = { agent: 'demo', version: '1.0.0', runtime: 'sandbox', isolation: 'sandbox', limits: LIMITS };
const FINISHED = { status: 'succeeded', exitCode: 0, reason: null, durationMs: 5 };

function clusterTests(url: string): void {
  const admin = new pg.Pool({ connectionString: url, max: 2 });
  admin.on('error', () => {});
  const temps: string[] = [];
  const schemas: string[] = [];
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });
  after(async () => {
    for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
    for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  });

  let tick = Date.now();
  const clock = { now: () => (tick += 1) };

  async function cluster(): Promise<{ schema: string; open: () => Promise<PostgresClusterLedger> }> {
    const schema = `aegis_ledger_${process.pid}_${randomBytes(5).toString('hex')}`;
    schemas.push(schema);
    const open = async () => {
      const ledger = await PostgresClusterLedger.open(url, { schema });
      closers.push(() => ledger.close());
      return ledger;
    };
    return { schema, open };
  }

  /** A node: its own home (SQLite ledger), key, witness and replication state file. */
  function node(id: string, pg: PostgresClusterLedger, keyFrom?: { key: string }) {
    const dir = mkdtempSync(join(tmpdir(), `aegis-node-${id}-`));
    temps.push(dir);
    const paths = {
      db: join(dir, 'audit.db'),
      key: keyFrom?.key ?? join(dir, 'keys', 'node-ed25519.pem'),
      witnessDir: join(dir, 'witness'),
      state: join(dir, 'witness', 'replicated.json'),
    };
    const signer = new Ed25519NodeKey(paths.key);
    const witness = new FileWitness({ dir: paths.witnessDir, ledgerFile: paths.db });
    const ledger = SqliteAuditLedger.open({
      file: paths.db,
      signer,
      hasher: nodeHasher,
      clock,
      witness,
      writer: true,
      headEvery: 4,
    });
    let replicator: LedgerReplicator | undefined;
    const warnings: string[] = [];
    const startReplicator = async () => {
      replicator = new LedgerReplicator({
        node: id,
        ledgerFile: paths.db,
        cluster: pg,
        signer,
        clock,
        stateFile: paths.state,
        batchSize: 3,
        intervalMs: 60_000,
        warn: (m) => warnings.push(m),
      });
      await replicator.start();
      return replicator;
    };
    closers.push(async () => {
      await replicator?.stop();
      await ledger.close();
    });
    return { id, paths, signer, witness, ledger, warnings, startReplicator, replicator: () => replicator! };
  }

  /** created on a, started and finished on b (a claimed-elsewhere execution), plus filler. */
  async function twoNodes() {
    const { schema, open } = await cluster();
    const pgLedger = await open();
    const a = node('node-a', pgLedger);
    const b = node('node-b', pgLedger);
    a.ledger.append('execution.created', 'ex_1', CREATED);
    b.ledger.append('execution.started', 'ex_1', { instance: 'i1' });
    b.ledger.append('execution.finished', 'ex_1', FINISHED);
    for (let i = 2; i <= 4; i++) {
      a.ledger.append('execution.created', `ex_${i}`, CREATED);
      a.ledger.append('execution.started', `ex_${i}`, { instance: `i${i}` });
      a.ledger.append('execution.finished', `ex_${i}`, FINISHED);
    }
    await a.ledger.close();
    await b.ledger.close();
    await a.startReplicator();
    await b.startReplicator();
    return { schema, pgLedger, a, b };
  }

  const failures = (result: ClusterVerification) => [
    ...result.nodes
      .filter((n) => !n.result.ok)
      .map((n) => `${n.node}:${(n.result as { problem: string }).problem}`),
    ...result.contradictions.map((c) => `${c.problem}:${c.execution}`),
    ...result.archiveProblems,
  ];

  describe('cluster ledger on PostgreSQL', () => {
    it('ships each node chain, heads and key; resumes without duplicates; reads one execution across nodes', async () => {
      const { pgLedger, a, b } = await twoNodes();
      assert.deepEqual(
        (await pgLedger.nodes()).map((n) => [n.node, n.keyId]),
        [
          ['node-a', a.signer.keyId()],
          ['node-b', b.signer.keyId()],
        ],
      );
      assert.equal((await pgLedger.tip('node-a')).seq, 10);
      assert.equal(a.replicator().status().lagEntries, 0);
      const entries = await b.replicator().list('ex_1');
      assert.deepEqual(
        entries.map((e) => [e.node, e.kind]),
        [
          ['node-a', 'execution.created'],
          ['node-b', 'execution.started'],
          ['node-b', 'execution.finished'],
        ],
      );
      // Restart: resumes from PostgreSQL's tip, ships nothing twice.
      await a.replicator().stop();
      const again = await a.startReplicator();
      assert.equal(again.status().replicatedSeq, 10);
      assert.equal(await again.replicateOnce(), 0);
      const verified = await pgLedger.verify({ nowMs: clock.now() });
      assert.deepEqual(failures(verified), []);
      assert.equal(verified.ok, true);
    });

    it("lifecycle coverage spans the cluster, so one node's recovery sees another node's finish", async () => {
      const { pgLedger, a } = await twoNodes();
      const local = SqliteAuditLedger.open({ file: a.paths.db, signer: a.signer, hasher: nodeHasher, clock });
      closers.push(() => local.close());
      // ex_1 was created on a but started and finished on b: a's own ledger has no finish for it.
      assert.equal((await local.lifecycleCoverage()).get('ex_1')?.finished, false);
      const merged = await new ClusterCoverageAuditLog(local, pgLedger).lifecycleCoverage();
      assert.deepEqual(merged.get('ex_1'), {
        created: true,
        finished: true,
        recovered: false,
        recoveredTerminal: false,
      });
    });

    it('cluster reads include the local tail not yet shipped, tagged with this node', async () => {
      const { pgLedger } = await cluster().then(async (c) => ({ pgLedger: await c.open() }));
      const a = node('node-a', pgLedger);
      a.ledger.append('execution.created', 'ex_9', CREATED);
      await a.ledger.flush();
      const replicator = await a.startReplicator();
      a.ledger.append('execution.started', 'ex_9', { instance: 'i9' });
      await a.ledger.flush();
      // Not shipped yet (no tick): read anyway, from the local ledger.
      assert.equal(replicator.status().lagEntries, 1);
      const entries = await replicator.list('ex_9');
      assert.deepEqual(
        entries.map((e) => [e.node, e.kind]),
        [
          ['node-a', 'execution.created'],
          ['node-a', 'execution.started'],
        ],
      );
    });

    it('exports one archive that verifies offline; a tampered archive does not', async () => {
      const { pgLedger } = await twoNodes();
      const dir = mkdtempSync(join(tmpdir(), 'aegis-archive-'));
      temps.push(dir);
      const file = join(dir, 'cluster.jsonl');
      const out = createWriteStream(file);
      const counts = await writeClusterArchive(pgLedger, out, new Date(clock.now()).toISOString());
      out.end();
      await once(out, 'finish');
      assert.equal(counts.nodes, 2);
      assert.equal(counts.entries, 12);
      const verified = await verifyClusterArchiveFile(file);
      assert.deepEqual(failures(verified), []);
      assert.equal(verified.executions, 4);
      // Drop node-b's section: the header still lists it.
      const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
      const bStart = lines.findIndex((l) => l.includes('"type":"header"') && l.includes('"node":"node-b"'));
      writeFileSync(file, `${lines.slice(0, bStart).join('\n')}\n`);
      const cut = await verifyClusterArchiveFile(file);
      assert.equal(cut.ok, false);
      assert.match(cut.archiveProblems.join('\n'), /node node-b is listed .* missing/);
    });

    it('attack: a node ships under another node id with its own key — refused, reported, nothing shipped', async () => {
      const { pgLedger, a } = await twoNodes();
      const before = await pgLedger.tip('node-a');
      const mallory = node('node-a', pgLedger); // same id, its own (different) key
      mallory.ledger.append('execution.finished', 'ex_2', { ...FINISHED, status: 'failed' });
      await mallory.ledger.close();
      const replicator = await mallory.startReplicator();
      assert.equal(replicator.status().state, 'refused');
      assert.match(mallory.warnings.join('\n'), /published with key .* not this node's key/);
      assert.deepEqual(await pgLedger.tip('node-a'), before);
      const verified = await pgLedger.verify({ nowMs: clock.now() });
      assert.equal(verified.ok, false);
      assert.match(verified.archiveProblems.join('\n'), /key-refused.*node id node-a/);
      assert.notEqual(mallory.signer.keyId(), a.signer.keyId());
    });

    it('a key rotated with `aegis audit rotate-key` is accepted: the chain itself hands over to it', async () => {
      const { pgLedger, a } = await twoNodes();
      await a.replicator().stop();
      const reopen = () =>
        SqliteAuditLedger.open({
          file: a.paths.db,
          signer: a.signer,
          hasher: nodeHasher,
          clock,
          witness: a.witness,
          writer: true,
        });
      // What commandAuditRotateKey does: the old key signs a head over the entry naming the new key.
      const before = reopen();
      const next = a.signer.rotatePrepare();
      before.append('audit.key-rotated', null, {
        from: a.signer.keyId(),
        to: next.keyId,
        publicKey: next.publicKeyPem,
      });
      await before.close();
      a.signer.rotateCommit(next, new Date(clock.now()).toISOString());
      const afterRotation = reopen();
      afterRotation.append('execution.created', 'ex_9', CREATED);
      await afterRotation.close();
      const again = await a.startReplicator();
      assert.equal(again.status().state, 'replicating', a.warnings.join('\n'));
      assert.equal(again.status().lagEntries, 0);
      const published = (await pgLedger.nodes()).find((n) => n.node === 'node-a')!;
      assert.deepEqual(
        published.keys.map((k) => [k.keyId, k.rotatedAtSeq]),
        [
          [published.keys[0]!.keyId, null],
          [next.keyId, 11],
        ],
      );
      const verified = await pgLedger.verify({ nowMs: clock.now() });
      assert.deepEqual(failures(verified), []);
      const dir = mkdtempSync(join(tmpdir(), 'aegis-archive-'));
      temps.push(dir);
      const file = join(dir, 'cluster.jsonl');
      const out = createWriteStream(file);
      await writeClusterArchive(pgLedger, out, new Date(clock.now()).toISOString());
      out.end();
      await once(out, 'finish');
      assert.deepEqual(failures(await verifyClusterArchiveFile(file)), []);
    });

    it('attack: a rotation entry forged into PostgreSQL (no head by the old key) does not let another key in', async () => {
      const { schema, pgLedger } = await twoNodes();
      const mallory = node('node-a', pgLedger);
      const tip = await pgLedger.tip('node-a');
      const forged = {
        seq: tip.seq + 1,
        ts: new Date(clock.now()).toISOString(),
        execution: null,
        kind: 'audit.key-rotated',
        dataJson: JSON.stringify({
          from: 'x',
          publicKey: mallory.signer.publicKeyPem(),
          to: mallory.signer.keyId(),
        }),
        prevHash: tip.hash,
      };
      await admin.query(
        `INSERT INTO ${schema}.ledger_entries (node_id, seq, ts, execution, kind, data, prev_hash, hash)
         VALUES ('node-a', $1, $2, NULL, $3, $4, $5, $6)`,
        [
          forged.seq,
          forged.ts,
          forged.kind,
          forged.dataJson,
          forged.prevHash,
          linkHash(forged, nodeHasher.sha256Hex),
        ],
      );
      const replicator = await mallory.startReplicator();
      assert.equal(replicator.status().state, 'refused');
      assert.equal((await pgLedger.nodes()).find((n) => n.node === 'node-a')!.keys.length, 1);
      assert.ok((await pgLedger.incidents()).some((i) => i.problem === 'key-refused'));
    });

    it('attack: rows forged directly in PostgreSQL under another node, signed with a wrong key — verify names it', async () => {
      const { schema, pgLedger, b } = await twoNodes();
      // node-b (which has database access) appends a finish for ex_2 to node-a's chain, correctly chained and
      // hashed, and signs a head over it with its own key.
      const tip = await pgLedger.tip('node-a');
      const forged = {
        seq: tip.seq + 1,
        ts: new Date(clock.now()).toISOString(),
        execution: 'ex_2',
        kind: 'execution.finished',
        dataJson: JSON.stringify({ durationMs: 1, exitCode: 1, reason: 'forged', status: 'failed' }),
        prevHash: tip.hash,
      };
      const hash = linkHash(forged, nodeHasher.sha256Hex);
      await admin.query(
        `INSERT INTO ${schema}.ledger_entries (node_id, seq, ts, execution, kind, data, prev_hash, hash)
         VALUES ('node-a', $1, $2, $3, $4, $5, $6, $7)`,
        [forged.seq, forged.ts, forged.execution, forged.kind, forged.dataJson, forged.prevHash, hash],
      );
      const head = { seq: forged.seq, hash, ts: forged.ts };
      await admin.query(
        `INSERT INTO ${schema}.ledger_heads (node_id, seq, hash, ts, key_id, signature) VALUES ('node-a', $1, $2, $3, $4, $5)`,
        [head.seq, head.hash, head.ts, b.signer.keyId(), b.signer.sign(headMessage(head))],
      );
      const verified = await pgLedger.verify({ nowMs: clock.now() });
      assert.equal(verified.ok, false);
      const a = verified.nodes.find((n) => n.node === 'node-a')!.result;
      assert.equal(a.ok, false);
      assert.equal((a as { problem: string }).problem, 'bad-signature');
      // …and the second finish of ex_2 is a contradiction across the cluster as well.
      assert.ok(
        verified.contradictions.some((c) => c.problem === 'conflicting-finish' && c.execution === 'ex_2'),
      );
    });

    it('attack: a node rewrites its own replicated rows — verify catches it against its signed heads', async () => {
      const { schema, pgLedger } = await twoNodes();
      // Rewrite ex_4's finish (seq 10) and re-hash the chain from there, heads untouched (no key needed for that).
      const { rows } = await admin.query(
        `SELECT seq, ts, execution, kind, data, prev_hash, hash FROM ${schema}.ledger_entries WHERE node_id = 'node-a' AND seq >= 9 ORDER BY seq`,
      );
      let prev = rows[0].prev_hash as string;
      for (const row of rows) {
        const data = Number(row.seq) === 10 ? row.data.replace('"succeeded"', '"failed"') : row.data;
        const link = {
          seq: Number(row.seq),
          ts: row.ts,
          execution: row.execution,
          kind: row.kind,
          dataJson: data,
          prevHash: prev,
        };
        const hash = linkHash(link, nodeHasher.sha256Hex);
        await admin.query(
          `UPDATE ${schema}.ledger_entries SET data = $1, prev_hash = $2, hash = $3 WHERE node_id = 'node-a' AND seq = $4`,
          [data, prev, hash, link.seq],
        );
        prev = hash;
      }
      const verified = await pgLedger.verify({ nowMs: clock.now() });
      const a = verified.nodes.find((n) => n.node === 'node-a')!.result;
      assert.equal(a.ok, false);
      assert.equal((a as { problem: string }).problem, 'rewritten');
      assert.equal(verified.ok, false);
    });

    it('attack: two nodes both finish one execution — verify reports the contradiction with both entries', async () => {
      const { pgLedger, a, b } = await twoNodes();
      // node-a never ran ex_1 (node-b did) but writes a finish for it in its own, validly signed chain.
      const ledger = SqliteAuditLedger.open({
        file: a.paths.db,
        signer: a.signer,
        hasher: nodeHasher,
        clock,
        witness: a.witness,
        writer: true,
      });
      ledger.append('execution.finished', 'ex_1', {
        ...FINISHED,
        status: 'failed',
        reason: 'node-a says so',
      });
      await ledger.close();
      await a.replicator().replicateOnce();
      const verified = await pgLedger.verify({ nowMs: clock.now() });
      assert.equal(verified.ok, false);
      assert.ok(
        verified.nodes.every((n) => n.result.ok),
        'each chain is intact on its own',
      );
      const conflict = verified.contradictions.find((c) => c.problem === 'conflicting-finish');
      assert.ok(conflict);
      assert.equal(conflict.execution, 'ex_1');
      assert.deepEqual(
        conflict.entries.map((e) => [e.node, e.kind]),
        [
          ['node-a', 'execution.finished'],
          ['node-b', 'execution.finished'],
        ],
      );
      assert.match(conflict.message, /node node-a seq 11.*node node-b seq 2/);
      assert.ok(verified.contradictions.some((c) => c.problem === 'finish-by-non-holder'));
      void b;
    });

    it("attack: a node's replicated tail and the heads over it deleted — detected by the node, reported, re-shipped", async () => {
      const { schema, pgLedger, a } = await twoNodes();
      // Delete seqs 5–10 of node-a and every head above 4: what remains is a valid-looking, signed chain prefix.
      await admin.query(`DELETE FROM ${schema}.ledger_entries WHERE node_id = 'node-a' AND seq > 4`);
      await admin.query(`DELETE FROM ${schema}.ledger_heads WHERE node_id = 'node-a' AND seq > 4`);
      // From the database alone it looks intact; with the node's own evidence (witness, state file) it is not.
      const witnessed = a.witness.read().filter((h) => h.seq <= 10);
      const shipped = JSON.parse(readFileSync(a.paths.state, 'utf8')) as { seq: number; hash: string };
      const verified = await pgLedger.verify({
        nowMs: clock.now(),
        local: { node: 'node-a', witnessed, shipped },
      });
      const result = verified.nodes.find((n) => n.node === 'node-a')!.result;
      assert.equal(result.ok, false);
      assert.match((result as { problem: string }).problem, /heads-deleted|truncated/);
      // The node itself notices on its next start, reports it, and ships the rows again.
      await a.replicator().stop();
      const again = await a.startReplicator();
      assert.match(a.warnings.join('\n'), /replicated rows were deleted/);
      assert.equal(again.status().replicatedSeq, 10);
      const incidents = await pgLedger.incidents();
      assert.ok(incidents.some((i) => i.problem === 'replica-truncated' && i.node === 'node-a'));
    });

    it('attack: rows deleted while the node runs — the next ship reports it and re-ships', async () => {
      const { schema, pgLedger, a } = await twoNodes();
      await admin.query(`DELETE FROM ${schema}.ledger_entries WHERE node_id = 'node-a' AND seq > 6`);
      const ledger = SqliteAuditLedger.open({
        file: a.paths.db,
        signer: a.signer,
        hasher: nodeHasher,
        clock,
        witness: a.witness,
        writer: true,
      });
      ledger.append('execution.created', 'ex_5', CREATED);
      await ledger.close();
      await a.replicator().replicateOnce();
      assert.match(a.warnings.join('\n'), /lost node node-a's replicated entries 7–10/);
      assert.equal((await pgLedger.tip('node-a')).seq, 11);
      assert.equal(a.replicator().status().state, 'replicating');
    });
  });
}
