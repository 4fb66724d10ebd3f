import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AegisError } from '../domain/errors.ts';
import { compileManifest } from '../domain/manifest/compiled.ts';
import { AgentManifest } from '../domain/manifest/schema.ts';
import { compileNetworkPolicy } from '../domain/policy/network-rules.ts';
import { FakeRuntime } from './fakes/fake-runtime.ts';
import { ManualClock } from './fakes/manual-clock.ts';
import { MemoryAuditLog } from './fakes/memory-audit-log.ts';
import { MemorySecretStore, sequenceRandom } from './fakes/memory-secret-store.ts';
import { MemoryExecutionStore } from './fakes/memory-store.ts';
import type { NetworkDecisionEvent, ProcessIdentity } from './ports.ts';
import { reconcileOrphans, runAgent, updateNetworkPolicy } from './run-agent.ts';

const agent = compileManifest(
  AgentManifest.parse({
    apiVersion: 'aegis.dev/v1',
    kind: 'Agent',
    metadata: { name: 'demo', version: '1.2.3' },
    spec: { runtime: { language: 'python', entrypoint: 'main.py' } },
  }),
  '/srv/agents/demo',
);

const kinds = (audit: MemoryAuditLog, id: string) =>
  audit.entries.filter((e) => e.execution === id).map((e) => e.kind);

function setup(alive = true) {
  const runtime = new FakeRuntime();
  const store = new MemoryExecutionStore();
  const audit = new MemoryAuditLog();
  let n = 0;
  const identity: ProcessIdentity = {
    current: () => ({ host: 'test', pid: 1, startTicks: 1 }),
    isAlive: () => alive,
  };
  const deps = {
    runtime,
    store,
    clock: new ManualClock(1_700_000_000_000),
    ids: { executionId: () => `ex_${++n}` },
    identity,
    audit,
  };
  return { runtime, store, audit, deps };
}

