/**
 * Canonical JSON in the style of RFC 8785 (JCS): object keys sorted by UTF-16 code units, no whitespace, strings and
 * numbers in their `JSON.stringify` forms (which are the ECMAScript forms JCS prescribes). Two equal values always
 * give the same text, so the text can be hashed and signed.
 *
 * Stricter than JSON.stringify: `undefined`, functions, symbols, bigints, non-finite numbers, sparse array slots and
 * objects that are not plain (Date, Map, class instances) are rejected instead of being dropped or coerced, so what
 * is hashed is exactly what a reader of the JSON sees.
 */

export type JsonPrimitive = string | number | boolean | null;
export type JsonValue = JsonPrimitive | readonly JsonValue[] | { readonly [key: string]: JsonValue };
export type JsonObject = { readonly [key: string]: JsonValue };

export class CanonicalJsonError extends Error {
  /** JSON path of the offending value, like `$.mounts[2].mode`. */
  readonly path: string;
  constructor(path: string, what: string) {
    super(`${path} is ${what}, which canonical JSON cannot represent`);
    this.name = 'CanonicalJsonError';
    this.path = path;
  }
}

/** Canonical text of `value`; throws CanonicalJsonError naming the JSON path of anything it cannot represent. */
export function canonicalJson(value: unknown): string {
  return write(value, '$');
}

function write(value: unknown, path: string): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new CanonicalJsonError(path, String(value));
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) {
          if (!(i in value)) throw new CanonicalJsonError(`${path}[${i}]`, 'an empty array slot');
          out += (i === 0 ? '' : ',') + write(value[i], `${path}[${i}]`);
        }
        return `${out}]`;
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        throw new CanonicalJsonError(path, `a ${proto?.constructor?.name ?? 'non-plain'} object`);
      }
      const record = value as Record<string, unknown>;
      // Default sort compares UTF-16 code units, which is the order JCS specifies.
      const keys = Object.keys(record).sort();
      let out = '{';
      for (let i = 0; i < keys.length; i++) {
        const key = keys[i]!;
        out += `${i === 0 ? '' : ','}${JSON.stringify(key)}:${write(record[key], `${path}.${key}`)}`;
      }
      return `${out}}`;
    }
    default:
      throw new CanonicalJsonError(path, typeof value === 'undefined' ? 'undefined' : `a ${typeof value}`);
  }
}
