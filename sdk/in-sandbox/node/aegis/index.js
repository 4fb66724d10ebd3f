// AEGIS in-sandbox SDK for Node (ESM, no dependencies). Mounted read-only by the runtime: `import aegis from 'aegis'`.
// aegis.input() / aegis.output(v) / aegis.log(...) / aegis.llm.chat(messages, { model, tools, stream }) / aegis.tools.call(name, args)
// aegis.memory.store(text, meta) / aegis.memory.search(query, k, filter) / aegis.memory.forget(id)  (spec.memory)
// aegis.swarm.spawn(agent, input, { wait, timeout }) / aegis.swarm.child(id)  (spec.swarm; a refusal throws SwarmDenied)
// aegis.swarm.publish(topic, msg) / subscribe(topic, {after, timeout}) / lock(name, {ttl, wait}) → {token, release()}  (spec.swarm)
// Reads AEGIS_API_URL (default http://127.0.0.1:3129) and AEGIS_TOKEN. aegis.tools / memory / swarm slot in beside llm.
import { readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';

export class AegisError extends Error {
  constructor(message, status = null, code = null) {
    super(message);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
  }
}
export class AuthenticationError extends AegisError {}
export class PermissionDenied extends AegisError {}
export class BudgetExceeded extends AegisError {}
export class RateLimited extends AegisError {}
export class UpstreamError extends AegisError {}
export class ToolDenied extends PermissionDenied {}
export class MemoryDenied extends PermissionDenied {}
export class SwarmDenied extends PermissionDenied {}

function errorFor(status, body) {
  const message = body?.error?.message ?? `HTTP ${status}`;
  const code = body?.error?.code ?? null;
  if (status === 401) return new AuthenticationError(message, status, code);
  if (status === 403 && code === 'tool_denied') return new ToolDenied(message, status, code);
  if (status === 403 && code === 'memory_denied') return new MemoryDenied(message, status, code);
  if (status === 403 && code === 'swarm_denied') return new SwarmDenied(message, status, code);
  if (status === 403) return new PermissionDenied(message, status, code);
  if (status === 429 && code === 'budget_exhausted') return new BudgetExceeded(message, status, code);
  if (status === 429) return new RateLimited(message, status, code);
  if (status >= 500) return new UpstreamError(message, status, code);
  return new AegisError(message, status, code);
}

const baseUrl = () => (process.env.AEGIS_API_URL ?? 'http://127.0.0.1:3129').replace(/\/+$/, '');

async function post(path, body, method = 'POST') {
  let res;
  try {
    res = await fetch(baseUrl() + path, {
      method,
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${process.env.AEGIS_TOKEN ?? ''}`,
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch (error) {
    throw new AegisError(`AEGIS API unreachable at ${baseUrl()}: ${error.cause?.code ?? error.message}`);
  }
  if (!res.ok) throw errorFor(res.status, await res.json().catch(() => null));
  return res;
}

async function* deltas(res) {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline = buffer.indexOf('\n');
    while (newline !== -1) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      newline = buffer.indexOf('\n');
      if (!line.startsWith('data:')) continue;
      const data = line.slice(5).trim();
      if (data === '[DONE]') return;
      const event = JSON.parse(data);
      if (event.error) throw errorFor(500, event);
      const text = event.choices?.[0]?.delta?.content;
      if (text) yield text;
    }
  }
}

const llm = {
  /** Chat Completions through the gateway: {content, toolCalls, finishReason, usage}, or with stream an async iterator of text. */
  async chat(messages, { model = 'default', tools, stream = false, ...params } = {}) {
    const body = { model, messages, stream, ...params, ...(tools ? { tools } : {}) };
    const res = await post('/v1/chat/completions', body);
    if (stream) return deltas(res);
    const reply = await res.json();
    const choice = reply.choices[0];
    return {
      content: choice.message.content,
      toolCalls: choice.message.tool_calls ?? [],
      finishReason: choice.finish_reason,
      usage: reply.usage,
    };
  },
};

function longPost(path, text) {
  return new Promise((resolve, reject) => {
    const url = new URL(baseUrl() + path);
    const req = httpRequest(
      url,
      {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(text),
          authorization: `Bearer ${process.env.AEGIS_TOKEN ?? ''}`,
        },
      },
      (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', (error) =>
      reject(new AegisError(`AEGIS API unreachable at ${baseUrl()}: ${error.code ?? error.message}`)),
    );
    req.end(text);
  });
}

const tools = {
  /**
   * Calls a granted tool through the AEGIS tool gateway; a refused call throws ToolDenied with the reason. A tool
   * granted with `approval: required` blocks until a human approves (it runs) or denies / lets it time out
   * (ToolDenied) — up to an hour, so this uses node:http (fetch gives up on an answer after 5 minutes).
   */
  async call(name, args = {}) {
    const path = `/v1/tools/${encodeURIComponent(name).replace(/%3A/g, ':').replace(/%2F/g, '/')}`;
    const { status, text } = await longPost(path, JSON.stringify({ arguments: args }));
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {}
    if (status < 200 || status >= 300) throw errorFor(status, body);
    return body?.result;
  },
  /** The granted tools: [{name, description, inputSchema}]. */
  async list() {
    return (await (await post('/v1/tools', undefined, 'GET')).json()).tools;
  },
};

const memory = {
  /** Stores a memory in this agent's own scope (spec.memory): {id, text, meta, createdAt, …}. Secrets are redacted. */
  async store(text, meta = {}) {
    return (await post('/v1/memory/store', { text, meta })).json();
  },
  /**
   * The k memories most relevant to `query` (own scope, plus agents that share theirs with this one), best first:
   * [{id, text, meta, score, similarity, recency, outcomeWeight, agent, executionId, outcome, createdAt}].
   * `filter`: {meta: {key: value}, outcome, source, executionId, createdAfter}.
   */
  async search(query, k = 5, filter = undefined) {
    const body = { query, k, ...(filter ? { filter } : {}) };
    return (await (await post('/v1/memory/search', body)).json()).memories;
  },
  /** Deletes one of this agent's memories; true when it was deleted (an id of another agent is not found). */
  async forget(id) {
    try {
      return (await (await post('/v1/memory/forget', { id })).json()).forgotten === true;
    } catch (error) {
      if (error instanceof AegisError && error.status === 404) return false;
      throw error;
    }
  },
};

// --- swarm: spawn and children (issue 16, ADR 0140) ---
const swarmSpawn = {
  /**
   * Starts a child execution of `agent` (one of spec.swarm.canSpawn) with `input`; it runs with no more authority
   * than this one. Resolves to {id, agent, status, done, reason, output}: with `wait` (the default) once the child
   * ended or `timeout` seconds passed (then done is false — poll aegis.swarm.child(id)), else at once. A refusal
   * (canSpawn, maxChildren, maxDepth, budget.executions) throws SwarmDenied with the server's reason. node:http:
   * a wait may be longer than fetch keeps a request open.
   */
  async spawn(agent, input = null, { wait = true, timeout = 60 } = {}) {
    const body = { agent, input, wait, ...(timeout == null ? {} : { timeout }) };
    const { status, text } = await longPost('/v1/swarm/spawn', JSON.stringify(body));
    let parsed = null;
    try {
      parsed = JSON.parse(text);
    } catch {}
    if (status < 200 || status >= 300) throw errorFor(status, parsed);
    return parsed;
  },
  /** A child of this execution as it is now: {id, agent, status, done, reason, output}. */
  async child(id) {
    return (await post(`/v1/swarm/children/${encodeURIComponent(id)}`, undefined, 'GET')).json();
  },
};
// --- end swarm spawn ---
async function swarmCall(op, body) {
  const { status, text } = await longPost(`/v1/swarm/${op}`, JSON.stringify(body));
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch {}
  if (status < 200 || status >= 300) throw errorFor(status, parsed);
  return parsed;
}

const swarmBus = {
  /** Publishes a JSON value to a topic of this swarm (spec.swarm); returns its id (ordered per topic). */
  async publish(topic, message) {
    return (await swarmCall('publish', { topic, message })).id;
  },
  /**
   * Messages after `after` (the last id handled; keep it to resume after a restart, drop ids already seen), waiting
   * up to `timeout` seconds for the first: {messages: [{id, topic, sender, message, publishedAt}], cursor}.
   */
  async subscribe(topic, { after = 0, timeout = 30, limit = 100 } = {}) {
    return swarmCall('subscribe', { topic, after, timeout, limit });
  },
  /**
   * Takes a lock of this swarm (or every swarm's with global: true), waiting up to `wait` seconds in FIFO order;
   * the lease lasts `ttl` seconds. Returns {name, token, release(), renew(ttl)}: pass `token` to what you write.
   */
  async lock(name, { ttl = 30, wait = 30, global = false } = {}) {
    const lease = await swarmCall('lock', { name, ttl, wait, global });
    return {
      name,
      token: lease.token,
      expiresAt: lease.expiresAt,
      release: () => swarmCall('unlock', { name, token: lease.token, global }),
      renew: (seconds = ttl) => swarmCall('renew', { name, token: lease.token, ttl: seconds, global }),
    };
  },
  /** Whether `token` is still the current lease of `name`: {valid, current}. */
  async checkFence(name, token, { global = false } = {}) {
    return swarmCall('fence', { name, token, global });
  },
};

function input() {
  try {
    return JSON.parse(readFileSync(process.env.AEGIS_INPUT_FILE ?? '/run/aegis/input.json', 'utf8'));
  } catch (error) {
    if (error.code === 'ENOENT') return null;
    throw error;
  }
}

function output(value) {
  writeFileSync(process.env.AEGIS_OUTPUT_FILE ?? '/run/aegis/output.json', JSON.stringify(value));
}

function log(...args) {
  console.error(...args);
}

const swarm = { ...swarmSpawn, ...swarmBus };

const aegis = { input, output, log, llm, tools, memory, swarm };

export { input, llm, log, memory, output, swarm, tools };
export default aegis;
