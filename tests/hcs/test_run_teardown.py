"""The teardown as hcsshim's shim closes a task: shutdown, terminate after any shutdown
failure, pending taken for accepted, and the system's handle closed last, after the journal
released the network and the layers."""

from __future__ import annotations

import pytest

APIS = pytest.mark.parametrize("api", ["v1", "v2"])
SHUTDOWN = {"v1": "vmcompute!HcsShutdownComputeSystem", "v2": "computecore!HcsShutDownComputeSystem"}
TERMINATE = {"v1": "vmcompute!HcsTerminateComputeSystem", "v2": "computecore!HcsTerminateComputeSystem"}


def _clean(run, host) -> None:
    assert run.live == {}, run.live
    assert host.scratch_folders() == []


@APIS
def test_a_failed_shutdown_is_followed_by_terminate_and_the_run_keeps_its_code(host, api):
    host.script("three.sh", "echo ran\nexit 3\n")
    run = host.run(process_executable="three.sh", hcs_api=api, faults=f"{SHUTDOWN[api]}={0x80370105:#x}")
    assert (run.returncode, run.stdout, run.errors) == (3, "ran\n", []), run.stderr
    assert run.calls(TERMINATE[api])
    _clean(run, host)


def test_a_shutdown_answered_pending_is_accepted(host):
    host.script("three.sh", "exit 3\n")
    run = host.run(process_executable="three.sh", hcs_api="v2",
                   faults=f"{SHUTDOWN['v2']}={0xC0370103:#x}:accepted")
    assert (run.returncode, run.errors) == (3, []), run.stderr
    assert run.calls(SHUTDOWN["v2"])
    _clean(run, host)


@APIS
def test_the_system_handle_closes_after_the_network_and_the_layers_are_released(host, api):
    host.script("ok.sh", "echo ran\n")
    run = host.run(process_executable="ok.sh", hcs_api=api, network="nat")
    assert run.returncode == 0, run.stderr
    calls = [c["call"].split("!")[1] for c in run.calls()]
    last_close = max(i for i, c in enumerate(calls) if c == "HcsCloseComputeSystem")
    assert last_close > max(i for i, c in enumerate(calls) if c == "DestroyLayer")
    network = "HcnDeleteNamespace" if api == "v2" else "HNSCall"
    assert last_close > max(i for i, c in enumerate(calls) if c == network)
    _clean(run, host)
