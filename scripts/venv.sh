#!/usr/bin/env bash
# Sourced by the quick-start scripts: Debian packages (as root) and a virtual environment at
# $venv with nspawn installed, with the test extras and the simulator's build packages when
# $extras asks for them. Idempotent and quick when nothing changed: the environment is made
# once, and nspawn is reinstalled only when the checkout or the extras differ from what
# was installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "nspawn setup: $*" >&2; }

packages=(python3-venv libseccomp2)  # libseccomp: the default seccomp filter is compiled with it
packages+=(libnftables1)  # network nat's firewall, through ctypes
if [ -n "${extras:-}" ]; then
  packages+=(gcc libc6-dev libcjson-dev)  # the tests build the simulated HCS library
  packages+=(docker-registry skopeo umoci apache2-utils)  # the image tests: registry, image builds, htpasswd
  packages+=(iproute2 nftables openssl)  # network namespaces (cluster and nat tests), nft to read the nat rules, TLS certificates (cluster and image tests)
  packages+=(less)  # a full-screen program on the payload's terminal (tests/linux/test_terminal.py)
fi
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    say "missing Debian packages: ${missing[*]} (install them as root)"
  fi
fi

venv=${NSPAWN_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  say "making the virtual environment $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
# What is installed is named by a digest of the checkout's package files and the extras asked
# for; extras once installed are kept, so the example after the tests leaves pytest there.
stamp="$venv/.nspawn-installed"
wanted="$( (echo "${extras:-}"; git ls-files -s setup.cfg pyproject.toml nspawn 2>/dev/null || find setup.cfg pyproject.toml nspawn -type f -exec cat {} +) | sha256sum | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$have" != "$wanted" ] || [ -n "$(git status --porcelain -- setup.cfg pyproject.toml nspawn 2>/dev/null)" ]; then
  say "installing nspawn${extras:-} into $venv"
  # A regular install, as users get it (an editable one adds setuptools' import hook, some
  # 20 ms to every start-up); the tests import the checkout itself.
  "$venv/bin/pip" install -q --disable-pip-version-check ".${extras:-}"
  echo "$wanted" > "$stamp"
fi
