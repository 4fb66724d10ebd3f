/**
 * The compiled form of a manifest: defaults applied, units normalised, paths absolute. Runtimes and use-cases only
 * ever see this; raw YAML never travels past the loader.
 */
import { AegisError, type Problem } from '../errors.ts';
import { isAbsolute, normalize, resolve } from '../paths.ts';
import { compileNetworkPolicy, type NetworkPolicy } from '../policy/network-rules.ts';
import { compileSecretBindings, type SecretBinding } from '../secrets/secret-ref.ts';
import { compileToolGrants, type ToolGrantSpec } from '../tools.ts';
import { parseCpu, parseDuration, parseSize } from '../units.ts';
import type { JsonSchemaObject } from './input-schema.ts';
import type { AgentManifest, Isolation, Language, MountEntry, Validator } from './schema.ts';

export interface Limits {
  /** CPU quota in millicores (1000 = one full core). @default 1000 */
  readonly cpuMillis: number;
  /** Memory + swap cap in bytes; /workspace (tmpfs) counts against it. @default 256Mi */
  readonly memoryBytes: number;
  /** Max tasks (processes and threads). @default 64 */
  readonly pids: number;
  /** Size cap of /workspace in bytes. @default 64Mi */
  readonly diskBytes: number;
  /** Wall-clock limit of one execution. @default 30s */
  readonly timeoutMs: number;
}

export const DEFAULT_LIMITS: Limits = {
  cpuMillis: 1000,
  memoryBytes: 256 * 1024 ** 2,
  pids: 64,
  diskBytes: 64 * 1024 ** 2,
  timeoutMs: 30_000,
};

export interface MountSpec {
  /** Absolute host path, as written (symlinks are resolved by the runtime before mounting). */
  readonly source: string;
  /** Absolute path inside the sandbox. */
  readonly target: string;
  readonly writable: boolean;
  /** JSON path of the manifest entry, for error messages. */
  readonly manifestPath: string;
}

export interface AgentRuntimeSpec {
  readonly language: Language | undefined;
  /** Relative to the agent directory (mounted at /agent). */
  readonly entrypoint: string | undefined;
  readonly command: readonly string[] | undefined;
  /** `spec.runtime.image`: an image in the local engine (docker); undefined: the default rootfs. */
  readonly image?: string | undefined;
}

export interface CompiledAgent {
  readonly name: string;
  readonly version: string;
  readonly description: string | undefined;
  readonly labels: Readonly<Record<string, string>>;
  readonly isolation: Isolation;
  readonly runtime: AgentRuntimeSpec;
  /** Absolute host directory holding the agent's code; appears read-only at /agent. */
  readonly agentDir: string;
  /**
   * Egress: the rules as written, and compiled. An empty `allow` means no network at all (only the sandbox's own
   * `lo`); otherwise the runtime routes every connection through the egress proxy, which enforces `policy`.
   */
  readonly network: {
    readonly allow: readonly string[];
    readonly deny: readonly string[];
    readonly policy: NetworkPolicy;
    /** `spec.security.network.expose`: a live sandbox's ports reachable through the server. @default none */
    readonly expose?: readonly number[];
  };
  readonly mounts: readonly MountSpec[];
  readonly limits: Limits;
  readonly env: Readonly<Record<string, string>>;
  /** `spec.secrets`, hosts parsed: which env variable gets which secret's placeholder, and where it may go. */
  readonly secrets: readonly SecretBinding[];
  /** `spec.scaling`: how a server keeps the agent ready. */
  readonly scaling: ScalingSpec;
  /** `spec.placement`: labels a node must carry to run the agent (a cluster; `aegis run` ignores it). @default {} */
  readonly placement?: { readonly labels: Readonly<Record<string, string>> };
  /** `spec.llm`: model aliases and budget through the LLM gateway; null when the agent may not call models. */
  readonly llm: LlmGrantSpec | null;
  /** `spec.tools`: the tools granted, with their constraints (domain/tools.ts). @default none */
  readonly tools?: readonly ToolGrantSpec[];
  /** `spec.input`: JSON Schema every execution input must satisfy; null: any input. */
  readonly input?: JsonSchemaObject | null;
  /** `spec.task` + `spec.execution`: a declarative agent, run by the loop (app/agent-loop.ts); absent: a code agent. */
  readonly task?: DeclarativeSpec;
  /**
   * A code agent's `spec.execution.validation`: checked once against its output after it succeeded (a failure ends
   * it `failed`, reason `validation: …`). Absent or empty: none. Declarative agents keep theirs in `task`.
   */
  readonly validation?: readonly Validator[];
}

/** A declarative agent's task and loop settings (docs/adr/0088-declarative-agent-loop.md). */
export interface DeclarativeSpec {
  readonly instruction: string;
  /** The first user message; `{{input}}` is replaced by the input. */
  readonly promptTemplate: string;
  /** The model alias the loop calls (the first of spec.llm.models unless set). */
  readonly model: string;
  readonly mode: 'one-shot' | 'iterative';
  /** Answers tried; 1 in one-shot mode. */
  readonly maxIterations: number;
  /** Model turns per iteration. */
  readonly maxToolCalls: number;
  readonly validation: readonly Validator[];
}

