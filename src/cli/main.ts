/**
 * `aegis` command line. Exit codes (README; output.ts derives them from ERROR_CODES): 0 succeeded · 1 agent
 * failed/timeout/oom/killed · 2 usage, invalid manifest or a refusal before anything ran · 3 this host can't sandbox
 * what was asked · 4 the audit ledger was tampered with · 75 try again later · 77 key missing or lacking scope ·
 * 70 internal error. With `-o json` every command prints the REST shapes of /openapi.json, errors included.
 */

import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { isClusterArchiveFile } from '../adapters/audit/cluster-archive-file.ts';
import { verifyAuditExportFile } from '../adapters/audit/export-file.ts';
import type { SqliteAuditLedger } from '../adapters/audit/sqlite-ledger.ts';
import { systemClock } from '../adapters/clock/system-clock.ts';
import { loadConfig as loadConfigFile } from '../adapters/config/config-file.ts';
import { formatDoctorReport, runDoctor } from '../adapters/host/doctor.ts';
import { SortableIds } from '../adapters/ids/ids.ts';
import { type HostFacts, hostChecks } from '../adapters/manifest/host-checks.ts';
import { loadManifestFile } from '../adapters/manifest/yaml-loader.ts';
import { memoryWiring, openCortex, openEmbedder, openVectorStore } from '../adapters/memory/wiring.ts';
import { DockerEngine } from '../adapters/runtimes/docker/engine.ts';
import { importRootfs } from '../adapters/runtimes/docker/images.ts';
import { localSwarmWiring } from '../adapters/swarm/wiring.ts';
import { createToolsHandler } from '../adapters/tools/http-handler.ts';
import { decodeCursor, encodeCursor } from '../api/cursor.ts';
import {
  ExecutionStatus as ExecutionStatusSchema,
  executionView,
  type Validation,
} from '../api/http/schemas.ts';
import { allExecutions } from '../app/executions.ts';
import type { ToolsWiring } from '../app/live-sandboxes.ts';
import type { AuditLog, ExecutionStore, LiveRuntime } from '../app/ports.ts';
import { type DeclarativeWiring, reconcileOrphans, runAgent } from '../app/run-agent.ts';
import { ToolGateway } from '../app/tools.ts';
import { AUDIT_KINDS } from '../domain/audit/entry.ts';
import { type AuditExportRecord, formatExportLine } from '../domain/audit/export-format.ts';
import { missingEntries } from '../domain/audit/store-check.ts';
import type { AuditTampered, AuditVerification } from '../domain/audit/verify.ts';
import { AegisError, formatError } from '../domain/errors.ts';
import { type ExecutionRecord, isTerminal, type LogStream } from '../domain/execution.ts';
import { jsonSchemaViolation } from '../domain/loop/json-schema.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import { agentManifestJsonSchema, Isolation } from '../domain/manifest/schema.ts';
import { secretBindingNotes } from '../domain/secrets/secret-ref.ts';
import { isBuiltin } from '../domain/tools.ts';
import { formatBytes } from '../domain/units.ts';
import {
  AEGIS_VERSION,
  loadConfig,
  openAuditContext,
  openLlmWiring,
  openLocalContext,
  openSecretStore,
  openStoreContext,
} from '../main.ts';
import {
  commandAuditExportCluster,
  commandAuditShowCluster,
  commandAuditVerifyCluster,
} from './audit-cluster.ts';
import { registerCompletionCommand } from './completion.ts';
import { parseInputFlags } from './input.ts';
import {
  configureOutput,
  debug,
  describeExecution,
  EXIT,
  green,
  llmUsageCell,
  note,
  type OutputFormat,
  outputOption,
  printJson,
  printLogLine,
  printResult,
  printTable,
  reportError,
  wantsJson,
  warn,
} from './output.ts';
import { createProgress } from './progress.ts';
import { registerPruneCommand } from './prune.ts';
import {
  addServerOptions,
  needsServer,
  registerRemoteCommands,
  remoteLogs,
  remotePs,
  serverFrom,
} from './remote/index.ts';
import { registerServerCommand } from './server.ts';

export { EXIT } from './output.ts';

/**
 * What `run` and `validate` check on this host before anything is recorded (host-checks.ts). `thorough` (validate)
 * also asks the doctor whether the default isolation works; `run` leaves that to the runtime, which says exactly
 * what is missing.
 */
