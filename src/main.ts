/**
 * Composition root: the only place that picks and constructs adapters. The CLI (and later the server) ask it
 * for a context; nothing else calls adapter constructors.
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { ProcIdentity } from './adapters/host/process-identity.ts';
import { SortableIds } from './adapters/ids/ids.ts';
import { SandboxRuntime } from './adapters/runtimes/sandbox/runtime.ts';
import { SqliteExecutionStore } from './adapters/store/sqlite/store.ts';
import type { Clock, ExecutionStore, Ids, ProcessIdentity } from './app/ports.ts';

export interface AegisConfig {
  /** Data directory (store, keys). @default $AEGIS_HOME or ~/.aegis */
  readonly home: string;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): AegisConfig {
  return { home: resolve(env['AEGIS_HOME'] || join(homedir(), '.aegis')) };
}

export interface StoreContext {
  readonly config: AegisConfig;
  readonly store: ExecutionStore;
  readonly clock: Clock;
  readonly identity: ProcessIdentity;
}

export interface LocalContext extends StoreContext {
  readonly runtime: SandboxRuntime;
  readonly ids: Ids;
}

const systemClock: Clock = { now: () => performance.timeOrigin + performance.now() };

export function openStoreContext(config: AegisConfig = loadConfig()): StoreContext {
  const store = SqliteExecutionStore.open(join(config.home, 'aegis.db'));
  return { config, store, clock: systemClock, identity: new ProcIdentity() };
}

export function openLocalContext(config: AegisConfig = loadConfig()): LocalContext {
  const base = openStoreContext(config);
  const runtime = new SandboxRuntime({
    identity: base.identity,
    protectedPaths: [config.home],
    ...(process.env['AEGIS_SCRATCH_DIR'] ? { scratchRoot: process.env['AEGIS_SCRATCH_DIR'] } : {}),
    ...(process.env['AEGIS_CGROUP_PARENT'] ? { cgroupParent: process.env['AEGIS_CGROUP_PARENT'] } : {}),
    ...(process.env['AEGIS_NODE_BINARY'] ? { nodeBinary: process.env['AEGIS_NODE_BINARY'] } : {}),
  });
  return { ...base, runtime, ids: new SortableIds() };
}
