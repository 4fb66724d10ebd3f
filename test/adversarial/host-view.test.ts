/**
 * Adversarial: what an agent learns about the host from its own mount table (issue 9 item 9, ADR 0015). The
 * synthesised /etc files and the prewarm shims are copied into the sandbox's root, not bound, so no host path of
 * theirs (the orchestrator's scratch root) shows in /proc/self/mountinfo; an agent directory inside a protected path
 * (a clone under /home/<user>) is handed over as a copy, so the user's home path does not show either. What still
 * shows, by design, is listed in the ADR: /usr and the /etc files interpreters need, the agent directory when it is
 * bound in place, the grants' sources, and the per-execution input/output files.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import { runAgent } from '../../src/app/run-agent.ts';
import { Harness, hostSkipReason, PY_PRELUDE } from './harness.ts';

const skip = hostSkipReason();

const REPORT_MOUNTS = `
lines = read_text("/proc/self/mountinfo").splitlines()
report({
    "roots": {l.split(" ")[4]: l.split(" ")[3] for l in lines},
    "passwd": read_text("/etc/passwd"),
    "etc": sorted(os.listdir("/etc")),
    "fds": {fd: attempt(os.readlink, "/proc/self/fd/" + fd) for fd in os.listdir("/proc/self/fd")},
})
`;

describe('adversarial: what the mount table shows of the host', { skip, concurrency: true }, () => {
  let h: Harness;
  const temps: string[] = [];
  before(() => {
    h = new Harness();
  });
  after(async () => {
    for (const dir of temps) rmSync(dir, { recursive: true, force: true });
    await h.close();
  });

  const checkNoScratchPaths = (roots: Record<string, string>) => {
    const scratch = h.ctx.sandbox.scratchRoot;
    for (const [target, root] of Object.entries(roots)) {
      assert.ok(!root.startsWith(`${scratch}/static`), `${target} is bound from ${root}`);
    }
    for (const file of ['/etc/passwd', '/etc/group', '/etc/hosts', '/etc/nsswitch.conf']) {
      assert.equal(roots[file], undefined, `${file} is a bind mount from ${roots[file]}`);
    }
  };

  it('the synthesised /etc files are there, but not as binds from the scratch root', async () => {
    const result = await h.run({ name: 'mountinfo-etc', code: REPORT_MOUNTS });
    assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
    const { roots, passwd, etc } = result.report;
    checkNoScratchPaths(roots);
    assert.match(passwd, /^agent:x:1000:1000:/m);
    for (const file of ['passwd', 'group', 'hosts', 'nsswitch.conf']) assert.ok(etc.includes(file), file);
    // The descriptors bwrap bound (agent dir, I/O files) and copied (/etc files) were closed before the agent ran:
    // none leads back into the host's filesystem.
    for (const [fd, link] of Object.entries(result.report['fds'] as Record<string, { value?: string }>)) {
      const target = link.value ?? '';
      assert.ok(
        !target.startsWith('/') || target === '/dev/null' || target.startsWith('/proc/'),
        `fd ${fd} -> ${target}`,
      );
    }
  });

  it('an agent directory under /home/<user> shows no /home path; its own read grant works from the copy', async () => {
    mkdirSync('/home', { recursive: true });
    const user = mkdtempSync('/home/aegis-hostview-');
    temps.push(user);
    chmodSync(user, 0o755);
    const dir = join(user, 'agent');
    mkdirSync(join(dir, 'data'), { recursive: true });
    writeFileSync(join(dir, 'data', 'note.txt'), 'from the bundle');
    writeFileSync(
      join(dir, 'main.py'),
      `${PY_PRELUDE}\n${REPORT_MOUNTS.replace('report({', 'report({\n    "note": read_text("/data/note.txt"),')}`,
    );
    const manifest = join(dir, 'agent.yaml');
    writeFileSync(
      manifest,
      stringify({
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name: 'mountinfo-home', version: '1.0.0' },
        spec: {
          runtime: { language: 'python', entrypoint: 'main.py' },
          isolation: 'sandbox',
          security: { filesystem: { read: [{ source: 'data', target: '/data' }] } },
        },
      }),
    );
    const { agent } = await loadManifestFile(manifest);
    const record = await runAgent(h.ctx, { agent, input: null, onLog: () => {} });
    assert.equal(record.status, 'succeeded', record.reason ?? '');
    const report = record.output as { roots: Record<string, string>; note: string };
    assert.equal(report.note, 'from the bundle');
    checkNoScratchPaths(report.roots);
    for (const [target, root] of Object.entries(report.roots)) {
      assert.ok(!root.startsWith('/home'), `${target} shows the host path ${root}`);
    }
    assert.ok(report.roots['/agent'], 'the agent directory is mounted');
  });
});
