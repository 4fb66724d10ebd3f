import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { parseManifestText } from '../adapters/manifest/yaml-loader.ts';
import type { Principal } from '../domain/auth/api-key.ts';
import { AegisError } from '../domain/errors.ts';
import { compileManifest } from '../domain/manifest/compiled.ts';
import { Approvals } from './approvals.ts';
import { ManualClock } from './fakes/manual-clock.ts';
import { MemoryAuditLog } from './fakes/memory-audit-log.ts';
import type { LiveCommandEvents, LiveCommandSpec, LiveSession } from './ports.ts';
import { ToolGateway, type ToolTarget } from './tools.ts';

const sha256Hex = (text: string) => createHash('sha256').update(text).digest('hex');
const key = (id: string, scopes: Principal['scopes'] = ['read', 'execute']): Principal => ({
  id,
  name: id,
  scopes,
  rateLimit: null,
});

function manifest(tools: string) {
  return `apiVersion: aegis.dev/v1
kind: Agent
metadata: {name: tooly}
spec:
  runtime: {language: python, entrypoint: main.py}
  tools:
${tools}
`;
}

function setup() {
  const clock = new ManualClock();
  const audit = new MemoryAuditLog();
  let n = 0;
  const approvals = new Approvals({ audit, clock, newId: () => `ap_${++n}` });
  const gateway = new ToolGateway({ audit, clock, sha256Hex, approvals });
  const ran: string[][] = [];
  const session = {
    async exec(spec: LiveCommandSpec, events: LiveCommandEvents) {
      ran.push([...spec.argv]);
      queueMicrotask(() => events.onExit(0, null));
      return { pid: 1, writeStdin: async () => {}, kill: async () => {} };
    },
  } as unknown as LiveSession;
  const yaml = manifest(
    "    - {name: cmd.run, allow: ['echo *'], approval: required, approvalTimeout: 30s}\n    - fs.read",
  );
  const agent = compileManifest(parseManifestText(yaml, 'agent.yaml', '/tmp/t').manifest, '/tmp/t');
  const target: ToolTarget = { id: 'sb_1', agent, session, env: {}, by: 'agent', owner: 'key_owner' };
  const entries = (kind: string) =>
    audit.links.filter((l) => l.kind === kind).map((l) => JSON.parse(l.dataJson) as Record<string, unknown>);
  /** Lets the gateway reach its wait (it awaits nothing real before it). */
  const pending = async () => {
    for (let i = 0; i < 20 && approvals.list(key('admin', ['admin'])).length === 0; i++)
      await Promise.resolve();
    return approvals.list(key('admin', ['admin']));
  };
  return { clock, approvals, gateway, target, ran, entries, pending };
}

describe('spec.tools approval in the manifest', () => {
  it('refuses approvalTimeout without approval: required, out of range, and an unknown approval, located', () => {
    const yaml = manifest(
      '    - {name: fs.read, approvalTimeout: 5m}\n    - {name: fs.list, approval: required, approvalTimeout: 2h}\n    - {name: fs.write, approval: maybe}',
    );
    const error = (() => {
      try {
        parseManifestText(yaml, 'agent.yaml', '/tmp/t');
      } catch (e) {
        return e as AegisError;
      }
      return undefined;
    })();
    assert.ok(error instanceof AegisError);
    const text = JSON.stringify(error.problems);
    assert.match(text, /approvalTimeout needs approval: required/);
    assert.match(text, /approvalTimeout is between 1s and 1h/);
    assert.match(text, /approval/);
    assert.equal(error.problems.length, 3, text);
  });

  it('compiles approval: required with its timeout (default 10m), and nothing for other grants', () => {
    const yaml = manifest('    - {name: fs.read, approval: required}\n    - fs.list');
    const agent = compileManifest(parseManifestText(yaml, 'agent.yaml', '/tmp/t').manifest, '/tmp/t');
    assert.equal(agent.tools?.[0]?.approvalTimeoutMs, 600_000);
    assert.equal(agent.tools?.[1]?.approvalTimeoutMs, undefined);
  });
});

