/**
 * reapOrphans on scratch dirs a crashed orchestrator left before (or while) it wrote state.json: no sandbox is
 * started, so this runs without bubblewrap or root.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ProcessIdentity } from '../../../app/ports.ts';
import { SandboxRuntime } from './runtime.ts';

const DEAD = { host: 'h', pid: 111, startTicks: 1 };
const LIVE = { host: 'h', pid: 222, startTicks: 2 };
const identity: ProcessIdentity = {
  current: () => LIVE,
  isAlive: (owner) => owner.pid === LIVE.pid && owner.startTicks === LIVE.startTicks,
};

describe('SandboxRuntime.reapOrphans: dirs without a state.json', () => {
  const root = mkdtempSync(join(tmpdir(), 'aegis-reap-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  const sandboxes = join(root, 'sandboxes');
  const stateOf = (owner: typeof DEAD, executionId: string) =>
    JSON.stringify({ executionId, owner, cgroupPaths: [], createdAt: new Date().toISOString() });

  it('reaps an old empty dir and a partial state of a dead owner at once; keeps a live owner’s, a fresh unreadable one and a fresh empty one', async () => {
    const old = new Date(Date.now() - 3_600_000);
    // Another process's start between its mkdir and its first state write: reaping it failed that start (ENOENT).
    mkdirSync(join(sandboxes, 'ex_empty_fresh'), { recursive: true });
    mkdirSync(join(sandboxes, 'ex_empty'));
    utimesSync(join(sandboxes, 'ex_empty'), old, old);
    mkdirSync(join(sandboxes, 'ex_partial_dead'));
    writeFileSync(join(sandboxes, 'ex_partial_dead', 'state.json.partial'), stateOf(DEAD, 'ex_partial_dead'));
    mkdirSync(join(sandboxes, 'ex_partial_live'));
    writeFileSync(join(sandboxes, 'ex_partial_live', 'state.json.partial'), stateOf(LIVE, 'ex_partial_live'));
    mkdirSync(join(sandboxes, 'ex_garbled'));
    writeFileSync(join(sandboxes, 'ex_garbled', 'state.json.partial'), '{"execu');
    mkdirSync(join(sandboxes, 'ex_garbled_old'));
    writeFileSync(join(sandboxes, 'ex_garbled_old', 'state.json'), '{"execu');
    utimesSync(join(sandboxes, 'ex_garbled_old'), old, old);

    const runtime = new SandboxRuntime({ identity, scratchRoot: root });
    assert.deepEqual([...(await runtime.reapOrphans())].sort(), [
      'ex_empty',
      'ex_garbled_old',
      'ex_partial_dead',
    ]);
    assert.equal(existsSync(join(sandboxes, 'ex_empty')), false);
    assert.equal(existsSync(join(sandboxes, 'ex_partial_dead')), false);
    assert.equal(existsSync(join(sandboxes, 'ex_partial_live')), true, 'a live owner’s dir stays');
    assert.equal(
      existsSync(join(sandboxes, 'ex_empty_fresh')),
      true,
      'a fresh empty dir may be a start in progress: it waits for the grace period',
    );
    assert.equal(
      existsSync(join(sandboxes, 'ex_garbled')),
      true,
      'an unreadable fresh one waits for its grace period',
    );
  });
});
