/**
 * The AEGIS TypeScript SDK: a client for the REST API of `aegis server`, and the bundle packer deploys use.
 *
 *   import { AegisClient } from '@aegis/sdk';
 *   const aegis = new AegisClient({ server: 'http://127.0.0.1:8088', apiKey: process.env.AEGIS_API_KEY });
 *   await aegis.deployAgent('./my-agent');
 *   const execution = await aegis.createExecution({ agent: 'my-agent', input: { text } }, { wait: '30s' });
 *
 * Self-contained (Node ≥ 20, one dependency: tar-stream); nothing here imports the server's source. See sdk/README.md.
 */
export {
  AegisClient,
  type AegisClientOptions,
  type CreateKeyOptions,
  type DeployAgentResult,
  type FollowLogsOptions,
  type ListExecutionsOptions,
  type ListMemoriesOptions,
  type LogStreamItem,
  type LogsOptions,
  type MemoryScopeOptions,
  parseRetryAfter,
  type RetryOptions,
  type WaitOptions,
} from './client.ts';
export { AegisApiError, type AegisApiErrorInit, type ApiProblem, isAegisApiError } from './errors.ts';
export {
  type BundleLimits,
  DEFAULT_BUNDLE_LIMITS,
  entryPathProblem,
  type PackAgentOptions,
  type PackedAgent,
  packAgent,
} from './pack.ts';
export type {
  CommandResult,
  CreateSandboxOptions,
  RunCommandOptions,
  Sandbox,
  SandboxCommand,
  SandboxCommandEvent,
  SandboxFileEntry,
} from './sandbox-wire.ts';
export { type SseEvent, SseParser } from './sse.ts';
export {
  type AgentDetail,
  type AgentRevision,
  type AgentSummary,
  type ApiKey,
  type Approval,
  type ApprovalDecided,
  type AuditEntry,
  type CreatedEdgeToken,
  type CreatedKey,
  type CreateEdgeTokenBody,
  type CreateExecutionBody,
  type CreateKeyBody,
  type DeployResult,
  type EdgeNode,
  type EdgeToken,
  type ErrorBody,
  EXECUTION_STATUSES,
  type Execution,
  type ExecutionList,
  type ExecutionStatus,
  type HealthStatus,
  isTerminalStatus,
  type LlmUsage,
  type LogLine,
  type LogPage,
  type Memory,
  type MemoryForgotten,
  type MemoryList,
  type MemoryOutcome,
  type MemoryReembedded,
  type MemorySearchBody,
  type MemorySearchResult,
  type MemorySource,
  type Node,
  type NodeList,
  type PoolView,
  type RecalledMemory,
  type RollbackResult,
  SCOPES,
  type Scope,
  type SwarmTree,
  TERMINAL_STATUSES,
  type Violation,
} from './wire.ts';
