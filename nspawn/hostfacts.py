"""What this host has to give a container: CPUs and memory, read where the OS says them."""

from __future__ import annotations

import os


def cpu_count() -> int:
    return os.cpu_count() or 1


def allowed_cpus() -> list[int]:
    """The CPUs this launcher may run on (and so may give a container), lowest first."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Windows
        return list(range(cpu_count()))


def memory_available(meminfo: str = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes; None where the host does not say (not Linux)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
