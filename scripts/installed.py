"""Whether the nspawn installed for an interpreter is this checkout, for the benchmarks: they
time the installed console script, which differs from the checkout until scripts/venv.sh runs."""

from __future__ import annotations

import filecmp
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stale_files(python: str) -> list[str]:
    """The checkout's package files that the copy installed for `python` lacks or has otherwise."""
    where = subprocess.run([python, "-c", "import nspawn, os; print(os.path.dirname(nspawn.__file__))"],
                           cwd="/", capture_output=True, text=True, check=True).stdout.strip()
    checkout = os.path.join(ROOT, "nspawn")
    stale = []
    for directory, subdirectories, files in os.walk(checkout):
        subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
        for name in files:
            path = os.path.relpath(os.path.join(directory, name), checkout)
            installed = os.path.join(where, path)
            if not (os.path.exists(installed) and filecmp.cmp(os.path.join(checkout, path), installed, shallow=False)):
                stale.append(path)
    return stale


def note_if_stale(python: str) -> None:
    stale = stale_files(python)
    if stale:
        print(f"note: the installed nspawn is not this checkout ({len(stale)} files differ, e.g. {stale[0]});"
              " the figures are the installed copy's")
