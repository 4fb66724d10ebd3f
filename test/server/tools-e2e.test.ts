/**
 * The tool gateway end to end on a real `aegis server` (issue 14): an agent with `spec.tools` (fs.read/write/list,
 * cmd.run with an allow-list, http.fetch with network.allow to a loopback fixture) gets a live sandbox; inside it a
 * Python program calls every tool through the in-sandbox SDK (`aegis.tools.call`), and a Node program through
 * `import aegis from 'aegis'`. Playing the attacker, the code inside tries a path outside its roots, a command not
 * in the allow-list, a host not allowed and an ungranted tool: each raises ToolDenied and is a `tool.call` entry
 * with outcome `denied` (digests only, never the arguments). The same gateway over REST from outside:
 * `POST /v1/sandboxes/{id}/tools/{name}` with the owner's key; another key gets 404; a read-only key 403.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { canonicalJson, type JsonValue } from '../../src/domain/audit/canonical-json.ts';
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

const MARKER = 'tool-args-marker-7c1f';
const digestOf = (args: unknown) =>
  `sha256:${createHash('sha256')
    .update(canonicalJson(args as JsonValue))
    .digest('hex')}`;

/** The agent's program: every tool through the SDK, each result or refusal one JSON line. */
const AGENT_PY = (allowedPort: number, deniedPort: number) => `
import json, aegis

def attempt(label, name, args):
    try:
        result = aegis.tools.call(name, args)
        print(json.dumps({"label": label, "ok": True, "result": result}))
    except aegis.ToolDenied as e:
        print(json.dumps({"label": label, "ok": False, "denied": True, "message": str(e)}))
    except aegis.AegisError as e:
        print(json.dumps({"label": label, "ok": False, "denied": False, "status": e.status, "message": str(e)}))

print(json.dumps({"label": "list", "ok": True, "result": [t["name"] for t in aegis.tools.list()]}))
attempt("write", "fs.write", {"path": "notes/a.txt", "content": "${MARKER} hello"})
attempt("read", "fs.read", {"path": "/workspace/notes/a.txt"})
attempt("ls", "fs.list", {"path": "/workspace/notes"})
attempt("run", "cmd.run", {"argv": ["echo", "ran", "${MARKER}"]})
attempt("fetch", "http.fetch", {"url": "http://127.0.0.1:${allowedPort}/page?q=${MARKER}"})
attempt("deny-path", "fs.read", {"path": "/etc/shadow"})
attempt("deny-write", "fs.write", {"path": "/agent/agent.py", "content": "${MARKER}"})
attempt("deny-climb", "fs.write", {"path": "/workspace/../etc/x", "content": "${MARKER}"})
attempt("deny-cmd", "cmd.run", {"argv": ["rm", "-rf", "/workspace"]})
attempt("deny-host", "http.fetch", {"url": "http://127.0.0.1:${deniedPort}/"})
attempt("deny-tool", "fs.edit", {"path": "notes/a.txt", "oldText": "hello", "newText": "bye"})
attempt("bad-args", "cmd.run", {"argv": []})
`;

/** A one-shot execution's agent: it runs on a live instance (issue 14), so its built-ins work as in a sandbox. */
const ONESHOT_PY = `
import aegis
aegis.tools.call("fs.write", {"path": "/workspace/x", "content": "one-shot"})
try:
    aegis.tools.call("fs.read", {"path": "/etc/shadow"})
    denied = None
except aegis.ToolDenied as e:
    denied = str(e)
aegis.output({"read": aegis.tools.call("fs.read", {"path": "/workspace/x"})["content"], "denied": denied})
`;

const AGENT_MJS = `
import aegis, { ToolDenied } from 'aegis';
const ran = await aegis.tools.call('cmd.run', { argv: ['echo', 'from-node'] });
let denied = '';
try { await aegis.tools.call('cmd.run', { argv: ['cat', '/etc/passwd'] }); } catch (e) { denied = e instanceof ToolDenied ? 'ToolDenied: ' + e.message : 'other: ' + e; }
console.log(JSON.stringify({ stdout: ran.stdout, exitCode: ran.exitCode, denied }));
`;

