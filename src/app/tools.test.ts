import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startHttpMcpServer } from '../../test/support/mcp-servers.ts';
import { parseManifestText } from '../adapters/manifest/yaml-loader.ts';
import { SdkMcpServers } from '../adapters/mcp/client.ts';
import { AegisError } from '../domain/errors.ts';
import { compileManifest } from '../domain/manifest/compiled.ts';
import { ManualClock } from './fakes/manual-clock.ts';
import { MemoryAuditLog } from './fakes/memory-audit-log.ts';
import type { LiveCommandEvents, LiveCommandSpec, LiveSession } from './ports.ts';
import { ToolGateway, type ToolTarget } from './tools.ts';

const sha256Hex = (text: string) => createHash('sha256').update(text).digest('hex');
const root = join(fileURLToPath(import.meta.url), '../../..');

/** A session over an in-memory file map; exec echoes argv (and records it) — what matters is what reaches it. */
function fakeSession() {
  const files = new Map<string, string>();
  const ran: string[][] = [];
  const session = {
    async exec(spec: LiveCommandSpec, events: LiveCommandEvents) {
      ran.push([...spec.argv]);
      queueMicrotask(() => {
        events.onOutput('stdout', new TextEncoder().encode(spec.argv.join(' ')));
        events.onExit(0, null);
      });
      return { pid: 1, writeStdin: async () => {}, kill: async () => {} };
    },
    async writeFile(path: string, chunks: AsyncIterable<Uint8Array>) {
      let text = '';
      for await (const chunk of chunks) text += new TextDecoder().decode(chunk);
      files.set(path, text);
      return { bytes: text.length };
    },
    async readFile(path: string) {
      const text = files.get(path);
      if (text === undefined) throw new AegisError('NOT_FOUND', `no file ${path}`);
      const bytes = new TextEncoder().encode(text);
      return {
        size: bytes.length,
        chunks: (async function* () {
          yield bytes;
        })(),
      };
    },
    async list() {
      return [];
    },
  } as unknown as LiveSession;
  return { session, files, ran };
}

function agentWith(tools: string) {
  const yaml = `apiVersion: aegis.dev/v1
kind: Agent
metadata: {name: tooly}
spec:
  runtime: {language: python, entrypoint: main.py}
  security: {network: {allow: ['api.example.com:443']}}
  tools:
${tools}
`;
  return compileManifest(parseManifestText(yaml, 'agent.yaml', '/tmp/tooly').manifest, '/tmp/tooly');
}

describe('spec.tools in the manifest', () => {
  it('refuses unknown tools and bad constraints with file:line:col', () => {
    const yaml = `apiVersion: aegis.dev/v1
kind: Agent
metadata: {name: tooly}
spec:
  runtime: {language: python, entrypoint: main.py}
  tools:
    - fs.reed
    - {name: cmd.run}
    - {name: fs.read, allow: [ls]}
    - {name: cmd.run, allow: ['* -rf'], timeout: soon}
`;
    const error = (() => {
      try {
        parseManifestText(yaml, 'agent.yaml', '/tmp/tooly');
      } catch (e) {
        return e as AegisError;
      }
      return undefined;
    })();
    assert.ok(error instanceof AegisError);
    const text = JSON.stringify(error.problems);
    assert.match(text, /unknown tool \\"fs.reed\\"/);
    assert.match(text, /cmd.run needs an allow-list/);
    assert.match(text, /allow is a constraint of cmd.run, not of fs.read/);
    assert.match(text, /the command itself must be named/);
    const located = error.problems.find((p) => p.message.includes('fs.reed')) as unknown as {
      line: number;
      column: number;
    };
    assert.equal(located.line, 7);
    assert.equal(located.column, 7);
  });
});

