"""The Linux limits, one entry per cgroup controller: the config fields it enforces, its v1
hierarchy, the files a run writes and their values from the plan's CgroupLimits, what a run
reports of it and what `nspawn doctor` says of it. Pure: cgroups.py writes the files and
enforcement.py judges what holds, both from this table."""

from __future__ import annotations

from nspawn.records import record
from nspawn.units import show_mib

V1_BUFFERED_WRITES = "cgroup v1 throttles reads and direct writes only: buffered writes escape the storage limits"

# How swap stands to a memory limit (enforcement.swap finds out): the memory group has the file
# that keeps swap from stretching the limit; it lacks it, but the host has no swap to escape
# to; it lacks it and swap is on, so the limit does not hold.
SWAP_LIMITED, NO_SWAP, SWAP_ESCAPES = "limited", "no swap", "escapes"


@record
class Facts:
    """What the host adds to the plan's limits for the files and the reports."""

    version: int  # of the cgroup layout
    devices: tuple = ()  # "major:minor" of the disks the storage limits throttle
    parent_mems: str | None = None  # v1 cpuset: the memory nodes of the group above
    swap: str | None = None  # SWAP_*, when the memory controller is used


def _holds(limits, facts) -> None:
    return None


def _no_note(facts) -> tuple[bool, str]:
    return True, ""


@record
class Controller:
    name: str  # its v2 name, which the backend goes by
    hierarchy: str  # its v1 hierarchy
    fields: tuple  # the Limits fields it enforces
    asks: object  # (CgroupLimits) -> whether the plan asks anything of it
    files: object  # (CgroupLimits, Facts) -> [(file, value)], in the order the kernel accepts them
    applied: object  # (CgroupLimits, Facts) -> {field: what a run reports applied}, of which the asked count
    fails: object = _holds  # (CgroupLimits, Facts) -> why its limits do not hold although it is there, or None
    note: object = _no_note  # (Facts) -> (ok, what doctor adds to "enforces <fields>"; when not ok, all it says)
    v1_caveat: str | None = None  # what it leaves unlimited on v1: a run warns of it, doctor adds it

    def caveat(self, version: int) -> str | None:
        return self.v1_caveat if version == 1 else None

    def host_report(self, facts: Facts) -> tuple[bool, str]:
        """doctor's line for it on a host that has it."""
        ok, note = self.note(facts)
        if not ok:
            return False, note
        return True, "; ".join(filter(None, ("enforces " + ", ".join(self.fields), note, self.caveat(facts.version))))


def swap_file(version: int) -> str:
    """The memory group's file that limits swap: v1 counts memory and swap together, v2 swap alone."""
    return "memory.swap.max" if version == 2 else "memory.memsw.limit_in_bytes"


def _memory_files(limits, facts: Facts) -> list[tuple[str, str]]:
    v2 = facts.version == 2
    files = [("memory.max" if v2 else "memory.limit_in_bytes", str(limits.memory_bytes))]
    if facts.swap == SWAP_LIMITED:
        files.append((swap_file(facts.version), "0" if v2 else str(limits.memory_bytes)))
    return files


# What max_ram_mb means here, said by a run and by doctor: the memory controller charges pages
# as they are touched, so allocations beyond the limit succeed and touching them gets the
# container OOM-killed. Windows limits commit instead (an allocation beyond it fails); Linux has
# no per-group commit accounting to offer that (RLIMIT_AS/RLIMIT_DATA are per process,
# vm.overcommit_memory is host-wide).
RESIDENT = "resident memory"
RESIDENT_MEANING = ("it limits resident memory: allocations beyond it succeed, touching them gets the "
                    "container OOM-killed (137), where Windows limits commit")


def _memory_applied(limits, facts: Facts) -> dict:
    swap = ", swap included" if facts.swap == SWAP_LIMITED else " (no swap on this host)"
    return {"max_ram_mb": f"{limits.memory_bytes} bytes of {RESIDENT} ({_memory_files(limits, facts)[0][0]}){swap}"}


def _swap_escape(limits, facts: Facts) -> str | None:
    if facts.swap != SWAP_ESCAPES:
        return None
    return (f"{swap_file(facts.version)} is missing (swap accounting is off) and swap is on, so the "
            f"container can swap past {show_mib(limits.memory_bytes)}")


