/**
 * Secret references in a manifest (`spec.secrets`) and the pure decision of which secrets may be injected toward a
 * destination.
 *
 * ```yaml
 * spec:
 *   secrets:
 *     - name: OPENAI_KEY          # the name in the secret store (`aegis secret set OPENAI_KEY`)
 *       env: OPENAI_API_KEY       # the sandbox sees a per-execution placeholder here, never the value
 *       hosts: [api.openai.com]   # the egress proxy swaps the placeholder for the value only toward these
 * ```
 *
 * Host bindings use the network-rule syntax restricted to names: an exact host (`api.openai.com`), a suffix wildcard
 * (`*.openai.azure.com`, subdomains only, not the apex) or a single IP address, each with an optional `:port` or
 * `:low-high`. CIDR blocks are refused: a secret goes to named places, not to ranges.
 */
import { z } from 'zod';
import type { Problem } from '../errors.ts';
import { specialRangeOf } from '../policy/ip.ts';
import { type NetworkRule, parseHost, parseNetworkRule } from '../policy/network-rules.ts';

/** `OPENAI_KEY`: what the store files the value under. Upper case so it reads as a constant in manifests and logs. */
export const SECRET_NAME_PATTERN = /^[A-Z][A-Z0-9_]{0,63}$/;
/** A POSIX-portable environment variable name. */
export const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

/** Why a binding text is not acceptable, or undefined when it is. */
export function secretHostError(text: string): string | undefined {
  const parsed = parseNetworkRule(text);
  if (!parsed.ok) return parsed.error;
  const rule = parsed.rule;
  if (rule.kind === 'cidr') {
    const full = rule.cidr.family === 4 ? 32 : 128;
    if (rule.cidr.prefix !== full) {
      return `secret host "${text}" is an address block; bind a secret to named hosts (e.g. api.openai.com) or one address`;
    }
  }
  return undefined;
}

export const SecretHost = z.string().superRefine((text, ctx) => {
  const error = secretHostError(text);
  if (error !== undefined) ctx.addIssue({ code: 'custom', message: error });
});

export const SecretRef = z
  .object({
    name: z.string().regex(SECRET_NAME_PATTERN, {
      message:
        'secret name must be upper case letters, digits and "_", starting with a letter, at most 64 characters (e.g. OPENAI_KEY)',
    }),
    env: z.string().regex(ENV_NAME_PATTERN, {
      message: 'env must be an environment variable name: letters, digits and "_", not starting with a digit',
    }),
    hosts: z.array(SecretHost).min(1, {
      message: 'hosts must list at least one destination the secret may be sent to (e.g. [api.openai.com])',
    }),
  })
  .strict();
export type SecretRef = z.infer<typeof SecretRef>;

/** The list: names and env variables unique. */
export const SecretRefs = z.array(SecretRef).superRefine((refs, ctx) => {
  const names = new Map<string, number>();
  const envs = new Map<string, number>();
  refs.forEach((ref, index) => {
    const name = names.get(ref.name);
    if (name !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: [index, 'name'],
        message: `secret ${ref.name} is already listed at index ${name}; list each secret once with all its hosts`,
      });
    } else names.set(ref.name, index);
    const env = envs.get(ref.env);
    if (env !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: [index, 'env'],
        message: `env ${ref.env} is already used by the secret at index ${env}`,
      });
    } else envs.set(ref.env, index);
  });
});
export type SecretRefs = z.infer<typeof SecretRefs>;

/** Compiled form: host texts parsed once. */
export interface SecretBinding {
  readonly name: string;
  readonly env: string;
  readonly hosts: readonly NetworkRule[];
}

export type SecretBindingsCompile =
  | { readonly ok: true; readonly bindings: readonly SecretBinding[] }
  | { readonly ok: false; readonly problems: readonly Problem[] };

/** Parses every host of already schema-checked refs; problems carry JSON paths under `basePath`. */
export function compileSecretBindings(
  refs: readonly SecretRef[],
  basePath = 'spec.secrets',
): SecretBindingsCompile {
  const problems: Problem[] = [];
  const bindings = refs.map((ref, index) => {
    const hosts: NetworkRule[] = [];
    ref.hosts.forEach((text, hostIndex) => {
      const error = secretHostError(text);
      const parsed = parseNetworkRule(text);
      if (error !== undefined || !parsed.ok) {
        problems.push({
          message: error ?? 'invalid host',
          path: `${basePath}[${index}].hosts[${hostIndex}]`,
        });
      } else hosts.push(parsed.rule);
    });
    return { name: ref.name, env: ref.env, hosts };
  });
  return problems.length > 0 ? { ok: false, problems } : { ok: true, bindings };
}

function ruleMatches(rule: NetworkRule, host: string, port: number): boolean {
  if (rule.ports !== undefined && (port < rule.ports.low || port > rule.ports.high)) return false;
  const parsed = parseHost(host);
  if (!parsed.ok) return false;
  if (parsed.kind === 'name') {
    if (rule.kind === 'host') return rule.host === parsed.name;
    if (rule.kind === 'wildcard') {
      return parsed.name.endsWith(rule.suffix) && parsed.name.length > rule.suffix.length;
    }
    return false;
  }
  if (rule.kind !== 'cidr' || rule.cidr.family !== parsed.ip.family) return false;
  return rule.cidr.network === parsed.ip.value;
}

/**
 * Names of the secrets that may be injected into a request toward `host:port` — `host` as the agent asked for it
 * (a name or an IP literal), matched exactly like network rules (wildcards: subdomains only).
 */
export function secretsForHost(
  bindings: readonly SecretBinding[],
  host: string,
  port: number,
): ReadonlySet<string> {
  const names = new Set<string>();
  for (const binding of bindings) {
    if (binding.hosts.some((rule) => ruleMatches(rule, host, port))) names.add(binding.name);
  }
  return names;
}

/**
 * Warnings (not errors) about bindings that cannot work in this release: no egress at all (the placeholder can never
 * be redeemed), or a host that is not a loopback/private IP literal (the proxy's cleartext guard refuses plain-HTTP
 * injection there, and HTTPS tunnels are never rewritten — docs/adr/0008-secrets.md).
 */
export function secretBindingNotes(bindings: readonly SecretBinding[], networkAllowCount: number): string[] {
  const notes: string[] = [];
  for (const binding of bindings) {
    if (networkAllowCount === 0) {
      notes.push(
        `secret ${binding.name}: spec.security.network.allow is empty, so the agent can never use it (it only sees a placeholder)`,
      );
      continue;
    }
    for (const rule of binding.hosts) {
      const cls =
        rule.kind === 'cidr'
          ? specialRangeOf({ family: rule.cidr.family, value: rule.cidr.network })?.class
          : undefined;
      if (cls !== 'loopback' && cls !== 'private') {
        notes.push(
          `secret ${binding.name} → ${rule.text}: call it with an http:// URL through the proxy (e.g. base_url="http://${rule.text.replace(/^\*\./, 'api.').replace(/:.*$/, '')}/…"); AEGIS injects the value and sends the request over verified TLS, so network.allow must include the host on port 443. HTTPS requests made by the agent itself get no injection (docs/adr/0008-secrets.md)`,
        );
      }
    }
  }
  return notes;
}
