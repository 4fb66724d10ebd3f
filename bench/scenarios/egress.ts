/**
 * Egress proxy overhead: HTTP requests through the real `EgressProxy` (policy check, own connection upstream,
 * decision event) against the same requests sent straight to the origin, side by side in one run.
 *
 * - Origin: an HTTP server on 127.0.0.1 (ephemeral port) in a worker thread, `/small` (64 B) and `/big` (1 MiB).
 * - Proxy: `EgressProxy` listening on a temp unix socket, policy `allow: 127.0.0.1:<port>`, and also serving a TCP
 *   listener on 127.0.0.1 (`proxy.serve()`, as the sandbox reaches it); the clients use the TCP listener.
 * - Clients: Node's `http` client, a new connection per request (as agents behind an HTTP proxy do), in the main
 *   thread with the proxy (which shares the orchestrator's event loop the same way).
 * - Response scrubbing (ADR 0018): a second proxy, identical but for one secret (so every plain-HTTP response is
 *   scanned for its value in all its encodings and re-framed chunked), measured beside the first in the same run.
 *
 * Standalone: `node bench/scenarios/egress.ts [--quick]`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { type EgressDecisionEvent, EgressProxy } from '../../src/adapters/egress/proxy.ts';
import { HttpSecretScrubber } from '../../src/adapters/secrets/http-response-scrubber.ts';
import { compileNetworkPolicy } from '../../src/domain/policy/network-rules.ts';
import type { BenchOptions, Scenario, ScenarioReport } from '../lib/scenario.ts';
import { formatMs, percentile } from '../lib/stats.ts';
import { renderMarkdown, renderText, type Table } from '../lib/table.ts';

const SMALL_BYTES = 64;
const BIG_BYTES = 1024 * 1024;
const CONCURRENCY = 16;

/** The origin, in a worker thread so its work does not share the proxy's and the clients' event loop. */
const ORIGIN_SOURCE = `
const http = require('node:http');
const { parentPort } = require('node:worker_threads');
const small = Buffer.alloc(${SMALL_BYTES}, 97);
const big = Buffer.alloc(${BIG_BYTES}, 98);
const server = http.createServer((req, res) => {
  const body = req.url === '/big' ? big : small;
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 10000;
server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));
`;

export interface LatencyRow {
  readonly variant: string;
  readonly n: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly mean: number;
}

export interface EgressBenchResult {
  readonly latencyRequests: number;
  readonly latency: readonly LatencyRow[];
  readonly throughputSeconds: number;
  readonly concurrency: number;
  readonly throughput: readonly {
    readonly variant: string;
    readonly requests: number;
    readonly perSec: number;
  }[];
  readonly downloads: number;
  readonly bandwidth: readonly {
    readonly variant: string;
    readonly n: number;
    readonly p50Ms: number;
    readonly mibPerSec: number;
  }[];
  readonly proxiedRequests: number;
  readonly decisions: number;
  readonly decisionsAllowed: number;
  readonly decisionErrors: number;
}

function latencyRow(variant: string, samples: readonly number[]): LatencyRow {
  const sorted = [...samples].sort((a, b) => a - b);
  const r = (value: number) => Math.round(value * 1000) / 1000;
  return {
    variant,
    n: sorted.length,
    p50: r(percentile(sorted, 50)),
    p95: r(percentile(sorted, 95)),
    p99: r(percentile(sorted, 99)),
    mean: r(sorted.reduce((sum, value) => sum + value, 0) / sorted.length),
  };
}

/** One request; resolves with the body size once the response has been read to the end. */
function get(options: http.RequestOptions): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = http.request(options, (response) => {
      let bytes = 0;
      response.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
      });
      response.on('end', () =>
        response.statusCode === 200 ? resolve(bytes) : reject(new Error(`HTTP ${response.statusCode}`)),
      );
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end();
  });
}

/** `CONNECT target` through the proxy's TCP listener; resolves with the established tunnel. */
function openTunnel(proxyPort: number, target: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const request = http.request({
      host: '127.0.0.1',
      port: proxyPort,
      method: 'CONNECT',
      path: target,
      headers: { Host: target },
      agent: false,
    });
    request.on('connect', (response, socket) => {
      if (response.statusCode === 200) resolve(socket);
      else {
        socket.destroy();
        reject(new Error(`CONNECT ${target}: HTTP ${response.statusCode}`));
      }
    });
    request.on('error', reject);
    request.end();
  });
}

