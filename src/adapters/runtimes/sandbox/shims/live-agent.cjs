'use strict';
/*
 * AEGIS live-sandbox exec agent (docs/adr/0051-live-sandbox-exec-agent.md). It is the sandbox's command: it runs
 * inside the sandbox's namespaces, seccomp program and cgroup, as the sandbox user, without capabilities — so every
 * process it starts inherits exactly that and can be no stronger than the sandbox's first process.
 *
 * It speaks frames on its stdin (requests) and stdout (replies): u32be rest length, u32be header length, JSON
 * header, body bytes. It holds no secret and no authority: the orchestrator treats everything it says as untrusted.
 *
 * Files are reached through this process's own view (the sandbox's mount namespace): a path resolves here, never on
 * the host, so no symlink can lead to a host file. Paths are also resolved (realpath) and must stay under the roots
 * the orchestrator allows; the last component is opened with O_NOFOLLOW.
 */
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');

const MAX_FRAME = 4 * 1024 * 1024;
const CHUNK = 256 * 1024;
let readable = [];
let writable = [];
let maxFileBytes = 0;
const procs = new Map();
const uploads = new Map();
/** Downloads under flow control: id → { credit, cancelled, wake }. */
const reads = new Map();

let outQueue = Promise.resolve();
function send(header, body) {
  const h = Buffer.from(JSON.stringify(header), 'utf8');
  const b = body ?? Buffer.alloc(0);
  const prefix = Buffer.alloc(8);
  prefix.writeUInt32BE(4 + h.length + b.length, 0);
  prefix.writeUInt32BE(h.length, 4);
  const ok = process.stdout.write(Buffer.concat([prefix, h, b]));
  if (!ok) outQueue = new Promise((resolve) => process.stdout.once('drain', resolve));
  return outQueue;
}

function fail(id, error) {
  const code = error?.code ? String(error.code) : 'EIO';
  send({ id, t: 'err', code, message: String(error?.message || error) });
}

function under(p, roots) {
  return roots.some((root) => p === root || p.startsWith(root.endsWith('/') ? root : `${root}/`));
}

function denied(message) {
  const error = new Error(message);
  error.code = 'EACCES_POLICY';
  return error;
}

/** Resolves symlinks of every existing ancestor (inside the sandbox) and checks the result against the roots. */
function resolveInside(p, roots, { followLast }) {
  if (typeof p !== 'string' || !p.startsWith('/') || p.includes('\0')) throw denied(`bad path ${p}`);
  const parent = path.dirname(p);
  const base = path.basename(p);
  // The nearest existing ancestor, resolved here (inside the sandbox); what does not exist yet is appended.
  let realParent;
  let missing = '';
  let probe = parent;
  for (;;) {
    try {
      realParent = path.join(fs.realpathSync(probe), missing);
      break;
    } catch (error) {
      if (error.code !== 'ENOENT' || probe === '/') throw error;
      missing = path.join(path.basename(probe), missing);
      probe = path.dirname(probe);
    }
  }
  let real = p === '/' ? '/' : path.join(realParent, base);
  if (followLast) {
    try {
      real = fs.realpathSync(real);
    } catch (error) {
      if (error.code !== 'ENOENT') throw error;
    }
  }
  if (!under(real, roots)) throw denied(`${p} resolves to ${real}, outside the allowed paths`);
  return real;
}

function statOf(p, st) {
  const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
  return {
    path: p,
    name: path.basename(p),
    type,
    size: st.size,
    mode: st.mode & 0o7777,
    mtimeMs: st.mtimeMs,
  };
}

const NOFOLLOW = fs.constants.O_NOFOLLOW;

