import { runAgent } from '../../src/app/run-agent.ts';
import type { CompiledAgent } from '../../src/domain/manifest/compiled.ts';
import type { LocalContext } from '../../src/main.ts';
import { firstLineOf, type Metrics, type Variant } from './child.ts';
import { wallNowMs } from './clock.ts';
import { commandOf, processTree } from './procs.ts';
import { type Tracer, watchSpawns } from './trace.ts';

export async function aegisRun(ctx: LocalContext, agent: CompiledAgent, tracer?: Tracer): Promise<Metrics> {
  tracer?.begin();
  const call = wallNowMs();
  tracer?.mark('call', call);
  const record = await runAgent(ctx, {
    agent,
    ...(tracer
      ? {
          onLog: (stream) => {
            if (stream === 'stdout') tracer.mark('line-seen');
          },
        }
      : {}),
  });
  const done = wallNowMs();
  tracer?.mark('result', done);
  if (record.status !== 'succeeded') {
    throw new Error(`aegis run of ${agent.name} ${record.status}: ${record.reason ?? ''} (${record.id})`);
  }
  const firstLine = firstLineOf(record.output, `aegis ${agent.name}`);
  const metrics: Metrics = { firstLine: firstLine - call, result: done - call };
  if (tracer) {
    tracer.mark('first-line', firstLine);
    for (const [name, at] of Object.entries(tracer.end())) metrics[`@${name}`] = at - call;
  }
  return metrics;
}

/** The bwrap processes the bench process saw started, newest last (see `watchSpawns`). */
export interface BwrapWatch {
  readonly pids: number[];
  readonly stop: () => void;
}

export function watchBwrap(): BwrapWatch {
  const pids: number[] = [];
  const stop = watchSpawns('bwrap', (child) => {
    pids.push(child.pid!);
    if (pids.length > 1000) pids.splice(0, pids.length - 1000);
  });
  return { pids, stop };
}

/** Whether an interpreter (anything but bwrap itself) already runs in the sandbox whose bwrap monitor is `pid`. */
export function interpreterStarted(pid: number | undefined): boolean {
  return pid !== undefined && processTree(pid).some((p) => commandOf(p) !== 'bwrap');
}

/**
 * A warm start, as a warm pool does it: `runtime.spawn({ prewarm: true })` ahead of time (not timed: after the
 * previous run, so it never overlaps another variant), then timed from the claim — `bind` + `execute()` (`mode`
 * `execute`), or `runAgent` with the pooled instance (`mode` `runAgent`: the store and ledger work of an execution
 * too) — to the agent's first line and to the result. `prewarmed` is 1 when an interpreter was already running in
 * the sandbox before the claim (0: the runtime ignored `prewarm`; the instance was Warm, bwrap blocked).
 */
export function warmVariant(
  ctx: LocalContext,
  agent: CompiledAgent,
  id: string,
  mode: 'execute' | 'runAgent',
  bwrap: BwrapWatch,
): Variant & { readonly close: () => Promise<void> } {
  const runtime = ctx.runtime;
  let ready: { instance: string; prewarmed: boolean } | undefined;
  const prepare = async () => {
    const instance = await runtime.spawn({
      executionId: `wp_${ctx.ids.executionId().slice(3)}`,
      agent,
      prewarm: true,
    });
    ready = { instance, prewarmed: interpreterStarted(bwrap.pids[bwrap.pids.length - 1]) };
  };
  return {
    id,
    run: async () => {
      if (ready === undefined) await prepare();
      const { instance, prewarmed } = ready!;
      ready = undefined;
      let metrics: Metrics;
      if (mode === 'execute') {
        const call = wallNowMs();
        runtime.bind!(instance, { executionId: ctx.ids.executionId() });
        const output = await runtime.execute(instance, { input: null, onLog: () => {} });
        const done = wallNowMs();
        if (output.status !== 'succeeded') {
          throw new Error(`warm ${agent.name} ${output.status}: ${output.reason ?? ''}`);
        }
        const firstLine = firstLineOf(output.output, `warm ${agent.name}`);
        metrics = {
          firstLine: firstLine - call,
          result: done - call,
          release: output.releasedAtMs - call,
          releaseToFirstLine: firstLine - output.releasedAtMs,
        };
      } else {
        const call = wallNowMs();
        const record = await runAgent(ctx, {
          agent,
          warm: (binding) => {
            runtime.bind!(instance, binding);
            return instance;
          },
        });
        const done = wallNowMs();
        if (record.status !== 'succeeded') {
          throw new Error(`warm runAgent ${agent.name} ${record.status}: ${record.reason ?? ''}`);
        }
        metrics = { firstLine: firstLineOf(record.output, `warm ${agent.name}`) - call, result: done - call };
      }
      metrics['prewarmed'] = prewarmed ? 1 : 0;
      await prepare(); // the next run's instance, outside the timed part
      return metrics;
    },
    close: async () => {
      if (ready !== undefined) await runtime.terminate(ready.instance);
      ready = undefined;
    },
  };
}
