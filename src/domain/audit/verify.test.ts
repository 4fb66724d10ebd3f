/**
 * Chain verification against every kind of tampering, with the real primitives (SHA-256, Ed25519) from node:crypto
 * injected — the domain itself does no crypto.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, hash, sign, verify } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  type ChainLink,
  type ChainTip,
  chainNext,
  EMPTY_TIP,
  fromLink,
  GENESIS_HASH,
  headMessage,
  linkHash,
  type SignedHead,
} from './entry.ts';
import {
  AUDIT_EXPORT_FORMAT,
  type AuditExportHeader,
  ExportVerifier,
  exportRecords,
  formatExportLine,
} from './export-format.ts';
import { type AuditTampered, type AuditVerification, type ChainCrypto, verifyChain } from './verify.ts';

const sha256Hex = (text: string) => hash('sha256', text, 'hex');
const nodeKey = generateKeyPairSync('ed25519');
const otherKey = generateKeyPairSync('ed25519');
const KEY_ID = 'node0000node0000';

const crypto: ChainCrypto = {
  sha256Hex,
  verifySignature: (message, signature, keyId) =>
    keyId === KEY_ID &&
    verify(null, Buffer.from(message), nodeKey.publicKey, Buffer.from(signature, 'base64')),
};

function signHead(tip: ChainTip, key = nodeKey.privateKey): SignedHead {
  const head = {
    seq: tip.seq,
    hash: tip.hash,
    ts: `2025-01-01T00:00:${String(tip.seq % 60).padStart(2, '0')}.000Z`,
  };
  return {
    ...head,
    keyId: KEY_ID,
    signature: sign(null, Buffer.from(headMessage(head)), key).toString('base64'),
  };
}

/** A ledger of `count` entries with heads every `headEvery` entries and at the end. */
function ledger(count = 12, headEvery = 3): { links: ChainLink[]; heads: SignedHead[] } {
  const links: ChainLink[] = [];
  const heads: SignedHead[] = [];
  let tip: ChainTip = EMPTY_TIP;
  for (let i = 1; i <= count; i++) {
    const { link } = chainNext(
      tip,
      {
        ts: `2025-01-01T00:00:00.${String(i).padStart(3, '0')}Z`,
        execution: `ex_${Math.ceil(i / 3)}`,
        kind: i % 3 === 1 ? 'execution.created' : i % 3 === 2 ? 'execution.started' : 'execution.finished',
        data: { i, note: `entry ${i}` },
      },
      sha256Hex,
    );
    links.push(link);
    tip = link;
    if (i % headEvery === 0) heads.push(signHead(tip));
  }
  if (heads.at(-1)?.seq !== tip.seq && count > 0) heads.push(signHead(tip));
  return { links, heads };
}

/** Rehashes a link after its fields changed (an attacker who knows the algorithm but not the key). */
function rehash(link: Omit<ChainLink, 'hash'>): ChainLink {
  return { ...link, hash: linkHash(link, sha256Hex) };
}

/** Recomputes every link from `from` (index) on so the chain is self-consistent again. */
function rechainFrom(links: ChainLink[], from: number): ChainLink[] {
  const out = links.slice(0, from);
  for (let i = from; i < links.length; i++) {
    const prev = out[i - 1];
    out.push(rehash({ ...links[i]!, seq: (prev?.seq ?? 0) + 1, prevHash: prev?.hash ?? GENESIS_HASH }));
  }
  return out;
}

function tampered(result: AuditVerification): AuditTampered {
  assert.equal(result.ok, false, `expected tampering to be detected: ${JSON.stringify(result)}`);
  return result as AuditTampered;
}

function expectProblem(result: AuditVerification, problem: string, firstBadSeq: number, message?: RegExp) {
  const t = tampered(result);
  assert.equal(t.problem, problem, t.message);
  assert.equal(t.firstBadSeq, firstBadSeq, t.message);
  if (message) assert.match(t.message, message);
  return t;
}

