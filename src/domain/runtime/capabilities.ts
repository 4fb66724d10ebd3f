/**
 * What each runtime can enforce, as data, and the pure checks built on it: which runtime `isolation: auto` picks,
 * and whether a runtime can run a given agent at all. A runtime that cannot enforce a rule the manifest asks for
 * refuses the manifest (naming the rule and the runtimes that can) — it never runs the agent with the rule weaker.
 * docs/RUNTIMES.md is the prose view of RUNTIME_CAPABILITIES (test/docs.test.ts keeps them in step).
 */
import { AegisError } from '../errors.ts';
import type { CompiledAgent } from '../manifest/compiled.ts';

/** The runtimes AEGIS knows of (manifest `spec.isolation` values other than `auto`). */
export const RUNTIME_NAMES = ['sandbox', 'gvisor', 'docker', 'firecracker'] as const;
export type RuntimeName = (typeof RUNTIME_NAMES)[number];

/**
 * Strongest boundary first: what `isolation: auto` tries, in order (docs/adr/0030-isolation-auto.md).
 * firecracker: its own guest kernel behind KVM. gvisor: a user-space kernel between the agent and the host's.
 * sandbox: the host kernel, namespaces + seccomp allow-list + a dedicated uid, no daemon. docker: the host kernel
 * behind a root daemon with a large API (the development runtime).
 */
export const RUNTIMES_BY_STRENGTH: readonly RuntimeName[] = ['firecracker', 'gvisor', 'sandbox', 'docker'];

/** Every rule a manifest can ask a runtime to enforce, named as docs/RUNTIMES.md and error messages name it. */
export const RULES = [
  'resources.memory',
  'resources.cpu',
  'resources.pids',
  'resources.disk',
  'resources.timeout',
  'network.none',
  'network.allow',
  'filesystem.read',
  'filesystem.write',
  'secrets.placeholders',
  'scaling.warm',
  'llm.gateway',
  'runtime.image',
] as const;
export type Rule = (typeof RULES)[number];

/** Where each rule comes from in agent.yaml (for messages). */
export const RULE_MANIFEST_PATH: Readonly<Record<Rule, string>> = {
  'resources.memory': 'spec.security.resources.memory',
  'resources.cpu': 'spec.security.resources.cpu',
  'resources.pids': 'spec.security.resources.pids',
  'resources.disk': 'spec.security.resources.disk',
  'resources.timeout': 'spec.security.resources.timeout',
  'network.none': 'spec.security.network',
  'network.allow': 'spec.security.network.allow',
  'filesystem.read': 'spec.security.filesystem.read',
  'filesystem.write': 'spec.security.filesystem.write',
  'secrets.placeholders': 'spec.secrets',
  'scaling.warm': 'spec.scaling.warm',
  'llm.gateway': 'spec.llm',
  'runtime.image': 'spec.runtime.image',
};

/** What the capability checks read of an agent. */
export type RuleAgent = Pick<CompiledAgent, 'network' | 'mounts' | 'secrets' | 'scaling'> & {
  readonly llm?: CompiledAgent['llm'];
  readonly runtime?: Pick<CompiledAgent['runtime'], 'image'>;
};

/** How a runtime enforces a rule, or `null` when it cannot (then a manifest needing it is refused). */
export type Enforcement = string | null;

/**
 * The capability table: what each runtime's code does, checked by the conformance suite (test/conformance/) on
 * all three; `firecracker` is not built yet (docs/adr/0031-microvm-runtime-port.md) and enforces nothing.
 */
