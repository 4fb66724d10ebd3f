/**
 * E2B's control plane (the REST API the `e2b` SDK reaches at E2B_API_URL), mapped onto live sandboxes: an E2B
 * template is a deployed agent (`name` or `name@revision`), its manifest the policy. Mounted under `/e2b`.
 *
 * Supported: create (`POST /sandboxes`, `/v2/sandboxes`), list (`GET /sandboxes`, `/v2/sandboxes` with state,
 * metadata and template filters, paged by `x-next-token`), get, kill, timeout, refreshes, pause, resume / connect.
 * Everything else under `/e2b` answers 501 with what is missing.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { LiveSandboxes, SandboxView } from '../../app/live-sandboxes.ts';
import type { Principal } from '../../domain/auth/api-key.ts';
import { AegisError } from '../../domain/errors.ts';
import type { ApiContext } from '../context.ts';
import type { TransportOf } from './index.ts';
import { E2bUnsupported, ENVD_VERSION, e2bErrorBody, e2bPrincipal } from './shared.ts';

/** E2B's sandbox as the SDK reads it (ListedSandbox / SandboxDetail). */
export interface E2bSandbox {
  readonly sandboxID: string;
  readonly templateID: string;
  readonly alias: string;
  readonly clientID: string;
  readonly startedAt: string;
  readonly endAt: string;
  readonly state: 'running' | 'paused';
  /** Not reported by AEGIS (the manifest's limits are in GET /v1/agents/NAME): 0. */
  readonly cpuCount: number;
  readonly memoryMB: number;
  readonly diskSizeMB: number;
  readonly metadata: Readonly<Record<string, string>>;
  readonly envdVersion: string;
}

export function e2bSandbox(view: SandboxView): E2bSandbox {
  return {
    sandboxID: view.id,
    templateID: view.agent.name,
    alias: view.agent.name,
    clientID: 'aegis',
    startedAt: view.createdAt,
    endAt: view.expiresAt,
    state: view.status === 'paused' ? 'paused' : 'running',
    cpuCount: 0,
    memoryMB: 0,
    diskSizeMB: 0,
    metadata: view.metadata,
    envdVersion: ENVD_VERSION,
  };
}

const MAX_TIMEOUT_S = 2_147_483; // the longest timer a sandbox can arm (~24.8 days)

function seconds(value: unknown, where: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0 || value > MAX_TIMEOUT_S) {
    throw new AegisError('USAGE', `${where}: a whole number of seconds between 1 and ${MAX_TIMEOUT_S}`, {
      problems: [{ path: where, message: `got ${JSON.stringify(value)}` }],
    });
  }
  return value * 1000;
}

function stringMap(value: unknown, where: string): Record<string, string> | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new AegisError('USAGE', `${where}: an object of strings`);
  }
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string') {
      throw new AegisError('USAGE', `${where}.${key}: a string`, {
        problems: [{ path: `${where}.${key}`, message: 'not a string' }],
      });
    }
  }
  return value as Record<string, string>;
}

