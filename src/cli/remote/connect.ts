/**
 * Connecting to an AEGIS server: `--server URL` or AEGIS_SERVER (`http(s)://host:port` or `unix:/path/to/aegis.sock`);
 * the API key comes from AEGIS_API_KEY or `--api-key-file` — never from a flag, so it stays out of shell history and
 * `ps`. Errors from the server print like local ones (`error[CODE]: message`, located problems, hint) and exit with
 * the code's exit code (ERROR_CODES); a code this CLI does not know exits 70.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { AegisApiError, AegisClient } from '../../../sdk/index.ts';
import { looksLikeApiKey } from '../../domain/auth/api-key.ts';
import { AegisError, formatProblem } from '../../domain/errors.ts';
import { AEGIS_VERSION } from '../../main.ts';
import { debug, type OutputFormat, reportError, warn } from '../output.ts';

export const HELP_GROUP = 'Server commands (--server URL or AEGIS_SERVER):';

/** Options every server command takes. */
export interface ServerFlags {
  readonly server?: string;
  readonly apiKeyFile?: string;
  readonly output: OutputFormat;
}

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

export interface Connection {
  readonly client: AegisClient;
  readonly hasKey: boolean;
  /** The server as given (http(s)://… or unix:/path), and the key: for WebSockets, which the SDK does not speak. */
  readonly server: string;
  readonly apiKey: string | undefined;
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
  debug(`server ${server}${apiKey === undefined ? ' (no API key)' : ' with an API key'}`);
  let client: AegisClient;
  try {
    client = new AegisClient({
      server,
      userAgent: `aegis-cli/${AEGIS_VERSION} node/${process.versions.node}`,
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
      warn('the API key does not look like an AEGIS key (aegis_…)');
    }
    const url = new URL(server);
    if (url.protocol === 'http:' && !isLoopback(url.hostname)) {
      warn(
        `sending the API key unencrypted to ${url.host}; use https:// (or a unix socket) off this machine`,
      );
    }
  }
  return { client, hasKey: apiKey !== undefined, server, apiKey };
}

function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[(.*)\]$/, '$1');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Runs a server command; an AegisApiError is printed like a local error and becomes its exit code. */
export async function withServer(
  flags: { server?: string; apiKeyFile?: string },
  action: (connection: Connection) => Promise<number>,
): Promise<number> {
  const connection = connect(flags);
  try {
    return await action(connection);
  } catch (error) {
    if (!(error instanceof AegisApiError)) throw error;
    return reportError(error, formatApiError(error, connection));
  }
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

/** The USAGE error for server-only flags of `logs`/`ps` used without a server. */
export function needsServer(flag: string): AegisError {
  return new AegisError('USAGE', `${flag} needs an AEGIS server`, {
    hint: 'pass --server URL or set AEGIS_SERVER (local executions are listed without it)',
  });
}
