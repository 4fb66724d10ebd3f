/**
 * Use-case: the loop of a declarative agent (`spec.task`, docs/adr/0088-declarative-agent-loop.md). AEGIS itself is
 * the agent's program: it asks the model (through the LLM gateway, under the execution's token and budget) with the
 * granted tools offered as functions, runs every tool call through the ToolGateway (policy, sandbox, `tool.call`
 * entry — a refusal goes back to the model as an error result it can read), takes the model's final answer as the
 * output, validates it (`exit_code` of the iteration's last `cmd.run`, `json_schema`, `regex`, `judge`), and in
 * `iterative` mode feeds failed verdicts back as a user message until an answer passes or `maxIterations` is spent.
 *
 * Trajectory: every step (model answer, tool call and result, verdicts) goes to `onStep` as one JSON object (the
 * execution's log lines); every iteration also appends one `agent.iteration` ledger entry holding counts, verdicts
 * and digests of the answer and transcript — never their contents (those stay in the execution's logs).
 */
import { canonicalJson, type JsonValue } from '../domain/audit/canonical-json.ts';
import { AUDIT_KINDS, type Sha256Hex } from '../domain/audit/entry.ts';
import { AegisError } from '../domain/errors.ts';
import type { LlmMessage, LlmPart, LlmRequest, LlmResponse, LlmTool } from '../domain/llm/canonical.ts';
import { StreamAccumulator } from '../domain/llm/canonical.ts';
import type { DeclarativeSpec } from '../domain/manifest/compiled.ts';
import type { Validator } from '../domain/manifest/schema.ts';
import { type PromptMemory, withMemories } from '../domain/memory/execution-memory.ts';
import type { ToolDescription } from '../domain/tools.ts';
import type { LlmGateway } from './llm-gateway.ts';
import type { AuditLog } from './ports.ts';
import type { ToolCallResult, ToolGateway, ToolTarget } from './tools.ts';

/** Port: one model call (non-streaming) for this execution, through the LLM gateway. */
export interface LoopModel {
  complete(request: LlmRequest): Promise<LlmResponse>;
}

/** Port: the execution's granted tools (a ToolGateway bound to its sandbox, `by: loop`). */
export interface LoopTools {
  list(): Promise<readonly ToolDescription[]>;
  call(name: string, args: unknown): Promise<ToolCallResult>;
}

/**
 * Port: runs the deployed agent `agent` with `input` (`{output, task, input}`) to completion and returns its output
 * (a `judge` validator). Aborting `signal` cancels the judge's run.
 */
export interface LoopJudge {
  run(
    agent: string,
    input: unknown,
    signal?: AbortSignal,
  ): Promise<{ readonly status: string; readonly output: unknown }>;
}

/** Port: checks a value against a JSON Schema: undefined when it passes, else why not. */
export type JsonSchemaCheck = (
  schema: Readonly<Record<string, unknown>>,
  value: unknown,
) => string | undefined;

export interface AgentLoopDeps {
  readonly model: LoopModel;
  readonly tools: LoopTools;
  readonly jsonSchema: JsonSchemaCheck;
  /** Required only by agents with a `judge` validator. */
  readonly judge?: LoopJudge;
  readonly audit: AuditLog;
  readonly sha256Hex: Sha256Hex;
  /** One trajectory step (the execution's log; contents included, the redactor applies there). */
  readonly onStep: (step: LoopStep) => void;
}

export interface AgentLoopRequest {
  /** The execution id: subject of the `agent.iteration` entries. */
  readonly executionId: string;
  readonly task: DeclarativeSpec;
  readonly input: unknown;
  /** Aborting stops the loop between steps (the caller decides the status). */
  readonly signal?: AbortSignal;
  /**
   * Memories recalled for the input (spec.memory): in the prompt at `{{memories}}`, or appended to the system
   * instruction when the template has no such placeholder (domain/memory/execution-memory.ts).
   */
  readonly memories?: readonly PromptMemory[];
}

export interface Verdict {
  readonly validator: 'exit_code' | 'json_schema' | 'regex' | 'judge';
  readonly passed: boolean;
  /** Why it failed (what the model is told), or a short note when it passed (the judge's score). */
  readonly detail: string;
}

export type LoopStep =
  | { readonly step: 'model'; readonly iteration: number; readonly text: string; readonly toolCalls: number }
  | {
      readonly step: 'tool';
      readonly iteration: number;
      readonly tool: string;
      readonly args: unknown;
      readonly outcome: 'allowed' | 'denied' | 'error';
      readonly result: string;
    }
  | {
      readonly step: 'verdict';
      readonly iteration: number;
      readonly passed: boolean;
      readonly verdicts: readonly Verdict[];
    };