async function hostFacts(thorough: boolean): Promise<HostFacts> {
  const config = loadConfig();
  debug(`AEGIS_HOME ${config.home}`);
  let runtimes: Readonly<Record<string, boolean>> | undefined;
  let secretNames: Set<string> | undefined;
  try {
    secretNames = new Set((await openSecretStore(config).list()).map((secret) => secret.name));
  } catch {
    secretNames = undefined; // an unreadable secret store is reported by the run that needs it
  }
  return {
    protectedPaths: [config.home],
    isolationAvailable: (isolation) => {
      if (isolation === 'sandbox' && !thorough) return true;
      runtimes ??= runDoctor().runtimes;
      // auto: the router picks the strongest available runtime that enforces every rule (capabilities.ts).
      if (isolation === 'auto') return Object.values(runtimes).some(Boolean);
      return runtimes[isolation] === true;
    },
    ...(secretNames === undefined ? {} : { secretNames }),
  };
}

/** What `aegis run` gives a declarative agent's loop: the local runtime's live instances and a tool gateway. */
function localLoopWiring(runtime: LiveRuntime, audit: AuditLog): DeclarativeWiring {
  const sha256Hex = (text: string) => createHash('sha256').update(text).digest('hex');
  return {
    live: runtime,
    tools: new ToolGateway({ audit, clock: systemClock, sha256Hex }),
    jsonSchema: jsonSchemaViolation,
    sha256Hex,
  };
}

/**
 * `aegis run`'s tools: a declarative agent's loop, and for a code agent with spec.tools the in-sandbox `/v1/tools`
 * (MCP tools are the server's config: locally only built-ins, which need the live instance `loop` gives).
 */
function localToolsWiring(agent: CompiledAgent, runtime: LiveRuntime, audit: AuditLog) {
  const builtins = (agent.tools ?? []).some((grant) => isBuiltin(grant.name));
  // A code agent's spec.execution.validation needs the loop's validators (json_schema) but no live instance.
  if (!agent.task && !builtins)
    return agent.validation?.length ? { loop: localLoopWiring(runtime, audit) } : {};
  const loop = localLoopWiring(runtime, audit);
  if (agent.task) return { loop };
  const tools: ToolsWiring = {
    gateway: loop.tools,
    handlerFor: createToolsHandler,
    newToken: () => `aegis_tk_${randomBytes(24).toString('hex')}`,
  };
  return { loop, tools };
}

/**
 * `aegis run`'s agent memory: the agent's own scope, no sharing (no deployed agents here), in the SQLite store of
 * $AEGIS_HOME (`cortex.db`, the file a local `aegis server` uses too) with the config's `memory.embedder` — so a
 * second run of an agent recalls the first. The caller closes `store`.
 */
async function localMemoryWiring(ctx: {
  config: { home: string };
  audit: AuditLog;
  secrets: { get(name: string): Promise<string> };
}) {
  const loaded = await loadConfigFile();
  const store = await openVectorStore(ctx.config.home);
  const embedder = await openEmbedder(
    loaded.memory.embedder,
    loaded.config.llm?.providers ?? {},
    ctx.secrets,
    { env: process.env, home: ctx.config.home, store },
  ).catch(async (error: unknown) => {
    await store.close().catch(() => {});
    throw error;
  });
  const cortex = openCortex({
    embedder,
    store,
    audit: ctx.audit,
    clock: systemClock,
    ids: new SortableIds(),
  });
  // Expired memories of earlier runs go now (audited as a count); a run is too short for a periodic sweep.
  await cortex.forgetExpired();
  return { wiring: memoryWiring(cortex), store };
}

async function commandRun(
  manifestPath: string,
  options: { input?: string; inputFile?: string; output: OutputFormat; isolation?: string },
) {
  const json = options.output === 'json';
  const progress = createProgress(process.stderr, !json);
  progress.step(`validating ${manifestPath}`);
  // The same checks as `aegis validate`, before anything is recorded: a refusal here leaves no execution behind.
  const facts = await hostFacts(false);
  const loaded = await loadManifestFile(manifestPath, { check: (dir) => hostChecks(dir, facts) });
  const agent =
    options.isolation === undefined ? loaded.agent : withIsolation(loaded.agent, options.isolation);
  for (const text of secretBindingNotes(agent.secrets, agent.network.allow.length)) warn(text);
  // A judge validator runs another *deployed* agent; `aegis run` has none, so it refuses before anything runs.
  const judge = (agent.task?.validation ?? agent.validation ?? []).find((validator) => 'judge' in validator);
  if (judge !== undefined && 'judge' in judge) {
    throw new AegisError(
      'RUNTIME_UNAVAILABLE',
      `${manifestPath}: spec.execution.validation has a judge (agent ${judge.judge.agent}), which \`aegis run\` cannot run`,
      {
        hint: 'judges are deployed agents: deploy both and run it on `aegis server` (aegis deploy, then aegis exec)',
      },
    );
  }
  const input = parseInputFlags(options) ?? null;
  const ctx = openLocalContext();
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let memory: Awaited<ReturnType<typeof localMemoryWiring>> | undefined;
  try {
    await reconcileOrphans(ctx);
    progress.step(`starting ${agent.isolation} for ${agent.name}`);
    let firstLine = true;
    // The LLM gateway only for agents that may call models (a broken config.yaml fails only those runs).
    const llm = agent.llm === null ? undefined : await openLlmWiring(ctx.secrets, { spend: ctx.store });
    memory = agent.memory === undefined ? undefined : await localMemoryWiring(ctx);
    const record = await runAgent(
      {
        ...ctx,
        ...(llm ? { llm } : {}),
        ...localToolsWiring(agent, ctx.runtime, ctx.audit),
        ...(memory === undefined ? {} : { memory: memory.wiring }),
        ...(agent.swarm === undefined
          ? {}
          : {
              swarm: localSwarmWiring({
                store: ctx.store.swarmStore(),
                signals: ctx.store,
                audit: ctx.audit,
                clock: systemClock,
                nodeId: null,
                swarmOf: async (id) => id, // a run is its own swarm
              }),
            }),
      },
      {
        agent,
        input,
        signal: controller.signal,
        onStarted: () => progress.step(`running ${agent.name}`),
        onLog: (stream: LogStream, text: string) => {
          if (firstLine) {
            progress.stop();
            firstLine = false;
          }
          // With --output json, stdout carries exactly one JSON object: all logs go to stderr.
          printLogLine({ stream, text }, json);
        },
      },
    );
    progress.stop();
    return printResult(executionView(record), json);
  } finally {
    progress.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await memory?.store.close().catch(() => {});
    await ctx.close();
  }
}

