/**
 * `aegis run` keeps an agent's memories in $AEGIS_HOME/cortex.db (issue 17): the first run of an agent with
 * spec.memory is indexed when it ends, and a second run — a new process — recalls it through the in-sandbox SDK
 * (`aegis.memory.search`). A run in another $AEGIS_HOME starts empty.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { hostSkipReason } from './adversarial/harness.ts';

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin/aegis.mjs');
const temps: string[] = [];
const tempDir = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
};

const AGENT = `apiVersion: aegis.dev/v1
kind: Agent
metadata: {name: rememberer}
spec:
  runtime: {language: node, entrypoint: main.mjs}
  security: {network: {allow: []}, resources: {timeout: 60s}}
  memory: {index: [input, output], recall: {k: 3, threshold: 0.05}}
`;

const MAIN = `import aegis from 'aegis';
const { question } = aegis.input();
const found = await aegis.memory.search(question, 3);
aegis.output({ answer: 'noted: ' + question, recalled: found.map((m) => m.text) });
`;

function run(manifest: string, home: string, input: unknown) {
  const child = spawn(
    process.execPath,
    [BIN, 'run', manifest, '--input', JSON.stringify(input), '-o', 'json'],
    {
      cwd: ROOT,
      env: { ...process.env, AEGIS_HOME: home },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise<{ status: string; output: { recalled: string[] } }>((done, fail) =>
    child.on('close', (code) => {
      if (code !== 0) return fail(new Error(`aegis run exited ${code}:\n${stderr}${stdout}`));
      done(JSON.parse(stdout) as { status: string; output: { recalled: string[] } });
    }),
  );
}

describe('aegis run: persistent agent memory', { skip: hostSkipReason() }, () => {
  after(() => {
    for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  });

  it('a second run recalls the first; another AEGIS_HOME does not', async () => {
    const dir = tempDir('aegis-memrun-agent-');
    writeFileSync(join(dir, 'agent.yaml'), AGENT);
    writeFileSync(join(dir, 'main.mjs'), MAIN);
    const manifest = join(dir, 'agent.yaml');
    const home = tempDir('aegis-memrun-home-');
    const first = await run(manifest, home, { question: 'How do I rotate the billing database password?' });
    assert.equal(first.status, 'succeeded');
    assert.deepEqual(first.output.recalled, [], 'nothing to recall on the first run');
    assert.ok(existsSync(join(home, 'cortex.db')));
    const second = await run(manifest, home, { question: 'rotate the password of the billing DB' });
    assert.equal(second.status, 'succeeded');
    assert.equal(second.output.recalled.length, 1, JSON.stringify(second.output));
    assert.match(
      second.output.recalled[0] ?? '',
      /rotate the billing database password[\s\S]*Outcome: succeeded/,
    );
    const elsewhere = await run(manifest, tempDir('aegis-memrun-home-'), { question: 'billing DB password' });
    assert.deepEqual(elsewhere.output.recalled, []);
  });
});
