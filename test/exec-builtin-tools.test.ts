/**
 * Issue 14: a *code* agent granted built-in tools runs as an ordinary execution (`aegis run`): AEGIS spawns its
 * instance live and runs the agent's command as the first command of the session, so fs.write / fs.read / cmd.run
 * work from the agent's own code. The attacker's side: a command off the cmd.run allow-list and a tool never
 * granted (http.fetch) are refused (ToolDenied in the agent) and audited as `tool.call` denied entries.
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
const temps: string[] = [];

function temp(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

function aegis(
  args: string[],
  home: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, AEGIS_HOME: home },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((done) => child.on('close', (code) => done({ code, stdout, stderr })));
}

const MAIN = `
import json, os, sys
import aegis

request = aegis.input()
print("input", json.dumps(request))
aegis.tools.call("fs.write", {"path": "/workspace/note.txt", "content": request["note"]})
read = aegis.tools.call("fs.read", {"path": "/workspace/note.txt"})
ran = aegis.tools.call("cmd.run", {"argv": ["echo", "hi from", "cmd.run"]})
refused = {}
for name, args in [("cmd.run", {"argv": ["cat", "/etc/shadow"]}), ("http.fetch", {"url": "http://127.0.0.1:1/"})]:
    try:
        aegis.tools.call(name, args)
        refused[name] = None
    except aegis.ToolDenied as denied:
        refused[name] = str(denied)
# The tool ran in this very sandbox: the agent sees the file fs.write made.
with open("/workspace/note.txt") as f:
    seen = f.read()
aegis.output({"read": read["content"], "seen": seen, "stdout": ran["stdout"], "refused": refused})
`;

describe('code agents with built-in tools run as plain executions (issue 14)', { skip }, () => {
  after(() => {
    for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  });

  it('fs.write / fs.read / cmd.run work from `aegis run`; an unlisted command and an ungranted tool are refused and audited', async () => {
    const dir = temp('aegis-exec-tools-agent-');
    writeFileSync(join(dir, 'main.py'), MAIN);
    writeFileSync(
      join(dir, 'agent.yaml'),
      stringify({
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name: 'tool-user', version: '0.1.0' },
        spec: {
          runtime: { language: 'python', entrypoint: 'main.py' },
          security: { resources: { timeout: '2m', memory: '256Mi' } },
          tools: [{ name: 'fs.write' }, { name: 'fs.read' }, { name: 'cmd.run', allow: ['echo *'] }],
        },
      }),
    );
    const home = temp('aegis-exec-tools-home-');
    const run = await aegis(
      ['run', join(dir, 'agent.yaml'), '--input', '{"note":"written by fs.write"}', '-o', 'json'],
      home,
    );
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const record = JSON.parse(run.stdout) as { id: string; status: string; output: Record<string, unknown> };
    assert.equal(record.status, 'succeeded', run.stdout + run.stderr);
    assert.match(run.stderr, /input \{"note": "written by fs.write"\}/);
    const output = record.output as {
      read: string;
      seen: string;
      stdout: string;
      refused: Record<string, string | null>;
    };
    assert.equal(output.read, 'written by fs.write');
    assert.equal(output.seen, 'written by fs.write');
    assert.equal(output.stdout.trim(), 'hi from cmd.run');
    assert.match(output.refused['cmd.run'] ?? 'ran', /allow/i);
    assert.match(output.refused['http.fetch'] ?? 'ran', /not granted|spec\.tools/i);

    const show = await aegis(['audit', 'show', record.id, '--output', 'json'], home);
    assert.equal(show.code, 0, show.stderr);
    const entries = JSON.parse(show.stdout) as { kind: string; data: Record<string, unknown> }[];
    const calls = entries
      .filter((e) => e.kind === 'tool.call')
      .map((e) => [e.data['tool'], e.data['outcome']]);
    assert.deepEqual(calls, [
      ['fs.write', 'allowed'],
      ['fs.read', 'allowed'],
      ['cmd.run', 'allowed'],
      ['cmd.run', 'denied'],
      ['http.fetch', 'denied'],
    ]);
    assert.equal(entries.at(-1)?.kind, 'execution.finished');
    assert.equal(entries.at(-1)?.data['status'], 'succeeded');
  });
});
