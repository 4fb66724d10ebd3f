/**
 * The image cache: resolves `spec.runtime.image` to a read-only root directory, unpacked once per image and kept
 * under `<dir>/<hex of the key>/` (`rootfs/` and `image.json`, the config AEGIS uses). The key is the manifest
 * digest of an OCI layout, or the engine's image id (its config digest).
 *
 * Made atomically: a private temporary directory (`<dir>/.tmp-…`, root-only) receives the layers, is checked
 * (every blob digest, every diff_id), gets the mount points AEGIS binds over, and is renamed into place in one
 * step. Two executions racing on the same image both unpack; the first rename wins, the second finds the entry
 * and throws its own copy away. In one process, concurrent resolutions of one key share one promise. A tree whose
 * digests did not all match is never renamed: nothing unverified is ever visible under a key.
 * `<dir>` is 0700 root: the agent's uid cannot reach the cache on the host; runsc's gofer (root) reads it.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { AegisError } from '../../../domain/errors.ts';
import { type ImageRef, parseImageRef } from '../../../domain/runtime/image-ref.ts';
import type { DockerEngine } from '../docker/engine.ts';
import { imageId } from '../docker/images.ts';
import {
  dockerArchivePlan,
  type ImageConfig,
  type ImagePlan,
  invalidImage,
  OciLayout,
} from './oci-layout.ts';
import { DEFAULT_UNPACK_BUDGET, LayerUnpacker, type UnpackBudget } from './unpack.ts';

export interface ResolvedImage {
  /** `sha256:<hex>`: the manifest digest (layout) or the engine's image id. */
  readonly key: string;
  /** The read-only root directory (root-owned; mount points for AEGIS's binds exist). */
  readonly rootfs: string;
  readonly config: ImageConfig;
}

export interface ImageStoreOptions {
  /** Cache directory. @default $AEGIS_HOME/images, given by the composition root */
  readonly dir: string;
  /** @default 4 GiB of files, 500 000 entries */
  readonly budget?: UnpackBudget;
}

