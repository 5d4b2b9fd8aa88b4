"""`nspawn doctor` for HCS: the Windows build, which API generations load, whether a parent
layer can run on this host, and which limits will be enforced.

The image/host build rule is checked here, from the layer's own files, because HCS reports a
mismatch only at create time and cryptically (HCS_E_IMAGE_MISMATCH; Microsoft's HCS docs, "HCS
Error Code", learn.microsoft.com/virtualization/api/hcs/reference/hcshresult).
"""

from __future__ import annotations

import os
import struct
import sys

from nspawn.backends.hcs import api_route, generations, layers
from nspawn.backends.hcs.enforcement import ENFORCEMENT, verdict
from nspawn.backends.hcs.native import loader
from nspawn.backends.hcs.native.errors import HcsError, LibraryUnavailable, MissingExport
from nspawn.config.model import Config
from nspawn.errors import LaunchError
from nspawn.records import record

Check = tuple[str, bool, str]


@record
class Version:
    major: int
    minor: int
    build: int
    revision: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.build}.{self.revision}"


# ---- the version resource of a PE file ---------------------------------------------------

_RT_VERSION = 16
_RESOURCE_DIRECTORY = 2  # index in the optional header's data directories
_FIXED_FILE_INFO_SIGNATURE = 0xFEEF04BD
_VERSION_KEY = "VS_VERSION_INFO\0".encode("utf-16-le")


def _unpack(fmt: str, data: bytes, offset: int) -> tuple:
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        raise ValueError("truncated PE file")
    return struct.unpack_from(fmt, data, offset)


def _resource_section(data: bytes) -> tuple[int, int]:
    """(file offset, RVA) of the resource directory."""
    if data[:2] != b"MZ":
        raise ValueError("not a PE file (no MZ header)")
    (pe,) = _unpack("<I", data, 0x3C)
    if data[pe:pe + 4] != b"PE\0\0":
        raise ValueError("not a PE file (no PE signature)")
    sections, optional_size = _unpack("<H12xH", data, pe + 6)
    optional = pe + 24
    (magic,) = _unpack("<H", data, optional)
    if magic not in (0x10B, 0x20B):
        raise ValueError(f"unknown optional header magic 0x{magic:X}")
    directories = optional + (96 if magic == 0x10B else 112)
    (count,) = _unpack("<I", data, directories - 4)
    rva = _unpack("<I", data, directories + 8 * _RESOURCE_DIRECTORY)[0] if count > _RESOURCE_DIRECTORY else 0
    if not rva:
        raise ValueError("the file has no resources")
    return _file_offset(data, optional + optional_size, sections, rva), rva


def _file_offset(data: bytes, table: int, sections: int, rva: int) -> int:
    for i in range(sections):
        virtual_size, address, raw_size, raw_pointer = _unpack("<IIII", data, table + 40 * i + 8)
        if address <= rva < address + max(virtual_size, raw_size):
            return rva - address + raw_pointer
    raise ValueError(f"RVA 0x{rva:X} lies in no section")


def _directory_entry(data: bytes, base: int, directory: int, wanted_id: int | None) -> int:
    """The OffsetToData of the entry with wanted_id (the first entry for None)."""
    named, ids = _unpack("<HH", data, base + directory + 12)
    for i in range(named + ids):
        name, target = _unpack("<II", data, base + directory + 16 + 8 * i)
        if wanted_id is None or (not name & 0x80000000 and name == wanted_id):
            return target
    raise ValueError("the file has no version resource")


