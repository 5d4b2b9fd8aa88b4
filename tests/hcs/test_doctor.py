"""`nspawn doctor` for HCS: the version resource read from real PE bytes, the image/host rule,
the enforcement table, and the DLL and service probes against the simulator."""

from __future__ import annotations

import json
import struct

import pytest

from nspawn.backends.hcs.diagnosis import (
    ENFORCEMENT, Version, doctor, file_version, hyperv_verdict, layer_version, limit_checks,
    process_isolation_verdict,
)
from nspawn.backends.hcs import diagnosis
from nspawn.backends.hcs.native.loader import SIMULATOR_ENV
from nspawn.config.model import Config, Limits
from tests.conftest import nspawn
from tests.hcs_sim.fixtures import sim, sim_library  # noqa: F401  (fixtures)

SECTION_RVA, SECTION_OFFSET = 0x1000, 0x200


def version_info(version: tuple[int, int, int, int]) -> bytes:
    """A VS_VERSIONINFO block holding only its VS_FIXEDFILEINFO."""
    major, minor, build, revision = version
    key = "VS_VERSION_INFO\0".encode("utf-16-le")
    padding = b"\0" * (-(6 + len(key)) % 4)
    ms, ls = major << 16 | minor, build << 16 | revision
    fixed = struct.pack("<13I", 0xFEEF04BD, 0x10000, ms, ls, ms, ls, 0x3F, 0, 0x40004, 2, 0, 0, 0)
    body = key + padding + fixed
    return struct.pack("<HHH", 6 + len(body), len(fixed), 0) + body


def _directory(entries: list[tuple[int, int]], named: int = 0) -> bytes:
    return struct.pack("<IIHHHH", 0, 0, 0, 0, named, len(entries) - named) + b"".join(
        struct.pack("<II", name, target) for name, target in entries)


def resource_section(data: bytes, type_id: int = 16) -> bytes:
    """A resource tree type -> name -> language -> data, as link.exe lays it out; a named
    type and an RT_ICON entry come first, as in real system DLLs."""
    root_size, sub_size = 16 + 3 * 8, 16 + 8
    name_dir, lang_dir = root_size, root_size + sub_size
    data_entry = lang_dir + sub_size
    payload = data_entry + 16
    root = _directory([(0x80000000 | 0x7FF0, 0x80000000 | name_dir), (3, 0x80000000 | name_dir),
                       (type_id, 0x80000000 | name_dir)], named=1)
    return (root + _directory([(1, 0x80000000 | lang_dir)]) + _directory([(0x409, data_entry)])
            + struct.pack("<IIII", SECTION_RVA + payload, len(data), 0, 0) + data)


def pe_file(section: bytes | None, pe32_plus: bool = True) -> bytes:
    """A minimal PE image with one .rsrc section (or none)."""
    magic, directories = (0x20B, 112) if pe32_plus else (0x10B, 96)
    optional = bytearray(directories + 16 * 8)
    struct.pack_into("<H", optional, 0, magic)
    struct.pack_into("<I", optional, directories - 4, 16)
    if section is not None:
        struct.pack_into("<II", optional, directories + 2 * 8, SECTION_RVA, len(section))
    coff = struct.pack("<HHIIIHH", 0x8664, 1, 0, 0, 0, len(optional), 0x22)
    table = struct.pack("<8sIIII12xI", b".rsrc", len(section or b""), SECTION_RVA, len(section or b""),
                        SECTION_OFFSET, 0x40000040)
    dos = bytearray(64)
    dos[:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 64)
    headers = bytes(dos) + b"PE\0\0" + coff + bytes(optional) + table
    return headers.ljust(SECTION_OFFSET, b"\0") + (section or b"")


# ---- the version resource ------------------------------------------------------------------

@pytest.mark.parametrize("pe32_plus", [True, False], ids=["PE32+", "PE32"])
@pytest.mark.parametrize("version", [(10, 0, 20348, 2227), (10, 0, 14393, 0), (6, 3, 9600, 65535)])
def test_the_file_version_is_read_from_the_version_resource(version, pe32_plus):
    assert file_version(pe_file(resource_section(version_info(version)), pe32_plus)) == Version(*version)


