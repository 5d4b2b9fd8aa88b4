#!/usr/bin/env python3
"""A no-op container (/bin/true, host root) with nspawn beside `python -c pass` and the other
runtimes this host has (unshare, bwrap, runc, systemd-nspawn), timed in turns, N rounds,
medians; with limits, from an image in the store against the same root as a directory, 200 MB
of output through a pipe, and the launcher's peak memory. Prints each target of issue 17 with
MET or MISSED; asserts nothing.

    sudo .venv/bin/python scripts/bench_launch.py [--runs 30] [--no-image] [--no-nat] [--only output]

nspawn is timed as a user waits for it, interpreter start included (benchlib.nspawn_argv).
What the hardening costs (docs/security.md) is the paired difference to `seccomp: unconfined`
and to that with the host's full view; `network: nat` is paired with a no-op run, both in a
network namespace the benchmark makes (the host's own network is never touched). The image
case needs the image tests' packages (docker-registry, skopeo, umoci; bench_pull.py makes it).
Peers that are not installed, or that need what this host lacks, are skipped and said so.
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

import benchlib

CONFIG_LIMITS = {"max_ram_mb": 256, "max_cpu_percent": 50, "max_processes": 64}
OUTPUT_BYTES = 200_000_000
WRITER = ["/usr/bin/head", "-c", str(OUTPUT_BYTES), "/dev/zero"]
BWRAP = ["bwrap", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-all"]


def _usr_root(work: str) -> str:
    """systemd-nspawn refuses the host's / as a root: a root of its own with the host's /usr
    bound in (merged-usr symlinks) is the closest to nspawn's default."""
    root = os.path.join(work, "usr-root")
    os.makedirs(os.path.join(root, "usr"))
    os.makedirs(os.path.join(root, "etc"))
    for name in ("bin", "sbin", "lib", "lib64"):
        os.symlink(f"usr/{name}", os.path.join(root, name))
    shutil.copy("/etc/os-release", os.path.join(root, "etc"))
    return root


def _runc(work: str) -> list[str] | str:
    """runc over an OCI bundle: `runc spec`'s config.json, running /bin/true without a terminal
    over _usr_root read-only, with the host's /usr bound in read-only; or why it is skipped."""
    if not shutil.which("runc"):
        return "runc is not installed"
    bundle = os.path.join(work, "runc-bundle")
    try:
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
    except (subprocess.CalledProcessError, OSError) as e:
        return f"no OCI bundle could be made ({e})"
    # its state under `work`, removed with it; `runc run` deletes the container on exit
    return ["runc", "--root", os.path.join(work, "runc-state"), "run", "--bundle", bundle, "nspawn-bench"]


def netns_holder() -> subprocess.Popen | None:
    """A process in a network namespace of its own, for the nat case: its bridge, table and
    forwarding go with it."""
    if not (shutil.which("unshare") and shutil.which("nsenter")):
        return None
    holder = subprocess.Popen(["unshare", "--net", "sleep", "3600"])
    mine = os.readlink("/proc/self/ns/net")
    while os.readlink(f"/proc/{holder.pid}/ns/net") == mine:
        time.sleep(0.01)
    return holder


def in_process(runs: int) -> benchlib.Timings:
    """`nspawn.launch.run` of /bin/true in this process (the backend's own cost, no interpreter
    start or imports), default and `seccomp: unconfined`, in turns."""
    from nspawn.config.resolve import load_config
    from nspawn.launch import run

    configs = {name: load_config(None, {"process_executable": "/bin/true", **more}, host=True)
               for name, more in (("nspawn.launch.run in process", {}),
                                  ("nspawn.launch.run in process (seccomp unconfined)", {"seccomp": "unconfined"}))}
    timings = benchlib.Timings()
    for name, config in configs.items():
        run(config)
        timings.times[name] = []
    for _ in range(runs):
        for name, config in configs.items():
            start = time.perf_counter()
            result = run(config)
            timings.times[name].append(time.perf_counter() - start)
            if result.exit_code:
                raise SystemExit(f"{name}: {result.one_line()}")
    return timings


def write_config(work: str, name: str, **fields) -> str:
    path = os.path.join(work, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"process_executable": "/bin/true", **fields}, f)
    return path


