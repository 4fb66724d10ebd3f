/** `aegis nodes ls`: the cluster's node registry (GET /v1/nodes). */
import type { Node } from '../../../sdk/index.ts';
import { EXIT, printJson, printTable } from '../output.ts';
import { type ServerFlags, withServer } from './connect.ts';

/** `1.2s`, `45s`, `3m`, `2h`, `4d`: a heartbeat age at a glance. */
export function formatAge(ms: number): string {
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`;
  if (ms < 120_000) return `${Math.round(ms / 1000)}s`;
  if (ms < 2 * 3_600_000) return `${Math.round(ms / 60_000)}m`;
  if (ms < 2 * 86_400_000) return `${Math.round(ms / 3_600_000)}h`;
  return `${Math.round(ms / 86_400_000)}d`;
}

export function nodeRow(n: Node): string[] {
  const labels = Object.entries(n.labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  return [
    n.id,
    n.kind,
    n.state,
    n.host,
    labels === '' ? '-' : labels,
    n.runtimes.join(',') || '-',
    `${n.running}/${n.capacity}`,
    formatAge(n.heartbeatAgeMs),
    String(n.epoch),
  ];
}

export async function commandNodesLs(flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const nodes = await client.listNodes();
    if (flags.output === 'json') {
      printJson({ nodes });
      return EXIT.ok;
    }
    if (nodes.length === 0) {
      process.stdout.write('no nodes registered — start `aegis server` (each server registers itself)\n');
      return EXIT.ok;
    }
    printTable(
      ['ID', 'KIND', 'STATE', 'HOST', 'LABELS', 'RUNTIMES', 'RUNNING', 'HEARTBEAT', 'EPOCH'],
      nodes.map(nodeRow),
    );
    return EXIT.ok;
  });
}
