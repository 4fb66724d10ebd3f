/**
 * Embedder over an OpenAI-compatible `POST {baseUrl}/embeddings` (OpenAI, Azure-style proxies, Ollama, llama.cpp
 * server, vLLM, LiteLLM…). The provider comes from the LLM config (domain/llm/config.ts: `baseUrl`, `model`, and the
 * API key resolved from the sealed secret named by `apiKeySecret`). The dimension is what the server returns for a
 * probe at `open`, so a model swap on the server changes the embedder id and is refused by Cortex until reembed.
 */
import type { Embedder } from '../../app/ports.ts';
import { l2Normalise } from '../../domain/cortex/memory.ts';
import { AegisError } from '../../domain/errors.ts';

export interface OpenAiEmbedderOptions {
  /** e.g. `https://api.openai.com/v1` (no trailing `/embeddings`). */
  readonly baseUrl: string;
  readonly model: string;
  /** Sent as `Authorization: Bearer …` when set. */
  readonly apiKey?: string | null;
  /** @default 30 s */
  readonly timeoutMs?: number;
  /** Texts per request. @default 64 */
  readonly batchSize?: number;
}

export class OpenAiEmbedder implements Embedder {
  readonly id: string;
  readonly dimension: number;
  readonly #options: OpenAiEmbedderOptions;

  /** Connects once (embeds a probe) to learn the dimension; UNAVAILABLE when the server can't answer. */
  static async open(options: OpenAiEmbedderOptions): Promise<OpenAiEmbedder> {
    const [probe] = await request(options, ['dimension probe']);
    return new OpenAiEmbedder(options, (probe as Float32Array).length);
  }

  private constructor(options: OpenAiEmbedderOptions, dimension: number) {
    this.#options = options;
    this.dimension = dimension;
    this.id = `openai:${options.model}/${dimension}`;
  }

  async embed(texts: readonly string[]): Promise<Float32Array[]> {
    const size = this.#options.batchSize ?? 64;
    const out: Float32Array[] = [];
    for (let i = 0; i < texts.length; i += size) {
      const vectors = await request(this.#options, texts.slice(i, i + size));
      for (const v of vectors) {
        if (v.length !== this.dimension) {
          throw new AegisError(
            'UNAVAILABLE',
            `embeddings server ${this.#options.baseUrl} returned ${v.length} floats for model ${this.#options.model}; it returned ${this.dimension} before`,
            {
              hint: 'the model behind the endpoint changed: restart so the new dimension is probed, then `aegis memory reembed`',
            },
          );
        }
        out.push(v);
      }
    }
    return out;
  }
}

async function request(options: OpenAiEmbedderOptions, input: readonly string[]): Promise<Float32Array[]> {
  const url = `${options.baseUrl.replace(/\/+$/, '')}/embeddings`;
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (options.apiKey) headers['authorization'] = `Bearer ${options.apiKey}`;
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers,
      body: JSON.stringify({ model: options.model, input, encoding_format: 'float' }),
      signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
    });
  } catch (error) {
    throw new AegisError(
      'UNAVAILABLE',
      `cannot reach the embeddings endpoint ${url}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  const body = await response.text();
  if (!response.ok) {
    throw new AegisError(
      'UNAVAILABLE',
      `embeddings endpoint ${url} answered ${response.status}: ${body.slice(0, 200)}`,
      {
        hint: response.status === 401 ? 'check the API key secret named in the LLM config' : undefined,
      },
    );
  }
  let data: unknown;
  try {
    data = (JSON.parse(body) as { data?: unknown }).data;
  } catch {
    data = undefined;
  }
  if (!Array.isArray(data) || data.length !== input.length) {
    throw new AegisError(
      'UNAVAILABLE',
      `embeddings endpoint ${url} sent no data[] of ${input.length} embeddings`,
    );
  }
  const ordered = [...data].sort((a, b) => Number(a?.index ?? 0) - Number(b?.index ?? 0));
  return ordered.map((item, i) => {
    const e = item?.embedding;
    if (!Array.isArray(e) || e.length === 0 || !e.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      throw new AegisError(
        'UNAVAILABLE',
        `embeddings endpoint ${url}: data[${i}].embedding is not an array of numbers`,
      );
    }
    return l2Normalise(Float32Array.from(e as number[]));
  });
}
