/**
 * `aegis sandbox create | ls | rm | exec | shell | files put|get|ls|rm`: live sandboxes on a server, through the SDK.
 * `-o json` prints the REST shapes (Sandbox, {sandboxes}, SandboxCommandResult, {entries}, …).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { buffer } from 'node:stream/consumers';
import type { Command } from 'commander';
import type { Sandbox, SandboxFileEntry } from '../../../sdk/index.ts';
import { AegisError } from '../../domain/errors.ts';
import { EXIT, printJson, printTable } from '../output.ts';
import { HELP_GROUP, type ServerFlags, withServer } from './connect.ts';
import { commandSandboxShell } from './sandbox-shell.ts';

/** Collects a repeatable `K=V` option into a list (commander's argParser). */
export function collectPair(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function pairs(values: readonly string[] | undefined, flag: string): Record<string, string> | undefined {
  if (values === undefined || values.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const value of values) {
    const at = value.indexOf('=');
    if (at <= 0) {
      throw new AegisError('USAGE', `${flag} ${JSON.stringify(value)}: expected KEY=VALUE`, {
        hint: `e.g. ${flag} MODE=fast`,
      });
    }
    out[value.slice(0, at)] = value.slice(at + 1);
  }
  return out;
}

/** The exit code of a command: its own, else 128 + the signal number (as a shell reports it). */
export function commandExitCode(exitCode: number | null, signal: string | null): number {
  if (exitCode !== null) return exitCode;
  const number = signal === null ? undefined : constants.signals[signal as keyof typeof constants.signals];
  return number === undefined ? EXIT.agentFailed : 128 + number;
}

export async function commandSandboxCreate(
  agent: string,
  flags: ServerFlags & { timeout?: string; idleTimeout?: string; env: string[]; metadata: string[] },
): Promise<number> {
  const env = pairs(flags.env, '--env');
  const metadata = pairs(flags.metadata, '--metadata');
  return withServer(flags, async ({ client }) => {
    const sandbox = await client.createSandbox({
      agent,
      ...(flags.timeout === undefined ? {} : { timeout: flags.timeout }),
      ...(flags.idleTimeout === undefined ? {} : { idleTimeout: flags.idleTimeout }),
      ...(env === undefined ? {} : { env }),
      ...(metadata === undefined ? {} : { metadata }),
    });
    if (flags.output === 'json') printJson(sandbox);
    else {
      process.stdout.write(`${sandbox.id}\n`);
      process.stderr.write(
        `created ${sandbox.id} from ${sandbox.agent.name}@${sandbox.agent.revision} on ${sandbox.runtime}; expires ${sandbox.expiresAt}\n`,
      );
    }
    return EXIT.ok;
  });
}

function sandboxRow(s: Sandbox): string[] {
  return [
    s.id,
    `${s.agent.name}@${s.agent.revision}`,
    s.status,
    s.runtime,
    s.createdAt,
    s.status === 'running' ? s.expiresAt : (s.reason ?? '-'),
  ];
}

export async function commandSandboxLs(flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const sandboxes = await client.listSandboxes();
    if (flags.output === 'json') printJson({ sandboxes });
    else if (sandboxes.length === 0) {
      process.stdout.write('no sandboxes — create one with `aegis sandbox create AGENT`\n');
    } else {
      printTable(
        ['ID', 'AGENT', 'STATUS', 'RUNTIME', 'CREATED', 'EXPIRES / REASON'],
        sandboxes.map(sandboxRow),
      );
    }
    return EXIT.ok;
  });
}

export async function commandSandboxRm(id: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const sandbox = await client.deleteSandbox(id);
    if (flags.output === 'json') printJson(sandbox);
    else process.stdout.write(`terminated ${sandbox.id}${sandbox.reason ? ` (${sandbox.reason})` : ''}\n`);
    return EXIT.ok;
  });
}

export async function commandSandboxPause(id: string, resume: boolean, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const sandbox = resume ? await client.resumeSandbox(id) : await client.pauseSandbox(id);
    if (flags.output === 'json') printJson(sandbox);
    else process.stdout.write(`${sandbox.id} ${sandbox.status}; expires ${sandbox.expiresAt}\n`);
    return EXIT.ok;
  });
}

