#!/usr/bin/env bash
# The README's main command: set-up on a fresh machine (idempotent), then the main job — a local
# cluster (manager, logger, proxy, 2 workers) over the sample trace, logs in out/sample/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec starling run samples/sample.pcap --workers 2 --logdir out/sample "$@"
