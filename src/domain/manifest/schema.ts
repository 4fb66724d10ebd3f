/**
 * agent.yaml, version 1. The zod schema is the single source of truth: validation, the TypeScript type and the
 * exported JSON Schema (`aegis schema`, schema/agent.schema.json) all come from it. Objects are strict, so an
 * unknown field is an error (the loader adds a did-you-mean).
 */
import { z } from 'zod';
import { jsonSchemaProblem } from '../loop/json-schema.ts';
import { parseNetworkRule } from '../policy/network-rules.ts';
import { imageRefProblem } from '../runtime/image-ref.ts';
import { SecretRefs } from '../secrets/secret-ref.ts';
import { type ToolGrantInput, toolGrantProblems } from '../tools.ts';
import { parseCpu, parseDuration, parseSize } from '../units.ts';
import { checkInputSchema } from './input-schema.ts';

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function unitString(parse: (value: string | number) => { ok: boolean; error?: string }, example: string) {
  return z
    .union([z.string(), z.number()])
    .superRefine((value, ctx) => {
      const result = parse(value);
      if (!result.ok) ctx.addIssue({ code: 'custom', message: (result as { error: string }).error });
    })
    .meta({ description: `e.g. ${example}` });
}

export const Size = unitString(parseSize, '256Mi');
export const Duration = unitString(parseDuration, '30s');
export const Cpu = unitString(parseCpu, '500m');

export const Language = z.enum(['python', 'node', 'bash']);
export type Language = z.infer<typeof Language>;

export const Runtime = z
  .strictObject({
    language: Language.optional().meta({ description: 'Interpreter the entrypoint runs under.' }),
    entrypoint: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "Path of the agent's main file, relative to the directory holding agent.yaml." }),
    command: z.array(z.string().min(1)).min(1).optional().meta({
      description: 'Explicit argv, run with /agent as the working directory. Alternative to entrypoint.',
    }),
    image: z.string().min(1).max(4096).optional().meta({
      description:
        'isolation docker or gvisor: an image in the local Docker Engine (name[:tag], e.g. built by `aegis image build`) or an OCI image layout directory (oci:<dir>, ./<dir> relative to agent.yaml, or /<dir>); default: the host /usr view.',
    }),
  })
  .superRefine((runtime, ctx) => {
    // "needs an entrypoint or a command" is checked by Spec: a declarative agent (spec.task) has neither.
    if (runtime.entrypoint !== undefined && runtime.language === undefined && runtime.command === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: 'an entrypoint needs a language (python, node or bash) to know which interpreter runs it',
        path: ['language'],
      });
    }
    if (runtime.entrypoint !== undefined && runtime.command !== undefined) {
      ctx.addIssue({
        code: 'custom',
        message: 'give either entrypoint or command, not both',
        path: ['command'],
      });
    }
    if (runtime.image !== undefined) {
      const problem = imageRefProblem(runtime.image);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem, path: ['image'] });
    }
    if (runtime.entrypoint !== undefined) {
      const entry = runtime.entrypoint;
      if (entry.startsWith('/') || entry.split('/').includes('..')) {
        ctx.addIssue({
          code: 'custom',
          message: `entrypoint "${entry}" must be a path inside the agent directory (relative, no "..")`,
          path: ['entrypoint'],
        });
      }
    }
  });

/**
 * `auto`: the strongest runtime this host offers that enforces every rule of the agent (docs/adr/0030). Unset means
 * `sandbox` (the decision and why are in that ADR).
 */
export const Isolation = z.enum(['auto', 'sandbox', 'gvisor', 'docker', 'firecracker']);
export type Isolation = z.infer<typeof Isolation>;

/** One egress rule (`domain/policy/network-rules.ts`): host, `*.suffix`, IP or CIDR, optional `:port` / `:low-high`. */
export const NetworkRule = z
  .string()
  .superRefine((text, ctx) => {
    const parsed = parseNetworkRule(text);
    if (!parsed.ok) ctx.addIssue({ code: 'custom', message: parsed.error });
  })
  .meta({ description: 'e.g. api.example.com:443, *.example.com, 10.0.0.5:22, [2001:db8::/32]:443' });

