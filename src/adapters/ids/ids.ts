/** Time-sortable ids: `ex_` (or `key_`) + 10 chars of millisecond time + 16 random chars (Crockford base32, like ULID). */
import { randomBytes } from 'node:crypto';
import type { Ids, MemoryIds } from '../../app/ports.ts';

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

function encodeTime(ms: number): string {
  let out = '';
  let value = ms;
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[value % 32] + out;
    value = Math.floor(value / 32);
  }
  return out;
}

function encodeRandom(length: number): string {
  const bytes = randomBytes(length);
  let out = '';
  for (const byte of bytes) out += ALPHABET[byte % 32];
  return out;
}

export class SortableIds implements Ids, MemoryIds {
  executionId(): string {
    return `ex_${encodeTime(Date.now())}${encodeRandom(16)}`;
  }

  keyId(): string {
    return `key_${encodeTime(Date.now())}${encodeRandom(10)}`;
  }

  /** `mem_` + time + 16 random chars (Cortex memories). */
  memoryId(): string {
    return `mem_${encodeTime(Date.now())}${encodeRandom(16)}`;
  }
}
