/**
 * The runtimes the conformance suite runs against. One entry per runtime: how to tell whether this host can run it,
 * and how to make one. Adding a runtime is one line in CONFORMANCE_RUNTIMES (docker and gvisor join at merge).
 *
 * A runtime this host cannot run is skipped with a loud reason — except when `CI=true` (all of them are required) or
 * `AEGIS_REQUIRE_RUNTIMES=docker,gvisor` names it, where its absence is a failure.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { DockerEngine } from '../../src/adapters/runtimes/docker/engine.ts';
import { DockerRuntime } from '../../src/adapters/runtimes/docker/runtime.ts';
import { GvisorRuntime } from '../../src/adapters/runtimes/gvisor/runtime.ts';
import { detectCgroupLayout } from '../../src/adapters/runtimes/sandbox/cgroups.ts';
import { resolveSandboxUser } from '../../src/adapters/runtimes/sandbox/host.ts';
import { SandboxRuntime } from '../../src/adapters/runtimes/sandbox/runtime.ts';
import type { ProcessIdentity, Runtime } from '../../src/app/ports.ts';
import type { RuntimeName } from '../../src/domain/runtime/capabilities.ts';

export interface RuntimeUnderTest {
  readonly name: RuntimeName;
  /**
   * How the pids limit bites (RUNTIME_CAPABILITIES['resources.pids']): the fork past it fails with EAGAIN and the
   * agent carries on, or crossing it ends the whole instance. Either way it is reported as a pids limit hit.
   */
  readonly pidsLimit: 'refuses-fork' | 'ends-instance';
  /** Why this host cannot run it, or undefined when it can. */
  skipReason(): string | undefined;
  /** A fresh runtime: its scratch in `scratchRoot`, its cgroups under `cgroupParent`, owners told by `identity`. */
  create(options: {
    readonly identity: ProcessIdentity;
    readonly scratchRoot: string;
    readonly cgroupParent: string;
  }): Runtime;
}

function sandboxSkipReason(): string | undefined {
  if (process.platform !== 'linux') return `the sandbox runtime needs Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'needs root: sandboxes run as the dedicated aegis-sandbox uid';
  if (!resolveSandboxUser().dedicated)
    return 'no dedicated sandbox uid (create aegis-sandbox: npm run setup)';
  try {
    execFileSync('bwrap', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap)';
  }
  if (!existsSync('/usr/bin/python3')) return '/usr/bin/python3 is missing (Debian: apt-get install python3)';
  if (detectCgroupLayout().mode === 'none')
    return 'no usable cgroup memory/pids/cpu controllers on this host';
  return undefined;
}

/** The Docker Engine the docker runtime is tested against: the private one scripts/test.sh starts, else AEGIS's. */
export function testDockerSocket(env: NodeJS.ProcessEnv = process.env): string {
  const url = env['AEGIS_TEST_DOCKER_HOST'] ?? env['AEGIS_DOCKER_HOST'] ?? 'unix:///var/run/docker.sock';
  return url.replace(/^unix:\/\//, '');
}

function dockerSkipReason(): string | undefined {
  if (process.platform !== 'linux')
    return `the docker runtime is tested on Linux only (this is ${process.platform})`;
  if (process.getuid?.() !== 0)
    return 'needs root: containers run as the aegis-sandbox uid, egress enters their netns';
  if (!resolveSandboxUser().dedicated)
    return 'no dedicated sandbox uid (create aegis-sandbox: npm run setup)';
  const socket = testDockerSocket();
  // The Engine API's own ping, synchronously (skip reasons are decided before the suite is declared).
  const ping = spawnSync('curl', ['-sf', '--max-time', '5', '--unix-socket', socket, 'http://docker/_ping'], {
    stdio: 'ignore',
  });
  if (ping.status !== 0) {
    return `no Docker Engine answers on ${socket}: start one with \`bash scripts/test-dockerd.sh start\` and export AEGIS_TEST_DOCKER_HOST=$(bash scripts/test-dockerd.sh url) (npm test does both)`;
  }
  return undefined;
}

function gvisorSkipReason(): string | undefined {
  if (process.platform !== 'linux') return `gVisor needs Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'needs root: runsc creates the sandbox namespaces and cgroups itself';
  try {
    execFileSync('runsc', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'runsc is not installed (npm run setup -- --runtimes gvisor; Debian package runsc)';
  }
  if (!existsSync('/usr/bin/python3')) return '/usr/bin/python3 is missing (Debian: apt-get install python3)';
  if (detectCgroupLayout().mode === 'none')
    return 'no usable cgroup memory/pids/cpu controllers on this host';
  return undefined;
}

export const CONFORMANCE_RUNTIMES: readonly RuntimeUnderTest[] = [
  {
    name: 'sandbox',
    pidsLimit: 'refuses-fork',
    skipReason: sandboxSkipReason,
    create: (options) => new SandboxRuntime(options),
  },
  {
    name: 'docker',
    pidsLimit: 'refuses-fork',
    skipReason: dockerSkipReason,
    create: ({ identity, scratchRoot }) =>
      new DockerRuntime({
        identity,
        scratchRoot,
        engine: new DockerEngine({ socketPath: testDockerSocket() }),
      }),
  },
  {
    name: 'gvisor',
    pidsLimit: 'ends-instance',
    skipReason: gvisorSkipReason,
    create: ({ identity, scratchRoot, cgroupParent }) =>
      new GvisorRuntime({ identity, scratchRoot, cgroupParent: `${cgroupParent}-gvisor` }),
  },
];

/** Runtimes whose absence fails the suite instead of skipping it. */
export function requiredRuntimes(env: NodeJS.ProcessEnv = process.env): ReadonlySet<string> {
  if (env['CI'] === 'true') return new Set(CONFORMANCE_RUNTIMES.map((r) => r.name));
  return new Set(
    (env['AEGIS_REQUIRE_RUNTIMES'] ?? '')
      .split(',')
      .map((name) => name.trim())
      .filter(Boolean),
  );
}

/** Each runtime with the reason it is skipped (undefined: it runs). A required runtime is never skipped. */
export function conformanceRuntimes(): {
  runtime: RuntimeUnderTest;
  skip: string | undefined;
  missing: string | undefined;
}[] {
  const required = requiredRuntimes();
  for (const name of required) {
    if (!CONFORMANCE_RUNTIMES.some((r) => r.name === name)) {
      throw new Error(
        `AEGIS_REQUIRE_RUNTIMES names ${name}, which has no entry in test/conformance/runtimes.ts`,
      );
    }
  }
  return CONFORMANCE_RUNTIMES.map((runtime) => {
    const reason = runtime.skipReason();
    if (reason === undefined) return { runtime, skip: undefined, missing: undefined };
    if (required.has(runtime.name)) return { runtime, skip: undefined, missing: reason };
    const loud = `SKIPPED: the ${runtime.name} runtime cannot run on this host — ${reason}`;
    process.stderr.write(`# ${loud}\n`);
    return { runtime, skip: loud, missing: undefined };
  });
}
