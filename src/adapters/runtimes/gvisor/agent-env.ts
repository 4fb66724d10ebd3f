/**
 * What the agent sees inside a gVisor container beyond what every runtime shares (../sandbox/environment.ts: the
 * environment, the /etc contents, the interpreters): the /etc files as the generated root's file names, and the
 * agent's command with the binaries it needs bound.
 */
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { AegisError } from '../../../domain/errors.ts';
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';
import { generatedEtc, HOST_INTERPRETERS, NODE_INSIDE } from '../sandbox/environment.ts';

/** /etc files written into the generated root, by file name (the shared table, environment.ts). */
export function generatedEtcFiles(uid: number, gid: number): Readonly<Record<string, string>> {
  return Object.fromEntries(
    Object.entries(generatedEtc(uid, gid)).map(([path, content]) => [basename(path), content]),
  );
}

/** Interpreter argv for the agent, and interpreter binaries to bind (host path → path inside). */
export function agentCommand(
  agent: CompiledAgent,
  nodeBinary: string,
): { argv: string[]; binaries: Record<string, string> } {
  const { language, entrypoint, command } = agent.runtime;
  const binaries: Record<string, string> = {};
  const needsNode = language === 'node' || (command !== undefined && command[0] === 'node');
  if (needsNode) binaries[nodeBinary] = NODE_INSIDE;
  if (command !== undefined) return { argv: [...command], binaries };
  const interpreter = HOST_INTERPRETERS[language ?? 'bash'];
  if (language !== 'node' && !existsSync(interpreter)) {
    throw new AegisError('RUNTIME_UNAVAILABLE', `${interpreter} is not installed on this host`, {
      hint: `install it (Debian: apt-get install ${language === 'python' ? 'python3' : 'bash'})`,
    });
  }
  if (entrypoint !== undefined && !existsSync(join(agent.agentDir, entrypoint))) {
    throw new AegisError('MANIFEST_INVALID', `entrypoint ${entrypoint} does not exist in ${agent.agentDir}`, {
      problems: [{ path: 'spec.runtime.entrypoint', message: `no file ${join(agent.agentDir, entrypoint)}` }],
    });
  }
  return { argv: [interpreter, entrypoint!], binaries };
}
