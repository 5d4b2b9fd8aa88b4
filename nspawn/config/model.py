"""The typed, immutable config every backend plans from.

Paths are kept as the strings the user wrote, normalised for their flavour: host paths made
absolute (relative ones against the config file's directory) and container paths checked
absolute in the target's flavour (Windows for HCS, POSIX for Linux).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from nspawn.records import record

DEFAULT_GRACE_SECONDS = 10.0


# Records (nspawn.records) rather than frozen dataclasses: as immutable, and several
# milliseconds cheaper to define, which every launch pays.
@record
class Mount:
    host_path: str
    container_path: str
    read_only: bool = False


@record
class Limits:
    """Zero means no limit, as in hostcompute_nspawn."""

    max_ram_mb: int = 0
    cpus_count: int = 0
    cpu_affinity: int = 0  # bit N set: CPU N allowed
    max_cpu_percent: float = 0
    max_storage_iops: int = 0
    max_storage_bandwidth_bytes_per_sec: int = 0
    max_processes: int = 0

    def asked(self) -> dict[str, int | float]:
        """The limits the config sets, by field name."""
        return {name: v for name, v in self._asdict().items() if v}


@record
class Config:
    process_executable: str
    process_arguments: tuple[str, ...] = ()
    process_directory: str | None = None
    mapped_directory: str | None = None
    mapped_directory_read_only: bool = False
    parent_layer_directory: str | None = None
    stdout_filename: str | None = None
    environment: Mapping[str, str] = MappingProxyType({})
    working_directory: str | None = None
    hostname: str | None = None
    mounts: tuple[Mount, ...] = ()
    network: str = "none"
    isolation: str = "process"
    backend: str = "auto"
    hcs_api: str = "auto"
    timeout_seconds: float = 0
    stop_grace_seconds: float = DEFAULT_GRACE_SECONDS
    limits: Limits = Limits()
    source: str = "command line"  # where it came from, for messages
    flavour: str = "posix"  # of the container paths: "posix" or "windows"

    def replace(self, **changes) -> "Config":
        return self._replace(**changes)
