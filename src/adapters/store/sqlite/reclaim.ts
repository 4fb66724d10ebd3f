/**
 * Space reclaim for the SQLite files (the store's `aegis.db`, the ledger's `audit.db`) after a prune.
 */
import type { DatabaseSync } from 'node:sqlite';

/**
 * Gives a database's free pages back to the file system: `incremental_vacuum` on a database created with
 * `auto_vacuum = INCREMENTAL` (in steps, so writers wait at most one step), otherwise one full `VACUUM` that also
 * converts it (once; it rewrites the file and needs its size again in free space). Then the WAL is truncated.
 */
export function reclaimSqliteSpace(db: DatabaseSync): { beforeBytes: number; afterBytes: number } {
  const bytes = () => {
    const pages = Number(db.prepare('PRAGMA page_count').get()?.['page_count'] ?? 0);
    return pages * Number(db.prepare('PRAGMA page_size').get()?.['page_size'] ?? 4096);
  };
  const beforeBytes = bytes();
  const mode = Number(db.prepare('PRAGMA auto_vacuum').get()?.['auto_vacuum'] ?? 0);
  if (mode === 2) {
    for (;;) {
      const free = Number(db.prepare('PRAGMA freelist_count').get()?.['freelist_count'] ?? 0);
      if (free === 0) break;
      db.exec('PRAGMA incremental_vacuum(2000)');
      if (Number(db.prepare('PRAGMA freelist_count').get()?.['freelist_count'] ?? 0) >= free) break;
    }
  } else {
    db.exec('PRAGMA auto_vacuum = INCREMENTAL');
    db.exec('VACUUM');
  }
  db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
  return { beforeBytes, afterBytes: bytes() };
}
