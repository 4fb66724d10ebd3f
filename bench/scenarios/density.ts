/**
 * Scenario `density`: host memory per idle warm sandbox — what a warm pool costs to keep — for the trivial Python and
 * Node agents of start-latency, side by side with the floor.
 *
 * - aegis: K instances per language spawned with `runtime.spawn({ prewarm: true })` (the interpreter started and
 *          waiting for its task, as a warm pool keeps them), all alive at once, left until their processes used no
 *          CPU for 300 ms. Per instance: the memory charged to its cgroup (v1 `memory.usage_in_bytes`, v2
 *          `memory.current`, split into anon / page cache / kernel from `memory.stat`) plus the PSS
 *          (`/proc/<pid>/smaps_rollup`) of its processes outside the cgroup (bwrap's monitor, which stays in the
 *          orchestrator's group). That sum is the headline, checked against ≤ 4 MB.
 * - floor: K raw `bwrap` sandboxes per language with the runtime's flags (start-latency's floor) around an idle
 *          interpreter blocked reading stdin (`python3 -c 'import os; os.read(0, 1)'`, `node -e` with a blocking
 *          `readSync(0)`), no cgroup: the PSS of all its processes.
 * - For both: the PSS of all the sandbox's processes, the host's MemTotal − MemAvailable before the K were spawned and
 *   after they went idle (÷ K: it also counts what no process maps — namespaces, mount tables, page tables, tmpfs —
 *   and whatever else the host did meanwhile), and the growth of the spawning process's own RSS (÷ K).
 * Groups run one after another (all of a group alive together), so host-wide deltas are per group.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import { resolveSandboxUser } from '../../src/adapters/runtimes/sandbox/host.ts';
import type { CompiledAgent } from '../../src/domain/manifest/compiled.ts';
import { openLocalContext } from '../../src/main.ts';
import { watchBwrap } from '../lib/aegis-run.ts';
import { FIXTURES, type Language, stdioFor, writeAll } from '../lib/child.ts';
import { checkFloorParity, type Floor, makeFloor, NODE_INSIDE } from '../lib/floor.ts';
import { describeMachine, machineInfo } from '../lib/machine.ts';
import {
  type CgroupMemory,
  cgroupMemory,
  hostMemoryUsedBytes,
  memoryCgroupDir,
  type ProcessMemory,
  processMemory,
  processTree,
  waitIdle,
} from '../lib/procs.ts';
import type { BenchOptions, Scenario, ScenarioReport, TargetCheck } from '../lib/scenario.ts';
import { renderMarkdown, renderText, type Table } from '../lib/table.ts';

const LANGUAGES: readonly Language[] = ['python', 'node'];
const TARGET_BYTES = 4 * 1024 * 1024;
/** Instances alive at once per group (quick: QUICK_INSTANCES). */
const INSTANCES = 10;
const QUICK_INSTANCES = 4;
const MiB = 1024 * 1024;

/** The floor's idle interpreter: blocks reading stdin (a pipe the bench keeps open) before any code of its own. */
function idleCommand(language: Language, nodeBinary: string) {
  return language === 'python'
    ? { argv: ['/usr/bin/python3', '-c', 'import os; os.read(0, 1)'], binaries: {} }
    : {
        argv: [
          NODE_INSIDE,
          '-e',
          "const fs=require('fs');for(;;){try{fs.readSync(0,Buffer.alloc(1));break}catch(e){if(e.code!=='EAGAIN')throw e;Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0,50)}}",
        ],
        binaries: { [nodeBinary]: NODE_INSIDE },
      };
}

interface InstanceMemory {
  /** cgroup usage + PSS outside the cgroup (aegis); PSS of all processes (floor). */
  readonly headlineBytes: number;
  readonly cgroup: CgroupMemory | undefined;
  readonly pssInsideBytes: number;
  readonly pssOutsideBytes: number;
  readonly pssAllBytes: number;
  readonly processes: readonly ProcessMemory[];
  /** An interpreter (anything but bwrap) was running in it. */
  readonly interpreterRunning: boolean;
}