@pytest.mark.parametrize("data,why", [
    (b"", "no MZ header"),
    (b"#!/bin/sh\n" * 10, "no MZ header"),
    (b"MZ" + b"\0" * 0x3A + b"\x40\0\0\0" + b"NE\0\0" + b"\0" * 64, "no PE signature"),
    (pe_file(None), "no resources"),
    (pe_file(resource_section(version_info((10, 0, 1, 1)), type_id=24)), "no version resource"),
    (pe_file(resource_section(version_info((10, 0, 1, 1)).replace(b"V\0S\0_\0", b"X\0S\0_\0"))), "no VS_VERSION_INFO"),
    (pe_file(resource_section(version_info((10, 0, 1, 1)).replace(struct.pack("<I", 0xFEEF04BD), b"\0" * 4))),
     "no VS_FIXEDFILEINFO"),
    (pe_file(resource_section(version_info((10, 0, 1, 1))))[:SECTION_OFFSET + 40], "truncated"),
])
def test_a_file_without_a_readable_version_says_why(data, why):
    with pytest.raises(ValueError, match=why):
        file_version(data)


def _layer(folder, version=None):
    folder.mkdir()
    if version:
        system32 = folder / "Files" / "Windows" / "System32"
        system32.mkdir(parents=True)
        (system32 / "ntdll.dll").write_bytes(pe_file(resource_section(version_info(version))))
    return str(folder)


def test_the_layer_version_comes_from_the_top_most_ntdll_of_the_chain(tmp_path):
    top, update, base = _layer(tmp_path / "top"), _layer(tmp_path / "update", (10, 0, 20348, 2227)), \
        _layer(tmp_path / "base", (10, 0, 20348, 169))
    assert layer_version([top, update, base]) == (Version(10, 0, 20348, 2227), f"{update}/Files/Windows/System32/ntdll.dll")
    assert layer_version([top, base])[0] == Version(10, 0, 20348, 169)
    with pytest.raises(ValueError, match="no layer of the chain holds"):
        layer_version([top])


# ---- image and host --------------------------------------------------------------------------

V = lambda build, revision=0, major=10, minor=0: Version(major, minor, build, revision)  # noqa: E731


@pytest.mark.parametrize("host,image,ok", [
    (V(17763, 1), V(17763, 5000), True),       # same build, any revision
    (V(17763), V(20348), False),
    (V(20348), V(17763), False),               # before the stable ABI
    (V(14393, 100), V(14393, 100), True),
    (V(14393, 100), V(14393, 200), False),     # WS2016 wants the revision too
    (V(20348), V(20348), True),
    (V(22621), V(20348), True),                # Windows 11 runs WS2022 images
    (V(22621), V(26100), False),               # not newer ones
    (V(26100), V(20348), True),                # WS2025 runs WS2022 images
    (V(26100), V(26100), True),
    (V(26200), V(20348), False),               # after WS2025, only from WS2025 on
    (V(26200), V(26100), True),
    (V(9600, major=6, minor=3), V(9600, major=10), False),
])
def test_process_isolation_follows_the_version_compatibility_rule(host, image, ok):
    verdict, why = process_isolation_verdict(host, image)
    assert verdict is ok and (str(image.build) in why or str(image.major) in why)


@pytest.mark.parametrize("host,image,ok", [(V(20348), V(17763), True), (V(17763), V(17763), True),
                                           (V(17763), V(20348), False)])
def test_hyperv_runs_older_images_only(host, image, ok):
    assert hyperv_verdict(host, image)[0] is ok


# ---- which limits are enforced ---------------------------------------------------------------

def test_without_a_config_every_limit_is_listed_as_information():
    checks = limit_checks("process", None)
    assert [c[0] for c in checks] == [f"{f} (process isolation)" for f in ENFORCEMENT]
    assert all(ok for _, ok, _ in checks)
    assert {c[0].split()[0] for c in checks if "not enforced" in c[2]} == {"cpus_count", "max_processes"}


def test_a_config_fails_on_the_limits_its_isolation_cannot_enforce():
    asked = Limits(max_ram_mb=256, cpus_count=2, cpu_affinity=3, max_processes=10).asked()
    verdicts = {name.split()[0]: ok for name, ok, _ in limit_checks("process", asked)}
    assert verdicts == {"max_ram_mb": True, "cpus_count": False, "cpu_affinity": True, "max_processes": False}
    verdicts = {name.split()[0]: ok for name, ok, _ in limit_checks("hyperv", asked)}
    assert verdicts == {"max_ram_mb": True, "cpus_count": True, "cpu_affinity": False, "max_processes": False}


# ---- the host, against the simulator ---------------------------------------------------------

def checks_by_name(checks):
    return {name: (ok, detail) for name, ok, detail in checks}


def test_with_the_simulator_every_api_loads_and_the_service_answers(sim):
    found = checks_by_name(doctor())
    for label in ("v2 API (computecore.dll)", "v1 API (vmcompute.dll)", "HCN networking (computenetwork.dll)"):
        assert found[label] == (True, "loads, with every function nspawn calls")
    assert found["HCS service"] == (True, "answers through computecore.dll; 0 compute system(s) exist")
    assert found["windows"][0] is False
    assert sim.calls("computecore!HcsEnumerateComputeSystems") and not sim.calls("vmcompute!HcsEnumerateComputeSystems")