describe('runAgent', () => {
  it('records the execution, streams and persists logs, and stores the terminal result', async () => {
    const { runtime, store, deps } = setup();
    runtime.script = {
      logs: [
        { stream: 'stdout', text: 'hello' },
        { stream: 'stderr', text: 'progress' },
      ],
    };
    const seen: string[] = [];
    const record = await runAgent(deps, { agent, input: { a: 1 }, onLog: (_s, text) => seen.push(text) });
    assert.equal(record.status, 'succeeded');
    assert.deepEqual(record.output, { echo: { a: 1 } });
    assert.equal(record.agent.version, '1.2.3');
    assert.deepEqual(seen, ['hello', 'progress']);
    const logs = await store.readLogs(record.id);
    assert.deepEqual(
      logs.map((l) => [l.seq, l.stream, l.text]),
      [
        [1, 'stdout', 'hello'],
        [2, 'stderr', 'progress'],
      ],
    );
    assert.equal(runtime.spawned[0]?.executionId, record.id);
  });

  it('audits created → started → finished, and the ledger verifies', async () => {
    const { audit, deps } = setup();
    const record = await runAgent(deps, { agent });
    assert.deepEqual(kinds(audit, record.id), [
      'execution.created',
      'execution.started',
      'execution.finished',
    ]);
    const [created, , finished] = audit.entries;
    assert.equal(created?.data['agent'], 'demo');
    assert.equal(created?.data['runtime'], 'fake');
    assert.deepEqual(finished?.data, { status: 'succeeded', exitCode: 0, reason: null, durationMs: 5 });
    assert.equal((await audit.verify()).ok, true);
  });

  it('records the claim fence of a clustered run in execution.started and execution.finished', async () => {
    const { audit, deps } = setup();
    const record = await runAgent(deps, { agent, fence: 7 });
    const of = (kind: string) => audit.entries.find((e) => e.execution === record.id && e.kind === kind);
    assert.equal(of('execution.started')?.data['fence'], 7);
    assert.equal(of('execution.finished')?.data['fence'], 7);
  });

  it('audits each granted mount (source, target, mode) before the agent starts', async () => {
    const { audit, deps } = setup();
    const withMounts = compileManifest(
      AgentManifest.parse({
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name: 'mounts', version: '1.0.0' },
        spec: {
          runtime: { language: 'python', entrypoint: 'main.py' },
          security: { filesystem: { read: ['/srv/data'], write: [{ source: 'out', target: '/mnt/out' }] } },
        },
      }),
      '/srv/agents/mounts',
    );
    const record = await runAgent(deps, { agent: withMounts });
    const entries = await audit.list(record.id);
    assert.deepEqual(
      entries.map((e) => e.kind),
      ['execution.created', 'policy.mount', 'policy.mount', 'execution.started', 'execution.finished'],
    );
    assert.deepEqual(
      entries.filter((e) => e.kind === 'policy.mount').map((e) => e.data),
      [
        { source: '/srv/data', target: '/srv/data', mode: 'ro' },
        { source: '/srv/agents/mounts/out', target: '/mnt/out', mode: 'rw' },
      ],
    );
  });

  it('does not run the agent when the ledger cannot be written (fail closed), and releases the instance', async () => {
    const { runtime, store, deps } = setup();
    class BrokenLedger extends MemoryAuditLog {
      override async flush(): Promise<void> {
        throw new AegisError('INTERNAL', 'the audit ledger cannot be written: disk full');
      }
    }
    let started = false;
    await assert.rejects(
      runAgent({ ...deps, audit: new BrokenLedger() }, { agent, onStarted: () => (started = true) }),
      /disk full/,
    );
    assert.equal(started, false);
    const instance = `fake_${runtime.spawned[0]?.executionId}`;
    assert.equal(runtime.status(instance), 'terminated');
    const [record] = await store.listExecutions();
    assert.equal(record?.status, 'failed');
    assert.match(record?.reason ?? '', /disk full/);
  });

  it('marks a refused spawn as failed with the reason and rethrows the same error', async () => {
    const { runtime, store, deps } = setup();
    runtime.script = { refuse: new AegisError('LIMIT_UNENFORCEABLE', 'no cgroups here') };
    await assert.rejects(runAgent(deps, { agent }), (error: unknown) => {
      assert.ok(error instanceof AegisError);
      assert.equal(error.code, 'LIMIT_UNENFORCEABLE');
      return true;
    });
    const [record] = await store.listExecutions();
    assert.equal(record?.status, 'failed');
    assert.match(record?.reason ?? '', /not started: no cgroups here/);
  });

  it('audits a refused spawn as created → finished (failed, not started)', async () => {
    const { runtime, audit, deps } = setup();
    runtime.script = { refuse: new AegisError('LIMIT_UNENFORCEABLE', 'no cgroups here') };
    await assert.rejects(runAgent(deps, { agent }));
    assert.deepEqual(kinds(audit, 'ex_1'), ['execution.created', 'execution.finished']);
    assert.equal(audit.entries[1]?.data['status'], 'failed');
    assert.match(String(audit.entries[1]?.data['reason']), /not started: no cgroups here/);
  });

  it('passes cancellation through: an aborted run ends as killed', async () => {
    const { runtime, deps } = setup();
    runtime.script = { hang: true };
    const controller = new AbortController();
    const running = runAgent(deps, { agent, signal: controller.signal });
    controller.abort();
    const record = await running;
    assert.equal(record.status, 'killed');
  });

  it('stores limit violations and non-success outcomes as the runtime names them', async () => {
    const { runtime, deps } = setup();
    runtime.script = {
      outcome: {
        status: 'oom',
        exitCode: 137,
        reason: 'out of memory',
        violations: [
          { kind: 'limit', rule: 'memory', message: 'memory: 1 process killed', count: 1 },
          { kind: 'limit', rule: 'pids', message: 'pids: 3 forks refused' },
        ],
      },
    };
    const { audit } = setup();
    const record = await runAgent({ ...deps, audit }, { agent });
    assert.equal(record.status, 'oom');
    assert.equal(record.exitCode, 137);
    assert.equal(record.violations[0]?.rule, 'memory');
    const hits = (await audit.list(record.id)).filter((e) => e.kind === 'limit.hit').map((e) => e.data);
    assert.deepEqual(hits, [
      { rule: 'memory', count: 1 },
      { rule: 'pids', count: null },
    ]);
    assert.equal(audit.entries.at(-1)?.data['status'], 'oom');
  });
});

