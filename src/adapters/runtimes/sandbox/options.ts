/**
 * Sandbox runtime options in three steps: `SandboxRuntimeOptions` (public, every field documented with its default)
 * → `compileSandboxOptions()` (defaults applied once) → `CompiledSandboxOptions` (every field present), which is all
 * the runtime reads.
 */
import { join } from 'node:path';
import type { ProcessIdentity } from '../../../app/ports.ts';
import { type CgroupLayout, detectCgroupLayout } from './cgroups.ts';

export interface SandboxRuntimeOptions {
  /** Scratch root for per-execution files and the orchestrator's static /etc files. @default /run/aegis (root) */
  readonly scratchRoot?: string;
  /** Host paths never mountable in addition to the built-in list (the orchestrator's data dir). @default [] */
  readonly protectedPaths?: readonly string[];
  /** cgroup sub-path for sandbox groups. @default "aegis" */
  readonly cgroupParent?: string;
  /** Tells the reaper whether the orchestrator that owns a scratch dir is still alive. Required. */
  readonly identity: ProcessIdentity;
  /** Path to the bwrap binary. @default "bwrap" (PATH) */
  readonly bwrapPath?: string;
  /** Node binary agents with `language: node` run on. @default the orchestrator's own (process.execPath) */
  readonly nodeBinary?: string;
  /** @default detected from /proc/self/cgroup and the mounted hierarchies */
  readonly cgroupLayout?: CgroupLayout;
  /** Path to nsenter (util-linux), which opens the egress proxy's socket in the sandbox's netns. @default "nsenter" (PATH, via netns-listener) */
  readonly nsenterPath?: string;
}

export interface CompiledSandboxOptions {
  readonly scratchRoot: string;
  readonly protectedPaths: readonly string[];
  readonly cgroupParent: string;
  readonly identity: ProcessIdentity;
  readonly bwrapPath: string;
  readonly nodeBinary: string;
  readonly cgroupLayout: CgroupLayout;
  /** undefined: netns-listener's own default. */
  readonly nsenterPath: string | undefined;
}

/** Scratch root when none is configured: /run/aegis as root, else the user's runtime dir (or /tmp). */
export function defaultScratchRoot(): string {
  if (process.getuid?.() === 0) return '/run/aegis';
  const runtimeDir = process.env['XDG_RUNTIME_DIR'];
  return runtimeDir ? join(runtimeDir, 'aegis') : `/tmp/aegis-${process.getuid?.() ?? 'user'}`;
}

export function compileSandboxOptions(options: SandboxRuntimeOptions): CompiledSandboxOptions {
  return {
    scratchRoot: options.scratchRoot ?? defaultScratchRoot(),
    protectedPaths: options.protectedPaths ?? [],
    cgroupParent: options.cgroupParent ?? 'aegis',
    identity: options.identity,
    bwrapPath: options.bwrapPath ?? 'bwrap',
    nodeBinary: options.nodeBinary ?? process.execPath,
    cgroupLayout: options.cgroupLayout ?? detectCgroupLayout(),
    nsenterPath: options.nsenterPath,
  };
}