export const RUNTIME_CAPABILITIES: Readonly<Record<RuntimeName, Readonly<Record<Rule, Enforcement>>>> = {
  sandbox: {
    'resources.memory': 'cgroup memory.max (v2) / memory.limit_in_bytes (v1), swap off; OOM kills counted',
    'resources.cpu': 'cgroup cpu.max / cfs_quota_us',
    'resources.pids': 'cgroup pids.max; refusals counted',
    'resources.disk': 'size-capped tmpfs for /workspace and /tmp',
    'resources.timeout': 'SIGKILL to the pid-namespace init, then cgroup kill',
    'network.none': 'empty network namespace (lo only)',
    'network.allow': 'egress proxy listening inside the netns; every connection decided and audited',
    'filesystem.read': 'read-only bind of the descriptor opened by a race-free walk',
    'filesystem.write': 'read-write bind of the descriptor opened by a race-free walk',
    'secrets.placeholders': 'placeholders in env; the egress proxy rewrites them toward bound hosts',
    'scaling.warm': 'bwrap blocked on --block-fd, or a prewarm shim waiting on a go socket',
    'llm.gateway':
      'in-sandbox API on 127.0.0.1:3129 inside the netns (per-execution token); SDKs mounted read-only',
    'runtime.image': null,
  },
  gvisor: {
    'resources.memory':
      'AEGIS cgroup around the whole sandbox (runsc --ignore-cgroups: sentry, gofer, stubs), swap off; OOM kills counted',
    'resources.cpu': 'CPU quota on that cgroup; throttling counted',
    'resources.pids':
      'host task budget on that cgroup (2 × pids + 160: sentry threads, ptrace stubs); crossing it ends the whole sandbox, reported as a pids hit — runsc 20221219 applies neither RLIMIT_NPROC nor OCI pids inside, so no single fork is refused',
    'resources.disk': 'size-capped tmpfs mounts in the OCI spec for /workspace and /tmp',
    'resources.timeout': 'cgroup kill of sentry, gofer and stubs on the wall-clock timer',
    'network.none': 'runsc --network=none (gVisor netstack, its own lo only)',
    'network.allow':
      'runsc --network=host inside an empty netns (unshare --net) holding only lo and the egress proxy listener; every connection decided and audited',
    'filesystem.read': 'OCI bind (gofer-mediated), ro, of the descriptor opened by a race-free walk',
    'filesystem.write': 'OCI bind (gofer-mediated), rw, of the descriptor opened by a race-free walk',
    'secrets.placeholders': 'same env placeholders and egress-proxy rewriting as sandbox',
    'scaling.warm':
      'a booted sandbox with an idle init (runsc create + start); the agent is runsc exec-ed on execute',
    'llm.gateway':
      'in-sandbox API on 127.0.0.1:3129 in a private netns the sandbox shares (runsc --network=host, even without network.allow; per-execution token); SDKs bound read-only',
    'runtime.image':
      'the image unpacked once into a read-only root (an OCI layout directory, or an image exported from the local Docker Engine): every blob digest checked, no-follow unpacking, setuid bits and devices dropped; AEGIS binds its mounts over it',
  },
  docker: {
    'resources.memory':
      'HostConfig.Memory = MemorySwap, and the same limit on the AEGIS parent cgroup; OOM kills from OOMKilled and that cgroup',
    'resources.cpu':
      'CPU quota on an AEGIS-owned parent cgroup (HostConfig.CgroupParent) the agent is moved into before it starts; throttling counted (NanoCpus, uncounted, on a systemd-driver daemon)',
    'resources.pids':
      'pids.max on that parent cgroup, where the agent forks; refusals counted (PidsLimit, uncounted, on a systemd-driver daemon)',
    'resources.disk': 'tmpfs /workspace and /tmp sized by disk; read-only root',
    'resources.timeout': 'container kill (SIGKILL) on the wall-clock timer',
    'network.none': "NetworkMode: none (lo only; an empty resolv.conf, AEGIS's /etc/hosts)",
    'network.allow': 'egress proxy listener inside the container netns; every connection decided and audited',
    'filesystem.read':
      'bind mount, ro, of the path opened by a race-free walk; the mounted object (dev, inode) checked before the agent starts',
    'filesystem.write':
      'bind mount, rw, of the path opened by a race-free walk; the mounted object (dev, inode) checked before the agent starts',
    'secrets.placeholders': 'same env placeholders and egress-proxy rewriting as sandbox',
    'scaling.warm':
      'a started container whose gate (sh reading its go line on stdin) holds the agent back; prewarm is the same thing',
    'llm.gateway':
      'in-sandbox API on 127.0.0.1:3129 inside the container netns (per-execution token); SDKs bound read-only',
    'runtime.image':
      'an image already in the local Docker Engine (aegis image build makes one from a rootfs directory), or an OCI layout directory unpacked and verified as for gvisor and imported once, tagged by its digest',
  },
  firecracker: Object.fromEntries(RULES.map((rule) => [rule, null])) as Record<Rule, Enforcement>,
};

