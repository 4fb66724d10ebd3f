/**
 * The orchestrator's config file: `$AEGIS_CONFIG`, else `$AEGIS_HOME/config.yaml`, else `/etc/aegis/config.yaml`
 * (a missing file is an empty config). Every problem is located (`file:line:col` + JSON path), like agent.yaml.
 *
 * Env overrides (applied after the file, validated the same way):
 * - `AEGIS_LLM_TIMEOUT` (e.g. `30s`), `AEGIS_LLM_RETRIES` (integer), `AEGIS_LLM_RECORD_CONTENT` (`1`/`0`)
 * - `AEGIS_LLM_BASE_URL_<PROVIDER>`: the baseUrl of provider `<provider>` (upper-cased, `-` → `_`)
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isScalar, LineCounter, type Node, parseDocument } from 'yaml';
import { AegisError, type Problem } from '../../domain/errors.ts';
import { AegisConfig, compileLlmConfig, type LlmSettings } from '../../domain/llm/config.ts';
import { issuesToProblems } from '../../domain/manifest/validate.ts';
import { compileMemoryConfig, type MemorySettings } from '../../domain/memory/config.ts';
import { nodeAt } from '../manifest/yaml-loader.ts';

export interface LoadedConfig {
  /** The file read, or null when none exists. */
  readonly file: string | null;
  readonly config: AegisConfig;
  readonly llm: LlmSettings;
  readonly memory: MemorySettings;
}

type Env = Readonly<Record<string, string | undefined>>;

export function configPath(env: Env): string {
  if (env.AEGIS_CONFIG) return env.AEGIS_CONFIG;
  if (env.AEGIS_HOME) return join(env.AEGIS_HOME, 'config.yaml');
  return '/etc/aegis/config.yaml';
}

function configError(problems: Problem[], file: string): AegisError {
  return new AegisError('USAGE', `invalid config in ${file}: ${problems.length} problem(s)`, {
    problems,
    hint: 'fix the fields above (see docs/adr/0040-llm-gateway.md for the format)',
  });
}

function applyEnv(value: Record<string, unknown>, env: Env): Record<string, unknown> {
  const llm = { ...((value.llm as Record<string, unknown> | undefined) ?? {}) };
  let touched = false;
  if (env.AEGIS_LLM_TIMEOUT) {
    llm.timeout = env.AEGIS_LLM_TIMEOUT;
    touched = true;
  }
  if (env.AEGIS_LLM_RETRIES) {
    llm.retries = /^\d+$/.test(env.AEGIS_LLM_RETRIES) ? Number(env.AEGIS_LLM_RETRIES) : env.AEGIS_LLM_RETRIES;
    touched = true;
  }
  if (env.AEGIS_LLM_RECORD_CONTENT) {
    llm.recordContent = env.AEGIS_LLM_RECORD_CONTENT === '1' || env.AEGIS_LLM_RECORD_CONTENT === 'true';
    touched = true;
  }
  const providers = { ...((llm.providers as Record<string, Record<string, unknown>> | undefined) ?? {}) };
  for (const name of Object.keys(providers)) {
    const override = env[`AEGIS_LLM_BASE_URL_${name.toUpperCase().replaceAll('-', '_')}`];
    if (override) {
      providers[name] = { ...providers[name], baseUrl: override };
      touched = true;
    }
  }
  if (!touched) return value;
  return { ...value, llm: { ...llm, providers } };
}

/** Parses config text; `shown` names the file in messages. */
export function parseConfigText(text: string, shown: string, env: Env = {}): LoadedConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, strict: true });
  const locate = (node: Node | null | undefined): { line?: number; column?: number } => {
    const offset = node?.range?.[0];
    if (offset === undefined) return {};
    const pos = lineCounter.linePos(offset);
    return { line: pos.line, column: pos.col };
  };
  if (doc.errors.length > 0) {
    throw configError(
      doc.errors.map((error) => ({
        file: shown,
        ...(error.linePos?.[0] ? { line: error.linePos[0].line, column: error.linePos[0].col } : {}),
        path: '',
        message: `YAML syntax error: ${error.message.split('\n')[0]}`,
      })),
      shown,
    );
  }
  const raw = doc.toJS({ maxAliasCount: 100 }) ?? {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw configError([{ file: shown, path: '', message: 'the config is a mapping (llm: …)' }], shown);
  }
  const value = applyEnv(raw as Record<string, unknown>, env);
  const root = doc.contents as Node | null;
  const result = AegisConfig.safeParse(value);
  if (!result.success) {
    const problems = issuesToProblems(result.error.issues, value, AegisConfig).map((problem) => {
      const { segments, unknownKey, ...rest } = problem;
      const node = isScalar(root) ? null : nodeAt(root, segments, unknownKey !== undefined);
      return { ...rest, file: shown, ...locate(node) };
    });
    throw configError(problems, shown);
  }
  try {
    return {
      file: shown,
      config: result.data,
      llm: compileLlmConfig(result.data.llm),
      memory: compileMemoryConfig(result.data.memory, result.data.llm?.providers ?? {}),
    };
  } catch (error) {
    if (error instanceof AegisError) {
      const problems = error.problems.map((problem) => ({
        ...problem,
        file: shown,
        ...locate(nodeAt(root, problem.path.split('.'), false)),
      }));
      throw configError(problems, shown);
    }
    throw error;
  }
}

export async function loadConfig(env: Env = process.env): Promise<LoadedConfig> {
  const file = configPath(env);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' && !env.AEGIS_CONFIG) {
      return { ...parseConfigText('{}', file, env), file: null };
    }
    throw new AegisError('USAGE', `cannot read config ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return parseConfigText(text, file, env);
}
