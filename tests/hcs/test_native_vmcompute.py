"""vmcompute.dll (v1 compute, layers, HNSCall) bindings against the simulator."""

from __future__ import annotations

import gc
import subprocess

import pytest

from nspawn.backends.hcs.native import kernel32
from nspawn.backends.hcs.native import vmcompute as vm
from nspawn.backends.hcs.native.errors import HcsError, is_already_stopped, is_not_found, is_process_gone
from tests.hcs_sim.fixtures import sim, sim_library  # noqa: F401 (fixtures)


def document(host_dir):
    return {"SystemType": "Container", "Name": "c1", "Owner": "nspawn", "TerminateOnLastHandleClosed": True,
            "MappedDirectories": [{"HostPath": str(host_dir), "ContainerPath": "C:\\nspawn"}]}


def params(args, **extra):
    return {"CommandLine": subprocess.list2cmdline(args), "WorkingDirectory": "C:\\nspawn",
            "CreateStdInPipe": True, "CreateStdOutPipe": True, "CreateStdErrPipe": True, **extra}


def read_all(handle):
    out = b""
    while chunk := kernel32.read(handle):
        out += chunk
    return out


def test_v1_sequence_end_to_end(sim, tmp_path):
    (tmp_path / "data.txt").write_text("mapped\n")
    system = vm.create_compute_system("c1", document(tmp_path))
    gc.collect()
    system.start()
    process = system.create_process(params(["cat", "C:\\nspawn\\data.txt"]))
    assert read_all(process.stdout) == b"mapped\n"
    assert process.wait_exited(5000) == 0
    process.close()
    system.terminate()
    assert system.wait_exited(5000) is not None
    with pytest.raises(HcsError) as info:
        system.terminate()
    assert is_already_stopped(info.value) and info.value.name == "ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED"
    system.close()
    assert sim.wait_clean() == {}
    assert [c["call"] for c in sim.calls() if "ComputeSystem" in c["call"]][:3] == [
        "vmcompute!HcsCreateComputeSystem", "vmcompute!HcsRegisterComputeSystemCallback",
        "vmcompute!HcsStartComputeSystem"]


def test_v1_notifications_arrive_on_the_sim_thread(sim, tmp_path):
    import threading
    seen = []
    system = vm.create_compute_system("c1", document(tmp_path),
                                      listener=lambda *n: seen.append((n[0], threading.get_ident())))
    system.start()
    assert [kind for kind, _ in seen] == [vm.NOTIFY_CREATE_COMPLETED, vm.NOTIFY_START_COMPLETED]
    assert all(thread != threading.get_ident() for _, thread in seen)
    system.close()  # TerminateOnLastHandleClosed
    assert sim.wait_clean() == {}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("call", ["HcsCreateComputeSystem", "HcsStartComputeSystem"])
def test_v1_failures_sync_and_by_notification(sim, tmp_path, call, mode):
    sim.fail(call, 0xC0370101, mode, "image mismatch")
    with pytest.raises(HcsError) as info:
        system = vm.create_compute_system("c1", document(tmp_path))
        try:
            system.start()
        finally:
            system.close()
    e = info.value
    assert (e.call, e.hresult, e.name) == (call, 0xC0370101, "ERROR_VMCOMPUTE_IMAGE_MISMATCH")
    if mode == "sync":
        assert e.detail == "image mismatch"
    assert sim.wait_clean() == {}


def test_v1_hung_start_ends_with_unexpected_exit_after_terminate(sim, tmp_path):
    sim.hang("vmcompute!HcsStartComputeSystem")
    system = vm.create_compute_system("c1", document(tmp_path))
    with pytest.raises(HcsError) as info:
        system.start(timeout_ms=100)
    assert info.value.name == "HCS_E_OPERATION_TIMEOUT"
    system.terminate()
    with pytest.raises(HcsError) as info:
        system.start(timeout_ms=5000)
    assert info.value.name == "ERROR_VMCOMPUTE_UNEXPECTED_EXIT"
    system.close()
    assert sim.wait_clean() == {}


def test_v1_hung_create_process_is_released_by_terminate(sim, tmp_path):
    import threading
    system = vm.create_compute_system("c1", document(tmp_path))
    system.start()
    sim.hang("vmcompute!HcsCreateProcess")
    errors = []

    def create():
        try:
            system.create_process(params(["true"]))
        except HcsError as e:
            errors.append(e)

    worker = threading.Thread(target=create)
    worker.start()
    worker.join(0.2)
    assert worker.is_alive()
    with vm.open_compute_system("c1") as fresh:
        fresh.terminate()
    worker.join(5)
    assert errors and errors[0].name == "HCS_E_TERMINATED"
    system.close()
    assert sim.wait_clean() == {}


def test_v1_process_kill_signal_and_properties(sim, tmp_path):
    with vm.create_compute_system("c1", document(tmp_path)) as system:
        system.start()
        process = system.create_process(params(["sleep", "30"]))
        assert process.properties()["ProcessId"] == process.pid
        assert [s["Id"] for s in vm.enumerate_compute_systems({"Owners": ["nspawn"]})] == ["c1"]
        with system.open_process(process.pid) as again:
            again.signal("CtrlShutdown")
        assert process.wait_exited(5000) == 128 + 15
        with pytest.raises(HcsError) as info:
            process.terminate()
        assert is_process_gone(info.value) and info.value.name == "ERROR_ACCESS_DENIED"
        with pytest.raises(HcsError) as info:
            process.modify({"Operation": "CloseHandle", "CloseHandle": {"Handle": "StdIn"}})
        assert is_already_stopped(info.value)
        with pytest.raises(HcsError) as info:
            system.open_process(process.pid)
        assert is_not_found(info.value)
        process.close()
        with pytest.raises(HcsError) as info:
            vm.open_compute_system("nope")
        assert is_not_found(info.value) and info.value.detail == "No compute system with this id exists"
        system.terminate()
    assert sim.wait_clean() == {}


