/**
 * Runtime conformance, second part: live sandboxes (the `LiveRuntime` port: spawn with `live: true`, `openLive`,
 * exec, files, pause/resume, terminate) and the in-sandbox API (the LLM gateway served on the agent's
 * 127.0.0.1:3129) — the same cases on every runtime of ./runtimes.ts. Adversarial: a command exec'd in a live
 * sandbox is no stronger than its first process (no capabilities, no_new_privs, the sandbox uid, the instance's
 * cgroup), and the provider key never enters the sandbox.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { ProcIdentity } from '../../src/adapters/host/process-identity.ts';
import { createLlmWiring } from '../../src/adapters/llm/wiring.ts';
import { loadManifestFile } from '../../src/adapters/manifest/yaml-loader.ts';
import { llmEnv } from '../../src/app/llm-wiring.ts';
import type { LiveRuntime, LiveSession, Runtime } from '../../src/app/ports.ts';
import { sandboxPathRoots } from '../../src/domain/live-sandbox.ts';
import type { LlmSettings } from '../../src/domain/llm/config.ts';
import type { CompiledAgent } from '../../src/domain/manifest/compiled.ts';
import { busyboxLayers, writeOciLayout } from '../support/oci-layout.ts';
import { pollUntil } from '../support/poll.ts';
import { type ScriptedLlm, startScriptedLlm } from '../support/scripted-llm.ts';
import { conformanceRuntimes } from './runtimes.ts';

/** An agent's JSON report, asserted field by field. */
// biome-ignore lint/suspicious/noExplicitAny: the shape is whatever the agent printed; tests assert on it
type Report = Record<string, any>;

const OPENAI_KEY = `sk-REAL-conformance-${process.pid}-9c1e`;

interface Ran {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: string | null;
}

/** Runs one command in a live session to its end; `feed` writes its stdin once it has started. */
async function execIn(
  session: LiveSession,
  argv: string[],
  feed?: (
    process: { writeStdin(chunk: Uint8Array, eof: boolean): Promise<void> },
    seen: () => string,
  ) => Promise<void>,
): Promise<Ran> {
  let stdout = '';
  let stderr = '';
  let done: (ran: Ran) => void = () => {};
  const ended = new Promise<Ran>((resolve) => (done = resolve));
  const proc = await session.exec(
    { argv, cwd: '/workspace', env: { PATH: '/usr/bin:/bin' }, stdin: feed !== undefined },
    {
      onOutput: (stream, chunk) => {
        if (stream === 'stdout') stdout += Buffer.from(chunk).toString('utf8');
        else stderr += Buffer.from(chunk).toString('utf8');
      },
      onExit: (code, signal) => done({ stdout, stderr, code, signal }),
    },
  );
  if (feed) await feed(proc, () => stdout);
  return ended;
}

