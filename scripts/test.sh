#!/usr/bin/env bash
# The whole test suite (`npm test`): setup (idempotent), type check, lint, schema freshness, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# The suite runs every runtime for real: setup installs them too (idempotent).
# It starts its own private dockerd below and stops it at the end, so setup must not start one it would leave behind.
AEGIS_SETUP_START_ENGINE=0 AEGIS_RUNTIMES="${AEGIS_RUNTIMES:-docker,gvisor}" bash scripts/setup.sh --quiet
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
    stop_pg='bash scripts/test-postgres.sh stop'
    trap "$stop_pg" EXIT
  fi
  AEGIS_TEST_DATABASE_URL="$(bash scripts/test-postgres.sh start)"
  export AEGIS_TEST_DATABASE_URL
  echo "$AEGIS_TEST_DATABASE_URL"
fi

echo "== test dockerd (scripts/test-dockerd.sh)"
if [ -n "${AEGIS_TEST_DOCKER_HOST:-}" ]; then
  echo "using the daemon in AEGIS_TEST_DOCKER_HOST"
elif [ "${AEGIS_SKIP_DOCKER:-}" = 1 ]; then
  echo "AEGIS_SKIP_DOCKER=1: the docker runtime tests are skipped"
else
  # Same rule as PostgreSQL: stopped on exit only when this run started it.
  if ! bash scripts/test-dockerd.sh status >/dev/null 2>&1; then
    stop_dockerd='bash scripts/test-dockerd.sh stop'
  fi
  AEGIS_TEST_DOCKER_HOST="$(bash scripts/test-dockerd.sh start)"
  export AEGIS_TEST_DOCKER_HOST
  echo "$AEGIS_TEST_DOCKER_HOST"
fi
trap '${stop_pg:-true}; ${stop_dockerd:-true}' EXIT

echo "== tests (node:test)"
# The tests' ledgers are witnessed and signed with a key of this run's own, never the host's
# (/var/lib/aegis/witness, /etc/aegis/node-ed25519.pem): nothing is left behind, and two runs never share.
test_state="$(mktemp -d /tmp/aegis-test-state.XXXXXX)"
cleanup_state() { rm -rf "$test_state"; }
trap 'cleanup_state; ${stop_pg:-true}; ${stop_dockerd:-true}' EXIT
export AEGIS_AUDIT_WITNESS_DIR="${AEGIS_AUDIT_WITNESS_DIR:-$test_state/witness}"
export AEGIS_NODE_KEY_FILE="${AEGIS_NODE_KEY_FILE:-$test_state/keys/node-ed25519.pem}"
node --test --test-concurrency=2 --test-timeout=120000 'src/**/*.test.ts' 'test/**/*.test.ts' 'sdk/**/*.test.ts'
