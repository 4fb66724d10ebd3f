/**
 * The tool gateway (issue 14, docs/adr/0084-tool-gateway.md): every tool call of an agent — from its code through
 * `aegis.tools.call` (in-sandbox API), from a client through REST, later from the iterative loop — passes here:
 * granted? → arguments valid? → policy (paths, allow-list, network) → execute → one `tool.call` ledger entry
 * (tool, digest of the arguments, outcome, duration, bytes; never the arguments or the result) → result.
 *
 * Built-ins run *inside the caller's sandbox* through its LiveSession, so the sandbox's own walls apply a second
 * time (paths are re-checked there, symlinks resolve there); `http.fetch` runs there too, through the egress proxy,
 * so the network policy, secret placeholders and `network.connect` entries are the proxy's own. MCP tools run in
 * the orchestrator (McpServers port): the credentials of a server never enter a sandbox.
 */
import { AUDIT_KINDS, type Sha256Hex } from '../domain/audit/entry.ts';
import { AegisError } from '../domain/errors.ts';
import { sandboxPath, sandboxPathRoots } from '../domain/live-sandbox.ts';
import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import {
  argsDigest,
  type BuiltinToolName,
  checkCommand,
  checkFetchUrl,
  checkToolPath,
  describeBuiltin,
  isBuiltin,
  MAX_TOOL_OUTPUT_BYTES,
  MCP_TOOL_NAME,
  parseBuiltinArgs,
  ToolDenied,
  type ToolDescription,
  type ToolGrantSpec,
} from '../domain/tools.ts';
import type { Approvals } from './approvals.ts';
import type { AuditLog, Clock, LiveSession, McpServers } from './ports.ts';

/** Who calls, in which sandbox. */
export interface ToolTarget {
  /** The sandbox id (live sandboxes) or execution id: the ledger entry's subject. */
  readonly id: string;
  readonly agent: Pick<CompiledAgent, 'tools' | 'mounts' | 'network'>;
  /** Where built-ins run; undefined: built-ins are refused (only MCP tools work). */
  readonly session: LiveSession | undefined;
  /** Environment of commands run for tools (the sandbox's: proxy variables, secret placeholders). */
  readonly env: Readonly<Record<string, string>>;
  /** API key id, `agent` (the code inside the sandbox) or `loop`. */
  readonly by: string;
  /** The key that owns the sandbox or execution: with admins, who may approve its `approval: required` calls. */
  readonly owner?: string | undefined;
}

export type ToolCallResult =
  | { readonly outcome: 'allowed'; readonly tool: string; readonly result: unknown }
  | { readonly outcome: 'denied'; readonly tool: string; readonly rule: string; readonly reason: string };

export interface ToolGatewayDeps {
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly sha256Hex: Sha256Hex;
  readonly mcp?: McpServers | undefined;
  /** Holds `approval: required` calls for a human decision; without it such calls are refused. */
  readonly approvals?: Approvals | undefined;
}

const encoder = new TextEncoder();

export class ToolGateway {
  readonly #deps: ToolGatewayDeps;

  constructor(deps: ToolGatewayDeps) {
    this.#deps = deps;
  }

  /** The granted tools with their argument schemas (MCP ones as their server describes them). */
  async list(target: ToolTarget): Promise<ToolDescription[]> {
    const out: ToolDescription[] = [];
    for (const grant of target.agent.tools ?? []) {
      if (isBuiltin(grant.name)) {
        out.push(describeBuiltin(grant.name));
        continue;
      }
      const match = MCP_TOOL_NAME.exec(grant.name);
      const mcp = this.#deps.mcp;
      if (!match || !mcp?.has(match[1] as string)) continue;
      const tools = await mcp.listTools(match[1] as string).catch(() => []);
      const tool = tools.find((t) => t.name === match[2]);
      if (tool) out.push({ name: grant.name, description: tool.description, inputSchema: tool.inputSchema });
    }
    return out;
  }