def test_v1_unregister_before_close_leaves_nothing(sim, tmp_path):
    system = vm.create_compute_system("c1", document(tmp_path))
    system.start()
    process = system.create_process(params(["true"], CreateStdInPipe=False))
    assert process.stdin is None
    process.wait_exited(5000)
    process.close()
    system.terminate()
    system.wait_exited(5000)
    system.close()
    assert sim.wait_clean() == {}
    assert sim.ledger()["strings"] == 0 and sim.ledger()["free_errors"] == []


# ---- layers ---------------------------------------------------------------------

HOME = "C:\\ProgramData\\docker\\windowsfilter"
PARENTS = [HOME + "\\top", HOME + "\\base"]


def parents() -> list[tuple[str, str]]:
    """PARENTS as the layer functions take them: (layer id, folder)."""
    return [(str(vm.name_to_guid(path.rsplit("\\", 1)[1])), path) for path in PARENTS]


def test_layer_sequence_and_descriptors(sim):
    vm.create_sandbox_layer(HOME, "scratch", "top", parents())
    vm.activate_layer(HOME, "scratch")
    vm.prepare_layer(HOME, "scratch", parents())
    path = vm.get_layer_mount_path(HOME, "scratch")
    assert path == f"\\\\?\\Volume{{{vm.name_to_guid('scratch')}}}\\"
    (prepare,) = sim.calls("PrepareLayer")
    args = prepare["args"]
    assert (args["flavour"], args["home"], args["id"]) == (1, HOME, "scratch")
    assert args["layers"] == [{"id": str(vm.name_to_guid(name)), "flags": 0, "path": p}
                              for name, p in zip(["top", "base"], PARENTS)]
    assert sim.calls("CreateSandboxLayer")[0]["args"]["parent"] == "top"
    assert [entry["id"] for entry in sim.live()["layers"]] == [HOME + "\\scratch"]
    vm.unprepare_layer(HOME, "scratch")
    vm.deactivate_layer(HOME, "scratch")
    vm.destroy_layer(HOME, "scratch")
    assert sim.live() == {}


def test_layer_calls_out_of_order_and_faults(sim):
    with pytest.raises(HcsError) as info:
        vm.prepare_layer("", "C:\\layers\\scratch", parents())  # hcsshim style: full path as id
    assert info.value.call == "PrepareLayer" and info.value.win32 == 5023
    vm.activate_layer("", "C:\\layers\\scratch")
    with pytest.raises(HcsError):
        vm.destroy_layer("", "C:\\layers\\scratch")
    sim.fail("PrepareLayer", 0x80070015)  # ERROR_NOT_READY: hcsshim retries
    with pytest.raises(HcsError) as info:
        vm.prepare_layer("", "C:\\layers\\scratch", parents())
    assert info.value.name == "ERROR_NOT_READY"
    vm.deactivate_layer("", "C:\\layers\\scratch")
    assert sim.live() == {}
    assert vm.get_layer_mount_path("", "C:\\layers\\ro") == "C:\\layers\\ro"


def test_name_to_guid_is_deterministic(sim):
    assert vm.name_to_guid("base") == vm.name_to_guid("base") != vm.name_to_guid("top")


# ---- HNS -----------------------------------------------------------------------

def test_hns_endpoint_lifecycle(sim):
    (nat,) = [n for n in vm.hns_call("GET", "/networks/") if n["Name"] == "nat"]
    endpoint = vm.hns_call("POST", "/endpoints/", {"VirtualNetwork": nat["ID"], "Name": "c1"})
    assert endpoint["IpConfigurations"] and vm.hns_call("GET", f"/endpoints/{endpoint['ID']}")["Name"] == "c1"
    assert sim.live()["endpoints"]
    vm.hns_call("DELETE", f"/endpoints/{endpoint['ID']}")
    with pytest.raises(HcsError) as info:
        vm.hns_call("DELETE", f"/endpoints/{endpoint['ID']}")
    assert is_not_found(info.value) and info.value.message == "HNSCall failed: 0x80004005 E_FAIL: Element not found."
    sim.fail("HNSCall", 0x80070005)
    with pytest.raises(HcsError) as info:
        vm.hns_call("GET", "/networks/")
    assert info.value.name == "ERROR_ACCESS_DENIED"
    assert sim.live() == {}


def test_a_system_exit_reported_as_unexpected_is_a_normal_end(sim, tmp_path):
    """v1 reports many an end of a system with ERROR_VMCOMPUTE_UNEXPECTED_EXIT (0xC0370106) as
    the SystemExited status; hcsshim takes it for a normal exit, and so does wait_exited."""
    system = vm.create_compute_system("c1", document(tmp_path))
    system.start()
    sim.fail("HcsEventSystemExited", 0xC0370106)
    system.terminate()
    assert system.wait_exited(5000) is not None
    system.close()
    assert sim.wait_clean() == {}
