/** In-memory SecretStore for use-case tests. */
import { AegisError } from '../../domain/errors.ts';
import type { SecretRandom, SecretStore } from '../ports.ts';

export class MemorySecretStore implements SecretStore {
  readonly values = new Map<string, string>();

  constructor(values: Record<string, string> = {}) {
    for (const [name, value] of Object.entries(values)) this.values.set(name, value);
  }

  async get(name: string): Promise<string> {
    const value = this.values.get(name);
    if (value === undefined) {
      throw new AegisError('NOT_FOUND', `no secret named ${name}`, { hint: `aegis secret set ${name}` });
    }
    return value;
  }
}

/** Deterministic placeholder randomness: 0…01, 0…02, … */
export function sequenceRandom(): SecretRandom {
  let next = 0;
  return { hex128: () => (++next).toString(16).padStart(32, '0') };
}
