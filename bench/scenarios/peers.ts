/**
 * Scenario `peers`: one start of a trivial program in each sandbox available on this machine, side by side with
 * AEGIS and the floor, interleaved round by round (shuffled order), then each system's start rate with 2 × cores
 * clients in closed loops.
 *
 * Systems (each measured only when present; otherwise its row says why and how to install it):
 * - floor (raw bwrap), aegis cold (`runAgent`), aegis warm (`bind` + `execute()` on a prewarmed instance): the trivial
 *   Python agent of start-latency (bench/fixtures/start-latency/python/agent.py), → its first line and → exit.
 * - aegis cold/warm on the gvisor and docker runtimes (the same agent with `isolation` switched; present when the
 *   RuntimeRouter's probe says the runtime is available and a first run succeeds): `runAgent`, and `bind` +
 *   `execute()` on an instance spawned Warm ahead of time. They also make the "Runtimes through AEGIS" table
 *   (marker `runtimes`): each runtime's cold/warm p50s and cold executions/s beside its raw peer from the same rounds.
 * - @anthropic-ai/sandbox-runtime (library: `wrapWithSandbox` + `spawn(…, { shell: true })`, no network, no writes,
 *   run in the agent's directory): `/usr/bin/python3 agent.py`, the same program; the wrap is timed too.
 * - gVisor `runsc --network=none do /usr/bin/python3 agent.py` (in the agent's directory; the host's root file
 *   system, gVisor's own kernel). Its first-line stamp comes from gVisor's clock, which follows the host's.
 * - Docker, with `--network none`, a FROM-scratch image with busybox-static: `docker run --rm IMAGE echo hello`
 *   (CLI) and the Engine API create → start → wait → logs → remove. busybox has no sub-second clock, so Docker is
 *   timed to exit (the CLI) and to the container's exit (`wait` returning; the API), not to a first line.
 */
import { chmodSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import { probeDocker, probeGvisor } from '../../src/adapters/runtimes/registry.ts';
import { resolveSandboxUser } from '../../src/adapters/runtimes/sandbox/host.ts';
import type { CompiledAgent } from '../../src/domain/manifest/compiled.ts';
import type { RuntimeAvailability } from '../../src/domain/runtime/capabilities.ts';
import { openLocalContext } from '../../src/main.ts';
import { aegisRun, warmVariant, watchBwrap } from '../lib/aegis-run.ts';
import {
  checkExit,
  FIXTURES,
  firstLineOf,
  type Metrics,
  parseLastLine,
  runChild,
  type Variant,
} from '../lib/child.ts';
import { checkFloorParity, commandFor, makeFloor } from '../lib/floor.ts';
import { describeMachine, machineInfo } from '../lib/machine.ts';
import {
  type Absent,
  isAbsent,
  openDocker,
  openRunsc,
  openSandboxRuntime,
  type SandboxRuntimePeer,
} from '../lib/peers.ts';
import { runRounds, seriesOf } from '../lib/rounds.ts';
import type { BenchOptions, Scenario, ScenarioReport, StartPoint } from '../lib/scenario.ts';
import { formatMs, roundSummary, type Summary, summarize } from '../lib/stats.ts';
import { renderMarkdown, renderText, type Table } from '../lib/table.ts';
import { closedLoop, type Execute } from './api.ts';

const AGENT_DIR = join(FIXTURES, 'python');
/** Rounds of the latency comparison (each runs every system once): full, quick. */
const ROUNDS = 50;
const QUICK_ROUNDS = 5;
/** Starts per system in the rate loops: full, quick. */
const RATE_STARTS = 40;
const QUICK_RATE_STARTS = 8;
/** …of the gvisor and docker runtimes through AEGIS, quick. */
const QUICK_RUNTIME_RATE_STARTS = 4;

/** The runtimes besides `sandbox` that AEGIS can run the same agent on (`spec.isolation`), when this host has them. */
const OTHER_RUNTIMES = ['gvisor', 'docker'] as const;
type OtherRuntime = (typeof OTHER_RUNTIMES)[number];
const RUNTIME_LABEL: Readonly<Record<OtherRuntime, string>> = {
  gvisor: 'gvisor runtime',
  docker: 'docker runtime',
};
const RUNTIME_INSTALL: Readonly<Record<OtherRuntime, string>> = {
  gvisor: 'npm run setup -- --runtimes gvisor (as root)',
  docker: 'npm run setup -- --runtimes docker, and a dockerd (npm run bench starts a private one)',
};

function probeRuntime(name: OtherRuntime): RuntimeAvailability {
  return name === 'gvisor' ? probeGvisor() : probeDocker();
}

interface System {
  readonly id: string;
  readonly label: string;
  /** What runs in it. */
  readonly program: string;
  readonly version: string;
  /** Rows: metric key → what it measures. The first is the headline (chart, rate latency). */
  readonly spans: readonly (readonly [string, string])[];
  readonly run?: () => Promise<Metrics>;
  readonly absent?: Absent;
}

function absentSystem(id: string, label: string, program: string, absent: Absent): System {
  return { id, label, program, version: '–', spans: [], absent };
}

/**
 * "Runtimes through AEGIS": one row per runtime — cold (runAgent) and warm (bind + execute) p50s, the cold
 * executions/s, and the raw peer of the same isolation measured in the same rounds (floor: raw bwrap; runsc do;
 * the Docker Engine API running busybox echo, timed to the container's exit).
 */
function runtimesTable(
  systems: readonly System[],
  summaries: ReadonlyMap<string, Summary>,
  rates: ReadonlyMap<string, { perSec: number }>,
  clients: number,
): Table {
  const rows: [string, string, string, string, string, string][] = [
    [
      'sandbox (bubblewrap)',
      'aegis-cold',
      'aegis-warm',
      'floor',
      'firstLine',
      'floor: raw bwrap, → first line',
    ],
    [
      'gvisor (runsc, AEGIS bundle)',
      'aegis-gvisor-cold',
      'aegis-gvisor-warm',
      'runsc',
      'firstLine',
      'runsc do, → first line',
    ],
    [
      'docker (Engine API)',
      'aegis-docker-cold',
      'aegis-docker-warm',
      'docker-api',
      'exited',
      'Engine API, busybox echo → exit',
    ],
  ];
  const p50 = (id: string, key: string) => summaries.get(`${id}:${key}`);
  const cell = (s: Summary | undefined) => (s ? `${formatMs(s.p50)} (${formatMs(s.p95)})` : '–');
  const byId = new Map(systems.map((s) => [s.id, s]));
  return {
    headers: [
      'runtime',
      'cold: call → first line',
      'cold: call → result',
      'warm: claim → first line',
      'warm: claim → result',
      `executions/s, cold, ${clients} clients`,
      'raw peer (same rounds)',
      'raw p50 (p95)',
      'cold first line vs raw p50',
    ],
    align: ['left', 'right', 'right', 'right', 'right', 'right', 'left', 'right', 'right'],
    rows: rows.map(([runtime, cold, warm, raw, rawKey, rawLabel]) => {
      const absent = byId.get(cold)?.absent;
      if (absent) return [runtime, `absent: ${absent.absent}`, '–', '–', '–', '–', rawLabel, '–', '–'];
      const coldFirst = p50(cold, 'firstLine');
      const rawSummary = p50(raw, rawKey);
      const rate = rates.get(cold);
      return [
        runtime,
        cell(coldFirst),
        cell(p50(cold, 'result')),
        cell(p50(warm, 'firstLine')),
        cell(p50(warm, 'result')),
        rate ? rate.perSec.toFixed(1) : '–',
        byId.get(raw)?.absent ? `${rawLabel} (absent)` : rawLabel,
        cell(rawSummary),
        coldFirst && rawSummary ? `${(coldFirst.p50 / rawSummary.p50).toFixed(2)}×` : '–',
      ];
    }),
  };
}

async function run(options: BenchOptions): Promise<ScenarioReport> {
  const { log } = options;
  const machine = machineInfo();
  const clients = 2 * availableParallelism();
  const rounds = options.quick ? QUICK_ROUNDS : Math.min(options.runs, ROUNDS);
  const warmup = Math.min(options.warmup, options.quick ? 1 : 2);
  const rateStarts = options.quick ? QUICK_RATE_STARTS : RATE_STARTS;
  const user = resolveSandboxUser();
  if (process.getuid?.() === 0 && !user.dedicated) throw new Error('run as root needs a sandbox user');
  const workDir = mkdtempSync(join(tmpdir(), 'aegis-bench-peers-'));
  chmodSync(workDir, 0o711);
  const ctx = openLocalContext({ home: join(workDir, 'home') });
  const bwrap = watchBwrap();
  let srt: SandboxRuntimePeer | Absent | undefined;
  const closers: (() => Promise<void>)[] = [];
  try {
    const agent = (await loadManifestFile(join(AGENT_DIR, 'agent.yaml'))).agent;
    const nodeBinary = realpathSync(process.execPath);
    const floor = makeFloor(workDir, user);
    const { argsFd } = await checkFloorParity(ctx, floor, agent, 'python', nodeBinary);
    const command = commandFor('python', agent, nodeBinary);
    const launch = floor.launch(floor.argsFor(agent, command.argv, command.binaries), argsFd);
    const agentDir = realpathSync(AGENT_DIR);
    const entry = agent.runtime.entrypoint!;
    const warm = warmVariant(ctx, agent, 'aegis-warm', 'execute', bwrap);
    closers.push(warm.close);

    const systems: System[] = [
      {
        id: 'floor',
        label: 'floor (raw bwrap, runtime flags)',
        program: 'python',
        version: machine.bwrap,
        spans: [
          ['firstLine', 'spawn → first line'],
          ['exit', 'spawn → exit'],
        ],
        run: async () => {
          const r = await runChild('bwrap', launch.argv, floor.spawnOptions, launch.writes);
          checkExit(r, 'floor python');
          return {
            firstLine: firstLineOf(parseLastLine(r.stdout), 'floor python') - r.startedAt,
            exit: r.exitedAt - r.startedAt,
          };
        },
      },
      {
        id: 'aegis-cold',
        label: 'aegis cold (runAgent)',
        program: 'python',
        version: 'this tree',
        spans: [
          ['firstLine', 'call → first line'],
          ['result', 'call → result'],
        ],
        run: () => aegisRun(ctx, agent),
      },
      {
        id: 'aegis-warm',
        label: 'aegis warm (bind + execute, prewarmed)',
        program: 'python',
        version: 'this tree',
        spans: [
          ['firstLine', 'claim → first line'],
          ['result', 'claim → result'],
        ],
        run: warm.run,
      },
    ];

    // The other runtimes through AEGIS (the same agent, `isolation` switched): cold = runAgent, warm = bind + execute
    // on an instance the RuntimeRouter spawned Warm ahead of time, as a warm pool does.
    for (const name of OTHER_RUNTIMES) {
      const availability = probeRuntime(name);
      const label = RUNTIME_LABEL[name];
      if (!availability.available) {
        const absent = { absent: availability.reason, install: RUNTIME_INSTALL[name] };
        systems.push(
          absentSystem(`aegis-${name}-cold`, `aegis cold, ${label} (runAgent)`, 'python', absent),
          absentSystem(`aegis-${name}-warm`, `aegis warm, ${label} (bind + execute)`, 'python', absent),
        );
        continue;
      }
      const onRuntime: CompiledAgent = { ...agent, isolation: name };
      // One run first: a runtime that is installed but cannot run here (dockerd gone, runsc failing) is absent.
      const smoke = await aegisRun(ctx, onRuntime).then(
        () => undefined,
        (error: Error) => error.message.split('\n')[0]!.slice(0, 200),
      );
      if (smoke !== undefined) {
        log(`  ${name} runtime: a first run failed — ${smoke}`);
        const absent = { absent: `a first run failed: ${smoke}`, install: RUNTIME_INSTALL[name] };
        systems.push(
          absentSystem(`aegis-${name}-cold`, `aegis cold, ${label} (runAgent)`, 'python', absent),
          absentSystem(`aegis-${name}-warm`, `aegis warm, ${label} (bind + execute)`, 'python', absent),
        );
        continue;
      }
      const warmOn = warmVariant(ctx, onRuntime, `aegis-${name}-warm`, 'execute', bwrap);
      closers.push(warmOn.close);
      systems.push(
        {
          id: `aegis-${name}-cold`,
          label: `aegis cold, ${label} (runAgent)`,
          program: 'python',
          version: 'this tree',
          spans: [
            ['firstLine', 'call → first line'],
            ['result', 'call → result'],
          ],
          run: () => aegisRun(ctx, onRuntime),
        },
        {
          id: `aegis-${name}-warm`,
          label: `aegis warm, ${label} (bind + execute, prewarmed)`,
          program: 'python',
          version: 'this tree',
          spans: [
            ['firstLine', 'claim → first line'],
            ['result', 'claim → result'],
          ],
          run: warmOn.run,
        },
      );
    }

    srt = await openSandboxRuntime(agentDir);
    if (isAbsent(srt)) {
      systems.push(absentSystem('sandbox-runtime', '@anthropic-ai/sandbox-runtime', 'python', srt));
    } else {
      const peer = srt;
      log(`  sandbox-runtime ${peer.version}: initialize() took ${formatMs(peer.initializeMs)} ms (once)`);
      systems.push({
        id: 'sandbox-runtime',
        label: '@anthropic-ai/sandbox-runtime (library)',
        program: 'python',
        version: peer.version,
        spans: [
          ['firstLine', 'call → first line'],
          ['exit', 'call → exit'],
          ['wrap', 'wrapWithSandbox()'],
        ],
        run: async () => {
          const r = await peer.run(`/usr/bin/python3 ${entry}`);
          return {
            firstLine: firstLineOf(parseLastLine(r.stdout), 'sandbox-runtime') - r.startedAt,
            exit: r.exitedAt - r.startedAt,
            wrap: r.wrappedAt - r.startedAt,
          };
        },
      });
    }

    const runsc = openRunsc();
    if (isAbsent(runsc)) {
      systems.push(absentSystem('runsc', 'gVisor runsc do', 'python', runsc));
    } else {
      systems.push({
        id: 'runsc',
        label: 'gVisor: runsc --network=none do',
        program: 'python',
        version: runsc.version,
        spans: [
          ['firstLine', 'spawn → first line'],
          ['exit', 'spawn → exit'],
        ],
        run: async () => {
          const r = await runsc.run(['/usr/bin/python3', entry], agentDir);
          return {
            firstLine: firstLineOf(parseLastLine(r.stdout), 'runsc') - r.startedAt,
            exit: r.exitedAt - r.startedAt,
          };
        },
      });
    }

    const docker = await openDocker();
    if (isAbsent(docker)) {
      systems.push(
        absentSystem('docker-run', 'docker run --rm', 'busybox', docker),
        absentSystem('docker-api', 'Docker Engine API', 'busybox', docker),
      );
    } else {
      if (docker.built.now) log(`  docker: built the bench image in ${formatMs(docker.built.ms)} ms`);
      const echo = ['echo', 'hello'];
      if (docker.cli) {
        const cli = docker.cli;
        systems.push({
          id: 'docker-run',
          label: 'docker run --rm --network none',
          program: 'busybox',
          version: docker.version,
          spans: [['exit', 'spawn → exit']],
          run: async () => {
            const r = await cli(echo);
            if (!r.stdout.includes('hello'))
              throw new Error(`docker run printed ${JSON.stringify(r.stdout)}`);
            return { exit: r.exitedAt - r.startedAt };
          },
        });
      } else {
        systems.push(
          absentSystem('docker-run', 'docker run --rm', 'busybox', {
            absent: 'no docker CLI on PATH',
            install: 'apt-get install docker.io',
          }),
        );
      }
      systems.push({
        id: 'docker-api',
        label: 'Docker Engine API: create → start → wait → remove',
        program: 'busybox',
        version: docker.version,
        spans: [
          ['exited', 'call → container exited'],
          ['exit', 'call → removed'],
        ],
        run: async () => {
          const r = await docker.api(echo);
          if (!r.stdout.includes('hello'))
            throw new Error(`docker API run printed ${JSON.stringify(r.stdout)}`);
          return { exited: r.waitedAt - r.startedAt, exit: r.exitedAt - r.startedAt };
        },
      });
    }
    for (const s of systems.filter((s) => s.absent))
      log(`  absent: ${s.label} — ${s.absent!.absent}; ${s.absent!.install}`);

    // 1. Latency: every present system once per round, shuffled.
    const present = systems.filter((s) => s.run !== undefined);
    const variants: Variant[] = present.map((s) => ({ id: s.id, run: s.run! }));
    log(`  ${variants.length} systems × (${warmup} warm-up + ${rounds} measured) rounds, shuffled order`);
    const runs = await runRounds(variants, warmup, rounds, log, 'peers');
    const series = seriesOf(runs);
    const summaries = new Map<string, Summary>([...series].map(([key, values]) => [key, summarize(values)]));

    // 2. Start rate: closed loops of 2 × cores clients, one system at a time.
    const rates = new Map<string, { perSec: number; starts: number }>();
    for (const s of present) {
      const execute: Execute = s.run!;
      // Prewarmed instances are prepared inside run(), one at a time: a rate for them would be the spawn rate.
      if (s.id.endsWith('-warm')) continue;
      // gvisor/docker start at ≈ 1/s on a loaded 2-core host: fewer starts in a smoke run.
      const starts =
        options.quick && /^aegis-(gvisor|docker)-/.test(s.id) ? QUICK_RUNTIME_RATE_STARTS : rateStarts;
      const loop = await closedLoop(clients, starts, execute);
      rates.set(s.id, { perSec: starts / (loop.wallMs / 1000), starts });
    }
    log(`  rates: up to ${rateStarts} starts per system with ${clients} clients done`);

    const headline = (s: System) => summaries.get(`${s.id}:${s.spans[0]?.[0]}`);
    const floorP50 = summaries.get('floor:firstLine')?.p50 ?? Number.NaN;
    const table: Table = {
      headers: [
        'system',
        'runs',
        'measured',
        'n',
        'p50 ms',
        'p95 ms',
        'p99 ms',
        'mean ms',
        'p50 vs floor first line',
        `starts/s, ${clients} clients`,
        'version',
      ],
      align: ['left', 'left', 'left'],
      rows: systems.flatMap((s) => {
        if (s.absent) {
          return [
            [
              s.label,
              s.program,
              `absent: ${s.absent.absent}`,
              '–',
              '–',
              '–',
              '–',
              '–',
              '–',
              '–',
              `install: ${s.absent.install}`,
            ],
          ];
        }
        return s.spans.map(([key, span], i) => {
          const m = summaries.get(`${s.id}:${key}`)!;
          const rate = rates.get(s.id);
          return [
            i === 0 ? s.label : '↳',
            i === 0 ? s.program : '',
            span,
            String(m.n),
            formatMs(m.p50),
            formatMs(m.p95),
            formatMs(m.p99),
            formatMs(m.mean),
            key === 'wrap' ? '' : `${(m.p50 / floorP50).toFixed(2)}×`,
            i === 0 ? (rate ? rate.perSec.toFixed(1) : 'n/a') : '',
            i === 0 ? s.version : '',
          ];
        });
      }),
    };
    const runtimes = runtimesTable(systems, summaries, rates, clients);
    const starts: StartPoint[] = present
      .filter((s) => !s.id.startsWith('aegis') && s.id !== 'floor')
      .map((s) => {
        const m = headline(s)!;
        return {
          system: s.label.split(':')[0]!.replace(' (library)', ''),
          program: s.program,
          span: s.spans[0]![1],
          n: m.n,
          p50: m.p50,
          p99: m.p99,
        };
      });

    const date = new Date().toISOString();
    const srtInit =
      srt && !isAbsent(srt)
        ? ` sandbox-runtime's initialize() (once, not in the rows): ${formatMs(srt.initializeMs)} ms.`
        : '';
    const heading =
      `${rounds} rounds after ${warmup} warm-up, every present system once per round in a shuffled order; rates: ` +
      `${rateStarts} starts per system with ${clients} clients in a closed loop.${srtInit} Python systems run ` +
      `bench/fixtures/start-latency/python/agent.py; Docker runs busybox echo (timed to exit). ${date.slice(0, 10)}, ` +
      `${machine.hostname}: ${describeMachine(machine)}.`;
    const raw = {
      date,
      machine,
      rounds,
      warmup,
      clients,
      systems: systems.map((s) => ({
        id: s.id,
        label: s.label,
        program: s.program,
        version: s.version,
        absent: s.absent,
        summaries: Object.fromEntries(
          s.spans.map(([key]) => [key, roundSummary(summaries.get(`${s.id}:${key}`)!)]),
        ),
        rate: rates.get(s.id),
      })),
      samples: Object.fromEntries(
        [...series].map(([key, values]) => [key, values.map((v) => Math.round(v * 1000) / 1000)]),
      ),
    };
    return {
      text: [
        `peers — ${heading}`,
        '',
        renderText(table),
        '',
        'runtimes through AEGIS, beside their raw peers (same rounds)',
        '',
        renderText(runtimes),
      ].join('\n'),
      docs: [
        { marker: 'peers', markdown: [`_${heading}_`, '', renderMarkdown(table)].join('\n') },
        { marker: 'runtimes', markdown: [`_${heading}_`, '', renderMarkdown(runtimes)].join('\n') },
      ],
      raw,
      findings: { starts },
    };
  } finally {
    for (const close of closers) await close().catch(() => {});
    if (srt && !isAbsent(srt)) await srt.close();
    bwrap.stop();
    await ctx.close();
    rmSync(workDir, { recursive: true, force: true });
  }
}

export const peers: Scenario = {
  name: 'peers',
  description:
    'one start in each sandbox present (sandbox-runtime, runsc, docker run, Docker API) vs aegis cold/warm and raw bwrap',
  run,
};
