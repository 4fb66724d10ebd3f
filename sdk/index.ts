/**
 * The AEGIS TypeScript SDK: a client for the REST API of `aegis server`.
 *
 *   import { AegisClient } from 'aegis/sdk';
 *   const aegis = new AegisClient({ server: 'http://127.0.0.1:8088', apiKey: process.env.AEGIS_API_KEY });
 *   const execution = await aegis.createExecution({ agent: 'email-summarizer', input: { text } }, { wait: '30s' });
 *
 * See sdk/README.md.
 */
export {
  AegisClient,
  type AegisClientOptions,
  type AgentDetail,
  type AgentRevision,
  type AgentSummary,
  type ApiKey,
  type AuditEntry,
  type CreatedKey,
  type CreateKeyOptions,
  type DeployResult,
  type Execution,
  type ExecutionList,
  type ExecutionStatus,
  type FollowLogsOptions,
  type HealthStatus,
  type ListExecutionsOptions,
  type LogLine,
  type LogPage,
  type LogStreamItem,
  type LogsOptions,
  parseRetryAfter,
  type RetryOptions,
  type RollbackResult,
  type Scope,
  type WaitOptions,
} from './client.ts';
export { AegisApiError, type AegisApiErrorInit, type ApiProblem, isAegisApiError } from './errors.ts';
export { type SseEvent, SseParser } from './sse.ts';