describe('ToolGateway', () => {
  const clock = new ManualClock();
  const setup = (tools: string, mcp?: SdkMcpServers) => {
    const audit = new MemoryAuditLog();
    const gateway = new ToolGateway({ audit, clock, sha256Hex, mcp });
    const fake = fakeSession();
    const target: ToolTarget = {
      id: 'sb_1',
      agent: agentWith(tools),
      session: fake.session,
      env: {},
      by: 'agent',
    };
    const entries = () =>
      audit.links
        .filter((l) => l.kind === 'tool.call')
        .map((l) => JSON.parse(l.dataJson) as Record<string, unknown>);
    return { gateway, target, entries, ...fake };
  };
  const builtins = `    - fs.read
    - fs.write
    - fs.edit
    - {name: cmd.run, allow: [ls, 'python3 *'], timeout: 5s}
    - http.fetch`;

  it('runs granted built-ins in the session and records tool, digest, outcome and bytes', async () => {
    const { gateway, target, entries, ran } = setup(builtins);
    assert.equal(
      (await gateway.call(target, 'fs.write', { path: 'notes.txt', content: 'hello' })).outcome,
      'allowed',
    );
    const read = await gateway.call(target, 'fs.read', { path: '/workspace/notes.txt' });
    assert.deepEqual(read, {
      outcome: 'allowed',
      tool: 'fs.read',
      result: { path: '/workspace/notes.txt', content: 'hello' },
    });
    await gateway.call(target, 'fs.edit', { path: 'notes.txt', oldText: 'hello', newText: 'bye' });
    const run = await gateway.call(target, 'cmd.run', { argv: ['python3', '-c', 'print(1)'] });
    assert.equal(run.outcome, 'allowed');
    assert.deepEqual(ran, [['python3', '-c', 'print(1)']]);
    const logged = entries();
    assert.deepEqual(
      logged.map((e) => [e['tool'], e['outcome']]),
      [
        ['fs.write', 'allowed'],
        ['fs.read', 'allowed'],
        ['fs.edit', 'allowed'],
        ['cmd.run', 'allowed'],
      ],
    );
    assert.match(String(logged[0]?.['argsDigest']), /^sha256:[0-9a-f]{64}$/);
    assert.equal(logged[1]?.['bytes'], 5);
    assert.ok(!JSON.stringify(logged).includes('hello'), 'arguments and contents never enter the ledger');
  });

  it('attacker: paths outside, commands off the list, hosts not allowed and ungranted tools are refused and audited', async () => {
    const { gateway, target, entries, ran, files } = setup(builtins);
    const attempts: Array<[string, unknown, RegExp]> = [
      ['fs.write', { path: '/agent/main.py', content: 'x' }, /outside the paths this agent may write/],
      ['fs.read', { path: '/etc/shadow' }, /outside the paths this agent may read/],
      ['cmd.run', { argv: ['rm', '-rf', '/workspace'] }, /not in the allow-list/],
      ['cmd.run', { argv: ['/workspace/ls'] }, /not in the allow-list/],
      ['cmd.run', { argv: ['ls', '-la'] }, /not in the allow-list/],
      [
        'http.fetch',
        { url: 'http://169.254.169.254/latest/meta-data' },
        /not allowed by the agent's network policy/,
      ],
      ['http.fetch', { url: 'https://evil.example.org/' }, /not allowed by the agent's network policy/],
      ['http.fetch', { url: 'file:///etc/passwd' }, /only http and https/],
      ['fs.list', { path: '/workspace' }, /not granted/],
      ['mcp:github/delete_repo', {}, /not granted/],
      ['fs.read', { path: '/workspace/../etc/passwd' }, /climbs/],
    ];
    for (const [tool, args, reason] of attempts) {
      const result = await gateway.call(target, tool, args);
      assert.equal(result.outcome, 'denied', `${tool} ${JSON.stringify(args)}`);
      assert.match((result as { reason: string }).reason, reason);
    }
    assert.deepEqual(ran, [], 'no refused command reached the sandbox');
    assert.equal(files.size, 0);
    const denied = entries().filter((e) => e['outcome'] === 'denied');
    assert.equal(denied.length, attempts.length);
    assert.ok(denied.every((e) => e['violation'] === 'tool' && typeof e['reason'] === 'string'));
  });

  it('refuses bad arguments with their JSON path', async () => {
    const { gateway, target } = setup(builtins);
    await assert.rejects(gateway.call(target, 'fs.write', { path: 'a.txt' }), (error: AegisError) => {
      assert.equal(error.code, 'USAGE');
      assert.match(error.message, /args\.content/);
      return true;
    });
  });

  describe('MCP servers as tools (official SDK, both transports)', () => {
    let http: Awaited<ReturnType<typeof startHttpMcpServer>>;
    let mcp: SdkMcpServers;
    before(async () => {
      http = await startHttpMcpServer('Bearer s3cret');
      mcp = new SdkMcpServers(
        {
          servers: {
            local: {
              command: process.execPath,
              args: [join(root, 'test/support/mcp-servers.ts'), 'stdio'],
              env: {},
            },
            remote: { url: http.url, headers: { authorization: { secret: 'MCP_TOKEN', prefix: 'Bearer ' } } },
          },
        },
        { get: async (name) => (name === 'MCP_TOKEN' ? 's3cret' : Promise.reject(new Error('no'))) },
      );
    });
    after(async () => {
      await mcp.close();
      await http.close();
    });

    for (const server of ['local', 'remote']) {
      it(`${server}: a granted tool works; an ungranted tool of the same server is refused and audited`, async () => {
        const { gateway, target, entries } = setup(`    - mcp:${server}/echo`, mcp);
        const listed = await gateway.list(target);
        assert.deepEqual(
          listed.map((t) => t.name),
          [`mcp:${server}/echo`],
        );
        const result = await gateway.call(target, `mcp:${server}/echo`, { text: 'hi' });
        assert.equal(result.outcome, 'allowed');
        assert.match(JSON.stringify(result), server === 'local' ? /stdio:hi/ : /http:hi/);
        const refused = await gateway.call(target, `mcp:${server}/wipe`, {});
        assert.equal(refused.outcome, 'denied');
        if (server === 'remote') assert.deepEqual(http.calls, ['echo:hi'], 'wipe never reached the server');
        assert.deepEqual(
          entries().map((e) => e['outcome']),
          ['allowed', 'denied'],
        );
      });
    }
  });
});

describe('ToolGateway, found by the end-to-end test (test/server/tools-e2e.test.ts)', () => {
  const clock = new ManualClock();
  const loopbackAgent = () =>
    compileManifest(
      parseManifestText(
        `apiVersion: aegis.dev/v1
kind: Agent
metadata: {name: tooly}
spec:
  runtime: {language: python, entrypoint: main.py}
  security: {network: {allow: ['127.0.0.1:8080']}}
  tools: [fs.write, http.fetch]
`,
        'agent.yaml',
        '/tmp/tooly',
      ).manifest,
      '/tmp/tooly',
    );
  const setup = () => {
    const audit = new MemoryAuditLog();
    const gateway = new ToolGateway({ audit, clock, sha256Hex });
    const fake = fakeSession();
    const target: ToolTarget = {
      id: 'sb_1',
      agent: loopbackAgent(),
      session: fake.session,
      env: {},
      by: 'agent',
    };
    const entries = () =>
      audit.links
        .filter((l) => l.kind === 'tool.call')
        .map((l) => JSON.parse(l.dataJson) as Record<string, unknown>);
    return { gateway, target, entries, ...fake };
  };

  it('http.fetch to an IP literal is decided by the allow-list (was: every IP literal refused as "malformed")', async () => {
    const { gateway, target, ran } = setup();
    // The fake session's exec echoes argv, which http.fetch cannot parse: reaching it is what this asserts.
    await assert.rejects(
      gateway.call(target, 'http.fetch', { url: 'http://127.0.0.1:8080/page' }),
      /unreadable/,
    );
    assert.equal(ran.length, 1, 'the allowed address reached the sandbox');
    for (const url of [
      'http://127.0.0.1:8081/',
      'http://169.254.169.254/latest/meta-data',
      'http://[::1]:8080/',
    ]) {
      const refused = await gateway.call(target, 'http.fetch', { url });
      assert.equal(refused.outcome, 'denied', url);
      assert.ok(refused.outcome === 'denied' && !refused.reason.includes('malformed'), refused.outcome);
    }
    assert.equal(ran.length, 1, 'no refused address reached the sandbox');
  });

  it('attack: a path climbing with ".." is a refusal audited as a violation, not a usage error', async () => {
    const { gateway, target, entries, files } = setup();
    const result = await gateway.call(target, 'fs.write', { path: '/workspace/../etc/passwd', content: 'x' });
    assert.equal(result.outcome, 'denied');
    assert.ok(result.outcome === 'denied' && result.rule === 'path:climb');
    assert.equal(files.size, 0);
    assert.equal(entries()[0]?.['violation'], 'tool');
  });

  it('fs.write creates a missing directory (inside the writable roots) and writes', async () => {
    const { gateway, target, session, files } = setup();
    const dirs = new Set(['/workspace']);
    const write = session.writeFile.bind(session);
    Object.assign(session, {
      mkdir: async (path: string) => void dirs.add(path),
      writeFile: async (path: string, chunks: AsyncIterable<Uint8Array>) => {
        if (!dirs.has(path.slice(0, path.lastIndexOf('/'))))
          throw new AegisError('NOT_FOUND', `no dir for ${path}`);
        return write(path, chunks);
      },
    });
    const result = await gateway.call(target, 'fs.write', { path: 'notes/a.txt', content: 'hello' });
    assert.equal(result.outcome, 'allowed');
    assert.equal(files.get('/workspace/notes/a.txt'), 'hello');
    assert.ok(dirs.has('/workspace/notes'));
  });
});
