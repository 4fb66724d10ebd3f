/**
 * `aegis.v1.SandboxService` (proto/aegis/v1/sandboxes.proto) over app/live-sandboxes.ts: create, get, list, delete
 * and a server-streaming Exec (resumable by command id and seq). services.ts registers it with its admission and
 * error mapping.
 */
import type { HandlerContext, ServiceImpl } from '@connectrpc/connect';
import type { LiveSandboxes, SandboxView } from '../../app/live-sandboxes.ts';
import type { Principal } from '../../domain/auth/api-key.ts';
import { AegisError } from '../../domain/errors.ts';
import type { ApiContext } from '../context.ts';
import type { ExecEvent, Sandbox, SandboxService } from './gen/aegis/v1/sandboxes_pb.ts';

type Unary = <I, O>(
  run: (request: I, principal: Principal, call: HandlerContext) => Promise<O>,
) => (request: I, call: HandlerContext) => Promise<O>;

/** Largest timeout a request may carry (what fits a JS number exactly). */
const MAX_MS = BigInt(Number.MAX_SAFE_INTEGER);

function ms(value: bigint | undefined, field: string): number | undefined {
  if (value === undefined) return undefined;
  if (value > MAX_MS) throw new AegisError('USAGE', `${field}: ${value} is out of range`);
  return Number(value);
}

function toSandbox(view: SandboxView): Sandbox {
  return {
    $typeName: 'aegis.v1.Sandbox',
    id: view.id,
    agent: { $typeName: 'aegis.v1.SandboxAgent', ...view.agent },
    runtime: view.runtime,
    status: view.status,
    ...(view.reason !== null && { reason: view.reason }),
    createdAt: view.createdAt,
    expiresAt: view.expiresAt,
    ...(view.idleTimeoutMs !== null && { idleTimeoutMs: view.idleTimeoutMs }),
    metadata: { ...view.metadata },
    owner: view.owner,
    ...(view.usage !== null && {
      usage: {
        $typeName: 'aegis.v1.SandboxUsage',
        ...(view.usage.cpuUsageNs !== null && { cpuUsageNs: view.usage.cpuUsageNs }),
        ...(view.usage.memoryPeakBytes !== null && { memoryPeakBytes: view.usage.memoryPeakBytes }),
        oomKills: view.usage.oomKills,
        ...(view.usage.memoryBytes !== null && { memoryBytes: view.usage.memoryBytes }),
        ...(view.usage.pids !== null && { pids: view.usage.pids }),
      },
    }),
  };
}

export function sandboxServiceImpl(
  ctx: ApiContext,
  unary: Unary,
  admit: (call: HandlerContext) => Promise<Principal>,
  fail: (error: unknown, call: HandlerContext) => Error,
): ServiceImpl<typeof SandboxService> {
  const live = (): LiveSandboxes => {
    if (!ctx.sandboxes)
      throw new AegisError('RUNTIME_UNAVAILABLE', 'this server does not run live sandboxes');
    return ctx.sandboxes;
  };
  return {
    createSandbox: unary(async (request, principal) => {
      const timeoutMs = ms(request.timeoutMs, 'timeout_ms');
      const idleTimeoutMs = ms(request.idleTimeoutMs, 'idle_timeout_ms');
      if (request.agent === '') throw new AegisError('USAGE', 'agent: required');
      return toSandbox(
        await live().create(principal, {
          agent: request.agent,
          ...(timeoutMs !== undefined && { timeoutMs }),
          ...(idleTimeoutMs !== undefined && { idleTimeoutMs }),
          metadata: request.metadata,
          env: request.env,
        }),
      );
    }),
    getSandbox: unary(async (request, principal) => toSandbox(await live().get(principal, request.id))),
    listSandboxes: unary(async (_request, principal) => ({
      sandboxes: (await live().listSandboxes(principal)).map(toSandbox),
    })),
    deleteSandbox: unary(async (request, principal) => toSandbox(await live().kill(principal, request.id))),
    async *exec(request, call): AsyncGenerator<Omit<ExecEvent, '$typeName'>> {
      try {
        const principal = await admit(call);
        let commandId = request.commandId;
        if (commandId === undefined) {
          const hasArgv = request.argv.length > 0;
          if (hasArgv === (request.shell !== undefined)) {
            throw new AegisError('USAGE', 'give the command as argv or as shell, exactly one of them');
          }
          const timeoutMs = ms(request.timeoutMs, 'timeout_ms');
          const command = await live().exec(principal, request.sandboxId, {
            cmd: hasArgv ? request.argv : request.shell!,
            ...(request.cwd !== undefined && { cwd: request.cwd }),
            ...(Object.keys(request.env).length > 0 && { env: request.env }),
            ...(request.stdin !== undefined && { stdin: request.stdin }),
            ...(timeoutMs !== undefined && { timeoutMs }),
          });
          commandId = command.id;
          yield {
            seq: 0n,
            event: {
              case: 'started',
              value: {
                $typeName: 'aegis.v1.CommandStarted',
                commandId,
                pid: command.pid,
                argv: [...command.argv],
              },
            },
          };
        }
        const events = live().commandEvents(principal, request.sandboxId, commandId, {
          afterSeq: Number(request.afterSeq),
          follow: true,
          signal: call.signal,
        });
        for await (const event of events) {
          const seq = BigInt(event.seq);
          // The proto has no truncation case yet: the jump in seq is what a gRPC client sees.
          if (event.type === 'truncated') continue;
          if (event.type === 'exit') {
            yield {
              seq,
              event: {
                case: 'exit',
                value: {
                  $typeName: 'aegis.v1.CommandExit',
                  ...(event.exitCode !== null && { exitCode: event.exitCode }),
                  ...(event.signal !== null && { signal: event.signal }),
                  timedOut: event.timedOut,
                },
              },
            };
          } else {
            yield {
              seq,
              event: {
                case: 'output',
                value: { $typeName: 'aegis.v1.CommandOutput', stream: event.type, data: event.data },
              },
            };
          }
        }
      } catch (error) {
        throw fail(error, call);
      }
    },
  };
}