function measureInstance(monitorPid: number, cgroupDir: string | undefined): InstanceMemory {
  const processes = processTree(monitorPid)
    .map(processMemory)
    .filter((p): p is ProcessMemory => p !== undefined);
  const cgroup = cgroupDir === undefined ? undefined : cgroupMemory(cgroupDir);
  const inside = (p: ProcessMemory) =>
    cgroupDir !== undefined && p.memoryCgroup !== undefined && cgroupDir.endsWith(p.memoryCgroup);
  const sum = (list: readonly ProcessMemory[]) => list.reduce((total, p) => total + p.pssBytes, 0);
  const pssInside = sum(processes.filter(inside));
  const pssOutside = sum(processes.filter((p) => !inside(p)));
  return {
    headlineBytes: cgroup ? cgroup.usageBytes + pssOutside : pssInside + pssOutside,
    cgroup,
    pssInsideBytes: pssInside,
    pssOutsideBytes: pssOutside,
    pssAllBytes: pssInside + pssOutside,
    processes,
    interpreterRunning: processes.some((p) => p.command !== 'bwrap'),
  };
}

interface Group {
  readonly id: string;
  readonly system: 'aegis' | 'floor';
  readonly language: Language;
  readonly instances: readonly InstanceMemory[];
  readonly hostDeltaBytes: number;
  readonly spawnerRssDeltaBytes: number;
  readonly idle: boolean;
}

const mean = (values: readonly number[]) =>
  values.length === 0 ? Number.NaN : values.reduce((a, b) => a + b, 0) / values.length;

async function settle(): Promise<void> {
  await new Promise((done) => setTimeout(done, 200));
}

/** Spawns `count` sandboxes with `start` (which returns the bwrap monitor's pid, and a cgroup dir if any). */
async function measureGroup(
  id: string,
  system: Group['system'],
  language: Language,
  count: number,
  start: () => Promise<{ pid: number; cgroupDir: string | undefined }>,
): Promise<Group> {
  await settle();
  const hostBefore = hostMemoryUsedBytes();
  const rssBefore = process.memoryUsage.rss();
  const started: { pid: number; cgroupDir: string | undefined }[] = [];
  for (let i = 0; i < count; i++) started.push(await start());
  const idle = await waitIdle(() => started.flatMap(({ pid }) => processTree(pid)));
  const instances = started.map(({ pid, cgroupDir }) => measureInstance(pid, cgroupDir));
  return {
    id,
    system,
    language,
    instances,
    hostDeltaBytes: (hostMemoryUsedBytes() - hostBefore) / count,
    spawnerRssDeltaBytes: (process.memoryUsage.rss() - rssBefore) / count,
    idle,
  };
}

function floorSandbox(
  floor: Floor,
  agent: CompiledAgent,
  language: Language,
  nodeBinary: string,
  argsFd: number | undefined,
) {
  const command = idleCommand(language, nodeBinary);
  const launch = floor.launch(floor.argsFor(agent, command.argv, command.binaries), argsFd);
  const children: ChildProcess[] = [];
  return {
    start: async () => {
      const child = spawn('bwrap', launch.argv, {
        ...floor.spawnOptions,
        stdio: stdioFor(Object.keys(launch.writes).map(Number)),
      });
      children.push(child);
      writeAll(child, launch.writes);
      child.stdin!.on('error', () => {});
      child.stdout!.resume();
      child.stderr!.resume();
      await new Promise<void>((ready, fail) => {
        child.once('spawn', ready);
        child.once('error', fail);
      });
      // Wait for the interpreter to exist (it then settles in waitIdle).
      const until = performance.now() + 10_000;
      while (processTree(child.pid!).length < 3 && performance.now() < until && child.exitCode === null) {
        await new Promise((done) => setTimeout(done, 5));
      }
      if (child.exitCode !== null)
        throw new Error(`floor ${language} idle sandbox exited with ${child.exitCode}`);
      return { pid: child.pid!, cgroupDir: undefined };
    },
    stop: async () => {
      await Promise.all(
        children.splice(0).map(
          (child) =>
            new Promise<void>((done) => {
              if (child.exitCode !== null || child.signalCode !== null) return done();
              child.once('close', () => done());
              child.stdin!.end('x'); // the interpreter reads its byte and exits
              setTimeout(() => child.kill('SIGKILL'), 2000).unref();
            }),
        ),
      );
    },
  };
}

