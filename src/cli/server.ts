/**
 * `aegis server` (also installed as `aegis-orchestrator`): runs the orchestrator until SIGTERM/SIGINT, then stops
 * gracefully — no new executions, running ones get `--drain-timeout` to finish, queued ones stay queued for the next
 * start.
 */
import type { Command } from 'commander';
import { parseRateLimit } from '../domain/auth/api-key.ts';
import { parseNodeId, parseNodeLabels } from '../domain/cluster/node.ts';
import { AegisError } from '../domain/errors.ts';
import type { DeployCeilings } from '../domain/policy/deploy-ceilings.ts';
import {
  formatRetention,
  parseRetention,
  type RetentionPolicy,
  retentionPolicy,
} from '../domain/retention.ts';
import { type ParseResult, parseCpu, parseDuration, parseSize } from '../domain/units.ts';

interface ServerFlags {
  listen: string;
  socket?: string | false;
  maxConcurrent?: string;
  maxQueued: string;
  rate: string;
  drainTimeout: string;
  maxSandboxes?: string;
  warm?: string;
  warmSandboxes: string;
  sandboxDomain?: string;
  poolIdleTimeout?: string;
  edgeGrace?: string;
  maxAgentCpu?: string;
  maxAgentMemory?: string;
  maxAgentPids?: string;
  maxAgentDisk?: string;
  maxAgentTimeout?: string;
  retain?: string;
  retainLogs?: string;
  retainAudit?: string;
  nodeId?: string;
  label: string[];
  lease?: string;
}

function describePolicy(policy: RetentionPolicy): string {
  const w = (ms: number | null) => (ms === null ? 'forever' : formatRetention(ms));
  return `executions ${w(policy.executionsMs)}, logs ${w(policy.logsMs)}, sandboxes ${w(policy.sandboxesMs)}, ledger ${w(policy.auditMs)}`;
}

/** `--retain*`: the retention policy (default: keep everything forever). */
function retention(flags: ServerFlags): RetentionPolicy | undefined {
  const window = (text: string | undefined, flag: string) => {
    if (text === undefined) return undefined;
    const parsed = parseRetention(text);
    if (!parsed.ok) throw new AegisError('USAGE', `${flag}: ${parsed.error}`, { hint: 'e.g. 30d, 12h, 2w' });
    return parsed.value;
  };
  const executionsMs = window(flags.retain, '--retain');
  const logsMs = window(flags.retainLogs, '--retain-logs');
  const auditMs = window(flags.retainAudit, '--retain-audit');
  if (executionsMs === undefined && logsMs === undefined && auditMs === undefined) return undefined;
  return retentionPolicy({
    ...(executionsMs === undefined ? {} : { executionsMs }),
    ...(logsMs === undefined ? {} : { logsMs }),
    ...(auditMs === undefined ? {} : { auditMs }),
  });
}

/** `--max-agent-*`: the ceilings of non-admin deploys; unset ones default from the host (see main-server.ts). */
function deployCeilings(flags: ServerFlags): Partial<DeployCeilings> {
  const parsed = (text: string | undefined, flag: string, parse: (t: string) => ParseResult) => {
    if (text === undefined) return undefined;
    const result = parse(text);
    if (!result.ok) throw new AegisError('USAGE', `${flag}: ${result.error}`);
    return result.value;
  };
  const ceilings: Partial<Record<keyof DeployCeilings, number | undefined>> = {
    cpuMillis: parsed(flags.maxAgentCpu, '--max-agent-cpu', parseCpu),
    memoryBytes: parsed(flags.maxAgentMemory, '--max-agent-memory', parseSize),
    pids: flags.maxAgentPids === undefined ? undefined : positiveInt(flags.maxAgentPids, '--max-agent-pids'),
    diskBytes: parsed(flags.maxAgentDisk, '--max-agent-disk', parseSize),
    timeoutMs: parsed(flags.maxAgentTimeout, '--max-agent-timeout', parseDuration),
  };
  return Object.fromEntries(Object.entries(ceilings).filter(([, v]) => v !== undefined));
}

function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : Number.NaN;
  if (!match || port > 65_535) {
    throw new AegisError('USAGE', `--listen: "${text}" is not host:port`, {
      hint: 'e.g. --listen 127.0.0.1:8088, or 0.0.0.0:8088 to serve other machines (keys required there)',
    });
  }
  return { host: (match[1] ?? match[2])!, port };
}