export async function runEgressBench(opts: {
  quick: boolean;
  log?: (line: string) => void;
}): Promise<EgressBenchResult> {
  const log = opts.log ?? (() => {});
  const latencyRequests = opts.quick ? 300 : 2000;
  const warmup = opts.quick ? 30 : 100;
  const throughputSeconds = opts.quick ? 1 : 3;
  const downloads = opts.quick ? 20 : 100;

  const origin = new Worker(ORIGIN_SOURCE, { eval: true });
  const dir = mkdtempSync(join(tmpdir(), 'aegis-bench-egress-'));
  const decisions: EgressDecisionEvent[] = [];
  let proxy: EgressProxy | undefined;
  let scrubbing: EgressProxy | undefined;
  try {
    const port = await new Promise<number>((resolve, reject) => {
      origin.once('message', (value: number) => resolve(value));
      origin.once('error', reject);
    });
    const target = `127.0.0.1:${port}`;
    const compiled = compileNetworkPolicy({ allow: [target] });
    if (!compiled.ok) throw new Error(`policy: ${compiled.problems.map((p) => p.message).join('; ')}`);
    proxy = new EgressProxy({
      execution: 'ex_bench_egress',
      socketPath: join(dir, 'egress.sock'),
      policy: compiled.policy,
      onDecision: (event) => decisions.push(event),
    });
    await proxy.listen();
    const serveTcp = async (served: EgressProxy) => {
      const tcp = net.createServer({ allowHalfOpen: true });
      served.serve(tcp);
      return await new Promise<number>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(0, '127.0.0.1', () => resolve((tcp.address() as net.AddressInfo).port));
      });
    };
    const proxyPort = await serveTcp(proxy);
    // The same proxy with one secret in the execution: every plain-HTTP response is scrubbed.
    scrubbing = new EgressProxy({
      execution: 'ex_bench_egress_scrub',
      policy: compiled.policy,
      onDecision: (event) => decisions.push(event),
      scrubHttpResponse: new HttpSecretScrubber({
        placeholders: new Map([
          [
            `aegis-secret:BENCH_KEY:${'0'.repeat(32)}`,
            { name: 'BENCH_KEY', value: 'sk-bench-0123456789abcdef0123456789abcdef' },
          ],
        ]),
      }),
    });
    const scrubPort = await serveTcp(scrubbing);
    const socketPath = proxy.socketPath!;

    let proxied = 0;
    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const direct = (path: string) => get({ host: '127.0.0.1', port, path, agent: false });
    const directKeepAlive = (path: string) => get({ host: '127.0.0.1', port, path, agent: keepAlive });
    const forward = (path: string) => {
      proxied++;
      return get({
        host: '127.0.0.1',
        port: proxyPort,
        path: `http://${target}${path}`,
        headers: { Host: target },
        agent: false,
      });
    };
    const forwardScrubbed = (path: string) => {
      proxied++;
      return get({
        host: '127.0.0.1',
        port: scrubPort,
        path: `http://${target}${path}`,
        headers: { Host: target },
        agent: false,
      });
    };
    const forwardUnix = (path: string) => {
      proxied++;
      return get({ socketPath, path: `http://${target}${path}`, headers: { Host: target }, agent: false });
    };
    /** Tunnel setup, then one request over it; returns [setup ms, request ms, bytes]. */
    const tunnelled = async (path: string): Promise<[number, number, number]> => {
      proxied++;
      const started = performance.now();
      const socket = await openTunnel(proxyPort, target);
      const established = performance.now();
      try {
        const bytes = await get({
          host: '127.0.0.1',
          port,
          path,
          headers: { Connection: 'close' },
          createConnection: () => socket,
        });
        return [established - started, performance.now() - established, bytes];
      } finally {
        socket.destroy();
      }
    };

    // ── (1) latency of sequential small GETs, variants interleaved round by round ──
    log(`egress: latency, ${latencyRequests} sequential GETs per variant (+${warmup} warm-up)`);
    const simple: [string, (path: string) => Promise<number>][] = [
      ['direct, keep-alive (context)', directKeepAlive],
      ['direct, new connection', direct],
      ['proxy HTTP forward (TCP listener)', forward],
      ['proxy HTTP forward (unix socket)', forwardUnix],
      ['proxy HTTP forward + response scrubbing (TCP)', forwardScrubbed],
    ];
    const samples = new Map<string, number[]>(simple.map(([name]) => [name, []]));
    const tunnelSetup: number[] = [];
    const tunnelRequest: number[] = [];
    const tunnelTotal: number[] = [];
    for (let round = 0; round < warmup + latencyRequests; round++) {
      const measured = round >= warmup;
      for (const [name, fn] of simple) {
        const started = performance.now();
        const bytes = await fn('/small');
        const elapsed = performance.now() - started;
        if (bytes !== SMALL_BYTES) throw new Error(`${name}: got ${bytes} bytes`);
        if (measured) samples.get(name)!.push(elapsed);
      }
      const [setup, request, bytes] = await tunnelled('/small');
      if (bytes !== SMALL_BYTES) throw new Error(`CONNECT: got ${bytes} bytes`);
      if (measured) {
        tunnelSetup.push(setup);
        tunnelRequest.push(request);
        tunnelTotal.push(setup + request);
      }
    }
    const latency = [
      ...simple.map(([name]) => latencyRow(name, samples.get(name)!)),
      latencyRow('proxy CONNECT: tunnel setup + request', tunnelTotal),
      latencyRow('  of which tunnel setup', tunnelSetup),
      latencyRow('  of which request over the tunnel', tunnelRequest),
    ];

    // ── (2) throughput: CONCURRENCY clients in a loop for throughputSeconds ──
    log(`egress: throughput, ${CONCURRENCY} concurrent clients, ${throughputSeconds} s per variant`);
    const load = async (fn: () => Promise<unknown>) => {
      const deadline = performance.now() + throughputSeconds * 1000;
      let done = 0;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (performance.now() < deadline) {
            await fn();
            done++;
          }
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      return { requests: done, perSec: Math.round(done / seconds) };
    };
    const throughput = [];
    for (const [variant, fn] of [
      ['direct, keep-alive (context)', () => directKeepAlive('/small')],
      ['direct, new connection', () => direct('/small')],
      ['proxy HTTP forward', () => forward('/small')],
      ['proxy HTTP forward + response scrubbing', () => forwardScrubbed('/small')],
      ['proxy CONNECT (tunnel + request)', () => tunnelled('/small')],
    ] as const) {
      await new Promise((resolve) => setTimeout(resolve, 200)); // let the previous variant's sockets close
      throughput.push({ variant, ...(await load(fn)) });
    }

    // ── (3) bandwidth: 1 MiB downloads, direct vs through a CONNECT tunnel ──
    log(`egress: bandwidth, ${downloads} downloads of 1 MiB per variant`);
    const bigDirect: number[] = [];
    const bigTunnel: number[] = [];
    const bigForward: number[] = [];
    const bigScrubbed: number[] = [];
    for (let i = 0; i < downloads + 3; i++) {
      let started = performance.now();
      if ((await direct('/big')) !== BIG_BYTES) throw new Error('direct /big: short body');
      if (i >= 3) bigDirect.push(performance.now() - started);
      started = performance.now();
      const [, , bytes] = await tunnelled('/big');
      if (bytes !== BIG_BYTES) throw new Error('CONNECT /big: short body');
      if (i >= 3) bigTunnel.push(performance.now() - started);
      started = performance.now();
      if ((await forward('/big')) !== BIG_BYTES) throw new Error('forward /big: short body');
      if (i >= 3) bigForward.push(performance.now() - started);
      started = performance.now();
      if ((await forwardScrubbed('/big')) !== BIG_BYTES) throw new Error('scrubbed /big: short body');
      if (i >= 3) bigScrubbed.push(performance.now() - started);
    }
    const bandwidthRow = (variant: string, times: number[]) => {
      const total = times.reduce((sum, value) => sum + value, 0);
      return {
        variant,
        n: times.length,
        p50Ms:
          Math.round(
            percentile(
              [...times].sort((a, b) => a - b),
              50,
            ) * 1000,
          ) / 1000,
        mibPerSec: Math.round((times.length / (total / 1000)) * 10) / 10,
      };
    };
    const bandwidth = [
      bandwidthRow('direct, new connection', bigDirect),
      bandwidthRow('proxy CONNECT tunnel (setup included)', bigTunnel),
      bandwidthRow('proxy HTTP forward', bigForward),
      bandwidthRow('proxy HTTP forward + response scrubbing', bigScrubbed),
    ];
    keepAlive.destroy();

    // Every proxied request is reported when its connections close: wait for the last ones, then close.
    const waitUntil = Date.now() + 5_000;
    while (decisions.length < proxied && Date.now() < waitUntil)
      await new Promise((resolve) => setTimeout(resolve, 10));
    await Promise.all([proxy.close(), scrubbing.close()]);
    proxy = undefined;
    scrubbing = undefined;
    const allowed = decisions.filter((event) => event.verdict === 'allow').length;
    const errors = decisions.filter((event) => event.error !== undefined).length;
    if (decisions.length !== proxied || allowed !== proxied) {
      throw new Error(
        `${proxied} proxied requests but ${decisions.length} decisions (${allowed} allowed): not every request was checked`,
      );
    }
    return {
      latencyRequests,
      latency,
      throughputSeconds,
      concurrency: CONCURRENCY,
      throughput,
      downloads,
      bandwidth,
      proxiedRequests: proxied,
      decisions: decisions.length,
      decisionsAllowed: allowed,
      decisionErrors: errors,
    };
  } finally {
    if (proxy) await proxy.close();
    if (scrubbing) await scrubbing.close();
    await origin.terminate();
    rmSync(dir, { recursive: true, force: true });
  }
}

