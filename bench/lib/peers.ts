/**
 * Drivers for the peers the benchmark compares AEGIS with on the same machine, each usable only when present:
 *
 * - `@anthropic-ai/sandbox-runtime` (npm devDependency; Linux needs bubblewrap, socat and ripgrep): its library API
 *   as its README shows it — `SandboxManager.initialize(config)` once, then per start
 *   `wrapWithSandbox(command)` and `spawn(wrapped, { shell: true })`. No network, no writes.
 * - gVisor: `runsc --network=none do <command>` (Debian package `runsc`).
 * - Docker: `docker run --rm --network none <image> …` (CLI) and the Engine API on /var/run/docker.sock
 *   (create → start → wait → remove), with a FROM-scratch image holding busybox-static, built once from a temp dir
 *   through the Engine API (`POST /build`) and kept by tag.
 *
 * A driver that can't run says why and how to install what is missing (`Absent`), so a scenario prints the row as
 * absent instead of failing.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { delimiter, join } from 'node:path';
import { pack } from 'tar-stream';
import { wallNowMs } from './clock.ts';

export interface Absent {
  readonly absent: string;
  readonly install: string;
}

export function isAbsent(value: unknown): value is Absent {
  return typeof value === 'object' && value !== null && 'absent' in value;
}

/** One start of a peer: wall-clock ms since the epoch. */
export interface PeerRun {
  readonly startedAt: number;
  readonly exitedAt: number;
  readonly stdout: string;
}

export function which(command: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter)) {
    const file = join(dir, command);
    if (dir && existsSync(file)) return file;
  }
  return undefined;
}