/** `aegis run --isolation <name>`: the manifest's agent under another isolation (same rules, other runtime). */
function withIsolation(agent: CompiledAgent, isolation: string): CompiledAgent {
  const parsed = Isolation.safeParse(isolation);
  if (!parsed.success) {
    throw new AegisError(
      'USAGE',
      `--isolation must be one of ${Isolation.options.join(', ')}, got "${isolation}"`,
    );
  }
  return { ...agent, isolation: parsed.data };
}

/** `aegis image build <dir> --tag name[:tag]`: a root filesystem directory → an image in the local Docker Engine. */
async function commandImageBuild(dir: string, options: { tag: string; output: OutputFormat }) {
  const engine = new DockerEngine();
  if (!(await engine.ping())) {
    throw new AegisError('RUNTIME_UNAVAILABLE', `no Docker Engine answers on ${engine.socketPath}`, {
      hint: 'start dockerd and point AEGIS_DOCKER_HOST=unix://<socket> at it (tests: bash scripts/test-dockerd.sh start)',
    });
  }
  const id = await importRootfs(engine, dir, options.tag);
  if (options.output === 'json') process.stdout.write(`${JSON.stringify({ image: options.tag, id })}\n`);
  else process.stdout.write(`✓ built ${options.tag} (${id}) from ${dir}\n`);
  return EXIT.ok;
}

/** `aegis validate`: exactly the checks `aegis run` makes before it starts anything, all problems at once. */
async function commandValidate(manifestPath: string, options: { output: OutputFormat }) {
  const facts = await hostFacts(true);
  const { agent, file } = await loadManifestFile(manifestPath, { check: (dir) => hostChecks(dir, facts) });
  const warnings = secretBindingNotes(agent.secrets, agent.network.allow.length);
  for (const text of warnings) warn(text);
  const l = agent.limits;
  if (options.output === 'json') {
    const result: Validation = {
      valid: true,
      file,
      agent: { name: agent.name, version: agent.version, isolation: agent.isolation, limits: { ...l } },
      warnings: [...warnings],
    };
    printJson(result);
  } else {
    process.stdout.write(
      `${green('✓', process.stdout)} ${manifestPath} is valid: ${agent.name}@${agent.version}, ${agent.isolation}, ` +
        `cpu ${l.cpuMillis}m, memory ${formatBytes(l.memoryBytes)}, pids ${l.pids}, disk ${formatBytes(l.diskBytes)}, timeout ${l.timeoutMs} ms\n`,
    );
  }
  return EXIT.ok;
}

async function commandLogs(
  id: string,
  options: { output: OutputFormat; server?: string; apiKeyFile?: string; follow?: boolean },
) {
  if (serverFrom(options.server) !== undefined) return remoteLogs(id, options);
  if (options.follow) throw needsServer('--follow');
  const ctx = openStoreContext();
  try {
    const record = await ctx.store.getExecution(id);
    if (!record) {
      throw new AegisError('NOT_FOUND', `no execution ${id}`, { hint: '`aegis ps` lists executions' });
    }
    let afterSeq = 0;
    for (;;) {
      const lines = await ctx.store.readLogs(id, { afterSeq, limit: 1000 });
      for (const line of lines) {
        // JSON Lines of the REST LogLine (the data of each SSE event), as against a server.
        if (options.output === 'json')
          printJson({ seq: line.seq, ts: line.ts, stream: line.stream, text: line.text });
        else printLogLine(line, false);
      }
      if (lines.length < 1000) break;
      afterSeq = lines[lines.length - 1]!.seq;
    }
    if (options.output !== 'json') note(describeExecution(executionView(record)));
    return EXIT.ok;
  } finally {
    await ctx.store.close();
  }
}

