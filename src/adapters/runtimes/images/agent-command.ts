/**
 * The agent's command inside a custom image, the same on every runtime: `spec.runtime.command` as written, or the
 * language's interpreter *of the image* (found on the image's PATH) with the entrypoint. The image's Env is the
 * base of the agent's environment and AEGIS's variables win (as Docker merges a container's Env over its image's);
 * the working directory (/agent), the user (the sandbox uid) and the gate/init are AEGIS's — the image's
 * WorkingDir, User, Entrypoint and Cmd are not used, on docker and gvisor alike.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { AegisError } from '../../../domain/errors.ts';
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';

const IMAGE_INTERPRETERS: Readonly<Record<string, string>> = {
  python: 'python3',
  node: 'node',
  bash: 'bash',
};

export function imageAgentArgv(agent: CompiledAgent): string[] {
  const { language, entrypoint, command } = agent.runtime;
  if (command !== undefined) return [...command];
  if (entrypoint !== undefined && !existsSync(join(agent.agentDir, entrypoint))) {
    throw new AegisError('MANIFEST_INVALID', `entrypoint ${entrypoint} does not exist in ${agent.agentDir}`, {
      problems: [{ path: 'spec.runtime.entrypoint', message: `no file ${join(agent.agentDir, entrypoint)}` }],
    });
  }
  return [IMAGE_INTERPRETERS[language ?? 'bash']!, entrypoint!];
}

/** The image's `NAME=value` list under AEGIS's variables (AEGIS's win). */
export function imageEnv(
  image: readonly string[],
  aegis: Readonly<Record<string, string>>,
): Record<string, string> {
  const merged: Record<string, string> = {};
  for (const pair of image) {
    const eq = pair.indexOf('=');
    if (eq > 0) merged[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return { ...merged, ...aegis };
}