function body(request: FastifyRequest): Record<string, unknown> {
  const value = request.body ?? {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new AegisError('USAGE', 'body: a JSON object');
  return value as Record<string, unknown>;
}

/** Fields of E2B's NewSandbox AEGIS can't honour: refused, never silently ignored (the manifest is the policy). */
const UNSUPPORTED_CREATE_FIELDS = ['mcp', 'network', 'iam', 'volumeMounts', 'autoResume', 'secure'] as const;

function isEmpty(value: unknown): boolean {
  if (value === undefined || value === null) return true;
  if (typeof value === 'object') return Object.keys(value).length === 0;
  return false;
}

/** `?metadata=k%3Dv%26k2%3Dv2` (the SDK url-encodes a query string into one parameter). */
function metadataFilter(raw: unknown): Record<string, string> | undefined {
  if (typeof raw !== 'string' || raw === '') return undefined;
  const filter: Record<string, string> = {};
  for (const [key, value] of new URLSearchParams(raw))
    filter[decodeURIComponent(key)] = decodeURIComponent(value);
  return filter;
}

function listFilter(query: Record<string, unknown>): (sandbox: E2bSandbox) => boolean {
  const states =
    typeof query['state'] === 'string'
      ? query['state'].split(',').filter((state) => state !== '')
      : Array.isArray(query['state'])
        ? (query['state'] as string[])
        : ['running', 'paused'];
  const metadata = metadataFilter(query['metadata']);
  const template =
    typeof query['template'] === 'string' && query['template'] !== '' ? query['template'] : undefined;
  return (sandbox) =>
    states.includes(sandbox.state) &&
    (template === undefined || sandbox.templateID === template) &&
    Object.entries(metadata ?? {}).every(([key, value]) => sandbox.metadata[key] === value);
}

export function e2bControlRoutes(ctx: ApiContext, transportOf: TransportOf) {
  const live = (): LiveSandboxes => {
    if (!ctx.sandboxes)
      throw new AegisError('RUNTIME_UNAVAILABLE', 'this server does not run live sandboxes');
    return ctx.sandboxes;
  };
  const principalOf = (request: FastifyRequest): Promise<Principal> =>
    e2bPrincipal(ctx, transportOf(request.raw), request.headers);
  const idOf = (request: FastifyRequest) => (request.params as { id: string }).id;
  const tokenOf = (request: FastifyRequest): string | undefined => {
    const key = request.headers['x-api-key'];
    return typeof key === 'string' ? key : undefined;
  };
  /** A live one (running or paused): E2B forgets ended sandboxes, so they answer 404 like unknown ones. */
  const current = async (principal: Principal, id: string): Promise<SandboxView> => {
    const view = await live().get(principal, id);
    if (view.status === 'terminated')
      throw new AegisError('NOT_FOUND', `sandbox ${id} has ended (${view.reason})`);
    return view;
  };

  async function create(request: FastifyRequest, reply: FastifyReply) {
    const principal = await principalOf(request);
    const input = body(request);
    for (const field of UNSUPPORTED_CREATE_FIELDS) {
      if (!isEmpty(input[field])) throw new E2bUnsupported(`body.${field}`);
    }
    if (input['autoPause'] === true) throw new E2bUnsupported('body.autoPause (pause on timeout)');
    const template = input['templateID'];
    if (typeof template !== 'string' || template === '') {
      throw new AegisError('USAGE', 'body.templateID: the name of a deployed agent', {
        hint: 'Sandbox.create("my-agent") — deploy it first: aegis deploy agent.yaml',
      });
    }
    const timeoutMs = seconds(input['timeout'], 'body.timeout');
    const metadata = stringMap(input['metadata'], 'body.metadata');
    const env = stringMap(input['envVars'], 'body.envVars');
    const view = await live().create(principal, {
      agent: template,
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
      ...(metadata ? { metadata } : {}),
      ...(env ? { env } : {}),
    });
    return reply.code(201).send({ ...sandboxWithToken(view, tokenOf(request)) });
  }

  function sandboxWithToken(view: SandboxView, token: string | undefined) {
    const sandbox = e2bSandbox(view);
    return {
      sandboxID: sandbox.sandboxID,
      templateID: sandbox.templateID,
      alias: sandbox.alias,
      clientID: sandbox.clientID,
      envdVersion: sandbox.envdVersion,
      // The data plane authenticates with the caller's own key: nothing new to leak, revoke, or store.
      envdAccessToken: token ?? null,
      domain: null,
    };
  }

  async function list(request: FastifyRequest, reply: FastifyReply, paged: boolean) {
    const principal = await principalOf(request);
    const query = (request.query ?? {}) as Record<string, unknown>;
    const all = (await live().listSandboxes(principal))
      .filter((view) => view.status !== 'terminated')
      .map(e2bSandbox)
      .filter(listFilter(query))
      .sort((a, b) => (query['order'] === 'asc' ? 1 : -1) * a.startedAt.localeCompare(b.startedAt));
    if (!paged) return reply.send(all);
    const limit = Math.min(Math.max(Number(query['limit'] ?? 100) || 100, 1), 100);
    const start = typeof query['nextToken'] === 'string' ? Number(query['nextToken']) || 0 : 0;
    const page = all.slice(start, start + limit);
    if (start + limit < all.length) void reply.header('x-next-token', String(start + limit));
    return reply.send(page);
  }

  return async function plugin(app: FastifyInstance): Promise<void> {
    app.setErrorHandler(async (error, _request, reply) => {
      if (error instanceof E2bUnsupported) return reply.code(501).send({ code: 501, message: error.message });
      const { status, body: answer } = e2bErrorBody(error, ctx.serverPaths ?? []);
      return reply.code(status).send(answer);
    });
    app.setNotFoundHandler(async (request, reply) =>
      reply.code(501).send({
        code: 501,
        message: new E2bUnsupported(`${request.method} ${request.url.split('?')[0]}`).message,
      }),
    );

    app.post('/sandboxes', create);
    app.post('/v2/sandboxes', create);
    app.get('/sandboxes', (request, reply) => list(request, reply, false));
    app.get('/v2/sandboxes', (request, reply) => list(request, reply, true));
    app.get('/sandboxes/:id', async (request, reply) => {
      const principal = await principalOf(request);
      return reply.send(e2bSandbox(await current(principal, idOf(request))));
    });
    app.delete('/sandboxes/:id', async (request, reply) => {
      const principal = await principalOf(request);
      await current(principal, idOf(request));
      await live().kill(principal, idOf(request));
      return reply.code(204).send();
    });
    app.post('/sandboxes/:id/timeout', async (request, reply) => {
      const principal = await principalOf(request);
      const timeoutMs = seconds(body(request)['timeout'], 'body.timeout');
      if (timeoutMs === undefined) throw new AegisError('USAGE', 'body.timeout: seconds from now');
      await current(principal, idOf(request));
      await live().setLifetime(principal, idOf(request), timeoutMs);
      return reply.code(204).send();
    });
    app.post('/sandboxes/:id/refreshes', async (request, reply) => {
      const principal = await principalOf(request);
      const timeoutMs = seconds(body(request)['duration'], 'body.duration');
      await current(principal, idOf(request));
      if (timeoutMs !== undefined) await live().setLifetime(principal, idOf(request), timeoutMs);
      return reply.code(204).send();
    });
    app.post('/sandboxes/:id/pause', async (request, reply) => {
      const principal = await principalOf(request);
      const view = await current(principal, idOf(request));
      if (view.status === 'paused') throw new AegisError('CONFLICT', `sandbox ${view.id} is already paused`);
      await live().pause(principal, idOf(request));
      return reply.code(204).send();
    });
    const resume = async (request: FastifyRequest, reply: FastifyReply) => {
      const principal = await principalOf(request);
      const id = idOf(request);
      const timeoutMs = seconds(body(request)['timeout'], 'body.timeout');
      let view = await current(principal, id);
      const wasPaused = view.status === 'paused';
      if (wasPaused) view = await live().resume(principal, id);
      if (timeoutMs !== undefined) view = await live().setLifetime(principal, id, timeoutMs);
      return reply.code(wasPaused ? 201 : 200).send(sandboxWithToken(view, tokenOf(request)));
    };
    app.post('/sandboxes/:id/resume', resume);
    app.post('/sandboxes/:id/connect', resume);
    app.post('/v2/sandboxes/:id/connect', resume);
  };
}
