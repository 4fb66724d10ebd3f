/**
 * CLI commands that drive an AEGIS server through the SDK (sdk/): deploy, exec, cancel, agents, keys — and the
 * server side of `logs` and `ps`, which main.ts hands over here when `--server` or AEGIS_SERVER is set.
 * One file per command group; connecting and printing are shared (connect.ts, output.ts).
 */
import type { Command } from 'commander';
import { outputOption } from '../output.ts';
import {
  commandAgentsLs,
  commandAgentsRm,
  commandAgentsRollback,
  commandAgentsShow,
  commandAgentsVersions,
} from './agents.ts';
import { commandApprovalsDecide, commandApprovalsLs } from './approvals.ts';
import { addServerOptions, HELP_GROUP } from './connect.ts';
import { commandDeploy } from './deploy.ts';
import { registerEdgeCommands } from './edge.ts';
import { commandCancel, commandExec } from './executions.ts';
import { commandKeysCreate, commandKeysLs, commandKeysRevoke } from './keys.ts';
import { commandMcp } from './mcp.ts';
import { commandMemoryLs, commandMemoryReembed, commandMemoryRm, commandMemorySearch } from './memory.ts';
import { commandNodesLs } from './nodes.ts';
import { registerSandboxCommands } from './sandboxes.ts';
import { commandSwarmShow } from './swarm.ts';

export { addServerOptions, needsServer, type ServerFlags, serverFrom } from './connect.ts';
export { type RemotePsFlags, remoteLogs, remotePs } from './executions.ts';

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
    .option('-f, --follow', 'stream the logs live, then print the result')
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

  const nodes = program.command('nodes').helpGroup(HELP_GROUP).description("the cluster's nodes");
  serverCommand(
    nodes,
    'ls',
    'list the registered nodes: state, capacity, running, heartbeat age, epoch',
  ).action(wrap(commandNodesLs));

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

  const approvals = program
    .command('approvals')
    .helpGroup(HELP_GROUP)
    .description('tool calls waiting for a human decision (spec.tools approval: required)');
  serverCommand(approvals, 'ls', 'list pending tool calls with their arguments').action(
    wrap(commandApprovalsLs),
  );
  for (const decision of ['approve', 'deny'] as const) {
    serverCommand(approvals, decision, `${decision} a pending tool call`)
      .argument('<id>', 'approval id (ap_…), from `aegis approvals ls`')
      .action(wrap(commandApprovalsDecide(decision)));
  }

  const memory = program
    .command('memory')
    .helpGroup(HELP_GROUP)
    .description("agents' memories (Cortex, spec.memory): list, search, forget, re-embed");
  const memoryCommand = (name: string, description: string) =>
    serverCommand(memory, name, description).option(
      '--namespace <ns>',
      "memory namespace (default: the deployed agent's spec.memory.namespace)",
    );
  memoryCommand('ls', "an agent's memories, newest first (read)")
    .argument('<agent>', 'agent name')
    .option('--limit <n>', 'memories per page, 1–1000 (default 50)')
    .option('--after <cursor>', 'the next page: the cursor the previous page printed')
    .action(wrap(commandMemoryLs));
  memoryCommand('search', 'what the agent would recall for a query, best first, with scores (read)')
    .argument('<agent>', 'agent name')
    .argument('<query>', 'text to recall memories for')
    .option('-k <n>', 'how many memories, 1–100 (default 5)')
    .option('--threshold <score>', "minimum score 0–1 (default: the server's)")
    .action(wrap(commandMemorySearch));
  memoryCommand('rm', 'forget one memory (deploy)')
    .argument('<agent>', 'agent name')
    .argument('<id>', 'memory id (mem_…), from `aegis memory ls` or `search`')
    .action(wrap(commandMemoryRm));
  memoryCommand(
    'reembed',
    "re-embed an agent's memories with the server's embedder after memory.embedder changed (deploy; --all: admin)",
  )
    .argument('[agent]', 'agent name (or --all)')
    .option('--all', "every agent's memories")
    .action(wrap(commandMemoryReembed));

  const swarm = program
    .command('swarm')
    .helpGroup(HELP_GROUP)
    .description('swarms: an execution and the children it spawned (aegis.swarm.spawn)');
  serverCommand(swarm, 'show', 'the tree of a swarm: statuses, depth, agents, reasons (read)')
    .argument('<root-id>', 'the root execution id (rootId of any member, from `aegis ps -o json`)')
    .action(wrap(commandSwarmShow));

  addServerOptions(program.command('mcp'))
    .helpGroup(HELP_GROUP)
    .description("serve the server's deployed agents as MCP tools on stdin/stdout (for MCP hosts)")
    .addHelpText(
      'after',
      '\nTools are the deployed agents (inputSchema from spec.input); executions and logs are resources.\n' +
        'Example host entry: {"command": "aegis", "args": ["mcp"], "env": {"AEGIS_SERVER": "http://127.0.0.1:8088", "AEGIS_API_KEY": "aegis_…"}}',
    )
    .action(wrap(commandMcp));

  registerSandboxCommands(program, serverCommand, wrap);
  registerEdgeCommands(program, serverCommand, wrap);
}
