/**
 * Shared harness of the adversarial containment suite: writes an agent (code + agent.yaml) into a temp dir, loads it
 * through the real manifest loader, runs it through `runAgent` with the real runtimes and SQLite store in a temp
 * AEGIS_HOME (composed by src/main.ts, exactly as the CLI does), and returns the record, the log lines, and what the
 * run left behind on the host (scratch dir, cgroup dirs) — which every run asserts is nothing.
 *
 * `new Harness({ isolation })` runs the agents on `sandbox` (default), `docker` or `gvisor`; `ADVERSARIAL_RUNTIMES`
 * lists the three with their skip reasons (those of test/conformance/runtimes.ts), for files that attack each.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { stringify } from 'yaml';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import { detectCgroupLayout } from '../../src/adapters/runtimes/sandbox/cgroups.ts';
import { resolveSandboxUser } from '../../src/adapters/runtimes/sandbox/host.ts';
import { runAgent } from '../../src/app/run-agent.ts';
import { type AegisError, isAegisError } from '../../src/domain/errors.ts';
import type { ExecutionRecord, LogStream } from '../../src/domain/execution.ts';
import { type LocalContext, openLocalContext } from '../../src/main.ts';
import { CONFORMANCE_RUNTIMES, requiredRuntimes, testDockerSocket } from '../conformance/runtimes.ts';
import { pollUntil as poll } from '../support/poll.ts';

export const SANDBOX_USER = resolveSandboxUser();
export const PYTHON = '/usr/bin/python3';
export const REPO_ROOT = join(import.meta.dirname, '..', '..');

/** Why this host cannot run the suite, or undefined when it can. Tests skip with this message. */
export function hostSkipReason(): string | undefined {
  // (the sandbox runtime's; adversarialRuntimes() gives every runtime's)
  if (process.platform !== 'linux') return `the sandbox runtime needs Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) {
    return 'needs root: the containment suite runs sandboxes as the dedicated aegis-sandbox uid (run as root)';
  }
  if (!SANDBOX_USER.dedicated) return 'no dedicated sandbox uid (create aegis-sandbox: npm run setup)';
  try {
    execFileSync('bwrap', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap)';
  }
  if (!existsSync(PYTHON)) return `${PYTHON} is missing (Debian: apt-get install python3)`;
  if (detectCgroupLayout().mode === 'none')
    return 'no usable cgroup memory/pids/cpu controllers on this host';
  return undefined;
}

/** Python prelude of every Python agent: `attempt()` records one escape attempt as JSON-able data. */
export const PY_PRELUDE = `
import errno, json, os, socket, sys

def attempt(fn, *args, **kwargs):
    """Runs one escape attempt; returns {ok, value} or {ok: False, errno, error}."""
    try:
        return {"ok": True, "value": fn(*args, **kwargs)}
    except socket.gaierror as e:
        return {"ok": False, "errno": "EAI", "error": str(e)}
    except OSError as e:
        name = errno.errorcode.get(e.errno) if isinstance(e.errno, int) else None
        return {"ok": False, "errno": name, "error": str(e)}
    except Exception as e:
        return {"ok": False, "errno": None, "error": f"{type(e).__name__}: {e}"}

def read_text(path, limit=65536):
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", "replace")

def write_text(path, text="pwned"):
    with open(path, "w") as f:
        f.write(text)
    return True

INPUT = json.load(open(os.environ["AEGIS_INPUT"]))

def report(value):
    print(json.dumps(value), flush=True)
`;

export interface MountGrant {
  readonly source: string;
  readonly target: string;
}

export interface AgentSpec {
  readonly name: string;
  readonly language?: 'python' | 'node' | 'bash';
  /** Source of the entrypoint (main.py / main.mjs / main.sh by language); Python gets PY_PRELUDE prepended. */
  readonly code?: string;
  readonly command?: readonly string[];
  /** Extra files written into the agent dir. */
  readonly files?: Readonly<Record<string, string>>;
  readonly env?: Readonly<Record<string, string>>;
  /** spec.secrets. */
  readonly secrets?: readonly {
    readonly name: string;
    readonly env: string;
    readonly hosts: readonly string[];
  }[];
  /** spec.security.network (default: no egress). */
  readonly network?: { readonly allow?: readonly string[]; readonly deny?: readonly string[] };
  readonly read?: readonly (string | MountGrant)[];
  readonly write?: readonly (string | MountGrant)[];
  readonly resources?: {
    readonly cpu?: string;
    readonly memory?: string;
    readonly pids?: number;
    readonly disk?: string;
    readonly timeout?: string;
  };
  readonly input?: unknown;
  readonly onLog?: (stream: LogStream, text: string) => void;
  readonly onStarted?: (executionId: string) => void;
  readonly signal?: AbortSignal;
}

export interface RunResult {
  readonly record: ExecutionRecord;
  readonly executionId: string;
  readonly logs: readonly { stream: LogStream; text: string }[];
  /** Host dirs of the execution that existed while it ran (scratch dir, cgroup dirs). */
  readonly presentWhileRunning: readonly string[];
  /** Those of them still present after runAgent returned (must be none). */
  readonly leftovers: readonly string[];
  /** The agent's JSON report (its last stdout line). */
  readonly report: Report;
}

/** An agent's JSON report, asserted field by field. */
// biome-ignore lint/suspicious/noExplicitAny: the shape is whatever the agent printed; tests assert on it
export type Report = Record<string, any>;

/** One escape attempt as the Python prelude's `attempt()` records it. */
export interface Outcome {
  readonly ok: boolean;
  readonly value?: unknown;
  readonly errno?: string | null;
  readonly error?: string;
}

/** The attempts of a report section, as [what, outcome] pairs. */
export function outcomes(section: unknown): [string, Outcome][] {
  assert.ok(section && typeof section === 'object', `not a report section: ${JSON.stringify(section)}`);
  return Object.entries(section as Record<string, Outcome>);
}

const ENTRYPOINTS = { python: 'main.py', node: 'main.mjs', bash: 'main.sh' } as const;

/** Every cgroup directory named for the execution: `<hierarchy>/**\/aegis/<execution-id>`. */
export function cgroupDirsOf(executionId: string, root = '/sys/fs/cgroup'): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    let entries: string[];
    try {
      entries = readdirSync(dir, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return;
    }
    for (const name of entries) {
      const child = join(dir, name);
      // One start's groups are named `<id>.<8 hex>` (unique per start); `<id>` alone by older versions.
      if (
        name === executionId ||
        (/^\.[0-9a-f]{8}$/.test(name.slice(executionId.length)) && name.startsWith(executionId))
      )
        found.push(child);
      else if (depth < 8) walk(child, depth + 1);
    }
  };
  walk(root, 0);
  return found;
}

