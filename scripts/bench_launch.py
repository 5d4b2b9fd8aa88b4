#!/usr/bin/env python3
"""Time a no-op container (/bin/true, host root) with nspawn and with the other runtimes this
host has, N runs each, and print medians and ratios.

    sudo .venv/bin/python scripts/bench_launch.py [--runs 30]

nspawn is timed as a user waits for it, interpreter start included: a config file without and
with every limit, a bare command, and a command with every limit as options (parsed by click);
and as `nspawn.launch.run` in this process (the backend's own cost). What the sandbox's
hardening costs (docs/security.md) is the paired difference to `seccomp: unconfined` and to a
run with the hardening that has a switch turned off (no filter, the host's full view); and
`network: nat` paired with a no-op run, both in a network namespace the benchmark makes (so the
host's own network is never touched). Targets on a 2-core machine: a no-op run in 50 ms median
or less; limits add under 2 ms; nat under 5 ms. Runtimes that are not installed, or that need what this host lacks, are skipped and
said so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from installed import note_if_stale  # noqa: E402 (scripts/, beside this one)

CONFIG_LIMITS = {"max_ram_mb": 256, "max_cpu_percent": 50, "cpus_count": 1, "max_storage_iops": 1000,
                 "max_storage_bandwidth_bytes_per_sec": 100 << 20, "max_processes": 64}
LIMITS = ["--memory", "256", "--cpu-percent", "50", "--cpus", "1", "--iops", "1000",
          "--io-bandwidth", "100M", "--max-processes", "64"]


def _once(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def time_commands(commands: dict[str, list[str]], runs: int, env: dict) -> tuple[dict[str, list[float]], dict[str, str]]:
    """(name -> times, name -> why skipped). The commands take turns, one run each per round,
    so that a host whose speed drifts during the benchmark (load, frequency) shifts them all
    alike and their differences hold."""
    skipped = {}
    for name, argv in commands.items():
        try:
            _once(argv, env)  # warms the caches, and proves it runs here
        except (subprocess.CalledProcessError, OSError) as e:
            skipped[name] = f"it failed here ({e})"
    times: dict[str, list[float]] = {name: [] for name in commands if name not in skipped}
    for _ in range(runs):
        for name in list(times):
            try:
                times[name].append(_once(commands[name], env))
            except (subprocess.CalledProcessError, OSError) as e:
                skipped[name] = f"a run failed ({e})"
                del times[name]
    return times, skipped


def time_in_process(runs: int, variants: dict[str, dict]) -> dict[str, list[float]]:
    """name -> times of `nspawn.launch.run` of /bin/true with each variant's settings, taking
    turns as time_commands' do."""
    from nspawn.config.resolve import load_config
    from nspawn.launch import run

    configs = {name: load_config(None, {"process_executable": "/bin/true", **more}, host=True)
               for name, more in variants.items()}
    for config in configs.values():
        run(config)
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(runs):
        for name, config in configs.items():
            start = time.perf_counter()
            result = run(config)
            times[name].append(time.perf_counter() - start)
            assert result.exit_code == 0, result
    return times


def _usr_root(work: str) -> str:
    root = os.path.join(work, "usr-root")
    os.makedirs(os.path.join(root, "usr"))
    os.makedirs(os.path.join(root, "etc"))
    for name in ("bin", "sbin", "lib", "lib64"):
        os.symlink(f"usr/{name}", os.path.join(root, name))
    shutil.copy("/etc/os-release", os.path.join(root, "etc"))
    return root


