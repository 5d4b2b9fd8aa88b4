"""HCN, kernel32/ntdll, errors and the loader, and a check that every bound
function is fully declared."""

from __future__ import annotations

import ctypes
import json
import os

import pytest

from nspawn.backends.hcs.native import computecore as cc
from nspawn.backends.hcs.native import computenetwork as hcn
from nspawn.backends.hcs.native import kernel32, loader
from nspawn.backends.hcs.native import vmcompute as vm
from nspawn.backends.hcs.native.errors import HcsError, LibraryUnavailable, is_already_stopped, is_not_found
from tests.hcs_sim.fixtures import sim, sim_library  # noqa: F401 (fixtures)


def test_nat_endpoint_in_a_namespace_and_teardown(sim):
    (network_id,) = hcn.find_networks("nat")
    assert hcn.find_networks("missing") == []
    endpoint_id, namespace_id = "0e1d0000-0000-4000-8000-0000000000e1", "0e1d0000-0000-4000-8000-0000000000a5"
    with hcn.open_network(network_id) as network:
        settings = {"Name": "c1", "HostComputeNetwork": network_id, "SchemaVersion": hcn.SCHEMA,
                    "Policies": [{"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80,
                                                                      "ExternalPort": 8080}}]}
        network.create_endpoint(settings, id=endpoint_id).close()
    [endpoint] = sim.ledger()["endpoints"]
    assert endpoint["ID"] == endpoint_id and endpoint["IpConfigurations"][0]["IpAddress"].startswith("172.20.")
    with hcn.create_namespace(id=namespace_id) as namespace:
        namespace.add_endpoint(endpoint_id)
    [namespace] = sim.ledger()["namespaces"]
    assert namespace["ID"] == namespace_id and namespace["Resources"][0]["Data"]["Id"] == endpoint_id
    with pytest.raises(HcsError) as info:
        hcn.delete_endpoint(endpoint_id)  # still attached
    assert info.value.call == "HcnDeleteEndpoint" and "attached" in info.value.message
    with hcn.open_namespace(namespace_id) as namespace:
        namespace.remove_endpoint(endpoint_id)
    hcn.delete_namespace(namespace_id)
    hcn.delete_endpoint(endpoint_id)
    with pytest.raises(HcsError) as info:
        hcn.delete_endpoint(endpoint_id)
    assert is_not_found(info.value)
    assert sim.live() == {}
    assert sim.documents("HcnCreateEndpoint")[0]["Policies"][0]["Type"] == "PortMapping"


def test_hcn_error_record_fails_the_call(sim):
    sim.fail("HcnCreateNamespace", 0x803B0001, message="namespace store is full")
    with pytest.raises(HcsError) as info:
        hcn.create_namespace()
    assert info.value.message == "HcnCreateNamespace failed: 0x803B0001: namespace store is full"
    with pytest.raises(HcsError) as info:
        hcn.open_network("00000000-0000-0000-0000-00000000beef")
    assert is_not_found(info.value)
    assert sim.live() == {}


# ---- kernel32 / ntdll ---------------------------------------------------------

