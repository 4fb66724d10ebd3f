/**
 * Live sandboxes end to end on a real server (REST): exec with stdin and streaming, background commands with
 * resumable events, files incl. a 100 MiB round trip, idle timeout, crash reaping — and, playing the attacker,
 * exec escape/capabilities, file-API traversal and symlink swaps, and cross-key access.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { AegisClient } from '../../sdk/index.ts';
import { SandboxService } from '../../src/api/grpc/gen/aegis/v1/sandboxes_pb.ts';
import { findCgroupDirs, processWithMarker } from '../support/host-state.ts';
import {
  cli,
  freshDatabase,
  killServers,
  pollUntil,
  postgresMissing,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

interface Reply {
  status: number;
  json: Record<string, unknown>;
  text: string;
}

async function call(
  url: string,
  key: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      ...(body !== undefined && !(body instanceof Uint8Array) ? { 'content-type': 'application/json' } : {}),
      ...(body instanceof Uint8Array ? { 'content-type': 'application/octet-stream' } : {}),
      ...headers,
    },
    ...(body === undefined ? {} : { body: body instanceof Uint8Array ? body : JSON.stringify(body) }),
  });
  const text = await response.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = {};
  }
  return { status: response.status, json, text };
}

/** Parses an SSE body into events. */
function sseEvents(text: string): { id: string | undefined; event: string; data: Record<string, unknown> }[] {
  return text
    .split('\n\n')
    .filter((block) => block.includes('data: '))
    .map((block) => {
      const lines = block.split('\n');
      const field = (name: string) => lines.find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2);
      return { id: field('id'), event: field('event') ?? 'message', data: JSON.parse(field('data')!) };
    });
}

