/**
 * A swarm child's authority: the intersection of its own compiled manifest and its parent's ceiling (ADR 0140).
 * Pure: `ceilingOf` takes what a (possibly already narrowed) parent holds, `narrowAgent` applies a ceiling to a
 * child. Every dimension only shrinks — a rule, mount, tool, model, secret or budget the parent lacks is dropped.
 */
import type { CompiledAgent, MountSpec } from '../manifest/compiled.ts';
import { cidrWithin, formatCidr } from '../policy/ip.ts';
import {
  compileNetworkPolicy,
  type NetworkRule,
  type PortRange,
  parseNetworkRule,
} from '../policy/network-rules.ts';
import type { ToolGrantSpec } from '../tools.ts';
import type { AuthorityCeiling } from './authority.ts';

/** What a model budget has left after `spent` (null: that dimension is unlimited); never below 0. */
export interface LlmLeft {
  readonly tokens: number | null;
  readonly calls: number | null;
  readonly usd: number | null;
}

export function llmLeftOf(
  budget: { readonly tokens: number | null; readonly calls: number | null; readonly usd: number | null },
  spent: {
    readonly calls: number;
    readonly inputTokens: number;
    readonly outputTokens: number;
    readonly usd: number;
  },
): LlmLeft {
  return {
    tokens:
      budget.tokens === null ? null : Math.max(0, budget.tokens - spent.inputTokens - spent.outputTokens),
    calls: budget.calls === null ? null : Math.max(0, budget.calls - spent.calls),
    usd: budget.usd === null ? null : Math.max(0, Math.round((budget.usd - spent.usd) * 1e6) / 1e6),
  };
}

/**
 * What the parent holds, for its children. `llmLeft`: its budget minus what it spent before the spawn (the tighter
 * wins), so a child cannot spend what its parent already did (`llmLeftOf`).
 */
export function ceilingOf(
  parent: CompiledAgent,
  llmLeft?: { readonly tokens: number | null; readonly calls?: number | null; readonly usd: number | null },
): AuthorityCeiling {
  const swarm = parent.swarm?.budget;
  const llm = parent.llm;
  return {
    network: { allow: [...parent.network.allow], deny: [...parent.network.deny] },
    mounts: parent.mounts.map((m) => ({ source: m.source, writable: m.writable })),
    tools: (parent.tools ?? []).map((t) => ({ name: t.name, allow: [...t.allow], timeoutMs: t.timeoutMs })),
    llm:
      llm === null
        ? null
        : {
            models: [...llm.models],
            budget: {
              tokens: least(llm.budget.tokens, llmLeft?.tokens ?? null, swarm?.tokens ?? null),
              calls: least(llm.budget.calls, llmLeft?.calls ?? null),
              usd: least(llm.budget.usd, llmLeft?.usd ?? null, swarm?.usd ?? null),
            },
          },
    secrets: parent.secrets.map((s) => s.name),
    timeoutMs: parent.limits.timeoutMs,
    globalLocks: parent.swarm?.locks.global === true,
  };
}

/** `child` with nothing beyond `ceiling`. */
export function narrowAgent(child: CompiledAgent, ceiling: AuthorityCeiling): CompiledAgent {
  const allow = intersectRules(child.network.allow, ceiling.network.allow);
  const deny = [...new Set([...child.network.deny, ...ceiling.network.deny])];
  const compiled = compileNetworkPolicy({ allow, deny });
  const secretsHeld = new Set(ceiling.secrets);
  const models = child.llm?.models.filter((m) => ceiling.llm?.models.includes(m)) ?? [];
  const narrowed: CompiledAgent = {
    ...child,
    network: {
      ...child.network,
      allow,
      deny,
      // Every rule came out of a parsed rule, so it parses; an unparsable one would deny everything.
      policy: compiled.ok ? compiled.policy : { allow: [], deny: [] },
    },
    mounts: child.mounts.flatMap((m) => narrowMount(m, ceiling.mounts)),
    limits: { ...child.limits, timeoutMs: Math.min(child.limits.timeoutMs, ceiling.timeoutMs) },
    secrets: child.secrets.filter((s) => secretsHeld.has(s.name)),
    llm:
      child.llm === null || ceiling.llm === null || models.length === 0
        ? null
        : {
            models,
            budget: {
              tokens: least(child.llm.budget.tokens, ceiling.llm.budget.tokens),
              calls: least(child.llm.budget.calls, ceiling.llm.budget.calls),
              usd: least(child.llm.budget.usd, ceiling.llm.budget.usd),
            },
          },
  };
  const swarm = child.swarm;
  // A global lock reaches every swarm: a child takes one only when its parent may (spec.swarm.locks.global).
  const withSwarm: CompiledAgent =
    swarm?.locks.global && ceiling.globalLocks !== true
      ? { ...narrowed, swarm: { ...swarm, locks: { ...swarm.locks, global: false } } }
      : narrowed;
  if (child.tools !== undefined) {
    return { ...withSwarm, tools: child.tools.flatMap((t) => narrowTool(t, ceiling.tools)) };
  }
  return withSwarm;
}