async function commandPs(options: {
  output: OutputFormat;
  limit: string;
  all?: boolean;
  server?: string;
  apiKeyFile?: string;
  agent?: string;
  status?: string;
  cursor?: string;
}) {
  if (serverFrom(options.server) !== undefined) return remotePs(options);
  const limit = Number(options.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
    throw new AegisError('USAGE', `--limit must be a whole number from 1 to 1000, got "${options.limit}"`);
  }
  const status = options.status === undefined ? undefined : ExecutionStatusSchema.safeParse(options.status);
  if (status !== undefined && !status.success) {
    throw new AegisError('USAGE', `--status: "${options.status}" is not an execution status`, {
      hint: `one of ${ExecutionStatusSchema.options.join(', ')}`,
    });
  }
  // Any start of the CLI settles runs a killed orchestrator left behind, so `ps` never shows ghosts as running.
  const ctx = openLocalContext();
  try {
    await reconcileOrphans(ctx);
    // One more than a page tells whether there is a next one — the same paging as GET /v1/executions.
    const records = await ctx.store.listExecutions({
      limit: limit + 1,
      ...(options.agent ? { agent: options.agent } : {}),
      ...(status?.success ? { status: status.data } : {}),
      ...(options.cursor ? { after: decodeCursor(options.cursor, '--cursor') } : {}),
    });
    const page = records.slice(0, limit);
    const last = page.at(-1);
    const nextCursor = records.length > limit && last ? encodeCursor(last) : null;
    if (options.output === 'json') {
      printJson({ executions: page.map(executionView), nextCursor });
      return EXIT.ok;
    }
    if (page.length === 0) {
      process.stdout.write(
        options.cursor
          ? 'no more executions\n'
          : 'no executions yet — try `aegis run examples/hello-python/agent.yaml`\n',
      );
      return EXIT.ok;
    }
    printTable(
      ['ID', 'AGENT', 'STATUS', 'DURATION', 'LLM', 'CREATED'],
      page.map((r) => [
        r.id,
        `${r.agent.name}@${r.agent.version}`,
        r.status,
        r.durationMs === null ? (isTerminal(r.status) ? '-' : 'running') : `${r.durationMs}ms`,
        llmUsageCell(executionView(r).usage),
        r.createdAt,
      ]),
    );
    if (nextCursor) note(`more: aegis ps --cursor ${nextCursor}`);
    return EXIT.ok;
  } finally {
    await ctx.close();
  }
}

async function commandDoctor(options: { output: OutputFormat }) {
  const report = runDoctor();
  process.stdout.write(
    options.output === 'json' ? `${JSON.stringify(report)}\n` : formatDoctorReport(report),
  );
  return report.ready ? EXIT.ok : EXIT.hostUnable;
}

async function commandAuditShow(id: string, options: { output: OutputFormat; cluster?: boolean }) {
  if (options.cluster === true) return commandAuditShowCluster(id, options);
  const { audit } = openAuditContext();
  try {
    const entries = await audit.list(id);
    const pruned = entries.length === 0 ? await audit.prunedAt?.(id) : undefined;
    if (pruned !== undefined) {
      throw new AegisError(
        'NOT_FOUND',
        `execution ${id} was pruned: its audit entries were archived and dropped at ledger checkpoint ${pruned.seq} (${pruned.ts})`,
        {
          hint: `they are in $AEGIS_HOME/audit-archive/${pruned.archive} (aegis audit verify --archive checks it)`,
        },
      );
    }
    if (entries.length === 0) {
      throw new AegisError('NOT_FOUND', `no audit entries for execution ${id}`, {
        hint: '`aegis ps` lists executions',
      });
    }
    if (options.output === 'json') {
      process.stdout.write(`${JSON.stringify(entries)}\n`);
      return EXIT.ok;
    }
    printTable(
      ['SEQ', 'TIME', 'KIND', 'DATA'],
      entries.map((e) => [String(e.seq), e.ts, e.kind, JSON.stringify(e.data)]),
    );
    return EXIT.ok;
  } finally {
    await audit.close();
  }
}