/** The cache when no composition root names one: root's /var/lib/aegis/images, else ~/.cache/aegis/images. */
export function defaultImageCacheDir(): string {
  if (process.getuid?.() === 0) return '/var/lib/aegis/images';
  return join(process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache'), 'aegis', 'images');
}

/** Directories and files every AEGIS runtime binds over the image's root (made so the root is never written). */
const MOUNT_DIRS = ['proc', 'dev', 'sys', 'tmp', 'agent', 'workspace', 'run', 'run/aegis'];
const MOUNT_FILES = ['run/aegis/input.json', 'run/aegis/output.json'];

export class ImageStore {
  readonly dir: string;
  readonly #budget: UnpackBudget;
  readonly #pending = new Map<string, Promise<ResolvedImage>>();

  constructor(options: ImageStoreOptions) {
    this.dir = options.dir;
    this.#budget = options.budget ?? DEFAULT_UNPACK_BUDGET;
  }

  /**
   * Resolves a manifest's `spec.runtime.image` (`agentDir` anchors relative layout paths). An engine image needs
   * `engine`; without one it is RUNTIME_UNAVAILABLE naming how to get one.
   */
  resolve(value: string, agentDir: string, engine: (() => DockerEngine) | undefined): Promise<ResolvedImage> {
    const ref = parseImageRef(value, agentDir);
    if (ref.kind === 'layout') return this.resolveLayout(ref.path);
    if (engine === undefined) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `spec.runtime.image "${value}" names an image in a Docker Engine, and none is configured`,
        {
          problems: [{ path: 'spec.runtime.image', message: 'no Docker Engine to export the image from' }],
          hint: 'start dockerd and set AEGIS_DOCKER_HOST, or give an OCI image layout directory (./dir or oci:/path)',
        },
      );
    }
    return this.resolveEngine(engine(), ref);
  }

  /** An OCI image layout directory. */
  resolveLayout(path: string): Promise<ResolvedImage> {
    const layout = new OciLayout(path);
    const key = layout.manifestDescriptor().digest;
    return this.#once(
      key,
      async () => layout.plan(),
      async () => {},
    );
  }

  /** An image of the local Docker Engine, exported with `GET /images/{name}/get`. */
  async resolveEngine(
    engine: DockerEngine,
    ref: Extract<ImageRef, { kind: 'engine' }>,
  ): Promise<ResolvedImage> {
    const id = await imageId(engine, ref.name);
    if (id === undefined) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `spec.runtime.image: the local Docker Engine has no image "${ref.name}"`,
        {
          problems: [{ path: 'spec.runtime.image', message: `no image ${ref.name} in the local engine` }],
          hint: `build it from a root filesystem directory: aegis image build <dir> --tag ${ref.name} (no registry is pulled from)`,
        },
      );
    }
    let exportDir: string | undefined;
    return this.#once(
      id,
      async (tmp) => {
        exportDir = join(tmp, 'export');
        mkdirSync(exportDir, { mode: 0o700 });
        const archive = join(tmp, 'export.tar');
        await engine.download(`/images/${encodeURIComponent(id)}/get`, archive);
        await new LayerUnpacker(exportDir, this.#budget).apply(archive, 'the engine export', {
          whiteouts: false,
        });
        rmSync(archive, { force: true });
        return dockerArchivePlan(exportDir, id);
      },
      async () => {
        if (exportDir) rmSync(exportDir, { recursive: true, force: true });
      },
    );
  }

  #once(
    key: string,
    plan: (tmp: string) => Promise<ImagePlan>,
    cleanup: () => Promise<void>,
  ): Promise<ResolvedImage> {
    const hex = /^sha256:([a-f0-9]{64})$/.exec(key)?.[1];
    if (hex === undefined) throw invalidImage('the image', `its key ${key} is not a sha256 digest`);
    const done = this.#cached(key, hex);
    if (done) return Promise.resolve(done);
    let pending = this.#pending.get(key);
    if (pending === undefined) {
      pending = this.#build(key, hex, plan, cleanup).finally(() => this.#pending.delete(key));
      this.#pending.set(key, pending);
    }
    return pending;
  }

  #cached(key: string, hex: string): ResolvedImage | undefined {
    const entry = join(this.dir, hex);
    try {
      const config = JSON.parse(readFileSync(join(entry, 'image.json'), 'utf8')) as ImageConfig;
      return { key, rootfs: join(entry, 'rootfs'), config };
    } catch {
      return undefined;
    }
  }

  async #build(
    key: string,
    hex: string,
    plan: (tmp: string) => Promise<ImagePlan>,
    cleanup: () => Promise<void>,
  ): Promise<ResolvedImage> {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    chmodSync(this.dir, 0o700);
    const tmp = join(this.dir, `.tmp-${hex.slice(0, 12)}-${randomBytes(6).toString('hex')}`);
    mkdirSync(tmp, { mode: 0o700 });
    try {
      const image = await plan(tmp);
      const rootfs = join(tmp, 'rootfs');
      mkdirSync(rootfs, { mode: 0o755 });
      const unpacker = new LayerUnpacker(rootfs, this.#budget);
      for (const layer of image.layers) {
        const { digest, diffId } = await unpacker.apply(layer.file, layer.what);
        if (layer.digest !== undefined && digest !== layer.digest)
          throw invalidImage(layer.what, `has digest ${digest}`, 'the layout was altered or is corrupt');
        if (layer.diffId !== undefined && diffId !== layer.diffId)
          throw invalidImage(layer.what, `unpacks to ${diffId}, not the config's diff_id ${layer.diffId}`);
      }
      await cleanup();
      addMountPoints(rootfs);
      chmodSync(rootfs, 0o755);
      writeFileSync(join(tmp, 'image.json'), JSON.stringify(image.config), { mode: 0o644 });
      try {
        renameSync(tmp, join(this.dir, hex));
      } catch (error) {
        // Another process made it first (ENOTEMPTY/EEXIST): use theirs.
        const theirs = this.#cached(key, hex);
        if (theirs === undefined) throw error;
        rmSync(tmp, { recursive: true, force: true });
        return theirs;
      }
      return { key, rootfs: join(this.dir, hex, 'rootfs'), config: image.config };
    } catch (error) {
      await cleanup().catch(() => {});
      rmSync(tmp, { recursive: true, force: true });
      throw error;
    }
  }
}

/** Mount points AEGIS binds over, made in the image (replacing a symlink there: nothing is ever followed). */
function addMountPoints(rootfs: string): void {
  for (const dir of MOUNT_DIRS) {
    const path = join(rootfs, dir);
    if (lstatOr(path)?.isDirectory()) continue;
    rmSync(path, { recursive: true, force: true });
    mkdirSync(path, { mode: dir === 'tmp' ? 0o1777 : 0o755 });
    chmodSync(path, dir === 'tmp' ? 0o1777 : 0o755);
  }
  for (const file of MOUNT_FILES) {
    const path = join(rootfs, file);
    if (lstatOr(path)?.isFile()) continue;
    rmSync(path, { recursive: true, force: true });
    writeFileSync(path, '', { mode: 0o644 });
  }
}

function lstatOr(path: string): ReturnType<typeof lstatSync> | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}
