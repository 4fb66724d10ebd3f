/**
 * What one `npm run bench` says about the promises as a whole: the targets table (every scenario's checks) and the
 * start-latency chart (docs/perf/start-latency.svg: p50 bar, p99 whisker per system), from the scenarios' findings.
 */
import type { MachineInfo } from './machine.ts';
import type { ScenarioReport, StartPoint, TargetCheck } from './scenario.ts';
import { renderBarChart } from './svg.ts';
import type { Table } from './table.ts';

export function targetsOf(reports: Iterable<ScenarioReport>): TargetCheck[] {
  return [...reports].flatMap((report) => report.findings?.targets ?? []);
}

export function targetsTable(targets: readonly TargetCheck[], linked: boolean): Table {
  return {
    headers: ['promise', 'target', 'measured', 'verdict'],
    align: ['left', 'left', 'left', 'left'],
    rows: targets.map((t) => [
      linked ? `[${t.promise}](${t.section})` : t.promise,
      t.goal,
      t.measured,
      t.met === undefined ? 'not measured' : t.met ? 'met' : '**NOT met**',
    ]),
  };
}

const COLORS = {
  floor: '#8c959f',
  cold: '#0969da',
  warm: '#1a7f37',
  peer: '#bc4c00',
} as const;

function colorOf(point: StartPoint): string {
  if (point.system.startsWith('floor')) return COLORS.floor;
  if (point.system === 'aegis cold') return COLORS.cold;
  if (point.system === 'aegis warm') return COLORS.warm;
  return COLORS.peer;
}

/** The chart: AEGIS and the floor per language first, then the peers, slowest last. */
export function startLatencyChart(
  reports: Iterable<ScenarioReport>,
  machine: MachineInfo,
  date: string,
): string | undefined {
  const points = [...reports].flatMap((report) => report.findings?.starts ?? []);
  if (points.length === 0) return undefined;
  const ours = points.filter((p) => colorOf(p) !== COLORS.peer);
  const theirs = points.filter((p) => colorOf(p) === COLORS.peer).sort((a, b) => a.p50 - b.p50);
  const order = ['aegis warm', 'floor (raw bwrap)', 'aegis cold'];
  ours.sort(
    (a, b) => a.program.localeCompare(b.program) * -1 || order.indexOf(a.system) - order.indexOf(b.system),
  );
  return renderBarChart({
    title: 'Start latency: call → first line of the agent’s own code (bar p50, whisker p99)',
    subtitle: `npm run bench, ${date}, ${machine.hostname}: ${machine.nproc} × ${machine.cpuModel}, ${machine.os}, kernel ${machine.kernel}`,
    unit: 'milliseconds',
    rows: [...ours, ...theirs].map((p) => ({
      label: `${p.system} · ${p.program}`,
      note: `${p.span}, n = ${p.n}`,
      value: p.p50,
      whisker: p.p99,
      color: colorOf(p),
    })),
    legend: [
      { color: COLORS.warm, label: 'aegis warm (prewarmed pool instance)' },
      { color: COLORS.cold, label: 'aegis cold (runAgent)' },
      { color: COLORS.floor, label: 'floor: raw bwrap, same flags' },
      { color: COLORS.peer, label: 'peers' },
    ],
  });
}
