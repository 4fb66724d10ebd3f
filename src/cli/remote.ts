/**
 * CLI commands that drive an AEGIS server through the SDK (sdk/): deploy, exec, cancel, agents, keys — and the
 * server side of `logs` and `ps`, which main.ts hands over here when `--server` or AEGIS_SERVER is set.
 *
 * The server is `--server URL` or AEGIS_SERVER (`http(s)://host:port` or `unix:/path/to/aegis.sock`); the API key
 * comes from AEGIS_API_KEY or `--api-key-file` — never from a flag, so it stays out of shell history and `ps`.
 * Errors from the server print like local ones (`error[CODE]: message`, located problems, hint) and exit with
 * the code's exit code (ERROR_CODES); a code this CLI does not know exits 70.
 */
import { readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { type Command, Option } from 'commander';
import {
  AegisApiError,
  AegisClient,
  type AgentRevision,
  type ApiKey,
  type Execution,
  type ExecutionStatus,
  type LogLine,
} from '../../sdk/index.ts';
import { packAgentDir } from '../adapters/bundle/pack.ts';
import { formatBytes } from '../adapters/bundle/rules.ts';
import { loadManifestFile } from '../adapters/manifest/yaml-loader.ts';
import { looksLikeApiKey, parseRateLimit, parseScopes } from '../domain/auth/api-key.ts';
import { parseAgentSelector } from '../domain/deployment.ts';
import { AegisError, ERROR_CODES, type ErrorCodeInfo, formatProblem } from '../domain/errors.ts';
import { isTerminal } from '../domain/execution.ts';
import { secretBindingNotes } from '../domain/secrets/secret-ref.ts';
import { parseDuration } from '../domain/units.ts';
import { parseInputFlags } from './input.ts';

const VERSION = '0.1.0';
const EXIT_OK = 0;
const EXIT_AGENT_FAILED = 1;
/** sysexits EX_TEMPFAIL: try again later (also RATE_LIMITED, QUEUE_FULL, UNAVAILABLE). */
const EXIT_TEMPFAIL = 75;
const EXIT_INTERNAL = 70;
/** 128 + SIGINT. */
const EXIT_INTERRUPTED = 130;
/** The longest `?wait=` the server holds one request. */
const MAX_WAIT_MS = 5 * 60_000;
const HELP_GROUP = 'Server commands (--server URL or AEGIS_SERVER):';

type Output = 'text' | 'table' | 'json';

/** Options every server command takes. */
export interface ServerFlags {
  readonly server?: string;
  readonly apiKeyFile?: string;
  readonly output: Output;
}

// ── connecting ────────────────────────────────────────────────────────────────────────────────────────────────

/** `--server`, else AEGIS_SERVER; undefined when neither is set (an empty AEGIS_SERVER counts as unset). */
export function serverFrom(flag: string | undefined): string | undefined {
  if (flag !== undefined && flag.trim() !== '') return flag.trim();
  const env = process.env['AEGIS_SERVER']?.trim();
  return env === undefined || env === '' ? undefined : env;
}

/** Adds `--server` and `--api-key-file` (main.ts uses this on `logs` and `ps`). */
export function addServerOptions(command: Command): Command {
  return command
    .option(
      '--server <url>',
      'AEGIS server: http(s)://host:port or unix:/path/to/aegis.sock (default: $AEGIS_SERVER)',
    )
    .option('--api-key-file <file>', 'read the API key from this file (default: $AEGIS_API_KEY)');
}

interface Connection {
  readonly client: AegisClient;
  readonly hasKey: boolean;
}

function readApiKey(file: string | undefined): string | undefined {
  if (file === undefined) {
    const env = process.env['AEGIS_API_KEY']?.trim();
    return env === undefined || env === '' ? undefined : env;
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new AegisError('USAGE', `cannot read --api-key-file ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const key = text.trim();
  if (key === '') throw new AegisError('USAGE', `--api-key-file ${file} is empty`);
  return key;
}

function connect(flags: { server?: string; apiKeyFile?: string }): Connection {
  const server = serverFrom(flags.server);
  if (server === undefined) {
    throw new AegisError('USAGE', 'this command talks to an AEGIS server, and none was given', {
      hint: 'pass --server http://HOST:8088 (or unix:/path/to/aegis.sock), or set AEGIS_SERVER; start one with `aegis server`',
    });
  }
  const apiKey = readApiKey(flags.apiKeyFile);
  let client: AegisClient;
  try {
    client = new AegisClient({
      server,
      userAgent: `aegis-cli/${VERSION} node/${process.versions.node}`,
      ...(apiKey ? { apiKey } : {}),
    });
  } catch (error) {
    if (error instanceof AegisApiError) {
      throw new AegisError('USAGE', `--server / AEGIS_SERVER: ${error.message}`, {
        ...(error.hint ? { hint: error.hint } : {}),
      });
    }
    throw error;
  }
  if (apiKey !== undefined && !client.isUnixSocket) {
    if (!looksLikeApiKey(apiKey)) {
      process.stderr.write('warning: the API key does not look like an AEGIS key (aegis_…)\n');
    }
    const url = new URL(server);
    if (url.protocol === 'http:' && !isLoopback(url.hostname)) {
      process.stderr.write(
        `warning: sending the API key unencrypted to ${url.host}; use https:// (or a unix socket) off this machine\n`,
      );
    }
  }
  return { client, hasKey: apiKey !== undefined };
}