describe('verifyChain', () => {
  it('accepts an intact chain and reports counts, the newest signed head and the unsigned tail', () => {
    const { links, heads } = ledger(12, 5);
    const result = verifyChain(links, heads, crypto);
    assert.deepEqual(result, {
      ok: true,
      entries: 12,
      heads: 3,
      lastSeq: 12,
      lastHash: links[11]!.hash,
      signedThroughSeq: 12,
      unsignedTail: 0,
    });
    const unsigned = verifyChain(links, heads.slice(0, 2), crypto);
    assert.equal(unsigned.ok && unsigned.unsignedTail, 2);
  });

  it('accepts an empty ledger', () => {
    assert.deepEqual(verifyChain([], [], crypto), {
      ok: true,
      entries: 0,
      heads: 0,
      lastSeq: 0,
      lastHash: GENESIS_HASH,
      signedThroughSeq: 0,
      unsignedTail: 0,
    });
  });

  it('chains from the genesis hash and from seq 1', () => {
    const { links } = ledger(2);
    assert.equal(links[0]!.seq, 1);
    assert.equal(links[0]!.prevHash, '0'.repeat(64));
    assert.equal(links[1]!.prevHash, links[0]!.hash);
    assert.equal(
      links[0]!.hash,
      sha256Hex(
        GENESIS_HASH +
          JSON.stringify(
            JSON.parse(
              `{"data":${links[0]!.dataJson},"execution":"ex_1","kind":"execution.created","prevHash":"${GENESIS_HASH}","seq":1,"ts":"${links[0]!.ts}"}`,
            ),
          ),
      ),
    );
  });

  describe('edited', () => {
    it('data changed, hash left alone', () => {
      const { links, heads } = ledger();
      links[4] = { ...links[4]!, dataJson: '{"i":5,"note":"nothing to see"}' };
      const t = expectProblem(verifyChain(links, heads, crypto), 'edited', 5, /entry seq 5 was edited/);
      assert.deepEqual(t.entry, { seq: 5, kind: 'execution.started', execution: 'ex_2' });
      assert.equal(t.entries, 4);
    });

    it('each field: ts, execution, kind, prevHash, hash', () => {
      for (const change of [
        { ts: '2030-01-01T00:00:00.000Z' },
        { execution: 'ex_other' },
        { execution: null },
        { kind: 'tool.call' },
        { hash: 'f'.repeat(64) },
      ]) {
        const { links, heads } = ledger();
        links[6] = { ...links[6]!, ...change };
        expectProblem(verifyChain(links, heads, crypto), 'edited', 7);
      }
    });

    it('data changed and that entry re-hashed: the next entry still links to the original', () => {
      const { links, heads } = ledger();
      links[4] = rehash({ ...links[4]!, dataJson: '{"i":5}' });
      expectProblem(verifyChain(links, heads, crypto), 'edited', 5, /hash recomputed/);
    });

    it('the last entry edited', () => {
      const { links, heads } = ledger();
      links[11] = { ...links[11]!, dataJson: '{}' };
      expectProblem(verifyChain(links, heads, crypto), 'edited', 12);
    });
  });

  describe('rewritten', () => {
    it('an entry changed and every later hash recomputed: the next signed head no longer matches', () => {
      const { links, heads } = ledger(12, 3);
      const forged = rechainFrom(
        links.map((l, i) => (i === 4 ? { ...l, dataJson: '{"i":5,"note":"rewritten"}' } : l)),
        4,
      );
      // Heads at 3, 6, 9, 12: the one at 3 still matches, the one at 6 does not.
      expectProblem(verifyChain(forged, heads, crypto), 'rewritten', 4, /entries 4–6 were rewritten/);
    });
  });

  describe('deleted', () => {
    it('one entry in the middle', () => {
      const { links, heads } = ledger();
      links.splice(4, 1);
      expectProblem(verifyChain(links, heads, crypto), 'deleted', 5, /entry seq 5 is missing/);
    });

    it('several entries in a row', () => {
      const { links, heads } = ledger();
      links.splice(4, 3);
      expectProblem(verifyChain(links, heads, crypto), 'deleted', 5, /entries 5–7 are missing/);
    });

    it('the first entries', () => {
      const { links, heads } = ledger();
      links.splice(0, 2);
      expectProblem(verifyChain(links, heads, crypto), 'deleted', 1, /entries 1–2 are missing/);
    });

    it('an entry deleted and the later ones renumbered to close the gap', () => {
      const { links, heads } = ledger();
      const renumbered = [...links.slice(0, 4), ...links.slice(5).map((l) => ({ ...l, seq: l.seq - 1 }))];
      expectProblem(verifyChain(renumbered, heads, crypto), 'deleted', 5, /renumbered/);
    });
  });

  describe('inserted', () => {
    it('a forged entry with a correct hash, later entries shifted up', () => {
      const { links, heads } = ledger(12, 100);
      const forged = rehash({
        seq: 5,
        ts: '2025-01-01T00:00:00.500Z',
        execution: 'ex_2',
        kind: 'execution.finished',
        dataJson: '{"status":"succeeded"}',
        prevHash: links[3]!.hash,
      });
      const tamperedLinks = [
        ...links.slice(0, 4),
        forged,
        ...links.slice(4).map((l) => ({ ...l, seq: l.seq + 1 })),
      ];
      expectProblem(verifyChain(tamperedLinks, heads, crypto), 'inserted', 5, /entry seq 5 was inserted/);
    });

    it('a forged entry with a made-up hash, later entries shifted up', () => {
      const { links, heads } = ledger(12, 100);
      const forged: ChainLink = {
        ...links[4]!,
        dataJson: '{"forged":true}',
        prevHash: links[3]!.hash,
        hash: 'e'.repeat(64),
      };
      const tamperedLinks = [
        ...links.slice(0, 4),
        forged,
        ...links.slice(4).map((l) => ({ ...l, seq: l.seq + 1 })),
      ];
      expectProblem(verifyChain(tamperedLinks, heads, crypto), 'inserted', 5);
    });

    it('a forged entry where a signed head sits', () => {
      const { links, heads } = ledger(12, 5);
      const forged = rehash({ ...links[4]!, dataJson: '{"forged":true}' });
      const tamperedLinks = [
        ...links.slice(0, 4),
        forged,
        ...links.slice(4).map((l) => ({ ...l, seq: l.seq + 1 })),
      ];
      expectProblem(verifyChain(tamperedLinks, heads, crypto), 'inserted', 5);
    });

    it('a copy of an entry right after it', () => {
      const { links, heads } = ledger();
      links.splice(5, 0, links[4]!);
      expectProblem(verifyChain(links, heads, crypto), 'inserted', 6, /copy of entry seq 5/);
    });
  });

  describe('reordered', () => {
    it('two entries stored in swapped positions (as lines of an export)', () => {
      const { links, heads } = ledger();
      [links[4], links[5]] = [links[5]!, links[4]!];
      expectProblem(verifyChain(links, heads, crypto), 'reordered', 5);
    });

    it('two entries with their seqs swapped (as rows of a table read by seq)', () => {
      const { links, heads } = ledger();
      const a = links[4]!;
      const b = links[5]!;
      links[4] = { ...b, seq: 5 };
      links[5] = { ...a, seq: 6 };
      expectProblem(verifyChain(links, heads, crypto), 'reordered', 5, /out of order/);
    });

    it('an entry moved several places later', () => {
      const { links, heads } = ledger();
      const [moved] = links.splice(2, 1);
      links.splice(8, 0, moved!);
      expectProblem(verifyChain(links, heads, crypto), 'reordered', 3);
    });
  });

  describe('truncated', () => {
    it('entries removed from the end, before the newest signed head', () => {
      const { links, heads } = ledger(12, 5);
      expectProblem(
        verifyChain(links.slice(0, 8), heads, crypto),
        'truncated',
        9,
        /entries 9–12 were removed/,
      );
    });

    it('every entry removed', () => {
      const { heads } = ledger();
      expectProblem(verifyChain([], heads, crypto), 'truncated', 1);
    });

    it('the tail removed together with its heads is indistinguishable from an older ledger (documented limit)', () => {
      const { links, heads } = ledger(12, 5);
      assert.equal(
        verifyChain(
          links.slice(0, 10),
          heads.filter((h) => h.seq <= 10),
          crypto,
        ).ok,
        true,
      );
    });
  });

  describe('bad-signature', () => {
    it('a head whose hash was altered', () => {
      const { links, heads } = ledger(12, 5);
      heads[1] = { ...heads[1]!, hash: links[3]!.hash };
      expectProblem(verifyChain(links, heads, crypto), 'bad-signature', 10, /head at seq 10/);
    });

    it('a head whose seq or ts was altered', () => {
      for (const change of [{ seq: 11 }, { ts: '2031-01-01T00:00:00.000Z' }]) {
        const { links, heads } = ledger(12, 5);
        heads[1] = { ...heads[1]!, ...change };
        expectProblem(verifyChain(links, heads, crypto), 'bad-signature', heads[1]!.seq);
      }
    });

    it('a head forged with another key, or naming another key', () => {
      const { links, heads } = ledger(12, 5);
      const forged = signHead(links[11]!, otherKey.privateKey);
      expectProblem(verifyChain(links, [...heads.slice(0, 2), forged], crypto), 'bad-signature', 12);
      expectProblem(
        verifyChain(links, [...heads.slice(0, 2), { ...heads[2]!, keyId: 'other' }], crypto),
        'bad-signature',
        12,
      );
    });

    it('a garbage signature', () => {
      const { links, heads } = ledger(12, 5);
      heads[0] = { ...heads[0]!, signature: 'not base64 at all' };
      expectProblem(verifyChain(links, heads, crypto), 'bad-signature', 5);
    });

    it('reports whichever problem comes first by seq', () => {
      const { links, heads } = ledger(12, 5);
      heads[1] = { ...heads[1]!, signature: heads[0]!.signature };
      links[1] = { ...links[1]!, dataJson: '{}' };
      expectProblem(verifyChain(links, heads, crypto), 'edited', 2);
      const again = ledger(12, 5);
      again.heads[0] = { ...again.heads[0]!, signature: again.heads[1]!.signature };
      again.links[8] = { ...again.links[8]!, dataJson: '{}' };
      expectProblem(verifyChain(again.links, again.heads, crypto), 'bad-signature', 5);
    });
  });
});

