#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine, in a fresh virtual environment. Run it as
# root: the privileged tests skip otherwise (and in CI a skipped privileged test fails).
set -euo pipefail
extras='[test,cluster]'
source "$(dirname "$0")/venv.sh"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
