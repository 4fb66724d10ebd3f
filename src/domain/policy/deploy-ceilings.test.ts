import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultDeployCeilings } from './deploy-ceilings.ts';

describe('defaultDeployCeilings', () => {
  it('derives the ceilings from the host: half the RAM, every core, 4096 pids, 4 GiB disk, 1 h', () => {
    const GiB = 1024 ** 3;
    assert.deepEqual(defaultDeployCeilings({ cores: 8, memoryBytes: 32 * GiB }), {
      cpuMillis: 8000,
      memoryBytes: 16 * GiB,
      pids: 4096,
      diskBytes: 4 * GiB,
      timeoutMs: 3_600_000,
    });
    // A small node: disk never above the memory ceiling (the /workspace tmpfs counts against memory).
    assert.equal(defaultDeployCeilings({ cores: 1, memoryBytes: 2 * GiB }).diskBytes, GiB);
  });
});
