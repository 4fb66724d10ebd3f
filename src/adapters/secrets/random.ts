/** Placeholder randomness from the OS CSPRNG (`SecretRandom`). */
import { randomBytes } from 'node:crypto';
import type { SecretRandom } from '../../app/ports.ts';

export const cryptoSecretRandom: SecretRandom = { hex128: () => randomBytes(16).toString('hex') };
