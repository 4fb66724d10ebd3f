import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AegisError } from '../../domain/errors.ts';
import { parseConfigText } from './config-file.ts';

const GOOD = `llm:
  providers:
    openai: { kind: openai, baseUrl: "https://api.openai.com/v1", apiKeySecret: OPENAI_API_KEY }
    claude: { kind: anthropic, baseUrl: "https://api.anthropic.com/v1", apiKeySecret: ANTHROPIC_API_KEY }
  models:
    default: { provider: openai, model: gpt-4o-mini }
    smart: { provider: claude, model: claude-sonnet-4-5, maxTokens: 4096 }
  prices:
    default: { input: 0.15, output: 0.6 }
  timeout: 20s
`;

function problemsOf(fn: () => unknown): AegisError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof AegisError);
    return error;
  }
  assert.fail('expected an error');
}

describe('config file', () => {
  it('compiles providers, aliases, prices and units', () => {
    const { llm } = parseConfigText(GOOD, 'config.yaml');
    assert.equal(llm.timeoutMs, 20_000);
    assert.equal(llm.retries, 2);
    assert.deepEqual(llm.models.default, {
      alias: 'default',
      provider: 'openai',
      kind: 'openai',
      baseUrl: 'https://api.openai.com/v1',
      apiKeySecret: 'OPENAI_API_KEY',
      model: 'gpt-4o-mini',
      maxTokens: 1024,
      price: { input: 0.15, output: 0.6 },
    });
    assert.equal(llm.models.smart?.kind, 'anthropic');
    assert.equal(llm.models.smart?.price, null);
  });

  it('locates an unknown field with a did-you-mean', () => {
    const error = problemsOf(() =>
      parseConfigText(GOOD.replace('apiKeySecret: OPENAI', 'apiKey: OPENAI'), 'c.yaml'),
    );
    assert.equal(error.code, 'USAGE');
    const problem = error.problems[0]!;
    assert.equal(problem.path, 'llm.providers.openai.apiKey');
    assert.equal(problem.line, 3);
    assert.match(problem.hint ?? '', /apiKeySecret/);
  });

  it('compiles server budgets per key and per agent, and locates a bad window', () => {
    const text = `${GOOD}  budgets:
    keys:
      key_01abc: { calls: 100, usd: 2.5, window: 24h }
    agents:
      summarizer: { tokens: 50000 }
`;
    const { llm } = parseConfigText(text, 'c.yaml');
    assert.deepEqual(llm.budgets, {
      keys: {
        key_01abc: {
          rule: 'llm.budgets.keys.key_01abc',
          calls: 100,
          tokens: null,
          usd: 2.5,
          windowMs: 86_400_000,
        },
      },
      agents: {
        summarizer: {
          rule: 'llm.budgets.agents.summarizer',
          calls: null,
          tokens: 50000,
          usd: null,
          windowMs: null,
        },
      },
    });
    const error = problemsOf(() => parseConfigText(text.replace('window: 24h', 'window: daily'), 'c.yaml'));
    assert.equal(error.problems[0]!.path, 'llm.budgets.keys.key_01abc.window');
    assert.ok(error.problems[0]!.line !== undefined);
  });

  it('refuses an alias that names no provider, pointing at it', () => {
    const error = problemsOf(() =>
      parseConfigText(GOOD.replace('provider: claude', 'provider: claud'), 'c.yaml'),
    );
    assert.equal(error.problems[0]!.path, 'llm.models.smart.provider');
    assert.equal(error.problems[0]!.line, 7);
    assert.match(error.problems[0]!.hint ?? '', /openai, claude/);
  });

  it('refuses a key written into the file as a secret name', () => {
    const error = problemsOf(() =>
      parseConfigText(GOOD.replace('apiKeySecret: OPENAI_API_KEY', 'apiKeySecret: sk-live-123'), 'c.yaml'),
    );
    assert.equal(error.problems[0]!.path, 'llm.providers.openai.apiKeySecret');
  });

  it('applies env overrides, validated like the file', () => {
    const { llm } = parseConfigText(GOOD, 'c.yaml', {
      AEGIS_LLM_BASE_URL_OPENAI: 'http://127.0.0.1:9/v1',
      AEGIS_LLM_RETRIES: '0',
    });
    assert.equal(llm.models.default?.baseUrl, 'http://127.0.0.1:9/v1');
    assert.equal(llm.retries, 0);
    const error = problemsOf(() => parseConfigText(GOOD, 'c.yaml', { AEGIS_LLM_TIMEOUT: 'soon' }));
    assert.equal(error.problems[0]!.path, 'llm.timeout');
  });
  it('memory.embedder: auto by default; openai:<provider>/<model> names an OpenAI-compatible provider', () => {
    assert.deepEqual(parseConfigText(GOOD, 'c.yaml').memory, {
      embedder: { kind: 'auto' },
      sweepIntervalMs: 60_000,
    });
    const { memory } = parseConfigText(
      `${GOOD}memory:\n  embedder: openai:openai/text-embedding-3-small\n  sweepInterval: 5m\n`,
      'c.yaml',
    );
    assert.deepEqual(memory, {
      embedder: { kind: 'openai', provider: 'openai', model: 'text-embedding-3-small' },
      sweepIntervalMs: 300_000,
    });
  });

  it('memory.embedder: an unknown or non-OpenAI provider, or another word, is a located problem', () => {
    const at = (embedder: string) =>
      problemsOf(() => parseConfigText(`${GOOD}memory:\n  embedder: ${embedder}\n`, 'c.yaml')).problems[0]!;
    const unknown = at('openai:ollama/nomic-embed-text');
    assert.equal(unknown.path, 'memory.embedder');
    assert.equal(unknown.line, 12);
    assert.match(
      unknown.message,
      /provider "ollama", which llm.providers does not define \(it has openai, claude\)/,
    );
    assert.match(
      at('openai:claude/x').message,
      /kind anthropic; embeddings need an OpenAI-compatible provider/,
    );
    assert.match(at('bert').message, /write `auto`, `words`, `hash`, or `openai:<provider>\/<model>`/);
    const sweep = problemsOf(() => parseConfigText(`${GOOD}memory: {sweepInterval: soon}\n`, 'c.yaml'));
    assert.equal(sweep.problems[0]!.path, 'memory.sweepInterval');
  });
});
