#!/usr/bin/env bash
# The README's main command: set-up on a fresh machine (idempotent), then the main job on the sample.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m broker.demo "$@"
