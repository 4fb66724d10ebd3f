/**
 * The runtimes the conformance suite runs against. One entry per runtime: how to tell whether this host can run it,
 * and how to make one. Adding a runtime is one line in CONFORMANCE_RUNTIMES (docker and gvisor join at merge).
 *
 * A runtime this host cannot run is skipped with a loud reason — except when `CI=true` (all of them are required) or
 * `AEGIS_REQUIRE_RUNTIMES=docker,gvisor` names it, where its absence is a failure.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { detectCgroupLayout } from '../../src/adapters/runtimes/sandbox/cgroups.ts';
import { resolveSandboxUser } from '../../src/adapters/runtimes/sandbox/host.ts';
import { SandboxRuntime } from '../../src/adapters/runtimes/sandbox/runtime.ts';
import type { ProcessIdentity, Runtime } from '../../src/app/ports.ts';
import type { RuntimeName } from '../../src/domain/runtime/capabilities.ts';

export interface RuntimeUnderTest {
  readonly name: RuntimeName;
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

export const CONFORMANCE_RUNTIMES: readonly RuntimeUnderTest[] = [
  { name: 'sandbox', skipReason: sandboxSkipReason, create: (options) => new SandboxRuntime(options) },
  // { name: 'docker', skipReason: dockerSkipReason, create: (options) => new DockerRuntime(options) },
  // { name: 'gvisor', skipReason: gvisorSkipReason, create: (options) => new GvisorRuntime(options) },
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