function ratio(value: number, base: number): string {
  return `${(value / base).toFixed(2)}×`;
}

function tables(r: EgressBenchResult): { latency: Table; throughput: Table; bandwidth: Table } {
  const base = r.latency.find((row) => row.variant === 'direct, new connection')!;
  const tpBase = r.throughput.find((row) => row.variant === 'direct, new connection')!;
  const bwBase = r.bandwidth[0]!;
  return {
    latency: {
      headers: ['Small GET (64 B), sequential', 'p50 ms', 'p95 ms', 'p99 ms', 'p50 vs direct', 'p50 + ms'],
      rows: r.latency.map((row) => {
        const part = row.variant.startsWith('  ');
        return [
          row.variant.trim() === row.variant ? row.variant : `↳ ${row.variant.trim()}`,
          formatMs(row.p50),
          formatMs(row.p95),
          formatMs(row.p99),
          part ? '' : ratio(row.p50, base.p50),
          part ? '' : formatMs(row.p50 - base.p50),
        ];
      }),
      align: ['left', 'right', 'right', 'right', 'right', 'right'],
    },
    throughput: {
      headers: [
        `Throughput, ${r.concurrency} concurrent clients, ${r.throughputSeconds} s`,
        'req/s',
        'vs direct',
      ],
      rows: r.throughput.map((row) => [
        row.variant,
        row.perSec.toLocaleString('en'),
        ratio(row.perSec, tpBase.perSec),
      ]),
    },
    bandwidth: {
      headers: [`Download 1 MiB, ${r.downloads} sequential`, 'p50 ms', 'MiB/s', 'vs direct'],
      rows: r.bandwidth.map((row) => [
        row.variant,
        formatMs(row.p50Ms),
        row.mibPerSec.toFixed(1),
        ratio(row.mibPerSec, bwBase.mibPerSec),
      ]),
    },
  };
}

