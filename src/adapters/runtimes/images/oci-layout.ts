/**
 * Reads an image's description — which layers, in which order, with which digests, and its config — from
 *   - an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/<hex>`): an index → (an index →)
 *     a manifest, linux/<this arch> or the only one; every JSON blob is read once, hashed and parsed from the same
 *     bytes, and refused when its sha256 is not the digest that named it;
 *   - a `docker save` archive as Docker 20.10 writes it (`manifest.json`, `<config hex>.json`, `<id>/layer.tar`):
 *     the config's name is its digest (the engine's image id) and its `rootfs.diff_ids` pin every layer.
 * The layers themselves are hashed while they are unpacked (unpack.ts) and checked by the caller (store.ts).
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, lstatSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AegisError } from '../../../domain/errors.ts';
import { entryComponents, openBlob } from './unpack.ts';

/** What of an image's config AEGIS uses (the same fields the docker runtime gets from the engine). */
export interface ImageConfig {
  readonly env: readonly string[];
  readonly workingDir?: string;
  readonly entrypoint?: readonly string[];
  readonly cmd?: readonly string[];
  readonly user?: string;
}

export interface LayerRef {
  readonly file: string;
  /** For messages: `layer 2 (sha256:…)`. */
  readonly what: string;
  /** sha256 of the file as stored (OCI layouts), when known. */
  readonly digest?: string;
  /** sha256 of the uncompressed tar (the config's diff_id), when the config lists it. */
  readonly diffId?: string;
}

export interface ImagePlan {
  /** The identity the cache is keyed by: the manifest digest (layout) or the config digest (engine image id). */
  readonly key: string;
  readonly config: ImageConfig;
  readonly layers: readonly LayerRef[];
}

const DIGEST = /^sha256:([a-f0-9]{64})$/;
const MAX_JSON_BYTES = 4 * 1024 * 1024;
const MANIFEST_TYPES = new Set([
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
]);
const INDEX_TYPES = new Set([
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);
const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.docker.image.rootfs.diff.tar',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
]);

interface Descriptor {
  readonly mediaType?: string;
  readonly digest: string;
  readonly size?: number;
  readonly platform?: { readonly os?: string; readonly architecture?: string };
}

export function invalidImage(where: string, why: string, hint?: string): AegisError {
  return new AegisError('MANIFEST_INVALID', `image refused: ${where}: ${why}`, {
    problems: [{ path: 'spec.runtime.image', message: `${where}: ${why}` }],
    ...(hint ? { hint } : {}),
  });
}

/** The Go architecture name of this host (OCI platforms use them). */
export function hostArchitecture(): string {
  const arch = process.arch;
  return arch === 'x64' ? 'amd64' : arch === 'ia32' ? '386' : arch;
}

/** Reads a small file with no-follow, capped; `what` names it in errors. */
function readSmall(file: string, what: string): Buffer {
  const fd = openBlob(file, what);
  try {
    const size = fstatSync(fd).size;
    if (size > MAX_JSON_BYTES) throw invalidImage(what, `is ${size} bytes (more than ${MAX_JSON_BYTES})`);
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

function parseJson<T>(bytes: Buffer, what: string): T {
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch (error) {
    throw invalidImage(what, `is not JSON (${(error as Error).message})`);
  }
}

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** A directory that is one, not a link to one (a hostile layout could point blobs/ anywhere on the host). */
function realDir(path: string, what: string): void {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    throw invalidImage(what, `${path} does not exist`);
  }
  if (!st.isDirectory()) throw invalidImage(what, `${path} is not a directory (a symlink is refused)`);
}

export class OciLayout {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
    realDir(dir, 'the OCI layout');
    const marker = parseJson<{ imageLayoutVersion?: string }>(
      readSmall(join(dir, 'oci-layout'), 'oci-layout'),
      'oci-layout',
    );
    if (typeof marker.imageLayoutVersion !== 'string')
      throw invalidImage(
        'oci-layout',
        'has no imageLayoutVersion',
        'give a directory written as an OCI image layout',
      );
    realDir(join(dir, 'blobs'), 'blobs/');
    realDir(join(dir, 'blobs', 'sha256'), 'blobs/sha256/');
  }

  /** The path of a blob, after checking the digest's form (sha256 only; the hex is the file name). */
  blobPath(digest: string, what: string): string {
    const hex = DIGEST.exec(digest)?.[1];
    if (hex === undefined) throw invalidImage(what, `digest "${digest}" is not sha256:<64 hex>`);
    return join(this.dir, 'blobs', 'sha256', hex);
  }

  /** A JSON blob, verified against its digest (hashed and parsed from the same bytes). */
  json<T>(descriptor: Descriptor, what: string): T {
    const bytes = readSmall(this.blobPath(descriptor.digest, what), `${what} (${descriptor.digest})`);
    const actual = sha256(bytes);
    if (actual !== descriptor.digest)
      throw invalidImage(
        what,
        `blob ${descriptor.digest} has digest ${actual}`,
        'the layout was altered or is corrupt',
      );
    return parseJson<T>(bytes, what);
  }

  /** The manifest this host runs: from index.json, through nested indexes, linux/<arch> or the only one. */
  manifestDescriptor(): Descriptor {
    let index = parseJson<{ manifests?: Descriptor[] }>(
      readSmall(join(this.dir, 'index.json'), 'index.json'),
      'index.json',
    );
    let where = 'index.json';
    for (let depth = 0; depth < 4; depth++) {
      const chosen = pickManifest(index.manifests ?? [], where);
      if (chosen.mediaType === undefined || MANIFEST_TYPES.has(chosen.mediaType)) return chosen;
      if (!INDEX_TYPES.has(chosen.mediaType))
        throw invalidImage(where, `unknown media type ${chosen.mediaType}`);
      index = this.json<{ manifests?: Descriptor[] }>(chosen, `index ${chosen.digest}`);
      where = `index ${chosen.digest}`;
    }
    throw invalidImage('index.json', 'indexes nest more than 4 deep');
  }

  plan(): ImagePlan {
    const descriptor = this.manifestDescriptor();
    const manifest = this.json<{ config?: Descriptor; layers?: Descriptor[] }>(descriptor, 'the manifest');
    if (manifest.config === undefined || !Array.isArray(manifest.layers))
      throw invalidImage('the manifest', 'has no config or no layers');
    const config = this.json<RawConfig>(manifest.config, 'the image config');
    const diffIds = config.rootfs?.diff_ids ?? [];
    if (diffIds.length !== manifest.layers.length)
      throw invalidImage(
        'the image config',
        `lists ${diffIds.length} diff_ids for ${manifest.layers.length} layers`,
      );
    const layers = manifest.layers.map((layer, i): LayerRef => {
      const what = `layer ${i + 1} (${layer.digest})`;
      if (layer.mediaType !== undefined && !LAYER_TYPES.has(layer.mediaType))
        throw invalidImage(
          what,
          `media type ${layer.mediaType} is not supported`,
          'use tar or tar+gzip layers',
        );
      return { file: this.blobPath(layer.digest, what), what, digest: layer.digest, diffId: diffIds[i]! };
    });
    return { key: descriptor.digest, config: imageConfigOf(config), layers };
  }
}

