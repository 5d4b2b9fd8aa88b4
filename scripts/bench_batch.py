#!/usr/bin/env python3
"""Jobs per second of `nspawn batch` over N no-op configs (/bin/true, host root) at -j 2, beside
a shell loop of `nspawn run -c` over the same configs and, where installed, a shell loop of
`bwrap`; with --cluster, also `nspawn batch --cluster` over a loopback `dask scheduler` and two
`nspawn worker`s of -j/2 CPUs each (the cluster extra); prints figures and ratios, asserts nothing.

    sudo python3 scripts/bench_batch.py [--jobs 200] [-j 2] [--cluster] [--profile]

--profile runs the batch in this process under cProfile and prints the top functions.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BWRAP = "bwrap --ro-bind / / --proc /proc --dev /dev --unshare-all /bin/true"


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def shell_loop(body: str, configs: list[str], env: dict) -> float:
    script = f"for c in {' '.join(map(shlex.quote, configs))}; do {body} || exit 1; done"
    return timed(["sh", "-c", script], env)


def profile(configs_dir: str, slots: int) -> None:
    import cProfile
    import pstats

    from nspawn.cli import cli

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        cli(["-q", "batch", configs_dir, "-j", str(slots)], prog_name="nspawn", standalone_mode=False)
    finally:
        profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def cluster_batch(nspawn: list[str], configs_dir: str, slots: int, work: str, env: dict) -> float:
    """Seconds of the batch on a loopback cluster: the scheduler and workers are started (and
    their start is not counted) and stopped here."""
    import signal
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    scheduler_env = {**env, "PYTHONPATH": ROOT}  # the scheduler reads the tasks, which name nspawn's code
    started = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                env=scheduler_env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for i in range(2):
            state = {"NSPAWN_STATE_DIR": os.path.join(work, f"worker{i}"), "NSPAWN_SCRATCH_DIR": os.path.join(work, f"scratch{i}")}
            worker = subprocess.Popen(nspawn + ["worker", address, "--cpus", str(max(slots // 2, 1))], env={**scheduler_env, **state},
                                      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            started.append(worker)
            for line in worker.stderr:
                if " serves " in line:
                    break
            else:
                raise SystemExit("a worker did not start")
            worker.stderr.close()
        return timed(nspawn + ["-q", "batch", "--cluster", address, configs_dir, "--report", os.path.join(work, "c.json")], env)
    finally:
        for process in reversed(started):
            process.send_signal(signal.SIGTERM)
            process.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("-j", type=int, default=2, dest="slots")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--cluster", action="store_true", help="also a batch over two local nspawn workers")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="nspawn-bench-batch-")
    configs_dir = os.path.join(work, "configs")
    os.mkdir(configs_dir)
    configs = []
    for i in range(args.jobs):
        configs.append(os.path.join(configs_dir, f"noop{i:04}.json"))
        with open(configs[-1], "w") as f:
            json.dump({"process_executable": "/bin/true"}, f)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(NSPAWN_STATE_DIR=os.path.join(work, "state"), NSPAWN_CACHE_DIR=os.path.join(work, "cache"))
    os.environ.update(NSPAWN_STATE_DIR=env["NSPAWN_STATE_DIR"], NSPAWN_CACHE_DIR=env["NSPAWN_CACHE_DIR"])
    # The console script beside this interpreter, as a user's loop would call it.
    script = os.path.join(os.path.dirname(sys.executable), "nspawn")
    nspawn = [script] if os.path.exists(script) else [sys.executable, "-m", "nspawn"]
    try:
        subprocess.run(nspawn + ["run", "-c", configs[0]], env=env, cwd=ROOT, check=True)  # warm caches, bytecode
        if args.profile:
            profile(configs_dir, args.slots)
            return 0
        rows = [("nspawn batch -j %d" % args.slots,
                 timed(nspawn + ["-q", "batch", configs_dir, "-j", str(args.slots), "--report", os.path.join(work, "r.json")], env))]
        if args.cluster:
            rows.append(("nspawn batch --cluster (2 workers)", cluster_batch(nspawn, configs_dir, args.slots, work, env)))
            with open(os.path.join(work, "c.json")) as f:
                assert json.load(f)["counts"]["passed"] == args.jobs
        rows.append(("shell loop of nspawn run -c", shell_loop(f"{shlex.join(nspawn)} run -c \"$c\"", configs, env)))
        if shutil.which("bwrap"):
            rows.append(("shell loop of bwrap", shell_loop(BWRAP, configs, env)))
        with open(os.path.join(work, "r.json")) as f:
            report = json.load(f)
        assert report["counts"]["passed"] == args.jobs, report["counts"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.jobs} no-op jobs (/bin/true) on {os.cpu_count()} CPUs, {sys.executable}")
    for name, seconds in rows:
        print(f"  {name:<36} {args.jobs / seconds:7.1f} jobs/s  ({seconds:.2f} s)")
    if not shutil.which("bwrap"):
        print("  shell loop of bwrap                  skipped: bwrap (bubblewrap) is not installed")
    batch = rows[0][1]
    loop = next(seconds for name, seconds in rows if name.startswith("shell loop of nspawn"))
    print(f"batch vs the shell loop of nspawn run: {loop / batch:.1f}x")
    if args.cluster:
        print(f"cluster batch vs the local batch: {rows[0][1] / rows[1][1]:.2f}x the local jobs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
