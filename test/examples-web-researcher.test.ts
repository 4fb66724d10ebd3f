/**
 * examples/web-researcher, a code agent (Python, in-sandbox SDK only), on a real `aegis server` with the scripted
 * model. Built-in tools need a live sandbox, so the test does what its README says: deploy the example (with
 * network.allow pointed at a fixture site on 127.0.0.1), create a sandbox, exec `python3 /agent/main.py <request>`.
 * The agent fetches the fixture's index through `aegis.tools.call('http.fetch')`, follows its links (two pages on
 * the allowed host, one on a loopback port not allowed — refused and audited, never reached), and asks the model
 * for a summary of the pages it got. The ledger holds the `tool.call`, `network.connect` and `llm.call` entries.
 * The same agent also runs as a plain execution (issue 14): AEGIS runs it as the first command of a live instance,
 * and its output is then judged by examples/web-researcher/judge (spec.execution.validation: a summary citing no
 * fetched source fails the execution with the judge's reason).
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { FileSecretStore } from '../src/adapters/secrets/file-secret-store.ts';
import {
  apiCall,
  cli,
  killServers,
  pollUntil,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './server/harness.ts';
import { type ScriptedLlm, startScriptedLlm } from './support/scripted-llm.ts';

const ROOT = resolve(import.meta.dirname, '..');

interface Entry {
  kind: string;
  data: Record<string, unknown>;
}

const PAGES = (deniedPort: number): Record<string, string> => ({
  '/': `<html><head><title>Tides</title></head><body><h1>Tides</h1>
    <p>Tides are caused by the gravity of the Moon and the Sun.</p>
    <a href="/spring.html">Spring tides</a> <a href="neap.html#top">Neap tides</a>
    <a href="http://127.0.0.1:${deniedPort}/private">elsewhere</a></body></html>`,
  '/spring.html':
    '<title>Spring tides</title><p>Spring tides happen when the Sun and Moon align.</p><a href="/">home</a>',
  '/neap.html':
    '<title>Neap tides</title><script>ignored()</script><p>Neap tides happen at quarter moons.</p>',
});

describe('examples/web-researcher (code agent, http.fetch in a live sandbox, scripted model)', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let upstream: ScriptedLlm;
  let site: Server;
  let sitePort = 0;
  let deniedPort = 0;
  const hits: string[] = [];
  const work = mkdtempSync(join(tmpdir(), 'aegis-web-researcher-'));

  const call = (method: string, path: string, body?: unknown) =>
    apiCall(server.url, server.adminKey, method, path, body);

  before(async () => {
    site = createServer((request, response) => {
      hits.push(request.url ?? '');
      const page = PAGES(deniedPort)[request.url ?? ''];
      response.statusCode = page === undefined ? 404 : 200;
      response.setHeader('content-type', 'text/html');
      response.end(page ?? 'not found');
    });
    await new Promise<void>((done) => site.listen(0, '127.0.0.1', done));
    sitePort = (site.address() as AddressInfo).port;
    const probe = createServer();
    await new Promise<void>((done) => probe.listen(0, '127.0.0.1', done));
    deniedPort = (probe.address() as AddressInfo).port;
    await new Promise<void>((done) => probe.close(() => done()));

    upstream = await startScriptedLlm();
    dirs = serverDirs();
    const keyFile = join(work, 'secrets.key');
    await new FileSecretStore({ home: dirs.home, keyFile }).set('UPSTREAM_KEY', 'sk-web-researcher');
    writeFileSync(
      join(dirs.home, 'config.yaml'),
      stringify({
        llm: {
          providers: {
            scripted: { kind: 'openai', baseUrl: upstream.baseUrl, apiKeySecret: 'UPSTREAM_KEY' },
          },
          models: { default: { provider: 'scripted', model: 'scripted-1' } },
        },
      }),
    );
    server = await startServerProcess({ dirs, env: { AEGIS_SECRETS_KEY_FILE: keyFile } });

    // The example as shipped, with network.allow pointed at the fixture site (the only change).
    const dir = join(work, 'web-researcher');
    cpSync(join(ROOT, 'examples/web-researcher'), dir, { recursive: true });
    const manifest = parse(readFileSync(join(dir, 'agent.yaml'), 'utf8'));
    manifest.spec.security.network.allow = [`127.0.0.1:${sitePort}`];
    writeFileSync(join(dir, 'agent.yaml'), stringify(manifest));
    const env = { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey };
    // Its judge (spec.execution.validation) first, as the README says: deployed as shipped.
    const judged = await cli(['deploy', join(ROOT, 'examples/web-researcher/judge')], env);
    assert.equal(judged.code, 0, judged.stderr);
    const deployed = await cli(['deploy', dir], env);
    assert.equal(deployed.code, 0, deployed.stderr);
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    await upstream?.close();
    await new Promise<void>((done) => (site ? site.close(() => done()) : done()));
    dirs?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('fetches allowed pages through http.fetch, is refused the other host, and summarises with the model', async () => {
    const summary =
      'Tides come from the Moon and Sun [1]; spring tides at alignment [2], neap at quarter moons [3].';
    upstream.script({ text: summary });
    const created = await call('POST', '/v1/sandboxes', { agent: 'web-researcher' });
    assert.equal(created.status, 201, created.text);
    const id = created.json['id'] as string;
    const request = { question: 'What causes tides?', urls: [`http://127.0.0.1:${sitePort}/`] };
    const ran = await call('POST', `/v1/sandboxes/${id}/commands`, {
      cmd: ['python3', '/agent/main.py', JSON.stringify(request)],
      timeout: '3m',
    });
    assert.equal(ran.status, 200, ran.text);
    const stdout = ran.json['stdout'] as string;
    assert.equal(
      (ran.json['command'] as { exitCode: number }).exitCode,
      0,
      stdout + String(ran.json['stderr']),
    );
    const result = JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as {
      summary: string;
      sources: { n: number; url: string; title: string }[];
      refused: { url: string; reason: string }[];
    };
    assert.equal(result.summary, summary);
    const base = `http://127.0.0.1:${sitePort}`;
    assert.deepEqual(
      result.sources.map((s) => [s.n, s.url, s.title]),
      [
        [1, `${base}/`, 'Tides'],
        [2, `${base}/spring.html`, 'Spring tides'],
        [3, `${base}/neap.html`, 'Neap tides'],
      ],
    );
    assert.equal(result.refused.length, 1, JSON.stringify(result.refused));
    assert.equal(result.refused[0]?.url, `http://127.0.0.1:${deniedPort}/private`);
    assert.match(result.refused[0]?.reason ?? '', /not allowed by the agent's network policy/);
    assert.deepEqual(hits.sort(), ['/', '/neap.html', '/spring.html']);

    // The model got the pages' text (tags and scripts stripped), never the refused host's.
    const prompt = JSON.stringify(upstream.requests.at(-1)?.body);
    assert.match(prompt, /Spring tides happen when the Sun and Moon align/);
    assert.match(prompt, /Neap tides happen at quarter moons/);
    assert.ok(!prompt.includes('ignored()'), 'scripts are stripped');

    // The ledger: one tool.call per fetch (three allowed, one denied as a violation), the egress connections to the
    // fixture, one llm.call.
    const entries = await pollUntil(
      'the sandbox ledger',
      async () => {
        const audit = await call('GET', `/v1/sandboxes/${id}/audit`);
        const list = audit.json['entries'] as Entry[];
        return list.filter((e) => e.kind === 'network.connect').length >= 3 ? list : undefined;
      },
      30_000,
    );
    const fetches = entries.filter((e) => e.kind === 'tool.call' && e.data['tool'] === 'http.fetch');
    assert.deepEqual(
      fetches.map((e) => e.data['outcome']),
      ['allowed', 'allowed', 'allowed', 'denied'],
      JSON.stringify(fetches),
    );
    const denied = fetches.filter((e) => e.data['outcome'] === 'denied');
    assert.equal(denied.length, 1);
    assert.equal(denied[0]?.data['violation'], 'tool');
    const connects = entries.filter((e) => e.kind === 'network.connect');
    assert.ok(
      connects.every((e) => e.data['verdict'] === 'allow' && e.data['port'] === sitePort),
      JSON.stringify(connects),
    );
    assert.equal(entries.filter((e) => e.kind === 'llm.call').length, 1);
    await call('DELETE', `/v1/sandboxes/${id}`);
  });

  it('runs as a plain execution too (POST /v1/executions?wait): input in, output out, the same ledger (issue 14)', async () => {
    const summary = 'Tides: the Moon and Sun [1], alignment [2], quarter moons [3].';
    upstream.script({ text: summary });
    hits.length = 0;
    const base = `http://127.0.0.1:${sitePort}`;
    const run = await call('POST', '/v1/executions?wait=3m', {
      agent: 'web-researcher',
      input: { question: 'What causes tides?', urls: [`${base}/`] },
    });
    assert.equal(run.status, 200, run.text);
    assert.equal(run.json['status'], 'succeeded', run.text);
    const id = run.json['id'] as string;
    const output = run.json['output'] as {
      summary: string;
      sources: { url: string }[];
      refused: { url: string }[];
    };
    assert.equal(output.summary, summary);
    assert.deepEqual(
      output.sources.map((s) => s.url),
      [`${base}/`, `${base}/spring.html`, `${base}/neap.html`],
    );
    assert.deepEqual(
      output.refused.map((r) => r.url),
      [`http://127.0.0.1:${deniedPort}/private`],
    );
    assert.deepEqual(hits.sort(), ['/', '/neap.html', '/spring.html']);
    // The execution's own ledger: the denied fetch is a tool violation there, as in the live sandbox.
    const audit = await call('GET', `/v1/executions/${id}/audit`);
    const entries = audit.json['entries'] as Entry[];
    const fetches = entries.filter((e) => e.kind === 'tool.call' && e.data['tool'] === 'http.fetch');
    assert.deepEqual(
      fetches.map((e) => e.data['outcome']),
      ['allowed', 'allowed', 'allowed', 'denied'],
      JSON.stringify(fetches),
    );
    assert.equal(entries.filter((e) => e.kind === 'llm.call').length, 1);
    assert.equal(entries.at(-1)?.kind, 'execution.finished');
    // The judge passed it (the summary cites fetched sources): one agent.iteration entry, verdict judge passed.
    const verdicts = entries.filter((e) => e.kind === 'agent.iteration').map((e) => e.data['verdicts']);
    assert.deepEqual(verdicts, [[{ validator: 'judge', passed: true }]]);
    // The agent's stdout is the execution's log; the verdicts are a system line.
    const logs = await call('GET', `/v1/executions/${id}/logs`);
    assert.match(logs.text, /Spring tides/);
    assert.match(logs.text, /\\"validation\\":\{\\"passed\\":true/);
  });

  it("is judged: a summary citing none of the fetched sources fails validation, with the judge's reason", async () => {
    upstream.script({ text: 'Tides are caused by the Moon.' });
    const base = `http://127.0.0.1:${sitePort}`;
    const run = await call('POST', '/v1/executions?wait=3m', {
      agent: 'web-researcher',
      input: { question: 'What causes tides?', urls: [`${base}/`] },
    });
    assert.equal(run.status, 200, run.text);
    assert.equal(run.json['status'], 'failed', run.text);
    assert.equal(
      run.json['reason'],
      'validation: judge: judge web-researcher-judge scored 0, below 1 — the summary cites none of the 3 fetched source(s) ([1]..[3])',
    );
    // The output is kept (what was judged); the ledger holds the failed verdict before the end.
    assert.equal((run.json['output'] as { summary: string }).summary, 'Tides are caused by the Moon.');
    const audit = await call('GET', `/v1/executions/${run.json['id']}/audit`);
    const entries = audit.json['entries'] as Entry[];
    const iterations = entries.filter((e) => e.kind === 'agent.iteration');
    assert.equal(iterations.length, 1);
    assert.equal(iterations[0]?.data['passed'], false);
    assert.equal(entries.at(-1)?.data['status'], 'failed');
    // The judge ran as an execution of its own.
    const judges = await call('GET', '/v1/executions?agent=web-researcher-judge&limit=10');
    assert.ok(
      (judges.json['executions'] as { status: string }[]).length >= 2,
      'one judge execution per judged run',
    );
  });
});
