/**
 * Pagination cursors for execution lists: opaque to clients (base64url of `{c: createdAt, i: id}`), decoded back to
 * the store's `after` position. REST and gRPC share them.
 */
import { AegisError } from '../domain/errors.ts';

export function encodeCursor(record: { readonly createdAt: string; readonly id: string }): string {
  return Buffer.from(JSON.stringify({ c: record.createdAt, i: record.id })).toString('base64url');
}

export function decodeCursor(text: string, where = 'cursor'): { createdAt: string; id: string } {
  try {
    const value = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as unknown;
    if (typeof value === 'object' && value !== null) {
      const { c, i } = value as Record<string, unknown>;
      if (typeof c === 'string' && typeof i === 'string' && c.length < 64 && i.length < 128) {
        return { createdAt: c, id: i };
      }
    }
  } catch {
    // falls through to the error below
  }
  throw new AegisError('USAGE', `${where}: not a cursor returned by this API`, {
    hint: 'pass nextCursor from the previous page unchanged, or leave it out for the first page',
  });
}
