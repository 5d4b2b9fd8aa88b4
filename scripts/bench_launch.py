#!/usr/bin/env python3
"""Time a no-op container (/bin/true, host root) with nspawn and with the other runtimes this
host has, N runs each, and print medians and ratios.

    sudo python3 scripts/bench_launch.py [--runs 30]

nspawn is timed three ways: the CLI without limits and with every limit (what a user waits
for, interpreter start included), and `nspawn.launch.run` in this process (the backend's own
cost). Runtimes that are not installed, or that need what this host lacks, are skipped and
said so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LIMITS = ["--memory", "256", "--cpu-percent", "50", "--cpus", "1", "--iops", "1000",
          "--io-bandwidth", "100M", "--max-processes", "64"]


def time_command(argv: list[str], runs: int, env: dict) -> list[float]:
    subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # warm the caches
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def time_in_process(runs: int) -> list[float]:
    from nspawn.config.resolve import load_config
    from nspawn.launch import run

    config = load_config(None, {"process_executable": "/bin/true"}, host=True)
    run(config)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = run(config)
        times.append(time.perf_counter() - start)
        assert result.exit_code == 0, result
    return times


def others() -> dict[str, list[str] | str]:
    """Name -> argv, or why it is skipped."""
    found: dict[str, list[str] | str] = {}
    found["unshare -mpfu --mount-proc"] = ["unshare", "-mpfu", "--mount-proc", "/bin/true"] if shutil.which("unshare") else "unshare is not installed"
    found["bwrap"] = (["bwrap", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-all", "/bin/true"]
                      if shutil.which("bwrap") else "bwrap (bubblewrap) is not installed")
    found["runc"] = "runc is not installed" if not shutil.which("runc") else "runc needs an OCI bundle; not built by this script"
    found["systemd-nspawn"] = (["systemd-nspawn", "-q", "-D", "/", "--volatile=overlay", "--register=no", "--pipe", "/bin/true"]
                               if shutil.which("systemd-nspawn") else "systemd-nspawn is not installed")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    state = tempfile.mkdtemp(prefix="nspawn-bench-")
    # Installed packages have their bytecode compiled; let the warm-up run write it here too.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["NSPAWN_STATE_DIR"] = state
    nspawn = [sys.executable, "-m", "nspawn", "-q", "run"]
    medians: dict[str, float] = {}
    rows: list[tuple[str, str]] = []

    def record(name: str, times: list[float]) -> None:
        medians[name] = statistics.median(times) * 1000
        rows.append((name, f"{medians[name]:8.1f} ms  (min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})"))

    record("nspawn run (CLI, no limits)", time_command(nspawn + ["--", "/bin/true"], args.runs, env))
    record("nspawn run (CLI, all limits)", time_command(nspawn + LIMITS + ["--", "/bin/true"], args.runs, env))
    record("python -c pass (interpreter start)", time_command([sys.executable, "-c", "pass"], args.runs, env))
    os.environ["NSPAWN_STATE_DIR"] = state
    record("nspawn.launch.run (in process)", time_in_process(args.runs))
    for name, argv in others().items():
        if isinstance(argv, str):
            rows.append((name, f"skipped: {argv}"))
            continue
        try:
            record(name, time_command(argv, args.runs, env))
        except (subprocess.CalledProcessError, OSError) as e:
            rows.append((name, f"skipped: it failed here ({e})"))
    shutil.rmtree(state, ignore_errors=True)

    print(f"{args.runs} runs of /bin/true on {os.cpu_count()} CPUs, {sys.executable}")
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"  {name:<{width}}  {text}")
    base = medians.get("unshare -mpfu --mount-proc")
    if base:
        print("ratios to unshare:")
        for name, value in medians.items():
            print(f"  {name:<{width}}  {value / base:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