/** Ports the orchestrator itself serves inside every sandbox (egress proxy, in-sandbox API): never exposable. */
export const RESERVED_SANDBOX_PORTS: readonly number[] = [3128, 3129];

/** A port of a live sandbox reachable through the server (docs/adr/0069-live-sandbox-ports.md). */
export const ExposedPort = z
  .number()
  .int()
  .min(1)
  .max(65535)
  .refine((port) => !RESERVED_SANDBOX_PORTS.includes(port), {
    message: `ports ${RESERVED_SANDBOX_PORTS.join(' and ')} are the orchestrator's own inside the sandbox`,
  });

export const Network = z.strictObject({
  expose: z
    .array(ExposedPort)
    .max(16)
    .refine((ports) => new Set(ports).size === ports.length, { message: 'a port is listed twice' })
    .optional()
    .meta({
      description:
        "Live sandboxes: ports on the sandbox's 127.0.0.1 reachable at /v1/sandboxes/{id}/ports/{port}/ with an API key (HTTP and WebSocket). Default: none.",
    }),
  allow: z
    .array(NetworkRule)
    .default([])
    .meta({ description: 'Destinations the agent may reach (default: none).' }),
  deny: z.array(NetworkRule).default([]).meta({ description: 'Destinations refused even if allowed.' }),
});

export const MountEntry = z.union([
  z.string().min(1).meta({ description: 'Absolute host path, mounted at the same path inside.' }),
  z.strictObject({
    source: z.string().min(1).meta({ description: 'Host path; relative paths are relative to agent.yaml.' }),
    target: z.string().min(1).meta({ description: 'Absolute path inside the sandbox.' }),
  }),
]);
export type MountEntry = z.infer<typeof MountEntry>;

export const Filesystem = z.strictObject({
  read: z.array(MountEntry).default([]).meta({ description: 'Host paths mounted read-only.' }),
  write: z.array(MountEntry).default([]).meta({ description: 'Host paths mounted read-write.' }),
});

export const Resources = z.strictObject({
  cpu: Cpu.optional().meta({ description: 'CPU quota, e.g. 500m = half a core. @default 1' }),
  memory: Size.optional().meta({ description: 'Memory cap incl. swap and /workspace. @default 256Mi' }),
  pids: z
    .number()
    .int()
    .min(4)
    .max(65536)
    .optional()
    .meta({ description: 'Max processes+threads. @default 64' }),
  disk: Size.optional().meta({ description: 'Size of the writable /workspace. @default 64Mi' }),
  timeout: Duration.optional().meta({ description: 'Wall-clock limit for one execution. @default 30s' }),
});

export const Security = z.strictObject({
  network: Network.default({ allow: [], deny: [] }),
  filesystem: Filesystem.default({ read: [], write: [] }),
  resources: Resources.default({}),
});

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export const Scaling = z
  .strictObject({
    warm: z.number().int().min(0).max(64).default(0).meta({
      description:
        'Sandboxes kept Warm (prepared, interpreter started) per deployed revision on `aegis server`, so an execution starts without waiting for one. 0: none.',
    }),
    maxConcurrent: z
      .number()
      .int()
      .min(1)
      .max(10_000)
      .optional()
      .meta({ description: 'Executions of this agent running at once on a server; more wait in the queue.' }),
    idleTimeout: Duration.optional().meta({
      description: 'Scale the warm pool to zero after this long without an execution (default 5m).',
    }),
    retryOnNodeLoss: z.boolean().optional().meta({
      description:
        'In a cluster: when the node running an execution of this agent dies, queue it again (another node runs it from the start) instead of failing it with reason node-lost. Only for agents that can safely run twice. @default false',
    }),
  })
  .meta({ description: 'How a server keeps this agent ready (ignored by `aegis run`).' });
export type Scaling = z.infer<typeof Scaling>;

/** Node label keys and values, as `aegis server --label` and `aegis edge join --label` take them. */
export const NODE_LABEL_KEY = /^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$/;
export const NODE_LABEL_VALUE = /^[A-Za-z0-9._-]{0,63}$/;