def file_version(data: bytes) -> Version:
    """FileVersion from the VS_FIXEDFILEINFO of a PE file's RT_VERSION resource; ValueError
    saying why when there is none."""
    base, base_rva = _resource_section(data)
    entry = _directory_entry(data, base, 0, _RT_VERSION)
    for _ in ("name", "language"):
        if not entry & 0x80000000:
            raise ValueError("malformed resource directory")
        entry = _directory_entry(data, base, entry & 0x7FFFFFFF, None)
    if entry & 0x80000000:
        raise ValueError("malformed resource directory")
    rva, size = _unpack("<II", data, base + entry)
    info = base + (rva - base_rva)  # linkers keep resource data in the resource section
    if data[info + 6:info + 6 + len(_VERSION_KEY)] != _VERSION_KEY:
        raise ValueError("the version resource has no VS_VERSION_INFO")
    fixed = info + ((6 + len(_VERSION_KEY) + 3) & ~3)
    signature, _, ms, ls = _unpack("<IIII", data, fixed)
    if signature != _FIXED_FILE_INFO_SIGNATURE or fixed + 16 > info + size:
        raise ValueError("the version resource has no VS_FIXEDFILEINFO")
    return Version(ms >> 16, ms & 0xFFFF, ls >> 16, ls & 0xFFFF)


# ---- the parent layer ---------------------------------------------------------------------

_SYSTEM_FILE = ("Files", "Windows", "System32", "ntdll.dll")


def layer_version(chain: list[str]) -> tuple[Version, str]:
    """The Windows version a layer chain carries, from the top-most ntdll.dll in it, and that
    file's path; OSError or ValueError saying why not."""
    for layer in chain:
        path = os.path.join(layer, *_SYSTEM_FILE)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return file_version(f.read()), path
    raise ValueError(f"no layer of the chain holds {os.path.join(*_SYSTEM_FILE)}")


# ---- image/host compatibility -------------------------------------------------------------

WS2016, WS2022, WS2025 = 14393, 20348, 26100
_STABLE_ABI = (WS2022, WS2025)  # LTSC images a later host runs under process isolation


def process_isolation_verdict(host: Version, image: Version) -> tuple[bool, str]:
    """Microsoft's version-compatibility rule as hcsshim's osversion applies it: before
    WS2022 the builds must be equal (on WS2016 the revision too); from WS2022 a host runs
    images from the last stable-ABI LTSC before it up to its own build."""
    if (host.major, host.minor) != (image.major, image.minor):
        return False, f"image Windows {image.major}.{image.minor} on a Windows {host.major}.{host.minor} host"
    if host.build < WS2022:
        if host.build != image.build:
            return False, f"image build {image.build} differs from host build {host.build}; before Windows Server 2022 they must be equal"
        if host.build == WS2016 and host.revision != image.revision:
            return False, f"image revision {image.revision} differs from host revision {host.revision}; Windows Server 2016 needs them equal"
        return True, f"image build {image.build} matches the host"
    oldest = max((b for b in _STABLE_ABI if b < host.build), default=WS2022)
    if oldest <= image.build <= host.build:
        return True, f"image build {image.build} runs on host build {host.build} (builds {oldest}–{host.build} do)"
    return False, f"image build {image.build} cannot run on host build {host.build} (only builds {oldest}–{host.build} can)"


def hyperv_verdict(host: Version, image: Version) -> tuple[bool, str]:
    """A utility VM boots the image's own kernel: older images run, newer ones do not."""
    if image.build <= host.build:
        return True, f"image build {image.build} runs in a utility VM on host build {host.build}"
    return False, f"image build {image.build} is newer than host build {host.build}; Hyper-V isolation runs only older or equal images"


# ---- which limits are enforced ------------------------------------------------------------

def limit_checks(isolation: str, asked: dict | None) -> list[Check]:
    """One line per limit: all of them (as information) without a config, else the ones
    the config asks for, failing those this isolation cannot enforce."""
    checks = []
    for field in ENFORCEMENT:
        if asked is not None and field not in asked:
            continue
        enforced, why = verdict(field, isolation, asked or {})
        checks.append((f"{field} ({isolation} isolation)", enforced or asked is None,
                       ("enforced: " if enforced else "not enforced: ") + why))
    return checks


# ---- the host -----------------------------------------------------------------------------

def host_version() -> Version | None:
    if sys.platform != "win32":
        return None
    import winreg

    v = sys.getwindowsversion()
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Windows NT\CurrentVersion") as key:
            revision = winreg.QueryValueEx(key, "UBR")[0]
    except OSError:
        revision = 0  # builds before the UBR value existed
    return Version(v.major, v.minor, v.build, revision)