  /**
   * Runs one call. A refusal is a result (`outcome: denied`, a reason a model can read), not an exception; bad
   * arguments and failures throw AegisError. Each way, exactly one `tool.call` entry is appended.
   */
  async call(target: ToolTarget, name: string, args: unknown): Promise<ToolCallResult> {
    const { clock, audit } = this.#deps;
    const started = clock.now();
    const digest = argsDigest(args, this.#deps.sha256Hex);
    const record = (outcome: string, extra: Record<string, string | number | null>) =>
      audit.append(AUDIT_KINDS.toolCall, target.id, {
        tool: name.slice(0, 200),
        argsDigest: digest,
        outcome,
        durationMs: clock.now() - started,
        by: target.by,
        ...extra,
      });
    try {
      const grant = (target.agent.tools ?? []).find((g) => g.name === name);
      if (grant === undefined) {
        throw new ToolDenied(
          'not-granted',
          `tool ${JSON.stringify(name.slice(0, 200))} is not granted to this agent (granted: ${(target.agent.tools ?? []).map((g) => g.name).join(', ') || 'none'})`,
        );
      }
      // Policy first, then (for `approval: required`) a human, then the call: nothing refused waits for anyone.
      const gate = () => this.#approval(target, grant, args, digest);
      const { result, bytes } = isBuiltin(name)
        ? await this.#builtin(target, grant, name, args, gate)
        : await this.#mcp(grant, args, gate);
      record('allowed', { bytes });
      return { outcome: 'allowed', tool: name, result };
    } catch (error) {
      if (error instanceof ToolDenied) {
        // A human's no (or no answer) is not the agent's violation; a policy refusal is.
        const violation: Record<string, string> = error.rule.startsWith('approval:')
          ? {}
          : { violation: 'tool' };
        record('denied', { rule: error.rule, reason: error.message.slice(0, 500), ...violation });
        return { outcome: 'denied', tool: name, rule: error.rule, reason: error.message };
      }
      const code = error instanceof AegisError ? error.code : 'INTERNAL';
      record('error', { error: code, reason: error instanceof Error ? error.message.slice(0, 500) : null });
      throw error;
    }
  }

  /** Waits for a decision when the grant says `approval: required`; throws ToolDenied when there is no yes. */
  async #approval(target: ToolTarget, grant: ToolGrantSpec, args: unknown, digest: string): Promise<void> {
    if (grant.approvalTimeoutMs === undefined) return;
    const approvals = this.#deps.approvals;
    if (approvals === undefined) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `${grant.name} needs human approval, and this AEGIS process has no approvals (it runs on aegis server)`,
        { hint: 'run the agent on an aegis server, or drop approval: required from the grant' },
      );
    }
    const decided = await approvals.request({
      subject: target.id,
      owner: target.owner ?? 'local',
      tool: grant.name,
      arguments: args ?? {},
      argsDigest: digest,
      by: target.by,
      timeoutMs: grant.approvalTimeoutMs,
    });
    if (decided.decision === 'approved') return;
    if (decided.decision === 'denied') {
      throw new ToolDenied(
        'approval:denied',
        `${grant.name}: approval denied by key ${decided.decidedBy}; do not retry the same call, ask for or try something else`,
      );
    }
    throw new ToolDenied(
      'approval:expired',
      `${grant.name}: approval timed out (nobody approved the call within ${seconds(grant.approvalTimeoutMs)})`,
    );
  }

  async #mcp(
    grant: ToolGrantSpec,
    args: unknown,
    gate: () => Promise<void>,
  ): Promise<{ result: unknown; bytes: number }> {
    const match = MCP_TOOL_NAME.exec(grant.name);
    const mcp = this.#deps.mcp;
    const server = match?.[1] as string;
    if (!match || mcp === undefined || !mcp.has(server)) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `MCP server "${server}" is not configured on this orchestrator`,
        {
          hint: `add mcp.servers.${server} to $AEGIS_HOME/config.yaml`,
        },
      );
    }
    if (args !== undefined && (args === null || typeof args !== 'object' || Array.isArray(args))) {
      throw new AegisError('USAGE', `${grant.name}: arguments are a JSON object`);
    }
    await gate();
    const result = await mcp.callTool(
      server,
      match[2] as string,
      (args ?? {}) as Record<string, unknown>,
      grant.timeoutMs,
    );
    return { result, bytes: encoder.encode(JSON.stringify(result)).length };
  }

  async #builtin(
    target: ToolTarget,
    grant: ToolGrantSpec,
    name: BuiltinToolName,
    raw: unknown,
    gate: () => Promise<void>,
  ): Promise<{ result: unknown; bytes: number }> {
    const session = target.session;
    if (session === undefined) {
      throw new AegisError(
        'RUNTIME_UNAVAILABLE',
        `${name} is a built-in tool: it runs inside a live sandbox, and a one-shot execution has none`,
        {
          hint: 'run the agent in a live sandbox (POST /v1/sandboxes, then exec it there) to use fs.*, cmd.run and http.fetch; MCP tools (mcp:<server>/<tool>) work from executions too',
        },
      );
    }
    const roots = sandboxPathRoots(target.agent);
    switch (name) {
      case 'fs.read': {
        const args = parseBuiltinArgs(name, raw);
        const path = toolPath(name, args.path, 'args.path');
        checkToolPath(name, path, roots, false);
        await gate();
        const text = await readText(session, path);
        return { result: { path, content: text }, bytes: encoder.encode(text).length };
      }
      case 'fs.write': {
        const args = parseBuiltinArgs(name, raw);
        const path = toolPath(name, args.path, 'args.path');
        checkToolPath(name, path, roots, true);
        await gate();
        const { bytes } = await writeCreatingParent(session, path, encoder.encode(args.content), roots);
        return { result: { path, bytes }, bytes };
      }
      case 'fs.list': {
        const args = parseBuiltinArgs(name, raw);
        const path = toolPath(name, args.path, 'args.path');
        checkToolPath(name, path, roots, false);
        await gate();
        const entries = await session.list(path);
        return { result: { path, entries }, bytes: 0 };
      }
      case 'fs.edit': {
        const args = parseBuiltinArgs(name, raw);
        const path = toolPath(name, args.path, 'args.path');
        checkToolPath(name, path, roots, true);
        await gate();
        const text = await readText(session, path);
        const at = text.indexOf(args.oldText);
        if (at < 0 || text.indexOf(args.oldText, at + 1) >= 0) {
          throw new AegisError(
            'USAGE',
            `fs.edit: oldText occurs ${at < 0 ? 'nowhere' : 'more than once'} in ${path}`,
            { hint: 'give a longer oldText that occurs exactly once' },
          );
        }
        const edited = text.slice(0, at) + args.newText + text.slice(at + args.oldText.length);
        const { bytes } = await session.writeFile(path, once(encoder.encode(edited)));
        return { result: { path, bytes }, bytes };
      }
      case 'cmd.run': {
        const args = parseBuiltinArgs(name, raw);
        checkCommand(grant, args.argv);
        const cwd = toolPath(name, args.cwd ?? '/workspace', 'args.cwd');
        await gate();
        const run = await this.#run(session, args.argv, cwd, target.env, args.stdin, grant.timeoutMs);
        return { result: run, bytes: run.stdoutBytes + run.stderrBytes };
      }
      case 'http.fetch': {
        const args = parseBuiltinArgs(name, raw);
        const url = checkFetchUrl(target.agent.network.policy, args.url);
        await gate();
        const request = JSON.stringify({ ...args, url: url.href, timeoutS: grant.timeoutMs / 1000 });
        const run = await this.#run(
          session,
          ['python3', '-c', FETCH_PY],
          '/workspace',
          target.env,
          request,
          grant.timeoutMs + 2000,
        );
        if (run.exitCode === 127 || run.exitCode === null) {
          throw new AegisError(
            'RUNTIME_UNAVAILABLE',
            `http.fetch could not run in the sandbox: ${run.stderr.slice(0, 300)}`,
            {
              hint: 'http.fetch runs python3 inside the sandbox; the sandbox needs python3 on its PATH',
            },
          );
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(run.stdout);
        } catch {
          throw new AegisError(
            'INTERNAL',
            `http.fetch: unreadable answer from the sandbox: ${run.stderr.slice(0, 300)}`,
          );
        }
        return { result: parsed, bytes: run.stdoutBytes };
      }
    }
  }

  #run(
    session: LiveSession,
    argv: readonly string[],
    cwd: string,
    env: Readonly<Record<string, string>>,
    stdin: string | undefined,
    timeoutMs: number,
  ): Promise<CommandRun> {
    const { clock } = this.#deps;
    return new Promise<CommandRun>((resolve, reject) => {
      const out: Record<'stdout' | 'stderr', Uint8Array[]> = { stdout: [], stderr: [] };
      const size = { stdout: 0, stderr: 0 };
      let timedOut = false;
      let timer: { cancel(): void } | undefined;
      session
        .exec(
          { argv, cwd, env, stdin: stdin !== undefined },
          {
            onOutput: (stream, chunk) => {
              const room = MAX_TOOL_OUTPUT_BYTES - size[stream];
              if (room > 0) out[stream].push(chunk.subarray(0, room));
              size[stream] += chunk.length;
            },
            onExit: (code, signal) => {
              timer?.cancel();
              const text = (stream: 'stdout' | 'stderr') =>
                new TextDecoder().decode(Buffer.concat(out[stream]));
              resolve({
                exitCode: code,
                signal,
                timedOut,
                stdout: text('stdout'),
                stderr: text('stderr'),
                stdoutBytes: size.stdout,
                stderrBytes: size.stderr,
                truncated: size.stdout > MAX_TOOL_OUTPUT_BYTES || size.stderr > MAX_TOOL_OUTPUT_BYTES,
              });
            },
          },
        )
        .then(async (process) => {
          timer = clock.setTimeout(
            () => {
              timedOut = true;
              void process.kill('SIGKILL').catch(() => {});
            },
            timeoutMs,
            { background: true },
          );
          if (stdin !== undefined) await process.writeStdin(encoder.encode(stdin), true);
        })
        .catch(reject);
    });
  }
}

