#!/usr/bin/env bash
# Deploys the build: has a syntax error on purpose (the `if` is never closed).
set -euo pipefail
if [ -n "${1:-}" ]; then
  echo "deploying to $1"
