#!/usr/bin/env bash
# Sourced by the quick-start scripts: Debian packages (as root) and a fresh virtual
# environment at $venv with nspawn installed (with its test extras when $extras says so).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

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

venv=${NSPAWN_VENV:-.venv}
python3 -m venv --clear "$venv"
"$venv/bin/pip" install -q --upgrade pip
# A regular install, as users get it (an editable one adds setuptools' import hook, some 20 ms to
# every start-up). The scripts reinstall on every call; the tests import the checkout itself.
"$venv/bin/pip" install -q ".${extras:-}"