function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[(.*)\]$/, '$1');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Runs a server command; an AegisApiError is printed like a local error and becomes its exit code. */
async function withServer(
  flags: { server?: string; apiKeyFile?: string },
  action: (connection: Connection) => Promise<number>,
): Promise<number> {
  const connection = connect(flags);
  try {
    return await action(connection);
  } catch (error) {
    if (!(error instanceof AegisApiError)) throw error;
    process.stderr.write(`${formatApiError(error, connection)}\n`);
    return exitCodeOf(error.code);
  }
}

export function exitCodeOf(code: string): number {
  const info = (ERROR_CODES as Readonly<Record<string, ErrorCodeInfo | undefined>>)[code];
  return info?.exitCode ?? EXIT_INTERNAL;
}

function formatApiError(error: AegisApiError, connection: Connection): string {
  let hint = error.hint;
  if (error.status === 0 && error.code === 'UNAVAILABLE') {
    hint ??= `is it running? Start it with \`aegis server\`, or point --server / AEGIS_SERVER at it`;
  } else if (error.code === 'UNAUTHENTICATED' && !connection.hasKey) {
    hint =
      'set AEGIS_API_KEY (or pass --api-key-file FILE); an admin creates keys with `aegis keys create`, e.g. over the unix socket';
  }
  const lines = [`error[${error.code}]: ${error.message}`];
  for (const problem of error.problems) lines.push(`  ${formatProblem(problem)}`);
  if (hint) lines.push(`  hint: ${hint}`);
  return lines.join('\n');
}

// ── output ────────────────────────────────────────────────────────────────────────────────────────────────────