const mb = (bytes: number) => (bytes / MiB).toFixed(2);

function groupTable(groups: readonly Group[]): Table {
  return {
    headers: [
      'idle sandbox',
      'n',
      'per instance MiB',
      'cgroup usage',
      '↳ anon',
      '↳ page cache',
      '↳ kernel',
      'PSS in cgroup',
      'PSS outside (bwrap monitor)',
      'PSS all processes',
      'host used Δ ÷ n',
      'spawner RSS Δ ÷ n',
    ],
    rows: groups.map((g) => {
      const m = (pick: (i: InstanceMemory) => number | undefined) => {
        const values = g.instances.map(pick).filter((v): v is number => v !== undefined);
        return values.length === 0 ? '–' : mb(mean(values));
      };
      return [
        `${g.language} · ${g.system === 'aegis' ? 'aegis prewarmed' : 'floor: raw bwrap + idle interpreter'}`,
        String(g.instances.length),
        m((i) => i.headlineBytes),
        m((i) => i.cgroup?.usageBytes),
        m((i) => i.cgroup?.anonBytes),
        m((i) => i.cgroup?.fileBytes),
        m((i) => i.cgroup?.kernelBytes),
        g.system === 'aegis' ? m((i) => i.pssInsideBytes) : '–',
        g.system === 'aegis' ? m((i) => i.pssOutsideBytes) : '–',
        m((i) => i.pssAllBytes),
        mb(g.hostDeltaBytes),
        mb(g.spawnerRssDeltaBytes),
      ];
    }),
  };
}

function processTable(groups: readonly Group[]): Table {
  const rows: string[][] = [];
  for (const g of groups) {
    // Processes by position in the tree (monitor, init, interpreter), PSS and RSS averaged over the instances.
    const depth = Math.max(...g.instances.map((i) => i.processes.length));
    for (let k = 0; k < depth; k++) {
      const at = g.instances.map((i) => i.processes[k]).filter((p): p is ProcessMemory => p !== undefined);
      rows.push([
        `${g.language} · ${g.system}`,
        `${k + 1}. ${at[0]?.command ?? '?'}`,
        mb(mean(at.map((p) => p.pssBytes))),
        mb(mean(at.map((p) => p.privateBytes))),
        mb(mean(at.map((p) => p.rssBytes))),
      ]);
    }
  }
  return {
    headers: ['idle sandbox', 'process', 'PSS MiB', 'private MiB', 'RSS MiB'],
    align: ['left', 'left'],
    rows,
  };
}

