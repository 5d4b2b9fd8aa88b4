"""Compiles the simulated HCS library once per source change.

The shared object lands in tests/.build/hcs_sim/<hash of sources and flags>/,
so editing a .c file rebuilds and an unchanged tree reuses the last build.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
CACHE = HERE.parent / ".build" / "hcs_sim"
FLAGS = ["-shared", "-fPIC", "-O1", "-g", "-std=gnu11", "-Wall", "-Wextra",
         "-fvisibility=hidden", "-pthread"]
LIBS = ["-lcjson"]


class BuildUnavailable(RuntimeError):
    """No C compiler: the HCS tests cannot run on this machine."""


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc")


def build_simulator() -> pathlib.Path:
    cc = compiler()
    if not cc:
        raise BuildUnavailable("no C compiler (cc) on PATH")
    sources = sorted(HERE.glob("*.c"))
    digest = hashlib.sha256(" ".join([cc, *FLAGS, *LIBS]).encode())
    for path in sorted(HERE.glob("*.[ch]")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    target = CACHE / digest.hexdigest()[:16] / "libhcs_sim.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so concurrent test processes never
    # load a half-written library.
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so")
    os.close(fd)
    try:
        result = subprocess.run([cc, *FLAGS, "-o", tmp, *map(str, sources), *LIBS],
                                capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"building the HCS simulator failed:\n{result.stderr}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


if __name__ == "__main__":
    print(build_simulator())
