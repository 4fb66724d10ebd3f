/**
 * The container's parent cgroup, owned by AEGIS: dockerd's own groups vanish with the container (runc removes them
 * when it exits), so the counters that say *which* limit was hit (pids.events, cpu.stat, memory OOM kills) were
 * gone by the time the runtime could read them. AEGIS therefore makes one group per start with the sandbox's
 * cgroup driver — `<controller mount>/aegis-docker/<execution id>.<8 hex>`, limits set there — and hands its path to dockerd
 * as `HostConfig.CgroupParent`; runc nests the container's group inside it. Before the gate lets the agent run,
 * the runtime moves the container's single process up into AEGIS's group (the kernel counts a refused fork in the
 * forking process's own group): the limits bind there, the counters outlive the container, and the runtime reads
 * them (stats()) before removing the group.
 *
 * Needs dockerd's `cgroupfs` driver (Debian's docker.io default on cgroup v1); with the `systemd` driver the
 * runtime falls back to Docker's own per-container limits, which enforce the same but cannot report pids/CPU hits.
 */
import { existsSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AegisError } from '../../../domain/errors.ts';
import {
  type CgroupCreateOptions,
  CgroupDriver,
  type CgroupLayout,
  type CgroupLimits,
  removeCgroupPaths,
  type SandboxCgroup,
} from '../sandbox/cgroups.ts';

/** Sub-path of every controller hierarchy under which the per-execution parents are made. */
export const DOCKER_CGROUP_PARENT = 'aegis-docker';

export interface ContainerParent {
  /** The group AEGIS made (limits, counters, kill). */
  readonly cgroup: SandboxCgroup;
  /** `HostConfig.CgroupParent`: the same path in every hierarchy, from its root. */
  readonly cgroupParent: string;
}

export class DockerCgroups {
  private readonly layout: CgroupLayout;
  private readonly driver: CgroupDriver;

  constructor(layout: CgroupLayout) {
    // dockerd resolves an absolute CgroupParent from each hierarchy's root, so the groups are made from the roots
    // too (not below the orchestrator's own group, as the sandbox runtime's are).
    const rooted: CgroupLayout = {
      ...layout,
      v1OwnPaths: Object.fromEntries(Object.keys(layout.v1Mounts).map((c) => [c, '/'])),
    };
    this.layout = rooted;
    this.driver = new CgroupDriver(rooted, { parent: DOCKER_CGROUP_PARENT });
  }

  /** Every directory this execution's parent may occupy (recorded on the container for the reaper). */
  plannedPaths(executionId: string, options: CgroupCreateOptions = {}): string[] {
    return this.driver.plannedPaths(executionId, options);
  }

  create(executionId: string, limits: CgroupLimits, options: CgroupCreateOptions = {}): ContainerParent {
    const cgroup = this.driver.create(executionId, limits, options);
    if (this.layout.mode === 'v2') {
      // cgroup v2: runc's child group can use only the controllers its parent delegates.
      const dir = join(this.layout.v2Mount!, DOCKER_CGROUP_PARENT, executionId);
      try {
        writeFileSync(join(dir, 'cgroup.subtree_control'), '+memory +pids +cpu');
      } catch (error) {
        void cgroup.destroy().catch(() => {});
        throw new AegisError(
          'LIMIT_UNENFORCEABLE',
          `cannot delegate memory, pids and cpu to the container's group under ${dir}: ${(error as Error).message}`,
          { cause: error, hint: 'run as root on a host whose cgroup tree AEGIS may manage' },
        );
      }
    }
    return { cgroup, cgroupParent: `/${DOCKER_CGROUP_PARENT}/${executionId}` };
  }

  /**
   * Removes the execution's parent group once the container is gone: AEGIS's own directories, and those runc made
   * as intermediates in the other hierarchies (blkio, devices, freezer…), which runc leaves behind.
   */
  async remove(executionId: string, cgroup: SandboxCgroup | undefined): Promise<void> {
    await cgroup?.destroy().catch(() => {});
    await removeContainerParents(this.layout, executionId);
  }
}

/**
 * Thaws the per-execution parent of a paused live sandbox (v1 `freezer.state`, v2 `cgroup.freeze`): frozen tasks act
 * on SIGKILL only once thawed, so a reaper that kills a container left paused by a dead orchestrator thaws it first.
 */
export function thawContainerParent(layout: CgroupLayout, executionId: string): void {
  const targets: [string, string, string][] = [];
  const freezer = layout.v1Mounts['freezer'];
  if (freezer) targets.push([join(freezer, DOCKER_CGROUP_PARENT, executionId), 'freezer.state', 'THAWED']);
  if (layout.v2Mount)
    targets.push([join(layout.v2Mount, DOCKER_CGROUP_PARENT, executionId), 'cgroup.freeze', '0']);
  for (const [dir, file, value] of targets) {
    try {
      if (existsSync(join(dir, file))) writeFileSync(join(dir, file), value);
    } catch {
      // not frozen, or gone meanwhile
    }
  }
}

/** The per-execution parent in every v1 hierarchy and the v2 tree, emptied of leftover child groups first. */
export async function removeContainerParents(layout: CgroupLayout, executionId: string): Promise<void> {
  // Every cgroup hierarchy mounted here (runc also fills named ones such as name=systemd, absent from the layout).
  const roots = [...new Set([...Object.values(layout.v1Mounts), ...cgroupMounts()])];
  if (layout.v2Mount && !roots.includes(layout.v2Mount)) roots.push(layout.v2Mount);
  const dirs = roots
    .map((root) => join(root, DOCKER_CGROUP_PARENT, executionId))
    .filter((d) => existsSync(d));
  const children: string[] = [];
  for (const dir of dirs) {
    try {
      for (const entry of readdirSync(dir, { withFileTypes: true }))
        if (entry.isDirectory()) children.push(join(dir, entry.name));
    } catch {
      // gone meanwhile
    }
  }
  // removeCgroupPaths takes the deepest last-listed first: parents first in the list, children after them.
  await removeCgroupPaths([...dirs, ...children]).catch(() => {});
  for (const dir of dirs) {
    try {
      rmdirSync(dir);
    } catch {
      // removeCgroupPaths removed it, or the reaper retries
    }
  }
}

/** Mount points of every cgroup (v1) and cgroup2 filesystem, from /proc/self/mounts. */
function cgroupMounts(): string[] {
  try {
    return readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .map((line) => line.split(' '))
      .filter((fields) => fields[2] === 'cgroup' || fields[2] === 'cgroup2')
      .map((fields) => fields[1]!.replace(/\\040/g, ' '));
  } catch {
    return [];
  }
}