def _memory_note(facts: Facts) -> tuple[bool, str]:
    probe = swap_file(facts.version)
    if facts.swap == SWAP_LIMITED:
        return True, f"{RESIDENT_MEANING}; swap is limited too"
    if facts.swap == SWAP_ESCAPES:
        return False, f"{probe} is missing and swap is on: a container could swap past max_ram_mb"
    return True, f"{RESIDENT_MEANING}; {probe} is missing but there is no swap to escape to"


def _cpu_files(limits, facts: Facts) -> list[tuple[str, str]]:
    if facts.version == 2:
        return [("cpu.max", f"{limits.cpu_quota_us} {limits.cpu_period_us}")]
    return [("cpu.cfs_period_us", str(limits.cpu_period_us)), ("cpu.cfs_quota_us", str(limits.cpu_quota_us))]


def _cpuset_files(limits, facts: Facts) -> list[tuple[str, str]]:
    cpus = ("cpuset.cpus", ",".join(map(str, limits.cpus)))
    if facts.version == 2:
        return [cpus]
    return [("cpuset.mems", facts.parent_mems), cpus]  # v1 refuses tasks until mems is set


def _cpus_applied(limits, facts: Facts) -> dict:
    shown = "CPUs " + ",".join(map(str, limits.cpus))
    return {"cpus_count": shown, "cpu_affinity": shown}


def _io_files(limits, facts: Facts) -> list[tuple[str, str]]:
    rates = [(kind, value) for kind, value in (("iops", limits.io_iops), ("bps", limits.io_bps)) if value]
    if facts.version == 2:
        parts = " ".join(f"{rw}{kind}={value}" for kind, value in rates for rw in "rw")
        return [("io.max", f"{dev} {parts}") for dev in facts.devices]
    return [(f"blkio.throttle.{rw}_{kind}_device", f"{dev} {value}")
            for dev in facts.devices for kind, value in rates for rw in ("read", "write")]


CONTROLLERS = (
    Controller("memory", "memory", ("max_ram_mb",), lambda limits: bool(limits.memory_bytes),
               _memory_files, _memory_applied, fails=_swap_escape, note=_memory_note),
    Controller("cpu", "cpu", ("max_cpu_percent",), lambda limits: bool(limits.cpu_quota_us), _cpu_files,
               lambda limits, facts: {"max_cpu_percent": f"{limits.cpu_quota_us}us per {limits.cpu_period_us}us"}),
    Controller("cpuset", "cpuset", ("cpus_count", "cpu_affinity"), lambda limits: bool(limits.cpus),
               _cpuset_files, _cpus_applied, note=lambda facts: (True, "sched_setaffinity makes the payload see it")),
    Controller("io", "blkio", ("max_storage_iops", "max_storage_bandwidth_bytes_per_sec"),
               lambda limits: bool(limits.io_iops or limits.io_bps), _io_files,
               lambda limits, facts: {"max_storage_iops": limits.io_iops, "max_storage_bandwidth_bytes_per_sec": limits.io_bps},
               v1_caveat=V1_BUFFERED_WRITES),
    Controller("pids", "pids", ("max_processes",), lambda limits: bool(limits.pids_max),
               lambda limits, facts: [("pids.max", str(limits.pids_max))],
               lambda limits, facts: {"max_processes": f"pids.max={limits.pids_max}, the container's init included"}),
)
BY_NAME = {c.name: c for c in CONTROLLERS}
OF_FIELD = {field: c for c in CONTROLLERS for field in c.fields}


def needed(limits) -> list[str]:
    """The controllers the plan's limits ask something of, in table order."""
    return [c.name for c in CONTROLLERS if c.asks(limits)]


def settings(limits, controllers: list[str], facts: Facts) -> list[tuple[str, str, str]]:
    """(controller, file, value) for `controllers`, in the order the kernel accepts them."""
    return [(name, file, value) for name in controllers for file, value in BY_NAME[name].files(limits, facts)]


def outcome(limits, asked, controllers: list[str], facts: Facts) -> tuple[dict, dict, list[str]]:
    """What groups with `controllers` make of the asked fields: (applied {field: text}, not held
    {field: why}, caveats to warn of)."""
    applied: dict = {}
    failed: dict[str, str] = {}
    caveats: list[str] = []
    for name in controllers:
        controller = BY_NAME[name]
        why = controller.fails(limits, facts)
        if why:
            failed.update((field, why) for field in controller.fields if field in asked)
        else:
            applied.update((f, text) for f, text in controller.applied(limits, facts).items() if f in asked)
        caveat = controller.caveat(facts.version)
        if caveat:
            caveats.append(caveat)
    return applied, failed, caveats