const outputOption = () =>
  new Option('-o, --output <format>', 'output format (table is the same as text)')
    .choices(['text', 'table', 'json'])
    .default('text');

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Columns as wide as their widest cell, two spaces apart; the last column is not padded. */
function printTable(header: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = header.map((title, i) =>
    Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  process.stdout.write(`${[line(header), ...rows.map(line)].join('\n')}\n`);
}

function agentLabel(execution: Execution): string {
  const { name, version, revision } = execution.agent;
  return revision === null ? `${name}@${version}` : `${name}@${revision} (${version})`;
}

function describeExecution(execution: Execution): string {
  const terminal = isTerminal(execution.status);
  const mark = execution.status === 'succeeded' ? '✓' : terminal ? '✗' : '…';
  const duration = execution.durationMs === null ? '' : ` in ${execution.durationMs} ms`;
  const reason = execution.reason ? ` — ${execution.reason}` : '';
  return `${mark} ${agentLabel(execution)} ${execution.status}${duration}${reason} (${execution.id})`;
}

/** Like `aegis run`: stdout lines to stdout (stderr with JSON output), the rest to stderr, system lines marked. */
function printLogLine(line: LogLine, json: boolean): void {
  const target = json || line.stream !== 'stdout' ? process.stderr : process.stdout;
  target.write(line.stream === 'system' ? `[aegis] ${line.text}\n` : `${line.text}\n`);
}

/** The end of `exec --wait`, as `aegis run` prints it; 0 when it succeeded, 1 otherwise. */
function printResult(execution: Execution, json: boolean): number {
  if (json) {
    printJson(execution);
  } else {
    for (const violation of execution.violations) process.stderr.write(`  ! ${violation.message}\n`);
    if (execution.output !== null && execution.output !== undefined) {
      process.stdout.write(`${JSON.stringify(execution.output, null, 2)}\n`);
    }
    process.stderr.write(`${describeExecution(execution)}\n`);
  }
  return execution.status === 'succeeded' ? EXIT_OK : EXIT_AGENT_FAILED;
}

function shortDigest(digest: string): string {
  return `sha256:${digest.slice(0, 12)}…`;
}

// ── deploy ────────────────────────────────────────────────────────────────────────────────────────────────────

async function commandDeploy(manifest: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const path = resolve(manifest);
    let dir: string;
    let isDir = false;
    try {
      isDir = statSync(path).isDirectory();
    } catch {
      // loadManifestFile says what is missing.
    }
    if (isDir) dir = path;
    else if (basename(path) === 'agent.yaml') dir = dirname(path);
    else {
      throw new AegisError('USAGE', `${manifest}: deploy packs the directory holding an agent.yaml`, {
        hint: `rename it to agent.yaml (the server looks for that name in the bundle), or pass its directory`,
      });
    }
    const { agent } = await loadManifestFile(isDir ? join(dir, 'agent.yaml') : path);
    for (const note of secretBindingNotes(agent.secrets, agent.network.allow.length)) {
      process.stderr.write(`warning: ${note}\n`);
    }
    const bundle = await packAgentDir(dir);
    const result = await client.deploy(bundle.bytes);
    if (result.revision.digest !== bundle.digest) {
      process.stderr.write(
        `warning: the server recorded digest ${shortDigest(result.revision.digest)} for a bundle packed as ${shortDigest(bundle.digest)}\n`,
      );
    }
    if (flags.output === 'json') {
      printJson(result);
      return EXIT_OK;
    }
    const { revision } = result;
    const what = `${revision.agent}@${revision.revision}`;
    if (result.created) {
      process.stdout.write(
        `deployed ${what} (${revision.version}, ${shortDigest(revision.digest)}, ${bundle.files} files, ${formatBytes(revision.sizeBytes)})\n`,
      );
    } else {
      process.stdout.write(
        `unchanged: ${what} (${revision.version}, ${shortDigest(revision.digest)}) already active\n`,
      );
    }
    return EXIT_OK;
  });
}

// ── exec ──────────────────────────────────────────────────────────────────────────────────────────────────────

interface ExecFlags extends ServerFlags {
  readonly input?: string;
  readonly inputFile?: string;
  readonly wait?: string | true;
  readonly follow?: boolean;
}

function parseWaitFlag(wait: string | true | undefined): number | undefined {
  if (wait === undefined) return undefined;
  if (wait === true) return MAX_WAIT_MS;
  const parsed = parseDuration(wait);
  if (!parsed.ok) {
    throw new AegisError('USAGE', `--wait: ${parsed.error}`, {
      hint: 'e.g. --wait 30s or --wait 10m; bare --wait waits 5m (put it after the agent: --wait takes an optional value)',
    });
  }
  return parsed.value;
}

const waitParam = (ms: number) => `${Math.max(1, Math.min(MAX_WAIT_MS, Math.ceil(ms)))}ms`;

