/**
 * `AgentBundles` on a local directory: each bundle is unpacked once into `<dir>/<sha256>/` (read-only for everyone
 * but us: directories 0755, files 0644/0755) and its agent.yaml compiled with that directory as the agent
 * directory. `dir` must be somewhere the unprivileged sandbox user can traverse — not under $AEGIS_HOME, which
 * sandboxes may never see (docs/adr/0010-agent-bundles.md).
 */
import { randomUUID } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { chmod, type FileHandle, lstat, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import type { AgentBundles, BundleLimits } from '../../app/ports.ts';
import { AegisError } from '../../domain/errors.ts';
import type { CompiledAgent } from '../../domain/manifest/compiled.ts';
import { parseManifestText } from '../manifest/yaml-loader.ts';
import { bundleLimits, DIR_MODE, formatBytes, sha256Hex } from './rules.ts';
import { unpackBundle } from './unpack.ts';

export { DEFAULT_BUNDLE_LIMITS } from './rules.ts';

export interface DirAgentBundlesOptions {
  /**
   * Where bundles are unpacked, one directory per digest. Created 0755 when missing; an existing one must be
   * readable and traversable by other users (the sandbox user reads agents from it).
   */
  readonly dir: string;
  /** Caps on what a bundle may hold; unset fields take `DEFAULT_BUNDLE_LIMITS`. */
  readonly limits?: Partial<BundleLimits>;
}

const DIGEST = /^[0-9a-f]{64}$/;
/** The same cap as `loadManifestFile`. */
const MAX_MANIFEST_BYTES = 1024 * 1024;

export class DirAgentBundles implements AgentBundles {
  readonly limits: BundleLimits;
  readonly #dir: string;
  /** Compiled agents by digest (a promise, so concurrent opens share one unpack). */
  readonly #agents = new Map<string, Promise<CompiledAgent>>();
  #ready: Promise<void> | undefined;

  constructor(options: DirAgentBundlesOptions) {
    this.#dir = resolve(options.dir);
    this.limits = bundleLimits(options.limits);
  }

  digest(bundle: Uint8Array): string {
    return sha256Hex(bundle);
  }

  async open(digest: string, bundle: Uint8Array): Promise<CompiledAgent> {
    requireDigest(digest);
    const actual = this.digest(bundle);
    if (actual !== digest) {
      throw new AegisError(
        'INTERNAL',
        `bundle bytes do not match their digest: expected ${digest}, got ${actual}`,
        {
          details: { expected: digest, actual },
        },
      );
    }
    const cached = this.#agents.get(digest);
    if (cached !== undefined) {
      const agent = await cached;
      // Still there unless someone removed it behind our back; then unpack again.
      if (await isDirectory(agent.agentDir)) return agent;
      if (this.#agents.get(digest) === cached) this.#agents.delete(digest);
      return this.open(digest, bundle);
    }
    const loading = this.#load(digest, bundle);
    this.#agents.set(digest, loading);
    try {
      return await loading;
    } catch (error) {
      if (this.#agents.get(digest) === loading) this.#agents.delete(digest);
      throw error;
    }
  }

  async forget(digest: string): Promise<void> {
    requireDigest(digest);
    this.#agents.delete(digest);
    const target = join(this.#dir, digest);
    // Move it aside first so a half-removed tree is never seen under its digest.
    const doomed = join(this.#dir, `.${digest}.forget-${randomUUID()}`);
    try {
      await rename(target, doomed);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new AegisError('INTERNAL', `cannot remove ${target}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    await rm(doomed, { recursive: true, force: true });
  }

  async #load(digest: string, bundle: Uint8Array): Promise<CompiledAgent> {
    await this.#prepareDir();
    const target = join(this.#dir, digest);
    let existing: Stats | undefined;
    try {
      existing = await lstat(target);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    if (existing !== undefined && !existing.isDirectory()) {
      throw new AegisError('INTERNAL', `${target} exists but is not a directory`, {
        hint: `remove it; bundles are unpacked there again on the next use`,
      });
    }
    if (existing !== undefined) return loadManifest(target, target);
    let agent: CompiledAgent | undefined;
    // The manifest is checked before the tree is moved into place, so a bundle with a bad agent.yaml leaves nothing.
    await unpackBundle(bundle, target, this.limits, {
      check: async (unpacked) => {
        agent = await loadManifest(unpacked, target);
      },
    });
    return agent ?? loadManifest(target, target);
  }

  /** Creates `dir` (0755, umask-proof) or checks that the sandbox user can traverse the existing one. */
  #prepareDir(): Promise<void> {
    this.#ready ??= (async () => {
      const dir = this.#dir;
      const first = await mkdir(dir, { recursive: true, mode: DIR_MODE });
      if (first !== undefined) {
        // Every directory mkdir created, from the first down to dir.
        let path = first;
        await chmod(path, DIR_MODE);
        for (const segment of relative(first, dir).split(sep).filter(Boolean)) {
          path = join(path, segment);
          await chmod(path, DIR_MODE);
        }
        return;
      }
      const stats = await stat(dir);
      if (!stats.isDirectory()) {
        throw new AegisError('USAGE', `the bundle directory ${dir} is not a directory`);
      }
      if ((stats.mode & 0o005) !== 0o005) {
        throw new AegisError(
          'USAGE',
          `the bundle directory ${dir} (mode ${(stats.mode & 0o7777).toString(8).padStart(4, '0')}) cannot be read ` +
            'by other users, so the sandbox user could not read agents unpacked there',
          {
            hint: `chmod 755 ${dir} (and make sure its parents are traversable), or use a directory outside $AEGIS_HOME`,
          },
        );
      }
    })();
    this.#ready.catch(() => {
      this.#ready = undefined;
    });
    return this.#ready;
  }
}

function requireDigest(digest: string): void {
  if (!DIGEST.test(digest)) {
    throw new AegisError(
      'INTERNAL',
      `not a bundle digest (64 lowercase hex digits): ${JSON.stringify(digest)}`,
    );
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** Reads `<from>/agent.yaml` (never through a link) and compiles it with `agentDir` as the agent directory. */
async function loadManifest(from: string, agentDir: string): Promise<CompiledAgent> {
  const file = join(from, 'agent.yaml');
  let handle: FileHandle;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    throw new AegisError('INTERNAL', `cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  let text: string;
  try {
    const { size } = await handle.stat();
    if (size > MAX_MANIFEST_BYTES) {
      throw new AegisError(
        'MANIFEST_INVALID',
        `agent.yaml is ${formatBytes(size)}; manifests are capped at ${formatBytes(MAX_MANIFEST_BYTES)}`,
      );
    }
    text = await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
  return parseManifestText(text, 'agent.yaml', agentDir, join(agentDir, 'agent.yaml')).agent;
}
