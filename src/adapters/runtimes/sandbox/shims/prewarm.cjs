'use strict';
/**
 * AEGIS warm start for Node agents (docs/adr/0012-warm-instances.md).
 *
 * The sandbox's command is `/opt/aegis/bin/node --require /opt/aegis/lib/prewarm.cjs ENTRYPOINT` (this file is
 * bound read-only from the orchestrator's static dir). Node runs `--require` preloads after its bootstrap and
 * before it even resolves the main entry, so the interpreter is up while the instance waits in a pool. This
 * preload tells the orchestrator it is ready and blocks on the go socket (fd 63); on go it reads the execution id,
 * closes the socket, removes itself from process.execArgv (so child processes and workers don't inherit it) and
 * from require.cache, and returns: Node then loads the entrypoint exactly as `node ENTRYPOINT` would
 * (process.argv, require.main, import.meta.main, error output and exit codes are Node's own).
 */
(() => {
  // Preloads also run in worker threads and in child processes started with process.execArgv: only the
  // sandbox's first process (pid 2 in its pid namespace, under bwrap's init) waits for go.
  if (process.pid !== 2 || !require('node:worker_threads').isMainThread) return;
  const fs = require('node:fs');
  const GO = 63;
  try {
    fs.fstatSync(GO);
  } catch {
    return; // not a warm start (fd closed): e.g. a re-exec of the agent
  }
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const retry = (fn) => {
    for (;;) {
      try {
        return fn();
      } catch (error) {
        if (error.code !== 'EAGAIN') throw error;
        Atomics.wait(pause, 0, 0, 1);
      }
    }
  };
  // Work Node leaves to first use, done here while the instance waits rather than after go (≈ 3.5 ms of a warm
  // start, 2-core VM). None of it reads agent files or changes what the agent can observe beyond
  // process.moduleLoadList (the internal modules loaded so far):
  // - the `performance` global loads perf_hooks on first access (≈ 2 ms); the property stays the same getter;
  performance.now();
  // - the ESM loader's first import (loader set-up, resolve, compile, link: ≈ 0.4 ms) on an empty data: module. Its
  //   last steps settle in microtasks after go; the module map only gains that data: URL;
  import('data:text/javascript,').catch(() => {});
  // - node:net, which the agent's first console.log loads to create process.stdout over the socket its stdio is
  //   (≈ 1.4 ms). The stream itself is not created: that would make fds 1 and 2 O_NONBLOCK before the agent runs.
  require('node:net');
  retry(() => fs.writeSync(GO, 'r'));
  const buffer = Buffer.alloc(256);
  let line = '';
  while (!line.endsWith('\n')) {
    const n = retry(() => fs.readSync(GO, buffer, 0, buffer.length, null));
    if (n === 0) break;
    line += buffer.toString('utf8', 0, n);
  }
  fs.closeSync(GO);
  if (!line.endsWith('\n')) process.exit(125); // the orchestrator let go of the instance without running it
  const executionId = line.slice(0, -1);
  if (process.env.AEGIS_EXECUTION_ID !== executionId) process.env.AEGIS_EXECUTION_ID = executionId;
  const at = process.execArgv.findIndex(
    (arg, i) => (arg === '--require' || arg === '-r') && process.execArgv[i + 1] === __filename,
  );
  if (at !== -1) process.execArgv.splice(at, 2);
  delete require.cache[__filename];
})();