def test_silo_affinity_reaches_the_processes(sim, tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    doc = {"Owner": "nspawn", "ShouldTerminateOnLastHandleClosed": True,
           "Container": {"MappedDirectories": []}}
    with cc.create_compute_system("pinned", doc) as system:
        kernel32.set_silo_affinity("pinned", {0: 1 << cpus[0]})
        system.start()
        with system.create_process({"CommandLine": "sleep 5"}) as process:
            assert os.sched_getaffinity(process.pid) == {cpus[0]}
            process.terminate()
    (record,) = sim.calls("NtOpenJobObject")
    assert record["args"] == ["\\Container_pinned"]
    assert sim.calls("SetInformationJobObject")[0]["args"] == [14, [[0, 1 << cpus[0]]]]
    with pytest.raises(HcsError) as info:
        kernel32.set_silo_affinity("no-such-container", {0: 1})
    assert (info.value.call, info.value.name) == ("NtOpenJobObject", "ERROR_FILE_NOT_FOUND")
    with pytest.raises(ValueError):
        kernel32.set_silo_affinity("pinned", {0: 0})
    assert sim.wait_clean() == {}


def test_processor_groups_and_build_are_the_host_s(sim, monkeypatch):
    monkeypatch.setenv("NSPAWN_HCS_SIM_GROUPS", "36,36,3")
    monkeypatch.setenv("NSPAWN_HCS_SIM_BUILD", "17763")
    assert kernel32.processor_groups() == (36, 36, 3)
    assert kernel32.windows_build() == 17763
    monkeypatch.delenv("NSPAWN_HCS_SIM_GROUPS")
    monkeypatch.delenv("NSPAWN_HCS_SIM_BUILD")
    assert kernel32.processor_groups() == (os.cpu_count(),)
    assert kernel32.windows_build() == 20348


def test_a_group_the_host_lacks_or_a_bit_beyond_its_cpus_is_refused(sim, monkeypatch):
    monkeypatch.setenv("NSPAWN_HCS_SIM_GROUPS", "3,5")
    doc = {"Owner": "nspawn", "ShouldTerminateOnLastHandleClosed": True, "Container": {"MappedDirectories": []}}
    with cc.create_compute_system("pinned", doc):
        for masks in ({2: 1}, {0: 1 << 3}, {1: 1 << 5}):
            with pytest.raises(HcsError) as info:
                kernel32.set_silo_affinity("pinned", masks)
            assert info.value.name == "ERROR_INVALID_PARAMETER"
        kernel32.set_silo_affinity("pinned", {0: 0b100, 1: 0b10000})
    assert sim.calls("SetInformationJobObject")[-1]["args"] == [14, [[0, 0b100], [1, 0b10000]]]
    assert sim.wait_clean() == {}


def test_close_handle_of_a_bad_handle_fails_with_last_error(sim):
    with pytest.raises(HcsError) as info:
        kernel32.close_handle(12345)
    assert (info.value.call, info.value.name) == ("CloseHandle", "ERROR_INVALID_HANDLE")


def test_an_operation_hcs_cannot_allocate_fails_as_out_of_memory(sim):
    sim.fail("HcsCreateOperation", 0x8007000E)  # the simulator then returns NULL, as HCS does
    with pytest.raises(HcsError) as info:
        cc.enumerate_compute_systems()
    assert (info.value.call, info.value.name) == ("HcsCreateOperation", "E_OUTOFMEMORY")


def test_freeing_with_the_wrong_allocator_is_caught(sim):
    # LocalFree for computecore strings, CoTaskMemFree for vmcompute/HCN (kernel32.py says why).
    raw = loader.load("vmcompute.dll").function("HcsEnumerateComputeSystems")  # unchecked copy
    raw.argtypes = [ctypes.c_wchar_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)]
    ptr = ctypes.c_void_p()
    assert raw(None, ptr, ctypes.c_void_p()) == 0
    kernel32.local_free(ptr)
    assert sim.ledger()["free_errors"] == ["LocalFree on a string from the other allocator"]


def test_structure_layouts_match_windows_x64():
    sizes = {cc.HCS_PROCESS_INFORMATION: 32, cc.HCS_EVENT: 24, vm.GUID: 16, vm.DriverInfo: 16,
             vm.WC_LAYER_DESCRIPTOR: 32, kernel32.GROUP_AFFINITY: 16, kernel32.UNICODE_STRING: 16,
             kernel32.OBJECT_ATTRIBUTES: 48, kernel32.OVERLAPPED: 32}
    assert {t: ctypes.sizeof(t) for t in sizes} == sizes
    assert vm.WC_LAYER_DESCRIPTOR.Path.offset == 24 and cc.HCS_EVENT.EventData.offset == 8
    guid = vm.guid("00112233-4455-6677-8899-aabbccddeeff")
    assert bytes(guid)[:4] == bytes.fromhex("33221100")
    assert str(vm.guid_uuid(guid)) == "00112233-4455-6677-8899-aabbccddeeff"


# ---- errors and loader ----------------------------------------------------------