async function commandAuditExport(options: { out?: string; cluster?: boolean }) {
  if (options.cluster === true) return commandAuditExportCluster(options);
  const { audit } = openAuditContext();
  const out =
    options.out === undefined ? process.stdout : createWriteStream(options.out, { mode: 0o600, flags: 'w' });
  const counts = { entry: 0, head: 0, checkpoint: 0 };
  try {
    let chunk = '';
    const write = async (text: string) => {
      if (!out.write(text)) await once(out, 'drain');
    };
    for await (const record of audit.export() as AsyncIterable<AuditExportRecord>) {
      if (record.type !== 'header') counts[record.type] += 1;
      chunk += `${formatExportLine(record)}\n`;
      if (chunk.length >= 1 << 16) {
        await write(chunk);
        chunk = '';
      }
    }
    if (chunk !== '') await write(chunk);
    if (out !== process.stdout) {
      out.end();
      await once(out, 'finish');
    }
  } catch (error) {
    if (out !== process.stdout) out.destroy();
    throw error;
  } finally {
    await audit.close();
  }
  process.stderr.write(
    `exported ${counts.entry} entries and ${counts.head} signed heads${options.out ? ` to ${options.out}` : ''}\n`,
  );
  return EXIT.ok;
}

function tampered(result: AuditTampered, what: string): AegisError {
  const found = result.entry
    ? `; found there: ${result.entry.kind}${result.entry.execution ? ` of ${result.entry.execution}` : ''}`
    : '';
  return new AegisError(
    'AUDIT_TAMPERED',
    `${what} failed verification: ${result.message} (${result.problem}, first bad seq ${result.firstBadSeq}${found})`,
    {
      details: { problem: result.problem, firstBadSeq: result.firstBadSeq },
      hint: `entries before seq ${result.firstBadSeq} verified (${result.entries}); restore the ledger from an export or backup to see what was changed`,
    },
  );
}