describe('live sandboxes over REST', { concurrency: true }, () => {
  let server: ServerProcess;
  let key: string;
  const dirs = serverDirs();
  const agentDir = mkdtempSync(join(tmpdir(), 'aegis-live-agent-'));
  const secretFile = join(dirs.home, 'host-secret.txt');

  before(async () => {
    writeFileSync(
      join(agentDir, 'agent.yaml'),
      'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: live }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n  security:\n    resources: { disk: 256Mi, memory: 512Mi, timeout: 10m }\n',
    );
    writeFileSync(join(agentDir, 'main.sh'), 'echo unused\n');
    writeFileSync(secretFile, 'HOST-SECRET-VALUE\n', { mode: 0o644 });
    server = await startServerProcess({ dirs });
    key = server.adminKey;
    const deployed = await cli(['deploy', join(agentDir, 'agent.yaml')], {
      ...server.env,
      AEGIS_SERVER: server.url,
      AEGIS_API_KEY: key,
    });
    assert.equal(deployed.code, 0, deployed.stderr);
  });
  after(async () => {
    await killServers();
    dirs.cleanup();
    rmSync(agentDir, { recursive: true, force: true });
  });

  async function create(body: Record<string, unknown> = {}, as = key): Promise<string> {
    const created = await call(server.url, as, 'POST', '/v1/sandboxes', { agent: 'live', ...body });
    assert.equal(created.status, 201, created.text);
    return created.json['id'] as string;
  }

  it('attack: a timeout past what a timer can hold (which would fire at once) is refused, not armed', async () => {
    const huge = await call(server.url, key, 'POST', '/v1/sandboxes', { agent: 'live', timeout: '1000h' });
    assert.equal(huge.status, 400, huge.text);
    assert.match(huge.text, /timeout must be between/);
    const idle = await call(server.url, key, 'POST', '/v1/sandboxes', {
      agent: 'live',
      idleTimeout: '1000h',
    });
    assert.equal(idle.status, 400, idle.text);
  });

  async function auditOf(id: string): Promise<{ kind: string; data: Record<string, unknown> }[]> {
    const audit = await call(server.url, key, 'GET', `/v1/sandboxes/${id}/audit`);
    return audit.json['entries'] as { kind: string; data: Record<string, unknown> }[];
  }

  async function exited(id: string, command: string): Promise<void> {
    await pollUntil(`command ${command} to exit`, async () => {
      const got = await call(server.url, key, 'GET', `/v1/sandboxes/${id}/commands/${command}`);
      return got.json['status'] === 'exited' ? true : undefined;
    });
  }

  it('attack: an execute key cannot start unbounded commands in one sandbox (32 at once, then 429, audited)', async () => {
    const id = await create();
    const sleep = { cmd: ['sleep', '600'], background: true };
    const started = await Promise.all(
      Array.from({ length: 32 }, () => call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, sleep)),
    );
    for (const reply of started) assert.equal(reply.status, 201, reply.text);
    const over = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, sleep);
    assert.equal(over.status, 429, over.text);
    assert.match(over.text, /maximum of 32 commands/);
    assert.ok(
      (await auditOf(id)).some((e) => e.kind === 'sandbox.exec' && e.data['refused'] === 'too-many-commands'),
      'the refusal is audited',
    );
    // One exits: there is room again.
    const first = started[0]!.json['id'] as string;
    await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands/${first}/kill`, {});
    await exited(id, first);
    const again = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, sleep);
    assert.equal(again.status, 201, again.text);
    await call(server.url, key, 'DELETE', `/v1/sandboxes/${id}`);
  });

  it('attack: output floods do not pin unbounded replay memory; a reader behind the buffer is told', async () => {
    const id = await create();
    // Five exited commands of 8 MiB each: 40 MiB, over the sandbox's 32 MiB replay budget.
    const flood = 'head -c 8388608 /dev/zero | tr "\\0" a';
    const floods: string[] = [];
    for (let i = 0; i < 5; i++) {
      const bg = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
        cmd: flood,
        background: true,
      });
      assert.equal(bg.status, 201, bg.text);
      floods.push(bg.json['id'] as string);
      await exited(id, bg.json['id'] as string);
    }
    const oldest = sseEvents(
      (await call(server.url, key, 'GET', `/v1/sandboxes/${id}/commands/${floods[0]}/events?follow=false`))
        .text,
    );
    assert.equal(oldest[0]?.event, 'truncated', 'the dropped output is announced');
    assert.ok(!oldest.some((e) => e.event === 'stdout'), "the oldest exited command's output was dropped");
    assert.equal(oldest.at(-1)?.event, 'exit', 'its exit stays');
    // A running command past its own 8 MiB: a reader from the start learns its oldest output is gone.
    const live = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: 'head -c 9437184 /dev/zero | tr "\\0" b; echo END >&2; sleep 600',
      background: true,
    });
    const liveId = live.json['id'] as string;
    const events = await pollUntil('the live flood to finish', async () => {
      const got = sseEvents(
        (await call(server.url, key, 'GET', `/v1/sandboxes/${id}/commands/${liveId}/events?follow=false`))
          .text,
      );
      return got.some((e) => e.event === 'stderr') ? got : undefined;
    });
    assert.equal(events[0]?.event, 'truncated');
    assert.ok(Number(events[1]?.id) > Number(events[0]?.id), 'the stream goes on after the marker');
    const kept = events
      .filter((e) => e.event === 'stdout')
      .reduce((n, e) => n + String(e.data['data']).length, 0);
    assert.ok(kept <= 8 * 1024 * 1024, `kept ${kept} chars`);
    await call(server.url, key, 'DELETE', `/v1/sandboxes/${id}`);
  });

  it('attack: a download the client does not read stalls the agent, not buffered in the orchestrator', async () => {
    const id = await create();
    const size = 160 * 1024 * 1024;
    const name = `stall-${randomBytes(6).toString('hex')}`;
    const made = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: `head -c ${size} /dev/zero > /workspace/${name}`,
    });
    assert.equal(made.status, 200, made.text);
    // The agent's open fd of the file says how far it has read (RSS would be muddied by the concurrent tests).
    const readPos = (): number | undefined => {
      for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
        try {
          for (const fd of readdirSync(`/proc/${pid}/fd`)) {
            if (!readlinkSync(`/proc/${pid}/fd/${fd}`).endsWith(`/${name}`)) continue;
            return Number(/pos:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))![1]);
          }
        } catch {
          // gone, or not ours to read
        }
      }
      return undefined;
    };
    const url = new URL(`${server.url}/v1/sandboxes/${id}/files?path=/workspace/${name}`);
    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = httpRequest(url, { headers: { authorization: `Bearer ${key}` } }, resolve);
      req.once('error', reject);
      req.end();
    });
    assert.equal(response.statusCode, 200);
    response.pause(); // the slow client: reads nothing for now
    // Without flow control the agent sent the whole file (into the orchestrator's memory) within a second or two,
    // and closed it; give it ten.
    const ranAhead = await pollUntil(
      'the agent to read the whole unread file',
      () => {
        const pos = readPos();
        return pos === undefined || pos > 64 * 1024 ** 2;
      },
      10_000,
    )
      .then(() => true)
      .catch(() => false);
    assert.equal(
      ranAhead,
      false,
      `the agent read on to ${readPos() ?? 'the end'} for a client that reads nothing`,
    );
    // The stalled download still completes once the client reads.
    let received = 0;
    for await (const chunk of response) received += (chunk as Buffer).length;
    assert.equal(received, size);
    await call(server.url, key, 'DELETE', `/v1/sandboxes/${id}`);
  });

  it('runs commands with stdin, streams output over SSE, keeps state between commands', async () => {
    const id = await create({ metadata: { purpose: 'test' }, env: { GREETING: 'hello' } });
    const got = await call(server.url, key, 'GET', `/v1/sandboxes/${id}`);
    assert.equal(got.json['status'], 'running');
    assert.deepEqual(got.json['metadata'], { purpose: 'test' });

    const run = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: 'echo "$GREETING"; tr a-z A-Z; echo err >&2; echo kept > state.txt; exit 3',
      stdin: 'from stdin\n',
    });
    assert.equal(run.status, 200, run.text);
    assert.equal(run.json['stdout'], 'hello\nFROM STDIN\n');
    assert.equal(run.json['stderr'], 'err\n');
    assert.equal((run.json['command'] as Record<string, unknown>)['exitCode'], 3);

    const argv = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: ['cat', 'state.txt'],
      cwd: '/workspace',
    });
    assert.equal(argv.json['stdout'], 'kept\n');

    const streamed = await call(
      server.url,
      key,
      'POST',
      `/v1/sandboxes/${id}/commands`,
      { cmd: 'for i in 1 2 3; do echo line$i; done' },
      { accept: 'text/event-stream' },
    );
    const events = sseEvents(streamed.text);
    assert.equal(
      events
        .filter((e) => e.event === 'stdout')
        .map((e) => e.data['data'])
        .join(''),
      'line1\nline2\nline3\n',
    );
    assert.equal(events.at(-1)?.event, 'exit');
    assert.equal(events.at(-1)?.data['exitCode'], 0);

    const audit = await call(server.url, key, 'GET', `/v1/sandboxes/${id}/audit`);
    const entries = audit.json['entries'] as { kind: string; data: Record<string, unknown> }[];
    assert.equal(entries[0]?.kind, 'sandbox.created');
    const execs = entries.filter((e) => e.kind === 'sandbox.exec');
    assert.ok(execs.length >= 3);
    assert.ok(!JSON.stringify(execs).includes('from stdin'), 'stdin is never in the ledger');
    assert.ok(!JSON.stringify(execs).includes('FROM STDIN'), 'output is never in the ledger');
    assert.ok(execs.some((e) => e.data['exitCode'] === 3));

    const deleted = await call(server.url, key, 'DELETE', `/v1/sandboxes/${id}`);
    assert.equal(deleted.json['status'], 'terminated');
    const late = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, { cmd: 'true' });
    assert.equal(late.status, 409);
  });

  it('background commands: list, resume events with Last-Event-ID, stdin later, kill, per-command timeout', async () => {
    const id = await create();
    const bg = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: 'echo started; while read -r line; do echo "got $line"; done; echo done',
      keepStdin: true,
      background: true,
    });
    assert.equal(bg.status, 201, bg.text);
    const cmd = bg.json['id'] as string;
    const stdin = await fetch(`${server.url}/v1/sandboxes/${id}/commands/${cmd}/stdin?eof=true`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/octet-stream' },
      body: 'a\nb\n',
    });
    assert.equal(stdin.status, 204);
    const all = await call(server.url, key, 'GET', `/v1/sandboxes/${id}/commands/${cmd}/events`);
    const events = sseEvents(all.text);
    const out = events
      .filter((e) => e.event === 'stdout')
      .map((e) => e.data['data'])
      .join('');
    assert.equal(out, 'started\ngot a\ngot b\ndone\n');
    // Resume after the first event: nothing before it again.
    const firstId = events[0]!.id!;
    const resumed = sseEvents(
      (
        await call(server.url, key, 'GET', `/v1/sandboxes/${id}/commands/${cmd}/events`, undefined, {
          'last-event-id': firstId,
        })
      ).text,
    );
    assert.equal(resumed[0]!.id, String(Number(firstId) + 1));
    assert.equal(resumed.at(-1)!.event, 'exit');

    const sleeper = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: ['sleep', '300'],
      background: true,
    });
    const listed = await call(server.url, key, 'GET', `/v1/sandboxes/${id}/commands`);
    assert.ok(
      (listed.json['commands'] as { id: string; status: string }[]).some(
        (c) => c.id === sleeper.json['id'] && c.status === 'running',
      ),
    );
    await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands/${sleeper.json['id']}/kill`, {});
    const killed = await pollUntil('the killed command to exit', async () => {
      const c = await call(server.url, key, 'GET', `/v1/sandboxes/${id}/commands/${sleeper.json['id']}`);
      return c.json['status'] === 'exited' ? c.json : undefined;
    });
    assert.equal(killed['signal'], 'SIGKILL');

    const timed = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: ['sleep', '300'],
      timeout: '500ms',
    });
    assert.equal((timed.json['command'] as Record<string, unknown>)['timedOut'], true);
    await call(server.url, key, 'DELETE', `/v1/sandboxes/${id}`);
  });

  it('files: upload, stat, list, mkdir, move, download, remove — and a 100 MiB round trip', async () => {
    const id = await create();
    const base = `/v1/sandboxes/${id}/files`;
    assert.equal(
      (await call(server.url, key, 'POST', `${base}/mkdir`, { path: '/workspace/d/e' })).status,
      204,
    );
    const up = await call(
      server.url,
      key,
      'PUT',
      `${base}?path=/workspace/d/e/a.txt`,
      new TextEncoder().encode('hello file'),
    );
    assert.equal(up.status, 201, up.text);
    assert.equal(up.json['bytes'], 10);
    const stat = await call(server.url, key, 'GET', `${base}/stat?path=/workspace/d/e/a.txt`);
    assert.equal(stat.json['type'], 'file');
    assert.equal(stat.json['size'], 10);
    assert.equal(
      (
        await call(server.url, key, 'POST', `${base}/move`, {
          from: '/workspace/d/e/a.txt',
          to: '/tmp/b.txt',
        })
      ).status,
      204,
    );
    const list = await call(server.url, key, 'GET', `${base}/list?path=/tmp`);
    assert.ok((list.json['entries'] as { name: string }[]).some((e) => e.name === 'b.txt'));
    assert.equal((await call(server.url, key, 'GET', `${base}?path=/tmp/b.txt`)).text, 'hello file');
    assert.equal((await call(server.url, key, 'DELETE', `${base}?path=/tmp/b.txt`)).status, 204);
    assert.equal((await call(server.url, key, 'GET', `${base}/stat?path=/tmp/b.txt`)).status, 404);

    const big = randomBytes(100 * 1024 * 1024);
    const digest = createHash('sha256').update(big).digest('hex');
    const put = await call(server.url, key, 'PUT', `${base}?path=/workspace/big.bin`, big);
    assert.equal(put.status, 201, put.text);
    assert.equal(put.json['bytes'], big.length);
    const inside = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: 'sha256sum /workspace/big.bin',
    });
    assert.match(inside.json['stdout'] as string, new RegExp(`^${digest} `));
    const response = await fetch(`${server.url}${base}?path=/workspace/big.bin`, {
      headers: { authorization: `Bearer ${key}` },
    });
    const back = Buffer.from(await response.arrayBuffer());
    assert.equal(back.length, big.length);
    assert.equal(createHash('sha256').update(back).digest('hex'), digest);
    const audit = await call(server.url, key, 'GET', `/v1/sandboxes/${id}/audit`);
    const files = (audit.json['entries'] as { kind: string; data: Record<string, unknown> }[]).filter(
      (e) => e.kind === 'sandbox.file',
    );
    assert.ok(files.some((e) => e.data['op'] === 'write' && e.data['bytes'] === big.length));
    assert.ok(files.some((e) => e.data['op'] === 'move' && e.data['to'] === '/tmp/b.txt'));
    await call(server.url, key, 'DELETE', `/v1/sandboxes/${id}`);
  });

  it('attack: exec cannot gain capabilities, change uid, or see host files', async () => {
    const id = await create();
    const probe = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: `id -u; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; cat ${secretFile} 2>&1; ls ${dirs.home} 2>&1; unshare -U -r id 2>&1; echo end`,
    });
    const out = probe.json['stdout'] as string;
    assert.match(out, /^1000\n/);
    assert.match(out, /CapEff:\s+0000000000000000/);
    assert.match(out, /CapPrm:\s+0000000000000000/);
    assert.match(out, /CapBnd:\s+0000000000000000/);
    assert.match(out, /NoNewPrivs:\s+1/);
    assert.match(out, /Seccomp:\s+2/);
    assert.ok(!out.includes('HOST-SECRET-VALUE'), 'a host file is not reachable from exec');
    assert.doesNotMatch(out, /uid=0/, 'no new user namespace with root inside');
    // The command's cgroup is the sandbox's (limits apply to exec too).
    const cg = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: 'cat /proc/self/cgroup',
    });
    assert.ok(findCgroupDirs(id).length > 0);
    assert.match(cg.json['stdout'] as string, new RegExp(id));
    await call(server.url, key, 'DELETE', `/v1/sandboxes/${id}`);
  });

  it('attack: file API refuses "..", paths outside the policy, symlinks out, and symlinks swapped mid-operation', async () => {
    const id = await create();
    const base = `/v1/sandboxes/${id}/files`;
    for (const path of [
      '/workspace/../etc/passwd',
      '../../etc/passwd',
      '/etc/passwd',
      secretFile,
      '/proc/self/environ',
    ]) {
      const got = await call(server.url, key, 'GET', `${base}?path=${encodeURIComponent(path)}`);
      // 403 (outside the policy), or 404: a host path under /tmp names the sandbox's own, empty /tmp.
      assert.ok([403, 404].includes(got.status), `${path}: ${got.status} ${got.text}`);
      assert.ok(!got.text.includes('HOST-SECRET') && !got.text.includes('agent:x:1000'), path);
    }
    const writeOut = await call(
      server.url,
      key,
      'PUT',
      `${base}?path=/agent/main.sh`,
      new TextEncoder().encode('pwned'),
    );
    assert.equal(writeOut.status, 403, writeOut.text);
    await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: `ln -s /etc /workspace/etc-link; ln -s ${secretFile} /workspace/secret-link; ln -s /etc/passwd /workspace/passwd-link`,
    });
    for (const path of ['/workspace/etc-link/passwd', '/workspace/secret-link', '/workspace/passwd-link']) {
      const got = await call(server.url, key, 'GET', `${base}?path=${encodeURIComponent(path)}`);
      assert.equal(got.status, 403, `${path}: ${got.text}`);
      const put = await call(
        server.url,
        key,
        'PUT',
        `${base}?path=${encodeURIComponent(path)}`,
        new TextEncoder().encode('x'),
      );
      assert.equal(put.status, 403, `${path}: ${put.text}`);
    }
    // A process in the sandbox swaps /workspace/swap between a directory and a symlink to /etc while we read
    // /workspace/swap/passwd: every answer is the directory's file or a refusal, never /etc/passwd.
    await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: 'mkdir -p /workspace/real && echo safe > /workspace/real/passwd; while true; do ln -sfn /etc /workspace/swap.new && mv -T /workspace/swap.new /workspace/swap; ln -sfn /workspace/real /workspace/swap.new && mv -T /workspace/swap.new /workspace/swap; done',
      background: true,
    });
    for (let i = 0; i < 60; i++) {
      const got = await call(server.url, key, 'GET', `${base}?path=/workspace/swap/passwd`);
      assert.ok(!got.text.includes('agent:x:1000'), `swap round ${i} leaked /etc/passwd`);
      if (got.status === 200) {
        assert.equal(got.text, 'safe\n');
      } else assert.ok([403, 404].includes(got.status), got.text);
      const put = await call(
        server.url,
        key,
        'PUT',
        `${base}?path=/workspace/swap/passwd`,
        new TextEncoder().encode('safe\n'),
      );
      assert.ok([201, 403, 404].includes(put.status), put.text);
    }
    const audit = await call(server.url, key, 'GET', `/v1/sandboxes/${id}/audit`);
    const refused = (audit.json['entries'] as { kind: string; data: Record<string, unknown> }[]).filter(
      (e) => e.kind === 'sandbox.file' && e.data['ok'] === false,
    );
    assert.ok(refused.length >= 8, 'refusals are audited');
    await call(server.url, key, 'DELETE', `/v1/sandboxes/${id}`);
  });

  it("attack: another key cannot see, exec in, read files of or delete a key's sandbox; admin can", async () => {
    const makeKey = async (name: string) => {
      const created = await call(server.url, key, 'POST', '/v1/keys', { name, scopes: ['execute'] });
      assert.equal(created.status, 201, created.text);
      return created.json['key'] as string;
    };
    const alice = await makeKey('alice');
    const mallory = await makeKey('mallory');
    const id = await create({}, alice);
    const tries: [string, string, unknown?][] = [
      ['GET', `/v1/sandboxes/${id}`],
      ['POST', `/v1/sandboxes/${id}/commands`, { cmd: 'id' }],
      ['GET', `/v1/sandboxes/${id}/files?path=/workspace`],
      ['GET', `/v1/sandboxes/${id}/audit`],
      ['DELETE', `/v1/sandboxes/${id}`],
    ];
    for (const [method, path, body] of tries) {
      const got = await call(server.url, mallory, method, path, body);
      assert.equal(got.status, 404, `${method} ${path}: ${got.text}`);
    }
    const listed = await call(server.url, mallory, 'GET', '/v1/sandboxes');
    assert.ok(!(listed.json['sandboxes'] as { id: string }[]).some((s) => s.id === id));
    assert.equal((await call(server.url, alice, 'GET', `/v1/sandboxes/${id}`)).json['status'], 'running');
    const read = await call(server.url, key, 'POST', '/v1/keys', { name: 'reader', scopes: ['read'] });
    const reader = read.json['key'] as string;
    assert.equal((await call(server.url, reader, 'POST', '/v1/sandboxes', { agent: 'live' })).status, 403);
    assert.equal((await call(server.url, key, 'DELETE', `/v1/sandboxes/${id}`)).json['status'], 'terminated');
  });

  it('the TS SDK drives a sandbox: commands with stdin, a background command, files', async () => {
    const client = new AegisClient({ server: server.url, apiKey: key });
    const sandbox = await client.createSandbox({ agent: 'live', timeout: '5m', metadata: { via: 'sdk' } });
    assert.equal(sandbox.status, 'running');
    assert.ok((await client.listSandboxes()).some((s) => s.id === sandbox.id));
    const result = await client.runCommand(sandbox.id, { cmd: ['wc', '-c'], stdin: 'four' });
    assert.equal(result.stdout.trim(), '4');
    assert.equal(result.command.exitCode, 0);
    const bg = await client.startCommand(sandbox.id, { cmd: 'sleep 300' });
    assert.equal((await client.listCommands(sandbox.id)).find((c) => c.id === bg.id)?.status, 'running');
    await client.killCommand(sandbox.id, bg.id);
    await client.writeFile(sandbox.id, '/workspace/sdk.txt', new TextEncoder().encode('via sdk'));
    assert.equal((await client.readFile(sandbox.id, '/workspace/sdk.txt')).toString('utf8'), 'via sdk');
    assert.equal((await client.statFile(sandbox.id, '/workspace/sdk.txt')).size, 7);
    assert.ok((await client.listFiles(sandbox.id, '/workspace')).some((e) => e.name === 'sdk.txt'));
    await client.removeFile(sandbox.id, '/workspace/sdk.txt');
    await assert.rejects(client.readFile(sandbox.id, '/workspace/../etc/passwd'), /POLICY_DENIED|climbs/);
    assert.equal((await client.deleteSandbox(sandbox.id)).status, 'terminated');
  });

  it('the CLI drives a sandbox: create, ls, exec (streamed, exit code kept), files put/get/ls/rm, rm — text and -o json', async () => {
    const env = { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: key };
    const run = async (args: string[], code = 0) => {
      const result = await cli(args, env);
      assert.equal(result.code, code, `aegis ${args.join(' ')}: ${result.stderr}`);
      return result;
    };
    const created = await run([
      'sandbox',
      'create',
      'live',
      '--timeout',
      '5m',
      '--env',
      'WHO=cli',
      '--metadata',
      'via=cli',
      '-o',
      'json',
    ]);
    const sandbox = JSON.parse(created.stdout) as { id: string; metadata: Record<string, string> };
    assert.deepEqual(sandbox.metadata, { via: 'cli' });
    const id = sandbox.id;
    assert.match((await run(['sandbox', 'ls'])).stdout, new RegExp(`${id}\\s+live@\\d+\\s+running`));
    const listed = JSON.parse((await run(['sandbox', 'ls', '-o', 'json'])).stdout) as {
      sandboxes: { id: string }[];
    };
    assert.ok(listed.sandboxes.some((s) => s.id === id));

    const exec = await run(
      ['sandbox', 'exec', id, '--', 'sh', '-c', 'echo "hi $WHO"; echo oops >&2; exit 7'],
      7,
    );
    assert.equal(exec.stdout, 'hi cli\n');
    assert.match(exec.stderr, /oops/);
    const killed = await run(['sandbox', 'exec', id, '--', 'sh', '-c', 'kill -TERM $$'], 128 + 15);
    assert.equal(killed.stdout, '');
    const json = await run(['sandbox', 'exec', id, '-o', 'json', '--cwd', '/workspace', '--', 'pwd'], 0);
    const result = JSON.parse(json.stdout) as {
      stdout: string;
      command: { exitCode: number; argv: string[] };
    };
    assert.equal(result.stdout, '/workspace\n');
    assert.deepEqual(result.command.argv, ['pwd']);

    const local = join(dirs.home, 'cli-upload.txt');
    writeFileSync(local, 'from the cli\n');
    await run(['sandbox', 'files', 'put', id, local, '/workspace/up.txt']);
    assert.equal((await run(['sandbox', 'files', 'get', id, '/workspace/up.txt'])).stdout, 'from the cli\n');
    assert.match((await run(['sandbox', 'files', 'ls', id, '/workspace'])).stdout, /\s13\s.*up\.txt/);
    const entries = JSON.parse(
      (await run(['sandbox', 'files', 'ls', id, '/workspace', '-o', 'json'])).stdout,
    ) as {
      entries: { name: string; size: number }[];
    };
    assert.equal(entries.entries.find((e) => e.name === 'up.txt')?.size, 13);
    await run(['sandbox', 'files', 'rm', id, '/workspace/up.txt']);
    const gone = await run(['sandbox', 'files', 'get', id, '/workspace/up.txt'], 2);
    assert.match(gone.stderr, /NOT_FOUND/);
    const denied = await cli(['sandbox', 'files', 'get', id, '/workspace/../etc/passwd'], env);
    assert.notEqual(denied.code, 0);
    assert.doesNotMatch(denied.stdout, /root:/);

    const bad = await run(['sandbox', 'create', 'live', '--env', 'NOEQUALS'], 2);
    assert.match(bad.stderr, /--env "NOEQUALS": expected KEY=VALUE/);
    const removed = JSON.parse((await run(['sandbox', 'rm', id, '-o', 'json'])).stdout) as { status: string };
    assert.equal(removed.status, 'terminated');
    const after = await run(['sandbox', 'exec', id, '--', 'true'], 2);
    assert.match(after.stderr, /error\[/);
  });

  it('pause freezes the sandbox: no CPU while paused, its timeout stops, commands refused; resume moves expiresAt', async () => {
    // Long enough to reach the pause on a loaded host; the window below runs past it.
    const id = await create({ timeout: '20s' });
    const created = (await call(server.url, key, 'GET', `/v1/sandboxes/${id}`)).json;
    const busy = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, {
      cmd: 'while :; do :; done',
      background: true,
    });
    assert.equal(busy.status, 201, busy.text);
    const cpu = async () => {
      const got = await call(server.url, key, 'GET', `/v1/sandboxes/${id}`);
      return (got.json['usage'] as { cpuUsageNs: number | null }).cpuUsageNs;
    };
    const first = await cpu();
    assert.notEqual(first, null, 'cpuacct usage must be readable to show the freeze');
    await pollUntil('the busy loop to use CPU', async () => ((await cpu())! > first! ? true : undefined));

    const paused = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/pause`);
    assert.equal(paused.status, 200, paused.text);
    assert.equal(paused.json['status'], 'paused');
    const frozenAt = await cpu();
    // A measuring window, not synchronisation: past the lifetime, the busy loop must not have run at all.
    const windowMs = Math.max(0, Date.parse(created['expiresAt'] as string) - Date.now()) + 1000;
    await new Promise((resolve) => setTimeout(resolve, windowMs));
    assert.equal(await cpu(), frozenAt, 'a paused busy loop used CPU');
    const still = await call(server.url, key, 'GET', `/v1/sandboxes/${id}`);
    assert.equal(still.json['status'], 'paused', 'the timeout ran while paused');
    const refused = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/commands`, { cmd: 'true' });
    assert.equal(refused.status, 409);
    assert.match(refused.text, /paused/);
    assert.equal((await call(server.url, key, 'POST', `/v1/sandboxes/${id}/pause`)).status, 409);

    const resumed = await call(server.url, key, 'POST', `/v1/sandboxes/${id}/resume`);
    assert.equal(resumed.status, 200, resumed.text);
    assert.equal(resumed.json['status'], 'running');
    const moved =
      Date.parse(resumed.json['expiresAt'] as string) - Date.parse(created['expiresAt'] as string);
    assert.ok(
      moved >= windowMs,
      `expiresAt moved by ${moved} ms, expected at least the ${windowMs} ms paused`,
    );
    await pollUntil('the busy loop to run again', async () =>
      (await cpu())! > frozenAt! ? true : undefined,
    );
    assert.equal((await call(server.url, key, 'POST', `/v1/sandboxes/${id}/resume`)).status, 409);

    const ended = await pollUntil('the resumed sandbox to reach its moved timeout', async () => {
      const got = await call(server.url, key, 'GET', `/v1/sandboxes/${id}`);
      return got.json['status'] === 'terminated' ? got.json : undefined;
    });
    assert.equal(ended['reason'], 'timeout');
    const kinds = (
      (await call(server.url, key, 'GET', `/v1/sandboxes/${id}/audit`)).json['entries'] as {
        kind: string;
      }[]
    ).map((e) => e.kind);
    assert.ok(kinds.includes('sandbox.paused') && kinds.includes('sandbox.resumed'), kinds.join(','));
    assert.ok(kinds.indexOf('sandbox.paused') < kinds.indexOf('sandbox.resumed'));
    await pollUntil('its cgroups (freezer too) to go', () =>
      findCgroupDirs(id).length === 0 ? true : undefined,
    );
  });

  it('gRPC SandboxService: create, get, list, a streamed Exec with stdin, resume by command id, delete; no key refused', async () => {
    const sessions = new Http2SessionManager(server.url);
    try {
      const transport = createGrpcTransport({
        baseUrl: server.url,
        sessionManager: sessions,
        interceptors: [
          (next) => async (request) => {
            request.header.set('authorization', `Bearer ${key}`);
            return next(request);
          },
        ],
      });
      const grpc = createClient(SandboxService, transport);
      const sandbox = await grpc.createSandbox({
        agent: 'live',
        metadata: { via: 'grpc' },
        env: { WHO: 'grpc' },
      });
      assert.equal(sandbox.status, 'running');
      assert.deepEqual(sandbox.metadata, { via: 'grpc' });
      assert.equal((await grpc.getSandbox({ id: sandbox.id })).id, sandbox.id);
      assert.ok((await grpc.listSandboxes({})).sandboxes.some((s) => s.id === sandbox.id));

      const events = [];
      for await (const event of grpc.exec({
        sandboxId: sandbox.id,
        shell: 'echo "hi $WHO"; tr a-z A-Z; echo err >&2; exit 5',
        stdin: 'shout\n',
      })) {
        events.push(event);
      }
      assert.equal(events[0]?.event.case, 'started');
      const started = events[0]!.event.value as { commandId: string };
      const out = events
        .filter((e) => e.event.case === 'output')
        .map((e) => e.event.value as { stream: string; data: string });
      assert.equal(
        out
          .filter((o) => o.stream === 'stdout')
          .map((o) => o.data)
          .join(''),
        'hi grpc\nSHOUT\n',
      );
      assert.equal(
        out
          .filter((o) => o.stream === 'stderr')
          .map((o) => o.data)
          .join(''),
        'err\n',
      );
      const last = events.at(-1)!;
      assert.equal(last.event.case, 'exit');
      assert.equal((last.event.value as { exitCode?: number }).exitCode, 5);

      // Resume after "a drop" at the first output: the rest, nothing repeated, nothing run again.
      const firstSeq = events[1]!.seq;
      const resumed = [];
      for await (const event of grpc.exec({
        sandboxId: sandbox.id,
        commandId: started.commandId,
        afterSeq: firstSeq,
      })) {
        resumed.push(event);
      }
      assert.deepEqual(
        resumed.map((e) => e.seq),
        events.slice(2).map((e) => e.seq),
      );
      await assert.rejects(
        grpc
          .exec({ sandboxId: sandbox.id, argv: ['true'], shell: 'true' })
          [Symbol.asyncIterator]()
          .next(),
        /exactly one/,
      );

      const anonymous = createClient(
        SandboxService,
        createGrpcTransport({ baseUrl: server.url, sessionManager: sessions }),
      );
      await assert.rejects(
        anonymous.getSandbox({ id: sandbox.id }),
        /unauthenticated|Unauthenticated|API key/i,
      );
      const ended = await grpc.deleteSandbox({ id: sandbox.id });
      assert.equal(ended.status, 'terminated');
      assert.equal(ended.reason, 'deleted');
    } finally {
      sessions.abort();
    }
  });

  it('idle timeout ends an unused sandbox and says why', async () => {
    const id = await create({ idleTimeout: '1s' });
    const ended = await pollUntil('the idle sandbox to end', async () => {
      const got = await call(server.url, key, 'GET', `/v1/sandboxes/${id}`);
      return got.json['status'] === 'terminated' ? got.json : undefined;
    });
    assert.equal(ended['reason'], 'idle-timeout');
    await pollUntil('its cgroups to go', () => (findCgroupDirs(id).length === 0 ? true : undefined));
  });
});

