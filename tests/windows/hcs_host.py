"""What the real-Windows tests share: the parent layer the workflow names, the payloads, and
`nspawn run` of an HCS container on that layer."""

from __future__ import annotations

import os
import subprocess
import sys

PARENT_ENV = "NSPAWN_TEST_PARENT_LAYER"
PARENT = os.environ.get(PARENT_ENV, "")
CMD = "C:\\Windows\\System32\\cmd.exe"
# The host's own Python, mapped read-only into the container, is the payload that nanoserver
# lacks: it allocates memory, sleeps and opens sockets.
PYTHON_DIR = sys.base_prefix
PYTHON = "C:\\python\\python.exe"


def nspawn_run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`nspawn run` of an HCS container on the test's parent layer."""
    return subprocess.run(launcher(*args), capture_output=True, text=True, timeout=timeout)


def launcher(*args: str) -> list[str]:
    return [sys.executable, "-m", "nspawn", "run", "--backend", "hcs", "--parent-layer", PARENT, *args]


def with_python(*args: str) -> list[str]:
    return ["--bind", f"{PYTHON_DIR}:C:\\python:ro", *args]


def scratch_folders() -> set[str]:
    """nspawn's scratch layers, which live beside the parent layer."""
    return {name for name in os.listdir(os.path.dirname(PARENT)) if name.startswith("nspawn-")}