function readPublicKey(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new AegisError('USAGE', `cannot read --public-key ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/**
 * Every execution the store knows has its lifecycle entries (`execution.created`; once ended `execution.finished`;
 * or `execution.recovered`). Undefined when there is no store and it was not asked for.
 */
async function crossCheckStore(
  audit: AuditLog,
  required: boolean,
): Promise<AuditVerification | { ok: true } | undefined> {
  const config = loadConfig();
  const postgres = process.env['AEGIS_DATABASE_URL'];
  if (!postgres && !existsSync(join(config.home, 'aegis.db'))) {
    if (!required) return undefined;
    throw new AegisError(
      'NOT_FOUND',
      `no execution store at ${join(config.home, 'aegis.db')} to cross-check`,
      {
        hint: 'set AEGIS_HOME (or AEGIS_DATABASE_URL) to the node whose ledger this is, or drop --store',
      },
    );
  }
  const ctx = openStoreContext(config);
  let store: ExecutionStore = ctx.store;
  if (postgres) {
    const { PostgresStore } = await import('../adapters/store/postgres/store.ts');
    store = await PostgresStore.open(postgres);
  }
  try {
    // The store first: a finished entry is durable before the store says "ended", so nothing read later is lost.
    const missing: { id: string; missing: string[] }[] = [];
    const records: ExecutionRecord[] = [];
    for await (const record of allExecutions(store)) records.push(record);
    const coverage = await audit.lifecycleCoverage();
    for (const record of records) {
      // A live writer's execution may not have its entry yet (stored a few ms before it is appended).
      if (!isTerminal(record.status) && record.owner !== null && ctx.identity.isAlive(record.owner)) continue;
      const lacks = missingEntries(record.status, coverage.get(record.id));
      if (lacks.length > 0) missing.push({ id: record.id, missing: lacks });
    }
    if (missing.length === 0) return { ok: true };
    const named = missing
      .slice(0, 20)
      .map((m) => `${m.id} (no ${m.missing.map((k) => `execution.${k}`).join(', no ')})`)
      .join(', ');
    return {
      ok: false,
      problem: 'missing-entries',
      firstBadSeq: 0,
      message:
        `${missing.length} of the ${records.length} executions in the store lack their ledger entries: ${named}` +
        (missing.length > 20 ? ', …' : '') +
        ' — entries were deleted, or a crash lost them and no AEGIS server has started since to record it',
      entries: 0,
    };
  } finally {
    if (store !== ctx.store) await store.close();
    await ctx.store.close();
  }
}

async function commandAuditRotateKey() {
  const { audit, nodeKey, witness } = openAuditContext(loadConfig(), { writer: true });
  let rotated: { from: string; to: string };
  try {
    const verified = await audit.verify();
    if (!verified.ok) throw tampered(verified, 'the audit ledger');
    // The old key signs one last head, over an entry that names the new key.
    const next = nodeKey.rotatePrepare();
    audit.append(AUDIT_KINDS.auditKeyRotated, null, {
      from: nodeKey.keyId(),
      to: next.keyId,
      publicKey: next.publicKeyPem,
    });
    await audit.close();
    rotated = nodeKey.rotateCommit(next, new Date().toISOString());
  } finally {
    await audit.close();
  }
  process.stdout.write(
    `rotated the node key ${rotated.from} → ${rotated.to} (${nodeKey.file}); the old public key stays trusted ` +
      `for the heads it signed (${nodeKey.retiredFile}); witness ${witness.location}\n`,
  );
  process.stderr.write('pin the new key for offline checks: aegis audit key > node.pub\n');
  return EXIT.ok;
}

async function commandAuditVerify(
  archive: string | undefined,
  options: {
    file?: string;
    publicKey?: string;
    store?: boolean;
    cluster?: boolean;
    archive?: boolean;
    output: OutputFormat;
  },
) {
  // The cluster ledger (ADR 0116): `--cluster` against PostgreSQL, or a cluster archive (by its first line).
  if (options.cluster === true) return commandAuditVerifyCluster(undefined, options);
  if (archive !== undefined && options.file !== undefined) {
    throw new AegisError('USAGE', 'name the file to verify once: as the argument or with --file');
  }
  options = archive === undefined ? options : { ...options, file: archive };
  if (options.file !== undefined && (await isClusterArchiveFile(options.file))) {
    return commandAuditVerifyCluster(options.file, options);
  }
  let result: AuditVerification;
  let what: string;
  let keyNote: string;
  if (options.file !== undefined) {
    const pinned = options.publicKey === undefined ? undefined : readPublicKey(options.publicKey);
    const verified = await verifyAuditExportFile(
      options.file,
      pinned === undefined ? {} : { publicKeyPem: pinned },
    );
    const { header, ...rest } = verified;
    result = rest;
    what = `the export ${options.file}`;
    keyNote = header
      ? pinned === undefined
        ? `key ${header.keyId} (from the export's header — pin the key you expect with --public-key)`
        : `the pinned key ${header.keyId}`
      : '';
  } else {
    if (options.publicKey !== undefined) {
      throw new AegisError('USAGE', '--public-key applies to --file only', {
        hint: 'the local ledger is checked against this node key (`aegis audit key` prints it)',
      });
    }
    const { audit, nodeKey, witness } = openAuditContext();
    try {
      result = await audit.verify();
      if (result.ok && options.archive === true) {
        const archives = await (audit as SqliteAuditLedger).verifyArchives();
        if (!archives.ok) {
          const { ok: _ok, ...failure } = archives;
          result = { ok: false, ...failure, entries: result.entries };
        } else {
          process.stderr.write(
            `✓ ${archives.archives} ledger archive(s) verified: ${archives.entries} entries link into their checkpoints\n`,
          );
        }
      }
      const witnessed = witness.read().length;
      keyNote =
        (result.ok && result.heads > 0 ? `node key ${nodeKey.keyId()}` : '') +
        `; witness ${witness.location} (${witnessed} head${witnessed === 1 ? '' : 's'})`;
      if (result.ok && options.store !== false) {
        const crossChecked = await crossCheckStore(audit, options.store === true);
        if (crossChecked !== undefined) result = crossChecked.ok ? result : crossChecked;
      }
    } finally {
      await audit.close();
    }
    what = 'the audit ledger';
  }
  if (options.output === 'json') {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    if (!result.ok) process.stderr.write(`${formatError(tampered(result, what))}\n`);
    return result.ok ? EXIT.ok : EXIT.auditTampered;
  }
  if (!result.ok) throw tampered(result, what);
  const firstSeq = result.lastSeq - result.entries + 1;
  const range =
    result.entries === 0
      ? 'no entries'
      : `${result.entries} entries (seq ${firstSeq}–${result.lastSeq}${firstSeq > 1 ? `; 1–${firstSeq - 1} pruned under signed checkpoints` : ''})`;
  const signed =
    result.heads === 0
      ? 'no signed heads yet'
      : `${result.heads} signed head${result.heads === 1 ? '' : 's'}, newest at seq ${result.signedThroughSeq}`;
  const unsigned = result.unsignedTail > 0 ? `; ${result.unsignedTail} newer entries not yet signed` : '';
  const by = keyNote ? ` by ${keyNote.replace(/^; /, '')}` : '';
  process.stdout.write(`✓ ${what} is intact: ${range}, ${signed}${by}${unsigned}\n`);
  return EXIT.ok;
}

async function commandAuditKey(options: { output: OutputFormat }) {
  const { audit, nodeKey } = openAuditContext();
  try {
    if (options.output === 'json') {
      process.stdout.write(
        `${JSON.stringify({ keyId: nodeKey.keyId(), publicKey: nodeKey.publicKeyPem() })}\n`,
      );
    } else {
      process.stdout.write(nodeKey.publicKeyPem());
      process.stderr.write(`node key ${nodeKey.keyId()} (Ed25519; signs the audit ledger's heads)\n`);
    }
    return EXIT.ok;
  } finally {
    await audit.close();
  }
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** `aegis secret set NAME`: the value comes from stdin only — never argv (shell history, /proc/<pid>/cmdline). */
async function commandSecretSet(name: string, _options: unknown, command: Command) {
  if (command.args.length > 1) {
    throw new AegisError(
      'USAGE',
      'secret values are never taken from the command line (shell history and `ps` would keep them)',
      {
        hint: `pipe the value on stdin: aegis secret set ${name} < file  (or: printf %s "$VALUE" | aegis secret set ${name})`,
      },
    );
  }
  if (process.stdin.isTTY) {
    throw new AegisError('USAGE', 'aegis secret set reads the value from stdin, which is a terminal here', {
      hint: `pipe it: aegis secret set ${name} < file  (interactive entry is not supported yet)`,
    });
  }
  let value = (await readStdin()).toString('utf8');
  if (value.endsWith('\r\n')) value = value.slice(0, -2);
  else if (value.endsWith('\n')) value = value.slice(0, -1);
  if (value === '') throw new AegisError('USAGE', `no value on stdin for secret ${name}`);
  const store = openSecretStore();
  await store.set(name, value);
  process.stderr.write(`secret ${name} set\n`);
  return EXIT.ok;
}

async function commandSecretLs(options: { output: OutputFormat }) {
  const secrets = await openSecretStore().list();
  if (options.output === 'json') {
    process.stdout.write(`${JSON.stringify(secrets)}\n`);
    return EXIT.ok;
  }
  if (secrets.length === 0) {
    process.stderr.write('no secrets (aegis secret set NAME < file)\n');
    return EXIT.ok;
  }
  printTable(
    ['NAME', 'CREATED', 'UPDATED'],
    secrets.map((secret) => [secret.name, secret.createdAt, secret.updatedAt]),
  );
  return EXIT.ok;
}

async function commandSecretRm(name: string) {
  await openSecretStore().remove(name);
  process.stderr.write(`secret ${name} removed\n`);
  return EXIT.ok;
}

export function buildProgram(setExit: (code: number) => void): Command {
  const program = new Command();
  program
    .name('aegis')
    .description('Run untrusted AI agents in a sandbox they cannot get out of, and see everything they did.')
    .version(AEGIS_VERSION)
    .option('-q, --quiet', 'print only results and errors (no progress, notes or outcome lines)')
    .option('-v, --verbose', 'say more about what is happening (on stderr)')
    .option('--no-color', 'no colours (also: NO_COLOR=1; colours are only ever used on a terminal)')
    .showHelpAfterError('(run `aegis --help` for usage)')
    .exitOverride()
    .hook('preAction', (_program, action) => {
      const flags = action.optsWithGlobals<{ quiet?: boolean; verbose?: boolean; color?: boolean }>();
      configureOutput({
        quiet: flags.quiet === true,
        verbose: flags.verbose === true && flags.quiet !== true,
        color: flags.color !== false,
      });
    });
  const wrap =
    <A extends unknown[]>(action: (...args: A) => Promise<number>) =>
    async (...args: A) => {
      setExit(await action(...args));
    };

  program
    .command('run')
    .description('run an agent once in a sandbox and print its result')
    .argument('<manifest>', 'path to agent.yaml')
    .option('-i, --input <json>', 'input JSON passed to the agent (stdin and /run/aegis/input.json)')
    .option('--input-file <file>', 'read the input JSON from a file (- for stdin)')
    .option(
      '--isolation <runtime>',
      "run under this isolation instead of the manifest's (sandbox, gvisor, docker, auto)",
    )
    .addOption(outputOption())
    .action(wrap(commandRun));
  program
    .command('image')
    .description('images for the docker runtime (built locally; no registry)')
    .command('build')
    .description(
      'make an image from a directory holding a root filesystem (no Dockerfile), in the local engine',
    )
    .argument('<dir>', 'the root filesystem')
    .requiredOption('-t, --tag <name[:tag]>', 'the image name, used as spec.runtime.image')
    .addOption(outputOption())
    .action(wrap(commandImageBuild));
  program
    .command('validate')
    .description(
      "check an agent.yaml as `aegis run` would on this host (entrypoint, isolation, host paths, secrets); exit 0 when it would start, else every problem located and run's exit code",
    )
    .argument('<manifest>', 'path to agent.yaml')
    .addOption(outputOption())
    .action(wrap(commandValidate));
  program
    .command('schema')
    .description('print the JSON Schema of agent.yaml')
    .action(
      wrap(async () => {
        process.stdout.write(`${JSON.stringify(agentManifestJsonSchema(), null, 2)}\n`);
        return EXIT.ok;
      }),
    );
  addServerOptions(program.command('logs'))
    .description("replay an execution's stdout/stderr (from the server with --server or AEGIS_SERVER)")
    .argument('<execution-id>', 'id printed by `aegis run` or listed by `aegis ps`')
    .option('-f, --follow', 'with a server: stream new lines until the execution ends')
    .addOption(outputOption())
    .action(wrap(commandLogs));
  addServerOptions(program.command('ps'))
    .description('list executions, newest first (from the server with --server or AEGIS_SERVER)')
    .option('-n, --limit <count>', 'how many to show', '20')
    .option('--agent <name>', 'with a server: only this agent')
    .option('--status <status>', 'with a server: only this status (queued, running, succeeded, failed, …)')
    .option('--cursor <cursor>', 'with a server: the page after this one (printed by the previous page)')
    .addOption(outputOption())
    .action(wrap(commandPs));
  const audit = program.command('audit').description('the tamper-evident audit ledger: show, verify, export');
  audit
    .command('show')
    .description("an execution's audit entries, in order")
    .argument('<execution-id>', 'id printed by `aegis run` or listed by `aegis ps`')
    .option(
      '--cluster',
      "from every node's chain in the cluster ledger (AEGIS_DATABASE_URL), each entry naming its node",
    )
    .addOption(outputOption())
    .action(wrap(commandAuditShow));
  audit
    .command('verify')
    .description('check the hash chain and signed heads; exit 0 when intact, 4 naming the first bad seq')
    .argument('[file]', 'an export or cluster archive to verify offline (same as --file)')
    .option('--file <export.jsonl>', 'verify an export (offline) instead of the local ledger')
    .option(
      '--cluster',
      "verify every node's chain in the cluster ledger (AEGIS_DATABASE_URL) and cross-check them",
    )
    .option('--public-key <file>', 'with --file: the PEM public key the export must be signed with')
    .option(
      '--store',
      'also check every execution in the store has its ledger entries (default when $AEGIS_HOME/aegis.db exists)',
    )
    .option('--no-store', 'skip the store cross-check')
    .option(
      '--archive',
      'also check the archives of pruned entries ($AEGIS_HOME/audit-archive/) against their signed checkpoints',
    )
    .addOption(outputOption())
    .action(wrap(commandAuditVerify));
  audit
    .command('rotate-key')
    .description('replace the node key; the new key endorses the old, so heads it signed keep verifying')
    .action(wrap(commandAuditRotateKey));
  audit
    .command('export')
    .description('write the ledger as JSON Lines: header (public key), signed heads, entries')
    .option('--out <file>', 'write to a file instead of stdout')
    .option(
      '--cluster',
      "one archive of every node's chain, heads and key from the cluster ledger (AEGIS_DATABASE_URL)",
    )
    .action(wrap(commandAuditExport));
  audit
    .command('key')
    .description("print this node's public key (PEM), to pin with `audit verify --public-key`")
    .addOption(outputOption())
    .action(wrap(commandAuditKey));
  const secret = program
    .command('secret')
    .description(
      'sealed secrets agents use by name (spec.secrets); the sandbox only ever sees a placeholder',
    );
  secret
    .command('set')
    .description(
      'store a secret; the value is read from stdin (one trailing newline stripped), never from argv',
    )
    .argument('<name>', 'secret name, e.g. OPENAI_KEY')
    .allowExcessArguments(true)
    .action(wrap(commandSecretSet));
  secret
    .command('ls')
    .description('list secret names and dates (never values)')
    .addOption(outputOption())
    .action(wrap(commandSecretLs));
  secret
    .command('rm')
    .description('delete a secret')
    .argument('<name>', 'secret name')
    .action(wrap(commandSecretRm));
  program
    .command('doctor')
    .description('check what this host can run, for this user: required and optional checks, each with a fix')
    .addOption(outputOption())
    .action(wrap(commandDoctor));
  registerServerCommand(program, (action) => wrap(action)());
  registerPruneCommand(program, (action) => wrap(action)());
  registerRemoteCommands(program, setExit);
  registerCompletionCommand(program, (action) => wrap(action)());
  return program;
}

/** Runs the CLI and returns the exit code (never calls process.exit itself, so tests can drive it). */
export async function main(argv: readonly string[]): Promise<number> {
  let exitCode = EXIT.ok as number;
  // Known before parsing, so a usage error of a `-o json` command is JSON too.
  configureOutput({ json: wantsJson(argv) });
  const program = buildProgram((code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version end here too, with exit code 0. Commander has printed the message already.
      if (error.exitCode === 0) return EXIT.ok;
      if (wantsJson(argv))
        printJson({
          error: {
            code: 'USAGE',
            message: error.message.replace(/^error: /, ''),
            details: { hint: 'run `aegis --help` for usage' },
          },
        });
      return EXIT.usage;
    }
    return reportError(error);
  }
}