export interface AgentLoopOutcome {
  readonly status: 'succeeded' | 'failed';
  /** The last answer: parsed JSON when it is JSON, else the text. */
  readonly output: unknown;
  /** `validation: …` when no answer passed; null on success. */
  readonly reason: string | null;
  readonly iterations: number;
}

/** The LoopModel of one execution: its gateway token, so its spec.llm grant, budget and `llm.call` entries apply. */
export function gatewayModel(gateway: Pick<LlmGateway, 'call'>, token: string): LoopModel {
  return {
    async complete(request) {
      const result = await gateway.call(token, request, 'loop');
      if (result.kind === 'complete') return result.response;
      const accumulator = new StreamAccumulator();
      for await (const event of result.events) accumulator.add(event);
      return accumulator.response();
    },
  };
}

/** The LoopTools of one execution: the tool gateway bound to its sandbox (`target.by` is `loop`). */
export function gatewayTools(gateway: ToolGateway, target: ToolTarget): LoopTools {
  return { list: () => gateway.list(target), call: (name, args) => gateway.call(target, name, args) };
}

/** Characters of a tool result handed back to the model (and logged); the rest is cut with a note. */
export const MAX_TOOL_RESULT_CHARS = 16 * 1024;

/** Function names as OpenAI-style APIs accept them (`^[A-Za-z0-9_-]{1,64}$`): `fs.read` → `fs_read`. */
export function functionName(tool: string): string {
  return tool
    .replace(/^mcp:/, 'mcp__')
    .replace(/[^A-Za-z0-9_-]/g, '_')
    .slice(0, 64);
}

/**
 * The first user message: `{{input}}` replaced by the input (a string as is, anything else as JSON) and, when
 * `memories` is given, `{{memories}}` by it — in one pass over the template, so neither value is searched for
 * placeholders: a recalled memory holding `{{input}}` (or an input holding `{{memories}}`) stays as written.
 */
export function renderPrompt(template: string, input: unknown, memories: string | null = null): string {
  const text = typeof input === 'string' ? input : JSON.stringify(input ?? null, null, 2);
  return template.replace(/\{\{(input|memories)\}\}/g, (placeholder, name: string) =>
    name === 'input' ? text : (memories ?? placeholder),
  );
}

/** The answer as output: parsed JSON (a ```json fence allowed) when it is JSON, else the text. */
export function answerValue(text: string): unknown {
  const fenced = /^\s*```(?:json)?\s*\n([\s\S]*?)\n\s*```\s*$/.exec(text);
  const body = (fenced?.[1] ?? text).trim();
  if (body.startsWith('{') || body.startsWith('[')) {
    try {
      return JSON.parse(body) as unknown;
    } catch {
      return text;
    }
  }
  return text;
}

function cut(text: string): string {
  return text.length <= MAX_TOOL_RESULT_CHARS
    ? text
    : `${text.slice(0, MAX_TOOL_RESULT_CHARS)}\n[… ${text.length - MAX_TOOL_RESULT_CHARS} more characters cut]`;
}

