import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { CLUSTER_EXPORT_FORMAT, ClusterArchiveVerifier, isClusterArchiveLine } from './cluster-archive.ts';
import { AUDIT_EXPORT_FORMAT } from './export-format.ts';

/** Crypto that accepts every signature: these tests are about the archive's structure, not the chains. */
const lenient = () => ({
  sha256Hex: (text: string) => createHash('sha256').update(text, 'utf8').digest('hex'),
  verifySignature: () => true,
});

const clusterLine = (nodes: string[]) =>
  JSON.stringify({
    type: 'cluster',
    format: CLUSTER_EXPORT_FORMAT,
    exportedAt: '2026-01-01T00:00:00Z',
    nodes: nodes.map((node) => ({ node, keyId: `k-${node}` })),
  });
const nodeHeader = (node: string) =>
  JSON.stringify({
    type: 'header',
    format: AUDIT_EXPORT_FORMAT,
    node,
    publicKey: 'PEM',
    keyId: `k-${node}`,
    hash: 'sha256',
    canonicalization: 'rfc8785',
    exportedAt: '2026-01-01T00:00:00Z',
  });

function verify(lines: string[]) {
  const verifier = new ClusterArchiveVerifier(lenient);
  for (const line of lines) if (!verifier.pushLine(line)) break;
  return verifier.finish();
}

describe('ClusterArchiveVerifier', () => {
  it('recognises its first line', () => {
    assert.equal(isClusterArchiveLine(clusterLine(['a'])), true);
    assert.equal(isClusterArchiveLine(nodeHeader('a')), false);
    assert.equal(isClusterArchiveLine('not json'), false);
  });

  it('accepts a node that published its key but wrote nothing yet', () => {
    const result = verify([clusterLine(['a']), nodeHeader('a')]);
    assert.deepEqual(result.archiveProblems, []);
    assert.equal(result.ok, true);
  });

  it('reports a listed node whose chain is missing, an unlisted one, and a second section for one node', () => {
    const missing = verify([clusterLine(['a', 'b']), nodeHeader('a')]);
    assert.match(
      missing.archiveProblems.join('\n'),
      /node b is listed in the archive header but its chain is missing/,
    );
    const extra = verify([clusterLine(['a']), nodeHeader('a'), nodeHeader('c')]);
    assert.match(extra.archiveProblems.join('\n'), /node c's chain is in the archive but not listed/);
    const twice = verify([clusterLine(['a']), nodeHeader('a'), nodeHeader('a')]);
    assert.match(twice.archiveProblems.join('\n'), /a second section for node a/);
    for (const r of [missing, extra, twice]) assert.equal(r.ok, false);
  });

  it('refuses a file that does not start with the cluster header', () => {
    const result = verify([nodeHeader('a')]);
    assert.equal(result.ok, false);
    assert.match(
      result.archiveProblems.join('\n'),
      /line 1 is not an aegis\.audit\.cluster-export\/v1 header/,
    );
  });
});
