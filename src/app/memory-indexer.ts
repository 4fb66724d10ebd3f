/**
 * Auto-indexing (issue 17 item 3): when an execution of an agent with `spec.memory` ends, what its
 * `spec.memory.index` selects (input, output, a bounded summary of its last log lines) becomes ONE memory of the
 * agent's own scope, with the execution id and outcome (recall weighs succeeded above failed). Everything is in its
 * redacted form: the execution's redactor over every part, then any secret placeholder removed
 * (domain/memory/execution-memory.ts). Kept apart from runAgent, which only calls `indexExecution`.
 */

import type { CompiledAgent } from '../domain/manifest/compiled.ts';
import {
  type EndedExecution,
  executionMemoryText,
  type LogSummary,
  memoryOutcome,
} from '../domain/memory/execution-memory.ts';
import { type MemoryWiring, ownScope } from './memory-access.ts';

export interface IndexedExecution {
  /** The memory stored, or null when nothing was selected (or the agent has no memory). */
  readonly id: string | null;
}

/**
 * Stores the memory of an ended execution. Throws what Cortex throws (an embedder mismatch, a full disk): the caller
 * reports it without failing the execution.
 */
export async function indexExecution(
  wiring: MemoryWiring,
  agent: CompiledAgent,
  executionId: string,
  ended: EndedExecution,
  logs: LogSummary,
  clean: (text: string) => string,
): Promise<IndexedExecution> {
  const scope = ownScope(agent);
  const memory = agent.memory;
  if (scope === undefined || memory === undefined || memory.index.length === 0) return { id: null };
  const text = executionMemoryText(ended, memory.index, logs, clean);
  if (text === null) return { id: null };
  const record = await wiring.cortex.store(
    scope,
    text,
    { kind: 'execution', status: ended.status, parts: [...memory.index] },
    {
      executionId,
      outcome: memoryOutcome(ended.status),
      source: 'execution',
      ...(memory.ttlMs === null ? {} : { ttlMs: memory.ttlMs }),
    },
  );
  return { id: record.id };
}