def test_the_service_is_probed_through_the_generation_a_run_takes(sim):
    """Hyper-V and a forced v1 take vmcompute.dll; a refusal there is reported in HCS's words."""
    sim.fail("vmcompute!HcsEnumerateComputeSystems", 0x8037011B, message="not a Hyper-V Administrator")
    for config in (Config("x", isolation="hyperv", flavour="windows"), Config("x", hcs_api="v1", flavour="windows")):
        ok, detail = checks_by_name(doctor(config))["HCS service"]
        assert not ok and "HcsEnumerateComputeSystems failed: 0x8037011B HCS_E_ACCESS_DENIED" in detail
    assert checks_by_name(doctor(Config("x", flavour="windows")))["HCS service"][0] is True


def test_a_library_that_does_not_load_is_named_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv(SIMULATOR_ENV, str(tmp_path / "missing.so"))
    found = checks_by_name(doctor())
    ok, detail = found["v2 API (computecore.dll)"]
    assert not ok and "does not load" in detail and "missing.so" in detail
    assert found["HCS service"] == (False, "vmcompute.dll does not load")  # auto falls back to v1


def test_a_library_without_the_functions_nspawn_calls_is_named_with_what_it_lacks(monkeypatch):
    """A DLL that loads without some exports (an older build) is not reported as not loading:
    the missing exports are named, and the service is still asked where the one it needs is there."""
    monkeypatch.setenv(SIMULATOR_ENV, "libc.so.6")
    found = checks_by_name(doctor())
    ok, detail = found["v1 API (vmcompute.dll)"]
    assert not ok and detail.startswith("loads, but has no export HcsEnumerateComputeSystems, ") and "more" in detail
    ok, detail = found["HCN networking (computenetwork.dll)"]
    assert not ok and detail.startswith("loads, but has no export HcnEnumerateNetworks")
    assert found["HCS service"] == (False, "computecore.dll is not available: it has no export HcsEnumerateComputeSystems")


def on_layer(parent: str, **config) -> Config:
    """A config running on the parent layer `parent`, as `nspawn doctor -c` loads it."""
    return Config("x", parent_layer_directory=parent, flavour="windows", **config)


def test_a_parent_layer_is_checked_against_the_host(sim, tmp_path, monkeypatch):
    base = _layer(tmp_path / "base", (10, 0, 20348, 2227))
    parent = _layer(tmp_path / "app")
    (tmp_path / "app" / "layerchain.json").write_text(json.dumps([base]))

    found = checks_by_name(doctor(on_layer(parent)))
    assert found["parent layer"] == (True, f"Windows 10.0.20348.2227 (from {base}/Files/Windows/System32/ntdll.dll)")
    assert found["image vs host (process isolation)"] == (False, "the host is not Windows")

    monkeypatch.setattr(diagnosis, "host_version", lambda: Version(10, 0, 17763, 1))
    ok, why = checks_by_name(doctor(on_layer(parent)))["image vs host (process isolation)"]
    assert not ok and "20348" in why and "17763" in why

    monkeypatch.setattr(diagnosis, "host_version", lambda: Version(10, 0, 20348, 1))
    hyperv = on_layer(parent, isolation="hyperv")
    found = checks_by_name(doctor(hyperv))
    assert found["image vs host (hyperv isolation)"][0] is True
    assert found["utility VM image"][0] is False
    (tmp_path / "base" / "UtilityVM").mkdir()
    assert checks_by_name(doctor(hyperv))["utility VM image"] == (True, f"{base}/UtilityVM")


def test_an_unreadable_parent_layer_is_reported_not_raised(sim, tmp_path):
    (tmp_path / "layerchain.json").write_text("{not json")
    ok, detail = checks_by_name(doctor(on_layer(str(tmp_path))))["parent layer"]
    assert not ok and "layerchain.json" in detail


def test_the_doctor_command_reports_hcs_in_one_line_per_check():
    result = nspawn("doctor", "--backend", "hcs", env={SIMULATOR_ENV: ""})
    lines = result.stdout.splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("NO  windows: this host is")
    assert any(line.startswith("NO  v2 API (computecore.dll): ") for line in lines)
    assert any(line.startswith("ok  max_ram_mb (process isolation): enforced") for line in lines)


def test_the_backend_doctor_answers_twice_in_one_process(sim):
    """The backend's doctor() imports its module on first call; a module named like the
    function would then shadow it on the package and the second call would fail."""
    from nspawn.backends import hcs

    first, second = hcs.doctor(), hcs.doctor()
    assert callable(hcs.doctor) and first == second
    assert checks_by_name(second)["HCS service"][0] is True