describe('tool gateway end to end: aegis.tools.call inside a live sandbox, REST from outside', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let site: Server;
  let sitePort = 0;
  let deniedPort = 0;
  const requests: string[] = [];
  const work = mkdtempSync(join(tmpdir(), 'aegis-tools-e2e-'));

  const call = (method: string, path: string, body?: unknown, key = server.adminKey) =>
    apiCall(server.url, key, method, path, body);

  const auditOf = async (id: string) =>
    (await call('GET', `/v1/sandboxes/${id}/audit`)).json['entries'] as Entry[];
  const run = async (id: string, cmd: string[]) => {
    const done = await call('POST', `/v1/sandboxes/${id}/commands`, { cmd, timeout: '2m' });
    assert.equal(done.status, 200, done.text);
    const command = done.json['command'] as { exitCode: number | null };
    return {
      stdout: done.json['stdout'] as string,
      stderr: done.json['stderr'] as string,
      exitCode: command.exitCode,
    };
  };
  const newKey = async (scopes: string[]) => {
    const made = await call('POST', '/v1/keys', { name: `k-${scopes.join('-')}`, scopes });
    assert.equal(made.status, 201, made.text);
    return made.json['key'] as string;
  };

  let sandboxId = '';

  before(async () => {
    site = createServer((request, response) => {
      requests.push(request.url ?? '');
      response.setHeader('content-type', 'text/plain');
      response.end(`fixture page for ${request.url}`);
    });
    await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve));
    sitePort = (site.address() as AddressInfo).port;
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    deniedPort = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));

    dirs = serverDirs();
    server = await startServerProcess({ dirs });
    const dir = join(work, 'tooled');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'main.sh'), 'echo unused\n');
    writeFileSync(join(dir, 'agent.py'), AGENT_PY(sitePort, deniedPort));
    writeFileSync(join(dir, 'agent.mjs'), AGENT_MJS);
    writeFileSync(join(dir, 'oneshot.py'), ONESHOT_PY);
    writeFileSync(
      join(dir, 'agent.yaml'),
      stringify({
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name: 'tooled' },
        spec: {
          runtime: { language: 'python', entrypoint: 'oneshot.py' },
          security: {
            network: { allow: [`127.0.0.1:${sitePort}`] },
            resources: { timeout: '10m', memory: '512Mi' },
          },
          tools: [
            'fs.read',
            'fs.write',
            'fs.list',
            { name: 'cmd.run', allow: ['echo *', 'true', 'cat /workspace/**'] },
            'http.fetch',
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
    const created = await call('POST', '/v1/sandboxes', { agent: 'tooled' });
    assert.equal(created.status, 201, created.text);
    sandboxId = created.json['id'] as string;
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    await new Promise<void>((resolve) => (site ? site.close(() => resolve()) : resolve()));
    dirs?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('attack: the Python SDK calls every granted tool; denied calls raise ToolDenied and are audited as violations', async () => {
    const out = await run(sandboxId, ['python3', '/agent/agent.py']);
    assert.equal(out.exitCode, 0, out.stdout + out.stderr);
    const lines = new Map(
      out.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .map((line) => [line['label'] as string, line]),
    );
    const ok = (label: string) => {
      const line = lines.get(label);
      assert.equal(line?.['ok'], true, `${label}: ${JSON.stringify(line)}`);
      return line['result'] as Record<string, unknown>;
    };
    assert.deepEqual(ok('list'), ['fs.read', 'fs.write', 'fs.list', 'cmd.run', 'http.fetch']);
    assert.deepEqual(ok('write'), { path: '/workspace/notes/a.txt', bytes: MARKER.length + 6 });
    assert.deepEqual(ok('read'), { path: '/workspace/notes/a.txt', content: `${MARKER} hello` });
    assert.ok(JSON.stringify(ok('ls')['entries']).includes('a.txt'), JSON.stringify(ok('ls')));
    const ran = ok('run');
    assert.equal(ran['exitCode'], 0);
    assert.equal(ran['stdout'], `ran ${MARKER}\n`);
    const fetched = ok('fetch');
    assert.equal(fetched['status'], 200, JSON.stringify(fetched));
    assert.equal(fetched['body'], `fixture page for /page?q=${MARKER}`);
    assert.ok(requests.includes(`/page?q=${MARKER}`), 'the fixture site was reached');

    const denied = (label: string, reason: RegExp) => {
      const line = lines.get(label);
      assert.equal(line?.['ok'], false, `${label}: ${JSON.stringify(line)}`);
      assert.equal(line['denied'], true, `${label} raises ToolDenied: ${JSON.stringify(line)}`);
      assert.match(line['message'] as string, reason);
    };
    denied('deny-path', /\/etc\/shadow is outside the paths this agent may read/);
    denied('deny-write', /\/agent\/agent\.py is outside the paths this agent may write/);
    denied('deny-climb', /climbs with "\.\."/);
    denied('deny-cmd', /not in the allow-list/);
    denied('deny-host', new RegExp(`127\\.0\\.0\\.1:${deniedPort} is not allowed`));
    denied('deny-tool', /"fs\.edit" is not granted/);
    const bad = lines.get('bad-args');
    assert.equal(bad?.['denied'], false, 'bad arguments are a usage error, not a refusal');
    assert.equal(bad['status'], 400);
    assert.match(bad['message'] as string, /args\.argv/);
    assert.equal(requests.length, 1, 'the denied host was never reached (nor the fixture twice)');

    const entries = await auditOf(sandboxId);
    const calls = entries.filter((e) => e.kind === 'tool.call' && e.data['by'] === 'agent');
    const byOutcome = (outcome: string) => calls.filter((e) => e.data['outcome'] === outcome);
    assert.equal(byOutcome('allowed').length, 5, JSON.stringify(calls));
    assert.equal(byOutcome('denied').length, 6, JSON.stringify(calls));
    assert.equal(byOutcome('error').length, 1, JSON.stringify(calls));
    for (const entry of byOutcome('denied')) assert.equal(entry.data['violation'], 'tool');
    assert.deepEqual(
      byOutcome('denied')
        .map((e) => String(e.data['rule']).replace(/^network:.*/, 'network'))
        .sort(),
      ['cmd.allow', 'network', 'not-granted', 'path:climb', 'path:read', 'path:write'],
    );
    const run0 = calls.find((e) => e.data['tool'] === 'cmd.run' && e.data['outcome'] === 'allowed')!;
    assert.equal(run0.data['argsDigest'], digestOf({ argv: ['echo', 'ran', MARKER] }));
    assert.equal(typeof run0.data['durationMs'], 'number');
    assert.ok(!JSON.stringify(calls).includes(MARKER), 'no argument or result body is in the ledger');
  });

  it('the Node SDK: `import aegis from "aegis"` calls a tool and gets ToolDenied for a refused one', async () => {
    const out = await run(sandboxId, ['node', '/agent/agent.mjs']);
    assert.equal(out.exitCode, 0, out.stdout + out.stderr);
    const got = JSON.parse(out.stdout.trim()) as Record<string, unknown>;
    assert.equal(got['stdout'], 'from-node\n');
    assert.equal(got['exitCode'], 0);
    assert.match(got['denied'] as string, /^ToolDenied: cmd\.run: .* is not in the allow-list/);
  });

  it('attack: REST from outside is the same gateway; another key gets 404, a read-only key 403, both audited or refused', async () => {
    const path = (name: string) => `/v1/sandboxes/${sandboxId}/tools/${encodeURIComponent(name)}`;
    const read = await call('POST', path('fs.read'), { arguments: { path: 'notes/a.txt' } });
    assert.equal(read.status, 200, read.text);
    assert.deepEqual(read.json['result'], { path: '/workspace/notes/a.txt', content: `${MARKER} hello` });
    const ran = await call('POST', path('cmd.run'), { arguments: { argv: ['true'] } });
    assert.equal(ran.status, 200, ran.text);
    assert.equal((ran.json['result'] as Record<string, unknown>)['exitCode'], 0);
    const refused = await call('POST', path('cmd.run'), { arguments: { argv: ['sh', '-c', 'id'] } });
    assert.equal(refused.status, 403, refused.text);
    assert.equal(refused.json['outcome'], 'denied');
    assert.equal(refused.json['rule'], 'cmd.allow');
    const ungranted = await call('POST', path('mcp:github/search_issues'), { arguments: {} });
    assert.equal(ungranted.status, 403, ungranted.text);
    assert.equal(ungranted.json['rule'], 'not-granted');

    const other = await newKey(['read', 'execute']);
    const stranger = await call('POST', path('fs.read'), { arguments: { path: 'notes/a.txt' } }, other);
    assert.equal(stranger.status, 404, stranger.text);
    assert.ok(!stranger.text.includes(MARKER));
    const reader = await newKey(['read']);
    const readOnly = await call('POST', path('cmd.run'), { arguments: { argv: ['true'] } }, reader);
    assert.equal(readOnly.status, 403, readOnly.text);

    const entries = await pollUntil('the REST tool.call entries', async () => {
      const all = (await auditOf(sandboxId)).filter(
        (e) => e.kind === 'tool.call' && e.data['by'] !== 'agent',
      );
      return all.length >= 4 ? all : undefined;
    });
    assert.equal(entries.length, 4, `only the owner's calls ran: ${JSON.stringify(entries)}`);
    assert.equal(new Set(entries.map((e) => e.data['by'])).size, 1, 'all by the owner key');
    assert.deepEqual(
      entries.map((e) => e.data['outcome']),
      ['allowed', 'allowed', 'denied', 'denied'],
    );
  });

  it('a one-shot execution runs its built-ins in its own sandbox too (issue 14); a denied path is audited', async () => {
    const done = await call('POST', '/v1/executions?wait=120s', { agent: 'tooled', input: {} });
    assert.equal(done.status, 200, done.text);
    assert.equal(done.json['status'], 'succeeded', done.text);
    const output = done.json['output'] as Record<string, unknown>;
    assert.equal(output['read'], 'one-shot', JSON.stringify(output));
    assert.match(String(output['denied']), /shadow|readable|outside/i, JSON.stringify(output));
    const id = done.json['id'] as string;
    const entries = (await call('GET', `/v1/executions/${id}/audit`)).json['entries'] as Entry[] | undefined;
    const calls = (entries ?? []).filter((e) => e.kind === 'tool.call');
    assert.deepEqual(
      calls.map((e) => [e.data['tool'], e.data['outcome']]),
      [
        ['fs.write', 'allowed'],
        ['fs.read', 'denied'],
        ['fs.read', 'allowed'],
      ],
      JSON.stringify(entries),
    );
  });
});
