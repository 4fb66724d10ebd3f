/**
 * Size and duration units accepted in manifests. Parsing happens once, at the edge; inside, values are plain
 * numbers with the unit in the name (`memoryBytes`, `timeoutMs`).
 */

const SIZE_UNITS: Readonly<Record<string, number>> = {
  '': 1,
  B: 1,
  K: 1000,
  KB: 1000,
  M: 1000 ** 2,
  MB: 1000 ** 2,
  G: 1000 ** 3,
  GB: 1000 ** 3,
  Ki: 1024,
  KiB: 1024,
  Mi: 1024 ** 2,
  MiB: 1024 ** 2,
  Gi: 1024 ** 3,
  GiB: 1024 ** 3,
  Ti: 1024 ** 4,
  TiB: 1024 ** 4,
};

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export type ParseResult =
  | { readonly ok: true; readonly value: number }
  | { readonly ok: false; readonly error: string };

/** `256Mi` → 268435456. Integers only in bytes; decimals allowed with a unit (`1.5Gi`). */
export function parseSize(input: string | number): ParseResult {
  if (typeof input === 'number') {
    return Number.isSafeInteger(input) && input >= 0
      ? { ok: true, value: input }
      : { ok: false, error: `expected a whole, non-negative number of bytes, got ${input}` };
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(input);
  if (!match) return { ok: false, error: `"${input}" is not a size; write e.g. 256Mi, 1Gi or 512M` };
  const unit = match[2] ?? '';
  const factor = SIZE_UNITS[unit];
  if (factor === undefined) {
    return {
      ok: false,
      error: `unknown size unit "${unit}" in "${input}"; use one of Ki, Mi, Gi, Ti (powers of 1024) or K, M, G (powers of 1000)`,
    };
  }
  const value = Math.round(Number(match[1]) * factor);
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

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let index = 0;
  while (value >= 1024 && index < units.length - 1) {
    value /= 1024;
    index++;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)}${units[index]}`;
}