export interface HostProcess {
  readonly pid: number;
  readonly uid: number;
  readonly cmdline: string;
  readonly cgroup: string;
}

/** Host processes (as seen from the host /proc) matching `filter`. */
export function hostProcesses(filter: (p: HostProcess) => boolean): HostProcess[] {
  const out: HostProcess[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const status = readFileSync(`/proc/${name}/status`, 'utf8');
      const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' ');
      const cgroup = readFileSync(`/proc/${name}/cgroup`, 'utf8');
      const p = { pid: Number(name), uid, cmdline, cgroup };
      if (filter(p)) out.push(p);
    } catch {
      // exited while we looked
    }
  }
  return out;
}

/** A cgroup named for the execution: `<id>.<8 hex>` (one start's), or `<id>` (versions before per-start names). */
function isGroupOf(name: string, executionId: string): boolean {
  return name.startsWith(executionId) && /^(\.[0-9a-f]{8})?$/.test(name.slice(executionId.length));
}

/** Processes that belong to an execution: in one of its cgroups, or sandbox-uid processes carrying its marker. */
export function processesOfExecution(executionId: string, marker?: string): HostProcess[] {
  return hostProcesses(
    (p) =>
      p.cgroup.split('\n').some((line) => isGroupOf(line.slice(line.lastIndexOf('/') + 1), executionId)) ||
      (marker !== undefined && p.uid === SANDBOX_USER.uid && p.cmdline.includes(marker)),
  );
}

/** Sandbox state settles fast: poll every 20 ms, give up after 10 s. */
export const pollUntil = <T>(
  what: string,
  fn: () => T | undefined | false,
  deadlineMs = 10_000,
): Promise<T> => poll(what, fn, deadlineMs, 20);

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The runtimes the containment files attack, each with why this host cannot run it (undefined: it can). */
export type AdversarialRuntime = 'sandbox' | 'docker' | 'gvisor';

/**
 * `[isolation, skip]` per runtime, for `describe(..., { skip })`: the reason a runtime cannot run here, printed
 * loudly, or false. Like the conformance suite, a runtime that is required (CI=true, AEGIS_REQUIRE_RUNTIMES) is
 * never skipped: its cases run and fail.
 */
