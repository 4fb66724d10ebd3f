/**
 * Clone anywhere (issue 10 item 1): the quickstart — `aegis run examples/email-summarizer/agent.yaml` through the
 * real CLI — works from a copy of the example under /root and under /home, both protected host paths that are not
 * even searchable by the sandbox uid. An agent's own directory is never a protected path to itself: its mailbox grant
 * lies inside it and is granted (from the read-only copy the sandbox uid can reach). A grant that leaves the agent
 * directory through a symlink is still refused.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'src/cli/bin.ts');
const EXAMPLE = join(ROOT, 'examples/email-summarizer');
const temps: string[] = [];
after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

const skip =
  process.getuid?.() !== 0 ? 'needs root: the copies go under /root and /home (run as root)' : undefined;

function temp(parent: string, prefix: string): string {
  mkdirSync(parent, { recursive: true });
  const dir = mkdtempSync(join(parent, prefix));
  temps.push(dir);
  return dir;
}

function aegis(
  args: string[],
  cwd: string,
  home: string,
): Promise<{ code: number | null; out: string; stdout: string }> {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd,
    env: { ...process.env, AEGIS_HOME: home },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let stdout = '';
  child.stdout.on('data', (d) => {
    out += d;
    stdout += d;
  });
  child.stderr.on('data', (d) => (out += d));
  return new Promise((done) => child.on('close', (code) => done({ code, out, stdout })));
}

describe('quickstart from a clone anywhere', { skip, concurrency: true }, () => {
  for (const parent of ['/root', '/home']) {
    it(`aegis run examples/email-summarizer/agent.yaml succeeds from a copy under ${parent}`, async () => {
      const clone = temp(parent, 'aegis-quickstart-');
      cpSync(EXAMPLE, join(clone, 'examples/email-summarizer'), { recursive: true });
      const home = temp(tmpdir(), 'aegis-quickstart-home-');
      // validate makes run's checks: it must agree that the agent's own directory is not protected from itself.
      const validate = await aegis(['validate', 'examples/email-summarizer/agent.yaml'], clone, home);
      assert.equal(validate.code, 0, validate.out);
      const run = await aegis(['run', 'examples/email-summarizer/agent.yaml', '-o', 'json'], clone, home);
      assert.equal(run.code, 0, run.out);
      const record = JSON.parse(run.stdout) as { status: string; output: { summary?: string } };
      assert.equal(record.status, 'succeeded', run.out);
      assert.match(record.output.summary ?? '', /^14 messages/);
    });
  }

  it('a grant inside the agent directory that is a symlink out of it is still refused', async () => {
    const clone = temp('/root', 'aegis-quickstart-');
    const agent = join(clone, 'email-summarizer');
    cpSync(EXAMPLE, agent, { recursive: true });
    rmSync(join(agent, 'mailbox'), { recursive: true });
    symlinkSync('/root', join(agent, 'mailbox'));
    const home = temp(tmpdir(), 'aegis-quickstart-home-');
    const run = await aegis(['run', 'email-summarizer/agent.yaml'], clone, home);
    assert.equal(run.code, 2, run.out);
    assert.match(run.out, /POLICY_DENIED/);
    assert.match(run.out, /resolves to \/root\).*protected path \/root/);
  });
});
