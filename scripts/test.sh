#!/usr/bin/env bash
# The whole test suite (`npm test`): setup (idempotent), type check, lint, schema freshness, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --quiet
export PATH="$PWD/node_modules/.bin:$PATH"
hash -r

echo "== typecheck (tsc --noEmit, strict)"
tsc --noEmit -p tsconfig.json

echo "== lint (biome)"
biome check .

echo "== schema/agent.schema.json is current"
node src/cli/bin.ts schema | diff -u schema/agent.schema.json - \
  || { echo "schema/agent.schema.json is stale: run npm run schema" >&2; exit 1; }

echo "== tests (node:test)"
node --test --test-concurrency=2 --test-timeout=120000 'src/**/*.test.ts' 'test/**/*.test.ts'