describe('runAgent: egress', () => {
  const withNetwork = compileManifest(
    AgentManifest.parse({
      apiVersion: 'aegis.dev/v1',
      kind: 'Agent',
      metadata: { name: 'net', version: '1.0.0' },
      spec: {
        runtime: { language: 'python', entrypoint: 'main.py' },
        security: { network: { allow: ['api.example.com:443'] } },
      },
    }),
    '/srv/agents/net',
  );
  const event = (over: Partial<NetworkDecisionEvent>): NetworkDecisionEvent => ({
    requested: 'api.example.com:443',
    host: 'api.example.com',
    resolved: ['93.184.215.14'],
    address: '93.184.215.14',
    port: 443,
    protocol: 'connect',
    rule: 'api.example.com:443',
    verdict: 'allow',
    reason: 'matches allow rule api.example.com:443',
    message: 'network: allowed connect to api.example.com:443 — matches allow rule api.example.com:443',
    bytesUp: 10,
    bytesDown: 20,
    ...over,
  });
  const denied = (requested: string) =>
    event({
      requested,
      host: requested.split(':')[0]!,
      resolved: [],
      address: null,
      port: Number(requested.split(':')[1]),
      protocol: 'http',
      rule: 'default-deny',
      verdict: 'deny',
      reason: 'not in allow-list',
      message: `network: denied connect to ${requested} — not in allow-list`,
      bytesUp: 0,
      bytesDown: 0,
    });

  it('records the rules before the start, every decision in the ledger, and denials as counted violations', async () => {
    const { runtime, audit, deps } = setup();
    runtime.script = {
      network: [event({}), denied('10.0.0.5:22'), denied('10.0.0.5:22'), denied('evil.example:80')],
    };
    const record = await runAgent(deps, { agent: withNetwork });
    assert.deepEqual(kinds(audit, record.id), [
      'execution.created',
      'policy.network',
      'execution.started',
      'network.connect',
      'network.connect',
      'network.connect',
      'network.connect',
      'execution.finished',
    ]);
    const entries = await audit.list(record.id);
    assert.deepEqual(entries[1]!.data, { allow: ['api.example.com:443'], deny: [] });
    assert.deepEqual(entries[3]!.data, {
      requested: 'api.example.com:443',
      host: 'api.example.com',
      resolved: ['93.184.215.14'],
      address: '93.184.215.14',
      port: 443,
      protocol: 'connect',
      rule: 'api.example.com:443',
      verdict: 'allow',
      reason: 'matches allow rule api.example.com:443',
      error: null,
      bytesUp: 10,
      bytesDown: 20,
    });
    assert.deepEqual(record.violations, [
      {
        kind: 'network',
        rule: 'default-deny',
        message: 'network: denied connect to 10.0.0.5:22 — not in allow-list',
        count: 2,
      },
      {
        kind: 'network',
        rule: 'default-deny',
        message: 'network: denied connect to evil.example:80 — not in allow-list',
        count: 1,
      },
    ]);
  });

  it('updateNetworkPolicy applies new rules to a live instance and records them; refuses for unknown executions', async () => {
    const { runtime, audit, deps } = setup();
    await runtime.spawn({ executionId: 'ex_live', agent: withNetwork });
    const compiled = compileNetworkPolicy({ allow: ['api.example.com:443', '*.example.org'] });
    assert.ok(compiled.ok);
    await updateNetworkPolicy(deps, 'ex_live', compiled.policy);
    assert.equal(runtime.policies.get('ex_live'), compiled.policy);
    assert.deepEqual(audit.entries.at(-1)?.data, {
      allow: ['api.example.com:443', '*.example.org'],
      deny: [],
    });
    await assert.rejects(updateNetworkPolicy(deps, 'ex_gone', compiled.policy), { code: 'NOT_FOUND' });
  });
});

describe('reconcileOrphans', () => {
  it('marks unfinished executions of dead owners as killed and reports runtime leftovers', async () => {
    const { runtime, store, deps } = setup(false);
    runtime.script = { hang: true };
    const controller = new AbortController();
    const pending = runAgent(deps, { agent, signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 5));
    runtime.orphans = ['ex_1', 'ex_ghost'];
    const result = await reconcileOrphans(deps);
    assert.deepEqual(result.settled, ['ex_1']);
    assert.deepEqual(result.reapedWithoutRecord, ['ex_ghost']);
    const record = await store.getExecution('ex_1');
    assert.equal(record?.status, 'killed');
    assert.match(record?.reason ?? '', /orchestrator-exited/);
    const finished = (await deps.audit.list('ex_1')).find((e) => e.kind === 'execution.finished');
    assert.equal(finished?.data['status'], 'killed');
    assert.match(String(finished?.data['reason']), /orchestrator-exited/);
    controller.abort();
    await pending;
  });

  it('leaves executions of live owners alone', async () => {
    const { store, deps } = setup(true);
    await store.createExecution({
      id: 'ex_live',
      agent: { name: 'demo', version: '1' },
      runtime: 'fake',
      status: 'running',
      exitCode: null,
      reason: null,
      input: null,
      output: null,
      violations: [],
      createdAt: new Date().toISOString(),
      startedAt: null,
      finishedAt: null,
      durationMs: null,
      owner: { host: 'test', pid: 2, startTicks: 2 },
    });
    const result = await reconcileOrphans(deps);
    assert.deepEqual(result.settled, []);
    assert.equal((await store.getExecution('ex_live'))?.status, 'running');
  });
});

