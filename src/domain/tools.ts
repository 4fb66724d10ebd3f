/**
 * Tools, the pure part (issue 14, docs/adr/0084-tool-gateway.md): the grants of `spec.tools`, the built-in tools'
 * argument schemas, and the policy checks a call passes before anything runs — path roots, the `cmd.run` allow-list,
 * the `http.fetch` host against the egress policy. `app/tools.ts` executes; this module only decides.
 */
import { z } from 'zod';
import { canonicalJson, type JsonValue } from './audit/canonical-json.ts';
import { AegisError } from './errors.ts';
import { underRoots } from './live-sandbox.ts';
import { parseIp } from './policy/ip.ts';
import { evaluate, evaluateName, type NetworkPolicy } from './policy/network-rules.ts';
import { parseDuration } from './units.ts';

export const BUILTIN_TOOL_NAMES = [
  'fs.read',
  'fs.write',
  'fs.list',
  'fs.edit',
  'cmd.run',
  'http.fetch',
] as const;
export type BuiltinToolName = (typeof BUILTIN_TOOL_NAMES)[number];

/** `mcp:<server>/<tool>`: one tool of an MCP server named in the orchestrator config. */
export const MCP_TOOL_NAME = /^mcp:([a-z0-9][a-z0-9_-]{0,62})\/([A-Za-z0-9_.-]{1,128})$/;

/** @default per-call timeout of `cmd.run` and `http.fetch`. */
export const DEFAULT_TOOL_TIMEOUT_MS = 30_000;
/** Output of one call kept and returned (per stream for `cmd.run`); the rest is cut and `truncated` set. */
export const MAX_TOOL_OUTPUT_BYTES = 1024 * 1024;

export interface ToolGrantSpec {
  /** A built-in name or `mcp:<server>/<tool>`. */
  readonly name: string;
  /** `cmd.run`: argv patterns (`ls`, `python3 *`); empty: no command is allowed. */
  readonly allow: readonly string[];
  readonly timeoutMs: number;
  /** `approval: required`: how long a call waits for a human decision; absent: no approval. */
  readonly approvalTimeoutMs?: number;
}

/** @default how long an approval-required call waits for a decision (`approvalTimeout`). */
export const DEFAULT_APPROVAL_TIMEOUT_MS = 10 * 60_000;
/** The longest `approvalTimeout`. */
export const MAX_APPROVAL_TIMEOUT_MS = 60 * 60_000;

/** A `spec.tools` entry as written: a name, or a name with constraints. */
export type ToolGrantInput =
  | string
  | {
      name: string;
      allow?: string[] | undefined;
      timeout?: string | number | undefined;
      approval?: 'required' | 'none' | undefined;
      approvalTimeout?: string | number | undefined;
    };

/** Problems of one grant, as [message, sub-path] pairs; empty when valid. */
export function toolGrantProblems(entry: ToolGrantInput): Array<[string, readonly (string | number)[]]> {
  const name = typeof entry === 'string' ? entry : entry.name;
  const namePath = typeof entry === 'string' ? [] : ['name'];
  const problems: Array<[string, readonly (string | number)[]]> = [];
  const builtin = (BUILTIN_TOOL_NAMES as readonly string[]).includes(name);
  if (!builtin && !MCP_TOOL_NAME.test(name)) {
    problems.push([
      `unknown tool "${name}": a built-in (${BUILTIN_TOOL_NAMES.join(', ')}) or mcp:<server>/<tool>`,
      namePath,
    ]);
    return problems;
  }
  if (typeof entry === 'string') {
    if (name === 'cmd.run') {
      problems.push(['cmd.run needs an allow-list of commands', []]);
    }
    return problems;
  }
  if (entry.allow !== undefined && name !== 'cmd.run') {
    problems.push([`allow is a constraint of cmd.run, not of ${name}`, ['allow']]);
  }
  if (name === 'cmd.run') {
    if (entry.allow === undefined || entry.allow.length === 0) {
      problems.push(['cmd.run needs an allow-list, e.g. allow: [ls, "python3 *"]', ['allow']]);
    }
    entry.allow?.forEach((pattern, index) => {
      const error = commandPatternError(pattern);
      if (error !== undefined) problems.push([error, ['allow', index]]);
    });
  }
  if (entry.timeout !== undefined) {
    const parsed = parseDuration(entry.timeout);
    if (!parsed.ok) problems.push([parsed.error, ['timeout']]);
    else if (parsed.value > 10 * 60_000) problems.push(['a tool call may take at most 10m', ['timeout']]);
  }
  if (entry.approvalTimeout !== undefined) {
    const parsed = parseDuration(entry.approvalTimeout);
    if (entry.approval !== 'required') {
      problems.push(['approvalTimeout needs approval: required', ['approvalTimeout']]);
    } else if (!parsed.ok) problems.push([parsed.error, ['approvalTimeout']]);
    else if (parsed.value < 1000 || parsed.value > MAX_APPROVAL_TIMEOUT_MS) {
      problems.push(['approvalTimeout is between 1s and 1h', ['approvalTimeout']]);
    }
  }
  return problems;
}