export const Placement = z
  .strictObject({
    labels: z
      .record(
        z
          .string()
          .regex(NODE_LABEL_KEY, 'label keys are lowercase letters, digits and . _ / -, e.g. region or site'),
        z.string().regex(NODE_LABEL_VALUE, 'label values are up to 63 letters, digits and . _ -'),
      )
      .default({})
      .meta({
        description:
          "Run only on nodes (servers or edge nodes) that carry every one of these labels (`aegis server --label k=v`, `aegis edge join --label k=v`). Empty: any node that offers the agent's runtime.",
      }),
  })
  .meta({
    description:
      'Where a cluster may run this agent. A node also needs the runtime `spec.isolation` resolves to, and a free slot (ignored by `aegis run`).',
  });
export type Placement = z.infer<typeof Placement>;

const MODEL_ALIAS = /^[a-z][a-z0-9-]{0,31}$/;

export const LlmBudget = z.strictObject({
  tokens: z
    .number()
    .int()
    .min(1)
    .optional()
    .meta({ description: 'Input + output tokens for one execution.' }),
  calls: z.number().int().min(1).optional().meta({ description: 'Model calls for one execution.' }),
  usd: z
    .number()
    .positive()
    .optional()
    .meta({ description: 'Cost in USD (price table in the server config).' }),
});

export const Llm = z
  .strictObject({
    models: z
      .array(z.string().regex(MODEL_ALIAS, 'a model alias from the server config, e.g. default, fast, smart'))
      .min(1)
      .default(['default'])
      .meta({ description: 'Model aliases the agent may call. @default [default]' }),
    budget: LlmBudget.default({}).meta({
      description: 'Exhausting any limit ends the execution (reason budget).',
    }),
  })
  .meta({
    description:
      'Model access through the AEGIS LLM gateway: the agent gets OPENAI_BASE_URL / ANTHROPIC_BASE_URL and a per-execution token, never a provider key.',
  });
export type Llm = z.infer<typeof Llm>;

/** One `spec.tools` entry (domain/tools.ts checks names and constraints). */
export const ToolGrant = z
  .union([
    z.string().min(1),
    z.strictObject({
      name: z.string().min(1).meta({
        description: 'fs.read, fs.write, fs.list, fs.edit, cmd.run, http.fetch or mcp:<server>/<tool>',
      }),
      allow: z.array(z.string()).optional().meta({
        description: 'cmd.run: argv patterns, e.g. ls, "python3 *" (* = one argument; a final * = any rest).',
      }),
      timeout: Duration.optional().meta({ description: 'Per-call limit. @default 30s' }),
      approval: z.enum(['required', 'none']).optional().meta({
        description:
          'required: each call waits for a human to approve it (GET /v1/approvals, aegis approvals approve|deny). @default none',
      }),
      approvalTimeout: Duration.optional().meta({
        description:
          'With approval: required, how long a call waits before it is refused (1s–1h). @default 10m',
      }),
    }),
  ])
  .superRefine((entry, ctx) => {
    for (const [message, path] of toolGrantProblems(entry as ToolGrantInput)) {
      ctx.addIssue({ code: 'custom', message, path: [...path] });
    }
  })
  .meta({
    description:
      'e.g. fs.read, {name: cmd.run, allow: [ls, "python3 *"], timeout: 10s}, mcp:github/search_issues',
  });

/** `spec.input`: a JSON Schema for the agent's input (checked by input-schema.ts; MCP serves it as inputSchema). */
export const InputSchema = z
  .record(z.string(), z.unknown())
  .superRefine((value, ctx) => {
    for (const problem of checkInputSchema(value)) {
      ctx.addIssue({ code: 'custom', message: problem.message, path: [...problem.segments] });
    }
  })
  .meta({
    description:
      "JSON Schema (2020-12, `type: object`) the execution input must satisfy; a bad input is refused with its JSON path. MCP clients see it as the agent tool's inputSchema. Default: any input.",
  });

