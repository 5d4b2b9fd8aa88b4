#!/usr/bin/env python3
"""Start-up cost of the launcher: median wall time of `nspawn --version`, `nspawn validate` and
a repeated `nspawn run --dry-run` beside `python -c pass`, over N runs each.

nspawn is the console script beside this interpreter (`.venv/bin/nspawn`), as users run it: the
installed copy, byte-compiled by pip. `python -m nspawn` is not timed: it adds runpy's cost, which
users do not pay, and from the checkout it times files users do not run. When the installed
copy differs from the checkout, the script says so (refresh it with scripts/venv.sh).

Targets on a 2-core machine: --version within 35 ms of python -c pass; a repeated dry run
within 50 ms of it."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from installed import note_if_stale

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "hostcompute_nspawn.json")


def median_ms(argv: list[str], runs: int, env: dict) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env, cwd=ROOT)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=30)
    args = parser.parse_args()
    python = sys.executable
    nspawn = os.path.join(os.path.dirname(python), "nspawn")
    if not os.path.exists(nspawn):
        sys.exit(f"no console script at {nspawn}: run this with the interpreter of the venv nspawn is installed in")
    note_if_stale(python)
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NSPAWN_CACHE_DIR": cache}
        subprocess.run([nspawn, "validate", CONFIG], env=env, stdout=subprocess.DEVNULL, check=True)
        baseline = median_ms([python, "-c", "pass"], args.runs, env)
        rows = [
            ("nspawn --version", [nspawn, "--version"], 35),
            ("nspawn validate (cached)", [nspawn, "validate", CONFIG], None),
            ("nspawn run --dry-run (repeated)", [nspawn, "run", "--dry-run", "-c", CONFIG], 50),
        ]
        uncached_env = {**env, "NSPAWN_NO_CACHE": "1"}
        print(f"{'command':<36} {'median ms':>10} {'over pass':>10} {'ratio':>6}  target")
        print(f"{'python -c pass':<36} {baseline:>10.1f} {0:>10.1f} {1:>6.2f}")
        for name, argv, target in rows:
            ms = median_ms(argv, args.runs, env)
            verdict = "" if target is None else f"+{target} ms: {'met' if ms - baseline <= target else 'MISSED'}"
            print(f"{name:<36} {ms:>10.1f} {ms - baseline:>10.1f} {ms / baseline:>6.2f}  {verdict}")
        ms = median_ms([nspawn, "validate", CONFIG], max(5, args.runs // 3), uncached_env)
        print(f"{'nspawn validate (no cache)':<36} {ms:>10.1f} {ms - baseline:>10.1f} {ms / baseline:>6.2f}")


if __name__ == "__main__":
    main()
