/**
 * Human approval of tool calls (issue 14, docs/adr/0096-tool-approval.md). A grant with `approval: required` makes
 * each call that passed policy wait here as a *pending approval* — id, subject (sandbox or execution), tool, the
 * arguments themselves (an approver must see what they approve) and their digest, caller, expiry — until a key
 * with the execute scope that owns the subject (or an admin) approves or denies it, or it expires. Every step is
 * one `tool.approval` ledger entry (requested, approved, denied, expired; who decided) — digests only: the
 * arguments are shown to approvers through the API, never written to the ledger.
 *
 * Held in memory: after a restart the pending calls are gone with the requests that waited on them; an approve or
 * deny of such an id is NOT_FOUND, so nothing runs that was not approved by the process that runs it.
 */
import { AUDIT_KINDS } from '../domain/audit/entry.ts';
import { hasScope, type Principal, requireScope } from '../domain/auth/api-key.ts';
import { AegisError } from '../domain/errors.ts';
import type { AuditLog, Clock } from './ports.ts';

/** What an approver sees (GET /v1/approvals). */
export interface PendingApproval {
  readonly id: string;
  /** Sandbox id or execution id: whose ledger the entries go to. */
  readonly subject: string;
  readonly tool: string;
  readonly arguments: unknown;
  readonly argsDigest: string;
  /** Who called: `agent` (the code in the sandbox), `loop`, or an API key id. */
  readonly by: string;
  /** The key that owns the subject (it, and admins, may decide). */
  readonly owner: string;
  readonly requestedAt: string;
  readonly expiresAt: string;
}

export type ApprovalDecision =
  | { readonly decision: 'approved'; readonly decidedBy: string }
  | { readonly decision: 'denied'; readonly decidedBy: string }
  | { readonly decision: 'expired' };

export interface ApprovalRequest {
  readonly subject: string;
  readonly owner: string;
  readonly tool: string;
  readonly arguments: unknown;
  readonly argsDigest: string;
  readonly by: string;
  readonly timeoutMs: number;
}

export interface ApprovalsDeps {
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly newId: () => string;
}

interface Waiting {
  readonly pending: PendingApproval;
  readonly settle: (decision: ApprovalDecision) => void;
}

export class Approvals {
  readonly #deps: ApprovalsDeps;
  readonly #waiting = new Map<string, Waiting>();

  constructor(deps: ApprovalsDeps) {
    this.#deps = deps;
  }

  /** Holds a call until it is decided or expires; resolves with the decision (never rejects). */
  request(request: ApprovalRequest): Promise<ApprovalDecision> {
    const { clock, audit } = this.#deps;
    const now = clock.now();
    const pending: PendingApproval = {
      id: this.#deps.newId(),
      subject: request.subject,
      tool: request.tool,
      arguments: request.arguments,
      argsDigest: request.argsDigest,
      by: request.by,
      owner: request.owner,
      requestedAt: new Date(now).toISOString(),
      expiresAt: new Date(now + request.timeoutMs).toISOString(),
    };
    const record = (state: string, decidedBy: string | null) =>
      audit.append(AUDIT_KINDS.toolApproval, pending.subject, {
        approval: pending.id,
        tool: pending.tool.slice(0, 200),
        argsDigest: pending.argsDigest,
        state,
        by: pending.by,
        decidedBy,
        expiresAt: pending.expiresAt,
      });
    return new Promise<ApprovalDecision>((resolve) => {
      const timer = clock.setTimeout(() => settle({ decision: 'expired' }), request.timeoutMs, {
        background: true,
      });
      const settle = (decision: ApprovalDecision) => {
        if (!this.#waiting.delete(pending.id)) return;
        timer.cancel();
        record(decision.decision, decision.decision === 'expired' ? null : decision.decidedBy);
        resolve(decision);
      };
      this.#waiting.set(pending.id, { pending, settle });
      record('requested', null);
    });
  }

  /** The pending approvals the principal may decide: those of subjects it owns; all of them for an admin. */
  list(principal: Principal): PendingApproval[] {
    requireScope(principal, 'read', 'listing approvals');
    return [...this.#waiting.values()]
      .map((w) => w.pending)
      .filter((p) => this.#mayDecide(principal, p))
      .sort((a, b) => a.requestedAt.localeCompare(b.requestedAt));
  }

  approve(principal: Principal, id: string): PendingApproval {
    return this.#decide(principal, id, 'approved');
  }

  deny(principal: Principal, id: string): PendingApproval {
    return this.#decide(principal, id, 'denied');
  }

  #decide(principal: Principal, id: string, decision: 'approved' | 'denied'): PendingApproval {
    requireScope(principal, 'execute', `${decision === 'approved' ? 'approving' : 'denying'} a tool call`);
    const waiting = this.#waiting.get(id);
    // Another owner's approval is as unknown as a decided, expired or pre-restart one.
    if (waiting === undefined || !this.#mayDecide(principal, waiting.pending)) {
      throw new AegisError('NOT_FOUND', `no pending approval ${JSON.stringify(id.slice(0, 100))}`, {
        hint: 'aegis approvals ls lists the pending ones; an approval ends when decided or expired, and with a server restart',
      });
    }
    waiting.settle({ decision, decidedBy: principal.id });
    return waiting.pending;
  }

  #mayDecide(principal: Principal, pending: PendingApproval): boolean {
    return pending.owner === principal.id || hasScope(principal.scopes, 'admin');
  }
}
