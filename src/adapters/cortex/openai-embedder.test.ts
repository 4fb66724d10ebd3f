import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { isAegisError } from '../../domain/errors.ts';
import { OpenAiEmbedder } from './openai-embedder.ts';

/** A scripted OpenAI-compatible /embeddings server on loopback: 3-d vectors from the text length; records requests. */
describe('OpenAiEmbedder against a scripted loopback server', () => {
  const seen: { auth: string | undefined; body: { model: string; input: string[] } }[] = [];
  let mode: 'ok' | '401' | 'garbage' = 'ok';
  const server = createServer(async (req: IncomingMessage, res) => {
    let raw = '';
    for await (const chunk of req) raw += chunk;
    const body = JSON.parse(raw) as { model: string; input: string[] };
    seen.push({ auth: req.headers.authorization, body });
    if (mode === '401') {
      res.writeHead(401).end('{"error":"bad key"}');
      return;
    }
    const data =
      mode === 'garbage'
        ? [{ index: 0, embedding: 'nope' }]
        : body.input.map((t, index) => ({ index, embedding: [t.length, 1, 0] })).reverse();
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data }));
  });
  let baseUrl = '';
  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('probes the dimension, batches, orders by index and normalises', async () => {
    const e = await OpenAiEmbedder.open({ baseUrl, model: 'nomic-embed', apiKey: 'sk-test', batchSize: 2 });
    assert.equal(e.dimension, 3);
    assert.equal(e.id, 'openai:nomic-embed/3');
    seen.length = 0;
    const vs = await e.embed(['a', 'bbb', 'cc']);
    assert.equal(seen.length, 2, 'two batches of at most 2');
    assert.deepEqual(seen[0]?.body, {
      model: 'nomic-embed',
      input: ['a', 'bbb'],
      encoding_format: 'float',
    } as never);
    assert.equal(seen[0]?.auth, 'Bearer sk-test');
    const norm = (x: number) => [x / Math.hypot(x, 1), 1 / Math.hypot(x, 1), 0];
    vs.forEach((v, i) => {
      const want = norm([1, 3, 2][i] as number);
      for (let j = 0; j < 3; j++) assert.ok(Math.abs((v[j] as number) - (want[j] as number)) < 1e-6);
    });
  });

  it('reports an unreachable, refusing or malformed endpoint as UNAVAILABLE with the URL', async () => {
    const e = await OpenAiEmbedder.open({ baseUrl, model: 'm' });
    mode = '401';
    await assert.rejects(
      e.embed(['x']),
      (err) => isAegisError(err) && err.code === 'UNAVAILABLE' && /answered 401/.test(err.message),
    );
    mode = 'garbage';
    await assert.rejects(
      e.embed(['x']),
      (err) => isAegisError(err) && /not an array of numbers/.test(err.message),
    );
    mode = 'ok';
    await assert.rejects(
      OpenAiEmbedder.open({ baseUrl: 'http://127.0.0.1:1/v1', model: 'm', timeoutMs: 2000 }),
      (err) =>
        isAegisError(err) && err.code === 'UNAVAILABLE' && /127\.0\.0\.1:1\/v1\/embeddings/.test(err.message),
    );
  });
});