export interface LlmBudgetSpec {
  /** Input + output tokens; null: unlimited. */
  readonly tokens: number | null;
  readonly calls: number | null;
  readonly usd: number | null;
}

export interface LlmGrantSpec {
  readonly models: readonly string[];
  readonly budget: LlmBudgetSpec;
}

export interface ScalingSpec {
  /** Warm sandboxes to keep per deployed revision. @default 0 */
  readonly warm: number;
  /** Executions of this agent at once on a server; null: only the server's limit. */
  readonly maxConcurrent: number | null;
  /** Pool scales to zero after this long without an execution. @default 5 minutes */
  readonly idleTimeoutMs: number;
  /** Queue the execution again when its node dies mid-run (ADR 0101). @default false */
  readonly retryOnNodeLoss?: boolean;
}

export const DEFAULT_IDLE_TIMEOUT_MS = 5 * 60_000;

/** Paths inside the sandbox that AEGIS owns; a mount may not land on or under them. */
export const RESERVED_TARGETS = [
  '/agent',
  '/workspace',
  '/run/aegis',
  '/proc',
  '/dev',
  '/sys',
  '/usr',
  '/etc',
];
const RESERVED_EXACT = ['/', '/tmp', '/run', '/bin', '/lib', '/lib64', '/sbin'];

/**
 * Variables AEGIS sets itself; `spec.env` may not override them. The proxy variables point clients at the egress
 * proxy (NO_PROXY stays settable: an agent may exempt its own loopback services).
 */
export const RESERVED_ENV =
  /^(AEGIS_.*|PATH|HOME|LD_PRELOAD|LD_LIBRARY_PATH|LD_AUDIT|HTTPS?_PROXY|https?_proxy|ALL_PROXY|all_proxy|NODE_USE_ENV_PROXY)$/;

function unwrap(result: { ok: true; value: number } | { ok: false; error: string }): number {
  if (!result.ok) throw new Error(result.error); // unreachable: the schema already validated the value
  return result.value;
}

/**
 * Applies defaults and normalises units. `manifestDir` is the absolute directory holding agent.yaml: the agent
 * directory and relative mount sources are resolved against it. Throws MANIFEST_INVALID with JSON paths for rules
 * the schema cannot express.
 */
