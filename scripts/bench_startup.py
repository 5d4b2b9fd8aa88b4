#!/usr/bin/env python3
"""Start-up cost of the launcher: `nspawn --version`, `nspawn run --help`, a cached `validate`
and a repeated `run --dry-run`, timed in turns with `python -c pass`, N rounds, medians.

    python3 scripts/bench_startup.py [-n 30]

nspawn is the console script beside this interpreter (`.venv/bin/nspawn`), as users run it
(benchlib.nspawn_argv). Targets (issue 17, 2 cores): --version and run --help at most
python -c pass + 10 ms."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import benchlib

CONFIG = os.path.join(benchlib.ROOT, "configs", "hostcompute_nspawn.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=30)
    args = parser.parse_args()
    nspawn = benchlib.nspawn_argv()
    with tempfile.TemporaryDirectory() as work:
        env = benchlib.environment(work)
        base = "python -c pass"
        timings = benchlib.in_turns({
            base: [sys.executable, "-c", "pass"],
            "nspawn --version": nspawn + ["--version"],
            "nspawn run --help": nspawn + ["run", "--help"],
            "nspawn validate (cached)": nspawn + ["validate", CONFIG],
            "nspawn run --dry-run (repeated)": nspawn + ["run", "--dry-run", "-c", CONFIG],
        }, args.runs, env)
        uncached = benchlib.in_turns({"nspawn validate (no cache)": nspawn + ["validate", CONFIG]},
                                     max(5, args.runs // 3), {**env, "NSPAWN_NO_CACHE": "1"})
    print(f"{args.runs} rounds on {os.cpu_count()} CPUs, {sys.executable}")
    benchlib.print_timings(timings)
    benchlib.print_timings(uncached)
    for name in ("nspawn --version", "nspawn run --help"):
        if timings.has(name, base):
            benchlib.target(f"{name} at most python -c pass + 10 ms", timings.median_ms(name),
                            timings.median_ms(base) + 10,
                            f"python -c pass {timings.median_ms(base):.1f} ms; paired difference "
                            f"{timings.paired_ms(name, base):+.1f} ms")
        else:
            benchlib.target(name, None, None, timings.skipped.get(name) or timings.skipped.get(base, ""))
    benchlib.summary()


if __name__ == "__main__":
    main()