describe('Approvals through the ToolGateway', () => {
  it('a call waits, is shown with its arguments to the owner only, runs once approved; all in the ledger', async () => {
    const { gateway, target, ran, entries, pending, approvals } = setup();
    const call = gateway.call(target, 'cmd.run', { argv: ['echo', 'hi'] });
    const [shown] = await pending();
    assert.ok(shown);
    assert.deepEqual(shown.arguments, { argv: ['echo', 'hi'] });
    assert.equal(shown.tool, 'cmd.run');
    assert.equal(ran.length, 0, 'nothing runs before the decision');
    assert.deepEqual(approvals.list(key('key_other')), [], "another key does not see the owner's approval");
    assert.throws(
      () => approvals.approve(key('key_other'), shown.id),
      (e: AegisError) => e.code === 'NOT_FOUND',
    );
    assert.throws(
      () => approvals.approve(key('key_owner', ['read']), shown.id),
      (e: AegisError) => e.code === 'PERMISSION_DENIED',
    );
    assert.equal(approvals.list(key('key_owner')).length, 1);
    approvals.approve(key('key_owner'), shown.id);
    const result = await call;
    assert.equal(result.outcome, 'allowed');
    assert.deepEqual(ran, [['echo', 'hi']]);
    assert.deepEqual(
      entries('tool.approval').map((e) => [e['state'], e['decidedBy']]),
      [
        ['requested', null],
        ['approved', 'key_owner'],
      ],
    );
    assert.ok(!JSON.stringify(entries('tool.approval')).includes('"hi"'), 'digests only in the ledger');
    assert.throws(
      () => approvals.deny(key('key_owner'), shown.id),
      (e: AegisError) => e.code === 'NOT_FOUND',
    );
  });

  it('a denied call is refused with the key id, not run, and is no violation', async () => {
    const { gateway, target, ran, entries, pending, approvals } = setup();
    const call = gateway.call(target, 'cmd.run', { argv: ['echo', 'no'] });
    const [shown] = await pending();
    approvals.deny(key('admin', ['admin']), shown!.id);
    const result = await call;
    assert.equal(result.outcome, 'denied');
    assert.equal(result.outcome === 'denied' && result.rule, 'approval:denied');
    assert.match(result.outcome === 'denied' ? result.reason : '', /approval denied by key admin/);
    assert.equal(ran.length, 0);
    const [entry] = entries('tool.call');
    assert.equal(entry?.['outcome'], 'denied');
    assert.equal(entry?.['violation'], undefined);
    assert.deepEqual(
      entries('tool.approval').map((e) => e['state']),
      ['requested', 'denied'],
    );
  });

  it('an undecided call times out and is refused; policy refusals never wait', async () => {
    const { clock, gateway, target, ran, entries, pending } = setup();
    const call = gateway.call(target, 'cmd.run', { argv: ['echo', 'late'] });
    await pending();
    await clock.advance(30_000);
    const result = await call;
    assert.equal(result.outcome === 'denied' && result.rule, 'approval:expired');
    assert.match(result.outcome === 'denied' ? result.reason : '', /approval timed out/);
    assert.equal(ran.length, 0);
    assert.deepEqual(
      entries('tool.approval').map((e) => [e['state'], e['decidedBy']]),
      [
        ['requested', null],
        ['expired', null],
      ],
    );
    const refused = await gateway.call(target, 'cmd.run', { argv: ['rm', '-rf', '/'] });
    assert.equal(refused.outcome === 'denied' && refused.rule, 'cmd.allow');
    assert.equal(entries('tool.approval').length, 2, 'a call policy refuses asks nobody');
  });

  it('without an Approvals use-case an approval-required call is refused (RUNTIME_UNAVAILABLE)', async () => {
    const { target } = setup();
    const bare = new ToolGateway({ audit: new MemoryAuditLog(), clock: new ManualClock(), sha256Hex });
    await assert.rejects(
      bare.call(target, 'cmd.run', { argv: ['echo', 'x'] }),
      (e: AegisError) => e.code === 'RUNTIME_UNAVAILABLE',
    );
  });
});