export function compileManifest(manifest: AgentManifest, manifestDir: string): CompiledAgent {
  const problems: Problem[] = [];
  const { spec } = manifest;
  const resources = spec.security.resources;
  const limits: Limits = {
    cpuMillis: resources.cpu === undefined ? DEFAULT_LIMITS.cpuMillis : unwrap(parseCpu(resources.cpu)),
    memoryBytes:
      resources.memory === undefined ? DEFAULT_LIMITS.memoryBytes : unwrap(parseSize(resources.memory)),
    pids: resources.pids ?? DEFAULT_LIMITS.pids,
    diskBytes: resources.disk === undefined ? DEFAULT_LIMITS.diskBytes : unwrap(parseSize(resources.disk)),
    timeoutMs:
      resources.timeout === undefined ? DEFAULT_LIMITS.timeoutMs : unwrap(parseDuration(resources.timeout)),
  };
  if (limits.memoryBytes < 8 * 1024 ** 2) {
    problems.push({
      path: 'spec.security.resources.memory',
      message: 'memory below 8Mi cannot start an interpreter',
      hint: 'use at least 32Mi',
    });
  }
  if (limits.diskBytes < 1024 ** 2) {
    problems.push({ path: 'spec.security.resources.disk', message: 'disk must be at least 1Mi' });
  }

  const mounts: MountSpec[] = [];
  const seenTargets = new Map<string, string>();
  const addMounts = (entries: readonly MountEntry[], writable: boolean, key: 'read' | 'write') => {
    entries.forEach((entry, index) => {
      const path = `spec.security.filesystem.${key}[${index}]`;
      let source: string;
      let target: string;
      if (typeof entry === 'string') {
        if (!isAbsolute(entry)) {
          problems.push({
            path,
            message: `"${entry}" is not an absolute path`,
            hint: `write an absolute host path, or {source: ${entry}, target: /mnt/${entry.replace(/^\.\/?/, '')}} to mount a path relative to agent.yaml`,
          });
          return;
        }
        source = normalize(entry);
        target = source;
      } else {
        source = resolve(manifestDir, entry.source);
        if (!isAbsolute(entry.target)) {
          problems.push({
            path: `${path}.target`,
            message: `target "${entry.target}" must be an absolute path`,
          });
          return;
        }
        target = normalize(entry.target);
      }
      const reserved = RESERVED_TARGETS.find((r) => target === r || target.startsWith(`${r}/`));
      if (reserved !== undefined || RESERVED_EXACT.includes(target)) {
        problems.push({
          path,
          message: `cannot mount over ${target}: ${reserved ?? target} is managed by AEGIS`,
          hint: 'choose a target such as /mnt/<name> or /data/<name>',
        });
        return;
      }
      const previous = seenTargets.get(target);
      if (previous !== undefined) {
        problems.push({ path, message: `target ${target} is already mounted by ${previous}` });
        return;
      }
      seenTargets.set(target, path);
      mounts.push({ source, target, writable, manifestPath: path });
    });
  };
  addMounts(spec.security.filesystem.read, false, 'read');
  addMounts(spec.security.filesystem.write, true, 'write');

  for (const name of Object.keys(spec.env)) {
    if (RESERVED_ENV.test(name)) {
      problems.push({
        path: `spec.env.${name}`,
        message: `${name} is set by AEGIS and cannot be overridden`,
        hint: 'rename the variable',
      });
    }
  }

  const network = compileNetworkPolicy(spec.security.network);
  if (!network.ok) problems.push(...network.problems);

  spec.secrets.forEach((secret, index) => {
    if (RESERVED_ENV.test(secret.env)) {
      problems.push({
        path: `spec.secrets[${index}].env`,
        message: `${secret.env} is set by AEGIS and cannot hold a secret`,
        hint: 'pick another variable name',
      });
    }
    if (Object.hasOwn(spec.env, secret.env)) {
      problems.push({
        path: `spec.secrets[${index}].env`,
        message: `${secret.env} is also set in spec.env; a variable holds either a plain value or a secret`,
        hint: `remove ${secret.env} from spec.env`,
      });
    }
  });
  const secrets = compileSecretBindings(spec.secrets);
  if (!secrets.ok) problems.push(...secrets.problems);

  if (problems.length > 0) {
    throw new AegisError('MANIFEST_INVALID', `agent manifest has ${problems.length} problem(s)`, {
      problems,
    });
  }

  return {
    name: manifest.metadata.name,
    version: manifest.metadata.version,
    description: manifest.metadata.description,
    labels: manifest.metadata.labels,
    isolation: spec.isolation,
    runtime: {
      language: spec.runtime.language,
      entrypoint: spec.runtime.entrypoint,
      command: spec.runtime.command,
      ...(spec.runtime.image === undefined ? {} : { image: spec.runtime.image }),
    },
    agentDir: normalize(manifestDir),
    network: {
      allow: spec.security.network.allow,
      deny: spec.security.network.deny,
      // Checked above (and already by the schema): only reached when every rule parsed.
      policy: network.ok ? network.policy : { allow: [], deny: [] },
      ...(spec.security.network.expose?.length ? { expose: spec.security.network.expose } : {}),
    },
    mounts,
    limits,
    env: spec.env,
    secrets: secrets.ok ? secrets.bindings : [],
    scaling: {
      warm: spec.scaling.warm,
      maxConcurrent: spec.scaling.maxConcurrent ?? null,
      idleTimeoutMs:
        spec.scaling.idleTimeout === undefined
          ? DEFAULT_IDLE_TIMEOUT_MS
          : unwrap(parseDuration(spec.scaling.idleTimeout)),
      ...(spec.scaling.retryOnNodeLoss ? { retryOnNodeLoss: true } : {}),
    },
    ...(Object.keys(spec.placement.labels).length > 0
      ? { placement: { labels: spec.placement.labels } }
      : {}),
    ...(spec.tools.length > 0 ? { tools: compileToolGrants(spec.tools) } : {}),
    ...(spec.task === undefined ? {} : { task: compileTask(spec) }),
    ...(spec.task === undefined && spec.execution?.validation.length
      ? { validation: spec.execution.validation }
      : {}),
    llm:
      spec.llm === undefined
        ? null
        : {
            models: [...new Set(spec.llm.models)],
            budget: {
              tokens: spec.llm.budget.tokens ?? null,
              calls: spec.llm.budget.calls ?? null,
              usd: spec.llm.budget.usd ?? null,
            },
          },
    input: spec.input ?? null,
  };
}

function compileTask(spec: AgentManifest['spec']): DeclarativeSpec {
  const task = spec.task as NonNullable<AgentManifest['spec']['task']>;
  const execution = spec.execution ?? {
    mode: 'one-shot',
    maxIterations: 5,
    maxToolCalls: 50,
    validation: [],
  };
  return {
    instruction: task.instruction,
    promptTemplate: task.promptTemplate,
    // The schema guarantees spec.llm with at least one model when spec.task is set.
    model: task.model ?? spec.llm?.models[0] ?? 'default',
    mode: execution.mode,
    maxIterations: execution.mode === 'one-shot' ? 1 : (execution.maxIterations ?? 5),
    maxToolCalls: execution.maxToolCalls ?? 50,
    validation: execution.validation,
  };
}