async function commandExec(agentOrUndefined: string | undefined, flags: ExecFlags): Promise<number> {
  let agentArg = agentOrUndefined;
  let wait = flags.wait;
  // `aegis exec --wait NAME`: --wait takes an optional value, so the parser hands it NAME. A value that is not a
  // duration, with no agent given, is the agent.
  if (agentArg === undefined && typeof wait === 'string' && !parseDuration(wait).ok) {
    agentArg = wait;
    wait = true;
  }
  if (agentArg === undefined) {
    throw new AegisError('USAGE', "missing required argument 'agent'", {
      hint: 'aegis exec NAME[@REVISION|@VERSION] [--input JSON] [--wait [DURATION]]',
    });
  }
  parseAgentSelector(agentArg, 'agent');
  const input = parseInputFlags(flags);
  const waitMs = parseWaitFlag(wait);
  const json = flags.output === 'json';
  return withServer(flags, async ({ client }) => {
    const body = input === undefined ? { agent: agentArg } : { agent: agentArg, input };
    if (waitMs === undefined && !flags.follow) {
      const execution = await client.createExecution(body);
      if (json) printJson(execution);
      else {
        process.stdout.write(`${execution.id}\n`);
        process.stderr.write(
          `${execution.status}: ${agentLabel(execution)} — follow it with \`aegis logs -f ${execution.id}\`\n`,
        );
      }
      return EXIT_OK;
    }
    const deadline = waitMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + waitMs;
    // Created without waiting, so the id is known before anything can interrupt the wait.
    let execution = await client.createExecution(body);
    const interrupted = new AbortController();
    const onSigint = () => interrupted.abort();
    process.once('SIGINT', onSigint);
    const signals = [interrupted.signal];
    if (Number.isFinite(deadline)) signals.push(AbortSignal.timeout(Math.max(1, deadline - Date.now())));
    const signal = AbortSignal.any(signals);
    try {
      if (!isTerminal(execution.status)) {
        if (flags.follow) {
          for await (const item of client.followLogs(execution.id, { signal })) {
            if (item.type === 'line') printLogLine(item.line, json);
            else execution = item.execution;
          }
        } else {
          while (!isTerminal(execution.status) && Date.now() < deadline) {
            execution = await client.getExecution(execution.id, {
              wait: waitParam(deadline - Date.now()),
              signal,
            });
          }
        }
      }
    } catch (error) {
      // The wait ran out (TimeoutError) or Ctrl-C (AbortError): anything else is a real failure.
      if (!signal.aborted) throw error;
      if (interrupted.signal.aborted) {
        process.stderr.write(
          `\ninterrupted; ${execution.id} goes on on the server — \`aegis logs -f ${execution.id}\` to follow it, \`aegis cancel ${execution.id}\` to stop it\n`,
        );
        return EXIT_INTERRUPTED;
      }
      execution = await client.getExecution(execution.id);
    } finally {
      process.off('SIGINT', onSigint);
    }
    if (!isTerminal(execution.status)) {
      if (json) printJson(execution);
      process.stderr.write(
        `${execution.id} is still ${execution.status} after ${wait === true ? '5m' : wait}; ` +
          `\`aegis logs -f ${execution.id}\` to follow it, \`aegis cancel ${execution.id}\` to stop it\n`,
      );
      return EXIT_TEMPFAIL;
    }
    return printResult(execution, json);
  });
}

async function commandCancel(id: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const execution = await client.cancelExecution(id);
    if (flags.output === 'json') printJson(execution);
    else process.stdout.write(`${describeExecution(execution)}\n`);
    return EXIT_OK;
  });
}

// ── logs and ps (main.ts hands these over when a server is set) ──────────────────────────────────────────────

const LOG_PAGE = 1000;

/** `aegis logs ID [-f]` against the server: every stored line (then, with -f, new ones until the end). */
export async function remoteLogs(id: string, flags: ServerFlags & { follow?: boolean }): Promise<number> {
  const json = flags.output === 'json';
  const print = (line: LogLine) => {
    if (json) printJson(line);
    else printLogLine(line, false);
  };
  return withServer(flags, async ({ client }) => {
    let execution: Execution | undefined;
    if (flags.follow) {
      for await (const item of client.followLogs(id)) {
        if (item.type === 'line') print(item.line);
        else execution = item.execution;
      }
    } else {
      let after = 0;
      for (;;) {
        const page = await client.logs(id, { after, limit: LOG_PAGE });
        for (const line of page.lines) print(line);
        if (page.lines.length < LOG_PAGE) break;
        after = page.nextAfter;
      }
      if (!json) execution = await client.getExecution(id);
    }
    if (!json && execution) process.stderr.write(`${describeExecution(execution)}\n`);
    return EXIT_OK;
  });
}

export interface RemotePsFlags extends ServerFlags {
  readonly limit: string;
  readonly agent?: string;
  readonly status?: string;
  readonly cursor?: string;
}

