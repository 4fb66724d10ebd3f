#!/usr/bin/env bash
# One command for a fresh machine: install what AEGIS needs, check the host, run the email-summarizer example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo
node_modules/.bin/node bin/aegis.mjs doctor || true
echo
echo "$ aegis run examples/email-summarizer/agent.yaml"
exec node_modules/.bin/node bin/aegis.mjs run examples/email-summarizer/agent.yaml
