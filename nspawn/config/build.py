"""Schema-valid document → typed Config, with the checks a schema cannot express.

Paths come in two flavours: Windows (the HCS backend, and hostcompute_nspawn's configs, where
`C:/x` means `C:\\x`) and POSIX (the Linux backend). Host paths may be relative to the config
file's directory; container paths must be absolute in the target's flavour.
"""

from __future__ import annotations

import os
import posixpath
import re
import sys
from types import MappingProxyType

from nspawn.backends import BACKENDS, choose
from nspawn.config.jsonpos import path_text
from nspawn.config.load import Finding
from nspawn.config.model import DEFAULT_GRACE_SECONDS, Config, Limits, Mount

_WINDOWS_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\|//)")
_DRIVE_ABSOLUTE = re.compile(r"^[A-Za-z]:\\")
_PATH_KEYS = ("parent_layer_directory", "process_directory", "mapped_directory", "working_directory")
# Linux container paths that the container's own /, /proc, /dev and /sys stand on.
_LINUX_RESERVED = ("/", "/proc", "/dev", "/sys")


def simulated_hcs_host(flavour: str) -> bool:
    """The test seam for running HCS configs on Linux against tests/hcs_sim (NSPAWN_HCS_LIBRARY):
    the host side (layer, process and mount host paths) is then this host, with its own paths,
    while container paths stay Windows paths. Users never set that variable; without it a
    Windows config is refused here as before."""
    return flavour == "windows" and sys.platform != "win32" and bool(os.environ.get("NSPAWN_HCS_LIBRARY"))


def flavour(document: dict) -> str:
    backend = document.get("backend", "auto")
    if backend != "auto":
        return "windows" if backend == "hcs" else "posix"
    paths = [document.get(k) for k in _PATH_KEYS] + [
        m.get(k) for m in document.get("mounts", ()) for k in ("host_path", "container_path")
    ]
    if sys.platform == "win32" or any(isinstance(p, str) and _WINDOWS_PATH.match(p) for p in paths):
        return "windows"
    return "posix"


class _Paths:
    """Path rules of one flavour."""

    def __init__(self, flavour: str, base_dir: str):
        self.windows = flavour == "windows"
        if self.windows:
            import ntpath  # only here: a POSIX config, every Linux launch, need not import it

            self.mod = ntpath
        else:
            self.mod = posixpath
        self.base_dir = base_dir
        self.simulated = simulated_hcs_host(flavour)
        self.native = (sys.platform == "win32") == self.windows or self.simulated

    def normal(self, path: str) -> str:
        return self.mod.normpath(path.replace("/", "\\") if self.windows else path)

    def is_absolute(self, path: str) -> bool:
        return bool(_DRIVE_ABSOLUTE.match(path)) if self.windows else path.startswith("/")

    def host(self, path: str) -> str | None:
        """Absolute host path, or None when it cannot be made absolute here."""
        if self.simulated:
            return os.path.normpath(os.path.join(self.base_dir, path))
        path = self.normal(path)
        if self.is_absolute(path):
            return path
        if not self.native:
            return None  # a relative Windows path means nothing on a POSIX host
        return self.normal(os.path.join(self.base_dir, path))

    def container(self, path: str) -> str | None:
        path = self.normal(path)
        return path if self.is_absolute(path) else None

    def inside(self, relative: str) -> str | None:
        """A relative path normalised, or None if it climbs out with `..` or is absolute."""
        path = self.normal(relative)
        if self.is_absolute(path) or self.mod.isabs(path) or path == ".." or path.startswith(".." + self.mod.sep):
            return None
        return path

    def key(self, container_path: str) -> str:
        return container_path.lower() if self.windows else container_path

    def within(self, path: str, parent: str) -> bool:
        path, parent = self.key(path), self.key(parent).rstrip(self.mod.sep)
        return path == parent or path.startswith(parent + self.mod.sep)


