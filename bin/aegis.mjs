#!/usr/bin/env node
// Entry point installed as `aegis`. AEGIS is TypeScript run natively, which needs Node 24; the repo pins it
// through the npm `node` package. If an older Node started us (e.g. the system's), re-run on the pinned one.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = fileURLToPath(new URL('../src/cli/bin.ts', import.meta.url));
const major = Number(process.versions.node.split('.')[0]);
if (major >= 24) {
  // Cache compiled (and type-stripped) modules across CLI starts: measured −33% on `aegis run`'s wall time
  // (docs/PERFORMANCE.md). Off with NODE_DISABLE_COMPILE_CACHE=1.
  const { enableCompileCache } = await import('node:module');
  enableCompileCache?.();
  await import(entry);
} else {
  const pinned = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  if (!existsSync(pinned)) {
    process.stderr.write(
      `aegis needs Node 24 (this is ${process.version}) and the pinned one is not installed.\n` +
        'Run `npm install` in the AEGIS directory, or `npm run setup`.\n',
    );
    process.exit(2);
  }
  const child = spawn(pinned, [entry, ...process.argv.slice(2)], { stdio: 'inherit' });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => {
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
}