async function handle(header, body) {
  const { id, op } = header;
  try {
    switch (op) {
      case 'init':
        readable = header.readable;
        writable = header.writable;
        maxFileBytes = header.maxFileBytes;
        return send({ id, t: 'ok', result: { pid: process.pid } });
      case 'exec':
        return exec(header);
      case 'stdin': {
        const proc = procs.get(header.target);
        if (proc?.stdin && !proc.stdin.destroyed) {
          if (body.length > 0) proc.stdin.write(body);
          if (header.eof) proc.stdin.end();
        }
        return;
      }
      case 'resize': {
        const proc = procs.get(header.target);
        const control = proc?.stdio[3];
        if (control && !control.destroyed)
          control.write(`${dimension(header.cols, 80)} ${dimension(header.rows, 24)}\n`);
        return;
      }
      case 'kill': {
        const proc = procs.get(header.target);
        if (!proc) return send({ id, t: 'err', code: 'ENOENT', message: `no process ${header.target}` });
        try {
          process.kill(-proc.pid, header.signal || 'SIGKILL');
        } catch {
          proc.kill(header.signal || 'SIGKILL');
        }
        return send({ id, t: 'ok', result: {} });
      }
      case 'stat': {
        const real = resolveInside(header.path, [...readable, ...writable], { followLast: false });
        return send({ id, t: 'ok', result: statOf(header.path, fs.lstatSync(real)) });
      }
      case 'list': {
        const real = resolveInside(header.path, [...readable, ...writable], { followLast: true });
        const entries = [];
        for (const name of fs.readdirSync(real).slice(0, 10_000)) {
          try {
            entries.push(statOf(path.posix.join(header.path, name), fs.lstatSync(path.join(real, name))));
          } catch {
            // vanished meanwhile
          }
        }
        return send({ id, t: 'ok', result: { entries } });
      }
      case 'mkdir': {
        const real = resolveInside(header.path, writable, { followLast: false });
        fs.mkdirSync(real, { recursive: true, mode: 0o755 });
        return send({ id, t: 'ok', result: {} });
      }
      case 'move': {
        const from = resolveInside(header.from, writable, { followLast: false });
        const to = resolveInside(header.to, writable, { followLast: false });
        try {
          fs.renameSync(from, to);
        } catch (error) {
          if (error.code !== 'EXDEV') throw error;
          // Across mounts (/workspace → /tmp): copy (symlinks stay symlinks), then remove the source.
          fs.cpSync(from, to, { recursive: true, errorOnExist: true, force: false, verbatimSymlinks: true });
          fs.rmSync(from, { recursive: true });
        }
        return send({ id, t: 'ok', result: {} });
      }
      case 'remove': {
        const real = resolveInside(header.path, writable, { followLast: false });
        if (writable.includes(real))
          throw denied(`${header.path} is a root of the sandbox; remove what is in it`);
        fs.rmSync(real, { recursive: true, force: false });
        return send({ id, t: 'ok', result: {} });
      }
      case 'write-open': {
        const real = resolveInside(header.path, writable, { followLast: false });
        const fd = fs.openSync(
          real,
          fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | NOFOLLOW,
          0o644,
        );
        // Re-check after open: the descriptor's own path (a parent swapped since the check shows here).
        const opened = fs.readlinkSync(`/proc/self/fd/${fd}`);
        if (!under(opened, writable)) {
          fs.closeSync(fd);
          throw denied(`${header.path} was redirected to ${opened}`);
        }
        uploads.set(id, { fd, bytes: 0 });
        return send({ id, t: 'ok', result: {} });
      }
      case 'write-chunk': {
        const upload = uploads.get(header.target);
        if (!upload) return;
        upload.bytes += body.length;
        if (upload.bytes > maxFileBytes) {
          upload.failed = true;
          return;
        }
        let off = 0;
        while (off < body.length) off += fs.writeSync(upload.fd, body, off, body.length - off);
        return;
      }
      case 'write-end': {
        const upload = uploads.get(header.target);
        if (!upload) return send({ id, t: 'err', code: 'ENOENT', message: 'no such upload' });
        uploads.delete(header.target);
        fs.closeSync(upload.fd);
        if (upload.failed)
          return send({ id, t: 'err', code: 'EFBIG', message: `over ${maxFileBytes} bytes` });
        return send({ id, t: 'ok', result: { bytes: upload.bytes } });
      }
      case 'read': {
        const real = resolveInside(header.path, [...readable, ...writable], { followLast: false });
        const fd = fs.openSync(real, fs.constants.O_RDONLY | NOFOLLOW);
        try {
          const opened = fs.readlinkSync(`/proc/self/fd/${fd}`);
          if (!under(opened, [...readable, ...writable]))
            throw denied(`${header.path} was redirected to ${opened}`);
          const st = fs.fstatSync(fd);
          if (!st.isFile()) throw denied(`${header.path} is not a regular file`);
          if (st.size > maxFileBytes) {
            const error = new Error(`${header.path} is ${st.size} bytes, over ${maxFileBytes}`);
            error.code = 'EFBIG';
            throw error;
          }
          // With `credit` the orchestrator grants chunks as its client takes them (read-credit), so a slow
          // client stalls this loop instead of filling the orchestrator's memory; read-cancel ends it.
          const flow =
            typeof header.credit === 'number'
              ? { credit: header.credit, cancelled: false, wake: () => {} }
              : null;
          if (flow) reads.set(id, flow);
          await send({ id, t: 'ok', result: { size: st.size } });
          const buf = Buffer.alloc(CHUNK);
          let total = 0;
          for (;;) {
            while (flow && flow.credit <= 0 && !flow.cancelled)
              await new Promise((resolve) => (flow.wake = resolve));
            if (flow?.cancelled) return;
            if (flow) flow.credit--;
            const n = fs.readSync(fd, buf, 0, CHUNK, null);
            if (n === 0) break;
            total += n;
            if (total > maxFileBytes) break;
            await send({ id, t: 'data' }, Buffer.from(buf.subarray(0, n)));
          }
          return send({ id, t: 'end', result: { bytes: total } });
        } finally {
          reads.delete(id);
          fs.closeSync(fd);
        }
      }
      case 'read-credit':
      case 'read-cancel': {
        const flow = reads.get(header.target);
        if (!flow) return;
        if (op === 'read-cancel') flow.cancelled = true;
        else flow.credit += Math.max(0, Math.min(Number(header.n) || 0, 64));
        flow.wake();
        return;
      }
      default:
        return send({ id, t: 'err', code: 'ENOSYS', message: `unknown op ${op}` });
    }
  } catch (error) {
    fail(id, error);
  }
}