/** Spawns, closes stdin, collects stdout/stderr, resolves on close; rejects on a non-zero exit. */
function runCommand(
  file: string,
  args: readonly string[],
  options: { cwd?: string; shell?: boolean; env?: NodeJS.ProcessEnv } = {},
  what = file,
): Promise<PeerRun> {
  return new Promise((resolveRun, reject) => {
    const startedAt = wallNowMs();
    const child = spawn(file, args, { ...options, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.once('error', reject);
    child.stdin.on('error', () => {});
    child.stdin.end();
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('close', (code) => {
      const exitedAt = wallNowMs();
      if (code !== 0)
        reject(new Error(`${what} exited with ${code}: ${(stderr || stdout).trim().slice(0, 1000)}`));
      else resolveRun({ startedAt, exitedAt, stdout });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// @anthropic-ai/sandbox-runtime

interface SandboxManagerApi {
  initialize(config: unknown): Promise<void>;
  checkDependencies(): { errors: string[]; warnings: string[] };
  wrapWithSandbox(command: string): Promise<string>;
  reset(): Promise<void>;
}

export interface SandboxRuntimePeer {
  readonly version: string;
  /** `SandboxManager.initialize` (proxies, checks): once per process, ms. */
  readonly initializeMs: number;
  /** One start: wrap + spawn through /bin/sh, in `cwd` (which its deny-path scan walks). */
  run(command: string): Promise<PeerRun & { readonly wrappedAt: number }>;
  close(): Promise<void>;
}

const SRT_INSTALL =
  'npm install (it is a devDependency); on Linux it also needs `apt-get install bubblewrap socat ripgrep`';

/**
 * Loads and initialises sandbox-runtime with no network and no writes. `cwd` becomes this process's working
 * directory until `close()` (the library reads `process.cwd()`: that is where the sandboxed command runs and what
 * it scans for files to protect).
 */
export async function openSandboxRuntime(cwd: string): Promise<SandboxRuntimePeer | Absent> {
  let SandboxManager: SandboxManagerApi;
  let version = '?';
  try {
    const moduleName = '@anthropic-ai/sandbox-runtime';
    ({ SandboxManager } = (await import(moduleName)) as { SandboxManager: SandboxManagerApi });
    const pkg = join(import.meta.dirname, '../../node_modules/@anthropic-ai/sandbox-runtime/package.json');
    if (existsSync(pkg)) version = (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
  } catch (error) {
    return { absent: `not installed (${(error as Error).message.split('\n')[0]})`, install: SRT_INSTALL };
  }
  const previous = process.cwd();
  process.chdir(cwd);
  try {
    const deps = SandboxManager.checkDependencies();
    if (deps.errors.length > 0) {
      process.chdir(previous);
      return { absent: `dependencies missing: ${deps.errors.join(', ')}`, install: SRT_INSTALL };
    }
    const started = performance.now();
    await SandboxManager.initialize({
      network: { allowedDomains: [], deniedDomains: [] },
      filesystem: { denyRead: [], allowWrite: [], denyWrite: [] },
    });
    const initializeMs = performance.now() - started;
    return {
      version,
      initializeMs,
      run: async (command) => {
        const startedAt = wallNowMs();
        const wrapped = await SandboxManager.wrapWithSandbox(command);
        const wrappedAt = wallNowMs();
        const result = await runCommand(wrapped, [], { shell: true }, 'sandbox-runtime');
        return { ...result, startedAt, wrappedAt };
      },
      close: async () => {
        await SandboxManager.reset().catch(() => {});
        process.chdir(previous);
      },
    };
  } catch (error) {
    process.chdir(previous);
    return {
      absent: `failed to initialise: ${(error as Error).message.split('\n')[0]}`,
      install: SRT_INSTALL,
    };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// gVisor

export interface RunscPeer {
  readonly version: string;
  run(argv: readonly string[], cwd: string): Promise<PeerRun>;
}

export function openRunsc(): RunscPeer | Absent {
  const runsc = which('runsc');
  if (runsc === undefined) return { absent: 'runsc not on PATH', install: 'apt-get install runsc (gVisor)' };
  if (process.getuid?.() !== 0)
    return { absent: '`runsc do` needs root here', install: 'run the bench as root' };
  let version = '?';
  try {
    version = execFileSync(runsc, ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim();
  } catch (error) {
    return {
      absent: `runsc --version failed: ${(error as Error).message}`,
      install: 'apt-get install runsc',
    };
  }
  return {
    version,
    run: (argv, cwd) => runCommand(runsc, ['--network=none', 'do', ...argv], { cwd }, 'runsc do'),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Docker

/** The daemon's socket: `DOCKER_HOST=unix://…` (as the docker CLI reads it; scripts/bench.sh sets it for a private dockerd), else the default. */
export const DOCKER_SOCKET = process.env['DOCKER_HOST']?.startsWith('unix://')
  ? process.env['DOCKER_HOST'].slice('unix://'.length)
  : '/var/run/docker.sock';
export const DOCKER_IMAGE = 'aegis-bench/busybox:1';
const BUSYBOX = '/bin/busybox';

interface DockerAnswer {
  readonly status: number;
  readonly body: string;
}

/** One Engine API call over the unix socket. */
export function dockerApi(
  method: string,
  path: string,
  body?: Buffer | object,
  contentType?: string,
): Promise<DockerAnswer> {
  return new Promise((resolveCall, reject) => {
    const payload =
      body === undefined
        ? undefined
        : Buffer.isBuffer(body)
          ? body
          : Buffer.from(JSON.stringify(body), 'utf8');
    const req = request(
      {
        socketPath: DOCKER_SOCKET,
        method,
        path,
        headers: payload
          ? {
              'content-type': contentType ?? 'application/json',
              'content-length': payload.length,
            }
          : {},
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolveCall({ status: res.statusCode ?? 0, body: text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

function expectStatus(answer: DockerAnswer, ok: readonly number[], what: string): DockerAnswer {
  if (!ok.includes(answer.status))
    throw new Error(`docker ${what}: HTTP ${answer.status} ${answer.body.slice(0, 500)}`);
  return answer;
}

/** A tar build context: Dockerfile + busybox (the static binary of the host's busybox-static). */
function buildContext(): Promise<Buffer> {
  return new Promise((resolveTar, reject) => {
    const tar = pack();
    const chunks: Buffer[] = [];
    tar.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
    tar.on('end', () => resolveTar(Buffer.concat(chunks)));
    tar.on('error', reject);
    tar.entry(
      { name: 'Dockerfile' },
      'FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\n',
    );
    tar.entry({ name: 'busybox', mode: 0o755 }, readFileSync(BUSYBOX));
    tar.finalize();
  });
}

export interface DockerPeer {
  readonly version: string;
  /** Whether this run built the image (else it was cached by tag), and how long that took. */
  readonly built: { readonly now: boolean; readonly ms: number };
  /** `docker run --rm --network none IMAGE args…` through the CLI; undefined when no CLI is on PATH. */
  readonly cli: ((args: readonly string[]) => Promise<PeerRun>) | undefined;
  readonly cliPath: string | undefined;
  /** create → start → wait → remove through the Engine API; `waitedAt`: the container had exited. */
  api(args: readonly string[]): Promise<PeerRun & { readonly waitedAt: number }>;
}

/** Connects to a running dockerd (never starts one) and makes sure the bench image exists. */
export async function openDocker(): Promise<DockerPeer | Absent> {
  const install =
    'apt-get install docker.io busybox-static, then start dockerd (e.g. `dockerd &`; stop it by its pid afterwards)';
  if (!existsSync(DOCKER_SOCKET)) return { absent: `no dockerd socket at ${DOCKER_SOCKET}`, install };
  let version: string;
  try {
    const answer = expectStatus(await dockerApi('GET', '/version'), [200], 'version');
    version = (JSON.parse(answer.body) as { Version: string }).Version;
  } catch (error) {
    return { absent: `dockerd not reachable: ${(error as Error).message}`, install };
  }
  let built = { now: false, ms: 0 };
  const inspect = await dockerApi('GET', `/images/${encodeURIComponent(DOCKER_IMAGE)}/json`);
  if (inspect.status === 404) {
    if (!existsSync(BUSYBOX))
      return { absent: `image ${DOCKER_IMAGE} missing and no ${BUSYBOX} to build it`, install };
    const started = performance.now();
    const answer = expectStatus(
      await dockerApi(
        'POST',
        `/build?t=${encodeURIComponent(DOCKER_IMAGE)}&rm=1&forcerm=1`,
        await buildContext(),
        'application/x-tar',
      ),
      [200],
      'build',
    );
    if (/"error"/.test(answer.body))
      throw new Error(`docker build of ${DOCKER_IMAGE} failed: ${answer.body.slice(0, 1000)}`);
    built = { now: true, ms: performance.now() - started };
  } else {
    expectStatus(inspect, [200], 'image inspect');
  }
  const cliPath = which('docker');
  return {
    version,
    built,
    cliPath,
    cli: cliPath
      ? (args) =>
          runCommand(cliPath, ['run', '--rm', '--network', 'none', DOCKER_IMAGE, ...args], {}, 'docker run')
      : undefined,
    api: async (args) => {
      const startedAt = wallNowMs();
      const created = expectStatus(
        await dockerApi('POST', '/containers/create', {
          Image: DOCKER_IMAGE,
          Cmd: args,
          NetworkDisabled: true,
          HostConfig: { NetworkMode: 'none' },
        }),
        [201],
        'create',
      );
      const id = (JSON.parse(created.body) as { Id: string }).Id;
      try {
        expectStatus(await dockerApi('POST', `/containers/${id}/start`), [204], 'start');
        const waited = expectStatus(await dockerApi('POST', `/containers/${id}/wait`), [200], 'wait');
        const waitedAt = wallNowMs();
        const code = (JSON.parse(waited.body) as { StatusCode: number }).StatusCode;
        if (code !== 0) throw new Error(`container exited with ${code}`);
        const logs = await dockerApi('GET', `/containers/${id}/logs?stdout=1`);
        expectStatus(await dockerApi('DELETE', `/containers/${id}?force=1`), [204], 'remove');
        // Logs are multiplexed frames (8-byte headers); the text is all this bench needs.
        return { startedAt, waitedAt, exitedAt: wallNowMs(), stdout: logs.body.replace(/[\0-\x08]/g, '') };
      } catch (error) {
        await dockerApi('DELETE', `/containers/${id}?force=1`).catch(() => {});
        throw error;
      }
    },
  };
}
