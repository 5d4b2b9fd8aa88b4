"""Which limits each isolation enforces, and how or why not: the one table `nspawn doctor`
prints and a plan reports from (nspawn/backends/hcs/__init__.py)."""

from __future__ import annotations

# field -> {isolation: (enforced, how or why not)}
ENFORCEMENT: dict[str, dict[str, tuple[bool, str]]] = {
    "max_ram_mb": {
        "process": (True, "the container's job object memory limit"),
        "hyperv": (True, "the utility VM's memory"),
    },
    "cpus_count": {
        "process": (False, "process isolation turns a CPU count into a cycle share without pinning or hiding CPUs; use max_cpu_percent or cpu_affinity_hex"),
        "hyperv": (True, "the utility VM's virtual processors"),
    },
    "max_cpu_percent": {
        "process": (True, "the job object's CPU rate hard cap"),
        "hyperv": (True, "the utility VM's processor limit"),
    },
    "cpu_affinity": {
        "process": (True, "on the container's silo job object (opening it needs SYSTEM; more than one processor group needs Windows Server 2022)"),
        "hyperv": (False, "affinity of a utility VM is a CPU-group matter nspawn does not set"),
    },
    "max_storage_iops": {
        "process": (True, "the job object's I/O rate control on the container's drive"),
        "hyperv": (True, "passed to HCS for the utility VM's storage"),
    },
    "max_storage_bandwidth_bytes_per_sec": {
        "process": (True, "the job object's I/O rate control on the container's drive"),
        "hyperv": (True, "passed to HCS for the utility VM's storage"),
    },
    "max_processes": {
        "process": (False, "HCS has no process-count limit"),
        "hyperv": (False, "HCS has no process-count limit"),
    },
}

_COUNT_GIVES_WAY = (False, "max_cpu_percent is set too, and HCS takes one processor limit (Count, Maximum and "
                           "Weight exclude each other): the documents carry the cap, not the count")


def verdict(field: str, isolation: str, asked: dict) -> tuple[bool, str]:
    """(enforced, how or why not) for one limit of a config asking for `asked`."""
    if field == "cpus_count" and asked.get("max_cpu_percent"):
        return _COUNT_GIVES_WAY
    return ENFORCEMENT[field][isolation]