describe('runAgent with secrets', () => {
  const secretAgent = compileManifest(
    AgentManifest.parse({
      apiVersion: 'aegis.dev/v1',
      kind: 'Agent',
      metadata: { name: 'demo', version: '1.2.3' },
      spec: {
        runtime: { language: 'python', entrypoint: 'main.py' },
        secrets: [{ name: 'TOKEN', env: 'API_TOKEN', hosts: ['127.0.0.1:8080'] }],
      },
    }),
    '/srv/agents/demo',
  );
  const VALUE = 'sk-very-secret-value';

  it('passes placeholders to the runtime, redacts values everywhere, and records secret.use', async () => {
    const { runtime, store, audit, deps } = setup();
    runtime.script = {
      logs: [{ stream: 'stdout', text: `leak ${VALUE}` }],
      outcome: { output: { [VALUE]: [`x${VALUE}`] }, reason: `boom ${VALUE}` },
    };
    const seen: string[] = [];
    const record = await runAgent(
      { ...deps, secrets: new MemorySecretStore({ TOKEN: VALUE }), random: sequenceRandom() },
      { agent: secretAgent, onLog: (_s, text) => seen.push(text) },
    );
    const spec = runtime.spawned[0]!;
    const placeholder = `aegis-secret:TOKEN:${'1'.padStart(32, '0')}`;
    assert.deepEqual(spec.secrets?.env, { API_TOKEN: placeholder });
    assert.deepEqual(spec.secrets?.placeholders.get(placeholder), { name: 'TOKEN', value: VALUE });
    spec.secrets?.onSecretUse({
      name: 'TOKEN',
      host: '127.0.0.1',
      port: 8080,
      injected: true,
      where: 'header',
    });
    assert.deepEqual(seen, ['leak [REDACTED:TOKEN]']);
    assert.deepEqual(record.output, { '[REDACTED:TOKEN]': ['x[REDACTED:TOKEN]'] });
    assert.equal(record.reason, 'boom [REDACTED:TOKEN]');
    const logs = await store.readLogs(record.id);
    assert.ok(!JSON.stringify(logs).includes(VALUE));
    assert.ok(!JSON.stringify(audit.entries).includes(VALUE));
    const use = audit.entries.find((e) => e.kind === 'secret.use');
    assert.deepEqual(use?.data, {
      name: 'TOKEN',
      host: '127.0.0.1',
      port: 8080,
      injected: true,
      where: 'header',
      reason: null,
    });
  });

  it('fails before spawning when a secret is missing, naming `aegis secret set`', async () => {
    const { runtime, store, deps } = setup();
    await assert.rejects(
      runAgent(
        { ...deps, secrets: new MemorySecretStore(), random: sequenceRandom() },
        { agent: secretAgent },
      ),
      (error: unknown) =>
        error instanceof AegisError &&
        error.code === 'NOT_FOUND' &&
        /aegis secret set TOKEN/.test(error.message),
    );
    assert.equal(runtime.spawned.length, 0);
    const [record] = await store.listExecutions();
    assert.equal(record?.status, 'failed');
    assert.match(record?.reason ?? '', /^not started: .*aegis secret set TOKEN/);
  });
});

