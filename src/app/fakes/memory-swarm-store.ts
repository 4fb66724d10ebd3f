/** The swarm bus and locks in memory (tests, and the reference the SQL stores are held to by the contract). */
import type { SwarmMessage } from '../swarm-bus.ts';
import type { AcquireOutcome, AcquireRequest, LockLease, LockView, SwarmStore } from '../swarm-locks.ts';

interface LockRow {
  token: number;
  holder: string | null;
  node: string | null;
  expiresAt: string | null;
}

interface Waiter {
  readonly waiter: string;
  readonly seq: number;
  until: string;
}

export class MemorySwarmStore implements SwarmStore {
  readonly #topics = new Map<string, SwarmMessage[]>();
  readonly #locks = new Map<string, LockRow>();
  readonly #queues = new Map<string, Waiter[]>();
  #waiterSeq = 0;

  async appendMessage(message: Omit<SwarmMessage, 'seq'>): Promise<SwarmMessage> {
    const key = `${message.swarm}\u0000${message.topic}`;
    const list = this.#topics.get(key) ?? [];
    this.#topics.set(key, list);
    const stored = { ...message, seq: list.length + 1 };
    list.push(stored);
    return stored;
  }

  async readMessages(swarm: string, topic: string, afterSeq: number, limit: number): Promise<SwarmMessage[]> {
    const list = this.#topics.get(`${swarm}\u0000${topic}`) ?? [];
    return list.filter((m) => m.seq > afterSeq).slice(0, limit);
  }

  async recentMessages(swarm: string, limit: number): Promise<SwarmMessage[]> {
    const all = [...this.#topics.values()].flat().filter((m) => m.swarm === swarm);
    all.sort(
      (a, b) => a.publishedAt.localeCompare(b.publishedAt) || a.topic.localeCompare(b.topic) || a.seq - b.seq,
    );
    return all.slice(-limit);
  }

  async listLocks(scope: string): Promise<LockView[]> {
    const views: LockView[] = [];
    for (const [key, row] of this.#locks) {
      const [rowScope, name] = key.split('\u0000') as [string, string];
      if (rowScope === scope)
        views.push({ name, token: row.token, holder: row.holder, node: row.node, expiresAt: row.expiresAt });
    }
    return views.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async acquireLock(request: AcquireRequest): Promise<AcquireOutcome> {
    const key = `${request.scope}\u0000${request.name}`;
    const row = this.#locks.get(key) ?? { token: 0, holder: null, node: null, expiresAt: null };
    this.#locks.set(key, row);
    const queue = (this.#queues.get(key) ?? []).filter(
      (w) => w.until >= request.at || w.waiter === request.waiter,
    );
    this.#queues.set(key, queue);
    const mine = queue.find((w) => w.waiter === request.waiter);
    if (mine) mine.until = request.waiterUntil;
    else queue.push({ waiter: request.waiter, seq: ++this.#waiterSeq, until: request.waiterUntil });
    queue.sort((a, b) => a.seq - b.seq);
    const free = row.holder === null || (row.expiresAt !== null && row.expiresAt < request.at);
    if (!free || queue[0]?.waiter !== request.waiter)
      return { acquired: false, heldUntil: free ? null : row.expiresAt };
    const expired = row.holder === null ? undefined : { holder: row.holder, token: row.token };
    row.token += 1;
    row.holder = request.holder;
    row.node = request.node;
    row.expiresAt = new Date(Date.parse(request.at) + request.ttlMs).toISOString();
    queue.shift();
    return {
      acquired: true,
      lease: lease(request.scope, request.name, row),
      ...(expired ? { expired } : {}),
    };
  }

  async leaveLockQueue(scope: string, name: string, waiter: string): Promise<void> {
    const key = `${scope}\u0000${name}`;
    this.#queues.set(
      key,
      (this.#queues.get(key) ?? []).filter((w) => w.waiter !== waiter),
    );
  }

  async renewLock(
    scope: string,
    name: string,
    token: number,
    holder: string,
    at: string,
    ttlMs: number,
  ): Promise<LockLease | undefined> {
    const row = this.#locks.get(`${scope}\u0000${name}`);
    if (row === undefined || row.token !== token || row.holder !== holder) return undefined;
    row.expiresAt = new Date(Date.parse(at) + ttlMs).toISOString();
    return lease(scope, name, row);
  }

  async releaseLock(scope: string, name: string, token: number, holder: string): Promise<boolean> {
    const row = this.#locks.get(`${scope}\u0000${name}`);
    if (row === undefined || row.token !== token || row.holder !== holder) return false;
    row.holder = null;
    row.node = null;
    row.expiresAt = null;
    return true;
  }

  async releaseLocksOf(holder: string): Promise<LockLease[]> {
    const released: LockLease[] = [];
    for (const [key, row] of this.#locks) {
      if (row.holder !== holder) continue;
      const [scope, name] = key.split('\u0000') as [string, string];
      released.push(lease(scope, name, row));
      row.holder = null;
      row.node = null;
      row.expiresAt = null;
    }
    return released;
  }

  async lockState(
    scope: string,
    name: string,
  ): Promise<{ token: number; holder: string | null; expiresAt: string | null } | undefined> {
    const row = this.#locks.get(`${scope}\u0000${name}`);
    return row === undefined ? undefined : { token: row.token, holder: row.holder, expiresAt: row.expiresAt };
  }
}

function lease(scope: string, name: string, row: LockRow): LockLease {
  return {
    scope,
    name,
    token: row.token,
    holder: row.holder as string,
    node: row.node,
    expiresAt: row.expiresAt as string,
  };
}