def test_error_message_and_classification():
    doc = json.dumps({"Error": -2143878898, "ErrorMessage": "A compute system with the\nid c1 was not found"})
    e = HcsError("HcsOpenComputeSystem", -2143878898, doc)
    assert (e.hresult, e.name) == (0x8037010E, "HCS_E_SYSTEM_NOT_FOUND")
    assert e.message == ("HcsOpenComputeSystem failed: 0x8037010E HCS_E_SYSTEM_NOT_FOUND: "
                         "A compute system with the id c1 was not found")
    assert str(e) == e.message and is_not_found(e) and not is_already_stopped(e)
    assert HcsError("X", 0x8007000D).win32 == 13 and HcsError("X", 0x80370110).win32 is None
    assert HcsError("X", 0x12345678, "plain text").message == "X failed: 0x12345678: plain text"
    # Win32 names are cwinsdk's winerror values, read on first use
    assert HcsError("X", 0x80070490).name == "ERROR_NOT_FOUND" and HcsError("X", 0x80070005).name == "ERROR_ACCESS_DENIED"
    for code in (0xC0370110, 0x80370110, 0x8037011F, 0x80070490):
        assert is_already_stopped(HcsError("HcsTerminateComputeSystem", code))
    assert not is_already_stopped(ValueError())


def test_loader_without_windows_or_simulator(monkeypatch):
    monkeypatch.delenv(loader.SIMULATOR_ENV, raising=False)
    with pytest.raises(LibraryUnavailable) as info:
        loader.load("computecore.dll")
    assert info.value.name == "computecore.dll" and "Windows" in info.value.reason
    monkeypatch.setenv(loader.SIMULATOR_ENV, "/nonexistent/libhcs_sim.so")
    with pytest.raises(LibraryUnavailable):
        cc.enumerate_compute_systems()


def test_loader_caches_and_rejects_missing_exports(sim):
    assert loader.load("vmcompute.dll") is loader.load("VMCOMPUTE.dll")
    with pytest.raises(LibraryUnavailable) as info:
        loader.load("computecore.dll").function("HcsNoSuchExport")
    assert "HcsNoSuchExport" in str(info.value)


def test_cwinsdk_loads_here_with_its_dlls_resolved_to_the_simulator(sim):
    fileapi = loader.sdk("um.fileapi")
    # an export the simulator has: cwinsdk's own function object reaches it
    r, w = os.pipe()
    try:
        assert fileapi.GetFileType(r) == kernel32.FILE_TYPE_PIPE == 3
        assert sim.calls("kernel32!GetFileType")
    finally:
        os.close(r)
        os.close(w)
    # one it lacks was bound at import and fails when called, naming the DLL and export
    with pytest.raises(LibraryUnavailable) as info:
        fileapi.CreateFileW("x", 0, 0, None, 0, 0, None)
    assert (info.value.name, info.value.export) == ("kernel32.dll", "CreateFileW")


def test_cwinsdk_sees_windows_widths_and_ctypes_is_left_alone():
    import ctypes.wintypes

    ntdef = loader.sdk("shared.ntdef")
    assert ctypes.sizeof(ntdef.ULONG) == 4 and ctypes.sizeof(loader.sdk("shared.guiddef").GUID) == 16
    # only cwinsdk's modules see the LLP64 copies: this process's ctypes keeps its own widths
    assert ctypes.sizeof(ctypes.c_ulong) == ctypes.sizeof(ctypes.wintypes.DWORD) == ctypes.sizeof(ctypes.c_void_p)
    assert not hasattr(ctypes, "WinDLL")


def test_bindings_take_cwinsdk_prototypes_with_nspawn_errchecks(sim):
    handleapi = loader.sdk("um.handleapi")
    bound = kernel32._kernel32.CloseHandle
    assert bound is not handleapi.CloseHandle and bound.argtypes == handleapi.CloseHandle.argtypes
    with pytest.raises(HcsError) as info:  # not cwinsdk's bare OSError
        bound(987654)
    assert info.value.call == "CloseHandle" and info.value.name == "ERROR_INVALID_HANDLE"


# ---- every binding declared and exercised -----------------------------------------

ALL_BINDINGS = cc.BINDINGS + vm.BINDINGS + hcn.BINDINGS + kernel32.BINDINGS


def test_every_binding_has_prototype_and_errcheck(sim):
    for bindings in ALL_BINDINGS:
        for name in bindings.names():
            fn = getattr(bindings, name)
            assert fn.argtypes is not None and fn.errcheck is not None, (bindings.dll, name)
