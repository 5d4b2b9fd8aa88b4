#!/usr/bin/env python3
"""Pull and unpack throughput of a multi-layer image into nspawn's store, beside `skopeo copy`
plus `umoci unpack` of the same image; and the extra cost of a run from the store over the same
root given as a directory. Prints figures, asserts nothing. Needs root, docker-registry, skopeo
and umoci (the image tests' packages); the registry runs on loopback, nothing leaves the host.

    sudo python3 scripts/bench_pull.py [--layers 8] [--mb 8] [--runs 30]
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

from tests.images.conftest import BuiltImage, RegistryServer, add_manifest, entry_info, machine_arch, push_layout, set_index, tar_bytes  # noqa: E402


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def image(work: str, registry: RegistryServer, layers: int, mb: int) -> tuple[str, int]:
    """A base of sh and cat and `layers` layers of `mb` MiB of random bytes each; (reference, bytes)."""
    built = BuiltImage(os.path.join(work, "image"))
    layout = built.layout
    with open(os.path.join(layout, "index.json")) as f:
        base = next(m for m in json.load(f)["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "t")
    with open(os.path.join(layout, "blobs", "sha256", base["digest"].split(":")[1])) as f:
        base_layers = [open(os.path.join(layout, "blobs", "sha256", layer["digest"].split(":")[1]), "rb").read()
                       for layer in json.load(f)["layers"]]
    extra = [tar_bytes([(entry_info("data/"), None), (entry_info(f"data/blob{i}"), os.urandom(mb << 20))])
             for i in range(layers)]
    descriptor = add_manifest(layout, base_layers + extra, {"os": "linux", "architecture": machine_arch(), "config": {}})
    set_index(layout, "bench", [descriptor])
    ref = f"{registry.host}/bench/img:1"
    push_layout(layout, "bench", ref)
    return ref, sum(map(len, base_layers + extra))


def store_and_directory(work: str, layers: int = 1, mb: int = 1) -> tuple[RegistryServer, str, str, dict]:
    """A registry on loopback serving image(...), the image pulled into a store under `work`
    and unpacked beside it by skopeo and umoci: (registry, to stop; reference; the unpacked
    root as a directory; the environment whose store has it). bench_launch times a run of
    each against the other."""
    registry = RegistryServer(os.path.join(work, "registry")).start()
    try:
        ref, _ = image(work, registry, layers, mb)
        env = pull_env(work)
        subprocess.run([sys.executable, "-m", "nspawn", "pull", ref], env=env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        copy_and_unpack(work, ref, env)
    except BaseException:
        registry.stop()
        raise
    return registry, ref, f"{work}/bundle/rootfs", env


def pull_env(work: str) -> dict:
    env = {**os.environ, "NSPAWN_STORE": os.path.join(work, "store"), "NSPAWN_STATE_DIR": os.path.join(work, "state"),
           "NSPAWN_SCRATCH_DIR": os.path.join(work, "scratch"),
           # bytecode cached as an installed nspawn has it (beside the checkout, not in it)
           "PYTHONPYCACHEPREFIX": os.path.join(work, "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def copy_and_unpack(work: str, ref: str, env: dict) -> tuple[float, float]:
    copy = timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{work}/copy:t"], env)
    unpack = timed(["umoci", "unpack", "--image", f"{work}/copy:t", f"{work}/bundle"], env)
    return copy, unpack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--mb", type=int, default=8, help="MiB of random data per layer")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="nspawn-bench-pull-")
    registry = RegistryServer(os.path.join(work, "registry")).start()
    try:
        ref, size = image(work, registry, args.layers, args.mb)
        mb = size / 1e6
        env = pull_env(work)
        nspawn = timed([sys.executable, "-m", "nspawn", "pull", ref], env)
        copy, unpack = copy_and_unpack(work, ref, env)
        print(f"image: {args.layers + 2} layers, {mb:.1f} MB compressed")
        print(f"nspawn pull (download, verify, unpack): {nspawn:.2f} s, {mb / nspawn:.1f} MB/s")
        print(f"skopeo copy + umoci unpack:             {copy + unpack:.2f} s ({copy:.2f} + {unpack:.2f}), "
              f"{mb / (copy + unpack):.1f} MB/s")
        print(f"ratio: nspawn takes {nspawn / (copy + unpack):.2f}x the time of skopeo + umoci")

        rootfs = f"{work}/bundle/rootfs"
        store_run = [sys.executable, "-m", "nspawn", "run", "--image", ref, "--", "/bin/sh", "-c", ":"]
        dir_run = [sys.executable, "-m", "nspawn", "run", "--parent-layer", rootfs, "--", "/bin/sh", "-c", ":"]
        timed(store_run, env), timed(dir_run, env)  # warm the caches both use
        by_store, by_dir = [], []
        for _ in range(args.runs):  # interleaved, so that drift on a shared machine hits both alike
            by_store.append(timed(store_run, env))
            by_dir.append(timed(dir_run, env))
        for name, pick in (("median", statistics.median), ("fastest", min)):
            a, b = pick(by_store) * 1000, pick(by_dir) * 1000
            print(f"run from the store, {name}: {a:.1f} ms; the same root as a directory: {b:.1f} ms; "
                  f"extra cost {a - b:+.1f} ms (goal: under 3 ms), {args.runs} runs each")
        # The image's own steps in one process, free of the machine's noise: resolving the
        # reference (reading the store) and the layered host checks, against the directory's.
        probe = ("import sys, time; from nspawn.config.resolve import load_config; "
                 "args = [(None, {'image': sys.argv[1], 'process_executable': '/bin/sh'}), "
                 "(None, {'parent_layer_directory': sys.argv[2], 'process_executable': '/bin/sh'})]; "
                 "[load_config(*a, host=True) for a in args]; t = []\n"
                 "for a in args:\n s = time.perf_counter()\n for _ in range(200): load_config(*a, host=True)\n"
                 " t.append((time.perf_counter() - s) / 200 * 1000)\n"
                 "print(f'config with the image: {t[0]:.3f} ms; with the directory: {t[1]:.3f} ms; "
                 "extra {t[0] - t[1]:+.3f} ms per run')")
        print(subprocess.run([sys.executable, "-c", probe, ref, rootfs], env=env, cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip())
        imports = ("import nspawn.config.resolve, nspawn.launch, nspawn.backends.linux.runtime; "  # a run's own
                   "import time; s = time.perf_counter(); import nspawn.images.use, nspawn.images.store, "
                   "nspawn.images.reference; print(f'image modules imported (beyond what every run imports) in "
                   "{(time.perf_counter() - s) * 1000:.2f} ms')")
        print(subprocess.run([sys.executable, "-c", imports], env=env, cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout.strip())
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
