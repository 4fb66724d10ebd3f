/**
 * Which listener a request came through. Sockets accepted on the unix socket (mode 0600, owned by the server's
 * user) are remembered here; requests on them are trusted as the local user. Everything else is TCP and needs a key.
 */
export const unixSockets = new WeakSet<object>();

export function transportOf(socket: unknown): 'tcp' | 'unix' {
  return typeof socket === 'object' && socket !== null && unixSockets.has(socket) ? 'unix' : 'tcp';
}
