/**
 * What the agent sees inside a gVisor container: its environment, the synthesised /etc files, its command.
 * Minimal twins of pieces that live in ../sandbox/runtime.ts (being split into slots as this is written: the lead
 * unifies them after the merge — the contract is the same: same variables, same /etc, same interpreters).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { AegisError } from '../../../domain/errors.ts';
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';

export const NODE_INSIDE = '/opt/aegis/bin/node';
const INNER_PATH = '/opt/aegis/bin:/usr/local/bin:/usr/bin:/bin';
/** Where the egress proxy listens inside every container that has egress (on the namespace's own lo). */
export const PROXY_PORT = 3128;
const PROXY_URL = `http://127.0.0.1:${PROXY_PORT}`;
const PROXY_ENV: Readonly<Record<string, string>> = {
  HTTP_PROXY: PROXY_URL,
  HTTPS_PROXY: PROXY_URL,
  http_proxy: PROXY_URL,
  https_proxy: PROXY_URL,
  ALL_PROXY: `socks5h://127.0.0.1:${PROXY_PORT}`,
  all_proxy: `socks5h://127.0.0.1:${PROXY_PORT}`,
  NODE_USE_ENV_PROXY: '1',
};

/** AEGIS's variables, spec.env, secret placeholders (never values) and, with egress, the proxy variables. */
export function agentEnv(
  agent: CompiledAgent,
  executionId: string,
  egress: boolean,
  secretEnv: Readonly<Record<string, string>>,
): Record<string, string> {
  return {
    PATH: INNER_PATH,
    HOME: '/workspace',
    TMPDIR: '/tmp',
    LANG: 'C.UTF-8',
    PYTHONUNBUFFERED: '1',
    PYTHONDONTWRITEBYTECODE: '1',
    ...(egress ? { NO_PROXY: '', no_proxy: '' } : {}),
    ...agent.env,
    ...secretEnv,
    ...(egress ? PROXY_ENV : {}),
    AEGIS_EXECUTION_ID: executionId,
    AEGIS_AGENT_NAME: agent.name,
    AEGIS_AGENT_VERSION: agent.version,
    AEGIS_INPUT: '/run/aegis/input.json',
    AEGIS_OUTPUT: '/run/aegis/output.json',
  };
}

/** /etc files written into the generated root (no host accounts leak in); the agent runs as `uid`. */
export function generatedEtc(uid: number, gid: number): Readonly<Record<string, string>> {
  return {
    passwd: `root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nagent:x:${uid}:${gid}:AEGIS agent:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
    group: `root:x:0:\nagent:x:${gid}:\nnogroup:x:65534:\n`,
    hosts: '127.0.0.1\tlocalhost aegis\n::1\tlocalhost ip6-localhost\n',
    'nsswitch.conf': 'passwd: files\ngroup: files\nhosts: files\n',
  };
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
  const interpreters: Record<string, string> = {
    python: '/usr/bin/python3',
    node: NODE_INSIDE,
    bash: '/usr/bin/bash',
  };
  const interpreter = interpreters[language ?? 'bash']!;
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