export function adversarialRuntimes(
  only: readonly AdversarialRuntime[] = ['sandbox', 'docker', 'gvisor'],
): [AdversarialRuntime, string | false][] {
  const required = requiredRuntimes();
  return only.map((name) => {
    const entry = CONFORMANCE_RUNTIMES.find((r) => r.name === name)!;
    const reason = entry.skipReason();
    if (reason === undefined || required.has(name)) return [name, false];
    const loud = `SKIPPED: the ${name} runtime cannot run on this host — ${reason}`;
    process.stderr.write(`# ${loud}\n`);
    return [name, loud];
  });
}

/**
 * `it` on the sandbox, nothing elsewhere: for cases about bubblewrap's own mechanics, or kept to the sandbox to
 * hold the suite's time (each file runs its core cases on every runtime, the rest on the sandbox).
 */
export function sandboxOnly(isolation: AdversarialRuntime): typeof it {
  return itOn(isolation, 'sandbox');
}

/** `it` when `isolation` is one of `runtimes`, nothing otherwise (the file says why the others differ). */
export function itOn(isolation: AdversarialRuntime, ...runtimes: AdversarialRuntime[]): typeof it {
  return runtimes.includes(isolation) ? it : ((() => {}) as unknown as typeof it);
}

export class Harness {
  readonly home: string;
  readonly isolation: AdversarialRuntime;
  readonly ctx: LocalContext;
  readonly keyDir: string;
  private readonly temps: string[] = [];

  constructor(options: { readonly isolation?: AdversarialRuntime } = {}) {
    this.isolation = options.isolation ?? 'sandbox';
    // The docker runtime talks to the Engine the tests use (scripts/test.sh starts a private one).
    if (this.isolation === 'docker') process.env['AEGIS_DOCKER_HOST'] = `unix://${testDockerSocket()}`;
    this.home = mkdtempSync(join(tmpdir(), 'aegis-adv-home-'));
    this.temps.push(this.home);
    // The secrets key lives in its own 0700 temp dir (never /etc/aegis or ~/.config).
    this.keyDir = mkdtempSync(join(tmpdir(), 'aegis-adv-key-'));
    this.temps.push(this.keyDir);
    this.ctx = openLocalContext({ home: this.home, secretsKeyFile: join(this.keyDir, 'secrets.key') });
  }

  /** A temp dir removed by close(); mode 0755 so the sandbox uid can reach what is granted inside it. */
  tempDir(prefix: string): string {
    const dir = mkdtempSync(join(tmpdir(), `aegis-adv-${prefix}-`));
    chmodSync(dir, 0o755);
    this.temps.push(dir);
    return dir;
  }

  /** Writes the agent dir and agent.yaml; returns the manifest path. */
  writeAgent(spec: AgentSpec): string {
    const dir = this.tempDir(`agent-${spec.name}`);
    const language = spec.language ?? 'python';
    const runtime: Record<string, unknown> =
      spec.command !== undefined
        ? { command: [...spec.command] }
        : { language, entrypoint: ENTRYPOINTS[language] };
    if (spec.code !== undefined) {
      const code = language === 'python' ? `${PY_PRELUDE}\n${spec.code}` : spec.code;
      writeFileSync(join(dir, ENTRYPOINTS[language]), code);
    }
    for (const [name, content] of Object.entries(spec.files ?? {})) {
      mkdirSync(join(dir, name, '..'), { recursive: true });
      writeFileSync(join(dir, name), content);
    }
    const manifest = {
      apiVersion: 'aegis.dev/v1',
      kind: 'Agent',
      metadata: { name: spec.name, version: '1.0.0' },
      spec: {
        runtime,
        isolation: this.isolation,
        security: {
          network: { allow: [...(spec.network?.allow ?? [])], deny: [...(spec.network?.deny ?? [])] },
          filesystem: { read: spec.read ?? [], write: spec.write ?? [] },
          resources: { timeout: '20s', ...spec.resources },
        },
        env: spec.env ?? {},
        ...(spec.secrets ? { secrets: spec.secrets } : {}),
      },
    };
    const file = join(dir, 'agent.yaml');
    writeFileSync(file, stringify(manifest));
    return file;
  }

  /** Where the runtime keeps its per-execution scratch dirs (as composed by src/main.ts). */
  scratchParent(): string {
    const root = this.ctx.sandbox.scratchRoot;
    if (this.isolation === 'sandbox') return join(root, 'sandboxes');
    if (this.isolation === 'gvisor') return join(root, 'gvisor');
    return (this.ctx.runtime.runtime('docker') as unknown as { scratchRoot: string }).scratchRoot;
  }