def api_checks() -> tuple[list[Check], list]:
    """Each DLL loaded through the loader the backend uses, with every export nspawn binds;
    and the binding modules whose DLL loaded. A DLL that loads without some of them (an older
    build) is named with what it lacks, and still counts as loaded: the rest works."""
    checks, loaded = [], []
    try:  # the binding modules take their prototypes from cwinsdk, a test extra off Windows
        from nspawn.backends.hcs.native import computecore, computenetwork, vmcompute
    except LibraryUnavailable as e:
        return [("HCS bindings", False, e.reason)], loaded
    for label, module in (("v2 API", computecore), ("v1 API", vmcompute), ("HCN networking", computenetwork)):
        dll = module.BINDINGS[0].dll
        try:
            library = loader.load(dll)
        except LibraryUnavailable as e:
            checks.append((f"{label} ({dll})", False, e.reason))
            continue
        loaded.append(module)
        missing = []
        for export in (name for b in module.BINDINGS for name in b.names()):
            try:
                library.function(export)
            except MissingExport:
                missing.append(export)
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            checks.append((f"{label} ({dll})", False, f"loads, but has no export {shown}"))
        else:
            checks.append((f"{label} ({dll})", True, "loads, with every function nspawn calls"))
    return checks, loaded


def service_check(api: str, isolation: str, loaded: list) -> Check:
    """Enumerating compute systems through the generation a run would take proves the service
    answers and that this user may use it: HCS answers HCS_E_ACCESS_DENIED to anyone neither an
    administrator nor in Hyper-V Administrators (Microsoft's HCS docs, "HCS Error Code")."""
    dll = {"v1": "vmcompute.dll", "v2": "computecore.dll"}[generations.choose(api_route(api, isolation))]
    module = next((m for m in loaded if m.BINDINGS[0].dll == dll), None)
    if module is None:
        return ("HCS service", False, f"{dll} does not load")
    try:
        systems = module.enumerate_compute_systems()
    except HcsError as e:
        return ("HCS service", False, e.message)
    except LibraryUnavailable as e:
        return ("HCS service", False, str(e))
    return ("HCS service", True, f"answers through {module.BINDINGS[0].dll}; {len(systems)} compute system(s) exist")


def layer_checks(parent: str, isolation: str, host: Version | None) -> list[Check]:
    try:
        chain = layers.read_chain(parent)
        image, source = layer_version(chain)
    except (LaunchError, OSError, ValueError) as e:
        return [("parent layer", False, f"cannot tell its Windows build: {e}")]
    checks = [("parent layer", True, f"Windows {image} (from {source})")]
    if host is None:
        checks.append((f"image vs host ({isolation} isolation)", False, "the host is not Windows"))
    else:
        ok, why = (hyperv_verdict if isolation == "hyperv" else process_isolation_verdict)(host, image)
        checks.append((f"image vs host ({isolation} isolation)", ok, why))
    if isolation == "hyperv":
        uvm = layers.utility_vm_image(chain)
        found = os.path.isdir(uvm)
        checks.append(("utility VM image", found, uvm if found else f"no layer of {parent} has a UtilityVM folder"))
    return checks


def doctor(config: Config | None = None) -> list[Check]:
    """What this host can do for the HCS backend. With a config, also whether its parent layer
    can run here, and whether its limits will be enforced."""
    host = host_version()
    checks: list[Check] = [("windows", host is not None,
                            f"Windows {host}" if host else f"this host is {sys.platform}; HCS needs Windows")]
    apis, loaded = api_checks()
    checks += apis
    isolation = config.isolation if config else "process"
    checks.append(service_check(config.hcs_api if config else "auto", isolation, loaded))
    if config is not None and config.parent_layer_directory:
        checks += layer_checks(config.parent_layer_directory, isolation, host)
    return checks + limit_checks(isolation, config.limits.asked() if config else None)
