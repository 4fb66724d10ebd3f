/** What the numbers were measured on: enough to tell two result files apart and to reproduce one. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, hostname, loadavg, release, totalmem } from 'node:os';
import { detectCgroupLayout } from '../../src/adapters/runtimes/sandbox/cgroups.ts';

export interface MachineInfo {
  readonly hostname: string;
  readonly nproc: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly kernel: string;
  readonly os: string;
  readonly bwrap: string;
  readonly node: string;
  readonly python: string;
  readonly cgroups: string;
  readonly clocksource: string;
}

function tryRead(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function versionOf(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (error) {
    return `unavailable (${(error as Error).message.split('\n')[0]})`;
  }
}

export function machineInfo(): MachineInfo {
  const cpuinfo = tryRead('/proc/cpuinfo') ?? '';
  const osRelease = tryRead('/etc/os-release') ?? '';
  let cgroups = 'unknown';
  try {
    cgroups = detectCgroupLayout().mode;
  } catch {
    // leave unknown
  }
  return {
    hostname: hostname(),
    nproc: availableParallelism(),
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown',
    memoryGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: release(),
    os: /^PRETTY_NAME="?([^"\n]+)"?$/m.exec(osRelease)?.[1] ?? 'unknown',
    bwrap: versionOf('bwrap', ['--version']),
    node: process.version,
    python: versionOf('/usr/bin/python3', ['--version']),
    cgroups,
    clocksource:
      tryRead('/sys/devices/system/clocksource/clocksource0/current_clocksource')?.trim() ?? 'unknown',
  };
}

/** One line for tables and docs. */
export function describeMachine(m: MachineInfo): string {
  return (
    `${m.nproc} × ${m.cpuModel}, ${m.memoryGiB} GiB, ${m.os}, kernel ${m.kernel}, cgroups ${m.cgroups}, ` +
    `clocksource ${m.clocksource}; ${m.bwrap}, Node ${m.node}, ${m.python}`
  );
}

/** 1-minute load average: other work on the host shows up here (and in the numbers). */
export function loadAverage1m(): number {
  return Math.round((loadavg()[0] ?? 0) * 100) / 100;
}

export function machineTable(m: MachineInfo): { headers: string[]; rows: string[][] } {
  return {
    headers: ['machine', ''],
    rows: [
      ['host', m.hostname],
      ['CPU', `${m.nproc} × ${m.cpuModel} (nproc ${m.nproc})`],
      ['memory', `${m.memoryGiB} GiB`],
      ['OS, kernel', `${m.os}, ${m.kernel}`],
      ['cgroups', m.cgroups],
      ['clocksource', m.clocksource],
      ['bubblewrap', m.bwrap],
      ['Node', m.node],
      ['Python', m.python],
    ],
  };
}
