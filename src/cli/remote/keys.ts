/** `aegis keys create | ls | revoke`: API keys (admin). */
import type { ApiKey } from '../../../sdk/index.ts';
import { parseRateLimit, parseScopes } from '../../domain/auth/api-key.ts';
import { EXIT, printJson, printTable } from '../output.ts';
import { type ServerFlags, withServer } from './connect.ts';

function formatScopesAndRate(key: ApiKey): [string, string] {
  const rate = key.rateLimit
    ? `${Number(key.rateLimit.perSecond.toFixed(3))}/s,burst=${key.rateLimit.burst}`
    : 'default';
  return [key.scopes.join(','), rate];
}

export async function commandKeysCreate(
  flags: ServerFlags & { name: string; scope: string[]; rate?: string },
): Promise<number> {
  const scopes = parseScopes(
    flags.scope
      .flatMap((s) => s.split(','))
      .map((s) => s.trim())
      .filter((s) => s !== ''),
    '--scope',
  );
  if (flags.rate !== undefined) parseRateLimit(flags.rate, '--rate');
  return withServer(flags, async ({ client }) => {
    const created = await client.createKey({
      name: flags.name,
      scopes,
      ...(flags.rate === undefined ? {} : { rate: flags.rate }),
    });
    if (flags.output === 'json') printJson(created);
    else process.stdout.write(`${created.key}\n`);
    const [scopeText, rate] = formatScopesAndRate(created.record);
    process.stderr.write(
      `created ${created.record.id} "${created.record.name}" (scopes ${scopeText}; rate ${rate})\n` +
        'warning: this is the only time the key is shown — store it now (e.g. in a secret manager); it cannot be recovered, only revoked\n',
    );
    return EXIT.ok;
  });
}

export async function commandKeysLs(flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const keys = await client.listKeys();
    if (flags.output === 'json') {
      printJson({ keys });
      return EXIT.ok;
    }
    if (keys.length === 0) {
      process.stdout.write('no API keys — create one with `aegis keys create --name NAME --scope read`\n');
      return EXIT.ok;
    }
    printTable(
      ['ID', 'NAME', 'PREFIX', 'SCOPES', 'RATE', 'CREATED', 'LAST USED', 'REVOKED'],
      keys.map((k) => [
        k.id,
        k.name,
        `${k.prefix}…`,
        ...formatScopesAndRate(k),
        k.createdAt,
        k.lastUsedAt ?? '-',
        k.revokedAt ?? '-',
      ]),
    );
    return EXIT.ok;
  });
}

export async function commandKeysRevoke(id: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const key = await client.revokeKey(id);
    if (flags.output === 'json') printJson(key);
    else process.stdout.write(`revoked ${key.id} "${key.name}" at ${key.revokedAt ?? 'now'}\n`);
    return EXIT.ok;
  });
}
