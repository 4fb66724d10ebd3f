/**
 * Human approval of tool calls end to end on a real `aegis server` (issue 14 item 1): an agent whose grants say
 * `approval: required` runs in a live sandbox owned by a non-admin key; its Python code calls `aegis.tools.call`,
 * which blocks while the call is pending. The owner sees the call (with its arguments) in `GET /v1/approvals` and
 * approves it over REST → the call returns its result; an admin denies another through `aegis approvals deny` → the
 * agent gets ToolDenied naming the key; a third (short approvalTimeout) expires → refused. Playing the attacker,
 * another tenant's key sees nothing and its approve is 404 (and the call did not run). Every step is a
 * `tool.approval` entry in the sandbox's ledger.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import {
  apiCall,
  cli,
  killServers,
  pollUntil,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

interface Entry {
  kind: string;
  data: Record<string, unknown>;
}

/** One call per run, chosen by argv[1]; prints one JSON line: the result or the refusal. */
const AGENT_PY = `
import json, sys, aegis
which = sys.argv[1]
name, args = {
    "approve": ("cmd.run", {"argv": ["echo", "approved-run"]}),
    "deny": ("cmd.run", {"argv": ["echo", "denied-run"]}),
    "expire": ("fs.list", {"path": "/workspace"}),
}[which]
try:
    print(json.dumps({"ok": True, "result": aegis.tools.call(name, args)}))
except aegis.ToolDenied as e:
    print(json.dumps({"ok": False, "denied": True, "message": str(e)}))
except aegis.AegisError as e:
    print(json.dumps({"ok": False, "denied": False, "status": e.status, "message": str(e)}))
`;

