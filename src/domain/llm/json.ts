/** Small readers for untrusted JSON bodies: a wrong shape is a USAGE error naming the JSON path. */
import { AegisError } from '../errors.ts';

export type Json = Record<string, unknown>;

export function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function bad(path: string, message: string, hint?: string): AegisError {
  return new AegisError('USAGE', `${path}: ${message}`, {
    problems: [{ path, message, ...(hint ? { hint } : {}) }],
    ...(hint ? { hint } : {}),
  });
}

export function objectAt(value: unknown, path: string): Json {
  if (!isObject(value)) throw bad(path, 'expected an object');
  return value;
}

export function arrayAt(value: unknown, path: string): unknown[] {
  if (!Array.isArray(value)) throw bad(path, 'expected an array');
  return value;
}

export function stringAt(value: unknown, path: string): string {
  if (typeof value !== 'string') throw bad(path, 'expected a string');
  return value;
}

export function optionalNumber(value: unknown, path: string): number | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw bad(path, 'expected a number');
  return value;
}

export function stopList(value: unknown, path: string): string[] {
  if (value === undefined || value === null) return [];
  if (typeof value === 'string') return [value];
  return arrayAt(value, path).map((item, i) => stringAt(item, `${path}[${i}]`));
}

/** Text of a content field that is a string or a list of `{type: text|input_text|output_text, text}` parts. */
export function textContent(value: unknown, path: string): string {
  if (value === null || value === undefined) return '';
  if (typeof value === 'string') return value;
  return arrayAt(value, path)
    .map((part, i) => {
      const p = objectAt(part, `${path}[${i}]`);
      if (typeof p.text === 'string') return p.text;
      throw bad(
        `${path}[${i}]`,
        `content part type "${String(p.type)}" is not supported by the gateway`,
        'send text parts',
      );
    })
    .join('');
}
