"""Conversions between the config's units and the kernel's or Windows': one home for each."""

from __future__ import annotations

MIB = 1 << 20


def mib_to_bytes(mib: int) -> int:
    return mib * MIB


def show_mib(n_bytes: int) -> str:
    """Bytes as a whole number of MiB, for messages."""
    return f"{n_bytes / MIB:.0f} MiB"


def mask_to_cpus(mask: int) -> tuple[int, ...]:
    """The CPUs an affinity mask names (bit N: CPU N), lowest first."""
    return tuple(cpu for cpu in range(mask.bit_length()) if mask >> cpu & 1)


def cpus_to_mask(cpus) -> int:
    return sum(1 << cpu for cpu in set(cpus))
