/**
 * Mount/grant planning for the sandbox runtime: the agent directory and every `spec.security.filesystem` grant,
 * resolved, opened race-free (mount-source.ts, ADR 0014) and checked as the *opened* object — protected paths,
 * kernel filesystems, what the sandbox uid may read or write. The result is a list of descriptors to bind.
 */
import { chmodSync, cpSync, lstatSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { AegisError } from '../../../domain/errors.ts';
import { checkMountSource } from '../../../domain/filesystem-policy.ts';
import type { CompiledAgent } from '../../../domain/manifest/compiled.ts';
import { isWithin } from '../../../domain/paths.ts';
import type { BwrapMount } from './bwrap-args.ts';
import { reachable, type SandboxUser } from './host.ts';
import { changedWhileChecked, openMountSource, userMay } from './mount-source.ts';

/** Who the grants are checked for, and what may never be granted on this runtime besides ALWAYS_FORBIDDEN. */
export interface GrantContext {
  readonly user: SandboxUser;
  /** The configured protected paths and the runtime's scratch root. */
  readonly protectedPaths: readonly string[];
}

/**
 * Opens every grant race-free (mount-source.ts) and checks the *opened* object: not a protected path (grants
 * inside the agent's own directory `ownDir` are exempt from protected paths that merely contain that directory),
 * not on a kernel filesystem, reachable, readable (and writable) by the sandbox uid. Descriptors go to `held`;
 * the caller closes them once bubblewrap has them. When the agent directory was copied (`ownCopy`: the sandbox
 * uid cannot reach it), a read grant inside it is bound from the copy; a write grant inside it is refused.
 */
export function resolveMounts(
  ctx: GrantContext,
  agent: CompiledAgent,
  ownDir: string,
  ownCopy: string | undefined,
  held: number[],
): BwrapMount[] {
  const mounts: BwrapMount[] = [];
  const protectedPaths = ctx.protectedPaths;
  for (const mount of agent.mounts) {
    const what = mount.manifestPath;
    const real = realpathOrRefuse(
      mount.source,
      what,
      () =>
        new AegisError('MANIFEST_INVALID', `${what}: host path ${mount.source} does not exist`, {
          problems: [{ path: what, message: `host path ${mount.source} does not exist` }],
          hint: 'create it first, or remove the entry',
        }),
    );
    const insideOwnDir = isWithin(real, ownDir);
    const refuseProtected = (path: string) => {
      const verdict = checkMountSource(path, protectedPaths, ownDir);
      if (!verdict.forbidden) return;
      const via = path === mount.source ? '' : ` (resolves to ${path})`;
      throw new AegisError(
        'POLICY_DENIED',
        `${what}: ${mount.source}${via} may never be mounted into a sandbox — it is or contains the protected path ${verdict.protectedPath}`,
        {
          problems: [{ path: what, message: `protected host path ${verdict.protectedPath}` }],
          hint: "grant a dedicated directory that holds only what the agent needs (or put the data inside the agent's own directory)",
        },
      );
    };
    refuseProtected(real);
    if (insideOwnDir && ownCopy !== undefined && mount.writable) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `${what}: ${real} lies in the agent directory, which the sandbox gets as a read-only copy (the sandbox user ${ctx.user.name} cannot reach it, or it lies in a protected path), so it cannot be granted writable`,
        {
          hint: 'grant a dedicated directory outside the agent directory (and outside /root and /home) for what the agent writes',
        },
      );
    }
    const source = insideOwnDir && ownCopy !== undefined ? join(ownCopy, real.slice(ownDir.length)) : real;
    const opened = openMountSource(source, {
      user: ctx.user,
      what,
      ...(insideOwnDir && ownCopy === undefined ? { searchFrom: ownDir } : {}),
    });
    held.push(opened.fd);
    // The descriptor resolves to the walked path (checked by the walk), so this is the opened object's own path.
    if (opened.path === real) refuseProtected(opened.path);
    const access = mount.writable ? 'write' : 'read';
    if (!userMay(opened.stat, ctx.user, access)) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `${what}: the sandbox user ${ctx.user.name} (uid ${ctx.user.uid}) cannot ${access} ${real}: it is mode ${(opened.stat.mode & 0o777).toString(8)}, owner uid ${opened.stat.uid}`,
        {
          hint: mount.writable
            ? `give it to the sandbox user: chown ${ctx.user.uid} ${real} (or chmod o+rwx)`
            : `make it readable: chmod o+r${opened.stat.isDirectory() ? 'x' : ''} ${real}`,
        },
      );
    }
    mounts.push({ source: { fd: opened.fd }, target: mount.target, writable: mount.writable });
  }
  return mounts;
}

