/** `aegis agents ls | show | versions | rollback | rm`: deployed agents and their revisions. */
import { createInterface } from 'node:readline/promises';
import type { AgentRevision } from '../../../sdk/index.ts';
import { AegisError } from '../../domain/errors.ts';
import { formatBytes } from '../../domain/units.ts';
import { EXIT, printJson, printTable, shortDigest } from '../output.ts';
import { type ServerFlags, withServer } from './connect.ts';

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

export async function commandAgentsLs(flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const agents = await client.listAgents();
    if (flags.output === 'json') {
      printJson({ agents });
      return EXIT.ok;
    }
    if (agents.length === 0) {
      process.stdout.write('no agents deployed — try `aegis deploy examples/hello-python/agent.yaml`\n');
      return EXIT.ok;
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
    return EXIT.ok;
  });
}

export async function commandAgentsShow(name: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const detail = await client.getAgent(name);
    if (flags.output === 'json') {
      printJson(detail);
      return EXIT.ok;
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
    return EXIT.ok;
  });
}

export async function commandAgentsVersions(name: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    if (flags.output === 'json') {
      printJson({ revisions: await client.listRevisions(name) });
      return EXIT.ok;
    }
    const detail = await client.getAgent(name);
    printTable(REVISION_HEADER, revisionRows(detail.revisions, detail.agent.activeRevision));
    process.stderr.write('* active\n');
    return EXIT.ok;
  });
}

export async function commandAgentsRollback(
  name: string,
  flags: ServerFlags & { to?: string },
): Promise<number> {
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
      return EXIT.ok;
    }
    const { agent } = result;
    process.stdout.write(
      `rolled back ${agent.name}: revision ${result.from} → ${agent.activeRevision} (${agent.active.version}) is active\n`,
    );
    return EXIT.ok;
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

export async function commandAgentsRm(name: string, flags: ServerFlags & { yes?: boolean }): Promise<number> {
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
        return EXIT.ok;
      }
    }
    await client.deleteAgent(name);
    if (flags.output === 'json') printJson({ deleted: name });
    else process.stdout.write(`deleted agent ${name} (its past executions stay)\n`);
    return EXIT.ok;
  });
}