for (const backend of ['sqlite', 'postgres'] as const) {
  const missing = backend === 'postgres' ? postgresMissing() : false;
  describe(`live sandboxes survive a crash as records (${backend})`, {
    skip: missing && process.env['AEGIS_SKIP_POSTGRES'] === '1' ? missing : false,
  }, () => {
    it('kill -9 of the server with a live and a paused sandbox; the restart reaps them and records orchestrator-restarted', async () => {
      if (missing) throw new Error(missing);
      const db = backend === 'postgres' ? await freshDatabase() : undefined;
      const dirs = serverDirs();
      const agentDir = mkdtempSync(join(tmpdir(), 'aegis-live-crash-'));
      try {
        writeFileSync(
          join(agentDir, 'agent.yaml'),
          'apiVersion: aegis.dev/v1\nkind: Agent\nmetadata: { name: live }\nspec:\n  runtime: { language: bash, entrypoint: main.sh }\n',
        );
        writeFileSync(join(agentDir, 'main.sh'), 'echo unused\n');
        const options = { dirs, ...(db ? { databaseUrl: db.url } : {}) };
        let server = await startServerProcess(options);
        const key = server.adminKey;
        const deployed = await cli(['deploy', join(agentDir, 'agent.yaml')], {
          ...server.env,
          AEGIS_SERVER: server.url,
          AEGIS_API_KEY: key,
        });
        assert.equal(deployed.code, 0, deployed.stderr);
        const ids: string[] = [];
        for (let i = 0; i < 2; i++) {
          const created = await call(server.url, key, 'POST', '/v1/sandboxes', {
            agent: 'live',
            metadata: { n: String(i) },
          });
          assert.equal(created.status, 201, created.text);
          ids.push(created.json['id'] as string);
        }
        const [live, paused] = ids as [string, string];
        const marker = `aegis-live-crash-${process.pid}-${Date.now()}`;
        const bg = await call(server.url, key, 'POST', `/v1/sandboxes/${live}/commands`, {
          cmd: ['bash', '-c', `exec -a ${marker} sleep 300`],
          background: true,
        });
        assert.equal(bg.status, 201, bg.text);
        await pollUntil('the background command to run', () =>
          processWithMarker(marker) ? true : undefined,
        );
        assert.equal((await call(server.url, key, 'POST', `/v1/sandboxes/${paused}/pause`)).status, 200);
        assert.ok(findCgroupDirs(live).length > 0, 'the live sandbox has cgroups');

        await server.kill9();
        await pollUntil('the sandbox processes to die', () => (processWithMarker(marker) ? undefined : true));

        server = await startServerProcess(options);
        for (const id of ids) {
          const got = await call(server.url, key, 'GET', `/v1/sandboxes/${id}`);
          assert.equal(got.status, 200, got.text);
          assert.equal(got.json['status'], 'terminated');
          assert.equal(got.json['reason'], 'orchestrator-restarted');
          assert.equal('holder' in got.json, false, 'the holder stays internal');
          const kinds = (
            (await call(server.url, key, 'GET', `/v1/sandboxes/${id}/audit`)).json['entries'] as {
              kind: string;
            }[]
          ).map((e) => e.kind);
          assert.equal(kinds.at(-1), 'sandbox.terminated', kinds.join(','));
          await pollUntil(`the cgroups of ${id} to be reaped`, () =>
            findCgroupDirs(id).length === 0 ? true : undefined,
          );
        }
        assert.deepEqual((await call(server.url, key, 'GET', `/v1/sandboxes/${paused}`)).json['metadata'], {
          n: '1',
        });
        const listed = (await call(server.url, key, 'GET', '/v1/sandboxes')).json['sandboxes'] as {
          id: string;
        }[];
        assert.ok(
          ids.every((id) => listed.some((s) => s.id === id)),
          'listed after the restart',
        );
        const refused = await call(server.url, key, 'POST', `/v1/sandboxes/${live}/commands`, {
          cmd: 'true',
        });
        assert.equal(refused.status, 404, 'a reaped sandbox takes no commands');
        assert.equal(await server.stop(), 0);
      } finally {
        await killServers();
        await db?.drop();
        dirs.cleanup();
        rmSync(agentDir, { recursive: true, force: true });
      }
    });
  });
}