/** `aegis ps` against the server: one page of executions, newest first. */
export async function remotePs(flags: RemotePsFlags): Promise<number> {
  const limit = Number(flags.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
    throw new AegisError('USAGE', `--limit must be a whole number from 1 to 1000, got "${flags.limit}"`);
  }
  return withServer(flags, async ({ client }) => {
    const page = await client.listExecutions({
      limit,
      ...(flags.agent ? { agent: flags.agent } : {}),
      ...(flags.status ? { status: flags.status as ExecutionStatus } : {}),
      ...(flags.cursor ? { cursor: flags.cursor } : {}),
    });
    if (flags.output === 'json') {
      printJson(page);
      return EXIT_OK;
    }
    if (page.executions.length === 0) {
      process.stdout.write(
        flags.cursor ? 'no more executions\n' : 'no executions yet — try `aegis exec AGENT --wait`\n',
      );
      return EXIT_OK;
    }
    printTable(
      ['ID', 'AGENT', 'STATUS', 'DURATION', 'CREATED'],
      page.executions.map((e) => [
        e.id,
        e.agent.revision === null
          ? `${e.agent.name}@${e.agent.version}`
          : `${e.agent.name}@${e.agent.revision}`,
        e.status,
        e.durationMs === null ? (isTerminal(e.status) ? '-' : e.status) : `${e.durationMs}ms`,
        e.createdAt,
      ]),
    );
    if (page.nextCursor) process.stderr.write(`more: aegis ps --cursor ${page.nextCursor}\n`);
    return EXIT_OK;
  });
}

/** The USAGE error for server-only flags of `logs`/`ps` used without a server. */
export function needsServer(flag: string): AegisError {
  return new AegisError('USAGE', `${flag} needs an AEGIS server`, {
    hint: 'pass --server URL or set AEGIS_SERVER (local executions are listed without it)',
  });
}

// ── agents ────────────────────────────────────────────────────────────────────────────────────────────────────

function revisionRows(revisions: readonly AgentRevision[], active: number): string[][] {
  return revisions.map((r) => [
    `${r.revision === active ? '*' : ' '}${r.revision}`,
    r.version,
    shortDigest(r.digest),
    formatBytes(r.sizeBytes),
    r.createdAt,
    r.deployedBy,
  ]);
}
const REVISION_HEADER = [' REV', 'VERSION', 'DIGEST', 'SIZE', 'CREATED', 'DEPLOYED BY'];

async function commandAgentsLs(flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const agents = await client.listAgents();
    if (flags.output === 'json') {
      printJson({ agents });
      return EXIT_OK;
    }
    if (agents.length === 0) {
      process.stdout.write('no agents deployed — try `aegis deploy examples/hello-python/agent.yaml`\n');
      return EXIT_OK;
    }
    printTable(
      ['NAME', 'ACTIVE', 'VERSION', 'REVISIONS', 'UPDATED', 'DESCRIPTION'],
      agents.map((a) => [
        a.name,
        String(a.activeRevision),
        a.active.version,
        String(a.revisions),
        a.updatedAt,
        a.active.description ?? '',
      ]),
    );
    return EXIT_OK;
  });
}

async function commandAgentsShow(name: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const detail = await client.getAgent(name);
    if (flags.output === 'json') {
      printJson(detail);
      return EXIT_OK;
    }
    const { agent } = detail;
    process.stdout.write(
      [
        `${agent.name}`,
        `  active:      revision ${agent.activeRevision} (${agent.active.version}, ${shortDigest(agent.active.digest)})`,
        ...(agent.active.description ? [`  description: ${agent.active.description}`] : []),
        `  revisions:   ${agent.revisions}`,
        `  created:     ${agent.createdAt}`,
        `  updated:     ${agent.updatedAt}`,
        ...detail.pools.map(
          (pool) =>
            `  warm pool:   revision ${pool.revision}: ${pool.state} — ${pool.warm}/${pool.target} warm` +
            `${pool.spawning > 0 ? `, ${pool.spawning} starting` : ''}, idle timeout ${Math.round(pool.idleTimeoutMs / 1000)} s`,
        ),
        ...(detail.pools.length === 0 ? ['  warm pool:   none (cold starts; spec.scaling.warm is 0)'] : []),
        '',
      ].join('\n'),
    );
    printTable(REVISION_HEADER, revisionRows(detail.revisions, agent.activeRevision));
    return EXIT_OK;
  });
}