export async function runAgentLoop(
  deps: AgentLoopDeps,
  request: AgentLoopRequest,
): Promise<AgentLoopOutcome> {
  const { task } = request;
  const described = await deps.tools.list();
  const byFunction = new Map(described.map((tool) => [functionName(tool.name), tool.name]));
  const tools: LlmTool[] = described.map((tool) => ({
    name: functionName(tool.name),
    ...(tool.description ? { description: tool.description } : {}),
    parameters: tool.inputSchema as Readonly<Record<string, unknown>>,
  }));
  const { instruction, section } = withMemories(
    task.instruction,
    task.promptTemplate,
    request.memories ?? [],
  );
  const messages: LlmMessage[] = [
    {
      role: 'user',
      content: [{ type: 'text', text: renderPrompt(task.promptTemplate, request.input, section) }],
    },
  ];
  let output: unknown = null;
  let lastFailures = '';
  // The exit code of the last cmd.run so far (a check run in an earlier attempt still counts if nothing changed).
  let lastExitCode: number | null | undefined;
  for (let iteration = 1; iteration <= task.maxIterations; iteration++) {
    let answer: string | undefined;
    let toolCalls = 0;
    let modelCalls = 0;
    while (answer === undefined) {
      request.signal?.throwIfAborted();
      if (modelCalls >= task.maxToolCalls) break;
      const response = await deps.model.complete({
        model: task.model,
        system: instruction,
        messages: [...messages],
        tools,
        toolChoice: tools.length > 0 ? 'auto' : null,
        maxTokens: null,
        temperature: null,
        topP: null,
        stop: [],
        stream: false,
      });
      modelCalls++;
      messages.push({ role: 'assistant', content: response.content });
      const calls = response.content.filter(
        (part): part is Extract<LlmPart, { type: 'tool_call' }> => part.type === 'tool_call',
      );
      const text = response.content.map((part) => (part.type === 'text' ? part.text : '')).join('');
      deps.onStep({ step: 'model', iteration, text, toolCalls: calls.length });
      if (calls.length === 0) {
        answer = text;
        break;
      }
      const results: LlmPart[] = [];
      for (const call of calls) {
        request.signal?.throwIfAborted();
        toolCalls++;
        const tool = byFunction.get(call.name) ?? call.name;
        const { outcome, content, args, exitCode } = await callTool(deps.tools, tool, call.arguments);
        if (exitCode !== undefined) lastExitCode = exitCode;
        deps.onStep({ step: 'tool', iteration, tool, args, outcome, result: content });
        results.push({ type: 'tool_result', toolCallId: call.id, content, isError: outcome !== 'allowed' });
      }
      messages.push({ role: 'user', content: results });
    }
    const verdicts: Verdict[] =
      answer === undefined
        ? [
            {
              validator: 'exit_code',
              passed: false,
              detail: `no final answer after ${task.maxToolCalls} model turns (spec.execution.maxToolCalls)`,
            },
          ]
        : await validate(deps, task, answer, lastExitCode, request.input, request.signal);
    output = answer === undefined ? output : answerValue(answer);
    const passed = verdicts.every((verdict) => verdict.passed);
    deps.onStep({ step: 'verdict', iteration, passed, verdicts });
    deps.audit.append(AUDIT_KINDS.agentIteration, request.executionId, {
      iteration,
      modelCalls,
      toolCalls,
      passed,
      verdicts: verdicts.map((verdict) => ({ validator: verdict.validator, passed: verdict.passed })),
      answerDigest: answer === undefined ? null : deps.sha256Hex(answer),
      transcriptDigest: deps.sha256Hex(canonicalJson(messages as unknown as JsonValue)),
    });
    if (passed) return { status: 'succeeded', output, reason: null, iterations: iteration };
    lastFailures = verdicts
      .filter((verdict) => !verdict.passed)
      .map((verdict) => `${verdict.validator}: ${verdict.detail}`)
      .join('; ');
    if (iteration < task.maxIterations) {
      messages.push({
        role: 'user',
        content: [
          {
            type: 'text',
            text: `Your answer did not pass validation:\n${verdicts
              .filter((verdict) => !verdict.passed)
              .map((verdict) => `- ${verdict.validator}: ${verdict.detail}`)
              .join('\n')}\nFix this and give your final answer again.`,
          },
        ],
      });
    }
  }
  return {
    status: 'failed',
    output,
    reason: `validation: ${lastFailures}`.slice(0, 1000),
    iterations: task.maxIterations,
  };
}

async function callTool(
  tools: LoopTools,
  tool: string,
  rawArgs: string,
): Promise<{
  outcome: 'allowed' | 'denied' | 'error';
  content: string;
  args: unknown;
  exitCode?: number | null;
}> {
  let args: unknown;
  try {
    args = rawArgs.trim() === '' ? {} : (JSON.parse(rawArgs) as unknown);
  } catch {
    return {
      outcome: 'error',
      args: rawArgs,
      content: `error: the arguments of ${tool} are not valid JSON; call it again with a JSON object`,
    };
  }
  try {
    const result = await tools.call(tool, args);
    if (result.outcome === 'denied') {
      return { outcome: 'denied', args, content: `denied (${result.rule}): ${result.reason}` };
    }
    const exitCode =
      tool === 'cmd.run' ? ((result.result as { exitCode?: number | null }).exitCode ?? null) : undefined;
    return {
      outcome: 'allowed',
      args,
      content: cut(JSON.stringify(result.result)),
      ...(exitCode === undefined ? {} : { exitCode }),
    };
  } catch (error) {
    // Bad arguments, a missing file, an unavailable server: the model reads why and may try otherwise.
    const message =
      error instanceof AegisError ? `${error.message}${error.hint ? ` (${error.hint})` : ''}` : String(error);
    return { outcome: 'error', args, content: `error: ${message.slice(0, 2000)}` };
  }
}

async function validate(
  deps: AgentLoopDeps,
  task: DeclarativeSpec,
  answer: string,
  lastExitCode: number | null | undefined,
  input: unknown,
  signal: AbortSignal | undefined,
): Promise<Verdict[]> {
  return checkAnswer(deps, task.validation, {
    answer,
    value: answerValue(answer),
    exitCode: lastExitCode,
    exitCodeOf: 'the last cmd.run',
    task: task.instruction,
    input,
    ...(signal ? { signal } : {}),
  });
}

/** What the validators check: the answer as text and as a value, and the exit code they compare. */
interface Checked {
  readonly answer: string;
  readonly value: unknown;
  /** undefined: no command ran (the loop had no cmd.run). */
  readonly exitCode: number | null | undefined;
  /** Names what exited, in verdicts (`the last cmd.run`, `the agent`). */
  readonly exitCodeOf: string;
  /** What the judge is told the task was. */
  readonly task: string;
  readonly input: unknown;
  readonly signal?: AbortSignal;
}

