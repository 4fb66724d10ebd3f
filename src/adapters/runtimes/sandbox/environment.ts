/**
 * What an agent sees inside: its uid, PATH, the synthesised /etc files, and its environment (AEGIS's variables,
 * spec.env, secret placeholders, the egress proxy's variables). Runtime-agnostic: every runtime gives its agents the
 * same environment so the same agent.yaml means the same thing everywhere.
 */
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';
import { HOST_INTERPRETERS, NODE_INSIDE } from '../../../domain/runtime/inside-paths.ts';

export { HOST_INTERPRETERS, NODE_INSIDE };

/** Where the agent finds things inside. */
export const INNER_UID = 1000;
export const INNER_GID = 1000;
export const INNER_PATH = '/opt/aegis/bin:/usr/local/bin:/usr/bin:/bin';
/** Where the egress proxy listens inside every sandbox that has egress (on the sandbox's own lo). */
export const PROXY_PORT = 3128;
const PROXY_URL = `http://127.0.0.1:${PROXY_PORT}`;
/** Where the in-sandbox API (LLM gateway, later tools/memory) listens inside a sandbox that has one (its own lo). */
export const API_PORT = 3129;
/** The in-sandbox SDKs inside: Python on PYTHONPATH; Node at /node_modules/aegis, which every ESM/CJS file resolves. */
export const PYTHON_SDK_INSIDE = '/opt/aegis/sdk/python';
export const NODE_SDK_INSIDE = '/node_modules/aegis';
/** What the SDK mounts add to the environment (CJS `require('aegis')` also finds /node_modules by walking up). */
export const SDK_ENV: Readonly<Record<string, string>> = {
  PYTHONPATH: PYTHON_SDK_INSIDE,
  NODE_PATH: '/node_modules',
};

/**
 * Environment that points HTTP clients at the egress proxy (curl reads the lowercase names, most others the
 * uppercase). NO_PROXY is empty: every destination — 127.0.0.1 included — is the proxy's to decide, because an
 * allow rule such as `127.0.0.1:8080` names the *host's* loopback; the sandbox's own lo is not reachable from the
 * host anyway. An agent that runs a server on its own lo and calls it may set NO_PROXY in spec.env.
 */
export const PROXY_ENV: Readonly<Record<string, string>> = {
  HTTP_PROXY: PROXY_URL,
  HTTPS_PROXY: PROXY_URL,
  http_proxy: PROXY_URL,
  https_proxy: PROXY_URL,
  ALL_PROXY: `socks5h://127.0.0.1:${PROXY_PORT}`,
  all_proxy: `socks5h://127.0.0.1:${PROXY_PORT}`,
  NODE_USE_ENV_PROXY: '1',
};

/**
 * The synthesised /etc files an agent sees (no host accounts leak in), by path inside, for an agent running as
 * `uid`:`gid` inside (the sandbox maps its agents to INNER_UID; docker and gvisor run them as the sandbox uid).
 */
export function generatedEtc(uid: number, gid: number): Readonly<Record<string, string>> {
  return {
    '/etc/passwd': `root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nagent:x:${uid}:${gid}:AEGIS agent:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
    '/etc/group': `root:x:0:\nagent:x:${gid}:\nnogroup:x:65534:\n`,
    '/etc/hosts': '127.0.0.1\tlocalhost aegis\n::1\tlocalhost ip6-localhost\n',
    '/etc/nsswitch.conf': 'passwd: files\ngroup: files\nhosts: files\n',
  };
}

/** The synthesised /etc files every sandbox sees. Shared with the bench's floor. */
export const GENERATED_ETC: Readonly<Record<string, string>> = generatedEtc(INNER_UID, INNER_GID);

/**
 * The agent's whole environment: AEGIS's variables, spec.env, secret placeholders (never values) and, with egress,
 * the proxy variables. Order matters to the bench's flag-parity check, which uses this same function.
 */
export function sandboxEnv(
  agent: CompiledAgent,
  executionId: string,
  options: {
    readonly egress: boolean;
    readonly secretEnv: Readonly<Record<string, string>>;
    /** The in-sandbox API's variables (AEGIS_API_URL, AEGIS_TOKEN, OPENAI_BASE_URL, …); set by AEGIS, not spec.env. */
    readonly apiEnv?: Readonly<Record<string, string>>;
  } = {
    egress: false,
    secretEnv: {},
  },
): Record<string, string> {
  const { egress, secretEnv, apiEnv } = options;
  return {
    PATH: INNER_PATH,
    HOME: '/workspace',
    TMPDIR: '/tmp',
    LANG: 'C.UTF-8',
    PYTHONUNBUFFERED: '1',
    PYTHONDONTWRITEBYTECODE: '1',
    ...(egress ? { NO_PROXY: '', no_proxy: '' } : {}),
    ...agent.env,
    // Placeholders only: the values stay in this process and reach the wire through the proxy's rewriter.
    ...secretEnv,
    ...(egress ? PROXY_ENV : {}),
    // The API is on the sandbox's own lo: never through the egress proxy.
    ...(apiEnv
      ? {
          ...SDK_ENV,
          ...apiEnv,
          ...(egress ? { NO_PROXY: '127.0.0.1:3129', no_proxy: '127.0.0.1:3129' } : {}),
        }
      : {}),
    AEGIS_EXECUTION_ID: executionId,
    AEGIS_AGENT_NAME: agent.name,
    AEGIS_AGENT_VERSION: agent.version,
    AEGIS_INPUT: '/run/aegis/input.json',
    AEGIS_OUTPUT: '/run/aegis/output.json',
  };
}
