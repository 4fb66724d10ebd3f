/**
 * Server-side ceilings (issue 9 item 6), through a real `aegis server`: a `deploy` key cannot deploy an agent above
 * the admin-set ceilings (cpu, memory, pids, disk, timeout) nor network rules reaching loopback (the server's own API
 * port), private, link-local or metadata addresses — each is `403 POLICY_DENIED` naming the ceiling and the flag
 * that raises it, and nothing is deployed. An admin key can deploy the same bundles.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import {
  killServers,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

function tarGz(entries: { name: string; body: string }[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const archive = pack();
    const chunks: Buffer[] = [];
    archive.on('data', (c) => chunks.push(c as Buffer));
    archive.on('end', () => resolve(gzipSync(Buffer.concat(chunks))));
    archive.on('error', reject);
    for (const entry of entries) archive.entry({ name: entry.name }, entry.body);
    archive.finalize();
  });
}

function bundle(
  name: string,
  resources: Record<string, string | number>,
  allow: string[] = [],
): Promise<Buffer> {
  const yaml = [
    'apiVersion: aegis.dev/v1',
    'kind: Agent',
    `metadata: { name: ${name} }`,
    'spec:',
    '  runtime: { language: python, entrypoint: main.py }',
    '  security:',
    `    resources: ${JSON.stringify(resources)}`,
    `    network: { allow: ${JSON.stringify(allow)} }`,
    '',
  ].join('\n');
  return tarGz([
    { name: 'agent.yaml', body: yaml },
    { name: 'main.py', body: 'print(1)\n' },
  ]);
}

describe('deploy ceilings', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let deployKey = '';

  const deploy = async (key: string, body: Buffer) => {
    const response = await fetch(`${server.url}/v1/agents`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/gzip' },
      body,
    });
    // biome-ignore lint/suspicious/noExplicitAny: checked field by field
    return { status: response.status, json: (await response.json()) as any };
  };

  before(async () => {
    dirs = serverDirs();
    server = await startServerProcess({
      dirs,
      args: [
        ...['--max-agent-cpu', '2', '--max-agent-memory', '1Gi', '--max-agent-pids', '1000'],
        ...['--max-agent-disk', '512Mi', '--max-agent-timeout', '10m'],
      ],
    });
    const created = await fetch(`${server.url}/v1/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${server.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'ci', scopes: ['deploy'] }),
    });
    deployKey = ((await created.json()) as { key: string }).key;
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    dirs?.cleanup();
  });

  it('refuses a deploy key above each limit ceiling, naming it; an admin may', async () => {
    const cases: [string, Record<string, string | number>, RegExp][] = [
      ['cpu', { cpu: '64' }, /resources\.cpu: 64 CPU is above .* ceiling of 2 CPU .*--max-agent-cpu/],
      ['memory', { memory: '64Gi' }, /resources\.memory: 64.*above .* ceiling of 1.*--max-agent-memory/],
      ['pids', { pids: 65536 }, /resources\.pids: 65536 processes .* 1000 processes .*--max-agent-pids/],
      ['disk', { disk: '1Gi', memory: '1Gi' }, /resources\.disk: .*--max-agent-disk/],
      [
        'timeout',
        { timeout: '1000h' },
        /resources\.timeout: 60000m is above .* ceiling of 10m .*--max-agent-timeout/,
      ],
    ];
    for (const [what, resources, message] of cases) {
      const refused = await deploy(deployKey, await bundle(`big-${what}`, resources));
      assert.equal(refused.status, 403, `${what}: ${JSON.stringify(refused.json)}`);
      assert.equal(refused.json.error.code, 'POLICY_DENIED');
      assert.match(refused.json.error.message, message, what);
      assert.equal(refused.json.error.details.problems[0].path, `spec.security.resources.${what}`);
      assert.match(refused.json.error.details.hint, /admin/);
      const admin = await deploy(server.adminKey, await bundle(`big-${what}`, resources));
      assert.equal(admin.status, 201, `admin ${what}: ${JSON.stringify(admin.json)}`);
    }
    const within = await deploy(
      deployKey,
      await bundle('small', { cpu: '2', memory: '1Gi', pids: 1000, timeout: '10m' }),
    );
    assert.equal(within.status, 201, JSON.stringify(within.json));
  });

  it('refuses a deploy key network rules that reach loopback, private, link-local or metadata addresses', async () => {
    const port = new URL(server.url).port;
    for (const rule of [
      '127.0.0.0/8',
      `127.0.0.1:${port}`, // the server's own API
      '::1',
      '::ffff:127.0.0.1',
      '0.0.0.0/0',
      '10.0.0.0/8',
      '192.168.1.5:22',
      '169.254.169.254',
      'fe80::/10',
      '64:ff9b::7f00:1', // NAT64 spelling of 127.0.0.1
    ]) {
      const refused = await deploy(deployKey, await bundle('netty', {}, ['api.example.com:443', rule]));
      assert.equal(refused.status, 403, `${rule}: ${JSON.stringify(refused.json)}`);
      assert.equal(refused.json.error.code, 'POLICY_DENIED');
      assert.match(refused.json.error.message, /network\.allow\[1\]: .* only an admin key/, rule);
    }
    const names = await deploy(
      deployKey,
      await bundle('netty', {}, ['api.example.com:443', '*.example.org', '93.184.216.34']),
    );
    assert.equal(names.status, 201, JSON.stringify(names.json));
    const admin = await deploy(server.adminKey, await bundle('netty', {}, [`127.0.0.1:${port}`]));
    assert.equal(admin.status, 201, JSON.stringify(admin.json));
    // Nothing a deploy key was refused got deployed.
    const revisions = await fetch(`${server.url}/v1/agents/netty/revisions`, {
      headers: { authorization: `Bearer ${server.adminKey}` },
    });
    const listed = (await revisions.json()) as { revisions: { deployedBy: string }[] };
    assert.equal(listed.revisions.length, 2);
  });
});

describe('deploy ceilings: defaults from the host', () => {
  it('refuses the red team’s 64Gi / 64 CPU / 65536 pids / 1000h deploy without any flag', async () => {
    const dirs = serverDirs();
    try {
      const server = await startServerProcess({ dirs });
      const created = await fetch(`${server.url}/v1/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${server.adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'ci', scopes: ['deploy'] }),
      });
      const key = ((await created.json()) as { key: string }).key;
      const huge: Record<string, string | number>[] = [
        { memory: '64Ti' },
        { cpu: '4096' },
        { pids: 65536 },
        { timeout: '1000h' },
      ];
      for (const resources of huge) {
        const response = await fetch(`${server.url}/v1/agents`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/gzip' },
          body: await bundle('huge', resources),
        });
        const text = await response.text();
        assert.equal(response.status, 403, text);
        assert.match(text, /POLICY_DENIED.*ceiling/);
      }
      await server.stop();
    } finally {
      await killServers();
      dirs.cleanup();
    }
  });
});