async function commandAgentsVersions(name: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    if (flags.output === 'json') {
      printJson({ revisions: await client.listRevisions(name) });
      return EXIT_OK;
    }
    const detail = await client.getAgent(name);
    printTable(REVISION_HEADER, revisionRows(detail.revisions, detail.agent.activeRevision));
    process.stderr.write('* active\n');
    return EXIT_OK;
  });
}

async function commandAgentsRollback(name: string, flags: ServerFlags & { to?: string }): Promise<number> {
  let revision: number | undefined;
  if (flags.to !== undefined) {
    revision = Number(flags.to);
    if (!Number.isInteger(revision) || revision < 1) {
      throw new AegisError('USAGE', `--to must be a revision number (1, 2, …), got "${flags.to}"`, {
        hint: `\`aegis agents versions ${name}\` lists them`,
      });
    }
  }
  return withServer(flags, async ({ client }) => {
    const result = await client.rollback(name, revision);
    if (flags.output === 'json') {
      printJson(result);
      return EXIT_OK;
    }
    const { agent } = result;
    process.stdout.write(
      `rolled back ${agent.name}: revision ${result.from} → ${agent.activeRevision} (${agent.active.version}) is active\n`,
    );
    return EXIT_OK;
  });
}

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}

async function commandAgentsRm(name: string, flags: ServerFlags & { yes?: boolean }): Promise<number> {
  return withServer(flags, async ({ client }) => {
    if (!flags.yes) {
      if (!process.stdin.isTTY) {
        throw new AegisError('USAGE', `deleting agent ${name} needs confirmation`, {
          hint: `pass --yes: aegis agents rm ${name} --yes`,
        });
      }
      const { agent } = await client.getAgent(name);
      const n = agent.revisions;
      if (!(await confirm(`delete agent ${name} and its ${n} revision${n === 1 ? '' : 's'}? [y/N] `))) {
        process.stderr.write('not deleted\n');
        return EXIT_OK;
      }
    }
    await client.deleteAgent(name);
    if (flags.output === 'json') printJson({ deleted: name });
    else process.stdout.write(`deleted agent ${name} (its past executions stay)\n`);
    return EXIT_OK;
  });
}

// ── keys ──────────────────────────────────────────────────────────────────────────────────────────────────────

function formatScopesAndRate(key: ApiKey): [string, string] {
  const rate = key.rateLimit
    ? `${Number(key.rateLimit.perSecond.toFixed(3))}/s,burst=${key.rateLimit.burst}`
    : 'default';
  return [key.scopes.join(','), rate];
}

async function commandKeysCreate(
  flags: ServerFlags & { name: string; scope: string[]; rate?: string },
): Promise<number> {
  const scopes = parseScopes(
    flags.scope
      .flatMap((s) => s.split(','))
      .map((s) => s.trim())
      .filter((s) => s !== ''),
    '--scope',
  );
  if (flags.rate !== undefined) parseRateLimit(flags.rate, '--rate');
  return withServer(flags, async ({ client }) => {
    const created = await client.createKey({
      name: flags.name,
      scopes,
      ...(flags.rate === undefined ? {} : { rate: flags.rate }),
    });
    if (flags.output === 'json') printJson(created);
    else process.stdout.write(`${created.key}\n`);
    const [scopeText, rate] = formatScopesAndRate(created.record);
    process.stderr.write(
      `created ${created.record.id} "${created.record.name}" (scopes ${scopeText}; rate ${rate})\n` +
        'warning: this is the only time the key is shown — store it now (e.g. in a secret manager); it cannot be recovered, only revoked\n',
    );
    return EXIT_OK;
  });
}

async function commandKeysLs(flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const keys = await client.listKeys();
    if (flags.output === 'json') {
      printJson({ keys });
      return EXIT_OK;
    }
    if (keys.length === 0) {
      process.stdout.write('no API keys — create one with `aegis keys create --name NAME --scope read`\n');
      return EXIT_OK;
    }
    printTable(
      ['ID', 'NAME', 'PREFIX', 'SCOPES', 'RATE', 'CREATED', 'LAST USED', 'REVOKED'],
      keys.map((k) => [
        k.id,
        k.name,
        `${k.prefix}…`,
        ...formatScopesAndRate(k),
        k.createdAt,
        k.lastUsedAt ?? '-',
        k.revokedAt ?? '-',
      ]),
    );
    return EXIT_OK;
  });
}

