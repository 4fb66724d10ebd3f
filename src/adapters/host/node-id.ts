/**
 * The node's stable id (docs/adr/0100-node-identity.md): generated once and kept in `$AEGIS_HOME/node-id` (mode
 * 0600), so a restart — under a new hostname, pid or container — is the same node and recovers its work. An
 * operator may name the node instead (`aegis server --node-id`, `AEGIS_NODE_ID`): pods whose home is not kept.
 *
 * The file is created atomically: the id is written to a private temporary file which is then hard-linked to
 * `node-id`; `link` fails when the name exists, so two processes starting at once agree on one id (the loser reads
 * the winner's).
 */
import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NODE_ID, parseNodeId } from '../../domain/cluster/node.ts';
import { AegisError } from '../../domain/errors.ts';

export const NODE_ID_FILE = 'node-id';

/**
 * `override` (flag or env) when given, else the id stored in `home`, created on first use. USAGE when the override
 * or the stored file is not a node id.
 */
export function loadNodeId(home: string, override?: string): string {
  if (override !== undefined && override !== '') return parseNodeId(override, '--node-id / AEGIS_NODE_ID');
  const file = join(home, NODE_ID_FILE);
  const existing = readId(file);
  if (existing !== undefined) return existing;
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(temp, `node-${randomBytes(8).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  try {
    linkSync(temp, file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    unlinkSync(temp);
  }
  const created = readId(file);
  if (created === undefined) throw new AegisError('INTERNAL', `${file} vanished right after it was created`);
  return created;
}

function readId(file: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const id = text.trim();
  if (!NODE_ID.test(id)) {
    throw new AegisError('USAGE', `${file} does not hold a node id (${JSON.stringify(id.slice(0, 40))})`, {
      hint: `remove it to get a new id (this node's unfinished executions are then recovered as another node's), or write the old id back`,
    });
  }
  return id;
}
