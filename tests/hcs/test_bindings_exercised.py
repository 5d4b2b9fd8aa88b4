"""Every function the bindings bind is called, through the simulator, by a scenario nspawn
really goes through: the simulator's own call records say so, not a reading of the code. A
new binding that nothing calls fails here; a binding no scenario can reach is dead code and
goes (HcsGetComputeSystemProperties of both generations and the HCN Query*Properties went
this way).

Most scenarios are `nspawn run`, `cleanup` and `doctor` processes whose ledgers the simulator
dumps; the rare paths (a wait that times out, overlapped pipes, an NTSTATUS failure) are
driven in-process with the simulator's fault injection, through the same functions the
backend calls."""

from __future__ import annotations

import json
import os

import pytest

from nspawn.backends.hcs import release
from nspawn.backends.hcs.native import advapi32
from nspawn.backends.hcs.native import computecore as cc
from nspawn.backends.hcs.native import computestorage
from nspawn.backends.hcs.native import computenetwork as hcn
from nspawn.backends.hcs.native import kernel32
from nspawn.backends.hcs.native import vmcompute as vm
from nspawn.backends.hcs.native.errors import HcsError
from tests.conftest import nspawn
from tests.hcs.conftest import Host
from tests.hcs.service import Service, kill
from tests.hcs_sim.fixtures import sim, sim_library  # noqa: F401 (fixtures)

BINDINGS = cc.BINDINGS + vm.BINDINGS + hcn.BINDINGS + kernel32.BINDINGS + computestorage.BINDINGS + advapi32.BINDINGS


def bound() -> set[str]:
    """Every bound export as the simulator records it: "computecore!HcsCreateOperation"."""
    return {f"{b.dll.lower().removesuffix('.dll')}!{name}" for b in BINDINGS for name in b.names()}


def called(ledger: dict) -> set[str]:
    return {c["call"] for c in ledger.get("calls", [])}


def runs(host: Host) -> dict[str, set[str]]:
    """`nspawn run` in the ways that reach different calls: {scenario: calls recorded}."""
    host.script("echo.sh", "read line; echo \"got $line\"\n")
    host.script("stubborn.sh", "trap '' INT TERM\nsleep 30\n")
    out = {}
    for api in ("v2", "v1"):
        run = host.run(process_executable="echo.sh", input="hello\n", hcs_api=api, network="nat",
                       cpu_affinity_hex="0x1", stdout_filename="out.txt")
        assert run.returncode == 0, run.stderr
        out[f"{api} run: nat, stdin, affinity"] = called(run.ledger)
        run = host.run(process_executable="stubborn.sh", timeout_seconds=0.2, stop_grace_seconds=0.2, hcs_api=api)
        assert run.returncode != 0 and run.ledger, run.stderr
        out[f"{api} run past its timeout: CtrlShutdown ignored, then the kill"] = called(run.ledger)
    run = host.run(process_executable="echo.sh", input="x\n", hcs_api="v2",
                   faults=f"HcsEventProcessExited={0x8037011B:#x}")
    assert run.returncode == 0 and run.stdout == "got x\n", run.stderr
    out["v2 run whose exit event carries a failed wait: the exit code asked for"] = called(run.ledger)
    run = host.run(process_executable="echo.sh", input="x\n", hcs_api="v2", network="nat",
                   env={"NSPAWN_HCS_SIM_REFUSE_IDS": "1"})
    assert run.returncode == 0, run.stderr
    out["v2 nat run on an HCN refusing our ids: theirs read back"] = called(run.ledger)
    run = host.run(process_executable="echo.sh", hcs_api="v2", faults=f"computecore!HcsStartComputeSystem={0x80370105:#x}")
    assert run.returncode == 125 and "HcsStartComputeSystem failed" in run.stderr, run.stderr
    out["v2 run whose start fails in the call: the operation's result document"] = called(run.ledger)
    return out


def killed_then_cleaned(service: Service, api: str) -> set[str]:
    """A launcher SIGKILLed mid-run, then `nspawn cleanup` finishing its journal: the releasers
    and the owned-systems enumeration, in the cleanup process."""
    launcher, _ = service.launch(api, "nat")
    kill(launcher)
    service.host.ledger_path.unlink(missing_ok=True)  # the killed launcher wrote none
    result = service.nspawn("cleanup")
    assert result.returncode == 0 and "released" in result.stdout, result.stderr
    return called(json.loads(service.host.ledger_path.read_text()))


def swept_with_ids_of_hcn(service: Service) -> set[str]:
    """A launcher on an HCN refusing our ids, SIGKILLed, its journal deleted, then swept: the
    namespace holding its endpoint is found by enumerating them."""
    service.env["NSPAWN_HCS_SIM_REFUSE_IDS"] = "1"
    try:
        service.killed_and_unjournaled("v2", "nat")
        service.host.ledger_path.unlink(missing_ok=True)
        assert service.sweep() and service.left() == {}
    finally:
        del service.env["NSPAWN_HCS_SIM_REFUSE_IDS"]
    return called(json.loads(service.host.ledger_path.read_text()))