async function commandKeysRevoke(id: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const key = await client.revokeKey(id);
    if (flags.output === 'json') printJson(key);
    else process.stdout.write(`revoked ${key.id} "${key.name}" at ${key.revokedAt ?? 'now'}\n`);
    return EXIT_OK;
  });
}

// ── registration ──────────────────────────────────────────────────────────────────────────────────────────────

/** Registers deploy, exec, cancel, agents and keys; each action's exit code goes to `setExit`. */
export function registerRemoteCommands(program: Command, setExit: (code: number) => void): void {
  const wrap =
    <A extends unknown[]>(action: (...args: A) => Promise<number>) =>
    async (...args: A) => {
      setExit(await action(...args));
    };
  const serverCommand = (parent: Command, name: string, description: string) =>
    addServerOptions(parent.command(name).description(description)).addOption(outputOption());

  serverCommand(program, 'deploy', 'pack the directory holding agent.yaml and deploy it as a new revision')
    .helpGroup(HELP_GROUP)
    .argument('<manifest>', 'path to agent.yaml (or its directory); .aegisignore lists what to leave out')
    .action(wrap(commandDeploy));

  serverCommand(program, 'exec', 'run a deployed agent on the server')
    .helpGroup(HELP_GROUP)
    .argument('[agent]', 'agent name, name@REVISION or name@VERSION (required)')
    .option('-i, --input <json>', 'input JSON for the agent')
    .option('--input-file <file>', 'read the input JSON from a file (- for stdin)')
    .option(
      '-w, --wait [duration]',
      'wait for the result (default 5m) and print it like `aegis run`; exit 1 if it failed',
    )
    .option('--follow', 'stream the logs live, then print the result')
    .addHelpText(
      'after',
      '\nWithout --wait or --follow it prints the execution id and returns at once.\n' +
        'Exit codes: 0 succeeded, 1 the agent failed (timeout, oom, killed, …), 75 still running when --wait ran out.',
    )
    .action(wrap(commandExec));

  serverCommand(program, 'cancel', 'cancel a queued or running execution')
    .helpGroup(HELP_GROUP)
    .argument('<execution-id>', 'id printed by `aegis exec` or listed by `aegis ps`')
    .action(wrap(commandCancel));

  const agents = program
    .command('agents')
    .helpGroup(HELP_GROUP)
    .description('deployed agents and their revisions');
  serverCommand(agents, 'ls', 'list deployed agents').action(wrap(commandAgentsLs));
  serverCommand(agents, 'show', 'an agent and its revisions')
    .argument('<name>', 'agent name')
    .action(wrap(commandAgentsShow));
  serverCommand(agents, 'versions', "an agent's revisions, newest first (* marks the active one)")
    .argument('<name>', 'agent name')
    .action(wrap(commandAgentsVersions));
  serverCommand(
    agents,
    'rollback',
    'make an earlier revision active (default: the one before the active one)',
  )
    .argument('<name>', 'agent name')
    .option('--to <revision>', 'the revision number to make active')
    .action(wrap(commandAgentsRollback));
  serverCommand(agents, 'rm', 'delete an agent and all its revisions (past executions stay)')
    .argument('<name>', 'agent name')
    .option('-y, --yes', 'do not ask for confirmation')
    .action(wrap(commandAgentsRm));

  const keys = program.command('keys').helpGroup(HELP_GROUP).description('API keys (admin)');
  serverCommand(keys, 'create', 'create an API key; the key is printed once')
    .requiredOption('--name <name>', 'who or what the key is for')
    .option(
      '--scope <scope>',
      'admin, deploy, execute or read (repeat, or separate with commas)',
      (value: string, previous: string[]) => [...previous, value],
      [] as string[],
    )
    .option(
      '--rate <rate>',
      'requests per second/minute/hour, e.g. 20/s or 600/m,burst=50 (default: the server’s)',
    )
    .action(wrap(commandKeysCreate));
  serverCommand(keys, 'ls', 'list API keys (never their text)').action(wrap(commandKeysLs));
  serverCommand(keys, 'revoke', 'revoke an API key')
    .argument('<id>', 'key id (key_…), from `aegis keys ls`')
    .action(wrap(commandKeysRevoke));
}
