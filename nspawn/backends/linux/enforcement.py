"""Which of a run's limits this host enforces, and why not: one judgement, made by a run
(runtime.py) and by `nspawn doctor -c` (diagnosis.py), so the two never disagree."""

from __future__ import annotations

import os

from nspawn.backends.linux import cgroups, limits
from nspawn.backends.linux.plan import LinuxPlan
from nspawn.records import record


@record
class Verdict:
    controllers: list[str]  # those the run's groups get
    devices: tuple[str, ...]  # "major:minor" of the disks the storage limits throttle
    not_enforced: dict[str, str]  # asked field -> why not


def judge(plan: LinuxPlan, layout: cgroups.Layout, wanted: list[str]) -> Verdict:
    """`wanted`: limits.needed(plan.limits), which the caller has worked out to know whether
    to look at the layout at all."""
    asked = plan.asked.asked()
    controllers: list[str] = []
    not_enforced: dict[str, str] = {}

    def refuse(controller: str, why: str) -> None:
        not_enforced.update((name, why) for name in limits.BY_NAME[controller].fields if name in asked)

    for controller in wanted:
        if layout.available(controller):
            controllers.append(controller)
        else:
            refuse(controller, f"the {controller} controller is not available in {layout.describe()}")
    devices: tuple[str, ...] = ()
    if "io" in controllers:
        paths = [plan.scratch_parent, *(plan.lower_layers or (plan.lower_dir,))] + [m.source for m in plan.mounts]
        devices = tuple(sorted({d for d in map(cgroups.block_device, map(_existing, paths)) if d}))
        if not devices:
            controllers.remove("io")
            refuse("io", "the scratch and mapped directories are not on block devices")
    return Verdict(controllers, devices, not_enforced)


def swap(layout: cgroups.Layout, memory_group: str | None) -> str:
    """How swap stands to a limit on `memory_group` (limits.SWAP_*); None: there is no group to
    look in, so none with the file that limits swap."""
    if memory_group and os.path.exists(os.path.join(memory_group, limits.swap_file(layout.version))):
        return limits.SWAP_LIMITED
    with open("/proc/swaps") as f:
        swap_on = len(f.read().splitlines()) > 1  # a header, then a line per swap area
    return limits.SWAP_ESCAPES if swap_on else limits.NO_SWAP


def _existing(path: str) -> str:
    """`path`, or its nearest existing parent: the disk a directory not made yet will be on."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path