async function run(options: BenchOptions): Promise<ScenarioReport> {
  const { log } = options;
  const machine = machineInfo();
  const count = options.quick ? QUICK_INSTANCES : INSTANCES;
  const user = resolveSandboxUser();
  if (process.getuid?.() === 0 && !user.dedicated) throw new Error('run as root needs a sandbox user');
  const workDir = mkdtempSync(join(tmpdir(), 'aegis-bench-density-'));
  chmodSync(workDir, 0o711);
  const ctx = openLocalContext({ home: join(workDir, 'home') });
  const bwrap = watchBwrap();
  const live: string[] = [];
  const cgroupPaths: (readonly string[])[] = [];
  const cgroups = ctx.sandbox.cgroups;
  const create = cgroups.create.bind(cgroups);
  cgroups.create = (name, limits) => {
    const group = create(name, limits);
    cgroupPaths.push(group.paths);
    return group;
  };
  try {
    const floor = makeFloor(workDir, user);
    const nodeBinary = realpathSync(process.execPath);
    const agents = {} as Record<Language, CompiledAgent>;
    for (const language of LANGUAGES) {
      agents[language] = (await loadManifestFile(join(FIXTURES, language, 'agent.yaml'))).agent;
    }
    const { argsFd } = await checkFloorParity(ctx, floor, agents.python, 'python', nodeBinary);
    log(`  flag parity checked; ${count} idle sandboxes per group, one group at a time`);

    const groups: Group[] = [];
    for (const language of LANGUAGES) {
      const agent = agents[language];
      groups.push(
        await measureGroup(`aegis-${language}`, 'aegis', language, count, async () => {
          const id = await ctx.runtime.spawn({
            executionId: `wp_${ctx.ids.executionId().slice(3)}`,
            agent,
            prewarm: true,
          });
          live.push(id);
          return {
            pid: bwrap.pids[bwrap.pids.length - 1]!,
            cgroupDir: memoryCgroupDir(cgroupPaths.at(-1) ?? []),
          };
        }),
      );
      for (const id of live.splice(0)) await ctx.runtime.terminate(id);
      log(`  aegis ${language}: measured`);
      const sandboxes = floorSandbox(floor, agent, language, nodeBinary, argsFd);
      try {
        groups.push(await measureGroup(`floor-${language}`, 'floor', language, count, sandboxes.start));
      } finally {
        await sandboxes.stop();
      }
      log(`  floor ${language}: measured`);
    }

    const checks: TargetCheck[] = groups
      .filter((g) => g.system === 'aegis')
      .map((g) => {
        const perInstance = mean(g.instances.map((i) => i.headlineBytes));
        const prewarmed = g.instances.filter((i) => i.interpreterRunning).length;
        return {
          promise: `Host memory per idle warm sandbox, ${g.language}`,
          goal: '≤ 4 MB',
          measured: `${mb(perInstance)} MiB (cgroup + bwrap monitor PSS)${prewarmed < g.instances.length ? `; interpreter running in ${prewarmed}/${g.instances.length}` : ''}`,
          met: perInstance <= TARGET_BYTES,
          section: '#density',
        };
      });
    const warnings: string[] = [];
    for (const g of groups) {
      if (!g.idle) warnings.push(`WARNING: ${g.id} did not go idle within 10 s; measured anyway.`);
      if (g.system === 'aegis' && g.instances.some((i) => !i.interpreterRunning)) {
        warnings.push(
          `WARNING: aegis ${g.language}: no interpreter running in ${g.instances.filter((i) => !i.interpreterRunning).length} of ${g.instances.length} instances — the runtime ignored \`prewarm\`; these are Warm (bwrap blocked) instances.`,
        );
      }
    }
    const date = new Date().toISOString();
    const heading =
      `${count} idle sandboxes alive at once per group, measured once their processes used no CPU for 300 ms. ` +
      `Per instance (aegis): cgroup memory + PSS of its processes outside the cgroup. ${date.slice(0, 10)}, ` +
      `${machine.hostname}: ${describeMachine(machine)}.`;
    const tables = [groupTable(groups), processTable(groups)];
    const render = (table: (t: Table) => string) => [
      ...tables.flatMap((t) => ['', table(t)]),
      ...warnings.flatMap((w) => ['', w]),
    ];
    const raw = {
      date,
      machine,
      instancesPerGroup: count,
      targetBytes: TARGET_BYTES,
      groups: groups.map((g) => ({
        ...g,
        perInstanceBytes: mean(g.instances.map((i) => i.headlineBytes)),
      })),
    };
    return {
      text: [`density — ${heading}`, ...render(renderText)].join('\n'),
      docs: [{ marker: 'density', markdown: [`_${heading}_`, ...render(renderMarkdown)].join('\n') }],
      raw,
      findings: { targets: checks },
    };
  } finally {
    for (const id of live) await ctx.runtime.terminate(id).catch(() => {});
    cgroups.create = create;
    bwrap.stop();
    await ctx.close();
    rmSync(workDir, { recursive: true, force: true });
  }
}

export const density: Scenario = {
  name: 'density',
  description:
    'host memory per idle warm (prewarmed) sandbox, Python and Node, vs raw bwrap + idle interpreter',
  run,
};
