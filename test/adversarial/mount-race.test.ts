/**
 * Adversarial: the mount-path race (issue 9 item 1). Agent A holds a write grant on a host directory D (owned by
 * the sandbox uid) and swaps `D/data` with a symlink to the host's /proc in a tight loop (renameat2 with
 * RENAME_EXCHANGE); agent B holds a read grant on `D/data`. Before the fix, bubblewrap resolved the grant's path
 * string again, later than the check, and B received the host's procfs. Now the runtime opens the grant component
 * by component (O_PATH|O_NOFOLLOW), checks the opened object and hands bubblewrap the descriptor: B sees its data
 * directory, or the spawn is refused (POLICY_DENIED, recorded with its reason), and never the host's /proc.
 *
 * The swapper is a helper process running as the sandbox uid — exactly the power a sandboxed agent with the write
 * grant has over D.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chownSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import { runAgent } from '../../src/app/run-agent.ts';
import { isAegisError } from '../../src/domain/errors.ts';
import { Harness, hostSkipReason, PYTHON, SANDBOX_USER } from './harness.ts';

const skip = hostSkipReason();
const SPAWNS = 500;
const CONCURRENCY = 4;

/** Swaps `a` and `b` atomically, forever (until killed). */
const SWAPPER = `
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2
AT_FDCWD = -100
a, b = sys.argv[1].encode(), sys.argv[2].encode()
print("ready", flush=True)
while True:
    libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)
`;

describe('adversarial: mount-path race', { skip }, () => {
  let h: Harness;
  let swapper: ChildProcess | undefined;
  before(() => {
    h = new Harness();
  });
  after(async () => {
    if (swapper?.pid !== undefined && swapper.exitCode === null) process.kill(swapper.pid, 'SIGKILL');
    await h.close();
  });

  it(`a read grant swapped for a symlink to /proc in a loop never mounts the host's /proc (${SPAWNS} spawns)`, async () => {
    const shared = join(h.tempDir('race'), 'D');
    mkdirSync(shared, { mode: 0o755 });
    mkdirSync(join(shared, 'data'), { mode: 0o755 });
    writeFileSync(join(shared, 'data', 'marker'), 'granted data\n', { mode: 0o644 });
    symlinkSync('/proc', join(shared, 'link'));
    for (const name of ['', 'data', 'data/marker'])
      chownSync(join(shared, name), SANDBOX_USER.uid, SANDBOX_USER.gid);

    swapper = spawn(PYTHON, ['-c', SWAPPER, join(shared, 'data'), join(shared, 'link')], {
      uid: SANDBOX_USER.uid,
      gid: SANDBOX_USER.gid,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      swapper!.stdout!.once('data', () => resolve());
      swapper!.once('exit', (code) => reject(new Error(`the swapper exited (${code})`)));
    });

    // The reader: a bash agent that says whether /data is its data dir or the host's procfs.
    const manifest = h.writeAgent({
      name: 'race-reader',
      language: 'bash',
      code: `if [ -e /data/meminfo ] || [ -e /data/1/cmdline ] || [ -e /data/self ]; then
  echo '{"saw":"proc"}'
elif [ -f /data/marker ]; then
  echo '{"saw":"data"}'
else
  echo '{"saw":"other"}'
fi
`,
      read: [{ source: join(shared, 'data'), target: '/data' }],
      resources: { timeout: '10s' },
    });
    const { agent } = await loadManifestFile(manifest);

    const tally = { proc: 0, data: 0, other: 0, detected: 0, refused: 0, failed: 0 };
    const refusals = new Map<string, number>();
    const failures: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < SPAWNS) {
        next++;
        let executionId = '';
        const logs: string[] = [];
        try {
          const record = await runAgent(h.ctx, {
            agent,
            input: null,
            onCreated: (id) => {
              executionId = id;
            },
            onLog: (stream, text) => logs.push(`[${stream}] ${text}`),
          });
          const saw = (record.output as { saw?: string } | null)?.saw;
          if (record.status === 'succeeded' && (saw === 'proc' || saw === 'data' || saw === 'other'))
            tally[saw]++;
          else if (
            record.status === 'failed' &&
            /^not started: a mount source was moved/.test(record.reason ?? '')
          ) {
            // bubblewrap's own check (it binds the descriptor's current path, then compares it with the descriptor)
            tally.detected++;
          } else {
            tally.failed++;
            failures.push(`${record.status}: ${record.reason} ${logs.join(' ')}`);
          }
        } catch (error) {
          assert.ok(isAegisError(error), `not an AegisError: ${String(error)}`);
          tally.refused++;
          // An unexpected error carries its cause: name it, so a failure here says what broke.
          const cause =
            error.cause instanceof Error ? ` (cause: ${error.cause.stack ?? error.cause.message})` : '';
          const key = `${error.code}: ${error.message.replaceAll(shared, 'D')}${error.code === 'INTERNAL' ? cause : ''}`;
          refusals.set(key, (refusals.get(key) ?? 0) + 1);
          // Refused before anything ran, and the record says why.
          const record = await h.ctx.store.getExecution(executionId);
          assert.equal(record?.status, 'failed');
          assert.match(record?.reason ?? '', /^not started: /);
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const summary = `${JSON.stringify(tally)}; refusals: ${JSON.stringify([...refusals])}; failures: ${failures.slice(0, 5).join(' | ')}`;
    console.log(`# mount race: ${summary}`);

    assert.equal(tally.proc, 0, `the reader was given the host's /proc: ${summary}`);
    assert.equal(tally.other, 0, `the reader saw something else at /data: ${summary}`);
    assert.equal(tally.failed, 0, `runs failed: ${summary}`);
    // Not vacuous: the race was run, and the reader got its data at least sometimes.
    assert.ok(tally.data > 0, summary);
    assert.equal(
      tally.proc + tally.data + tally.other + tally.detected + tally.refused + tally.failed,
      SPAWNS,
    );
    // Every refusal names the grant and says what happened (changed under the check, or a protected path).
    for (const [key] of refusals) {
      assert.match(
        key,
        /^POLICY_DENIED: (spec\.security\.filesystem\.read\[0\]: D\/data|a mount source was moved or replaced)/,
        key,
      );
    }
  });
});
