"""The backends and what each offers, known without importing their code.

A backend module exposes `plan(config) -> Plan` (pure) and `execute(plan, session)`, which fills
the session's Result (docs/architecture.md lists the rest).
"""

from __future__ import annotations

import sys

from nspawn.records import record


@record
class Capabilities:
    module: str
    network_modes: frozenset
    isolations: tuple
    missing: dict = {}  # mode -> why it is not offered yet (never mutated: the default is shared)
    requires: tuple = ()  # config fields the backend cannot run without
    min_ram_mb: tuple = (0, "")  # the smallest memory limit it takes, and why

    def why_not(self, mode: str) -> str:
        reason = self.missing.get(mode)
        return f" ({reason})" if reason else ""


CAPABILITIES = {
    "linux": Capabilities(
        "nspawn.backends.linux",
        frozenset({"none", "host"}),
        ("process",),
        {"nat": "NAT networking on Linux is not built yet"},
    ),
    "hcs": Capabilities(
        "nspawn.backends.hcs",
        frozenset({"none", "nat"}),
        ("process", "hyperv"),
        {"host": "Windows containers cannot share the host's network stack"},
        ("parent_layer_directory",),
        # microsoft/Windows-Containers#482: below 8 MB the silo's system processes never finish
        # starting and the container cannot be stopped.
        (8, "below 8 MB a Windows container hangs while starting and cannot be stopped"),
    ),
}


def choose(backend: str, flavour: str) -> str:
    """`auto` means HCS for Windows paths or on Windows, Linux otherwise."""
    if backend != "auto":
        return backend
    return "hcs" if flavour == "windows" or sys.platform == "win32" else "linux"


def load(name: str):
    module = CAPABILITIES[name].module
    __import__(module)  # not importlib.import_module: importing importlib costs every launch
    return sys.modules[module]