def build_config(document: dict, source: str, base_dir: str) -> tuple[Config, list[Finding]]:
    """The typed config and every file-level finding (empty when it is fine)."""
    kind = flavour(document)
    paths = _Paths(kind, base_dir)
    findings: list[Finding] = []
    expected_abs = "an absolute Windows path such as C:\\dir" if paths.windows else "an absolute path such as /dir"
    host_expected = expected_abs if not paths.native else "an existing directory's path"

    def host(key_path: tuple, value: str | None) -> str | None:
        if value is None:
            return None
        resolved = paths.host(value)
        if resolved is None:
            findings.append(Finding(key_path, f"found the relative path {value!r}; expected {host_expected}"))
        return resolved

    def container(key_path: tuple, value: str | None) -> str | None:
        if value is None:
            return None
        resolved = paths.container(value)
        if resolved is None:
            findings.append(Finding(key_path, f"found {value!r}; expected {expected_abs} inside the container"))
        return resolved

    process_directory = host(("process_directory",), document.get("process_directory"))
    mapped = document.get("mapped_directory")
    if mapped is None and process_directory is not None:
        mapped_directory = process_directory if paths.is_absolute(process_directory) else None
    else:
        mapped_directory = container(("mapped_directory",), mapped)

    mounts = []
    for i, m in enumerate(document.get("mounts", ())):
        mounts.append(
            Mount(
                host(("mounts", i, "host_path"), m["host_path"]) or m["host_path"],
                container(("mounts", i, "container_path"), m["container_path"]) or m["container_path"],
                m.get("read_only", False),
            )
        )

    executable = document["process_executable"]
    if paths.is_absolute(paths.normal(executable)):
        executable = paths.normal(executable)
    elif process_directory is not None:
        inside = paths.inside(executable)
        if inside is None:
            findings.append(Finding(("process_executable",), f"found {executable!r}, which leaves the mapped directory; expected a path inside it"))
        executable = inside or executable
    elif any(sep in executable for sep in "/\\"):
        findings.append(Finding(("process_executable",), f"found the relative path {executable!r} without a process_directory; expected an absolute path, a command name, or a process_directory"))

    stdout = document.get("stdout_filename")
    if stdout is not None:
        inside = paths.inside(stdout)
        if inside is None:
            findings.append(Finding(("stdout_filename",), f"found {stdout!r}, which leaves the mapped directory; expected a path inside it"))
        stdout = inside or stdout

    environment = document.get("environment", {})
    if paths.windows:
        seen: dict[str, str] = {}
        for name in environment:
            if name.upper() in seen:
                findings.append(Finding(("environment", name), f"found {name!r} and {seen[name.upper()]!r}; expected distinct names (Windows ignores case)", at_key=True))
            seen[name.upper()] = name

    affinity = document.get("cpu_affinity_hex", 0)
    limits = Limits(
        max_ram_mb=document.get("max_ram_mb", 0),
        cpus_count=document.get("cpus_count", 0),
        cpu_affinity=int(affinity, 16) if isinstance(affinity, str) else affinity,
        max_cpu_percent=document.get("max_cpu_percent", 0),
        max_storage_iops=document.get("max_storage_iops", 0),
        max_storage_bandwidth_bytes_per_sec=document.get("max_storage_bandwidth_bytes_per_sec", 0),
        max_processes=document.get("max_processes", 0),
    )
    config = Config(
        process_executable=executable,
        process_arguments=tuple(document.get("process_arguments", ())),
        process_directory=process_directory,
        mapped_directory=mapped_directory,
        mapped_directory_read_only=document.get("mapped_directory_read_only", False),
        parent_layer_directory=host(("parent_layer_directory",), document.get("parent_layer_directory")),
        stdout_filename=stdout,
        environment=MappingProxyType(dict(environment)),
        working_directory=container(("working_directory",), document.get("working_directory")),
        hostname=document.get("hostname"),
        mounts=tuple(mounts),
        network=document.get("network", "none"),
        isolation=document.get("isolation", "process"),
        backend=choose(document.get("backend", "auto"), kind),
        hcs_api=document.get("hcs_api", "auto"),
        timeout_seconds=document.get("timeout_seconds", 0),
        stop_grace_seconds=document.get("stop_grace_seconds", DEFAULT_GRACE_SECONDS),
        limits=limits,
        source=source,
        flavour=kind,
    )
    findings += _collisions(config, paths)
    findings += _capabilities(config)
    return config, findings


def _collisions(config: Config, paths: _Paths) -> list[Finding]:
    findings = []
    targets: list[tuple[tuple, str]] = []
    if config.mapped_directory:
        targets.append((("mapped_directory",), config.mapped_directory))
    targets += [(("mounts", i, "container_path"), m.container_path) for i, m in enumerate(config.mounts)]
    seen: dict[str, tuple] = {}
    for where, target in targets:
        if not paths.is_absolute(target):
            continue  # already reported
        if paths.windows and len(target) <= 3:
            findings.append(Finding(where, f"found the drive root {target!r}; expected a directory below it"))
        if not paths.windows:
            for reserved in _LINUX_RESERVED:
                if target == reserved or (reserved != "/" and paths.within(target, reserved)):
                    findings.append(Finding(where, f"found {target!r}, which would cover the container's {reserved}; expected another directory"))
        first = seen.setdefault(paths.key(target), where)
        if first is not where:
            findings.append(Finding(where, f"found {target!r}, already mapped by {path_text(first)}; expected each container path once"))
    return findings


def _capabilities(config: Config) -> list[Finding]:
    caps = BACKENDS[config.backend]
    findings = [Finding((key,), f"missing; expected it, as the {config.backend} backend needs it")
                for key in caps.requires if getattr(config, key) is None]
    if config.network not in caps.network_modes:
        findings.append(Finding(("network",), f"found {config.network!r}, which the {config.backend} backend does not offer{caps.why_not(config.network)}; expected one of " + ", ".join(repr(m) for m in sorted(caps.network_modes))))
    if config.isolation not in caps.isolations:
        findings.append(Finding(("isolation",), f"found {config.isolation!r}, which the {config.backend} backend does not offer; expected " + " or ".join(repr(i) for i in caps.isolations)))
    least, why = caps.min_ram_mb
    if 0 < config.limits.max_ram_mb < least:
        findings.append(Finding(("max_ram_mb",), f"found {config.limits.max_ram_mb}; expected at least {least} with the {config.backend} backend: {why}"))
    if config.isolation == "hyperv" and config.hcs_api == "v2":
        findings.append(Finding(("hcs_api",), "found 'v2' with isolation 'hyperv'; expected 'v1' or 'auto': Hyper-V containers run through vmcompute.dll (HvPartition)"))
    return findings