/**
 * A code agent's output, checked once by `spec.execution.validation` after it succeeded (the same validators as the
 * loop's): `exit_code` compares the agent's exit code, `json_schema` its output, `regex` its output as text (a
 * string as is, anything else as JSON), `judge` runs the deployed judge agent with `{output, task, input}`.
 */
export function validateCodeOutput(
  deps: Pick<AgentLoopDeps, 'jsonSchema' | 'judge'>,
  validation: readonly Validator[],
  run: {
    readonly output: unknown;
    readonly exitCode: number | null;
    readonly task: string;
    readonly input: unknown;
    readonly signal?: AbortSignal;
  },
): Promise<Verdict[]> {
  const answer = typeof run.output === 'string' ? run.output : JSON.stringify(run.output ?? null);
  return checkAnswer(deps, validation, {
    answer,
    value: run.output,
    exitCode: run.exitCode,
    exitCodeOf: 'the agent',
    task: run.task,
    input: run.input,
    ...(run.signal ? { signal: run.signal } : {}),
  });
}

async function checkAnswer(
  deps: Pick<AgentLoopDeps, 'jsonSchema' | 'judge'>,
  validation: readonly Validator[],
  checked: Checked,
): Promise<Verdict[]> {
  const verdicts: Verdict[] = [];
  const { answer, value, exitCodeOf, input, signal } = checked;
  const lastExitCode = checked.exitCode;
  for (const validator of validation) {
    if ('exit_code' in validator) {
      verdicts.push(
        lastExitCode === undefined
          ? {
              validator: 'exit_code',
              passed: false,
              detail: 'no cmd.run has run; run the check command',
            }
          : lastExitCode === validator.exit_code
            ? { validator: 'exit_code', passed: true, detail: `exit code ${lastExitCode}` }
            : {
                validator: 'exit_code',
                passed: false,
                detail: `${exitCodeOf} exited with ${lastExitCode}, expected ${validator.exit_code}`,
              },
      );
    } else if ('json_schema' in validator) {
      const problem =
        value === answer && !/^\s*[[{]/.test(answer)
          ? 'the answer is not JSON; answer with the JSON document only'
          : deps.jsonSchema(validator.json_schema, value);
      verdicts.push(
        problem === undefined
          ? { validator: 'json_schema', passed: true, detail: 'matches' }
          : { validator: 'json_schema', passed: false, detail: problem },
      );
    } else if ('regex' in validator) {
      const passed = new RegExp(validator.regex, 'u').test(answer);
      verdicts.push({
        validator: 'regex',
        passed,
        detail: passed ? 'matches' : `the answer does not match /${validator.regex}/`,
      });
    } else {
      verdicts.push(await judge(deps, validator.judge, { output: value, task: checked.task, input }, signal));
    }
  }
  return verdicts;
}

async function judge(
  deps: Pick<AgentLoopDeps, 'judge'>,
  spec: { readonly agent: string; readonly threshold: number },
  judged: { readonly output: unknown; readonly task: string; readonly input: unknown },
  signal: AbortSignal | undefined,
): Promise<Verdict> {
  if (deps.judge === undefined) {
    throw new AegisError('RUNTIME_UNAVAILABLE', `judge agent ${spec.agent} cannot run here`, {
      hint: 'judge validators run deployed agents: run the declarative agent on `aegis server`',
    });
  }
  const run = await deps.judge.run(spec.agent, judged, signal);
  const raw = run.output;
  const score =
    typeof raw === 'number'
      ? raw
      : raw !== null && typeof raw === 'object' && typeof (raw as { score?: unknown }).score === 'number'
        ? (raw as { score: number }).score
        : undefined;
  if (run.status !== 'succeeded' || score === undefined || !(score >= 0 && score <= 1)) {
    const got =
      run.status !== 'succeeded'
        ? `its execution ended ${run.status}`
        : `its output ${JSON.stringify(raw ?? null).slice(0, 120)} is not a score 0–1 (a number or {"score": n})`;
    return {
      validator: 'judge',
      passed: false,
      detail: `judge ${spec.agent} gave no score: ${got}; the answer is not accepted`,
    };
  }
  const reason =
    raw !== null && typeof raw === 'object' && typeof (raw as { reason?: unknown }).reason === 'string'
      ? ` — ${(raw as { reason: string }).reason.slice(0, 500)}`
      : '';
  return score >= spec.threshold
    ? { validator: 'judge', passed: true, detail: `score ${score}` }
    : {
        validator: 'judge',
        passed: false,
        detail: `judge ${spec.agent} scored ${score}, below ${spec.threshold}${reason}`,
      };
}
