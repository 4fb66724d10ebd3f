import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { describe, it } from 'node:test';
import type { Principal } from '../domain/auth/api-key.ts';
import { challengeText } from '../domain/edge/protocol.ts';
import { EdgeNodes } from './edge-nodes.ts';
import { ManualClock } from './fakes/manual-clock.ts';
import { MemoryAuditLog } from './fakes/memory-audit-log.ts';
import { MemoryStore } from './fakes/memory-store.ts';

const admin: Principal = { id: 'key_admin', name: 'admin', scopes: ['admin'], rateLimit: null };
const reader: Principal = { id: 'key_read', name: 'r', scopes: ['read'], rateLimit: null };

function setup() {
  const store = new MemoryStore();
  const audit = new MemoryAuditLog();
  const clock = new ManualClock();
  let n = 0;
  const nodes = new EdgeNodes({
    store,
    audit,
    clock,
    hasher: { sha256Hex: (text) => `h(${text})` },
    random: { hex128: () => `${(n++).toString(16)}x`.padEnd(32, '0') },
    verify: (pem, message, signature) =>
      verify(null, Buffer.from(message), createPublicKey(pem), Buffer.from(signature, 'base64')),
  });
  const key = generateKeyPairSync('ed25519');
  const pem = String(key.publicKey.export({ type: 'spki', format: 'pem' }));
  const signed = (nonce: string, nodeId: string | null) =>
    sign(null, Buffer.from(challengeText(nonce, nodeId)), key.privateKey).toString('base64');
  return { store, audit, clock, nodes, pem, signed };
}

