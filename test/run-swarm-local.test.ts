/**
 * Issue 16: under `aegis run` (no server, no queue, no deployed agents) an agent with spec.swarm that spawns gets a
 * clear refusal — 403 swarm_denied, SwarmDenied in the SDK, saying spawning needs a server — not a 404.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { hostSkipReason } from './adversarial/harness.ts';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'src/cli/bin.ts');
const skip = hostSkipReason();

const MAIN = `
import aegis
try:
    aegis.swarm.spawn("research-a", {"q": "x"}, wait=True, timeout=5)
    aegis.output({"spawned": True})
except aegis.SwarmDenied as denied:
    aegis.output({"denied": str(denied), "status": denied.status, "code": denied.code})
`;

describe('aegis run: swarm spawn is refused with a hint', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-run-swarm-'));
  const home = mkdtempSync(join(tmpdir(), 'aegis-run-swarm-home-'));
  after(() => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  });

  it('answers 403 swarm_denied saying a server is needed (SwarmDenied in the SDK)', async () => {
    writeFileSync(join(dir, 'main.py'), MAIN);
    writeFileSync(
      join(dir, 'agent.yaml'),
      stringify({
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name: 'lonely-coordinator', version: '0.1.0' },
        spec: {
          runtime: { language: 'python', entrypoint: 'main.py' },
          swarm: { canSpawn: ['research-*'] },
        },
      }),
    );
    const child = spawn(process.execPath, [CLI, 'run', join(dir, 'agent.yaml'), '-o', 'json'], {
      cwd: ROOT,
      env: { ...process.env, AEGIS_HOME: home },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise((done) => child.on('close', done));
    assert.equal(code, 0, stdout + stderr);
    const output = (JSON.parse(stdout) as { output: Record<string, unknown> }).output;
    assert.equal(output['status'], 403, JSON.stringify(output));
    assert.equal(output['code'], 'swarm_denied');
    assert.match(String(output['denied']), /aegis run.*cannot spawn.*needs an AEGIS server/);
    assert.match(String(output['denied']), /aegis deploy/);
  });
});
