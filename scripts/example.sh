#!/usr/bin/env bash
# The quick start: install nspawn in a fresh virtual environment and run the example config.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
exec "$venv/bin/nspawn" run -c configs/linux-hello.json "$@"
