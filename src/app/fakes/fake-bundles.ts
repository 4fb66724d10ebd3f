/**
 * AgentBundles for use-case tests: "bundles" are the UTF-8 JSON of a CompiledAgent; the digest is a cheap
 * non-cryptographic hash (FNV-1a, hex-padded) — tests need distinct digests, not security.
 */
import { AegisError } from '../../domain/errors.ts';
import type { CompiledAgent } from '../../domain/manifest/compiled.ts';
import type { AgentBundles, BundleLimits } from '../ports.ts';

export class FakeBundles implements AgentBundles {
  readonly limits: BundleLimits = {
    maxBundleBytes: 1024 * 1024,
    maxUnpackedBytes: 4 * 1024 * 1024,
    maxFileBytes: 1024 * 1024,
    maxEntries: 100,
  };
  readonly opened = new Set<string>();
  readonly forgotten: string[] = [];

  static encode(agent: CompiledAgent): Uint8Array {
    return new TextEncoder().encode(JSON.stringify(agent));
  }

  digest(bundle: Uint8Array): string {
    let hash = 0x811c9dc5;
    for (const byte of bundle) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
    return hash.toString(16).padStart(64, '0');
  }

  async open(digest: string, bundle: Uint8Array): Promise<CompiledAgent> {
    if (this.digest(bundle) !== digest) throw new AegisError('INTERNAL', 'digest does not match the bundle');
    let agent: CompiledAgent;
    try {
      agent = JSON.parse(new TextDecoder().decode(bundle)) as CompiledAgent;
    } catch {
      throw new AegisError('USAGE', 'the bundle is not a gzip tar archive');
    }
    this.opened.add(digest);
    return agent;
  }

  async forget(digest: string): Promise<void> {
    this.opened.delete(digest);
    this.forgotten.push(digest);
  }
}
