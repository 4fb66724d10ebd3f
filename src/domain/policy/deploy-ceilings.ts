/**
 * Server-side ceilings on what a non-admin deploy may ask for (issue 9 item 6). A `deploy` key is not the node's
 * operator: it may not give an agent more CPU, memory, processes, disk or time than the admin allows
 * (`aegis server --max-agent-*`), nor network rules that reach the node's own or its neighbours' addresses —
 * loopback (the server's own API port included), private, link-local, cloud metadata and the other special ranges.
 * Those need an admin key. Pure: the server composes the ceilings from its flags and the host's capacity.
 */
import { AegisError } from '../errors.ts';
import type { CompiledAgent, Limits } from '../manifest/compiled.ts';
import { formatBytes } from '../units.ts';
import { bitsOf, type Cidr, cidrWithin, SPECIAL_RANGES, type SpecialClass, specialRangeOf } from './ip.ts';

/** The most a non-admin deploy may ask for, in the units of `Limits`. */
export type DeployCeilings = Limits;

/** The server flag that raises each ceiling (named in every refusal). */
export const CEILING_FLAGS: Readonly<Record<keyof DeployCeilings, string>> = {
  cpuMillis: '--max-agent-cpu',
  memoryBytes: '--max-agent-memory',
  pids: '--max-agent-pids',
  diskBytes: '--max-agent-disk',
  timeoutMs: '--max-agent-timeout',
};

const MANIFEST_FIELD: Readonly<Record<keyof DeployCeilings, string>> = {
  cpuMillis: 'spec.security.resources.cpu',
  memoryBytes: 'spec.security.resources.memory',
  pids: 'spec.security.resources.pids',
  diskBytes: 'spec.security.resources.disk',
  timeoutMs: 'spec.security.resources.timeout',
};

const GiB = 1024 ** 3;

/**
 * Defaults for a node: memory at most half its RAM, CPU at most its cores, 4096 processes, disk (a tmpfs that
 * counts against memory) at most 4 GiB or the memory ceiling, one hour of wall clock.
 */
export function defaultDeployCeilings(host: {
  readonly cores: number;
  readonly memoryBytes: number;
}): DeployCeilings {
  const memoryBytes = Math.max(256 * 1024 ** 2, Math.floor(host.memoryBytes / 2));
  return {
    cpuMillis: Math.max(1, host.cores) * 1000,
    memoryBytes,
    pids: 4096,
    diskBytes: Math.min(4 * GiB, memoryBytes),
    timeoutMs: 60 * 60_000,
  };
}

function show(key: keyof DeployCeilings, value: number): string {
  switch (key) {
    case 'cpuMillis':
      return `${value / 1000} CPU`;
    case 'memoryBytes':
    case 'diskBytes':
      return formatBytes(value);
    case 'pids':
      return `${value} processes`;
    case 'timeoutMs':
      return value % 60_000 === 0 ? `${value / 60_000}m` : `${value / 1000}s`;
  }
}

/** Special-purpose classes a rule may only reach with an admin deploy: every class in SPECIAL_RANGES. */
function restrictedClassOf(cidr: Cidr): SpecialClass | undefined {
  for (const range of SPECIAL_RANGES) {
    if (range.block.family !== cidr.family) continue;
    if (cidrWithin(cidr, range.block) || cidrWithin(range.block, cidr)) return range.class;
  }
  // Spellings that land in a special range by embedding (NAT64, 6to4, IPv4-mapped): judge both ends of the block.
  const last = cidr.network | ((1n << BigInt(bitsOf(cidr.family) - cidr.prefix)) - 1n);
  return (
    specialRangeOf({ family: cidr.family, value: cidr.network })?.class ??
    specialRangeOf({ family: cidr.family, value: last })?.class
  );
}

/**
 * Refuses (POLICY_DENIED) a non-admin deploy above a ceiling or with an allow rule that reaches special-purpose
 * addresses; says which ceiling, the value asked for, and the flag or key that allows it.
 */
export function checkDeployCeilings(agent: CompiledAgent, ceilings: DeployCeilings): void {
  for (const key of Object.keys(CEILING_FLAGS) as (keyof DeployCeilings)[]) {
    const asked = agent.limits[key];
    const ceiling = ceilings[key];
    if (asked <= ceiling) continue;
    throw new AegisError(
      'POLICY_DENIED',
      `${MANIFEST_FIELD[key]}: ${show(key, asked)} is above this server's ceiling of ${show(key, ceiling)} for non-admin deploys (${CEILING_FLAGS[key]})`,
      {
        problems: [{ path: MANIFEST_FIELD[key], message: `above the ceiling ${show(key, ceiling)}` }],
        details: { ceiling: CEILING_FLAGS[key].slice(2), limit: ceiling, requested: asked },
        hint: `ask for at most ${show(key, ceiling)}, have an admin deploy it, or have the operator raise ${CEILING_FLAGS[key]}`,
      },
    );
  }
  agent.network.policy.allow.forEach((rule, index) => {
    if (rule.kind !== 'cidr') return; // names never reach special ranges: those need an IP/CIDR rule
    const cls = restrictedClassOf(rule.cidr);
    if (cls === undefined) return;
    const path = `spec.security.network.allow[${index}]`;
    throw new AegisError(
      'POLICY_DENIED',
      `${path}: "${rule.text}" reaches ${cls} addresses (the server's own host and network); only an admin key may deploy rules that reach loopback, private, link-local or metadata destinations`,
      {
        problems: [{ path, message: `reaches ${cls} addresses` }],
        details: { ceiling: 'network', rule: rule.text, class: cls },
        hint: 'allow public hosts by name (api.example.com:443), or ask an admin to deploy this agent',
      },
    );
  });
}
