#!/usr/bin/env bash
# Builds the project.
set -euo pipefail
for target in lib app; do
  echo "building $target"
done