function pickManifest(manifests: readonly Descriptor[], where: string): Descriptor {
  const runnable = manifests.filter(
    (m) => m.platform === undefined || (m.platform.os !== 'unknown' && m.platform.architecture !== 'unknown'),
  );
  if (runnable.length === 1) return runnable[0]!;
  const arch = hostArchitecture();
  const ours = runnable.filter((m) => m.platform?.os === 'linux' && m.platform.architecture === arch);
  if (ours.length >= 1) return ours[0]!;
  throw invalidImage(
    where,
    runnable.length === 0
      ? 'lists no manifest'
      : `lists ${runnable.length} manifests and none for linux/${arch}`,
  );
}

interface RawConfig {
  readonly config?: {
    readonly Env?: string[] | null;
    readonly WorkingDir?: string;
    readonly Entrypoint?: string[] | null;
    readonly Cmd?: string[] | null;
    readonly User?: string;
  };
  readonly rootfs?: { readonly diff_ids?: string[] };
}

function imageConfigOf(raw: RawConfig): ImageConfig {
  const c = raw.config ?? {};
  const strings = (v: unknown): string[] | undefined =>
    Array.isArray(v) && v.every((s) => typeof s === 'string') ? v : undefined;
  const env = strings(c.Env) ?? [];
  const entrypoint = strings(c.Entrypoint);
  const cmd = strings(c.Cmd);
  return {
    env,
    ...(typeof c.WorkingDir === 'string' && c.WorkingDir !== '' ? { workingDir: c.WorkingDir } : {}),
    ...(entrypoint ? { entrypoint } : {}),
    ...(cmd ? { cmd } : {}),
    ...(typeof c.User === 'string' && c.User !== '' ? { user: c.User } : {}),
  };
}

/**
 * A `docker save` archive unpacked into `dir` (Docker 20.10's format). `imageId` (the engine's `sha256:…` id) is
 * the config's digest: the config is checked against it, and its diff_ids pin the layers.
 */
export function dockerArchivePlan(dir: string, imageId: string): ImagePlan {
  const entries = parseJson<{ Config?: string; Layers?: string[] }[]>(
    readSmall(join(dir, 'manifest.json'), 'manifest.json'),
    'manifest.json',
  );
  const entry = entries[0];
  if (entries.length !== 1 || entry?.Config === undefined || !Array.isArray(entry.Layers))
    throw invalidImage('the engine export', 'manifest.json does not describe exactly one image');
  const inside = (name: string, what: string) => join(dir, ...entryComponents(name, what));
  const bytes = readSmall(inside(entry.Config, 'the image config'), 'the image config');
  if (sha256(bytes) !== imageId)
    throw invalidImage(
      'the engine export',
      `its config has digest ${sha256(bytes)}, not the image id ${imageId}`,
    );
  const config = parseJson<RawConfig>(bytes, 'the image config');
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== entry.Layers.length)
    throw invalidImage(
      'the image config',
      `lists ${diffIds.length} diff_ids for ${entry.Layers.length} layers`,
    );
  const layers = entry.Layers.map((name, i): LayerRef => {
    const what = `layer ${i + 1} (${diffIds[i]})`;
    return { file: inside(name, what), what, diffId: diffIds[i]! };
  });
  return { key: imageId, config: imageConfigOf(config), layers };
}
