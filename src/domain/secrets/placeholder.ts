/**
 * Placeholders: what the sandbox sees instead of a secret.
 *
 * `aegis-secret:<NAME>:<32 lowercase hex>` — the name makes logs and errors readable, the 128 random bits (from an
 * injected source: the domain has no crypto) make a placeholder unguessable and unique to one execution, so a
 * placeholder copied out of one sandbox is worthless in every other. Only the egress proxy maps it back to a value,
 * and only in requests toward the hosts the secret is bound to (`secretsForHost`).
 */
import { AegisError } from '../errors.ts';
import { SECRET_NAME_PATTERN } from './secret-ref.ts';

export const PLACEHOLDER_PREFIX = 'aegis-secret:';
const RANDOM_HEX = /^[0-9a-f]{32}$/;
/** Anything shaped like a placeholder (global: use with `matchAll` / `replace`). */
export const PLACEHOLDER_PATTERN = /aegis-secret:([A-Z][A-Z0-9_]{0,63}):([0-9a-f]{32})/g;

/** `randomHex`: 32 lowercase hex digits (16 random bytes) from a CSPRNG, fresh for every execution and secret. */
export function makePlaceholder(name: string, randomHex: string): string {
  if (!SECRET_NAME_PATTERN.test(name)) {
    throw new AegisError('INTERNAL', `makePlaceholder: "${name}" is not a secret name`);
  }
  if (!RANDOM_HEX.test(randomHex)) {
    throw new AegisError(
      'INTERNAL',
      'makePlaceholder: randomness must be 32 lowercase hex digits (16 bytes)',
    );
  }
  return `${PLACEHOLDER_PREFIX}${name}:${randomHex}`;
}

/** The secret one placeholder stands for, in one execution. */
export interface PlaceholderEntry {
  readonly name: string;
  readonly value: string;
}

/** placeholder text → the secret it stands for. */
export type PlaceholderMap = ReadonlyMap<string, PlaceholderEntry>;

export interface SubstituteResult {
  readonly text: string;
  /** Secret names whose placeholder was replaced by the value. */
  readonly injected: ReadonlySet<string>;
  /** Secret names whose (genuine) placeholder appeared but may not go to this destination: left as is. */
  readonly refused: ReadonlySet<string>;
}

/**
 * Replaces every known placeholder whose secret is in `allowed` with `encode(value)`; known placeholders of other
 * secrets stay as they are (and are reported in `refused`). Placeholder-shaped text that is not one of this
 * execution's placeholders is left alone and not reported (it cannot be redeemed anyway).
 *
 * `encode` adapts the value to where it lands (identity for headers, `encodeURIComponent` in a query, JSON string
 * escaping in a JSON body).
 */
export function substitute(
  text: string,
  placeholders: PlaceholderMap,
  allowed: ReadonlySet<string>,
  encode: (value: string) => string = (value) => value,
): SubstituteResult {
  const injected = new Set<string>();
  const refused = new Set<string>();
  if (!text.includes(PLACEHOLDER_PREFIX)) return { text, injected, refused };
  const out = text.replace(PLACEHOLDER_PATTERN, (match) => {
    const entry = placeholders.get(match);
    if (entry === undefined) return match;
    if (!allowed.has(entry.name)) {
      refused.add(entry.name);
      return match;
    }
    injected.add(entry.name);
    return encode(entry.value);
  });
  return { text: out, injected, refused };
}

/** Per-execution plan: the env the sandbox gets and the placeholder map the proxy gets. */
export interface SecretPlan {
  /** env var → placeholder. */
  readonly env: Readonly<Record<string, string>>;
  /** secret name → placeholder. */
  readonly placeholders: ReadonlyMap<string, string>;
}

/** `random()` must return 32 fresh lowercase hex digits per call (e.g. `randomBytes(16).toString('hex')`). */
export function planSecrets(
  bindings: readonly { readonly name: string; readonly env: string }[],
  random: () => string,
): SecretPlan {
  const env: Record<string, string> = {};
  const placeholders = new Map<string, string>();
  for (const binding of bindings) {
    const placeholder = placeholders.get(binding.name) ?? makePlaceholder(binding.name, random());
    placeholders.set(binding.name, placeholder);
    env[binding.env] = placeholder;
  }
  return { env, placeholders };
}

/** Builds the proxy's placeholder map from a plan and the values fetched from the store. */
export function placeholderMap(
  plan: SecretPlan,
  values: ReadonlyMap<string, string>,
): Map<string, PlaceholderEntry> {
  const map = new Map<string, PlaceholderEntry>();
  for (const [name, placeholder] of plan.placeholders) {
    const value = values.get(name);
    if (value === undefined) {
      throw new AegisError('NOT_FOUND', `secret ${name} has no value`, { hint: `aegis secret set ${name}` });
    }
    map.set(placeholder, { name, value });
  }
  return map;
}
