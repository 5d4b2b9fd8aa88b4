"""A small root filesystem for the tests: the named host binaries with their libraries."""

from __future__ import annotations

import os
import shutil
import subprocess


def make_layer(root, binaries=("/bin/sh", "/bin/cat", "/bin/ls", "/bin/id")):
    for binary in binaries:
        real = os.path.realpath(binary)
        ldd = subprocess.run(["ldd", real], capture_output=True, text=True).stdout.splitlines()
        libs = [line.split("=>")[-1].split()[0] for line in ldd if "/" in line]
        for path in [binary] + libs:
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(path), target)
    (root / "etc").mkdir(exist_ok=True)
    return root
