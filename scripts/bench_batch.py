#!/usr/bin/env python3
"""Jobs per second of `nspawn batch` over N no-op configs (/bin/true, host root) at -j 2, beside
a shell loop of `bwrap` (taking turns, where installed) and of `nspawn run -c` over the same
configs, and of a batch ten times larger, with the launcher's peak RSS of each (GNU time);
with --cluster, also `nspawn batch --cluster` over a loopback `dask scheduler` and two
`nspawn worker`s of -j/2 CPUs each (the cluster extra); prints figures and ratios, asserts nothing.

    sudo python3 scripts/bench_batch.py [--jobs 200] [--scale 10] [-j 2] [--cluster] [--profile] [--no-loop]

Targets (issue 17, 2 cores): at least 200 jobs/s and at least the bwrap loop; ten times the
jobs in at most ten times the time, the launcher's peak RSS flat.

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

import benchlib

ROOT = benchlib.ROOT
sys.path.insert(0, ROOT)

BWRAP = "bwrap --ro-bind / / --proc /proc --dev /dev --unshare-all /bin/true"


def shell_loop(body: str, configs: list[str], env: dict) -> float:
    script = f"for c in {' '.join(map(shlex.quote, configs))}; do {body} || exit 1; done"
    return benchlib.once(["sh", "-c", script], env)


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
        return benchlib.once(nspawn + ["-q", "batch", "--cluster", address, configs_dir, "--report", os.path.join(work, "c.json")], env)
    finally:
        for process in reversed(started):
            process.send_signal(signal.SIGTERM)
            process.wait(60)


def configs_in(work: str, count: int) -> tuple[str, list[str]]:
    directory = os.path.join(work, f"configs{count}")
    os.mkdir(directory)
    configs = []
    for i in range(count):
        configs.append(os.path.join(directory, f"noop{i:05}.json"))
        with open(configs[-1], "w") as f:
            json.dump({"process_executable": "/bin/true"}, f)
    return directory, configs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--scale", type=int, default=10, help="the larger batch has this many times --jobs (0: none)")
    parser.add_argument("-j", type=int, default=2, dest="slots")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--cluster", action="store_true", help="also a batch over two local nspawn workers")
    parser.add_argument("--no-loop", action="store_true", help="skip the shell loop of nspawn run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="nspawn-bench-batch-")
    configs_dir, configs = configs_in(work, args.jobs)
    env = benchlib.environment(work)
    os.environ.update(NSPAWN_STATE_DIR=env["NSPAWN_STATE_DIR"], NSPAWN_CACHE_DIR=env["NSPAWN_CACHE_DIR"])
    nspawn = benchlib.nspawn_argv()
    batch = f"nspawn batch -j {args.slots}"
    bwrap = "shell loop of bwrap"
    rows: dict[str, float] = {}
    peaks: dict[int, int | str] = {}
    try:
        subprocess.run(nspawn + ["run", "-c", configs[0]], env=env, cwd=ROOT, check=True)  # warm caches, bytecode
        if args.profile:
            profile(configs_dir, args.slots)
            return 0

        def run_batch(directory: str, count: int) -> float:
            report = os.path.join(work, f"r{count}.json")
            seconds, peaks[count] = benchlib.timed_peak(
                nspawn + ["-q", "batch", directory, "-j", str(args.slots), "--report", report], env)
            with open(report) as f:
                counts = json.load(f)["counts"]
            assert counts["passed"] == count, counts
            return seconds

        # The batch and the bwrap loop in turns, twice, the better of each: the machine's drift hits both.
        loop = shlex.join(BWRAP.split()) if shutil.which("bwrap") else None
        turns = []  # the batch's own times: the better one is set against the loop's better one
        for _ in range(2):
            turns.append(run_batch(configs_dir, args.jobs))
            rows[batch] = min(turns)
            if loop:
                rows[bwrap] = min(rows.get(bwrap, float("inf")), shell_loop(loop, configs, env))
        if args.cluster:
            rows["nspawn batch --cluster (2 workers)"] = cluster_batch(nspawn, configs_dir, args.slots, work, env)
            with open(os.path.join(work, "c.json")) as f:
                assert json.load(f)["counts"]["passed"] == args.jobs
        if not args.no_loop:
            rows["shell loop of nspawn run -c"] = shell_loop(f"{shlex.join(nspawn)} run -c \"$c\"", configs, env)
        large = args.jobs * args.scale
        if args.scale:
            rows[f"{batch}, {large} jobs"] = run_batch(configs_in(work, large)[0], large)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"no-op jobs (/bin/true) on {os.cpu_count()} CPUs, {sys.executable}")
    for name, seconds in rows.items():
        count = large if name.endswith(f"{large} jobs") and args.scale else args.jobs
        print(f"  {name:<40} {count / seconds:7.1f} jobs/s  ({seconds:.2f} s for {count})")
    for count, peak in peaks.items():
        print(f"  {batch} of {count} jobs: launcher peak RSS "
              + (f"{peak / benchlib.MIB:.1f} MiB" if isinstance(peak, int) else f"not measured: {peak}"))
    if bwrap not in rows:
        print(f"  {bwrap:<40} skipped: bwrap (bubblewrap) is not installed")
    rate = args.jobs / rows[batch]
    benchlib.target(f"{batch} of {args.jobs} no-op jobs at least 200 jobs/s", rate, 200, f"{rows[batch]:.2f} s",
                    higher_is_better=True)
    if bwrap in rows:
        benchlib.target(f"{batch} at least a shell loop of bwrap (jobs/s)", rate, args.jobs / rows[bwrap],
                        "the loop's jobs/s, the better of two turns each", higher_is_better=True)
    else:
        benchlib.target(f"{batch} at least a shell loop of bwrap", None, None, "bwrap (bubblewrap) is not installed")
    if args.scale:
        # Against the mean of the smaller batch's turns, not the better one: the larger batch runs
        # once, and the better of two samples is biased low, which the ratio's
        # target would read as the larger batch slowing down.
        mean = sum(turns) / len(turns)
        ratio = rows[f"{batch}, {large} jobs"] / mean
        benchlib.target(f"{large} jobs take at most {args.scale}x as long as {args.jobs} (ratio)", ratio, args.scale,
                        f"{rows[f'{batch}, {large} jobs']:.2f} s against {mean:.2f} s, the mean of "
                        + " and ".join(f"{t:.2f}" for t in turns))
        small, big = peaks.get(args.jobs), peaks.get(large)
        if isinstance(small, int) and isinstance(big, int):
            # flat: what 10x the jobs adds is within a tenth of the smaller batch's peak
            benchlib.target(f"launcher peak RSS flat from {args.jobs} to {large} jobs (MiB)", big / benchlib.MIB,
                            small / benchlib.MIB * 1.1, f"at most 1.1x the {args.jobs}-job peak of {small / benchlib.MIB:.1f} MiB")
        else:
            benchlib.target("launcher peak RSS flat", None, None, str(small if not isinstance(small, int) else big))
    loop_name = "shell loop of nspawn run -c"
    if loop_name in rows:
        print(f"batch vs the shell loop of nspawn run: {rows[loop_name] / rows[batch]:.1f}x")
    if args.cluster:
        print(f"cluster batch vs the local batch: {rows[batch] / rows['nspawn batch --cluster (2 workers)']:.2f}x the local jobs/s")
    benchlib.summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
