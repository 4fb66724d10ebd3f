/**
 * Adversarial: the filesystem. Agents try to read host secrets, write outside what they were given, fill the
 * host's disk, and get forbidden host paths mounted; every attempt must fail, and the agent's own report of what it
 * saw is asserted field by field.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  chownSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  adversarialRuntimes,
  Harness,
  itOn,
  outcomes,
  REPO_ROOT,
  SANDBOX_USER,
  sandboxOnly,
} from './harness.ts';

for (const [isolation, skip] of adversarialRuntimes()) {
  describe(`adversarial: filesystem (${isolation})`, { concurrency: true, skip }, () => {
    let h: Harness;
    before(() => {
      h = new Harness({ isolation });
    });
    after(() => h.close());

    // Sandbox only: it also asserts /sys is absent; docker mounts the host's sysfs read-only, gVisor a synthetic one.
    sandboxOnly(isolation)(
      'cannot read /etc/shadow, /root, the orchestrator home, /home, /var or the repository',
      async () => {
        const result = await h.run({
          name: 'read-host-secrets',
          input: { home: h.home, repo: REPO_ROOT },
          code: `
targets = ["/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/proc/1/root/etc/shadow", "/proc/self/root/etc/shadow",
           "/../../etc/shadow", "/root/.bashrc", INPUT["home"] + "/aegis.db", INPUT["repo"] + "/package.json"]
dirs = ["/root", "/home", "/var", "/srv", "/opt/aegis/data", "/run/aegis/static", INPUT["home"], INPUT["repo"],
        "/sys", "/boot", "/etc/ssh"]
report({
    "read": {p: attempt(read_text, p) for p in targets},
    "list": {p: attempt(os.listdir, p) for p in dirs},
    "etc": sorted(os.listdir("/etc")),
    "root": sorted(os.listdir("/")),
    "passwd": read_text("/etc/passwd"),
})
`,
        });
        assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
        const { read, list, etc, root, passwd } = result.report;
        for (const [path, outcome] of outcomes(read)) {
          assert.equal(outcome.ok, false, `${path} was readable: ${JSON.stringify(outcome)}`);
          assert.ok(
            ['ENOENT', 'EACCES'].includes(outcome.errno ?? ''),
            `${path}: ${JSON.stringify(outcome)}`,
          );
        }
        for (const [path, outcome] of outcomes(list)) {
          assert.equal(outcome.ok, false, `${path} was listable: ${JSON.stringify(outcome)}`);
          assert.equal(outcome.errno, 'ENOENT', `${path} must not exist inside: ${JSON.stringify(outcome)}`);
        }
        assert.deepEqual(root, [
          'agent',
          'bin',
          'dev',
          'etc',
          'lib',
          'lib64',
          'proc',
          'run',
          'sbin',
          'tmp',
          'usr',
          'workspace',
        ]);
        for (const secret of ['shadow', 'gshadow', 'sudoers', 'ssh', 'security', 'pam.d', 'resolv.conf']) {
          assert.ok(!etc.includes(secret), `/etc/${secret} is visible`);
        }
        // The user database is synthetic: no host account (not even the sandbox's own host user) is listed.
        assert.match(passwd, /^agent:x:1000:1000:/m);
        assert.doesNotMatch(passwd, /aegis-sandbox|:\/root:|\/home\//);
      },
    );

    // Not gvisor: a read grant there answers EACCES (the gofer), not EROFS — refused all the same.
    itOn(
      isolation,
      'sandbox',
      'docker',
    )(
      'cannot write outside /workspace and its grants; /tmp is private; a write grant works; a read grant is EROFS',
      async () => {
        const marker = `aegis-adv-${randomBytes(6).toString('hex')}`;
        // A host file in the host /tmp the agent must not see, and a name the agent writes into its own /tmp.
        const hostTmpFile = join('/tmp', `${marker}-host`);
        writeFileSync(hostTmpFile, 'host secret');
        const agentTmpName = `${marker}-agent`;
        const outDir = join(h.tempDir('grant-write'), 'out');
        mkdirSync(outDir);
        chownSync(outDir, SANDBOX_USER.uid, SANDBOX_USER.gid);
        const inDir = join(h.tempDir('grant-read'), 'in');
        mkdirSync(inDir, { mode: 0o755 });
        writeFileSync(join(inDir, 'data.txt'), 'granted data', { mode: 0o644 });
        try {
          const result = await h.run({
            name: 'write-outside',
            read: [{ source: inDir, target: '/data/in' }],
            write: [{ source: outDir, target: '/mnt/out' }],
            input: { hostTmpFile, agentTmpName },
            code: `
refused = {p: attempt(write_text, p) for p in
           ["/pwned", "/agent/pwned", "/agent/main.py", "/usr/pwned", "/usr/bin/python3", "/etc/pwned", "/etc/passwd",
            "/run/pwned", "/run/aegis/pwned", "/run/aegis/input.json", "/bin/pwned", "/proc/pwned",
            "/proc/sysrq-trigger", "/proc/sys/vm/drop_caches", "/proc/sys/kernel/core_pattern"]}
refused["mkdir /newdir"] = attempt(os.mkdir, "/newdir")
refused["chmod /agent"] = attempt(os.chmod, "/agent", 0o777)
refused["rename output.json"] = attempt(os.rename, "/run/aegis/output.json", "/run/aegis/moved.json")
granted_read = {
    "read": attempt(read_text, "/data/in/data.txt"),
    "write": attempt(write_text, "/data/in/pwned"),
    "overwrite": attempt(write_text, "/data/in/data.txt"),
    "unlink": attempt(os.unlink, "/data/in/data.txt"),
    "chmod": attempt(os.chmod, "/data/in", 0o777),
}
report({
    "refused": refused,
    "workspace": attempt(write_text, "/workspace/ok.txt", "fine"),
    "tmpWrite": attempt(write_text, "/tmp/" + INPUT["agentTmpName"], "agent tmp"),
    "tmpListing": sorted(os.listdir("/tmp")),
    "hostTmpFileVisible": os.path.exists(INPUT["hostTmpFile"]),
    "grantedWrite": attempt(write_text, "/mnt/out/result.txt", "from the agent"),
    "grantedRead": granted_read,
})
`,
          });
          assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
          const r = result.report;
          for (const [what, outcome] of outcomes(r['refused'])) {
            assert.equal(outcome.ok, false, `${what} succeeded`);
            assert.ok(
              ['EROFS', 'EACCES', 'EPERM', 'EBUSY', 'ENOENT'].includes(outcome.errno ?? ''),
              `${what}: ${outcome.error}`,
            );
          }
          assert.equal(r['refused']['/usr/bin/python3'].errno, 'EROFS');
          assert.equal(r['refused']['/agent/main.py'].errno, 'EROFS');
          assert.equal(r['refused']['/etc/passwd'].errno, 'EROFS');
          assert.equal(r['refused']['/pwned'].errno, 'EROFS');
          // /workspace and /tmp are writable, /tmp is the sandbox's own: the host's /tmp file is invisible inside and
          // what the agent wrote to its /tmp never reaches the host.
          assert.deepEqual(r['workspace'], { ok: true, value: true });
          assert.deepEqual(r['tmpWrite'], { ok: true, value: true });
          assert.deepEqual(r['tmpListing'], [agentTmpName]);
          assert.equal(r['hostTmpFileVisible'], false);
          assert.equal(existsSync(join('/tmp', agentTmpName)), false, "the agent's /tmp leaked to the host");
          assert.equal(readFileSync(hostTmpFile, 'utf8'), 'host secret');
          // The write grant is the one way out, as the sandbox uid.
          assert.deepEqual(r['grantedWrite'], { ok: true, value: true });
          assert.equal(readFileSync(join(outDir, 'result.txt'), 'utf8'), 'from the agent');
          assert.equal(statSync(join(outDir, 'result.txt')).uid, SANDBOX_USER.uid);
          // The read grant is readable and nothing else.
          assert.deepEqual(r['grantedRead']['read'], { ok: true, value: 'granted data' });
          for (const op of ['write', 'overwrite', 'unlink', 'chmod']) {
            assert.equal(
              r['grantedRead'][op].errno,
              'EROFS',
              `read grant ${op}: ${JSON.stringify(r['grantedRead'][op])}`,
            );
          }
          assert.equal(readFileSync(join(inDir, 'data.txt'), 'utf8'), 'granted data');
          assert.equal(existsSync(join(inDir, 'pwned')), false);
        } finally {
          rmSync(hostTmpFile, { force: true });
        }
      },
    );

    sandboxOnly(isolation)(
      'disk: /workspace, /tmp and /dev/shm stop at `disk: 4Mi` with ENOSPC; /dev is read-only',
      async () => {
        const result = await h.run({
          name: 'fill-disk',
          resources: { disk: '4Mi' },
          code: `
def fill(path, mib=8):
    chunk = b"x" * (1 << 20)
    written = 0
    try:
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(chunk)
                f.flush()
                written += 1
        return {"ok": True, "writtenMiB": written}
    except OSError as e:
        return {"ok": False, "errno": errno.errorcode.get(e.errno), "writtenMiB": written}
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass

report({
    "workspace": fill("/workspace/fill"),
    "tmp": fill("/tmp/fill"),
    "devshm": fill("/dev/shm/fill"),
    "dev": attempt(write_text, "/dev/fill"),
    "devMkdir": attempt(os.mkdir, "/dev/newdir"),
})
`,
        });
        assert.equal(result.record.status, 'succeeded', Harness.transcript(result));
        const r = result.report;
        for (const where of ['workspace', 'tmp', 'devshm']) {
          assert.equal(r[where].ok, false, `${where}: wrote 8 MiB past disk: 4Mi`);
          assert.equal(r[where].errno, 'ENOSPC', `${where}: ${JSON.stringify(r[where])}`);
          assert.ok(r[where].writtenMiB <= 4, `${where}: ${JSON.stringify(r[where])}`);
        }
        assert.equal(r['dev'].errno, 'EROFS', `/dev is writable: ${JSON.stringify(r['dev'])}`);
        assert.equal(r['devMkdir'].errno, 'EROFS', `/dev is writable: ${JSON.stringify(r['devMkdir'])}`);
      },
    );

    sandboxOnly(isolation)(
      'cannot fill the host disk through /run/aegis/output.json (bounded by the memory limit)',
      async () => {
        const result = await h.run({
          name: 'fill-output',
          resources: { disk: '4Mi', memory: '64Mi' },
          code: `
chunk = b"x" * (1 << 20)
with open(os.environ["AEGIS_OUTPUT"], "wb") as f:
    for i in range(1, 257):
        f.write(chunk)
        f.flush()
        print(f"wrote {i}", file=sys.stderr, flush=True)
report({"wroteMiB": 256})
`,
        });
        const written = result.logs
          .map((l) => /^wrote (\d+)$/.exec(l.text)?.[1])
          .filter((n) => n !== undefined)
          .map(Number);
        const most = Math.max(0, ...written);
        assert.ok(most < 64, `the agent wrote ${most} MiB to the host through output.json`);
        assert.equal(result.record.status, 'oom', Harness.transcript(result));
        assert.ok(result.record.violations.some((v) => v.rule === 'memory'));
      },
    );

    describe('forbidden grants are refused with POLICY_DENIED before anything runs', {
      concurrency: true,
    }, () => {
      const cases: [string, () => string][] = [
        ['/etc', () => '/etc'],
        ['/etc/shadow', () => '/etc/shadow'],
        ['/root', () => '/root'],
        ['/proc', () => '/proc'],
        ['/sys/fs/cgroup', () => '/sys/fs/cgroup'],
        ['/dev', () => '/dev'],
        ['the orchestrator home (AEGIS_HOME)', () => h.home],
        [
          'a directory inside AEGIS_HOME',
          () => {
            mkdirSync(join(h.home, 'keys'), { recursive: true });
            return join(h.home, 'keys');
          },
        ],
        ['an ancestor of AEGIS_HOME', () => dirname(h.home)],
        ['the scratch root', () => h.ctx.sandbox.scratchRoot],
        [
          'a symlink to /etc',
          () => {
            const link = join(h.tempDir('symlink'), 'innocent');
            symlinkSync('/etc', link);
            return link;
          },
        ],
        ['a path that walks into /etc via ..', () => `${h.tempDir('dotdot')}/../../etc`],
      ];
      for (const [what, source] of cases) {
        for (const key of ['read', 'write'] as const) {
          it(`${key}: ${what}`, async () => {
            const path = source();
            const { error, record } = await h.refuse({
              name: 'forbidden-grant',
              code: 'report({"ran": True})\n',
              ...(key === 'read'
                ? { read: [{ source: path, target: '/mnt/x' }] }
                : { write: [{ source: path, target: '/mnt/x' }] }),
            });
            assert.equal(error.code, 'POLICY_DENIED', error.message);
            assert.match(error.message, /may never be mounted into a (sandbox|container)/);
            assert.equal(record.status, 'failed');
            assert.match(record.reason ?? '', /^not started: /);
            assert.equal(record.startedAt, null);
          });
        }
      }

      it('/var/run/docker.sock: refused whether or not it exists', async () => {
        const { error } = await h.refuse({
          name: 'docker-sock',
          code: 'report({"ran": True})\n',
          read: [{ source: '/var/run/docker.sock', target: '/mnt/docker.sock' }],
        });
        if (existsSync('/var/run/docker.sock')) assert.equal(error.code, 'POLICY_DENIED', error.message);
        else assert.match(`${error.code} ${error.message}`, /MANIFEST_INVALID .*does not exist/);
      });
    });
  });
}
