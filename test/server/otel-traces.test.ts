/**
 * OpenTelemetry traces (issue 13, ADR 0076): with OTEL_EXPORTER_OTLP_ENDPOINT set, `aegis server` exports an
 * execution span with one child span per model call following the GenAI semantic conventions. A local OTLP/HTTP
 * collector stand-in (node:http on 127.0.0.1:0, decoding the exporter's JSON) receives them; a deployed Python agent
 * makes two calls (one streamed) against the scripted upstream. Prompts and completions stay out of spans (the
 * operator did not enable llm.recordContent).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { stringify } from 'yaml';
import { FileSecretStore } from '../../src/adapters/secrets/file-secret-store.ts';
import { pollUntil } from '../support/poll.ts';
import { type ScriptedLlm, startScriptedLlm } from '../support/scripted-llm.ts';
import {
  cli,
  killServers,
  type ServerDirs,
  type ServerProcess,
  serverDirs,
  startServerProcess,
} from './harness.ts';

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string | number;
  endTimeUnixNano: string | number;
  attributes: { key: string; value: OtlpValue }[];
  status?: { code?: number; message?: string };
}
interface Received {
  span: OtlpSpan;
  resource: Record<string, unknown>;
  attrs: Record<string, unknown>;
}

function flatten(attributes: { key: string; value: OtlpValue }[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const { key, value } of attributes ?? []) {
    out[key] =
      value.stringValue ??
      (value.intValue !== undefined ? Number(value.intValue) : undefined) ??
      value.doubleValue ??
      value.boolValue;
  }
  return out;
}

/** An OTLP/HTTP traces endpoint that keeps every span it is sent (JSON encoding, gzip or not). */
async function startCollector(): Promise<{ url: string; spans: Received[]; close(): Promise<void> }> {
  const spans: Received[] = [];
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    let body = Buffer.concat(chunks);
    if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
    if (req.url !== '/v1/traces' || !String(req.headers['content-type']).includes('json')) {
      res.writeHead(415).end();
      return;
    }
    const payload = JSON.parse(body.toString('utf8')) as {
      resourceSpans: {
        resource?: { attributes: { key: string; value: OtlpValue }[] };
        scopeSpans: { spans: OtlpSpan[] }[];
      }[];
    };
    for (const rs of payload.resourceSpans) {
      const resource = flatten(rs.resource?.attributes);
      for (const ss of rs.scopeSpans) {
        for (const span of ss.spans) spans.push({ span, resource, attrs: flatten(span.attributes) });
      }
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    spans,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

const AGENT = `import aegis
first = aegis.llm.chat([{"role": "user", "content": "secret prompt one"}])
second = aegis.llm.chat([{"role": "user", "content": "secret prompt two"}], stream=True)
aegis.output({"first": first["content"], "second": "".join(second)})
`;

describe('OpenTelemetry GenAI traces from aegis server', () => {
  let dirs: ServerDirs;
  let server: ServerProcess;
  let upstream: ScriptedLlm;
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let agentDir = '';
  let keyDir = '';

  before(async () => {
    upstream = await startScriptedLlm();
    collector = await startCollector();
    dirs = serverDirs();
    keyDir = mkdtempSync(join(tmpdir(), 'aegis-otel-key-'));
    const keyFile = join(keyDir, 'secrets.key');
    await new FileSecretStore({ home: dirs.home, keyFile }).set('UPSTREAM_KEY', 'sk-otel-test');
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
    server = await startServerProcess({
      dirs,
      env: {
        AEGIS_SECRETS_KEY_FILE: keyFile,
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
        OTEL_BSP_SCHEDULE_DELAY: '50',
        OTEL_SERVICE_NAME: 'aegis-otel-test',
      },
    });
    agentDir = mkdtempSync(join(tmpdir(), 'aegis-otel-agent-'));
    writeFileSync(join(agentDir, 'main.py'), AGENT);
    writeFileSync(
      join(agentDir, 'agent.yaml'),
      stringify({
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name: 'otel-agent', version: '1.0.0' },
        spec: {
          runtime: { language: 'python', entrypoint: 'main.py' },
          isolation: 'sandbox',
          security: { resources: { timeout: '30s' } },
          llm: { models: ['default'] },
        },
      }),
    );
  });
  after(async () => {
    if (server) await server.stop();
    await killServers();
    await upstream?.close();
    await collector?.close();
    dirs?.cleanup();
    for (const dir of [agentDir, keyDir]) if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('exports an execution span and one GenAI child span per model call', async () => {
    const env = { ...server.env, AEGIS_SERVER: server.url, AEGIS_API_KEY: server.adminKey };
    const deployed = await cli(['deploy', agentDir], env);
    assert.equal(deployed.code, 0, deployed.stderr);
    const exec = await cli(['exec', '--wait', 'otel-agent', '-o', 'json'], env);
    assert.equal(exec.code, 0, exec.stderr + exec.stdout + server.stderr());
    const execution = JSON.parse(exec.stdout) as { id: string; status: string };
    assert.equal(execution.status, 'succeeded');

    const root = await pollUntil('the execution span at the collector', () =>
      collector.spans.find((s) => s.attrs['aegis.execution.id'] === execution.id),
    );
    const children = await pollUntil('two child spans of the execution span', () => {
      const found = collector.spans.filter((s) => s.span.parentSpanId === root.span.spanId);
      return found.length >= 2 ? found : undefined;
    });

    assert.equal(root.resource['service.name'], 'aegis-otel-test');
    assert.equal(root.span.name, 'execution otel-agent');
    assert.ok(!root.span.parentSpanId, 'the execution span is a root span');
    assert.equal(root.attrs['aegis.agent'], 'otel-agent');
    assert.equal(root.attrs['aegis.agent.revision'], 1);
    assert.equal(root.attrs['aegis.runtime'], 'sandbox');
    assert.equal(root.attrs['aegis.execution.status'], 'succeeded');

    assert.equal(children.length, 2);
    for (const child of children) {
      assert.equal(child.span.traceId, root.span.traceId);
      assert.equal(child.span.name, 'chat scripted-1');
      assert.equal(child.span.kind, 3, 'SPAN_KIND_CLIENT');
      assert.equal(child.attrs['gen_ai.operation.name'], 'chat');
      assert.equal(child.attrs['gen_ai.provider.name'], 'openai');
      assert.equal(child.attrs['gen_ai.request.model'], 'scripted-1');
      assert.equal(child.attrs['gen_ai.response.model'], 'scripted-1');
      assert.equal(child.attrs['gen_ai.usage.input_tokens'], 10);
      assert.equal(child.attrs['gen_ai.usage.output_tokens'], 5);
      assert.equal(child.attrs['aegis.llm.alias'], 'default');
      assert.equal(child.attrs['error.type'], undefined);
      assert.ok(BigInt(child.span.startTimeUnixNano) >= BigInt(root.span.startTimeUnixNano));
      assert.ok(BigInt(child.span.endTimeUnixNano) <= BigInt(root.span.endTimeUnixNano));
      // No prompt or completion left the server: recordContent is off.
      const text = JSON.stringify(child.span);
      assert.doesNotMatch(text, /secret prompt|gen_ai\.input|gen_ai\.output/);
    }
    assert.deepEqual(children.map((c) => c.attrs['aegis.llm.stream']).sort(), [false, true]);
  });
});
