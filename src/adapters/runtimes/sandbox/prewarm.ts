/**
 * Prewarmed instances (`InstanceSpec.prewarm`, docs/adr/0012-warm-instances.md): the sandbox's command becomes a
 * small shim that starts the agent's interpreter, says it is ready and waits for "go" on a dedicated socket the
 * orchestrator holds; on go (`execute`) it closes that socket and runs the agent's entrypoint in the same
 * interpreter, as a normal start would. This file plans the command line (a pure function, unit-tested); the shims
 * themselves are `shims/prewarm.py` and `shims/prewarm.cjs`, copied into the orchestrator's static dir and bound
 * read-only at /opt/aegis/lib inside.
 */
import { readFileSync } from 'node:fs';
import { AegisError } from '../../../domain/errors.ts';

/** Where the shims appear inside the sandbox (read-only binds of the static dir's copies). */
export const SHIM_DIR_INSIDE = '/opt/aegis/lib';

/**
 * The go socket's fd number in the sandbox for interpreter shims: high, so the interpreter's own start-up fds get
 * the same numbers as in a cold start, and the fd table the agent sees is a cold start's once it is closed.
 */
export const INTERPRETER_GO_FD = 63;
/** The exec wrapper is /bin/sh (dash), whose redirections take one-digit fds; it exec()s, so the number is moot. */
export const EXEC_GO_FD = 9;

/**
 * For agents whose interpreter can't be preloaded (`command:`, bash): wait for go, take the execution id it
 * carries into AEGIS_EXECUTION_ID (pooled instances are spawned under a pool id), close the socket, exec the
 * command. Nothing is preloaded, but the agent's process is the command itself with a fresh argv and environment.
 */
export const EXEC_WRAPPER = `printf r >&${EXEC_GO_FD} && IFS= read -r AEGIS_EXECUTION_ID <&${EXEC_GO_FD} || exit 125; exec ${EXEC_GO_FD}<&-; exec "$@"`;

export type PrewarmKind = 'python' | 'node' | 'exec';

export interface PrewarmPlan {
  readonly kind: PrewarmKind;
  /** The sandbox's command line. */
  readonly argv: readonly string[];
  /** The fd the go socket gets in the sandbox. */
  readonly goFd: number;
  /** Shim file to bind: its name in the static dir (also its name under SHIM_DIR_INSIDE), if any. */
  readonly shim: 'prewarm.py' | 'prewarm.cjs' | undefined;
}

/**
 * The prewarmed command line for an agent whose cold command line is `coldArgv`: Python and Node agents with an
 * entrypoint get their interpreter shim (`coldArgv` is `[interpreter, entrypoint]`), everything else the exec
 * wrapper around the cold command.
 */
export function planPrewarm(
  runtime: {
    readonly language: string | undefined;
    readonly entrypoint: string | undefined;
    readonly command: readonly string[] | undefined;
  },
  coldArgv: readonly string[],
): PrewarmPlan {
  const { language, entrypoint, command } = runtime;
  if (command === undefined && entrypoint !== undefined && coldArgv.length === 2) {
    const [interpreter] = coldArgv as [string, string];
    if (language === 'python') {
      return {
        kind: 'python',
        argv: [interpreter, `${SHIM_DIR_INSIDE}/prewarm.py`, entrypoint],
        goFd: INTERPRETER_GO_FD,
        shim: 'prewarm.py',
      };
    }
    if (language === 'node') {
      return {
        kind: 'node',
        argv: [interpreter, '--require', `${SHIM_DIR_INSIDE}/prewarm.cjs`, entrypoint],
        goFd: INTERPRETER_GO_FD,
        shim: 'prewarm.cjs',
      };
    }
  }
  return {
    kind: 'exec',
    argv: ['/bin/sh', '-c', EXEC_WRAPPER, 'aegis-prewarm', ...coldArgv],
    goFd: EXEC_GO_FD,
    shim: undefined,
  };
}

/** The shims' sources, by file name. */
export function shimSources(): Record<
  'prewarm.py' | 'prewarm.cjs' | 'live-agent.cjs' | 'live-pty.py',
  string
> {
  const dir = new URL('./shims/', import.meta.url);
  return {
    'prewarm.py': readFileSync(new URL('prewarm.py', dir), 'utf8'),
    'prewarm.cjs': readFileSync(new URL('prewarm.cjs', dir), 'utf8'),
    // Live sandboxes' exec agent (live.ts, docs/adr/0051-live-sandbox-exec-agent.md).
    'live-agent.cjs': readFileSync(new URL('live-agent.cjs', dir), 'utf8'),
    // Its PTY helper (docs/adr/0068-live-sandbox-pty.md), beside it in the sandbox.
    'live-pty.py': readFileSync(new URL('live-pty.py', dir), 'utf8'),
  };
}

/** What execute() writes on the go socket: the execution id the instance now serves, and a newline. */
export function goMessage(executionId: string): string {
  if (/[\n\r\0]/.test(executionId)) {
    throw new AegisError('USAGE', `execution id ${JSON.stringify(executionId)} has a line break or NUL`);
  }
  return `${executionId}\n`;
}
