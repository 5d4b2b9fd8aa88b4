"""Schema-valid document → typed Config, with the checks a schema cannot express.

Paths come in two flavours: Windows (the HCS backend, and hostcompute_nspawn's configs, where
`C:/x` means `C:\\x`) and POSIX (the Linux backend). Host paths may be relative to the config
file's directory; container paths must be absolute in the target's flavour.
"""

from __future__ import annotations

import math
import os
import posixpath
import sys
from types import MappingProxyType

from nspawn.backends import AUTO, BACKENDS, choose
from nspawn.config.derived import is_container_absolute
from nspawn.config.load import Finding
from nspawn.config.fields import CONTAINER_PATH, EXECUTABLE, FIELDS, HOST_PATH, IN_MAPPED, is_integer
from nspawn.config.model import ITEMS, Config, Limits, absent
from nspawn.units import mask_to_cpus

_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _windows_path(p: str) -> bool:
    """A drive path (C:\\ or C:/) or a UNC one (\\\\ or //); a string test, as a run imports no `re`."""
    return (p[:1] in _LETTERS and p[1:3] in (":\\", ":/")) or p[:2] in ("\\\\", "//")


_PATH_KEYS = ("parent_layer_directory", "process_directory", "mapped_directory", "working_directory")


def flavour(document: dict) -> str:
    backend = document.get("backend", AUTO)
    if backend != AUTO:
        return BACKENDS[backend].flavour
    paths = [document.get(k) for k in _PATH_KEYS] + [
        m.get(k) for m in document.get("mounts", ()) for k in ("host_path", "container_path")
    ]
    if sys.platform == "win32" or any(isinstance(p, str) and _windows_path(p) for p in paths):
        return "windows"
    return "posix"


def simulated_host() -> bool:
    """Whether HCS runs against its simulator here (the tests' seam, which lives with the HCS
    loader): Windows configs then have this host's own host paths. Asked for Windows configs
    only, which import the HCS backend anyway."""
    from nspawn.backends.hcs.native.loader import simulated

    return simulated()


class _Paths:
    """Path rules of one flavour."""

    def __init__(self, flavour: str, base_dir: str):
        self.flavour = flavour
        self.windows = flavour == "windows"
        if self.windows:
            import ntpath  # only here: a POSIX config, every Linux launch, need not import it

            self.mod = ntpath
        else:
            self.mod = posixpath
        self.base_dir = base_dir
        self.simulated = self.windows and simulated_host()
        self.native = (sys.platform == "win32") == self.windows or self.simulated

    def normal(self, path: str) -> str:
        return self.mod.normpath(path.replace("/", "\\") if self.windows else path)

    def is_absolute(self, path: str) -> bool:
        return is_container_absolute(path, self.flavour)

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

    def inside(where: tuple, value: str) -> str:
        resolved = paths.inside(value)
        if resolved is None:
            findings.append(Finding(where, f"found {value!r}, which leaves the mapped directory; expected a path inside it"))
        return resolved or value

    def typed(field, value, where: tuple):
        """The model's value of one field as the file gives it, normalised by its kind."""
        if value is None:
            return absent(field)
        if value in field.keywords:
            return value
        if field.items:
            return tuple(_item(field, item, where + (i,)) for i, item in enumerate(value))
        if is_integer(field):
            return int(value, 16) if isinstance(value, str) else int(value)
        if isinstance(value, float) and not math.isfinite(value):
            # JSON has no NaN (the loader refuses it), but an override may; bounds never catch it.
            findings.append(Finding(where, f"found {value}; expected a finite number"))
            return absent(field)
        if isinstance(value, list):
            return tuple(value)
        if isinstance(value, dict):
            return MappingProxyType(dict(value))
        if field.kind == HOST_PATH:
            resolved = paths.host(value)
            if resolved is None:
                findings.append(Finding(where, f"found the relative path {value!r}; expected {host_expected}"))
            return resolved or value
        if field.kind == CONTAINER_PATH:
            resolved = paths.container(value)
            if resolved is None:
                findings.append(Finding(where, f"found {value!r}; expected {expected_abs} inside the container"))
            return resolved or value
        if field.kind == IN_MAPPED:
            return inside(where, value)
        return value

    def _item(field, item: dict, where: tuple):
        return ITEMS[field.key](**{f.name: typed(f, item.get(f.key), where + (f.key,)) for f in field.items})

    values = {f.name: typed(f, document.get(f.key), (f.key,)) for f in FIELDS if f.kind != EXECUTABLE}
    limits = Limits(**{f.name: values.pop(f.name) for f in FIELDS if f.limit})

    # Rules across fields.
    if "mapped_directory" not in document and values["process_directory"] is not None:
        if paths.is_absolute(values["process_directory"]):
            values["mapped_directory"] = values["process_directory"]
        elif paths.native:  # a UNC or simulator path has no drive to appear at in the container
            findings.append(Finding(("mapped_directory",), f"missing; expected it, as process_directory {values['process_directory']!r} cannot appear at the same path in the container"))
    executable = document.get("process_executable")  # absent only with an image, whose config names it
    if executable is None:
        pass
    elif paths.is_absolute(paths.normal(executable)):
        executable = paths.normal(executable)
    elif values["process_directory"] is not None:
        executable = inside(("process_executable",), executable)
    elif any(sep in executable for sep in "/\\"):
        findings.append(Finding(("process_executable",), f"found the relative path {executable!r} without a process_directory; expected an absolute path, a command name, or a process_directory"))
    if values["image"] is not None:
        findings += _image(values)
    if paths.windows:
        seen: dict[str, str] = {}
        for name in values["environment"]:
            if name.upper() in seen:
                findings.append(Finding(("environment", name), f"found {name!r} and {seen[name.upper()]!r}; expected distinct names (Windows ignores case)", at_key=True))
            seen[name.upper()] = name
    named = len(mask_to_cpus(limits.cpu_affinity))
    if named and limits.cpus_count > named:
        findings.append(Finding(("cpus_count",), f"found {limits.cpus_count} with cpu_affinity_hex naming {named} CPU{'s' if named > 1 else ''}; expected at most {named}, or no affinity"))
    values["backend"] = choose(values["backend"], kind)
    config = Config(process_executable=executable, limits=limits, source=source, flavour=kind, **values)
    findings += _collisions(config, paths)
    findings += _offered(config)
    findings += _published(config)
    return config, findings