def image_case(work: str, nspawn: list[str], runs: int) -> tuple[benchlib.Timings, str | None]:
    """A run from an image in the store and of the same root as a directory, in turns."""
    missing = [p for p in ("docker-registry", "skopeo", "umoci") if not shutil.which(p)]
    if missing:
        return benchlib.Timings(), f"{', '.join(missing)} not installed"
    from bench_pull import store_and_directory

    registry, ref, rootfs, env = store_and_directory(os.path.join(work, "image"))
    try:
        env = {**env, **{k: v for k, v in benchlib.environment(work).items() if k == "NSPAWN_CACHE_DIR"}}
        noop = ["--", "/bin/sh", "-c", ":"]  # the image is a base of sh and cat
        return benchlib.in_turns({"run --image (store)": nspawn + ["run", "--image", ref] + noop,
                                  "run --parent-layer (directory)": nspawn + ["run", "--parent-layer", rootfs] + noop},
                                 runs, env), None
    finally:
        registry.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-image", action="store_true", help="skip the image-in-the-store case (it starts a registry)")
    parser.add_argument("--no-nat", action="store_true", help="skip the network nat case")
    parser.add_argument("--only", choices=["output"], help="only these cases (output: the 200 MB ones and their targets)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="nspawn-bench-")
    env = benchlib.environment(work)
    nspawn = benchlib.nspawn_argv()
    run = nspawn + ["run", "-c"]
    base, noop, limits = "python -c pass", "nspawn run -c noop.json", "nspawn run -c limits.json"
    unconfined, loosened = "nspawn run (seccomp unconfined)", "nspawn run (unconfined, host_view full)"
    sd = "systemd-nspawn"
    commands: dict[str, list[str] | str] = {
        base: [sys.executable, "-c", "pass"],
        noop: run + [write_config(work, "noop")],
        limits: run + [write_config(work, "limits", **CONFIG_LIMITS)],
        unconfined: run + [write_config(work, "unconfined", seccomp="unconfined")],
        loosened: run + [write_config(work, "loosened", seccomp="unconfined", host_view="full")],
        "nspawn run -- /bin/true": nspawn + ["run", "--", "/bin/true"],
        "unshare -mpfu --mount-proc": benchlib.peer("unshare", ["unshare", "-mpfu", "--mount-proc", "/bin/true"]),
        "bwrap": benchlib.peer("bubblewrap", BWRAP + ["/bin/true"]),
        "runc": _runc(work),
        sd: benchlib.peer("systemd-container", ["systemd-nspawn", "-q", "-D", _usr_root(work), "--bind-ro=/usr",
                                                "--register=no", "--keep-unit", "--pipe", "/bin/true"]),
    }
    if args.only:
        commands = {}
    holder = None if args.no_nat or args.only else netns_holder()
    netns_noop, nat = "nspawn run -c noop.json (in a network namespace)", "nspawn run -c nat.json (the same, nat)"
    if holder is not None:
        enter = ["nsenter", f"--net=/proc/{holder.pid}/ns/net"]
        commands[netns_noop] = enter + commands[noop]
        commands[nat] = enter + run + [write_config(work, "nat", network="nat")]
    try:
        timings = benchlib.in_turns(commands, args.runs, env)
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    image, image_skipped = ((benchlib.Timings(), "--no-image") if args.no_image else (benchlib.Timings(), "--only")
                            if args.only else image_case(work, nspawn, args.runs))

    out_dir = os.path.join(work, "out")
    os.mkdir(out_dir)
    writer = {"process_executable": WRITER[0], "process_arguments": WRITER[1:]}
    to_pipe, to_file, bwrap_pipe = "nspawn run (200 MB to the pipe)", "nspawn run (200 MB, stdout_filename too)", "bwrap (200 MB to the pipe)"
    bwrap_tee = "bwrap | tee FILE (200 MB to the pipe and a file)"
    # Informational: where the file itself puts the floor on this host's disk (the bench's
    # directory) against memory (a tmpfs), and nspawn with its file on the tmpfs.
    shm_dir = tempfile.mkdtemp(prefix="nspawn-bench-", dir="/dev/shm") if os.path.isdir("/dev/shm") else None
    file_alone, file_shm = "head > FILE (the file alone)", "head > FILE on a tmpfs"
    to_shm = "nspawn run (200 MB, stdout_filename on a tmpfs)"
    no_shm = "no tmpfs at /dev/shm"
    output = benchlib.in_turns({
        to_pipe: run + [write_config(work, "writer", **writer)],
        to_file: run + [write_config(work, "writer_file", **writer, process_directory=out_dir, stdout_filename="out.bin")],
        bwrap_pipe: benchlib.peer("bubblewrap", BWRAP + WRITER),
        # the floor of writing the same bytes to a file too, here: the file costs more than the pipe
        bwrap_tee: (["sh", "-c", f"{shlex.join(BWRAP + WRITER)} | tee {shlex.quote(os.path.join(out_dir, 'tee.bin'))}"]
                    if shutil.which("bwrap") else "bwrap (bubblewrap) is not installed"),
        file_alone: ["sh", "-c", f"{shlex.join(WRITER)} > {shlex.quote(os.path.join(out_dir, 'alone.bin'))}"],
        file_shm: ["sh", "-c", f"{shlex.join(WRITER)} > {shlex.quote(os.path.join(shm_dir, 'alone.bin'))}"] if shm_dir else no_shm,
        to_shm: run + [write_config(work, "writer_shm", **writer, process_directory=shm_dir, mapped_directory="/mnt",
                                    stdout_filename="out.bin")]
        if shm_dir else no_shm,
    }, max(5, args.runs // 3), env, drain=True)
    if shm_dir:
        shutil.rmtree(shm_dir, ignore_errors=True)
    if not args.only:
        peak = benchlib.peak_rss(commands[noop], env)
        os.environ.update(NSPAWN_STATE_DIR=env["NSPAWN_STATE_DIR"], NSPAWN_CACHE_DIR=env["NSPAWN_CACHE_DIR"],
                          NSPAWN_SCRATCH_DIR=env["NSPAWN_SCRATCH_DIR"])
    process = benchlib.Timings() if args.only else in_process(args.runs)
    shutil.rmtree(work, ignore_errors=True)

    print(f"{args.runs} rounds of /bin/true on {os.cpu_count()} CPUs, {sys.executable}")
    benchlib.print_timings(timings)
    benchlib.print_timings(process)
    benchlib.print_timings(image)
    if image_skipped:
        print(f"  run from an image in the store  skipped: {image_skipped}")
    benchlib.print_timings(output)
    for name in output.times:
        print(f"    {name}: {OUTPUT_BYTES / output.median_ms(name) / 1000:.0f} MB/s (start-up included)")
    if output.has(to_file, bwrap_tee):
        print(f"  with stdout_filename: {output.median_ms(to_file) / output.median_ms(bwrap_tee):.2f}x the time of bwrap | tee FILE")
    if timings.has(netns_noop, nat):
        print(f"  network nat adds {timings.paired_ms(nat, netns_noop):.1f} ms (paired median)")
    for within, hardened, against in ((timings, noop, unconfined), (timings, noop, loosened),
                                      *([(process, *process.times)] if process.times else [])):
        if within.has(hardened, against):
            print(f"  the hardening costs {within.paired_ms(hardened, against):.1f} ms per run against {against} (paired median)")

    def skip_note(*names: str, within: benchlib.Timings = timings) -> str:
        return "; ".join(f"{n}: {within.skipped.get(n, 'not measured')}" for n in names if n not in within.times)

    if not args.only:
        if timings.has(noop, base):
            benchlib.target("no-op run at most python -c pass + 20 ms (ms)", timings.median_ms(noop), timings.median_ms(base) + 20,
                            f"python -c pass {timings.median_ms(base):.1f} ms; paired difference {timings.paired_ms(noop, base):+.1f} ms")
        else:
            benchlib.target("no-op run at most python -c pass + 20 ms", None, None, skip_note(noop, base))
        if timings.has(noop, sd):
            benchlib.target("no-op run at most half of systemd-nspawn's time (ms)", timings.median_ms(noop), timings.median_ms(sd) / 2,
                            f"systemd-nspawn {timings.median_ms(sd):.1f} ms in the same rounds")
        else:
            benchlib.target("no-op run at most half of systemd-nspawn's time", None, None, skip_note(noop, sd))
        if timings.has(noop, limits):
            benchlib.target("memory, CPU and pids limits add at most 2 ms (ms)", timings.paired_ms(limits, noop), 2,
                            f"paired median of the rounds' differences; medians {timings.median_ms(limits):.1f} against {timings.median_ms(noop):.1f}")
        else:
            benchlib.target("limits add at most 2 ms", None, None, skip_note(noop, limits))
        store, directory = "run --image (store)", "run --parent-layer (directory)"
        if image.has(store, directory):
            benchlib.target("from an image in the store at most 3 ms more than from a directory (ms)", image.paired_ms(store, directory), 3,
                            f"paired median; medians {image.median_ms(store):.1f} against {image.median_ms(directory):.1f}")
        else:
            benchlib.target("from an image in the store at most 3 ms more than from a directory", None, None,
                            image_skipped or skip_note(store, directory, within=image))
    for name in (to_pipe, to_file):
        if output.has(name, bwrap_pipe):
            benchlib.target(f"{name} within 1.2x of bwrap (ratio)", output.median_ms(name) / output.median_ms(bwrap_pipe), 1.2,
                            f"{output.median_ms(name):.0f} ms against bwrap's {output.median_ms(bwrap_pipe):.0f} ms")
        else:
            benchlib.target(f"{name} within 1.2x of bwrap", None, None, skip_note(name, bwrap_pipe, within=output))
    if not args.only:
        if isinstance(peak, int):
            benchlib.target("the launcher's peak RSS for a single no-op run at most 25 MiB (MiB)", peak / benchlib.MIB, 25,
                            "GNU time's maximum resident set size; the highest of the launcher and each process it waited for")
        else:
            benchlib.target("the launcher's peak RSS at most 25 MiB", None, None, peak)
    benchlib.summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