describe('ExportVerifier', () => {
  const header: AuditExportHeader = {
    type: 'header',
    format: AUDIT_EXPORT_FORMAT,
    publicKey: 'PEM',
    keyId: KEY_ID,
    hash: 'sha256',
    canonicalization: 'rfc8785',
    exportedAt: '2025-01-01T00:00:00.000Z',
  };
  const lines = () => {
    const { links, heads } = ledger(9, 4);
    return [...exportRecords(header, heads, links.map(fromLink))].map(formatExportLine);
  };
  const run = (text: readonly string[], cryptoFor: () => ChainCrypto = () => crypto) => {
    const verifier = new ExportVerifier(cryptoFor);
    for (const line of text) if (!verifier.pushLine(line)) break;
    return verifier.finish();
  };

  it('verifies an intact export: header, heads, then entries', () => {
    const text = lines();
    assert.match(text[0]!, /"type":"header"/);
    assert.match(text[1]!, /"type":"head"/);
    const result = run(text);
    assert.equal(result.ok, true);
    assert.equal(result.header?.keyId, KEY_ID);
  });

  it('detects an edited entry line', () => {
    const text = lines();
    const i = text.findIndex((l) => l.includes('"seq":6,') && l.includes('"type":"entry"'));
    text[i] = text[i]!.replace('"note":"entry 6"', '"note":"entry six"');
    expectProblem(run(text), 'edited', 6);
  });

  it('detects swapped and deleted entry lines', () => {
    const swapped = lines();
    const i = swapped.findIndex((l) => l.includes('"seq":3,') && l.includes('"type":"entry"'));
    [swapped[i], swapped[i + 1]] = [swapped[i + 1]!, swapped[i]!];
    expectProblem(run(swapped), 'reordered', 3);
    const deleted = lines();
    deleted.splice(i, 1);
    expectProblem(run(deleted), 'deleted', 3);
  });

  it('refuses a head line moved after the entries, and lines that are not records', () => {
    const text = lines();
    const head = text.splice(1, 1)[0]!;
    expectProblem(run([...text, head]), 'malformed', 10, /signed head after the entries began/);
    expectProblem(run(['{"type":"entry"}']), 'malformed', 1, /line 1 .*first line must be the header|line 1/);
    const garbage = lines();
    garbage.splice(5, 0, 'not json');
    expectProblem(run(garbage), 'malformed', 2, /line 6/);
    expectProblem(run([]), 'malformed', 1, /empty/);
  });

  it('reports a refused key as bad-signature', () => {
    const t = expectProblem(
      run(lines(), () => {
        throw new Error('the export is signed by key A, not by the pinned key B');
      }),
      'bad-signature',
      4,
    );
    assert.match(t.message, /pinned key/);
  });
});