/** Does `name` match one of the `spec.swarm.canSpawn` patterns (`*` matches any run of name characters)? */
export function mayStart(name: string, patterns: readonly string[]): boolean {
  return patterns.some((pattern) =>
    new RegExp(`^${pattern.split('*').map(escapeRegExp).join('[a-z0-9-]*')}$`).test(name),
  );
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function least(...values: (number | null)[]): number | null {
  const set = values.filter((v): v is number => v !== null);
  return set.length === 0 ? null : Math.min(...set);
}

/** A child mount survives inside a parent mount of the same host path or above it; writable only if that one is. */
function narrowMount(mount: MountSpec, parents: AuthorityCeiling['mounts']): MountSpec[] {
  const within = parents.filter(
    (p) =>
      mount.source === p.source ||
      mount.source.startsWith(p.source.endsWith('/') ? p.source : `${p.source}/`),
  );
  if (within.length === 0) return [];
  return [{ ...mount, writable: mount.writable && within.some((p) => p.writable) }];
}

function narrowTool(tool: ToolGrantSpec, parents: AuthorityCeiling['tools']): ToolGrantSpec[] {
  const parent = parents.find((p) => p.name === tool.name);
  if (parent === undefined) return [];
  const narrowed: ToolGrantSpec = {
    ...tool,
    // cmd.run: only the argv patterns the parent was granted word for word (pattern containment is not decided).
    allow: tool.allow.filter((pattern) => parent.allow.includes(pattern)),
    timeoutMs: Math.min(tool.timeoutMs, parent.timeoutMs),
  };
  return [narrowed];
}

/** Every child rule cut down to what some parent rule also allows, as rule texts (deduplicated). */
function intersectRules(child: readonly string[], parent: readonly string[]): string[] {
  const parse = (texts: readonly string[]) =>
    texts.flatMap((text) => {
      const parsed = parseNetworkRule(text);
      return parsed.ok ? [parsed.rule] : [];
    });
  const parents = parse(parent);
  const out = new Set<string>();
  for (const c of parse(child)) {
    for (const p of parents) {
      const both = intersectRule(c, p);
      if (both !== undefined) out.add(both);
    }
  }
  return [...out];
}

/** The rule text both allow, or undefined. Name rules and address rules never intersect (names are matched by name). */
function intersectRule(a: NetworkRule, b: NetworkRule): string | undefined {
  const ports = intersectPorts(a.ports, b.ports);
  if (ports === null) return undefined;
  let host: string | undefined;
  if (a.kind === 'host' && b.kind === 'host') host = a.host === b.host ? a.host : undefined;
  else if (a.kind === 'host' && b.kind === 'wildcard')
    host = underWildcard(a.host, b.suffix) ? a.host : undefined;
  else if (a.kind === 'wildcard' && b.kind === 'host')
    host = underWildcard(b.host, a.suffix) ? b.host : undefined;
  else if (a.kind === 'wildcard' && b.kind === 'wildcard') {
    if (a.suffix.endsWith(b.suffix)) host = `*${a.suffix}`;
    else if (b.suffix.endsWith(a.suffix)) host = `*${b.suffix}`;
  } else if (a.kind === 'cidr' && b.kind === 'cidr') {
    if (cidrWithin(a.cidr, b.cidr)) host = formatCidr(a.cidr);
    else if (cidrWithin(b.cidr, a.cidr)) host = formatCidr(b.cidr);
    if (host?.includes(':') && ports !== undefined) host = `[${host}]`;
  }
  if (host === undefined) return undefined;
  if (ports === undefined) return host;
  return `${host}:${ports.low === ports.high ? ports.low : `${ports.low}-${ports.high}`}`;
}

function underWildcard(host: string, suffix: string): boolean {
  return host.endsWith(suffix) && host.length > suffix.length;
}

/** undefined: any port; null: no port in common. */
function intersectPorts(a: PortRange | undefined, b: PortRange | undefined): PortRange | undefined | null {
  if (a === undefined) return b;
  if (b === undefined) return a;
  const low = Math.max(a.low, b.low);
  const high = Math.min(a.high, b.high);
  return low > high ? null : { low, high };
}

/** What narrowing took from a child's manifest (for the ledger); undefined when it kept everything. */
export interface Narrowed {
  readonly network: readonly string[];
  readonly mounts: readonly string[];
  readonly readOnly: readonly string[];
  readonly tools: readonly string[];
  readonly models: readonly string[];
  readonly secrets: readonly string[];
  /** Swarm grants dropped (`locks.global`). */
  readonly swarm: readonly string[];
}

export function narrowedAway(child: CompiledAgent, narrowed: CompiledAgent): Narrowed | undefined {
  const kept = <T>(before: readonly T[], after: readonly T[]) => before.filter((x) => !after.includes(x));
  const afterMounts = new Map(narrowed.mounts.map((m) => [m.source, m]));
  const dropped: Narrowed = {
    network: kept(child.network.allow, narrowed.network.allow),
    mounts: child.mounts.filter((m) => !afterMounts.has(m.source)).map((m) => m.source),
    readOnly: child.mounts
      .filter((m) => m.writable && afterMounts.get(m.source)?.writable === false)
      .map((m) => m.source),
    tools: kept(
      (child.tools ?? []).map((t) => t.name),
      (narrowed.tools ?? []).map((t) => t.name),
    ),
    models: kept(child.llm?.models ?? [], narrowed.llm?.models ?? []),
    secrets: kept(
      child.secrets.map((s) => s.name),
      narrowed.secrets.map((s) => s.name),
    ),
    swarm: child.swarm?.locks.global && narrowed.swarm?.locks.global !== true ? ['locks.global'] : [],
  };
  return Object.values(dropped).some((list) => list.length > 0) ? dropped : undefined;
}