describe('tool approval end to end: a pending call decided through REST, the CLI, or its timeout', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  const work = mkdtempSync(join(tmpdir(), 'aegis-approval-e2e-'));
  let ownerKey = '';
  let ownerId = '';
  let strangerKey = '';
  let sandboxId = '';

  const call = (method: string, path: string, body?: unknown, key = server.adminKey) =>
    apiCall(server.url, key, method, path, body);

  /** Runs the agent for one scenario; resolves with its JSON line once the call was decided. */
  const agent = async (which: string) => {
    const done = await call(
      'POST',
      `/v1/sandboxes/${sandboxId}/commands`,
      { cmd: ['python3', '/agent/agent.py', which], timeout: '5m' },
      ownerKey,
    );
    assert.equal(done.status, 200, done.text);
    const stdout = done.json['stdout'] as string;
    assert.equal((done.json['command'] as { exitCode: number }).exitCode, 0, stdout + done.json['stderr']);
    return JSON.parse(stdout.trim()) as Record<string, unknown>;
  };
  type Pending = { id: string; tool: string; arguments: unknown; subject: string; owner: string };
  const pendingFor = (tool: string, key = server.adminKey) =>
    pollUntil(
      `a pending ${tool} approval`,
      async () => {
        const listed = await call('GET', '/v1/approvals', undefined, key);
        assert.equal(listed.status, 200, listed.text);
        return (listed.json['approvals'] as Pending[]).find((a) => a.tool === tool);
      },
      60_000,
    );
  const ledger = async () =>
    ((await call('GET', `/v1/sandboxes/${sandboxId}/audit`)).json['entries'] as Entry[]).filter((e) =>
      e.kind.startsWith('tool.'),
    );

  before(async () => {
    dirs = serverDirs();
    server = await startServerProcess({ dirs });
    const dir = join(work, 'careful');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'main.py'), 'print("unused")\n');
    writeFileSync(join(dir, 'agent.py'), AGENT_PY);
    writeFileSync(
      join(dir, 'agent.yaml'),
      stringify({
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name: 'careful' },
        spec: {
          runtime: { language: 'python', entrypoint: 'main.py' },
          security: { resources: { timeout: '10m', memory: '512Mi' } },
          tools: [
            { name: 'cmd.run', allow: ['echo *'], approval: 'required', approvalTimeout: '5m' },
            { name: 'fs.list', approval: 'required', approvalTimeout: '2s' },
          ],
        },
      }),
    );
    const deployed = await cli(['deploy', dir], {
      ...server.env,
      AEGIS_SERVER: server.url,
      AEGIS_API_KEY: server.adminKey,
    });
    assert.equal(deployed.code, 0, deployed.stderr);
    const newKey = async (name: string) => {
      const made = await call('POST', '/v1/keys', { name, scopes: ['read', 'execute'] });
      assert.equal(made.status, 201, made.text);
      return made.json as { key: string; record: { id: string } };
    };
    const owner = await newKey('owner');
    ownerKey = owner.key;
    ownerId = owner.record.id;
    strangerKey = (await newKey('stranger')).key;
    const created = await call('POST', '/v1/sandboxes', { agent: 'careful' }, ownerKey);
    assert.equal(created.status, 201, created.text);
    sandboxId = created.json['id'] as string;
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    dirs?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('attack: the owner approves over REST (another tenant sees nothing and gets 404); the call then runs', async () => {
    const running = agent('approve');
    const pending = await pendingFor('cmd.run', ownerKey);
    assert.deepEqual(
      pending.arguments,
      { argv: ['echo', 'approved-run'] },
      'the approver sees the arguments',
    );
    assert.equal(pending.subject, sandboxId);
    assert.equal(pending.owner, ownerId);

    const strangerList = await call('GET', '/v1/approvals', undefined, strangerKey);
    assert.deepEqual(strangerList.json['approvals'], [], strangerList.text);
    const stolen = await call('POST', `/v1/approvals/${pending.id}/approve`, {}, strangerKey);
    assert.equal(stolen.status, 404, stolen.text);
    assert.ok(!stolen.text.includes('approved-run'));
    const entriesBefore = await ledger();
    assert.ok(
      !entriesBefore.some((e) => e.kind === 'tool.call' && e.data['outcome'] === 'allowed'),
      "the stranger's approve ran nothing",
    );

    const approved = await call('POST', `/v1/approvals/${pending.id}/approve`, {}, ownerKey);
    assert.equal(approved.status, 200, approved.text);
    assert.equal(approved.json['decision'], 'approved');
    const out = await running;
    assert.equal(out['ok'], true, JSON.stringify(out));
    assert.equal((out['result'] as Record<string, unknown>)['stdout'], 'approved-run\n');
    const again = await call('POST', `/v1/approvals/${pending.id}/deny`, {}, ownerKey);
    assert.equal(again.status, 404, 'a decided approval is gone');
  });

  it('an admin denies through `aegis approvals deny`; the agent gets ToolDenied naming the key', async () => {
    const running = agent('deny');
    const pending = await pendingFor('cmd.run');
    const env = { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey };
    const listed = await cli(['approvals', 'ls'], env);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, new RegExp(pending.id));
    assert.match(listed.stdout, /denied-run/, 'the CLI shows the arguments');
    const denied = await cli(['approvals', 'deny', pending.id], env);
    assert.equal(denied.code, 0, denied.stderr);
    assert.match(denied.stdout, /^denied ap_/);
    const out = await running;
    assert.equal(out['denied'], true, JSON.stringify(out));
    assert.match(out['message'] as string, /cmd\.run: approval denied by key /);
  });

  it('an undecided call times out and is refused', async () => {
    const out = await agent('expire');
    assert.equal(out['denied'], true, JSON.stringify(out));
    assert.match(out['message'] as string, /fs\.list: approval timed out/);
  });

  it('the ledger holds each request and decision (who decided), digests only', async () => {
    const entries = await ledger();
    const approvals = entries.filter((e) => e.kind === 'tool.approval');
    assert.deepEqual(
      approvals.map((e) => [e.data['tool'], e.data['state']]),
      [
        ['cmd.run', 'requested'],
        ['cmd.run', 'approved'],
        ['cmd.run', 'requested'],
        ['cmd.run', 'denied'],
        ['fs.list', 'requested'],
        ['fs.list', 'expired'],
      ],
    );
    assert.equal(approvals[1]?.data['decidedBy'], ownerId);
    assert.equal(typeof approvals[3]?.data['decidedBy'], 'string');
    assert.equal(approvals[5]?.data['decidedBy'], null);
    const calls = entries.filter((e) => e.kind === 'tool.call');
    assert.deepEqual(
      calls.map((e) => [e.data['outcome'], e.data['rule'] ?? null]),
      [
        ['allowed', null],
        ['denied', 'approval:denied'],
        ['denied', 'approval:expired'],
      ],
    );
    const text = JSON.stringify(entries);
    assert.ok(!text.includes('approved-run') && !text.includes('denied-run'), 'no arguments in the ledger');
  });
});
