/**
 * `aegis audit` as a user drives it: real processes, a temp AEGIS_HOME, a real sandboxed run — then tampering with
 * the SQLite ledger and with an export, which `audit verify` must catch with exit 4 naming the seq.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin/aegis.mjs');
const temps: string[] = [];
after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function aegis(args: string[], home: string): Promise<Result> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: { ...process.env, AEGIS_HOME: home },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolveDone) => child.on('close', (code) => resolveDone({ code, stdout, stderr })));
}

function sql(home: string, statements: string): void {
  const db = new DatabaseSync(join(home, 'audit.db'));
  try {
    db.exec('DROP TRIGGER IF EXISTS audit_entries_append_only_update');
    db.exec(statements);
  } finally {
    db.close();
  }
}

describe('aegis audit', () => {
  it('shows, verifies and exports a run; catches tampering with the ledger and with an export (exit 4)', async () => {
    const home = mkdtempSync(join(tmpdir(), 'aegis-audit-cli-'));
    temps.push(home);
    const run = await aegis(
      ['run', 'examples/hello-python/agent.yaml', '--input', '{"name":"Ada"}', '-o', 'json'],
      home,
    );
    assert.equal(run.code, 0, run.stderr);
    const id = JSON.parse(run.stdout).id as string;

    const show = await aegis(['audit', 'show', id, '--output', 'json'], home);
    assert.equal(show.code, 0, show.stderr);
    const entries = JSON.parse(show.stdout) as {
      seq: number;
      kind: string;
      execution: string;
      data: Record<string, unknown>;
    }[];
    assert.deepEqual(
      entries.map((e) => e.kind),
      ['execution.created', 'execution.started', 'execution.finished'],
    );
    assert.ok(entries.every((e) => e.execution === id));
    assert.equal(entries[0]!.data.agent, 'hello-python');
    assert.equal(entries[2]!.data.status, 'succeeded');
    const text = await aegis(['audit', 'show', id], home);
    assert.match(text.stdout, /execution\.finished\s+\{"durationMs":\d+,"exitCode":0/);
    const unknown = await aegis(['audit', 'show', 'ex_nope'], home);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /no audit entries for execution ex_nope/);

    const verify = await aegis(['audit', 'verify'], home);
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /intact: 3 entries \(seq 1–3\), \d+ signed heads?, newest at seq 3/);

    // Export while intact, with the public key to pin.
    const exportFile = join(home, 'ledger.jsonl');
    const exported = await aegis(['audit', 'export', '--out', exportFile], home);
    assert.equal(exported.code, 0, exported.stderr);
    const key = await aegis(['audit', 'key'], home);
    assert.match(key.stdout, /^-----BEGIN PUBLIC KEY-----/);
    const keyFile = join(home, 'node.pub');
    writeFileSync(keyFile, key.stdout);

    // The ledger itself, tampered with through SQLite.
    const seq = entries[1]!.seq;
    sql(home, `UPDATE audit_entries SET data = '{"instance":"somewhere-else"}' WHERE seq = ${seq}`);
    const broken = await aegis(['audit', 'verify'], home);
    assert.equal(broken.code, 4, broken.stderr);
    assert.match(broken.stderr, /AUDIT_TAMPERED/);
    assert.match(broken.stderr, new RegExp(`entry seq ${seq} was edited`));
    assert.match(
      broken.stderr,
      new RegExp(`first bad seq ${seq}; found there: execution\\.started of ${id}`),
    );
    const brokenJson = await aegis(['audit', 'verify', '-o', 'json'], home);
    assert.equal(brokenJson.code, 4);
    assert.deepEqual(
      (({ ok, problem, firstBadSeq }) => ({ ok, problem, firstBadSeq }))(JSON.parse(brokenJson.stdout)),
      { ok: false, problem: 'edited', firstBadSeq: seq },
    );

    // The export still verifies offline (another home: nothing local is consulted), pinned to the node key.
    const elsewhere = mkdtempSync(join(tmpdir(), 'aegis-audit-offline-'));
    temps.push(elsewhere);
    const offline = await aegis(
      ['audit', 'verify', '--file', exportFile, '--public-key', keyFile],
      elsewhere,
    );
    assert.equal(offline.code, 0, offline.stderr);
    assert.match(offline.stdout, /export .* is intact: 3 entries .* by the pinned key/);

    // A tampered export line.
    const lines = readFileSync(exportFile, 'utf8').trim().split('\n');
    const i = lines.findIndex(
      (l) => l.includes('"type":"entry"') && l.includes('"kind":"execution.finished"'),
    );
    lines[i] = lines[i]!.replace('"status":"succeeded"', '"status":"failed"');
    writeFileSync(exportFile, `${lines.join('\n')}\n`);
    const badExport = await aegis(['audit', 'verify', '--file', exportFile], elsewhere);
    assert.equal(badExport.code, 4, badExport.stderr);
    assert.match(badExport.stderr, new RegExp(`entry seq ${entries[2]!.seq} was edited`));
  });
});