function checkedLine(r: EgressBenchResult): string {
  return (
    `Decisions: ${r.decisions.toLocaleString('en')} for ${r.proxiedRequests.toLocaleString('en')} proxied requests ` +
    `(${r.decisionsAllowed.toLocaleString('en')} allowed, ${r.decisionErrors} with an error): every proxied request was checked.`
  );
}

function egressText(r: EgressBenchResult): string {
  const t = tables(r);
  return (
    `egress proxy vs direct loopback (new connection per request unless "keep-alive"):\n\n` +
    `${renderText(t.latency)}\n\n${renderText(t.throughput)}\n\n${renderText(t.bandwidth)}\n\n${checkedLine(r)}\n`
  );
}

/** `npm run bench -- egress`. */
export const egress: Scenario = {
  name: 'egress',
  description: 'egress proxy: HTTP latency, throughput and bandwidth through the proxy vs direct loopback',
  async run(options: BenchOptions): Promise<ScenarioReport> {
    const r = await runEgressBench({ quick: options.quick, log: options.log });
    const t = tables(r);
    const markdown = [
      renderMarkdown(t.latency),
      renderMarkdown(t.throughput),
      renderMarkdown(t.bandwidth),
      checkedLine(r),
    ].join('\n\n');
    return { text: egressText(r), docs: [{ marker: 'egress', markdown }], raw: r };
  },
};

if (import.meta.main) {
  const quick = process.argv.includes('--quick');
  const r = await runEgressBench({ quick, log: (line) => process.stderr.write(`${line}\n`) });
  process.stdout.write(egressText(r));
}
