"""Which of a run's limits this host enforces, and why not: one judgement, made by a run
(runtime.py) and by `nspawn doctor -c` (diagnosis.py), so the two never disagree."""

from __future__ import annotations

import os

from nspawn.backends.linux import cgroups
from nspawn.backends.linux.plan import LinuxPlan
from nspawn.records import record

V1_BUFFERED_WRITES = "cgroup v1 throttles reads and direct writes only: buffered writes escape the storage limits"


@record
class Verdict:
    controllers: list[str]  # those the run's groups get
    devices: list[str]  # "major:minor" of the disks the storage limits throttle
    not_enforced: dict[str, str]  # asked field -> why not


def judge(plan: LinuxPlan, layout: cgroups.Layout) -> Verdict:
    asked = plan.asked.asked()
    controllers: list[str] = []
    not_enforced: dict[str, str] = {}

    def refuse(controller: str, why: str) -> None:
        not_enforced.update((name, why) for name in cgroups.FIELDS[controller] if name in asked)

    for controller in cgroups.needed(plan.limits):
        if layout.available(controller):
            controllers.append(controller)
        else:
            refuse(controller, f"the {controller} controller is not available in {layout.describe()}")
    devices: list[str] = []
    if "io" in controllers:
        paths = [plan.scratch_parent, plan.lower_dir] + [m.source for m in plan.mounts]
        devices = sorted({d for d in map(cgroups.block_device, map(_existing, paths)) if d})
        if not devices:
            controllers.remove("io")
            refuse("io", "the scratch and mapped directories are not on block devices")
    return Verdict(controllers, devices, not_enforced)


def swap_escape(layout: cgroups.Layout, swap_limited: bool, memory_bytes: int) -> str | None:
    """Why max_ram_mb does not hold (swap is on and the group has no file to limit it), or None."""
    if swap_limited or not cgroups.swap_on():
        return None
    return (f"{cgroups.swap_file(layout)} is missing (swap accounting is off) and swap is on, so the "
            f"container can swap past {memory_bytes // 2**20} MiB")


def _existing(path: str) -> str:
    """`path`, or its nearest existing parent: the disk a directory not made yet will be on."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path
