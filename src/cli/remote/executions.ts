/** Executions on a server: `exec`, `cancel`, and the server side of `logs` and `ps` (main.ts hands these over). */
import type { Execution, ExecutionStatus, LogLine } from '../../../sdk/index.ts';
import { parseAgentSelector } from '../../domain/deployment.ts';
import { AegisError } from '../../domain/errors.ts';
import { isTerminal } from '../../domain/execution.ts';
import { parseDuration } from '../../domain/units.ts';
import { parseInputFlags } from '../input.ts';
import {
  agentLabel,
  describeExecution,
  EXIT,
  isQuiet,
  llmUsageCell,
  printJson,
  printLogLine,
  printResult,
  printTable,
} from '../output.ts';
import { createProgress } from '../progress.ts';
import { type ServerFlags, withServer } from './connect.ts';

/** The longest `?wait=` the server holds one request. */
const MAX_WAIT_MS = 5 * 60_000;

export interface ExecFlags extends ServerFlags {
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

export async function commandExec(agentOrUndefined: string | undefined, flags: ExecFlags): Promise<number> {
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
      return EXIT.ok;
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
          // A spinner while waiting (stderr, on a terminal only; not with -q or -o json).
          const progress = createProgress(process.stderr, !json && !isQuiet());
          try {
            while (!isTerminal(execution.status) && Date.now() < deadline) {
              progress.step(`waiting for ${execution.id} (${execution.status})`);
              execution = await client.getExecution(execution.id, {
                wait: waitParam(deadline - Date.now()),
                signal,
              });
            }
          } finally {
            progress.stop();
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
        return EXIT.interrupted;
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
      return EXIT.tempFail;
    }
    return printResult(execution, json);
  });
}

export async function commandCancel(id: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const execution = await client.cancelExecution(id);
    if (flags.output === 'json') printJson(execution);
    else process.stdout.write(`${describeExecution(execution)}\n`);
    return EXIT.ok;
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
    return EXIT.ok;
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
      return EXIT.ok;
    }
    if (page.executions.length === 0) {
      process.stdout.write(
        flags.cursor ? 'no more executions\n' : 'no executions yet — try `aegis exec AGENT --wait`\n',
      );
      return EXIT.ok;
    }
    // NODE only when the page spans more than one node: a single server (or a one-node cluster) keeps the narrow table;
    // `-o json` always carries `node`.
    const nodes = new Set(page.executions.flatMap((e) => (e.node === null ? [] : [e.node])));
    const withNode = nodes.size > 1;
    printTable(
      ['ID', 'AGENT', 'STATUS', 'DURATION', 'LLM', ...(withNode ? ['NODE'] : []), 'CREATED'],
      page.executions.map((e) => [
        e.id,
        e.agent.revision === null
          ? `${e.agent.name}@${e.agent.version}`
          : `${e.agent.name}@${e.agent.revision}`,
        e.status,
        e.durationMs === null ? (isTerminal(e.status) ? '-' : e.status) : `${e.durationMs}ms`,
        llmUsageCell(e.usage),
        ...(withNode ? [e.node ?? '-'] : []),
        e.createdAt,
      ]),
    );
    if (page.nextCursor) process.stderr.write(`more: aegis ps --cursor ${page.nextCursor}\n`);
    return EXIT.ok;
  });
}
