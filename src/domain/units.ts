/**
 * Size and duration units accepted in manifests. Parsing happens once, at the edge; inside, values are plain
 * numbers with the unit in the name (`memoryBytes`, `timeoutMs`).
 */

/** Kubernetes quantity suffixes, exactly: decimal `k M G T P E` (powers of 1000), binary `Ki … Ei` (of 1024). */
const SIZE_UNITS: Readonly<Record<string, number>> = {
  '': 1,
  k: 1000,
  M: 1000 ** 2,
  G: 1000 ** 3,
  T: 1000 ** 4,
  P: 1000 ** 5,
  E: 1000 ** 6,
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
  Ti: 1024 ** 4,
  Pi: 1024 ** 5,
  Ei: 1024 ** 6,
};

/** Spellings people bring from elsewhere, and what Kubernetes (and so AEGIS) writes instead. */
const SIZE_DID_YOU_MEAN: Readonly<Record<string, string>> = {
  K: '"k" (1000) or "Ki" (1024)',
  KB: '"k" (1000) or "Ki" (1024)',
  kB: '"k" (1000) or "Ki" (1024)',
  MB: '"M" (10^6) or "Mi" (2^20)',
  GB: '"G" (10^9) or "Gi" (2^30)',
  TB: '"T" (10^12) or "Ti" (2^40)',
  KiB: '"Ki"',
  MiB: '"Mi"',
  GiB: '"Gi"',
  TiB: '"Ti"',
  B: 'a bare number of bytes (no unit)',
  m: '"M" or "Mi" ("m" is a thousandth)',
  mi: '"Mi"',
  gi: '"Gi"',
  g: '"G" or "Gi"',
};

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export type ParseResult =
  | { readonly ok: true; readonly value: number }
  | { readonly ok: false; readonly error: string };

/**
 * A Kubernetes quantity in bytes: `256Mi` → 268435456, `512M` → 512000000, `1.5Gi`, `1e9`. Fractions round up to a
 * whole byte, as Kubernetes does. `MB`, `GB`, `KiB`, `K` … are refused with what to write instead.
 */
export function parseSize(input: string | number): ParseResult {
  if (typeof input === 'number') {
    return Number.isSafeInteger(input) && input >= 0
      ? { ok: true, value: input }
      : { ok: false, error: `expected a whole, non-negative number of bytes, got ${input}` };
  }
  const match = /^\s*(\d+(?:\.\d+)?|\.\d+)(?:[eE]([+-]?\d+)|([A-Za-z]*))\s*$/.exec(input);
  if (!match) return { ok: false, error: `"${input}" is not a size; write e.g. 256Mi, 1Gi or 512M` };
  const unit = match[3] ?? '';
  const factor = match[2] !== undefined ? 10 ** Number(match[2]) : SIZE_UNITS[unit];
  if (factor === undefined) {
    const instead = SIZE_DID_YOU_MEAN[unit];
    return {
      ok: false,
      error: instead
        ? `"${unit}" is not a size unit (in "${input}") — did you mean ${instead}?`
        : `unknown size unit "${unit}" in "${input}"; use Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T (powers of 1000), as in Kubernetes`,
    };
  }
  const value = Math.ceil(Number(match[1]) * factor);
  return Number.isSafeInteger(value) ? { ok: true, value } : { ok: false, error: `"${input}" is too large` };
}

/** `30s` → 30000, `500ms` → 500, `5m` → 300000. A bare number means seconds. */
export function parseDuration(input: string | number): ParseResult {
  if (typeof input === 'number') {
    return Number.isFinite(input) && input > 0
      ? { ok: true, value: Math.round(input * 1000) }
      : { ok: false, error: `expected a positive number of seconds, got ${input}` };
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/.exec(input);
  if (!match) return { ok: false, error: `"${input}" is not a duration; write e.g. 500ms, 30s or 5m` };
  const unit = match[2] === '' ? 's' : (match[2] ?? 's');
  const factor = DURATION_UNITS[unit];
  if (factor === undefined) {
    return { ok: false, error: `unknown duration unit "${unit}" in "${input}"; use ms, s, m or h` };
  }
  const value = Math.round(Number(match[1]) * factor);
  return value > 0
    ? { ok: true, value }
    : { ok: false, error: `duration "${input}" must be greater than zero` };
}

/** Kubernetes-style CPU: `500m` → 500 millicores, `2` → 2000, `0.5` → 500. */
export function parseCpu(input: string | number): ParseResult {
  const text = String(input).trim();
  const match = /^(\d+(?:\.\d+)?)(m?)$/.exec(text);
  if (!match)
    return { ok: false, error: `"${text}" is not a CPU amount; write e.g. 500m (half a core) or 2` };
  const millis = match[2] === 'm' ? Number(match[1]) : Number(match[1]) * 1000;
  const value = Math.round(millis);
  if (value < 10) return { ok: false, error: `CPU "${text}" is below the 10m minimum` };
  return { ok: true, value };
}

/** The one byte formatter: `12 bytes`, `1.5 KiB`, `256 MiB` (binary units, as the limits are written). */
export function formatBytes(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let index = 0;
  while (value >= 1024 && index < units.length - 1) {
    value /= 1024;
    index++;
  }
  return index === 0
    ? `${bytes} bytes`
    : `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[index]}`;
}