function positiveInt(text: string, flag: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new AegisError('USAGE', `${flag}: expected a whole number ≥ 1, got "${text}"`);
  }
  return value;
}

function nonNegativeInt(text: string, flag: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new AegisError('USAGE', `${flag}: expected a whole number ≥ 0, got "${text}"`);
  }
  return value;
}

function durationMs(text: string, flag: string): number {
  const parsed = parseDuration(text);
  if (!parsed.ok) throw new AegisError('USAGE', `${flag}: ${parsed.error}`);
  return parsed.value;
}

async function commandServer(flags: ServerFlags): Promise<number> {
  const listen = parseListen(flags.listen);
  const drain = parseDuration(flags.drainTimeout);
  if (!drain.ok) throw new AegisError('USAGE', `--drain-timeout: ${drain.error}`);
  const policy = retention(flags);
  const { startServer } = await import('../main-server.ts');
  const server = await startServer({
    ...listen,
    socketPath: flags.socket === false ? null : (flags.socket ?? undefined),
    ...(flags.maxConcurrent === undefined
      ? {}
      : { maxConcurrent: positiveInt(flags.maxConcurrent, '--max-concurrent') }),
    maxQueued: positiveInt(flags.maxQueued, '--max-queued'),
    rate: parseRateLimit(flags.rate, '--rate'),
    ...(flags.maxSandboxes === undefined
      ? {}
      : { maxSandboxes: positiveInt(flags.maxSandboxes, '--max-sandboxes') }),
    ...(flags.warm === undefined ? {} : { warm: nonNegativeInt(flags.warm, '--warm') }),
    warmSandboxes: nonNegativeInt(flags.warmSandboxes, '--warm-sandboxes'),
    ...(flags.sandboxDomain === undefined ? {} : { sandboxDomain: sandboxDomain(flags.sandboxDomain) }),
    ...(flags.poolIdleTimeout === undefined
      ? {}
      : { poolIdleTimeoutMs: durationMs(flags.poolIdleTimeout, '--pool-idle-timeout') }),
    deployCeilings: deployCeilings(flags),
    ...(policy === undefined ? {} : { retention: policy }),
    ...(flags.edgeGrace === undefined ? {} : { edgeGraceMs: durationMs(flags.edgeGrace, '--edge-grace') }),
    ...(flags.nodeId === undefined ? {} : { nodeId: parseNodeId(flags.nodeId, '--node-id') }),
    ...(flags.label.length === 0 ? {} : { labels: parseNodeLabels(flags.label, '--label') }),
    ...(flags.lease === undefined ? {} : { leaseMs: durationMs(flags.lease, '--lease') }),
  });
  const { requeued, failed } = server.recovered;
  if (requeued.length + failed.length > 0) {
    process.stderr.write(
      `recovered after a restart: ${requeued.length} queued execution(s) queued again, ${failed.length} running one(s) marked failed (orchestrator-restarted)\n`,
    );
  }
  const reconciled = server.recovered.reconciled ?? [];
  if (reconciled.length > 0) {
    process.stderr.write(
      `audit: ${reconciled.length} execution(s) had lost ledger entries in the crash; recorded as execution.recovered: ${reconciled.slice(0, 10).join(', ')}\n`,
    );
  }
  const where = [server.url, ...(server.socketPath ? [`unix:${server.socketPath}`] : [])].join(' and ');
  process.stderr.write(`aegis server listening on ${where} (node ${server.node.nodeId})\n`);
  process.stderr.write(
    policy === undefined
      ? 'retention: keeping every execution, log and ledger entry forever (set --retain 30d to prune)\n'
      : `retention: ${describePolicy(policy)}, applied now and hourly\n`,
  );
  if (server.createdAdminKey !== undefined) {
    process.stderr.write(
      'First start: created an admin API key. It is shown only this once (also saved with mode 0600 at ' +
        `${server.adminKeyFile}):\n  ${server.createdAdminKey}\n` +
        'Create narrower keys with `aegis keys create --name NAME --scope execute`.\n',
    );
  }
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  process.stderr.write(`${signal}: draining (up to ${flags.drainTimeout})…\n`);
  const result = await server.stop(drain.value);
  process.stderr.write(
    `stopped: ${result.finished} finished, ${result.cancelled} cancelled at the deadline, ${result.leftQueued} left queued for the next start\n`,
  );
  return 0;
}