/** Compiles validated grants (the schema ran `toolGrantProblems`); a later grant of the same name wins. */
export function compileToolGrants(entries: readonly ToolGrantInput[]): ToolGrantSpec[] {
  const byName = new Map<string, ToolGrantSpec>();
  for (const entry of entries) {
    const grant = typeof entry === 'string' ? { name: entry } : entry;
    const timeout = grant.timeout === undefined ? undefined : parseDuration(grant.timeout);
    const approval =
      'approval' in grant && grant.approval === 'required'
        ? grant.approvalTimeout === undefined
          ? { ok: true as const, value: DEFAULT_APPROVAL_TIMEOUT_MS }
          : parseDuration(grant.approvalTimeout)
        : undefined;
    byName.set(grant.name, {
      name: grant.name,
      allow: grant.allow ?? [],
      timeoutMs: timeout?.ok ? timeout.value : DEFAULT_TOOL_TIMEOUT_MS,
      ...(approval === undefined
        ? {}
        : { approvalTimeoutMs: approval.ok ? approval.value : DEFAULT_APPROVAL_TIMEOUT_MS }),
    });
  }
  return [...byName.values()];
}

// --- cmd.run allow-list -------------------------------------------------------------------------------------------

function commandPatternError(pattern: string): string | undefined {
  const tokens = pattern.trim().split(/\s+/);
  if (pattern.trim() === '') return 'an empty command pattern';
  if (tokens[0] === '*') return `"${pattern}": the command itself must be named, not "*"`;
  if (tokens.slice(0, -1).includes('**')) return `"${pattern}": "**" may only end a pattern`;
  return undefined;
}

/**
 * Does `argv` match a pattern? Tokens are compared one to one; `*` matches exactly one argument, a final `*` or `**`
 * any number of remaining ones (zero included). The command is compared by its exact name: `ls` does not match
 * `/workspace/ls`, so a file the caller wrote cannot pass for an allowed command. No shell ever runs the argv.
 */
export function commandAllowed(patterns: readonly string[], argv: readonly string[]): string | undefined {
  for (const pattern of patterns) {
    const tokens = pattern.trim().split(/\s+/);
    const last = tokens[tokens.length - 1];
    const rest = last === '*' || last === '**';
    const fixed = rest ? tokens.slice(0, -1) : tokens;
    if (rest ? argv.length < fixed.length : argv.length !== fixed.length) continue;
    if (fixed.every((token, i) => token === '*' || token === argv[i])) return pattern;
  }
  return undefined;
}

// --- argument schemas --------------------------------------------------------------------------------------------