/** `spec.task`: what a declarative agent is asked to do (docs/adr/0088-declarative-agent-loop.md). */
export const Task = z
  .strictObject({
    instruction: z
      .string()
      .min(1)
      .max(64 * 1024)
      .meta({
        description: 'The system prompt: what the agent is and how it works.',
      }),
    promptTemplate: z
      .string()
      .min(1)
      .max(64 * 1024)
      .default('{{input}}')
      .meta({
        description:
          'The first user message; `{{input}}` becomes the execution input (a string as is, anything else as JSON). @default "{{input}}"',
      }),
    model: z
      .string()
      .regex(MODEL_ALIAS, 'a model alias from spec.llm.models')
      .optional()
      .meta({ description: 'The model alias the loop calls. @default the first of spec.llm.models' }),
  })
  .meta({
    description:
      'A declarative agent: no code; AEGIS runs the model loop itself with the granted spec.tools (needs spec.llm, no entrypoint).',
  });
export type Task = z.infer<typeof Task>;

/** One `spec.execution.validation` entry: exactly one of the four kinds. */
export const Validator = z
  .union([
    z.strictObject({
      exit_code: z.number().int().min(0).max(255).meta({
        description: 'The exit code the last cmd.run of the iteration must have returned.',
      }),
    }),
    z.strictObject({
      json_schema: z
        .record(z.string(), z.unknown())
        .superRefine((schema, ctx) => {
          const problem = jsonSchemaProblem(schema);
          if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
        })
        .meta({
          description: 'JSON Schema (2020-12) the final answer, parsed as JSON, must satisfy.',
        }),
    }),
    z.strictObject({
      regex: z
        .string()
        .min(1)
        .max(4096)
        .superRefine((source, ctx) => {
          try {
            new RegExp(source, 'u');
          } catch (error) {
            ctx.addIssue({
              code: 'custom',
              message: `not a valid regular expression: ${(error as Error).message}`,
            });
          }
        })
        .meta({ description: 'A regular expression (JavaScript, u flag) the final answer must match.' }),
    }),
    z.strictObject({
      judge: z.strictObject({
        agent: z
          .string()
          .regex(DNS_LABEL, 'the name of a deployed agent')
          .meta({ description: 'A deployed agent run with {output, input}; its output has a score 0–1.' }),
        threshold: z
          .number()
          .min(0)
          .max(1)
          .default(0.7)
          .meta({ description: 'Lowest passing score. @default 0.7' }),
      }),
    }),
  ])
  .meta({
    description:
      'e.g. {exit_code: 0}, {json_schema: {type: object}}, {regex: "^OK"}, {judge: {agent: grader, threshold: 0.8}}',
  });
export type Validator = z.infer<typeof Validator>;

export const ExecutionSettings = z
  .strictObject({
    mode: z.enum(['one-shot', 'iterative']).default('one-shot').meta({
      description:
        'one-shot: one answer, validated once. iterative: failed validations are fed back. @default one-shot',
    }),
    // No zod default: a code agent may not set it (declarativeProblems), so "unset" must stay visible.
    maxIterations: z.number().int().min(1).max(50).optional().meta({
      description: 'iterative: answers tried before the execution fails (reason validation). @default 5',
    }),
    maxToolCalls: z.number().int().min(1).max(1000).optional().meta({
      description:
        'Model turns with tool calls per iteration before the iteration counts as failed. @default 50',
    }),
    validation: z.array(Validator).max(16).default([]).meta({
      description:
        "Checks of each final answer (a code agent's output, once, after it succeeded), all of which must pass. Default: none (any answer passes).",
    }),
  })
  .meta({
    description:
      'How a declarative agent (spec.task) runs: one-shot or iterative with validators. A code agent may set only `validation` (its output is checked once).',
  });
export type ExecutionSettings = z.infer<typeof ExecutionSettings>;

type SpecShape = {
  runtime: { entrypoint?: string | undefined; command?: string[] | undefined; language?: string | undefined };
  llm?: { models: string[] } | undefined;
  task?: { model?: string | undefined } | undefined;
  execution?:
    | { mode: string; maxIterations?: number | undefined; maxToolCalls?: number | undefined }
    | undefined;
};