/** A DNS name for --sandbox-domain: lowercase labels, at least two. */
function sandboxDomain(raw: string): string {
  const domain = raw.toLowerCase().replace(/\.$/, '');
  if (
    !/^(?=.{3,200}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/.test(domain)
  ) {
    throw new AegisError('USAGE', `--sandbox-domain: "${raw.slice(0, 80)}" is not a domain name`, {
      hint: 'e.g. --sandbox-domain sandboxes.example.com (wildcard DNS *.sandboxes.example.com pointing here)',
    });
  }
  return domain;
}

export function registerServerCommand(
  program: Command,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command('server')
    .description('run the orchestrator: REST + gRPC API on --listen and a unix socket for the local user')
    .option('--listen <host:port>', 'TCP address', '127.0.0.1:8088')
    .option(
      '--socket <path>',
      'unix socket (trusted as the local user) (default: $AEGIS_HOME/run/aegis.sock)',
    )
    .option('--no-socket', 'no unix socket')
    .option('--max-concurrent <n>', 'executions running at once (default: CPU count)')
    .option('--max-queued <n>', 'executions waiting before new ones get 429 QUEUE_FULL', '256')
    .option('--rate <rate>', 'default per-key request rate, e.g. 50/s or 600/m,burst=50', '50/s,burst=100')
    .option(
      '--max-sandboxes <n>',
      'sandboxes on this node, warm pools included (default: max-concurrent + 16)',
    )
    .option('--warm <n>', "warm sandboxes per agent revision, overriding every agent's spec.scaling.warm")
    .option(
      '--sandbox-domain <domain>',
      'route Host <port>-<sandbox id>.<domain> to that sandbox port (wildcard DNS to this server; key still required)',
    )
    .option(
      '--warm-sandboxes <n>',
      'live sandboxes kept ready per agent revision after its first POST /v1/sandboxes (agents without secrets or spec.llm)',
      '0',
    )
    .option(
      '--pool-idle-timeout <duration>',
      "scale warm pools to zero after this idle time (overrides agents')",
    )
    .option(
      '--max-agent-cpu <cpu>',
      'most CPU a non-admin deploy may ask for, e.g. 2 or 500m (default: cores)',
    )
    .option('--max-agent-memory <size>', 'most memory a non-admin deploy may ask for (default: half the RAM)')
    .option('--max-agent-pids <n>', 'most processes a non-admin deploy may ask for (default: 4096)')
    .option('--max-agent-disk <size>', 'largest /workspace a non-admin deploy may ask for (default: 4Gi)')
    .option('--max-agent-timeout <duration>', 'longest timeout a non-admin deploy may ask for (default: 1h)')
    .option(
      '--node-id <id>',
      "this node's id in the cluster (default: $AEGIS_NODE_ID, else kept in $AEGIS_HOME/node-id, created once)",
    )
    .option(
      '--label <key=value>',
      'a node label spec.placement.labels match (repeatable; default: $AEGIS_NODE_LABELS, k=v,k=v)',
      (value: string, previous: string[]) => [...previous, value],
      [] as string[],
    )
    .option(
      '--lease <duration>',
      'cluster lease: a node silent this long is declared dead and its executions taken over (heartbeat: a third of it) (default: 10s)',
    )
    .option('--drain-timeout <duration>', 'on SIGTERM, how long running executions may finish', '30s')
    .option(
      '--retain <window>',
      'prune finished executions (and their logs, ended sandboxes, ledger entries under a signed checkpoint) older than this, e.g. 30d — at start and hourly (default: keep forever)',
    )
    .option('--retain-logs <window>', 'prune execution logs older than this, e.g. 7d (default: --retain)')
    .option(
      '--retain-audit <window>',
      'checkpoint and drop ledger entries older than this (default: --retain)',
    )
    .option(
      '--edge-grace <duration>',
      'how long executions on a disconnected edge node wait for it before failing node-lost (default 30s)',
    )
    .action((flags: ServerFlags) => run(() => commandServer(flags)));
}
