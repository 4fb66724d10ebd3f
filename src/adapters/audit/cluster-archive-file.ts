/**
 * The cluster archive as a file (domain/audit/cluster-archive.ts): written from the cluster ledger in PostgreSQL by
 * `aegis audit export --cluster`, verified offline by `aegis audit verify <archive>`.
 */

import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Writable } from 'node:stream';
import {
  CLUSTER_EXPORT_FORMAT,
  type ClusterArchiveHeader,
  ClusterArchiveVerifier,
  type ClusterVerification,
  isClusterArchiveLine,
} from '../../domain/audit/cluster-archive.ts';
import { formatExportLine } from '../../domain/audit/export-format.ts';
import { AegisError } from '../../domain/errors.ts';
import {
  checkEndorsements,
  nodeHasher,
  parseEd25519PublicKey,
  publicKeyId,
  verifyEd25519,
} from './node-key.ts';
import type { PostgresClusterLedger } from './postgres-cluster-ledger.ts';

/** Writes every published node's chain, heads and key to `out`. Returns the counts. */
export async function writeClusterArchive(
  cluster: PostgresClusterLedger,
  out: Writable,
  exportedAt: string,
): Promise<{ nodes: number; entries: number; heads: number }> {
  const nodes = await cluster.nodes();
  const header: ClusterArchiveHeader = {
    type: 'cluster',
    format: CLUSTER_EXPORT_FORMAT,
    exportedAt,
    nodes: nodes.map((n) => ({ node: n.node, keyId: n.keyId })),
  };
  const counts = { nodes: nodes.length, entries: 0, heads: 0 };
  let chunk = `${JSON.stringify(header)}\n`;
  const write = async (text: string) => {
    if (!out.write(text)) await once(out, 'drain');
  };
  for (const node of nodes) {
    for await (const record of cluster.exportNode(node, exportedAt)) {
      if (record.type === 'entry') counts.entries += 1;
      else if (record.type === 'head') counts.heads += 1;
      chunk += `${formatExportLine(record)}\n`;
      if (chunk.length >= 1 << 16) {
        await write(chunk);
        chunk = '';
      }
    }
  }
  if (chunk !== '') await write(chunk);
  return counts;
}

/** True when `file` starts with a cluster archive header. */
export async function isClusterArchiveFile(file: string): Promise<boolean> {
  const lines = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  try {
    for await (const line of lines) return isClusterArchiveLine(line);
  } catch {
    return false;
  } finally {
    lines.close();
  }
  return false;
}

/** Streams `file` through ClusterArchiveVerifier; each node's heads must verify with the key its section carries. */
export async function verifyClusterArchiveFile(file: string): Promise<ClusterVerification> {
  const verifier = new ClusterArchiveVerifier((header) => {
    const key = parseEd25519PublicKey(header.publicKey);
    const keyId = publicKeyId(key);
    if (keyId !== header.keyId) {
      throw new Error(`node ${header.node}'s section names key ${header.keyId} but carries key ${keyId}`);
    }
    const trusted = new Map([[keyId, key]]);
    for (const retired of checkEndorsements(keyId, key, header.keys ?? [])) {
      trusted.set(retired.keyId, parseEd25519PublicKey(retired.publicKey));
    }
    // Keys the node published before a rotation (each vouched for by its chain when published; see
    // postgres-cluster-ledger.ts) — as self-attested as the current key in an archive nobody pinned.
    for (const published of header.clusterKeys ?? []) {
      const parsed = parseEd25519PublicKey(published.publicKey);
      trusted.set(publicKeyId(parsed), parsed);
    }
    return {
      sha256Hex: nodeHasher.sha256Hex,
      verifySignature: (message, signature, headKeyId) => {
        const signer = trusted.get(headKeyId);
        return signer !== undefined && verifyEd25519(signer, message, signature);
      },
    };
  });
  const stream = createReadStream(file, { encoding: 'utf8' });
  try {
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', reject);
    });
  } catch (error) {
    throw new AegisError('NOT_FOUND', `cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
  try {
    for await (const line of lines) if (!verifier.pushLine(line)) break;
  } finally {
    lines.close();
    stream.destroy();
  }
  return verifier.finish();
}

/** One line per problem, for the CLI: chains first, then archive problems, then contradictions. */
export function describeClusterProblems(result: ClusterVerification): string[] {
  const lines: string[] = [];
  for (const n of result.nodes) {
    if (!n.result.ok) {
      lines.push(
        `node ${n.node}: ${n.result.message} (${n.result.problem}, first bad seq ${n.result.firstBadSeq})`,
      );
    }
  }
  for (const p of result.archiveProblems) lines.push(p);
  for (const c of result.contradictions) lines.push(`${c.problem}: ${c.message}`);
  return lines;
}