/** Rules across spec.runtime, spec.task, spec.execution and spec.llm, as [message, path] pairs. */
function declarativeProblems(spec: SpecShape): Array<[string, readonly (string | number)[]]> {
  const { runtime, task } = spec;
  const coded = runtime.entrypoint !== undefined || runtime.command !== undefined;
  if (task === undefined) {
    if (!coded)
      return [
        [
          'spec.runtime needs an entrypoint (with a language) or a command, or the agent needs a spec.task',
          ['runtime', 'entrypoint'],
        ],
      ];
    // A code agent's output is validated once, after it succeeded: no loop to iterate or count turns of.
    const execution = spec.execution;
    if (execution === undefined) return [];
    const loopOnly: Array<[string, readonly (string | number)[]]> = [];
    if (execution.mode !== 'one-shot')
      loopOnly.push([
        `a code agent's output is validated once: mode ${execution.mode} feeds failures back to a model loop, which only declarative agents (spec.task) have; remove mode (or set one-shot)`,
        ['execution', 'mode'],
      ]);
    for (const key of ['maxIterations', 'maxToolCalls'] as const)
      if (execution[key] !== undefined)
        loopOnly.push([
          `${key} counts the model loop of a declarative agent (spec.task); a code agent may set only spec.execution.validation — remove ${key}`,
          ['execution', key],
        ]);
    return loopOnly;
  }
  const problems: Array<[string, readonly (string | number)[]]> = [];
  if (coded) {
    problems.push([
      'a declarative agent (spec.task) has no entrypoint or command: AEGIS runs the model loop itself',
      ['runtime', runtime.entrypoint !== undefined ? 'entrypoint' : 'command'],
    ]);
  }
  if (spec.llm === undefined) {
    problems.push([
      'a declarative agent (spec.task) calls a model: add spec.llm (e.g. {models: [default]})',
      ['task'],
    ]);
  } else if (task.model !== undefined && !spec.llm.models.includes(task.model)) {
    problems.push([
      `model "${task.model}" is not in spec.llm.models (${spec.llm.models.join(', ')})`,
      ['task', 'model'],
    ]);
  }
  return problems;
}

export const Spec = z
  .strictObject({
    runtime: Runtime.default({}),
    isolation: Isolation.default('sandbox'),
    security: Security.default({
      network: { allow: [], deny: [] },
      filesystem: { read: [], write: [] },
      resources: {},
    }),
    env: z
      .record(z.string().regex(ENV_NAME, 'environment variable names are letters, digits and _'), z.string())
      .default({})
      .meta({ description: 'Environment of the agent. Nothing of the host environment is passed.' }),
    secrets: SecretRefs.default([]).meta({
      description:
        'Secrets by name (`aegis secret set NAME`): the sandbox sees a per-execution placeholder in `env`; the egress proxy swaps it for the value only in plain-HTTP requests toward `hosts` (see docs/adr/0008-secrets.md).',
    }),
    scaling: Scaling.default({ warm: 0 }),
    placement: Placement.default({ labels: {} }),
    llm: Llm.optional(),
    tools: z.array(ToolGrant).max(256).default([]).meta({
      description:
        'Tools the agent may call through the AEGIS tool gateway (`aegis.tools.call`), each call checked and audited. Default: none.',
    }),
    input: InputSchema.optional(),
    task: Task.optional(),
    execution: ExecutionSettings.optional(),
  })
  .superRefine((spec, ctx) => {
    for (const [message, path] of declarativeProblems(spec)) {
      ctx.addIssue({ code: 'custom', message, path: [...path] });
    }
  });

export const Metadata = z.strictObject({
  name: z
    .string()
    .regex(DNS_LABEL, 'names are lowercase letters, digits and "-", 1-63 characters, e.g. email-summarizer'),
  version: z.string().min(1).default('0.0.0'),
  description: z.string().optional(),
  labels: z.record(z.string(), z.string()).default({}),
});

export const AgentManifest = z.strictObject({
  apiVersion: z.literal('aegis.dev/v1'),
  kind: z.literal('Agent'),
  metadata: Metadata,
  spec: Spec,
});
export type AgentManifest = z.infer<typeof AgentManifest>;

/** JSON Schema (draft 2020-12) of agent.yaml, as served by `aegis schema`. */
export function agentManifestJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(AgentManifest, { io: 'input', unrepresentable: 'any' }) as Record<
    string,
    unknown
  >;
  return {
    $id: 'https://aegis.dev/schemas/agent.v1.json',
    title: 'AEGIS agent manifest (agent.yaml)',
    ...schema,
  };
}
