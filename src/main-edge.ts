/**
 * Composition root of an edge node (`aegis edge join`, docs/adr/0108-edge-node-protocol.md): the same sandbox
 * runtime `aegis run` builds, bundles unpacked under the edge's data dir, and the protocol client
 * (adapters/runtimes/edge/node.ts). No store, no ledger: the server records everything the edge reports.
 */
import { chmodSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DirAgentBundles } from './adapters/bundle/agent-bundles.ts';
import { ProcIdentity } from './adapters/host/process-identity.ts';
import { EdgeNode } from './adapters/runtimes/edge/node.ts';
import { RuntimeRouter } from './adapters/runtimes/registry.ts';
import { SandboxRuntime } from './adapters/runtimes/sandbox/runtime.ts';
import { AegisError } from './domain/errors.ts';

export interface EdgeNodeStart {
  readonly server: string;
  readonly dataDir: string;
  readonly token?: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly capacity: number;
  /** The local runtime offered. @default sandbox */
  readonly runtime: string;
  readonly log: (line: string) => void;
}

export async function startEdgeNode(options: EdgeNodeStart): Promise<EdgeNode> {
  const dataDir = resolve(options.dataDir);
  // Traversable (the sandbox user reads bundles under it); the key lives in key/, 0700, which no agent may mount.
  mkdirSync(dataDir, { recursive: true, mode: 0o755 });
  chmodSync(dataDir, 0o755);
  const identity = new ProcIdentity();
  const keyDir = join(dataDir, 'key');
  const sandbox = new SandboxRuntime({
    identity,
    protectedPaths: [keyDir, join(dataDir, 'executions')],
    ...(process.env['AEGIS_SCRATCH_DIR'] ? { scratchRoot: process.env['AEGIS_SCRATCH_DIR'] } : {}),
    ...(process.env['AEGIS_CGROUP_PARENT'] ? { cgroupParent: process.env['AEGIS_CGROUP_PARENT'] } : {}),
    ...(process.env['AEGIS_NODE_BINARY'] ? { nodeBinary: process.env['AEGIS_NODE_BINARY'] } : {}),
  });
  const runtime = new RuntimeRouter(
    {
      identity,
      protectedPaths: [keyDir],
      scratchRoot: sandbox.scratchRoot,
      imageCacheDir: join(dataDir, 'images'),
      ...(process.env['AEGIS_NODE_BINARY'] ? { nodeBinary: process.env['AEGIS_NODE_BINARY'] } : {}),
    },
    undefined,
    [sandbox],
  );
  // The edge offers the one runtime it was started with (`--runtime`; the sandbox for now), if this host has it.
  const wanted = runtime.availability().find((r) => r.name === options.runtime);
  if (wanted === undefined || !wanted.available) {
    throw new AegisError(
      'RUNTIME_UNAVAILABLE',
      `--runtime ${options.runtime}: not available here (${wanted?.reason ?? 'unknown runtime'})`,
      { hint: 'run `aegis doctor` on this host' },
    );
  }
  const runtimes = [options.runtime];
  return new EdgeNode({
    server: options.server,
    dataDir,
    ...(options.token === undefined ? {} : { token: options.token }),
    labels: options.labels,
    runtimes,
    capacity: options.capacity,
    runtime,
    bundles: new DirAgentBundles({ dir: join(dataDir, 'bundles') }),
    log: options.log,
  });
}