/** The agent directory's real path: its own directory, never a protected path to itself (checkMountSource). */
export function ownDirOf(ctx: GrantContext, agent: CompiledAgent): string {
  const what = 'the agent directory';
  const real = realpathOrRefuse(
    agent.agentDir,
    what,
    () =>
      new AegisError('MANIFEST_INVALID', `${what} ${agent.agentDir} does not exist`, {
        hint: 'run the agent from its agent.yaml again',
      }),
  );
  const verdict = checkMountSource(real, ctx.protectedPaths, real);
  if (verdict.forbidden) {
    throw new AegisError(
      'POLICY_DENIED',
      `${what} ${real} is or contains the protected path ${verdict.protectedPath}; it would be visible at /agent`,
      { hint: 'keep each agent in a directory of its own that holds only the agent' },
    );
  }
  return real;
}

/**
 * The agent directory, opened race-free and bound by descriptor. When the sandbox uid cannot read it (mode
 * 0700, say), a private read-only copy in the scratch dir is bound instead — copied from the opened descriptor,
 * so it is a copy of the directory that was checked.
 */
export function agentDirFor(
  ctx: GrantContext,
  ownDir: string,
  dir: string,
  held: number[],
): { fd: number; copy?: string } {
  const what = 'the agent directory';
  const opened = openMountSource(ownDir, { user: ctx.user, what, searchFrom: ownDir });
  held.push(opened.fd);
  if (!opened.stat.isDirectory()) throw changedWhileChecked(what, ownDir, 'it is no longer a directory');
  // bubblewrap resolves the descriptor to the object's current path and binds that as the sandbox uid (then
  // verifies the result is the object): the uid must reach the path itself, not only read the directory. An agent
  // directory inside a protected path (a clone under /home/alice) is copied too, so that its host path — a user
  // name, say — does not show in the agent's mountinfo (ADR 0015).
  const insideProtected = checkMountSource(ownDir, ctx.protectedPaths).forbidden;
  if (!insideProtected && reachable(ownDir, ctx.user, 'read').ok) return { fd: opened.fd };
  const copy = join(dir, 'agent');
  // The trailing slash makes cp follow the magic link itself (and only it: symlinks inside stay symlinks).
  cpSync(`/proc/self/fd/${opened.fd}/`, copy, {
    recursive: true,
    verbatimSymlinks: true,
    filter: (src) => !src.includes('/.git/'),
  });
  chmodSync(copy, 0o755);
  const copied = openMountSource(copy, { user: ctx.user, what });
  held.push(copied.fd);
  return { fd: copied.fd, copy };
}

/** A file this runtime just made in its own root-owned scratch (input/output), opened for bubblewrap. */
export function scratchFile(ctx: GrantContext, path: string, held: number[]): { fd: number } {
  const opened = openMountSource(path, { user: ctx.user, what: 'the scratch dir' });
  held.push(opened.fd);
  return { fd: opened.fd };
}

/**
 * realpath, telling a path that is missing (`missing()`) from one that was being replaced while it was resolved
 * (it exists again a moment later: POLICY_DENIED "changed while being checked").
 */
function realpathOrRefuse(path: string, what: string, missing: () => AegisError): string {
  try {
    return realpathSync(path);
  } catch (error) {
    let exists = false;
    try {
      lstatSync(path);
      exists = true;
    } catch {
      // really missing
    }
    if (exists) {
      const refusal = changedWhileChecked(what, path, `resolving it failed: ${(error as Error).message}`);
      refusal.cause = error;
      throw refusal;
    }
    const refusal = missing();
    refusal.cause = error;
    throw refusal;
  }
}
