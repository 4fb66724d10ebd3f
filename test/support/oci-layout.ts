/**
 * A small OCI image layout writer for tests: layers from entry lists (hostile ones included — names with `..`,
 * links, devices, whiteouts), gzip or plain, an image config, index.json → manifest. No registry, no docker.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';

export interface LayoutEntry {
  readonly name: string;
  readonly type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'fifo';
  readonly content?: string | Buffer;
  readonly mode?: number;
  readonly linkname?: string;
}

/** A tar of `entries`, in the order given. */
export async function tarOf(entries: readonly LayoutEntry[]): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve) => tar.on('end', () => resolve()));
  for (const entry of entries) {
    const type = entry.type ?? 'file';
    const header = {
      name: entry.name,
      type,
      mode: entry.mode ?? (type === 'directory' ? 0o755 : 0o644),
      uid: 0,
      gid: 0,
      mtime: new Date(0),
      ...(entry.linkname !== undefined ? { linkname: entry.linkname } : {}),
    };
    if (type === 'file') tar.entry(header, Buffer.from(entry.content ?? ''));
    else tar.entry(header);
  }
  tar.finalize();
  await ended;
  return Buffer.concat(chunks);
}

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export interface WrittenLayout {
  readonly dir: string;
  readonly manifestDigest: string;
  readonly configDigest: string;
  readonly layerDigests: readonly string[];
  /** The blob file of a digest. */
  blob(digest: string): string;
}

/** Writes an OCI image layout with `layers` (each an entry list) under `dir`. */
export async function writeOciLayout(
  dir: string,
  layers: readonly (readonly LayoutEntry[])[],
  options: { gzip?: boolean; env?: string[]; workingDir?: string; cmd?: string[] } = {},
): Promise<WrittenLayout> {
  const blobs = join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const put = (bytes: Buffer): string => {
    const digest = sha256(bytes);
    writeFileSync(join(blobs, digest.slice('sha256:'.length)), bytes);
    return digest;
  };
  const gzip = options.gzip ?? true;
  const layerDescriptors = [];
  const diffIds: string[] = [];
  for (const entries of layers) {
    const tar = await tarOf(entries);
    diffIds.push(sha256(tar));
    const blob = gzip ? gzipSync(tar) : tar;
    layerDescriptors.push({
      mediaType: `application/vnd.oci.image.layer.v1.tar${gzip ? '+gzip' : ''}`,
      digest: put(blob),
      size: blob.length,
    });
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {
        Env: options.env ?? ['PATH=/bin'],
        ...(options.workingDir ? { WorkingDir: options.workingDir } : {}),
        ...(options.cmd ? { Cmd: options.cmd } : {}),
      },
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
  const configDigest = put(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: config.length,
      },
      layers: layerDescriptors,
    }),
  );
  const manifestDigest = put(manifest);
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: manifestDigest,
          size: manifest.length,
          platform: { os: 'linux', architecture: 'amd64' },
        },
      ],
    }),
  );
  return {
    dir,
    manifestDigest,
    configDigest,
    layerDigests: layerDescriptors.map((d) => d.digest),
    blob: (digest) => join(blobs, digest.slice('sha256:'.length)),
  };
}

/** A FROM-scratch image of Debian's busybox-static (/bin/busybox on the host) and a few applet links. */
export function busyboxLayers(): LayoutEntry[][] {
  const applets = ['sh', 'cat', 'echo', 'id', 'touch', 'kill', 'ls'];
  return [
    [
      { name: 'bin/', type: 'directory' },
      { name: 'bin/busybox', content: readFileSync('/bin/busybox'), mode: 0o755 },
      ...applets.map((name): LayoutEntry => ({ name: `bin/${name}`, type: 'symlink', linkname: 'busybox' })),
    ],
  ];
}