const Path = z.string().min(1).max(4096);
export const BUILTIN_ARGS = {
  'fs.read': z.strictObject({ path: Path.meta({ description: 'Absolute, or relative to /workspace.' }) }),
  'fs.write': z.strictObject({
    path: Path,
    content: z.string().max(MAX_TOOL_OUTPUT_BYTES).meta({ description: 'UTF-8 text; replaces the file.' }),
  }),
  'fs.list': z.strictObject({ path: Path.default('/workspace') }),
  'fs.edit': z.strictObject({
    path: Path,
    oldText: z.string().min(1).meta({ description: 'Text that must occur exactly once in the file.' }),
    newText: z.string(),
  }),
  'cmd.run': z.strictObject({
    argv: z.array(z.string().max(4096)).min(1).max(256).meta({
      description: 'The command and its arguments (no shell); must match the allow-list of the grant.',
    }),
    cwd: Path.optional(),
    stdin: z.string().max(MAX_TOOL_OUTPUT_BYTES).optional(),
  }),
  'http.fetch': z.strictObject({
    url: z
      .string()
      .max(8192)
      .meta({ description: 'http:// or https:// URL; its host must be allowed by the egress policy.' }),
    method: z.enum(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']).default('GET'),
    headers: z.record(z.string().max(256), z.string().max(8192)).default({}),
    body: z.string().max(MAX_TOOL_OUTPUT_BYTES).optional(),
  }),
} as const;
export type BuiltinArgs = { [K in BuiltinToolName]: z.infer<(typeof BUILTIN_ARGS)[K]> };

const DESCRIPTIONS: Record<BuiltinToolName, string> = {
  'fs.read': "Reads a UTF-8 text file inside the agent's sandbox.",
  'fs.write': 'Writes (creates or replaces) a UTF-8 text file inside the sandbox, under a writable path.',
  'fs.list': 'Lists a directory inside the sandbox.',
  'fs.edit': 'Replaces the one occurrence of oldText by newText in a file inside the sandbox.',
  'cmd.run':
    'Runs an allowed command (argv, no shell) inside the sandbox; returns exit code, stdout and stderr.',
  'http.fetch': 'Fetches a URL through the egress proxy of the sandbox (its network policy applies).',
};

export interface ToolDescription {
  readonly name: string;
  readonly description: string;
  /** JSON Schema of the arguments. */
  readonly inputSchema: Record<string, unknown>;
}

export function describeBuiltin(name: BuiltinToolName): ToolDescription {
  const schema = z.toJSONSchema(BUILTIN_ARGS[name], { io: 'input', unrepresentable: 'any' }) as Record<
    string,
    unknown
  >;
  const { $schema: _, ...inputSchema } = schema;
  return { name, description: DESCRIPTIONS[name], inputSchema };
}

export function isBuiltin(name: string): name is BuiltinToolName {
  return (BUILTIN_TOOL_NAMES as readonly string[]).includes(name);
}

/** Validates a built-in's arguments; a USAGE error naming the JSON path of each problem. */
export function parseBuiltinArgs<K extends BuiltinToolName>(name: K, args: unknown): BuiltinArgs[K] {
  const result = BUILTIN_ARGS[name].safeParse(args ?? {});
  if (result.success) return result.data as BuiltinArgs[K];
  const problems = result.error.issues.map((issue) => ({
    path: ['args', ...issue.path.map(String)].join('.'),
    message: issue.message,
  }));
  throw new AegisError(
    'USAGE',
    `${name}: invalid arguments (${problems.map((p) => `${p.path}: ${p.message}`).join('; ')})`,
    {
      problems,
      hint: `GET /v1/tools lists the argument schema of ${name}`,
    },
  );
}

// --- policy checks -----------------------------------------------------------------------------------------------

/** A call refused by policy: `reason` is phrased for a model to read and act on. */
export class ToolDenied extends Error {
  readonly rule: string;
  constructor(rule: string, reason: string) {
    super(reason);
    this.rule = rule;
  }
}

export function checkToolPath(
  tool: string,
  path: string,
  roots: { readonly readable: readonly string[]; readonly writable: readonly string[] },
  writes: boolean,
): void {
  const allowed = writes ? roots.writable : [...roots.readable, ...roots.writable];
  if (!underRoots(path, allowed)) {
    throw new ToolDenied(
      `path:${writes ? 'write' : 'read'}`,
      `${tool}: ${path} is outside the paths this agent may ${writes ? 'write' : 'read'} (${allowed.join(', ')})`,
    );
  }
}

export function checkCommand(grant: ToolGrantSpec, argv: readonly string[]): string {
  const pattern = commandAllowed(grant.allow, argv);
  if (pattern === undefined) {
    throw new ToolDenied(
      'cmd.allow',
      `cmd.run: ${JSON.stringify(argv)} is not in the allow-list (${grant.allow.map((p) => JSON.stringify(p)).join(', ')})`,
    );
  }
  return pattern;
}

/** The URL's host against the egress policy, before anything resolves it; the proxy decides again on the wire. */
export function checkFetchUrl(policy: NetworkPolicy, raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ToolDenied('url', `http.fetch: ${JSON.stringify(raw.slice(0, 200))} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ToolDenied('url', `http.fetch: only http and https URLs, not ${url.protocol}`);
  }
  if (url.username !== '' || url.password !== '') {
    throw new ToolDenied(
      'url',
      'http.fetch: credentials in the URL are refused; use a secret placeholder in a header',
    );
  }
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  // An IP literal is decided as the proxy will decide it (special ranges, CIDR rules); a name by what the name
  // alone can tell (the proxy resolves it and decides again).
  const decision = parseIp(host).ok
    ? evaluate(policy, { address: host, port })
    : evaluateName(policy, { host, port });
  if (decision !== undefined && decision.verdict === 'deny') {
    throw new ToolDenied(
      `network:${decision.rule}`,
      `http.fetch: ${host}:${port} is not allowed by the agent's network policy (${decision.reason})`,
    );
  }
  return url;
}

/** sha256 of the canonical JSON of the arguments: what the ledger keeps instead of them. */
export function argsDigest(args: unknown, sha256Hex: (text: string) => string): string {
  let text: string;
  try {
    text = canonicalJson((args ?? null) as JsonValue);
  } catch {
    text = JSON.stringify(args ?? null) ?? 'null';
  }
  return `sha256:${sha256Hex(text)}`;
}