/**
 * Runs argv in the sandbox. Text output streams stdout and stderr as they come (resuming a dropped stream); JSON
 * output waits and prints the SandboxCommandResult. Either way the exit code is the command's.
 */
export async function commandSandboxExec(
  id: string,
  argv: string[],
  flags: ServerFlags & { cwd?: string; env: string[]; timeout?: string; stdin?: boolean },
): Promise<number> {
  if (argv.length === 0) {
    throw new AegisError('USAGE', 'no command given', { hint: 'aegis sandbox exec ID -- ls -la /workspace' });
  }
  const env = pairs(flags.env, '--env');
  const stdin = flags.stdin ? (await buffer(process.stdin)).toString('utf8') : undefined;
  const options = {
    cmd: argv,
    ...(flags.cwd === undefined ? {} : { cwd: flags.cwd }),
    ...(env === undefined ? {} : { env }),
    ...(flags.timeout === undefined ? {} : { timeout: flags.timeout }),
    ...(stdin === undefined ? {} : { stdin }),
  };
  return withServer(flags, async ({ client }) => {
    if (flags.output === 'json') {
      const result = await client.runCommand(id, options);
      printJson(result);
      return commandExitCode(result.command.exitCode, result.command.signal);
    }
    const command = await client.startCommand(id, options);
    for await (const event of client.commandEvents(id, command.id)) {
      if (event.type === 'exit') {
        if (event.timedOut) process.stderr.write('aegis: the command timed out and was killed\n');
        return commandExitCode(event.exitCode, event.signal);
      }
      (event.type === 'stdout' ? process.stdout : process.stderr).write(event.data);
    }
    return EXIT.agentFailed; // the stream ended without an exit event
  });
}

export async function commandSandboxFilesPut(
  id: string,
  local: string,
  remote: string,
  flags: ServerFlags,
): Promise<number> {
  const bytes = local === '-' ? await buffer(process.stdin) : readLocal(local);
  return withServer(flags, async ({ client }) => {
    const written = await client.writeFile(id, remote, bytes);
    if (flags.output === 'json') printJson(written);
    else process.stderr.write(`wrote ${written.bytes} bytes to ${written.path}\n`);
    return EXIT.ok;
  });
}