describe('EdgeNodes (enrolment, authentication, revocation)', () => {
  it('creates tokens only for admins, stores only their hash, and audits them', async () => {
    const { nodes, store, audit } = setup();
    await assert.rejects(nodes.createToken(reader, {}), { code: 'PERMISSION_DENIED' });
    await assert.rejects(nodes.createToken(admin, { labels: { 'bad key!': 'x' } }), { code: 'USAGE' });
    await assert.rejects(nodes.createToken(admin, { ttlMs: 31 * 24 * 3600_000 }), { code: 'USAGE' });
    const { token, record } = await nodes.createToken(admin, { labels: { site: 'lab' }, ttlMs: 60_000 });
    assert.match(token, /^aegis_edge_[0-9a-fx]{64}$/);
    assert.equal('hash' in record, false);
    assert.equal(
      await store.consumeEdgeToken(token, 'now', 'x'),
      undefined,
      'the text is not what is stored',
    );
    assert.deepEqual(
      audit.entries.map((e) => [e.kind, e.data['by']]),
      [['edge.token-created', 'key_admin']],
    );
  });

  it("enrols once per token (its labels exactly the token's); a reuse, a wrong signature, an expiry are refused and audited", async () => {
    const { nodes, audit, clock, pem, signed } = setup();
    const { token } = await nodes.createToken(admin, { labels: { site: 'lab', zone: 'a' }, ttlMs: 60_000 });
    const request = (signature: string) => ({
      token,
      publicKeyPem: pem,
      signature,
      labels: { zone: 'a' },
      runtimes: ['sandbox'],
      capacity: 2,
    });
    await assert.rejects(nodes.enrol(request(signed('other-nonce', null)), 'n1', 'peer', 'edge_1'), {
      code: 'UNAUTHENTICATED',
      message: /signature does not match/,
    });
    const record = await nodes.enrol(request(signed('n2', null)), 'n2', 'peer', 'edge_1');
    assert.deepEqual(
      record.labels,
      { site: 'lab', zone: 'a' },
      'a subset declared: the token grants the rest',
    );
    await assert.rejects(nodes.enrol(request(signed('n3', null)), 'n3', 'peer', 'edge_2'), {
      message: /already used/,
    });
    const late = await nodes.createToken(admin, { ttlMs: 1000 });
    clock.advance(2000);
    await assert.rejects(
      nodes.enrol({ ...request(signed('n4', null)), token: late.token }, 'n4', 'peer', 'edge_3'),
      { message: /expired/ },
    );
    assert.deepEqual(
      audit.entries.filter((e) => e.kind === 'edge.refused').map((e) => e.data['reason']),
      [
        'enrolment signature does not match the public key',
        'unknown or already used enrolment token',
        `enrolment token ${late.record.id} expired`,
      ],
    );
  });

  it('attacker: an edge declaring a label its token does not carry (another key or value) is refused and audited', async () => {
    const { nodes, store, audit, pem, signed } = setup();
    for (const [tokenLabels, declared, ungranted] of [
      [{ site: 'evil' }, { zone: 'secure' }, 'zone=secure'],
      [{ site: 'evil' }, { site: 'lab' }, 'site=lab'],
      [{}, { zone: 'secure', site: 'evil' }, 'site=evil, zone=secure'],
    ] as const) {
      const { token, record: made } = await nodes.createToken(admin, { labels: tokenLabels });
      await assert.rejects(
        nodes.enrol(
          {
            token,
            publicKeyPem: pem,
            signature: signed('n', null),
            labels: declared,
            runtimes: [],
            capacity: 1,
          },
          'n',
          'peer',
          `edge_${made.id}`,
        ),
        (error: Error & { code?: string; hint?: string }) => {
          assert.equal(error.code, 'PERMISSION_DENIED');
          assert.match(error.message, new RegExp(`labels ${ungranted} declared by the edge are not granted`));
          assert.match(error.message, /aegis edge token create .*--label/);
          return true;
        },
      );
      assert.equal(await store.getEdgeNode(`edge_${made.id}`), undefined, 'nothing enrolled');
      // The token is spent: the same token with acceptable labels is refused too.
      await assert.rejects(
        nodes.enrol(
          { token, publicKeyPem: pem, signature: signed('m', null), labels: {}, runtimes: [], capacity: 1 },
          'm',
          'peer',
          'edge_retry',
        ),
        { message: /already used/ },
      );
    }
    const refused = audit.entries
      .filter((e) => e.kind === 'edge.refused')
      .map((e) => String(e.data['reason']));
    assert.equal(refused.filter((r) => /not granted by enrolment token/.test(r)).length, 3);
    assert.equal(await store.listEdgeNodes().then((list) => list.length), 0);
  });

  it('signals the cluster (topic edge) on enrolment and revocation, so every server reloads the edge at once', async () => {
    const store = new MemoryStore();
    const signals: string[] = [];
    store.onSignal((topic, id) => signals.push(`${topic}:${id}`));
    const key = generateKeyPairSync('ed25519');
    const nodes = new EdgeNodes({
      store,
      audit: new MemoryAuditLog(),
      clock: new ManualClock(),
      hasher: { sha256Hex: (text) => `h(${text})` },
      random: { hex128: () => '0'.repeat(32) },
      verify: (pem, message, signature) =>
        verify(null, Buffer.from(message), createPublicKey(pem), Buffer.from(signature, 'base64')),
      signals: store,
    });
    const { token } = await nodes.createToken(admin, {});
    await nodes.enrol(
      {
        token,
        publicKeyPem: String(key.publicKey.export({ type: 'spki', format: 'pem' })),
        signature: sign(null, Buffer.from(challengeText('n', null)), key.privateKey).toString('base64'),
        labels: {},
        runtimes: [],
        capacity: 1,
      },
      'n',
      'peer',
      'edge_1',
    );
    await nodes.revoke(admin, 'edge_1');
    assert.deepEqual(
      signals.filter((s) => s.startsWith('edge:')),
      ['edge:edge_1', 'edge:edge_1'],
    );
  });

  it('authenticates by a signed nonce; a revoked edge is refused and revocation tells the hub', async () => {
    const { nodes, pem, signed, audit } = setup();
    const { token } = await nodes.createToken(admin, {});
    await nodes.enrol(
      { token, publicKeyPem: pem, signature: signed('n', null), labels: {}, runtimes: [], capacity: 1 },
      'n',
      'peer',
      'edge_1',
    );
    assert.equal((await nodes.authenticate('edge_1', signed('m', 'edge_1'), 'm', 'peer')).id, 'edge_1');
    // A signature for another node id (or another nonce) does not authenticate.
    await assert.rejects(nodes.authenticate('edge_1', signed('m', 'edge_2'), 'm', 'peer'), {
      code: 'UNAUTHENTICATED',
    });
    await assert.rejects(nodes.authenticate('edge_9', signed('m', 'edge_9'), 'm', 'peer'), {
      message: /unknown edge node/,
    });
    const cut: string[] = [];
    nodes.onRevoked = (id) => {
      cut.push(id);
      return true;
    };
    await assert.rejects(nodes.revoke(reader, 'edge_1'), { code: 'PERMISSION_DENIED' });
    const revoked = await nodes.revoke(admin, 'edge_1');
    assert.notEqual(revoked.revokedAt, null);
    assert.deepEqual(cut, ['edge_1']);
    await assert.rejects(nodes.authenticate('edge_1', signed('k', 'edge_1'), 'k', 'peer'), {
      message: /revoked/,
    });
    assert.deepEqual(audit.entries.find((e) => e.kind === 'edge.revoked')?.data, {
      node: 'edge_1',
      by: 'key_admin',
      connected: true,
    });
  });
});