describe('runAgent: a code agent with spec.execution.validation (checked once, after it succeeded)', () => {
  const validated = (validation: unknown[]) =>
    compileManifest(
      AgentManifest.parse({
        apiVersion: 'aegis.dev/v1',
        kind: 'Agent',
        metadata: { name: 'researcher', version: '1.0.0', description: 'Answers with sources.' },
        spec: { runtime: { language: 'python', entrypoint: 'main.py' }, execution: { validation } },
      }),
      '/srv/agents/researcher',
    );
  const loopWith = (judged: unknown[], score: unknown) =>
    ({
      live: undefined,
      tools: undefined,
      jsonSchema: (schema: Readonly<Record<string, unknown>>, value: unknown) =>
        schema['type'] === 'object' && (typeof value !== 'object' || value === null)
          ? 'not an object'
          : undefined,
      sha256Hex: (text: string) => `sha:${text.length}`,
      judge: {
        run: async (agent: string, input: unknown) => {
          judged.push({ agent, input });
          return { status: 'succeeded', output: score };
        },
      },
    }) as unknown as NonNullable<Parameters<typeof runAgent>[0]['loop']>;

  it('passes: the judge gets {output, task, input}; one agent.iteration entry with the verdicts', async () => {
    const { audit, deps } = setup();
    const judged: unknown[] = [];
    const record = await runAgent(
      { ...deps, loop: loopWith(judged, { score: 0.9 }) },
      {
        agent: validated([
          { exit_code: 0 },
          { json_schema: { type: 'object' } },
          { regex: 'echo' },
          { judge: { agent: 'grader' } },
        ]),
        input: { q: 1 },
      },
    );
    assert.equal(record.status, 'succeeded', record.reason ?? '');
    assert.deepEqual(judged, [
      {
        agent: 'grader',
        input: { output: { echo: { q: 1 } }, task: 'Answers with sources.', input: { q: 1 } },
      },
    ]);
    const iteration = audit.entries.find((e) => e.execution === record.id && e.kind === 'agent.iteration');
    assert.deepEqual(((iteration?.data ?? {}) as { verdicts: unknown }).verdicts, [
      { validator: 'exit_code', passed: true },
      { validator: 'json_schema', passed: true },
      { validator: 'regex', passed: true },
      { validator: 'judge', passed: true },
    ]);
    assert.deepEqual(kinds(audit, record.id).slice(-2), ['agent.iteration', 'execution.finished']);
  });

  it("fails: a low score ends the execution failed, reason `validation: judge …` with the judge's reason, audited", async () => {
    const { audit, deps } = setup();
    const record = await runAgent(
      { ...deps, loop: loopWith([], { score: 0, reason: 'cites no source' }) },
      { agent: validated([{ regex: 'echo' }, { judge: { agent: 'grader', threshold: 1 } }]), input: 'x' },
    );
    assert.equal(record.status, 'failed');
    assert.equal(record.reason, 'validation: judge: judge grader scored 0, below 1 — cites no source');
    assert.deepEqual(record.output, { echo: 'x' });
    const iteration = audit.entries.find((e) => e.execution === record.id && e.kind === 'agent.iteration');
    assert.equal(((iteration?.data ?? {}) as { passed: boolean }).passed, false);
    const finished = audit.entries.find((e) => e.execution === record.id && e.kind === 'execution.finished');
    assert.equal(((finished?.data ?? {}) as { status: string }).status, 'failed');
    assert.match(
      String(((finished?.data ?? {}) as { reason: string }).reason),
      /^validation: judge: judge grader scored 0/,
    );
  });

  it('does not validate a run that did not succeed, and refuses when nothing can validate (no loop wiring)', async () => {
    const { runtime, audit, deps } = setup();
    runtime.script = { outcome: { status: 'failed', exitCode: 3, reason: 'exit code 3' } };
    const judged: unknown[] = [];
    const record = await runAgent(
      { ...deps, loop: loopWith(judged, 1) },
      { agent: validated([{ judge: { agent: 'grader' } }]) },
    );
    assert.equal(record.reason, 'exit code 3');
    assert.deepEqual(judged, []);
    assert.ok(!kinds(audit, record.id).includes('agent.iteration'));
    runtime.script = {};
    await assert.rejects(runAgent(deps, { agent: validated([{ regex: 'x' }]) }), (error: unknown) => {
      assert.ok(error instanceof AegisError && error.code === 'RUNTIME_UNAVAILABLE');
      return true;
    });
  });

  it('the manifest: a code agent may set only validation (mode iterative, maxIterations, maxToolCalls refused, located)', () => {
    const parsed = AgentManifest.safeParse({
      apiVersion: 'aegis.dev/v1',
      kind: 'Agent',
      metadata: { name: 'x' },
      spec: {
        runtime: { language: 'python', entrypoint: 'main.py' },
        execution: { mode: 'iterative', maxIterations: 3, maxToolCalls: 9, validation: [{ regex: 'a' }] },
      },
    });
    assert.equal(parsed.success, false);
    assert.deepEqual(
      parsed.error?.issues.map((issue) => issue.path.join('.')),
      ['spec.execution.mode', 'spec.execution.maxIterations', 'spec.execution.maxToolCalls'],
    );
    assert.match(parsed.error?.issues[0]?.message ?? '', /validated once/);
    assert.equal(validated([]).validation, undefined);
    assert.deepEqual(validated([{ regex: 'a' }]).validation, [{ regex: 'a' }]);
  });
});
