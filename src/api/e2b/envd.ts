/**
 * E2B's data plane, the Connect-RPC half: the `process.Process` and `filesystem.Filesystem` services of E2B's
 * in-sandbox daemon (envd), served by the orchestrator on top of the LiveSandboxes use-case — no second exec or file
 * implementation: each call is the same policy check and ledger entry as the REST and gRPC sandbox APIs.
 *
 * A call names its sandbox with the `E2b-Sandbox-Id` header and authenticates with `X-Access-Token` (shared.ts).
 * Process ids are the command's pid inside the sandbox. PTY, stdin streaming and directory watching answer
 * `unimplemented`.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from '@connectrpc/connect';
import type { CommandEvent, CommandView, LiveSandboxes } from '../../app/live-sandboxes.ts';
import type { LiveFileEntry } from '../../app/ports.ts';
import type { Principal } from '../../domain/auth/api-key.ts';
import { AegisError } from '../../domain/errors.ts';
import type { ApiContext } from '../context.ts';
import { Filesystem, FileType } from '../grpc/gen/e2b/envd/filesystem_pb.ts';
import {
  Process,
  type ProcessSelector,
  Signal,
  type StartResponseSchema,
} from '../grpc/gen/e2b/envd/process_pb.ts';
import { kTransport, toConnectError } from '../grpc/services.ts';
import { checkUser, E2bUnsupported, e2bPrincipal, sandboxIdOf } from './shared.ts';

type EventInit = NonNullable<MessageInitShape<typeof StartResponseSchema>['event']>;
/** A StartResponse or ConnectResponse (the same shape). */
interface EventOut {
  readonly event: EventInit;
}

const ENCODER = new TextEncoder();
/** ListDir entries returned at most (depth > 1 walks). */
const MAX_LIST_ENTRIES = 10_000;
const MAX_LIST_DEPTH = 16;
/** Tags remembered (Start's `tag`, for selectors by tag); oldest forgotten first. */
const MAX_TAGS = 4096;
const KEEPALIVE = Symbol('keepalive');

interface Call {
  readonly live: LiveSandboxes;
  readonly principal: Principal;
  readonly sandboxId: string;
}

/** Start's and Connect's events from a command's event stream (stdout/stderr as bytes, the exit as EndEvent). */
function toProcessEvent(event: CommandEvent): EventInit | undefined {
  switch (event.type) {
    case 'stdout':
    case 'stderr':
      return {
        event: { case: 'data', value: { output: { case: event.type, value: ENCODER.encode(event.data) } } },
      };
    case 'exit': {
      const status =
        event.exitCode !== null ? `exit status ${event.exitCode}` : `signal: ${event.signal ?? 'unknown'}`;
      const error = event.timedOut ? 'timed out' : event.exitCode === null ? status : undefined;
      return {
        event: {
          case: 'end',
          value: {
            exitCode: event.exitCode ?? -1,
            exited: event.exitCode !== null,
            status,
            ...(error === undefined ? {} : { error }),
          },
        },
      };
    }
    default:
      return undefined; // 'truncated': E2B has no such event; the output simply resumes
  }
}

/** `source`'s items, with KEEPALIVE whenever `everyMs` pass without one (E2B's Keepalive-Ping-Interval). */
async function* withKeepAlive<T>(
  source: AsyncIterable<T>,
  everyMs: number | undefined,
): AsyncGenerator<T | typeof KEEPALIVE> {
  const iterator = source[Symbol.asyncIterator]();
  let next = iterator.next();
  try {
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const tick =
        everyMs === undefined
          ? undefined
          : new Promise<typeof KEEPALIVE>((resolve) => {
              timer = setTimeout(() => resolve(KEEPALIVE), everyMs);
            });
      const result = await (tick ? Promise.race([next, tick]) : next);
      clearTimeout(timer);
      if (result === KEEPALIVE) {
        yield KEEPALIVE;
        continue;
      }
      if (result.done) return;
      yield result.value;
      next = iterator.next();
    }
  } finally {
    void iterator.return?.();
  }
}

function keepAliveMs(call: HandlerContext): number | undefined {
  const seconds = Number(call.requestHeader.get('keepalive-ping-interval'));
  return Number.isFinite(seconds) && seconds >= 1 ? Math.min(seconds, 3600) * 1000 : undefined;
}

