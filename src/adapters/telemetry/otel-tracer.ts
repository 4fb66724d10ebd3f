/**
 * The Tracer port on OpenTelemetry (ADR 0076): one span per execution, a child span per model call following the
 * GenAI semantic conventions (`gen_ai.*`), exported over OTLP/HTTP (JSON) in batches.
 *
 * Enabled by the operator's standard variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
 * `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`); `OTEL_SERVICE_NAME` (@default aegis). Prompts and completions go
 * into spans only when they are in the call record, i.e. when the operator enabled `llm.recordContent`.
 */
import { type Attributes, context, type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import type { ExecutionSpan, ExecutionSpanStart, TracedLlmCall, Tracer } from '../../app/ports.ts';

export interface OtelTracerOptions {
  /** Full OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces. */
  readonly url: string;
  /** @default aegis */
  readonly serviceName?: string;
  readonly serviceVersion?: string;
  /** Batch delay. @default 1000 ms (OTEL_BSP_SCHEDULE_DELAY overrides through tracerFromEnv) */
  readonly scheduledDelayMs?: number;
}

/** The traces URL the OTel variables name, or null when tracing is off. */
export function otlpTracesUrl(env: Readonly<Record<string, string | undefined>>): string | null {
  const traces = env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'];
  if (traces) return traces;
  const base = env['OTEL_EXPORTER_OTLP_ENDPOINT'];
  if (!base) return null;
  return `${base.replace(/\/+$/, '')}/v1/traces`;
}

export class OtelTracer implements Tracer {
  readonly #provider: TracerProvider;
  readonly #tracer: ReturnType<TracerProvider['getTracer']>;

  constructor(options: OtelTracerOptions) {
    this.#provider = new TracerProvider({
      resource: resourceFromAttributes({
        'service.name': options.serviceName ?? 'aegis',
        ...(options.serviceVersion ? { 'service.version': options.serviceVersion } : {}),
      }),
      spanProcessors: [
        new BatchSpanProcessor({
          exporter: new OTLPTraceExporter({ url: options.url }),
          scheduledDelayMillis: options.scheduledDelayMs ?? 1000,
        }),
      ],
    });
    this.#tracer = this.#provider.getTracer('aegis');
  }

  startExecution(start: ExecutionSpanStart): ExecutionSpan {
    const span = this.#tracer.startSpan(`execution ${start.agent}`, {
      kind: SpanKind.INTERNAL,
      startTime: start.startedAtMs,
      attributes: {
        'aegis.execution.id': start.executionId,
        'aegis.agent': start.agent,
        ...(start.revision === null ? {} : { 'aegis.agent.revision': start.revision }),
        'aegis.runtime': start.runtime,
      },
    });
    const parent = trace.setSpan(context.active(), span);
    let ended = false;
    return {
      llmCall: (call, endedAtMs) => {
        if (ended) return;
        const child = this.#tracer.startSpan(
          `chat ${call.upstreamModel ?? call.alias}`,
          {
            kind: SpanKind.CLIENT,
            startTime: endedAtMs - call.latencyMs,
            attributes: llmAttributes(call),
          },
          parent,
        );
        if (call.status !== 'ok') {
          child.setStatus({ code: SpanStatusCode.ERROR, message: call.error ?? call.status });
        }
        child.end(endedAtMs);
      },
      end: (outcome, endedAtMs) => {
        if (ended) return;
        ended = true;
        endExecution(span, outcome);
        span.end(endedAtMs);
      },
    };
  }

  /** Exports what is buffered, then stops. */
  async shutdown(): Promise<void> {
    await this.#provider.shutdown();
  }
}

function endExecution(span: Span, outcome: { status: string; reason: string | null }): void {
  span.setAttribute('aegis.execution.status', outcome.status);
  if (outcome.reason !== null) span.setAttribute('aegis.execution.reason', outcome.reason);
  if (outcome.status !== 'succeeded') {
    span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.reason ?? outcome.status });
  }
}

/** GenAI semantic conventions (gen_ai.*), plus AEGIS's own (aegis.llm.*). */
export function llmAttributes(call: TracedLlmCall): Attributes {
  const attributes: Attributes = {
    'gen_ai.operation.name': 'chat',
    'gen_ai.request.model': call.upstreamModel ?? call.alias,
    'gen_ai.usage.input_tokens': call.inputTokens,
    'gen_ai.usage.output_tokens': call.outputTokens,
    'aegis.llm.alias': call.alias,
    'aegis.llm.protocol': call.protocol,
    'aegis.llm.stream': call.stream,
    'aegis.llm.status': call.status,
    'aegis.llm.attempts': call.attempts,
    'aegis.llm.usd': call.usd,
  };
  if (call.system !== null) {
    attributes['gen_ai.provider.name'] = call.system;
    attributes['gen_ai.system'] = call.system; // the older name, still read by many backends
  }
  if (call.provider !== null) attributes['aegis.llm.provider'] = call.provider;
  if (call.responseModel !== null) attributes['gen_ai.response.model'] = call.responseModel;
  if (call.status !== 'ok') {
    // Low-cardinality: what kind of failure (the message is in the span status).
    attributes['error.type'] = call.status === 'error' ? 'upstream_error' : `aegis_${call.status}`;
  }
  if (call.prompt !== undefined) attributes['gen_ai.input.messages'] = JSON.stringify(call.prompt);
  if (call.completion !== undefined) {
    attributes['gen_ai.output.messages'] = JSON.stringify([
      { role: 'assistant', parts: [{ type: 'text', content: call.completion }] },
    ]);
  }
  return attributes;
}
