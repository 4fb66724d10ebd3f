/** `aegis swarm show`'s tree view (src/cli/remote/swarm.ts): depth-first, children in creation order, depth and reasons. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SwarmTree } from '../sdk/index.ts';
import { swarmRows } from '../src/cli/remote/swarm.ts';

const row = (id: string, parentId: string | null, createdAt: string, reason: string | null = null) => ({
  id,
  parentId,
  agent: parentId === null ? 'coordinator' : 'researcher',
  status: reason === null ? ('succeeded' as const) : ('failed' as const),
  reason,
  createdAt,
  finishedAt: null,
  node: null,
});

describe('aegis swarm show: the tree view', () => {
  it('draws the tree depth first with depth, agent, status and reason', () => {
    const tree: SwarmTree = {
      root: 'ex_root',
      executions: [
        row('ex_root', null, '2025-01-01T00:00:00Z'),
        row('ex_b', 'ex_root', '2025-01-01T00:00:02Z', 'exit code 3'),
        row('ex_a', 'ex_root', '2025-01-01T00:00:01Z'),
        row('ex_a1', 'ex_a', '2025-01-01T00:00:03Z'),
      ],
      messages: [],
      locks: [],
    };
    assert.deepEqual(
      swarmRows(tree).map((r) => [r[0], r[2], r[3], r[5]]),
      [
        ['ex_root', 'succeeded', '0', ''],
        ['├─ ex_a', 'succeeded', '1', ''],
        ['│  └─ ex_a1', 'succeeded', '2', ''],
        ['└─ ex_b', 'failed', '1', 'exit code 3'],
      ],
    );
  });
});
