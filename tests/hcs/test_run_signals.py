"""Ctrl-C (SIGINT) and SIGTERM landing in each phase of a run: the run ends 128+N with
everything released. The simulator sends the signal to the launcher when a named call is
entered (NSPAWN_HCS_SIM_FAULTS "<call>=signal:<N>"), so it lands in a known phase; while the
process runs, the test sends it once the process has said it is ready."""

from __future__ import annotations

import pytest

from tests.hcs.conftest import sigterm_and_int

# (phase, API, network, the call that brings the signal)
PHASES = [
    ("layers", "v2", "none", "CreateSandboxLayer"),
    ("layers", "v2", "none", "ActivateLayer"),
    ("layers", "v1", "none", "PrepareLayer"),
    ("layers", "v2", "none", "GetLayerMountPath"),
    ("network", "v2", "nat", "HcnCreateEndpoint"),
    ("network", "v2", "nat", "HcnModifyNamespace"),
    ("network", "v1", "nat", "HNSCall"),
    ("create", "v2", "none", "computecore!HcsCreateComputeSystem"),
    ("create", "v1", "none", "vmcompute!HcsCreateComputeSystem"),
    ("start", "v2", "none", "computecore!HcsStartComputeSystem"),
    ("start", "v1", "none", "vmcompute!HcsStartComputeSystem"),
    ("teardown", "v2", "none", "HcsShutDownComputeSystem"),
    ("teardown", "v1", "none", "HcsShutdownComputeSystem"),
]


def _released(run, host) -> None:
    assert run.live == {}, run.live
    assert host.scratch_folders() == []
    assert list((host.tmp / "state").glob("*.journal")) == []  # the journal is gone: all was released
    assert any(f"stopped by signal" in line for line in run.errors), run.stderr


@sigterm_and_int()
@pytest.mark.parametrize("phase, api, network, call", PHASES, ids=[f"{p}-{a}-{c.split('!')[-1]}" for p, a, _, c in PHASES])
def test_a_signal_in_each_setup_and_teardown_phase(host, signum, phase, api, network, call):
    host.script("ok.sh", "echo ran\n")
    run = host.run(process_executable="ok.sh", hcs_api=api, network=network, faults=f"{call}=signal:{int(signum)}")
    assert run.returncode == 128 + signum, run.stderr
    assert run.calls(call)
    assert (run.stdout == "ran\n") == (phase == "teardown")
    _released(run, host)


@sigterm_and_int()
@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_signal_while_the_process_runs_stops_it_politely(host, signum, api):
    host.script("wait.sh", "echo ready\nexec sleep 60\n")
    run = host.run_signalled(signum, "ready", process_executable="wait.sh", hcs_api=api)
    assert run.returncode == 128 + signum, run.stderr
    assert run.calls("HcsSignalProcess") and not run.calls("HcsTerminateProcess")
    _released(run, host)


POLITE = {"SIGINT": "CtrlC", "SIGTERM": "CtrlShutdown"}


@sigterm_and_int()
@pytest.mark.parametrize("api", ["v1", "v2"])
def test_the_polite_stop_is_ctrl_c_for_sigint_and_ctrl_shutdown_for_sigterm(host, signum, api):
    host.script("wait.sh", "echo ready\nexec sleep 60\n")
    run = host.run_signalled(signum, "ready", process_executable="wait.sh", hcs_api=api)
    assert [doc["Signal"] for doc in run.documents("HcsSignalProcess", 0)] == [POLITE[signum.name]]
    _released(run, host)


def test_a_timeout_stops_with_ctrl_shutdown(host):
    host.script("sleepy.sh", "exec sleep 60\n")
    run = host.run(process_executable="sleepy.sh", timeout_seconds=0.2)
    assert run.returncode == 124
    assert [doc["Signal"] for doc in run.documents("HcsSignalProcess", 0)] == ["CtrlShutdown"]


@sigterm_and_int()
@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_payload_that_handles_the_stop_ends_the_run_with_its_own_code(host, signum, api):
    host.script("polite.sh", "trap 'echo bye; exit 7' INT TERM\necho ready\nsleep 60 & wait\n")
    run = host.run_signalled(signum, "ready", process_executable="polite.sh", hcs_api=api)
    assert (run.returncode, run.stdout) == (7, "ready\nbye\n"), run.stderr
    assert not run.calls("HcsTerminateProcess")
    _released(run, host)


@sigterm_and_int()
def test_a_payload_that_ignores_the_stop_is_terminated_after_the_grace_and_ends_137(host, signum):
    host.script("deaf.sh", "trap '' INT TERM\necho ready\nsleep 60 & wait\n")
    run = host.run_signalled(signum, "ready", "--grace", "0.2", process_executable="deaf.sh")
    assert run.returncode == 137, run.stderr  # Linux's code for the SIGKILL after its grace
    assert run.calls("HcsTerminateProcess")
    _released(run, host)


def test_a_signal_during_the_rollback_does_not_cut_it_short(host):
    host.script("ok.sh", "echo ran\n")
    run = host.run(process_executable="ok.sh", faults="UnprepareLayer=signal:2")
    assert run.calls("DeactivateLayer") and run.calls("DestroyLayer")
    assert run.returncode == 130 and run.stdout == "ran\n"  # the container ended well; the launcher was stopped
    _released(run, host)
