/**
 * `aegis swarm show ROOT-ID`: a swarm's tree (the root execution and every descendant it spawned) with statuses,
 * depth, agents and why each ended; `-o json` prints the REST answer (`GET /v1/swarms/{rootId}`) as it is.
 */
import type { SwarmTree } from '../../../sdk/index.ts';
import { EXIT, printJson, printTable } from '../output.ts';
import { type ServerFlags, withServer } from './connect.ts';

/** Rows of the tree view, depth first in creation order: [TREE, AGENT, STATUS, DEPTH, NODE, REASON]. */
export function swarmRows(tree: SwarmTree): string[][] {
  const children = new Map<string, SwarmTree['executions']>();
  for (const e of tree.executions) {
    if (e.parentId === null) continue;
    children.set(e.parentId, [...(children.get(e.parentId) ?? []), e]);
  }
  const rows: string[][] = [];
  const seen = new Set<string>();
  const visit = (e: SwarmTree['executions'][number], prefix: string, last: boolean, depth: number) => {
    if (seen.has(e.id)) return;
    seen.add(e.id);
    const branch = depth === 0 ? '' : `${prefix}${last ? '└─ ' : '├─ '}`;
    rows.push([
      `${branch}${e.id}`,
      e.agent,
      e.status,
      String(depth),
      e.node ?? '-',
      e.reason === null ? '' : e.reason.replace(/\s+/g, ' ').slice(0, 120),
    ]);
    const below = [...(children.get(e.id) ?? [])].sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    const next = depth === 0 ? '' : `${prefix}${last ? '   ' : '│  '}`;
    for (const [i, c] of below.entries()) visit(c, next, i === below.length - 1, depth + 1);
  };
  const root = tree.executions.find((e) => e.id === tree.root);
  if (root !== undefined) visit(root, '', true, 0);
  // A row whose parent is not in the answer (should not happen) still shows, at the top level.
  for (const e of tree.executions) if (!seen.has(e.id)) visit(e, '', true, 0);
  return rows;
}

export async function commandSwarmShow(rootId: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const tree = await client.swarm(rootId);
    if (flags.output === 'json') {
      printJson(tree);
      return EXIT.ok;
    }
    printTable(['EXECUTION', 'AGENT', 'STATUS', 'DEPTH', 'NODE', 'REASON'], swarmRows(tree));
    process.stdout.write(
      `${tree.executions.length} execution${tree.executions.length === 1 ? '' : 's'}, ` +
        `${tree.messages.length} message${tree.messages.length === 1 ? '' : 's'}, ` +
        `${tree.locks.length} lock${tree.locks.length === 1 ? '' : 's'}\n`,
    );
    return EXIT.ok;
  });
}