for (const { runtime: rut, skip, missing } of conformanceRuntimes()) {
  describe(`conformance (live, in-sandbox API): ${rut.name}`, {
    skip: skip ?? false,
    concurrency: true,
  }, () => {
    const root = mkdtempSync(join(tmpdir(), `aegis-conformance-live-${rut.name}-`));
    chmodSync(root, 0o755);
    const identity = new ProcIdentity();
    let runtime: Runtime & LiveRuntime;
    let upstream: ScriptedLlm;
    let seq = 0;
    const nextId = () => `ex_live${process.pid}x${Date.now().toString(36)}x${seq++}`;

    before(async () => {
      if (missing !== undefined)
        assert.fail(`the ${rut.name} runtime is required but cannot run: ${missing}`);
      runtime = rut.create({
        identity,
        scratchRoot: join(root, 'scratch'),
        cgroupParent: 'aegis',
      }) as Runtime & LiveRuntime;
      assert.equal(typeof runtime.openLive, 'function', `the ${rut.name} runtime holds live sandboxes`);
      upstream = await startScriptedLlm();
    });
    after(async () => {
      // A failed case leaves its live instance behind: end them all (their processes keep the test alive).
      await (runtime as { terminateAll?: () => Promise<void> } | undefined)?.terminateAll?.();
      await upstream?.close();
      rmSync(root, { recursive: true, force: true });
    });

    async function compile(
      name: string,
      code: string,
      extra: Record<string, unknown> = {},
    ): Promise<CompiledAgent> {
      const dir = join(root, 'agents', `${name}-${seq++}`);
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      writeFileSync(join(dir, 'main.py'), code);
      const manifest = {
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name, version: '1.0.0' },
        spec: {
          runtime: { language: 'python', entrypoint: 'main.py' },
          isolation: rut.name,
          security: { network: { allow: [], deny: [] }, resources: { timeout: '60s', pids: 64 } },
          ...extra,
        },
      };
      writeFileSync(join(dir, 'agent.yaml'), stringify(manifest));
      return (await loadManifestFile(join(dir, 'agent.yaml'))).agent;
    }

    async function openLive(name: string): Promise<{ id: string; session: LiveSession }> {
      const agent = await compile(name, 'print("never runs in a live sandbox")\n');
      const id = await runtime.spawn({ executionId: nextId(), agent, live: true });
      assert.equal(runtime.status(id), 'warm');
      const session = await runtime.openLive(id, { ...sandboxPathRoots(agent), maxFileBytes: 8 * 1024 ** 2 });
      return { id, session };
    }

    async function close(id: string, session: LiveSession): Promise<void> {
      await runtime.terminate(id);
      await session.closed;
      await pollUntil('the live instance to be gone', () => runtime.status(id) === undefined);
    }

    const LIVE_TEST = { timeout: 240_000 };

    it('live from an image (busybox): the exec agent brings the host Node and its libraries; commands run the image', {
      ...LIVE_TEST,
      skip:
        rut.name === 'sandbox'
          ? 'the sandbox runtime takes no images (LIMIT_UNENFORCEABLE)'
          : existsSync('/bin/busybox')
            ? false
            : 'needs busybox-static (/bin/busybox) to build the image',
    }, async () => {
      const layout = await writeOciLayout(join(root, `layout-${seq++}`), busyboxLayers(), {
        env: ['PATH=/bin'],
      });
      const agent = await compile('live-image', '', {
        runtime: { command: ['/bin/true'], image: `oci:${layout.dir}` },
      });
      const id = await runtime.spawn({ executionId: nextId(), agent, live: true });
      const session = await runtime.openLive(id, { ...sandboxPathRoots(agent), maxFileBytes: 1024 ** 2 });
      // The image's own sh and busybox, not the host's /usr: the host view is not there.
      const ran = await execIn(session, [
        '/bin/sh',
        '-c',
        'echo "$PATH"; id -u; ls /usr/bin/python3 2>&1; true',
      ]);
      assert.equal(ran.code, 0, JSON.stringify(ran));
      const [path, uid, python] = ran.stdout.split('\n');
      assert.match(path ?? '', /(^|:)\/bin(:|$)/);
      assert.notEqual(uid, '0', 'not root');
      assert.match(python ?? '', /No such file|can't access/);
      const written = await session.writeFile(
        '/workspace/hello.txt',
        (async function* () {
          yield Buffer.from('from the file API');
        })(),
      );
      assert.equal(written.bytes, 17);
      const cat = await execIn(session, ['/bin/cat', '/workspace/hello.txt']);
      assert.equal(cat.stdout, 'from the file API');
      await close(id, session);
    });

    it('live: exec streams output and takes stdin, files round trip, delete ends it', LIVE_TEST, async () => {
      const { id, session } = await openLive('live-basic');
      assert.equal(runtime.status(id), 'hot');
      // Streaming: the first line comes back while the command still waits for more stdin.
      const ran = await execIn(
        session,
        ['/bin/sh', '-c', 'while read -r l; do echo "got:$l"; done; echo bye >&2; exit 7'],
        async (proc, seen) => {
          await proc.writeStdin(Buffer.from('one\n'), false);
          await pollUntil('the first line streamed back', () => seen().includes('got:one'));
          await proc.writeStdin(Buffer.from('two\n'), true);
        },
      );
      assert.deepEqual(ran, { stdout: 'got:one\ngot:two\n', stderr: 'bye\n', code: 7, signal: null });

      const payload = randomBytes(700 * 1024);
      const written = await session.writeFile(
        '/workspace/data.bin',
        (async function* () {
          yield payload.subarray(0, 300_000);
          yield payload.subarray(300_000);
        })(),
      );
      assert.equal(written.bytes, payload.length);
      const read = await session.readFile('/workspace/data.bin');
      assert.equal(read.size, payload.length);
      const parts: Buffer[] = [];
      for await (const chunk of read.chunks) parts.push(Buffer.from(chunk));
      assert.ok(Buffer.concat(parts).equals(payload), 'the file came back byte for byte');
      const listed = await session.list('/workspace');
      assert.ok(listed.some((e) => e.name === 'data.bin' && e.size === payload.length));
      const counted = await execIn(session, ['/bin/sh', '-c', 'wc -c < /workspace/data.bin']);
      assert.equal(counted.stdout.trim(), String(payload.length), 'exec sees what the file API wrote');
      await assert.rejects(session.stat('/etc/passwd'), (error: Error & { code?: string }) => {
        assert.equal(error.code, 'POLICY_DENIED');
        return true;
      });

      await close(id, session);
    });

    it('live: pause freezes every process (no CPU), resume lets them run again', LIVE_TEST, async () => {
      const { id, session } = await openLive('live-pause');
      const busy = execIn(session, ['/bin/sh', '-c', 'while :; do :; done']);
      const cpu = () => session.usage().cpuUsageNs;
      const first = cpu();
      assert.notEqual(first, null, 'the instance cgroup CPU usage must be readable to show the freeze');
      // The exec'd busy loop is counted in the instance's cgroup: exec runs inside its limits.
      await pollUntil('the busy loop to use CPU', () => cpu()! > first! + 50_000_000);
      await session.pause();
      const frozenAt = cpu();
      // A measuring window, not synchronisation: a running busy loop would use about the whole window (1.5 s of CPU).
      // Up to 20 ms is tolerated for accounting booked around the freeze; a loop that kept running is far above it.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const usedWhilePaused = cpu()! - frozenAt!;
      assert.ok(
        usedWhilePaused < 20_000_000,
        `a paused busy loop used CPU: ${usedWhilePaused / 1e6} ms in 1.5 s`,
      );
      await session.resume();
      await pollUntil('the busy loop to run again', () => cpu()! > frozenAt! + 50_000_000);
      await close(id, session);
      const ended = await busy;
      assert.equal(ended.signal, 'ESHUTDOWN', 'a command still running when the sandbox ends is told so');
    });

    it(
      'attack: a command exec-ed in a live sandbox gains no capability, uid or privilege',
      LIVE_TEST,
      async () => {
        const { id, session } = await openLive('live-caps');
        const probe = `
import ctypes, json, os
def status(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("Uid", "CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
            out[k] = v.split()[0] if k != "Uid" else v.split()
    return out
libc = ctypes.CDLL(None, use_errno=True)
def attempt(fn):
    try:
        fn()
        return "succeeded"
    except OSError as e:
        return "refused"
def mount_tmpfs():
    if libc.mount(b"none", b"/workspace", b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), "mount")
print(json.dumps({
    "self": status("self"),
    "no_new_privs": libc.prctl(39, 0, 0, 0, 0),
    "parent": status(os.getppid()),
    "setuid0": attempt(lambda: os.setuid(0)),
    "setgid0": attempt(lambda: os.setgid(0)),
    "chown_root": attempt(lambda: os.chown("/workspace", 0, 0)),
    "mount": attempt(mount_tmpfs),
    "chroot": attempt(lambda: os.chroot("/")),
    "write_usr": attempt(lambda: open("/usr/bin/aegis-pwned", "w")),
    "agent_dir": attempt(lambda: open("/agent/pwned", "w")),
}))
`;
        const ran = await execIn(session, ['/usr/bin/python3', '-c', probe]);
        assert.equal(ran.code, 0, ran.stderr);
        const report = JSON.parse(ran.stdout) as Report;
        for (const who of ['self', 'parent'] as const) {
          const s = report[who];
          // gVisor's /proc/<pid>/status has no CapAmb and NoNewPrivs lines; the ones there must be empty.
          for (const cap of ['CapEff', 'CapPrm', 'CapBnd', 'CapAmb']) {
            if (rut.name === 'gvisor' && cap === 'CapAmb') continue;
            assert.equal(s[cap], '0000000000000000', `${who} ${cap}: ${JSON.stringify(s)}`);
          }
          if (rut.name !== 'gvisor') assert.equal(s.NoNewPrivs, '1', `${who}: no_new_privs`);
          assert.ok(
            s.Uid.every((u: string) => u !== '0'),
            `${who} runs as root: ${s.Uid}`,
          );
          // The sandbox's seccomp program (gVisor: the sentry is the kernel the agent talks to; its host side is filtered by runsc).
          if (rut.name !== 'gvisor') assert.equal(s.Seccomp, '2', `${who}: seccomp filter`);
        }
        assert.deepEqual(report.self.Uid, report.parent.Uid, 'the command has its first process uid');
        assert.equal(report.no_new_privs, 1, 'prctl(PR_GET_NO_NEW_PRIVS): set');
        for (const attack of [
          'setuid0',
          'setgid0',
          'chown_root',
          'mount',
          'chroot',
          'write_usr',
          'agent_dir',
        ]) {
          assert.equal(report[attack], 'refused', `${attack}: ${ran.stdout}`);
        }
        await close(id, session);
      },
    );

    it(
      'in-sandbox API: an agent without network calls the LLM gateway on 127.0.0.1:3129; the key never enters',
      LIVE_TEST,
      async () => {
        const settings: LlmSettings = {
          models: {
            default: {
              alias: 'default',
              provider: 'openai',
              kind: 'openai',
              baseUrl: upstream.baseUrl,
              apiKeySecret: 'OPENAI_KEY',
              model: 'up-gpt',
              maxTokens: 64,
              price: { input: 1, output: 2 },
            },
          },
          timeoutMs: 10_000,
          retries: 0,
          maxRetryDelayMs: 1000,
          recordContent: false,
        };
        const llm = createLlmWiring({ settings, secrets: { get: async () => OPENAI_KEY } });
        const agent = await compile(
          'llm-conformance',
          `import json, os, aegis
out = {"sdk": aegis.__file__, "env": {k: os.environ.get(k) for k in ("AEGIS_API_URL", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")}}
out["token_is_key"] = os.environ.get("OPENAI_API_KEY") == os.environ.get("AEGIS_TOKEN")
out["chat"] = aegis.llm.chat([{"role": "user", "content": "hello from ${rut.name}"}], model="default")
try:
    open(aegis.__file__, "a").write("# tampered")
    out["sdk_writable"] = True
except OSError:
    out["sdk_writable"] = False
out["seen"] = open("/proc/self/environ", "rb").read().decode("utf-8", "replace")
aegis.output(out)
`,
          { llm: { models: ['default'] } },
        );
        const executionId = nextId();
        const token = llm.gateway.issue({
          executionId,
          agent: agent.name,
          models: agent.llm!.models,
          budget: agent.llm!.budget,
        });
        upstream.requests.length = 0;
        try {
          const id = await runtime.spawn({
            executionId,
            agent,
            inSandboxApi: {
              handler: llm.handlerFor ? llm.handlerFor(token) : llm.handler,
              env: llmEnv(token),
            },
          });
          const logs: string[] = [];
          const out = await runtime.execute(id, { input: null, onLog: (_s, text) => logs.push(text) });
          assert.equal(out.status, 'succeeded', `${out.reason}\n${logs.join('\n')}`);
          const report = out.output as Report;
          assert.equal(report.sdk, '/opt/aegis/sdk/python/aegis/__init__.py');
          assert.deepEqual(report.env, {
            AEGIS_API_URL: 'http://127.0.0.1:3129',
            OPENAI_BASE_URL: 'http://127.0.0.1:3129/v1',
            ANTHROPIC_BASE_URL: 'http://127.0.0.1:3129',
          });
          assert.equal(report.token_is_key, true);
          assert.equal(report.chat.content, `echo: hello from ${rut.name}`);
          assert.equal(report.sdk_writable, false, 'the SDK is mounted read-only');
          assert.equal(upstream.requests.length, 1);
          assert.equal(upstream.requests[0]!.headers.authorization, `Bearer ${OPENAI_KEY}`);
          assert.ok(
            !JSON.stringify(report).includes(OPENAI_KEY),
            'the provider key never enters the sandbox',
          );
          assert.equal(llm.gateway.usage(executionId)?.calls, 1);
        } finally {
          llm.gateway.revoke(token);
        }
      },
    );
  });
}
