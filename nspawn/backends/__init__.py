"""The registry of backends: what each offers, known without importing its code. Every list
of backend names (the schema's enum, the CLI's choices, `auto`, ps and cleanup) comes from
BACKENDS; what a backend module must provide is nspawn/backends/contract.py.
"""

from __future__ import annotations

import sys

from nspawn.records import record


@record
class Backend:
    module: str
    flavour: str  # of its container paths: "posix" or "windows"
    network_modes: frozenset
    isolations: tuple
    missing: dict = {}  # mode -> why it is not offered yet (never mutated: the default is shared)
    requires: tuple = ()  # config fields the backend cannot run without
    min_ram_mb: tuple = (0, "")  # the smallest memory limit it takes, and why
    reports: tuple = ()  # contract.RESULT_FIELDS its execute fills
    host_service: bool = False  # its host's service keeps state beyond the journals (contract.HOST_SERVICE)
    needs_root: str = ""  # why it needs root, when it does: the host checks refuse a run without

    def why_not(self, mode: str) -> str:
        reason = self.missing.get(mode)
        return f" ({reason})" if reason else ""


BACKENDS = {
    "linux": Backend(
        "nspawn.backends.linux",
        "posix",
        frozenset({"none", "host", "nat"}),
        ("process",),
        reports=("signal", "timed_out", "oom_killed", "peak_memory_bytes"),
        needs_root="it makes namespaces, mounts and cgroups, and writes the id maps of private users",
    ),
    "hcs": Backend(
        "nspawn.backends.hcs",
        "windows",
        frozenset({"none", "nat"}),
        ("process", "hyperv"),
        {"host": "Windows containers cannot share the host's network stack"},
        ("parent_layer_directory",),
        # microsoft/Windows-Containers#482: below 8 MB the silo's system processes never finish
        # starting and the container cannot be stopped.
        (8, "below 8 MB a Windows container hangs while starting and cannot be stopped"),
        reports=("timed_out",),
        host_service=True,
    ),
}
AUTO = "auto"
CHOICES = (AUTO, *BACKENDS)  # what a config's `backend` and the CLI's --backend take


def choose(backend: str, flavour: str) -> str:
    """`auto` means the backend whose container paths the config's are (Windows paths: HCS),
    and on Windows HCS; Linux otherwise."""
    if backend != AUTO:
        return backend
    if sys.platform == "win32":
        flavour = "windows"
    return next(name for name, entry in BACKENDS.items() if entry.flavour == flavour)


def host_default() -> str:
    """The backend `auto` means on this host for a config that does not say (doctor)."""
    return choose(AUTO, "windows" if sys.platform == "win32" else "posix")


def load(name: str):
    module = BACKENDS[name].module
    __import__(module)  # not importlib.import_module: importing importlib costs every launch
    return sys.modules[module]


def many_runs():
    """The host's backend's many_runs() (contract.py), started on the calling thread; None when
    it has none. Its close() is the caller's."""
    start = getattr(load(host_default()), "many_runs", None)
    return start() if start is not None else None