export interface CommandRun {
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  readonly stdout: string;
  readonly stderr: string;
  readonly stdoutBytes: number;
  readonly stderrBytes: number;
  readonly truncated: boolean;
}

function seconds(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000}m` : `${Math.round(ms / 100) / 10}s`;
}

async function* once(chunk: Uint8Array): AsyncIterable<Uint8Array> {
  yield chunk;
}

/**
 * Writes a file; when its directory does not exist yet (NOT_FOUND) and that directory is itself writable, creates
 * it (with parents, inside the sandbox's walls) and writes again — a model writing `notes/a.txt` expects that.
 */
async function writeCreatingParent(
  session: LiveSession,
  path: string,
  content: Uint8Array,
  roots: Parameters<typeof checkToolPath>[2],
): Promise<{ bytes: number }> {
  try {
    return await session.writeFile(path, once(content));
  } catch (error) {
    const parent = path.slice(0, path.lastIndexOf('/'));
    if (!(error instanceof AegisError) || error.code !== 'NOT_FOUND' || parent === '') throw error;
    try {
      checkToolPath('fs.write', parent, roots, true);
    } catch {
      throw error;
    }
    await session.mkdir(parent);
    return session.writeFile(path, once(content));
  }
}

/** A tool's path argument, absolute; a path that climbs with `..` is a refusal (a violation), not a usage error. */
function toolPath(tool: string, raw: string, where: string): string {
  try {
    return sandboxPath(raw, where);
  } catch (error) {
    if (error instanceof AegisError && error.code === 'POLICY_DENIED') {
      throw new ToolDenied('path:climb', `${tool}: ${error.message}; ${error.hint ?? ''}`.trim());
    }
    throw error;
  }
}

async function readText(session: LiveSession, path: string): Promise<string> {
  const file = await session.readFile(path);
  if (file.size > MAX_TOOL_OUTPUT_BYTES) {
    throw new AegisError(
      'USAGE',
      `${path} is ${file.size} bytes; fs.read returns at most ${MAX_TOOL_OUTPUT_BYTES}`,
      {
        hint: 'read a slice with cmd.run (e.g. head -c) if it is granted',
      },
    );
  }
  const parts: Uint8Array[] = [];
  for await (const chunk of file.chunks) parts.push(chunk);
  return new TextDecoder().decode(Buffer.concat(parts));
}

/** Runs inside the sandbox (stdin: the request); its HTTP(S)_PROXY environment sends it through the egress proxy. */
const FETCH_PY = `import json,sys,urllib.request,urllib.error
a=json.load(sys.stdin)
b=a.get('body')
q=urllib.request.Request(a['url'],data=None if b is None else b.encode(),method=a['method'],headers=a['headers'])
try:
  r=urllib.request.urlopen(q,timeout=a['timeoutS'])
except urllib.error.HTTPError as e:
  r=e
except Exception as e:
  print(json.dumps({'error':str(e)[:500]}));sys.exit(0)
d=r.read(${MAX_TOOL_OUTPUT_BYTES + 1})
print(json.dumps({'status':r.status,'headers':dict(r.headers.items()),'body':d[:${MAX_TOOL_OUTPUT_BYTES}].decode('utf-8','replace'),'truncated':len(d)>${MAX_TOOL_OUTPUT_BYTES}}))
`;
