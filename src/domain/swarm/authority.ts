/**
 * What a swarm child may hold at most: the authority of its parent, stored with the child execution when it is
 * spawned and applied when the child's manifest is compiled for its run (ADR 0140). The child runs with the
 * intersection of its own manifest and this ceiling; a grandchild's ceiling is computed from the narrowed child,
 * so authority only ever shrinks down the tree. Plain JSON: it travels through the stores and across nodes.
 */
export interface AuthorityCeiling {
  /** The parent's effective egress rules (as written): a child rule survives only inside one of `allow`. */
  readonly network: { readonly allow: readonly string[]; readonly deny: readonly string[] };
  /** The parent's host mounts: a child mount must lie inside one of them (and is read-only unless that one is writable). */
  readonly mounts: readonly { readonly source: string; readonly writable: boolean }[];
  /** The parent's tool grants: name, `cmd.run` argv patterns and timeout. */
  readonly tools: readonly {
    readonly name: string;
    readonly allow: readonly string[];
    readonly timeoutMs: number;
  }[];
  /** The parent's model aliases and what the child may spend at most; null: no model access. */
  readonly llm: {
    readonly models: readonly string[];
    readonly budget: {
      readonly tokens: number | null;
      readonly calls: number | null;
      readonly usd: number | null;
    };
  } | null;
  /** Names of the secrets the parent holds. */
  readonly secrets: readonly string[];
  /** The parent's run timeout: a child never outlives what its parent may. */
  readonly timeoutMs: number;
  /**
   * Whether the parent may take global locks (`spec.swarm.locks.global`); absent (a ceiling stored before this
   * field existed) counts as false.
   */
  readonly globalLocks?: boolean;
  /** Levels the child may still spawn below it, and the tree's execution limit (least over its ancestors). */
  readonly swarm?: { readonly depthLeft: number; readonly executions: number | null };
}