/** A command on a pseudo-terminal: run by the PTY helper (live-pty.py, docs/adr/0068-live-sandbox-pty.md). */
const PTY_HELPER = path.join(__dirname, 'live-pty.py');

function dimension(value, fallback) {
  const n = Number(value);
  return Number.isInteger(n) && n >= 1 && n <= 1000 ? n : fallback;
}

function exec(header) {
  const { id, argv, cwd, env } = header;
  const pty = header.pty && typeof header.pty === 'object' ? header.pty : null;
  let child;
  try {
    const [file, args] = pty
      ? ['python3', [PTY_HELPER, String(dimension(pty.cols, 80)), String(dimension(pty.rows, 24)), ...argv]]
      : [argv[0], argv.slice(1)];
    child = spawn(file, args, {
      cwd: cwd || '/workspace',
      env: { ...process.env, ...(pty ? { TERM: 'xterm-256color' } : {}), ...(env || {}) },
      // With a pty, fd 3 takes resize requests ("COLS ROWS\n").
      stdio: pty ? ['pipe', 'pipe', 'pipe', 'pipe'] : ['pipe', 'pipe', 'pipe'],
      detached: true, // its own process group: kill reaches its children too
    });
  } catch (error) {
    return fail(id, error);
  }
  if (pty) {
    child.stdio[3].on('error', () => {});
    child.once('error', (error) => {
      if (error.code === 'ENOENT') error.code = 'ENOPTY';
    });
  }
  procs.set(id, child);
  child.stdin.on('error', () => {});
  if (!header.stdin) child.stdin.end();
  const streamOut = (stream) => (chunk) => {
    send({ id, t: 'out', stream }, chunk);
  };
  child.stdout.on('data', streamOut('stdout'));
  child.stderr.on('data', streamOut('stderr'));
  let spawned = false;
  child.once('spawn', () => {
    spawned = true;
    send({ id, t: 'started', pid: child.pid });
  });
  child.once('error', (error) => {
    if (!spawned) {
      procs.delete(id);
      fail(id, error);
    }
  });
  child.once('close', (code, signal) => {
    procs.delete(id);
    if (spawned) send({ id, t: 'exit', code, signal });
  });
}

// Frame reader.
let pending = Buffer.alloc(0);
process.stdin.on('data', (chunk) => {
  pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
  while (pending.length >= 8) {
    const rest = pending.readUInt32BE(0);
    if (rest > MAX_FRAME) process.exit(70);
    if (pending.length < 4 + rest) break;
    const headerLength = pending.readUInt32BE(4);
    const header = JSON.parse(pending.subarray(8, 8 + headerLength).toString('utf8'));
    const body = pending.subarray(8 + headerLength, 4 + rest);
    pending = pending.subarray(4 + rest);
    handle(header, Buffer.from(body));
  }
});
process.stdin.on('end', () => process.exit(0));
process.on('SIGTERM', () => {});
process.stdout.on('error', () => process.exit(0));