function entryInfo(entry: LiveFileEntry) {
  const type =
    entry.type === 'file'
      ? FileType.FILE
      : entry.type === 'dir'
        ? FileType.DIRECTORY
        : entry.type === 'symlink'
          ? FileType.SYMLINK
          : FileType.UNSPECIFIED;
  return {
    name: entry.name,
    type,
    path: entry.path,
    size: BigInt(entry.size),
    mode: entry.mode,
    permissions: permissions(entry),
    owner: '',
    group: '',
    modifiedTime: timestampFromDate(new Date(entry.modifiedAt)),
  };
}

/** `drwxr-xr-x` from the mode bits. */
function permissions(entry: LiveFileEntry): string {
  const kind = entry.type === 'dir' ? 'd' : entry.type === 'symlink' ? 'l' : '-';
  let text = kind;
  for (let shift = 6; shift >= 0; shift -= 3) {
    const bits = (entry.mode >> shift) & 7;
    text += `${bits & 4 ? 'r' : '-'}${bits & 2 ? 'w' : '-'}${bits & 1 ? 'x' : '-'}`;
  }
  return text;
}

export function registerE2bEnvd(router: ConnectRouter, ctx: ApiContext): void {
  const tags = new Map<string, string>(); // `${sandboxId}\0${tag}` → command id

  const begin = async (call: HandlerContext): Promise<Call> => {
    if (!ctx.sandboxes)
      throw new AegisError('RUNTIME_UNAVAILABLE', 'this server does not run live sandboxes');
    const principal = await e2bPrincipal(ctx, call.values.get(kTransport), call.requestHeader);
    return { live: ctx.sandboxes, principal, sandboxId: sandboxIdOf(call.requestHeader) };
  };
  const fail = (error: unknown): ConnectError => {
    if (error instanceof E2bUnsupported) return new ConnectError(error.message, Code.Unimplemented);
    return toConnectError(error, ctx.serverPaths);
  };
  const unary =
    <I, O>(run: (request: I, call: Call, context: HandlerContext) => Promise<O>) =>
    async (request: I, context: HandlerContext): Promise<O> => {
      try {
        return await run(request, await begin(context), context);
      } catch (error) {
        throw fail(error);
      }
    };
  const unsupported = (what: string) => async (): Promise<never> => {
    throw fail(new E2bUnsupported(what));
  };

  /** The command a selector names: by tag, else by pid (a running one first, else the latest). */
  const commandOf = (call: Call, selector: ProcessSelector['selector'] | undefined): CommandView => {
    const commands = call.live.listCommands(call.principal, call.sandboxId);
    let found: CommandView | undefined;
    if (selector?.case === 'tag') {
      const id = tags.get(`${call.sandboxId}\0${selector.value}`);
      found = commands.find((command) => command.id === id);
    } else if (selector?.case === 'pid') {
      const matching = commands.filter((command) => command.pid === selector.value);
      found = matching.find((command) => command.status === 'running') ?? matching.at(-1);
    }
    if (!found) {
      throw new AegisError(
        'NOT_FOUND',
        `no process ${selector?.value ?? '(none named)'} in sandbox ${call.sandboxId}`,
      );
    }
    return found;
  };

  async function* events(
    call: Call,
    command: CommandView,
    context: HandlerContext,
  ): AsyncGenerator<EventOut> {
    yield { event: { event: { case: 'start', value: { pid: command.pid } } } };
    const source = call.live.commandEvents(call.principal, call.sandboxId, command.id, {
      afterSeq: 0,
      follow: true,
      signal: context.signal,
    });
    for await (const item of withKeepAlive(source, keepAliveMs(context))) {
      if (item === KEEPALIVE) {
        yield { event: { event: { case: 'keepalive', value: {} } } };
        continue;
      }
      const event = toProcessEvent(item);
      if (event) yield { event };
    }
  }

  router.service(Process, {
    async *start(request, context) {
      try {
        const call = await begin(context);
        checkUser(context.requestHeader, undefined);
        if (request.pty) throw new E2bUnsupported('PTY (Process.Start with pty)');
        const config = request.process;
        if (!config || config.cmd === '') throw new AegisError('USAGE', 'process.cmd: the program to run');
        const command = await call.live.exec(call.principal, call.sandboxId, {
          cmd: [config.cmd, ...config.args],
          ...(config.cwd ? { cwd: config.cwd } : {}),
          env: config.envs,
          keepStdin: request.stdin === true,
        });
        if (request.tag) {
          tags.set(`${call.sandboxId}\0${request.tag}`, command.id);
          if (tags.size > MAX_TAGS) tags.delete(tags.keys().next().value as string);
        }
        yield* events(call, command, context);
      } catch (error) {
        throw fail(error);
      }
    },
    async *connect(request, context) {
      try {
        const call = await begin(context);
        const command = commandOf(call, request.process?.selector);
        yield* events(call, command, context);
      } catch (error) {
        throw fail(error);
      }
    },
    list: unary(async (_request, call) => ({
      processes: call.live
        .listCommands(call.principal, call.sandboxId)
        .filter((command) => command.status === 'running')
        .map((command) => {
          const tag = [...tags].find(
            ([key, id]) => id === command.id && key.startsWith(`${call.sandboxId}\0`),
          );
          return {
            pid: command.pid,
            config: { cmd: command.argv[0] ?? '', args: command.argv.slice(1), envs: {} },
            ...(tag ? { tag: tag[0].slice(call.sandboxId.length + 1) } : {}),
          };
        }),
    })),
    sendInput: unary(async (request, call) => {
      const command = commandOf(call, request.process?.selector);
      const input = request.input?.input;
      if (input?.case === 'pty') throw new E2bUnsupported('PTY input');
      await call.live.writeStdin(
        call.principal,
        call.sandboxId,
        command.id,
        input?.value ?? new Uint8Array(),
        false,
      );
      return {};
    }),
    closeStdin: unary(async (request, call) => {
      const command = commandOf(call, request.process?.selector);
      await call.live.writeStdin(call.principal, call.sandboxId, command.id, new Uint8Array(), true);
      return {};
    }),
    sendSignal: unary(async (request, call) => {
      const command = commandOf(call, request.process?.selector);
      const signal = request.signal === Signal.SIGTERM ? 'SIGTERM' : 'SIGKILL';
      await call.live.killCommand(call.principal, call.sandboxId, command.id, signal);
      return {};
    }),
    update: unsupported('PTY resize (Process.Update)'),
    streamInput: unsupported('Process.StreamInput (use SendInput)'),
  });

  router.service(Filesystem, {
    stat: unary(async (request, call) => ({
      entry: entryInfo(await call.live.stat(call.principal, call.sandboxId, request.path)),
    })),
    makeDir: unary(async (request, call) => {
      const existing = await call.live
        .stat(call.principal, call.sandboxId, request.path)
        .catch(() => undefined);
      if (existing) throw new ConnectError(`${request.path} already exists`, Code.AlreadyExists);
      await call.live.mkdir(call.principal, call.sandboxId, request.path);
      return { entry: entryInfo(await call.live.stat(call.principal, call.sandboxId, request.path)) };
    }),
    move: unary(async (request, call) => {
      await call.live.move(call.principal, call.sandboxId, request.source, request.destination);
      return { entry: entryInfo(await call.live.stat(call.principal, call.sandboxId, request.destination)) };
    }),
    listDir: unary(async (request, call) => {
      const depth = Math.min(Math.max(request.depth, 1), MAX_LIST_DEPTH);
      const entries: LiveFileEntry[] = [];
      const walk = async (path: string, level: number): Promise<void> => {
        for (const entry of await call.live.list(call.principal, call.sandboxId, path)) {
          if (entries.length >= MAX_LIST_ENTRIES) return;
          entries.push(entry);
          if (entry.type === 'dir' && level < depth) await walk(entry.path, level + 1);
        }
      };
      await walk(request.path, 1);
      return { entries: entries.map(entryInfo) };
    }),
    remove: unary(async (request, call) => {
      await call.live.remove(call.principal, call.sandboxId, request.path);
      return {};
    }),
    // biome-ignore lint/correctness/useYield: refuses before the first event
    async *watchDir() {
      throw fail(new E2bUnsupported('directory watching (Filesystem.WatchDir)'));
    },
    createWatcher: unsupported('directory watching (Filesystem.CreateWatcher)'),
    getWatcherEvents: unsupported('directory watching (Filesystem.GetWatcherEvents)'),
    removeWatcher: unsupported('directory watching (Filesystem.RemoveWatcher)'),
  });
}