def doctor(host: Host, api: str) -> set[str]:
    result = nspawn("doctor", "--backend", "hcs", "-c", str(host.config(process_executable="x.sh", hcs_api=api)),
                    env=host.env(None))
    assert "HCS service" in result.stdout, result.stdout + result.stderr
    return called(json.loads(host.ledger_path.read_text()))


def rare_paths(sim, workdir) -> dict[str, set[str]]:
    """In-process, through the functions the backend calls, with faults where they are rare."""
    out = {}
    sim.hang("HcsCreateComputeSystem")
    with pytest.raises(HcsError) as info:
        cc.create_compute_system("timed-out", {"Owner": "nspawn", "SchemaVersion": {"Major": 2, "Minor": 1},
                                               "ShouldTerminateOnLastHandleClosed": True}, timeout_ms=50)
    assert info.value.name == "HCS_E_OPERATION_TIMEOUT"
    out["v2 wait timeout: HcsCancelOperation as hcsshim"] = called(sim.ledger())

    sim.reset()
    sim.overlapped_pipes()
    with vm.create_compute_system("overlapped", {"SystemType": "Container", "Owner": "nspawn",
                                                 "MappedDirectories": [{"HostPath": str(workdir),
                                                                        "ContainerPath": "C:\\job"}]}) as system:
        system.start()
        params = {"CommandLine": "sh -c \"read x; echo $x\"", "CreateStdInPipe": True, "CreateStdOutPipe": True}
        with system.create_process(params) as process:
            kernel32.write(process.stdin, b"over\n")
            process.close_stdin()
            assert kernel32.read(process.stdout) == b"over\n"
            process.wait_exited(5000)
        system.terminate()
        system.wait_exited(5000)
    out["overlapped stdio pipes (v1)"] = called(sim.ledger())

    sim.reset()
    with pytest.raises(HcsError) as info:
        kernel32.set_silo_affinity("nspawn-gone", {0: 1})
    assert info.value.win32 == 2  # STATUS_OBJECT_NAME_NOT_FOUND through RtlNtStatusToDosError
    out["affinity on a silo that is gone: an NTSTATUS failure"] = called(sim.ledger())

    sim.reset()
    sim.fail("HcsCreateProcess", 0x80070057, "async")
    with cc.create_compute_system("ws2022", {"Owner": "nspawn", "SchemaVersion": {"Major": 2, "Minor": 1},
                                             "ShouldTerminateOnLastHandleClosed": True}) as system:
        system.start()
        with system.create_process({"CommandLine": "true", "CreateStdOutPipe": True}) as process:
            assert process.pid > 0
        system.terminate(wait_ms=5000)
    out["v2 create-process wait failing with a live process (WS2022): HcsGetProcessInfo"] = called(sim.ledger())

    sim.reset()
    (network,) = hcn.find_networks("nat")
    with hcn.open_network(network) as opened:
        opened.create_endpoint({"Name": "nspawn-killed", "HostComputeNetwork": network, "SchemaVersion": hcn.SCHEMA}).close()
    assert release.release_hcn_endpoint({"id": "0e1d0000-0000-4000-8000-0000000000e1", "name": "nspawn-killed"})
    out["an HCN endpoint whose id never reached the journal: found by name"] = called(sim.ledger())

    sim.reset()
    (workdir / "pulled" / "Files").mkdir(parents=True)
    advapi32.enable(advapi32.BACKUP, advapi32.RESTORE)
    computestorage.import_layer(str(workdir / "imported"), str(workdir / "pulled"), [])
    computestorage.destroy_layer(str(workdir / "imported"))
    vm.import_layer(str(workdir), "imported-v1", str(workdir / "pulled"), [])
    out["a pulled Windows layer imported, then pruned (tests/images/test_windows_import.py pulls, runs and prunes "
        "them)"] = called(sim.ledger())

    sim.reset()
    with open(workdir / "store.lock", "w") as f:
        kernel32.lock_file(f.fileno(), exclusive=True)
    assert kernel32.process_alive(os.getpid())
    out["the image store's lock and sweep on Windows (tests/images/test_windows_import.py)"] = called(sim.ledger())
    return out


def test_every_bound_function_is_called_by_a_scenario(sim, sim_library, tmp_path):
    host = Host(sim_library, tmp_path)
    scenarios = runs(host)
    service = Service(host)  # cleanup leaves it empty for the next launcher
    for api in ("v2", "v1"):
        scenarios[f"{api} launcher SIGKILLed, then nspawn cleanup"] = killed_then_cleaned(service, api)
        scenarios[f"nspawn doctor, {api}"] = doctor(host, api)
    scenarios["v2 launcher on an HCN refusing our ids, SIGKILLed, journal gone, swept"] = swept_with_ids_of_hcn(service)
    scenarios.update(rare_paths(sim, host.job))
    by = {export: next((name for name, calls in scenarios.items() if export in calls), None) for export in bound()}
    missing = sorted(export for export, scenario in by.items() if scenario is None)
    assert not missing, "\n".join(missing)
