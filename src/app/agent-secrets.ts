/**
 * The secrets an agent declares, fetched for one instance (an execution or a live sandbox): values from the secret
 * store and a fresh placeholder plan. Shared by run-agent.ts and live-sandboxes.ts so both fail the same way.
 */
import { AegisError, isAegisError } from '../domain/errors.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import { planSecrets } from '../domain/secrets/placeholder.ts';
import type { SecretRandom, SecretStore } from './ports.ts';

export interface AgentSecretsDeps {
  readonly secrets?: SecretStore;
  readonly random?: SecretRandom;
}

/**
 * Fetches every secret the agent declares (before anything starts: a missing one fails the execution) and plans this
 * execution's placeholders. Errors name the secret and `aegis secret set`, never a value.
 */
export async function resolveSecrets(
  deps: AgentSecretsDeps,
  agent: CompiledAgent,
): Promise<{ plan: ReturnType<typeof planSecrets>; values: Map<string, string> } | undefined> {
  if (agent.secrets.length === 0) return undefined;
  const { secrets, random } = deps;
  if (secrets === undefined || random === undefined) {
    throw new AegisError('INTERNAL', 'this AEGIS build has no secret store configured');
  }
  const values = new Map<string, string>();
  for (const binding of agent.secrets) {
    if (values.has(binding.name)) continue;
    try {
      values.set(binding.name, await secrets.get(binding.name));
    } catch (error) {
      if (isAegisError(error) && error.code === 'NOT_FOUND') {
        throw new AegisError(
          'NOT_FOUND',
          `secret ${binding.name} (spec.secrets, env ${binding.env}) is not set; run \`aegis secret set ${binding.name}\``,
          { hint: `aegis secret set ${binding.name} < file-holding-the-value` },
        );
      }
      throw error;
    }
  }
  return { plan: planSecrets(agent.secrets, () => random.hex128()), values };
}
