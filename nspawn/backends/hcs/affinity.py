"""A CPU affinity mask as Windows processor groups: pure, given the host's groups and build
(runtime.py asks them through native/kernel32.py, before anything is made).

Windows numbers CPUs group after group and sizes each group by NUMA node, so CPU N is not bit
N % 64 of group N // 64: a 72-CPU host is two groups of 36, and its CPU 40 is bit 4 of group 1
(Microsoft's docs, "Processor Groups").
"""

from __future__ import annotations

from nspawn.errors import LaunchError

# Setting a silo's affinity in more than one processor group, or in any group but 0, needs
# Windows Server 2022 (hcsshim internal/hcsoci/cpuaffinity.go, ValidateCPUAffinityEntries).
SEVERAL_GROUPS_BUILD = 20348


def processor_groups(mask: int, sizes: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """(processor group, mask within it) of each group `mask` names a CPU of; `sizes` holds
    the active CPUs of each group, group 0 first. Raises LaunchError for a CPU the host lacks."""
    groups, first = [], 0
    for group, size in enumerate(sizes):
        part = mask >> first & ((1 << size) - 1)
        if part:
            groups.append((group, part))
        first += size
    if mask >> first:
        cpu = first + ((mask >> first) & -(mask >> first)).bit_length() - 1
        raise LaunchError(f"cpu_affinity_hex {hex(mask)} names CPU {cpu}; this host has CPUs 0 to {first - 1} "
                          f"in {len(sizes)} processor group{'s' if len(sizes) != 1 else ''} "
                          f"of {', '.join(map(str, sizes))}")
    return tuple(groups)


def refusal(mask: int, groups: tuple[tuple[int, int], ...], sizes: tuple[int, ...], build: int) -> str | None:
    """Why this host cannot pin a silo to `groups`, or None: before Windows Server 2022 only
    group 0 can be set, and a silo never takes a partial mask silently."""
    if build >= SEVERAL_GROUPS_BUILD or all(group == 0 for group, _ in groups):
        return None
    named = ", ".join(str(group) for group, _ in groups)
    return (f"cpu_affinity_hex {hex(mask)} names CPUs in processor group{'s' if len(groups) > 1 else ''} {named} "
            f"(this host has {len(sizes)} groups of {', '.join(map(str, sizes))} CPUs); Windows build {build} "
            f"pins a container to group 0 only (CPUs 0 to {sizes[0] - 1}): more needs Windows Server 2022 "
            f"(build {SEVERAL_GROUPS_BUILD})")
