#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine: system tools the tests use, then the package itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    command -v tcpreplay >/dev/null || need+=(tcpreplay)
    command -v bro-cut   >/dev/null || need+=(bro-aux)
    command -v ip        >/dev/null || need+=(iproute2)
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
