#!/usr/bin/env node
// `aegis-orchestrator [flags]` is `aegis server [flags]`: the same binary, named for service managers.
process.argv.splice(2, 0, 'server');
await import('./aegis.mjs');