function readLocal(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new AegisError('USAGE', `cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
}

export async function commandSandboxFilesGet(
  id: string,
  remote: string,
  local: string | undefined,
  flags: ServerFlags,
): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const bytes = await client.readFile(id, remote);
    if (local === undefined || local === '-') process.stdout.write(bytes);
    else {
      writeFileSync(local, bytes);
      process.stderr.write(`read ${bytes.length} bytes into ${local}\n`);
    }
    return EXIT.ok;
  });
}

function entryRow(e: SandboxFileEntry): string[] {
  return [
    `${e.type === 'dir' ? 'd' : e.type === 'symlink' ? 'l' : '-'}${(e.mode & 0o777).toString(8).padStart(3, '0')}`,
    String(e.size),
    e.modifiedAt,
    e.name,
  ];
}

export async function commandSandboxFilesLs(id: string, path: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const entries = await client.listFiles(id, path);
    if (flags.output === 'json') printJson({ entries });
    else printTable(['MODE', 'SIZE', 'MODIFIED', 'NAME'], entries.map(entryRow));
    return EXIT.ok;
  });
}

export async function commandSandboxFilesRm(id: string, path: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    await client.removeFile(id, path);
    if (flags.output === 'json') printJson({ path });
    else process.stderr.write(`removed ${path}\n`);
    return EXIT.ok;
  });
}

/** Registers `aegis sandbox …` (called by registerRemoteCommands with its helpers). */
export function registerSandboxCommands(
  program: Command,
  serverCommand: (parent: Command, name: string, description: string) => Command,
  // biome-ignore lint/suspicious/noExplicitAny: commander hands each action its own argument list
  wrap: (action: (...args: any[]) => Promise<number>) => (...args: any[]) => Promise<void>,
): void {
  const sandbox = program
    .command('sandbox')
    .helpGroup(HELP_GROUP)
    .description(
      'live sandboxes: long-lived instances of an agent to run commands in and move files to and from',
    );
  serverCommand(
    sandbox,
    'create',
    'create a live sandbox from a deployed agent (its manifest is the policy); prints its id',
  )
    .argument('<agent>', 'agent name or name@REVISION')
    .option('--timeout <duration>', 'lifetime, e.g. 30m (default: the manifest timeout)')
    .option('--idle-timeout <duration>', 'end it after this long without calls or running commands, e.g. 5m')
    .option('--env <KEY=VALUE>', 'environment of its commands (repeat)', collectPair, [] as string[])
    .option('--metadata <KEY=VALUE>', 'a label kept with the sandbox (repeat)', collectPair, [] as string[])
    .action(wrap((agent: string, flags) => commandSandboxCreate(agent, flags)));
  serverCommand(sandbox, 'ls', 'list your sandboxes (all of them with an admin key)').action(
    wrap((flags) => commandSandboxLs(flags)),
  );
  serverCommand(sandbox, 'rm', 'terminate a sandbox (kills every process in it)')
    .argument('<id>', 'sandbox id, from `aegis sandbox ls`')
    .action(wrap((id: string, flags) => commandSandboxRm(id, flags)));
  serverCommand(
    sandbox,
    'pause',
    'freeze every process of a sandbox (no CPU; its timeouts stop) until resumed',
  )
    .argument('<id>', 'sandbox id')
    .action(wrap((id: string, flags) => commandSandboxPause(id, false, flags)));
  serverCommand(sandbox, 'resume', 'let a paused sandbox run again (its expiry moves by the time paused)')
    .argument('<id>', 'sandbox id')
    .action(wrap((id: string, flags) => commandSandboxPause(id, true, flags)));
  serverCommand(
    sandbox,
    'exec',
    "run a command in a sandbox; streams its output and exits with the command's code",
  )
    .argument('<id>', 'sandbox id')
    .argument('<argv...>', 'the command and its arguments, after --')
    .option('--cwd <dir>', 'working directory inside the sandbox')
    .option('--env <KEY=VALUE>', 'environment (repeat)', collectPair, [] as string[])
    .option('--timeout <duration>', 'kill the command after this long, e.g. 30s')
    .option('--stdin', 'send this process’s stdin to the command (read to its end first; at most 1 MiB)')
    .addHelpText('after', '\nExample: aegis sandbox exec sbx_… -- sh -c "ls -la /workspace"')
    .action(wrap((id: string, argv: string[], flags) => commandSandboxExec(id, argv, flags)));
  serverCommand(
    sandbox,
    'shell',
    'attach this terminal to a shell (or ARGV) on a pseudo-terminal in a sandbox; exits with its code',
  )
    .argument('<id>', 'sandbox id')
    .argument('[argv...]', 'the command and its arguments, after -- (default: an interactive shell)')
    .option('--cwd <dir>', 'working directory inside the sandbox')
    .addHelpText('after', '\nRaw mode and resize (SIGWINCH) on a TTY; piped stdin is forwarded as is.')
    .action(wrap((id: string, argv: string[], flags) => commandSandboxShell(id, argv, flags)));
  const files = sandbox.command('files').description('files inside a sandbox (only where its policy allows)');
  serverCommand(files, 'put', 'upload a local file (- for stdin) to a path in the sandbox')
    .argument('<id>', 'sandbox id')
    .argument('<local>', 'local file, or -')
    .argument('<remote>', 'absolute path inside the sandbox')
    .action(
      wrap((id: string, local: string, remote: string, flags) =>
        commandSandboxFilesPut(id, local, remote, flags),
      ),
    );
  serverCommand(files, 'get', 'download a file from the sandbox (to stdout without LOCAL)')
    .argument('<id>', 'sandbox id')
    .argument('<remote>', 'absolute path inside the sandbox')
    .argument('[local]', 'local file to write, or - for stdout')
    .action(
      wrap((id: string, remote: string, local: string | undefined, flags) =>
        commandSandboxFilesGet(id, remote, local, flags),
      ),
    );
  serverCommand(files, 'ls', 'list a directory in the sandbox')
    .argument('<id>', 'sandbox id')
    .argument('<path>', 'absolute path inside the sandbox')
    .action(wrap((id: string, path: string, flags) => commandSandboxFilesLs(id, path, flags)));
  serverCommand(files, 'rm', 'remove a file or directory in the sandbox')
    .argument('<id>', 'sandbox id')
    .argument('<path>', 'absolute path inside the sandbox')
    .action(wrap((id: string, path: string, flags) => commandSandboxFilesRm(id, path, flags)));
}
