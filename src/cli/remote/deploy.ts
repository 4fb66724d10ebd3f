/** `aegis deploy`: pack the directory holding agent.yaml and upload it as a new revision. */
import { statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { packAgentDir } from '../../adapters/bundle/pack.ts';
import { loadManifestFile } from '../../adapters/manifest/yaml-loader.ts';
import { AegisError } from '../../domain/errors.ts';
import { secretBindingNotes } from '../../domain/secrets/secret-ref.ts';
import { formatBytes } from '../../domain/units.ts';
import { EXIT, isQuiet, printJson, shortDigest } from '../output.ts';
import { createProgress } from '../progress.ts';
import { type ServerFlags, withServer } from './connect.ts';

export async function commandDeploy(manifest: string, flags: ServerFlags): Promise<number> {
  return withServer(flags, async ({ client }) => {
    const path = resolve(manifest);
    let dir: string;
    let isDir = false;
    try {
      isDir = statSync(path).isDirectory();
    } catch {
      // loadManifestFile says what is missing.
    }
    if (isDir) dir = path;
    else if (basename(path) === 'agent.yaml') dir = dirname(path);
    else {
      throw new AegisError('USAGE', `${manifest}: deploy packs the directory holding an agent.yaml`, {
        hint: `rename it to agent.yaml (the server looks for that name in the bundle), or pass its directory`,
      });
    }
    const { agent } = await loadManifestFile(isDir ? join(dir, 'agent.yaml') : path);
    for (const note of secretBindingNotes(agent.secrets, agent.network.allow.length)) {
      process.stderr.write(`warning: ${note}\n`);
    }
    // Progress on a terminal only (stderr), never with -q or -o json.
    const progress = createProgress(process.stderr, flags.output !== 'json' && !isQuiet());
    let bundle: Awaited<ReturnType<typeof packAgentDir>>;
    let result: Awaited<ReturnType<typeof client.deploy>>;
    try {
      progress.step(`packing ${dir}`);
      bundle = await packAgentDir(dir);
      progress.step(`uploading ${bundle.files} files (${formatBytes(bundle.bytes.byteLength)})`);
      result = await client.deploy(bundle.bytes);
    } finally {
      progress.stop();
    }
    if (result.revision.digest !== bundle.digest) {
      process.stderr.write(
        `warning: the server recorded digest ${shortDigest(result.revision.digest)} for a bundle packed as ${shortDigest(bundle.digest)}\n`,
      );
    }
    if (flags.output === 'json') {
      printJson(result);
      return EXIT.ok;
    }
    const { revision } = result;
    const what = `${revision.agent}@${revision.revision}`;
    if (result.created) {
      process.stdout.write(
        `deployed ${what} (${revision.version}, ${shortDigest(revision.digest)}, ${bundle.files} files, ${formatBytes(revision.sizeBytes)})\n`,
      );
    } else {
      process.stdout.write(
        `unchanged: ${what} (${revision.version}, ${shortDigest(revision.digest)}) already active\n`,
      );
    }
    return EXIT.ok;
  });
}