def _runc_bundle(work: str) -> str:
    """An OCI bundle: `runc spec`'s config.json, running /bin/true without a terminal over a
    root of its own, read-only, with the host's /usr bound in read-only."""
    bundle = os.path.join(work, "runc-bundle")
    os.makedirs(bundle)
    subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        spec = json.load(f)
    spec["process"].update(terminal=False, args=["/bin/true"])
    spec["root"] = {"path": _usr_root(bundle), "readonly": True}
    spec["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})
    with open(path, "w") as f:
        json.dump(spec, f)
    return bundle


def others(work: str) -> dict[str, list[str] | str]:
    """Name -> argv, or why it is skipped."""
    found: dict[str, list[str] | str] = {}
    found["unshare -mpfu --mount-proc"] = ["unshare", "-mpfu", "--mount-proc", "/bin/true"] if shutil.which("unshare") else "unshare is not installed"
    found["bwrap"] = (["bwrap", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-all", "/bin/true"]
                      if shutil.which("bwrap") else "bwrap (bubblewrap) is not installed")
    # systemd-nspawn refuses the host's / as a root, and runc takes a root filesystem of its
    # bundle: a root of their own with the host's /usr (merged-usr symlinks) is the closest to
    # nspawn's default.
    if shutil.which("runc"):
        try:  # its state under `work`, removed with it; `runc run` deletes the container on exit
            found["runc"] = ["runc", "--root", os.path.join(work, "runc-state"), "run", "--bundle", _runc_bundle(work),
                             "nspawn-bench"]
        except (subprocess.CalledProcessError, OSError) as e:
            found["runc"] = f"no OCI bundle could be made ({e})"
    else:
        found["runc"] = "runc is not installed"
    found["systemd-nspawn"] = (["systemd-nspawn", "-q", "-D", _usr_root(work), "--bind-ro=/usr", "--register=no",
                                "--keep-unit", "--pipe", "/bin/true"]
                               if shutil.which("systemd-nspawn") else "systemd-nspawn is not installed")
    return found


def netns_holder() -> subprocess.Popen | None:
    """A process in a network namespace of its own, for the nat case: its bridge, table and
    forwarding go with it, and the host's own network is never touched."""
    if not (shutil.which("unshare") and shutil.which("nsenter")):
        return None
    holder = subprocess.Popen(["unshare", "--net", "sleep", "3600"])
    mine = os.readlink("/proc/self/ns/net")
    while os.readlink(f"/proc/{holder.pid}/ns/net") == mine:
        time.sleep(0.01)
    return holder


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
    # The console script beside this interpreter, as a user runs it (python -m adds runpy's cost).
    script = os.path.join(os.path.dirname(sys.executable), "nspawn")
    nspawn = [script, "run"] if os.path.exists(script) else [sys.executable, "-m", "nspawn", "run"]
    if os.path.exists(script):
        note_if_stale(sys.executable)  # the in-process row times the checkout
    configs = {}
    for name, more in (("noop", {}), ("limits", CONFIG_LIMITS), ("unconfined", {"seccomp": "unconfined"}),
                       ("loosened", {"seccomp": "unconfined", "host_view": "full"})):
        configs[name] = os.path.join(state, f"{name}.json")
        with open(configs[name], "w") as f:
            json.dump({"process_executable": "/bin/true", **more}, f)
    noop, limits = "nspawn run -c noop.json", "nspawn run -c limits.json (all limits)"
    unconfined, loosened = "nspawn run -c unconfined.json (seccomp unconfined)", "nspawn run -c loosened.json (+ host_view full)"
    commands = {
        noop: nspawn + ["-c", configs["noop"]],
        limits: nspawn + ["-c", configs["limits"]],
        unconfined: nspawn + ["-c", configs["unconfined"]],
        loosened: nspawn + ["-c", configs["loosened"]],
        "nspawn run -- /bin/true": nspawn + ["--", "/bin/true"],
        "nspawn run OPTIONS -- /bin/true (click, all limits)": nspawn + LIMITS + ["--", "/bin/true"],
        "python -c pass (interpreter start)": [sys.executable, "-c", "pass"],
    }
    rows: list[tuple[str, str]] = []
    for name, argv in others(state).items():
        if isinstance(argv, str):
            rows.append((name, f"skipped: {argv}"))
        else:
            commands[name] = argv
    holder = netns_holder()
    netns_noop, nat = "nspawn run -c noop.json (in a network namespace)", "nspawn run -c nat.json (the same, network nat)"
    if holder is None:
        rows.append(("network nat", "skipped: unshare or nsenter is not installed"))
    else:
        nat_config = os.path.join(state, "nat.json")
        with open(nat_config, "w") as f:
            json.dump({"process_executable": "/bin/true", "network": "nat"}, f)
        enter = ["nsenter", f"--net=/proc/{holder.pid}/ns/net"]
        commands[netns_noop] = enter + nspawn + ["-c", plain]
        commands[nat] = enter + nspawn + ["-c", nat_config]
    try:
        times, skipped = time_commands(commands, args.runs, env)
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    os.environ["NSPAWN_STATE_DIR"] = state
    times.update(time_in_process(args.runs, {"nspawn.launch.run (in process)": {},
                                             "nspawn.launch.run (in process, seccomp unconfined)": {"seccomp": "unconfined"}}))
    shutil.rmtree(state, ignore_errors=True)
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    rows += [(name, f"{medians[name]:8.1f} ms  (min {min(t) * 1000:.1f}, max {max(t) * 1000:.1f})") for name, t in times.items()]
    rows += [(name, f"skipped: {why}") for name, why in skipped.items()]

    print(f"{args.runs} runs of /bin/true on {os.cpu_count()} CPUs, {sys.executable}")
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"  {name:<{width}}  {text}")
    if noop in times and limits in times:
        paired = statistics.median(b - a for a, b in zip(times[noop], times[limits])) * 1000
        print(f"limits add {medians[limits] - medians[noop]:.1f} ms between the medians, {paired:.1f} ms as the median of"
              " the rounds' own differences")
    if netns_noop in times and nat in times:
        paired = statistics.median(b - a for a, b in zip(times[netns_noop], times[nat])) * 1000
        print(f"network nat adds {medians[nat] - medians[netns_noop]:.1f} ms between the medians, {paired:.1f} ms as the"
              " median of the rounds' own differences (the bridge made by the warm-up run, as on a host in use)")
    for hardened, against in ((noop, unconfined), (noop, loosened),
                              ("nspawn.launch.run (in process)", "nspawn.launch.run (in process, seccomp unconfined)")):
        if hardened in times and against in times:
            paired = statistics.median(a - b for a, b in zip(times[hardened], times[against])) * 1000
            print(f"the hardening costs {paired:.1f} ms per run (median of the rounds' differences) against {against}")
    base = medians.get("unshare -mpfu --mount-proc")
    if base:
        print("ratios to unshare:")
        for name, value in medians.items():
            print(f"  {name:<{width}}  {value / base:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
