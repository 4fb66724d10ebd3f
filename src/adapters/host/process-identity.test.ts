import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { hostname } from 'node:os';
import { describe, it } from 'node:test';
import { pollUntil } from '../../../test/support/poll.ts';
import { ProcIdentity, processStartTicks, readProcStat } from './process-identity.ts';

describe('ProcIdentity', () => {
  const identity = new ProcIdentity();

  it('sees itself alive, and a reused pid (other start time) or a gone pid as not alive', () => {
    const self = identity.current();
    assert.equal(identity.isAlive(self), true);
    assert.equal(identity.isAlive({ ...self, startTicks: self.startTicks + 1 }), false);
    assert.equal(identity.isAlive({ ...self, pid: 2 ** 22 + 1 }), false);
    assert.equal(
      identity.isAlive({ ...self, host: `not-${hostname()}` }),
      true,
      "another host's owner is not judged",
    );
  });

  it('sees a SIGKILLed process that its parent has not reaped yet (a zombie) as not alive', async () => {
    // sh starts a child, then becomes `sleep`, which never waits: the killed child stays a zombie, as a killed
    // orchestrator does until whatever started it reaps it.
    const parent = spawn('sh', ['-c', 'sleep 300 & echo $!; exec sleep 300'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    try {
      const [chunk] = (await once(parent.stdout, 'data')) as [Buffer];
      const pid = Number(chunk.toString().trim());
      const startTicks = processStartTicks(pid);
      assert.ok(startTicks !== undefined, `the child ${pid} runs`);
      const owner = { host: hostname(), pid, startTicks };
      assert.equal(identity.isAlive(owner), true, 'alive before the kill');

      process.kill(pid, 'SIGKILL');
      await pollUntil('the killed child to be a zombie', () => readProcStat(pid)?.state === 'Z', 10_000, 10);
      assert.equal(processStartTicks(pid), startTicks, '/proc still shows the zombie with its start time');
      assert.equal(identity.isAlive(owner), false, 'a zombie is not alive');
    } finally {
      if (parent.pid !== undefined && parent.exitCode === null) {
        const exited = once(parent, 'exit');
        process.kill(parent.pid, 'SIGKILL');
        await exited;
      }
    }
  });
});
