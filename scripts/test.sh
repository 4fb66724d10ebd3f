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

echo "== test PostgreSQL (scripts/test-postgres.sh)"
if [ -n "${AEGIS_TEST_DATABASE_URL:-}" ]; then
  echo "using the server in AEGIS_TEST_DATABASE_URL"
elif [ "${AEGIS_SKIP_POSTGRES:-}" = 1 ]; then
  echo "AEGIS_SKIP_POSTGRES=1: the PostgresStore tests are skipped"
else
  # Stopped on exit only when this run started it: a cluster that was already up (a developer's) stays up.
  if ! bash scripts/test-postgres.sh status >/dev/null 2>&1; then
    trap 'bash scripts/test-postgres.sh stop' EXIT
  fi
  AEGIS_TEST_DATABASE_URL="$(bash scripts/test-postgres.sh start)"
  export AEGIS_TEST_DATABASE_URL
  echo "$AEGIS_TEST_DATABASE_URL"
fi

echo "== tests (node:test)"
node --test --test-concurrency=2 --test-timeout=120000 'src/**/*.test.ts' 'test/**/*.test.ts' 'sdk/**/*.test.ts'
