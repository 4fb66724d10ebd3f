/**
 * `aegis memory ls | search | rm | reembed AGENT`: an agent's memories (Cortex) on the server. `-o json` prints the
 * REST answers as they are (MemoryList, MemorySearchResult, MemoryForgotten, MemoryReembedded).
 */
import type { Memory, MemoryScopeOptions } from '../../../sdk/index.ts';
import { AegisError } from '../../domain/errors.ts';
import { EXIT, printJson, printTable } from '../output.ts';
import { type ServerFlags, withServer } from './connect.ts';

interface NamespaceFlags extends ServerFlags {
  readonly namespace?: string;
}

const scopeOf = (flags: NamespaceFlags): MemoryScopeOptions =>
  flags.namespace === undefined ? {} : { namespace: flags.namespace };

/** One line of a memory's text, cut to `max` characters (the whole text is in `-o json`). */
function oneLine(text: string, max = 70): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

function wholeNumber(value: string, flag: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new AegisError('USAGE', `${flag} must be a whole number from ${min} to ${max}, got "${value}"`);
  }
  return n;
}

const outcomeOf = (m: Memory) => m.outcome ?? '-';

export async function commandMemoryLs(
  agent: string,
  flags: NamespaceFlags & { limit?: string; after?: string },
): Promise<number> {
  const limit = flags.limit === undefined ? undefined : wholeNumber(flags.limit, '--limit', 1, 1000);
  return withServer(flags, async ({ client }) => {
    const page = await client.listMemories(agent, {
      ...scopeOf(flags),
      ...(limit === undefined ? {} : { limit }),
      ...(flags.after === undefined ? {} : { after: flags.after }),
    });
    if (flags.output === 'json') {
      printJson(page);
      return EXIT.ok;
    }
    if (page.memories.length === 0) {
      process.stdout.write(`agent ${agent} has no memories${flags.after ? ' after this cursor' : ''}\n`);
      return EXIT.ok;
    }
    printTable(
      ['ID', 'CREATED', 'SOURCE', 'OUTCOME', 'EXPIRES', 'TEXT'],
      page.memories.map((m) => [
        m.id,
        m.createdAt.slice(0, 19),
        m.source,
        outcomeOf(m),
        m.expiresAt?.slice(0, 19) ?? 'never',
        oneLine(m.text),
      ]),
    );
    if (page.next !== null) process.stderr.write(`more: aegis memory ls ${agent} --after ${page.next}\n`);
    return EXIT.ok;
  });
}

export async function commandMemorySearch(
  agent: string,
  query: string,
  flags: NamespaceFlags & { k?: string; threshold?: string },
): Promise<number> {
  const k = flags.k === undefined ? undefined : wholeNumber(flags.k, '-k', 1, 100);
  let threshold: number | undefined;
  if (flags.threshold !== undefined) {
    threshold = Number(flags.threshold);
    if (flags.threshold.trim() === '' || !(threshold >= 0 && threshold <= 1)) {
      throw new AegisError('USAGE', `--threshold must be a number from 0 to 1, got "${flags.threshold}"`);
    }
  }
  return withServer(flags, async ({ client }) => {
    const memories = await client.searchMemories(
      agent,
      {
        query,
        ...(k === undefined ? {} : { k }),
        ...(threshold === undefined ? {} : { threshold }),
      },
      scopeOf(flags),
    );
    if (flags.output === 'json') {
      printJson({ memories });
      return EXIT.ok;
    }
    if (memories.length === 0) {
      process.stdout.write(`no memory of ${agent} is close enough to the query\n`);
      return EXIT.ok;
    }
    printTable(
      ['SCORE', 'ID', 'CREATED', 'OUTCOME', 'TEXT'],
      memories.map((m) => [
        m.score.toFixed(3),
        m.id,
        m.createdAt.slice(0, 19),
        outcomeOf(m),
        oneLine(m.text, 60),
      ]),
    );
    return EXIT.ok;
  });
}

export async function commandMemoryRm(agent: string, id: string, flags: NamespaceFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const forgotten = await client.forgetMemory(agent, id, scopeOf(flags));
    if (flags.output === 'json') printJson(forgotten);
    else process.stdout.write(`forgot ${forgotten.id} of ${agent}\n`);
    return EXIT.ok;
  });
}

export async function commandMemoryReembed(
  agent: string | undefined,
  flags: NamespaceFlags & { all?: boolean },
): Promise<number> {
  if ((agent === undefined) === (flags.all !== true)) {
    throw new AegisError('USAGE', 'name one agent, or pass --all for every agent (not both)', {
      hint: 'aegis memory reembed AGENT [--namespace NS]   or   aegis memory reembed --all (admin key)',
    });
  }
  if (flags.all && flags.namespace !== undefined) {
    throw new AegisError('USAGE', '--namespace goes with an agent; --all re-embeds every namespace');
  }
  return withServer(flags, async ({ client }) => {
    const done = await client.reembedMemories(agent ?? null, scopeOf(flags));
    if (flags.output === 'json') printJson(done);
    else {
      process.stdout.write(
        `re-embedded ${done.count} memor${done.count === 1 ? 'y' : 'ies'} ${agent === undefined ? 'of every agent' : `of ${agent}`} with ${done.embedder}\n`,
      );
    }
    return EXIT.ok;
  });
}