  /**
   * The execution's scratch dirs that exist now, one per start (sandbox, gvisor: `<id>.<8 hex>`; docker:
   * `<id>.<8 hex>-XXXXXX`; `<id>` and `<id>-XXXXXX` from versions before per-start names).
   */
  scratchDirsOf(executionId: string): string[] {
    const parent = this.scratchParent();
    try {
      return readdirSync(parent)
        .filter(
          (name) =>
            name.startsWith(executionId) &&
            /^(\.[0-9a-f]{8})?(-[A-Za-z0-9]{6})?$/.test(name.slice(executionId.length)),
        )
        .map((name) => join(parent, name));
    } catch {
      return [];
    }
  }

  /** Loads and runs the agent; asserts nothing of the execution is left on the host afterwards. */
  async run(spec: AgentSpec): Promise<RunResult> {
    const { agent } = await loadManifestFile(this.writeAgent(spec));
    const logs: { stream: LogStream; text: string }[] = [];
    const presentWhileRunning: string[] = [];
    let executionId = '';
    const record = await runAgent(this.ctx, {
      agent,
      input: spec.input ?? null,
      ...(spec.signal ? { signal: spec.signal } : {}),
      onCreated: (id) => {
        executionId = id;
      },
      onStarted: (id) => {
        const scratch = this.scratchDirsOf(id)[0] ?? join(this.scratchParent(), id);
        if (existsSync(scratch)) presentWhileRunning.push(scratch);
        presentWhileRunning.push(...cgroupDirsOf(id));
        // What the runtime itself recorded for its reaper must be gone afterwards too.
        try {
          const state = JSON.parse(readFileSync(join(scratch, 'state.json'), 'utf8')) as {
            cgroupPaths: string[];
            outputDir?: string;
          };
          presentWhileRunning.push(...state.cgroupPaths, ...(state.outputDir ? [state.outputDir] : []));
        } catch {
          // asserted below: the scratch dir must exist while running
        }
        spec.onStarted?.(id);
      },
      onLog: (stream, text) => {
        logs.push({ stream, text });
        spec.onLog?.(stream, text);
      },
    });
    const leftovers = [
      ...presentWhileRunning,
      ...this.scratchDirsOf(executionId),
      ...cgroupDirsOf(executionId),
    ].filter((path, i, all) => all.indexOf(path) === i && existsSync(path));
    // Cleanup (issue item 13) is checked on every run: the scratch dir and a cgroup per hierarchy existed while
    // the agent ran (so the check below is not vacuous), and none of them outlives the run.
    assert.ok(
      presentWhileRunning.some((p) => p.startsWith(this.scratchParent())),
      `scratch dir of ${executionId} not found while running`,
    );
    assert.ok(
      presentWhileRunning.some((p) => p.startsWith('/sys/fs/cgroup/')),
      `no cgroup of ${executionId} found while running: ${presentWhileRunning.join(', ')}`,
    );
    assert.deepEqual(leftovers, [], `execution ${executionId} left host state behind`);
    const report = typeof record.output === 'object' && record.output !== null ? record.output : {};
    return {
      record,
      executionId,
      logs,
      presentWhileRunning,
      leftovers,
      report: report as Report,
    };
  }

  /**
   * Runs an agent the runtime must refuse before anything starts; returns the error and the execution record,
   * after checking that nothing was started: no onStarted, no log line, no scratch dir, no cgroup.
   */
  async refuse(spec: AgentSpec): Promise<{ error: AegisError; record: ExecutionRecord }> {
    const { agent } = await loadManifestFile(this.writeAgent(spec));
    let executionId = '';
    let started = false;
    const logs: string[] = [];
    let caught: unknown;
    try {
      await runAgent(this.ctx, {
        agent,
        onCreated: (id) => {
          executionId = id;
        },
        onStarted: () => {
          started = true;
        },
        onLog: (_stream, text) => logs.push(text),
      });
    } catch (error) {
      caught = error;
    }
    assert.ok(isAegisError(caught), `expected an AegisError, got ${String(caught)}`);
    assert.equal(started, false, 'the sandbox must not start');
    assert.deepEqual(logs, []);
    assert.deepEqual(this.scratchDirsOf(executionId), []);
    assert.deepEqual(cgroupDirsOf(executionId), []);
    const record = await this.ctx.store.getExecution(executionId);
    assert.ok(record, `execution ${executionId} was not recorded`);
    return { error: caught, record };
  }

  /** Text of the agent's stdout+stderr, for assertion messages. */
  static transcript(result: RunResult): string {
    return result.logs.map((l) => `[${l.stream}] ${l.text}`).join('\n');
  }

  async close(): Promise<void> {
    await this.ctx.close(); // signs the audit head and closes the store
    for (const dir of this.temps) rmSync(dir, { recursive: true, force: true });
  }
}