def _published(config: Config) -> list[Finding]:
    """Each published port well formed, none twice, and a NAT network to publish them from."""
    if not config.ports:
        return []
    from nspawn.config import ports

    if config.network != "nat":
        return [Finding(("ports",), f"found published ports with network {config.network!r}; expected network 'nat' (or no ports)")]
    findings, parsed = [], []
    for i, text in enumerate(config.ports):
        try:
            parsed.append(ports.parse(text))
        except ValueError as e:
            findings.append(Finding(("ports", i), f"found {text!r}; {e}"))
    if not findings:
        findings += [Finding(("ports", j), f"found {config.ports[j]!r}, which publishes the host port of ports[{i}] again; expected each host port once")
                     for i, j in ports.conflicts(parsed)]
    return findings


def _image(values: dict) -> list[Finding]:
    from nspawn.images.reference import ReferenceError, parse

    findings = []
    if values["parent_layer_directory"] is not None:
        findings.append(Finding(("image",), "set with parent_layer_directory; expected one of them: the image's layers "
                                            "are the root filesystem", at_key=True))
    try:
        parse(values["image"])
    except ReferenceError as e:
        findings.append(Finding(("image",), str(e)))
    return findings


def _collisions(config: Config, paths: _Paths) -> list[Finding]:
    findings = []
    targets: list[tuple[tuple, str]] = []
    if config.mapped_directory:
        targets.append((("mapped_directory",), config.mapped_directory))
    targets += [(("mounts", i, "container_path"), m.container_path) for i, m in enumerate(config.mounts)]
    targets += [(("tmpfs", i, "container_path"), t.container_path) for i, t in enumerate(config.tmpfs)]
    seen: dict[str, tuple] = {}
    for where, target in targets:
        if not paths.is_absolute(target):
            continue  # already reported
        if paths.windows and len(target) <= 3:
            findings.append(Finding(where, f"found the drive root {target!r}; expected a directory below it"))
        first = seen.setdefault(paths.key(target), where)
        if first is not where:
            from nspawn.config.jsonpos import path_text

            findings.append(Finding(where, f"found {target!r}, already mapped by {path_text(first)}; expected each container path once"))
    return findings


def _offered(config: Config) -> list[Finding]:
    """What the registry says the chosen backend offers, and fields only other backends read;
    its own rules are its validate's."""
    caps = BACKENDS[config.backend]
    ignored = [f for f in FIELDS if f.backends and config.backend not in f.backends
               and getattr(config, f.name) != absent(f)]
    findings = [Finding((f.key,), f"found {getattr(config, f.name)!r}, which only the {' and '.join(f.backends)} backend reads; expected it left out with the {config.backend} backend")
                for f in ignored]
    findings += [Finding((key,), f"missing; expected it, as the {config.backend} backend needs it")
                 for key in caps.requires if getattr(config, key) is None
                 and not (key == "parent_layer_directory" and config.image is not None)]  # the image gives it
    if config.network not in caps.network_modes:
        findings.append(Finding(("network",), f"found {config.network!r}, which the {config.backend} backend does not offer{caps.why_not(config.network)}; expected one of " + ", ".join(repr(m) for m in sorted(caps.network_modes))))
    if config.isolation not in caps.isolations:
        findings.append(Finding(("isolation",), f"found {config.isolation!r}, which the {config.backend} backend does not offer; expected " + " or ".join(repr(i) for i in caps.isolations)))
    least, why = caps.min_ram_mb
    if 0 < config.limits.max_ram_mb < least:
        findings.append(Finding(("max_ram_mb",), f"found {config.limits.max_ram_mb}; expected at least {least} with the {config.backend} backend: {why}"))
    return findings
