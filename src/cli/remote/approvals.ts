/** `aegis approvals ls | approve ID | deny ID`: tool calls waiting for a human (`approval: required` grants). */
import { EXIT, printJson, printTable } from '../output.ts';
import { type ServerFlags, withServer } from './connect.ts';

/** The arguments as one line, cut to `max` characters (the full text is in `-o json`). */
function argsText(value: unknown, max = 80): string {
  const text = JSON.stringify(value ?? {}) ?? '';
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export async function commandApprovalsLs(flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const approvals = await client.listApprovals();
    if (flags.output === 'json') {
      printJson({ approvals });
      return EXIT.ok;
    }
    if (approvals.length === 0) {
      process.stdout.write('no tool calls are waiting for approval\n');
      return EXIT.ok;
    }
    printTable(
      ['ID', 'SUBJECT', 'TOOL', 'ARGUMENTS', 'BY', 'EXPIRES'],
      approvals.map((a) => [a.id, a.subject, a.tool, argsText(a.arguments), a.by, a.expiresAt]),
    );
    return EXIT.ok;
  });
}

export function commandApprovalsDecide(decision: 'approve' | 'deny') {
  return async (id: string, flags: ServerFlags): Promise<number> =>
    withServer(flags, async ({ client }) => {
      const decided = await client.decideApproval(id, decision);
      if (flags.output === 'json') printJson(decided);
      else {
        const a = decided.approval;
        process.stdout.write(
          `${decided.decision} ${a.id}: ${a.tool} ${argsText(a.arguments)} in ${a.subject}\n`,
        );
      }
      return EXIT.ok;
    });
}
