/**
 * `aegis edge …` (docs/adr/0108-edge-node-protocol.md): enrolment tokens, the list of edges and revocation go to
 * the server through the SDK (admin); `aegis edge join` is the edge node itself, in the foreground until SIGTERM.
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { parseLabelFlags } from '../../domain/edge/records.ts';
import { AegisError } from '../../domain/errors.ts';
import { EXIT, printJson, printTable } from '../output.ts';
import { HELP_GROUP, type ServerFlags, withServer } from './connect.ts';

const collect = (value: string, previous: string[]) => [...previous, value];

export async function commandEdgeTokenCreate(
  flags: ServerFlags & { label: string[]; ttl?: string },
): Promise<number> {
  const labels = parseLabelFlags(flags.label, '--label');
  return withServer(flags, async ({ client }) => {
    const created = await client.createEdgeToken({
      labels,
      ...(flags.ttl === undefined ? {} : { ttl: flags.ttl }),
    });
    if (flags.output === 'json') printJson(created);
    else process.stdout.write(`${created.token}\n`);
    process.stderr.write(
      `created enrolment token ${created.record.id} (single use, until ${created.record.expiresAt})\n` +
        'on the edge host: aegis edge join <this server URL> --token <token>\n',
    );
    return EXIT.ok;
  });
}

export async function commandEdgeLs(flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const nodes = await client.listEdgeNodes();
    if (flags.output === 'json') {
      printJson({ nodes });
      return EXIT.ok;
    }
    if (nodes.length === 0) {
      process.stdout.write(
        'no edge nodes — enrol one with `aegis edge token create`, then `aegis edge join`\n',
      );
      return EXIT.ok;
    }
    printTable(
      ['ID', 'STATE', 'LABELS', 'RUNTIMES', 'CAPACITY', 'RUNNING', 'ENROLLED', 'REVOKED'],
      nodes.map((n) => [
        n.id,
        n.revokedAt !== null ? 'revoked' : n.connected ? 'connected' : 'disconnected',
        Object.entries(n.labels)
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
          .map(([k, v]) => `${k}=${v}`)
          .join(',') || '-',
        n.runtimes.join(','),
        String(n.capacity),
        String(n.running),
        n.enrolledAt,
        n.revokedAt ?? '-',
      ]),
    );
    return EXIT.ok;
  });
}

export async function commandEdgeRevoke(id: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const node = await client.revokeEdgeNode(id);
    if (flags.output === 'json') printJson(node);
    else
      process.stdout.write(
        `revoked ${node.id} at ${node.revokedAt ?? 'now'}; it is cut off and cannot reconnect\n`,
      );
    return EXIT.ok;
  });
}

export interface EdgeJoinFlags {
  readonly token?: string;
  readonly label: string[];
  readonly dataDir?: string;
  readonly runtime: string;
  readonly capacity?: string;
  readonly insecureHttp?: boolean;
}

/** The edge node: connects out to `server` and serves until SIGTERM/SIGINT (or the server revokes it). */
export async function commandEdgeJoin(server: string, flags: EdgeJoinFlags): Promise<number> {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw new AegisError('USAGE', `"${server}" is not a URL`, {
      hint: 'e.g. aegis edge join http://10.0.0.5:8088 …',
    });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new AegisError('USAGE', `${server}: use http:// or https://`);
  }
  // Frames are authenticated only by the handshake: off loopback, the channel itself must be TLS.
  const loopback = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/.test(url.hostname);
  if (url.protocol === 'http:' && !loopback && !flags.insecureHttp) {
    throw new AegisError(
      'USAGE',
      `${server}: an edge speaks to its server over TLS (https://) off loopback`,
      {
        hint: 'put TLS in front of the server and use https://…, or pass --insecure-http on a network you trust',
      },
    );
  }
  if (flags.runtime !== 'sandbox') {
    throw new AegisError('USAGE', `--runtime ${flags.runtime}: edges run the sandbox runtime only for now`);
  }
  const labels = parseLabelFlags(flags.label, '--label');
  const capacity = flags.capacity === undefined ? availableParallelism() : Number(flags.capacity);
  if (!Number.isSafeInteger(capacity) || capacity < 1 || capacity > 1024) {
    throw new AegisError('USAGE', `--capacity: expected a whole number 1..1024, got "${flags.capacity}"`);
  }
  const { loadConfig } = await import('../../main.ts');
  const config = loadConfig();
  const dataDir = flags.dataDir ?? join(config.home, 'edge');
  const { startEdgeNode } = await import('../../main-edge.ts');
  const node = await startEdgeNode({
    server: url.toString().replace(/\/$/, ''),
    dataDir,
    ...(flags.token === undefined ? {} : { token: flags.token }),
    labels,
    capacity,
    runtime: flags.runtime,
    log: (line) => process.stderr.write(`aegis edge: ${line}\n`),
  });
  const onSignal = () => void node.stop();
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  await node.run();
  return EXIT.ok;
}

type ServerCommand = (parent: Command, name: string, description: string) => Command;
type Wrap = <A extends unknown[]>(action: (...args: A) => Promise<number>) => (...args: A) => Promise<void>;

export function registerEdgeCommands(program: Command, serverCommand: ServerCommand, wrap: Wrap): void {
  const edge = program
    .command('edge')
    .helpGroup(HELP_GROUP)
    .description('edge nodes: outbound-only nodes that run executions placed on them by label');
  const token = edge.command('token').description('enrolment tokens (admin)');
  serverCommand(token, 'create', 'create a single-use enrolment token; it is printed once')
    .option(
      '--label <key=value>',
      'a label the enrolled edge gets — its only labels (repeat)',
      collect,
      [] as string[],
    )
    .option('--ttl <duration>', 'how long the token may be used (default 1h, at most 30d)')
    .action(wrap(commandEdgeTokenCreate));
  serverCommand(edge, 'ls', 'list enrolled edge nodes and whether they are connected').action(
    wrap(commandEdgeLs),
  );
  serverCommand(edge, 'revoke', 'revoke an edge node: cut off at once, never reconnects')
    .argument('<node-id>', 'edge id (edge_…), from `aegis edge ls`')
    .action(wrap(commandEdgeRevoke));
  edge
    .command('join')
    .description('run this host as an edge node of <server-url> (foreground, until SIGTERM)')
    .argument('<server-url>', 'the server, e.g. http://10.0.0.5:8088 (only outbound connections are made)')
    .option('--token <token>', 'enrolment token (first join of an empty data dir)')
    .option(
      '--label <key=value>',
      "a label this edge expects (repeat): its labels are exactly its token's, so enrolment is refused unless the token carries it",
      collect,
      [] as string[],
    )
    .option('--data-dir <dir>', 'where the node key, bundles and results live (default $AEGIS_HOME/edge)')
    .option('--runtime <name>', 'local runtime', 'sandbox')
    .option('--capacity <n>', 'executions run at once (default: CPU count)')
    .option(
      '--insecure-http',
      'allow http:// to a non-loopback server (frames are then neither private nor integral)',
    )
    .action(wrap(commandEdgeJoin));
}
