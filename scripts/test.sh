#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: system packages, a fresh virtual
# environment with the project and its test extras, then pytest. Run as root for the
# privileged tests (they skip otherwise, and fail in CI when they skip).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(python3-venv gcc libc6-dev libcjson-dev)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing Debian packages: ${missing[*]} (install them as root)" >&2
  fi
fi

venv=${NSPAWN_TEST_VENV:-.venv}
python3 -m venv --clear "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e '.[test]'
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