/** The rules an agent needs enforced. Every agent has every limit and either no network or an allow-list. */
export function rulesRequiredBy(agent: RuleAgent): Rule[] {
  const rules: Rule[] = [
    'resources.memory',
    'resources.cpu',
    'resources.pids',
    'resources.disk',
    'resources.timeout',
    agent.network.allow.length > 0 ? 'network.allow' : 'network.none',
  ];
  if (agent.mounts.some((m) => !m.writable)) rules.push('filesystem.read');
  if (agent.mounts.some((m) => m.writable)) rules.push('filesystem.write');
  if (agent.secrets.length > 0) rules.push('secrets.placeholders');
  if (agent.scaling.warm > 0) rules.push('scaling.warm');
  if (agent.llm) rules.push('llm.gateway');
  if (agent.runtime?.image !== undefined) rules.push('runtime.image');
  return rules;
}

/** The rules `runtime` cannot enforce for this agent (empty: it can run it as written). */
export function unenforceableRules(runtime: RuntimeName, agent: RuleAgent): Rule[] {
  return rulesRequiredBy(agent).filter((rule) => RUNTIME_CAPABILITIES[runtime][rule] === null);
}

/** The runtimes that could enforce every rule in `rules` (by the table alone, available here or not). */
export function runtimesEnforcing(rules: readonly Rule[]): RuntimeName[] {
  return RUNTIMES_BY_STRENGTH.filter((name) =>
    rules.every((rule) => RUNTIME_CAPABILITIES[name][rule] !== null),
  );
}

/**
 * Throws LIMIT_UNENFORCEABLE when `runtime` cannot enforce a rule the agent asks for, naming the rules (with their
 * manifest paths) and the runtimes that can.
 */
export function assertEnforceable(runtime: RuntimeName, agent: RuleAgent): void {
  const missing = unenforceableRules(runtime, agent);
  if (missing.length === 0) return;
  const can = runtimesEnforcing(missing);
  throw new AegisError(
    'LIMIT_UNENFORCEABLE',
    `the ${runtime} runtime cannot enforce ${missing.map((r) => `${r} (${RULE_MANIFEST_PATH[r]})`).join(', ')}; it refuses to run the agent with them weaker`,
    {
      problems: missing.map((rule) => ({
        path: RULE_MANIFEST_PATH[rule],
        message: `not enforceable by ${runtime}`,
      })),
      details: { runtime, rules: missing, enforcedBy: can },
      hint:
        can.length > 0
          ? `use isolation: ${can.join(' or ')} (docs/RUNTIMES.md has the table)`
          : 'no runtime enforces this; drop the rule or see docs/RUNTIMES.md',
    },
  );
}

/** Availability of a runtime on this host, as a probe reports it. */
export interface RuntimeAvailability {
  readonly name: RuntimeName;
  readonly available: boolean;
  /** Why not (what is missing and how to get it), or how it is available. */
  readonly reason: string;
}

/**
 * The runtime an agent runs on: its `isolation` when that runtime is available here, or for `auto` the strongest
 * available runtime that can enforce every rule the agent needs. RUNTIME_UNAVAILABLE otherwise, naming
 * `aegis doctor` and the runtimes that are available.
 */
export function resolveIsolation(
  isolation: RuntimeName | 'auto',
  agent: RuleAgent,
  availability: readonly RuntimeAvailability[],
): RuntimeName {
  const available = RUNTIMES_BY_STRENGTH.filter((name) =>
    availability.some((a) => a.name === name && a.available),
  );
  const availableText = available.length > 0 ? available.join(', ') : 'none';
  if (isolation === 'auto') {
    const pick = available.find((name) => unenforceableRules(name, agent).length === 0);
    if (pick !== undefined) return pick;
    throw new AegisError(
      'RUNTIME_UNAVAILABLE',
      `isolation: auto found no runtime on this host that enforces every rule of the agent (available: ${availableText})`,
      {
        problems: [{ path: 'spec.isolation', message: 'no suitable runtime available' }],
        details: { isolation, available },
        hint: 'run `aegis doctor` to see each runtime and what it lacks',
      },
    );
  }
  if (!available.includes(isolation)) {
    const why = availability.find((a) => a.name === isolation)?.reason ?? 'not registered in this build';
    throw new AegisError(
      'RUNTIME_UNAVAILABLE',
      `isolation: ${isolation} is not available on this host: ${why} (available: ${availableText})`,
      {
        problems: [{ path: 'spec.isolation', message: `${isolation} unavailable` }],
        details: { isolation, available },
        hint: `run \`aegis doctor\` for what ${isolation} needs${available.length > 0 ? `, or use isolation: ${available.join(' | ')} | auto` : ''}`,
      },
    );
  }
  assertEnforceable(isolation, agent);
  return isolation;
}
