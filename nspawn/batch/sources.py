"""PATH… on the command line → the config files of a batch, in a stable order."""

from __future__ import annotations

import glob
import os

from nspawn.errors import Problem


def expand(paths: list[str]) -> tuple[list[str], list[Problem]]:
    """Each path is a config file, a directory (every `*.json` directly in it, sorted) or a glob
    (its matches, sorted). Returns the files, each once in first-seen order, and a problem for
    each path that names nothing."""
    found: list[str] = []
    problems: list[Problem] = []
    for path in paths:
        if os.path.isdir(path):
            matches = sorted(p for p in glob.glob(os.path.join(glob.escape(path), "*.json")) if os.path.isfile(p))
            what = "the directory holds no *.json file"
        elif glob.has_magic(path):
            matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
            what = "the pattern matches no file"
        else:
            matches = [path] if os.path.isfile(path) else []
            what = "no such file" if not os.path.lexists(path) else "not a file"
        if not matches:
            problems.append(Problem(path, "", what))
        found += matches
    return list(dict.fromkeys(os.path.normpath(p) for p in found)), problems


def job_names(files: list[str]) -> list[str]:
    """A unique, file-name-safe name per config: its path below the directory all the configs
    share, without `.json`, separators as `__`."""
    names: list[str] = []
    taken: set[str] = set()
    absolute = [os.path.abspath(p) for p in files]
    common = os.path.commonpath([os.path.dirname(p) for p in absolute]) if absolute else ""
    for path in absolute:
        name = os.path.splitext(os.path.relpath(path, common))[0].replace(os.sep, "__").lstrip("._") or "config"
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name}-{n}", n + 1
        taken.add(unique)
        names.append(unique)
    return names
